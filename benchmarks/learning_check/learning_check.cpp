// learning_check: the tinylm half of the equal-budget learning check (issue 5, docs/learning-check.md).
//
// Trains a byte-level decoder with tl::trainer and leaves behind everything PyTorch needs to repeat the run
// exactly (pytorch_reference.py in this folder does it):
//   OUT/init/               the initial weights, written by tl::save_pretrained BEFORE training (Hugging Face layout)
//   OUT/batches.safetensors every micro-batch the trainer drew, in order: "ids" and "targets", I32,
//                           shape (steps * grad_accum, batch, seq_len)
//   OUT/val.safetensors     the validation windows trainer::evaluate uses: "ids" and "targets", I32, (windows, seq_len)
//   OUT/final/              the weights after training
//   OUT/tinylm.json         hyper-parameters, per-step train loss / lr / gradient norm, validation losses, final loss
//
// Configurations: --config tiny (tl::presets::tiny: vocab 256, d 64, 2 layers, GQA 4/2, ff 176, context 64),
// --config small (vocab 256, d 128, 4 layers, GQA 4/2, ff 352, context 128; defined below), or --config recipe
// (tl::presets::russian_novels_cpu, the main recipe's model: 3k BPE, d 256, 4 layers, GQA 8/4, ff 704, context 256).
// Data: byte-level configs read Pushkin's "The Captain's Daughter" from the data directory (--data-dir,
// TINYLM_DATA_DIR or ../shared/data) or --text FILE; bytes are tokens; the last 10% is held out for validation (as
// examples/01_train_tiny). The recipe config reads the token shards examples/04_russian_novels prepared (--shards
// DIR: DIR/train.bin and DIR/val.bin, split by novel), so it trains on the recipe's own BPE tokens.
// Command: build-lc/benchmarks/learning_check/learning_check --config tiny --out runs/lc-tiny
#include <tinylm/core/data_dir.hpp>
#include <tinylm/data/shards.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/model/registry.hpp>
#include <tinylm/tinylm.hpp>
#include <tinylm/train/trainer.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// A larger Llama-style configuration: 804k parameters, byte-level, context 128.
struct small_llama {
    static constexpr tl::model_config value{.vocab_size = 256,
                                            .d_model = 128,
                                            .n_layers = 4,
                                            .n_heads = 4,
                                            .n_kv_heads = 2,
                                            .d_ff = 352,
                                            .max_seq_len = 128};
};
static_assert(tl::validate_config<small_llama>() && tl::parameter_count(small_llama::value) == 803'968);

// The configurations --config offers, under their command-line names.
using configs = std::tuple<tl::presets::named<"tiny", tl::presets::tiny>, tl::presets::named<"small", small_llama>,
                           tl::presets::named<"recipe", tl::presets::russian_novels_cpu>>;

// Passes batches through from another source and keeps a copy of each, in the order they were drawn.
template <tl::BatchSource Source>
class recording_source {
public:
    explicit recording_source(Source& inner) : inner_(inner) {}
    void next(tl::tensor_view<tl::token_t> ids, tl::tensor_view<tl::token_t> targets) {
        inner_.next(ids, targets);
        ids_.insert(ids_.end(), ids.data, ids.data + ids.numel());
        targets_.insert(targets_.end(), targets.data, targets.data + targets.numel());
        ++batches_;
    }
    std::uint64_t position() const { return inner_.position(); }
    void seek(std::uint64_t pos) { inner_.seek(pos); }

    tl::index_t batches() const { return batches_; }
    const std::vector<tl::token_t>& ids() const { return ids_; }
    const std::vector<tl::token_t>& targets() const { return targets_; }

private:
    Source& inner_;
    std::vector<tl::token_t> ids_, targets_;
    tl::index_t batches_ = 0;
};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw tl::error("learning_check: cannot read " + p.string());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void save_pair(const fs::path& file, const std::vector<tl::token_t>& ids, const std::vector<tl::token_t>& targets,
               tl::shape s) {
    tl::safetensors_writer w;
    w.add_metadata("format", "pt");
    w.add<tl::token_t>("ids", tl::cview<tl::token_t>{ids.data(), s});
    w.add<tl::token_t>("targets", tl::cview<tl::token_t>{targets.data(), s});
    w.save(file);
}

const char* decay_name(tl::decay_kind k) {
    return k == tl::decay_kind::cosine ? "cosine" : k == tl::decay_kind::linear ? "linear" : "constant";
}

nlohmann::json config_json(const tl::model_config& c) {
    return {{"vocab_size", c.vocab_size},
            {"d_model", c.d_model},
            {"n_layers", c.n_layers},
            {"n_heads", c.n_heads},
            {"n_kv_heads", c.n_kv_heads},
            {"d_ff", c.d_ff},
            {"max_seq_len", c.max_seq_len},
            {"norm_eps", c.norm_eps},
            {"rope_theta", c.rope_theta},
            {"init_std", c.init_std},
            {"tied_embeddings", c.tied_embeddings}};
}

struct run_settings {
    std::string config_name;
    tl::trainer_options options;
    std::uint64_t seed = 1;
    fs::path out;
    std::string source;
    std::vector<tl::token_t> tokens;
    std::vector<tl::token_t> val_tokens; // empty: split `tokens` 90/10
};

template <class ModelConfig>
int run(run_settings& s) {
    using model_t = tl::decoder<ModelConfig>;
    auto& options = s.options;
    options.seq_len = ModelConfig::value.max_seq_len;
    const std::ptrdiff_t T = options.seq_len;
    if (s.tokens.size() < std::size_t(4 * T)) throw tl::error("learning_check: the text is shorter than 4 contexts");
    // Without a separate validation split: 10% of the text, but at least two full windows (as 01_train_tiny).
    const auto split = !s.val_tokens.empty() ? std::ptrdiff_t(s.tokens.size())
                                             : std::min(std::ptrdiff_t(s.tokens.size() * 9 / 10),
                                                        std::ptrdiff_t(s.tokens.size()) - 2 * T - 1);
    std::vector<tl::token_t> train_tokens(s.tokens.begin(), s.tokens.begin() + split);
    std::vector<tl::token_t> val_tokens =
        !s.val_tokens.empty() ? s.val_tokens : std::vector<tl::token_t>(s.tokens.begin() + split, s.tokens.end());

    fs::create_directories(s.out);
    model_t model(s.seed);
    tl::save_pretrained(model, s.out / "init"); // before anything touches the weights

    tl::token_windows windows(train_tokens, s.seed);
    recording_source<tl::token_windows> train(windows);
    options.out_dir = fs::path{}; // no checkpoints, no resuming: a fresh run every time
    options.resume = false;
    tl::trainer run(model, train, val_tokens, options);

    // The validation windows trainer::evaluate uses (same function, same arguments).
    const auto [val_ids, val_targets] = tl::validation_windows(val_tokens, options.seq_len, options.eval_windows);
    const tl::index_t n_val = tl::index_t(val_ids.size()) / options.seq_len;
    save_pair(s.out / "val.safetensors", val_ids, val_targets, {n_val, options.seq_len});

    std::printf("learning_check: config %s (%lld parameters, backend %s)\n", s.config_name.c_str(),
                static_cast<long long>(tl::parameter_count(ModelConfig::value)),
                std::string(model_t::backend::name).c_str());
    std::printf("data: %s (%td train tokens, %zu validation tokens; %lld validation windows of %td)\n",
                s.source.c_str(), split, val_tokens.size(), static_cast<long long>(n_val), T);
    std::printf("steps %lld, batch %lld x %d micro-batches, lr %.3g -> %.3g (warmup %lld, %s), wd %.3g, clip %.3g\n",
                options.max_steps, static_cast<long long>(options.batch_size), options.grad_accum, options.peak_lr,
                options.min_lr, options.warmup_steps, decay_name(options.decay), options.adamw.weight_decay,
                options.clip);

    nlohmann::json steps = nlohmann::json::array(), evals = nlohmann::json::array();
    const double initial_val = run.evaluate();
    evals.push_back({{"step", 0}, {"val_loss", initial_val}});
    std::printf("step %5d  val loss %.5f\n", 0, initial_val);
    double final_val = NAN;
    run.on_step = [&](const tl::step_report& r) {
        steps.push_back({{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm}});
        if (r.step == 1 || r.step % 50 == 0 || r.step == r.max_steps)
            std::printf("step %5lld  loss %.5f  lr %.3e  grad norm %.4f\n", r.step, r.loss, r.lr, r.grad_norm);
    };
    run.on_eval = [&](long long step, double loss) {
        evals.push_back({{"step", step}, {"val_loss", loss}});
        std::printf("step %5lld  val loss %.5f\n", step, loss);
        final_val = loss;
    };
    if (run.run() != tl::train_outcome::finished) {
        std::fprintf(stderr, "learning_check: interrupted\n");
        return 130;
    }
    tl::save_pretrained(model, s.out / "final");

    const tl::index_t n_batches = train.batches();
    tl::check(n_batches == options.max_steps * options.grad_accum, "learning_check: unexpected number of batches");
    save_pair(s.out / "batches.safetensors", train.ids(), train.targets(),
              {n_batches, options.batch_size, options.seq_len});

    const auto& a = options.adamw;
    const nlohmann::json report{
        {"config_name", s.config_name},
        {"config", config_json(ModelConfig::value)},
        {"parameters", tl::parameter_count(ModelConfig::value)},
        {"backend", std::string(model_t::backend::name)},
        {"data",
         {{"source", s.source},
          {"tokens", s.tokens.size() + s.val_tokens.size()},
          {"train_tokens", split},
          {"val_tokens", val_tokens.size()},
          {"val_windows", n_val}}},
        {"seed", s.seed},
        {"trainer",
         {{"batch_size", options.batch_size},
          {"seq_len", options.seq_len},
          {"grad_accum", options.grad_accum},
          {"max_steps", options.max_steps},
          {"peak_lr", options.peak_lr},
          {"min_lr", options.min_lr},
          {"warmup_steps", options.warmup_steps},
          {"decay", decay_name(options.decay)},
          {"clip", options.clip},
          {"eval_every", options.eval_every},
          {"eval_windows", options.eval_windows}}},
        {"adamw",
         {{"beta1", a.beta1},
          {"beta2", a.beta2},
          {"eps", a.eps},
          {"weight_decay", a.weight_decay},
          {"decay_embeddings", a.decay_embeddings}}},
        {"steps", steps},
        {"val", evals},
        {"final_val_loss", final_val},
    };
    std::ofstream(s.out / "tinylm.json") << report.dump(1) << "\n";
    std::printf("tinylm final validation loss %.5f nats/token after %lld steps\n", final_val, options.max_steps);
    std::printf("wrote %s/{init,final,batches.safetensors,val.safetensors,tinylm.json}\n", s.out.c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"tinylm half of the equal-budget learning check (see docs/learning-check.md)"};
    run_settings s;
    auto& o = s.options;
    o = tl::trainer_options{.batch_size = 8,
                            .grad_accum = 1,
                            .max_steps = 300,
                            .peak_lr = 3e-3,
                            .min_lr = 3e-4,
                            .warmup_steps = 30,
                            .adamw = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1},
                            .clip = 1.0,
                            .eval_every = 50,
                            .eval_windows = 64,
                            .checkpoint_every = 0};
    s.config_name = "tiny";
    std::string text_file, shards_dir, data_dir = tl::find_data_dir().string(), decay = "cosine";
    bool no_decay_embeddings = false;
    s.out = "runs/learning_check";
    app.add_option("--config", s.config_name,
                   "tiny (presets::tiny), small (d 128, 4 layers, context 128) or recipe (presets::russian_novels_cpu)")
        ->check(CLI::IsMember(tl::presets::names<configs>()));
    app.add_option("--steps", o.max_steps, "optimizer steps")->check(CLI::PositiveNumber);
    app.add_option("--batch", o.batch_size, "sequences per micro-batch")->check(CLI::PositiveNumber);
    app.add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step")->check(CLI::PositiveNumber);
    app.add_option("--lr", o.peak_lr, "peak learning rate");
    app.add_option("--min-lr", o.min_lr, "final learning rate");
    app.add_option("--warmup", o.warmup_steps, "linear warmup steps (default: 10% of the steps)");
    app.add_option("--decay", decay, "cosine, linear or constant")
        ->check(CLI::IsMember({"cosine", "linear", "constant"}));
    app.add_option("--beta1", o.adamw.beta1);
    app.add_option("--beta2", o.adamw.beta2);
    app.add_option("--eps", o.adamw.eps);
    app.add_option("--weight-decay", o.adamw.weight_decay);
    app.add_flag("--no-decay-embeddings", no_decay_embeddings, "exclude the embedding from weight decay");
    app.add_option("--clip", o.clip, "global gradient-norm limit (0: off)");
    app.add_option("--eval-every", o.eval_every, "steps between validation passes");
    app.add_option("--eval-windows", o.eval_windows, "validation windows of one context each");
    app.add_option("--seed", s.seed, "initialisation and batching seed");
    app.add_option("--text", text_file, "train on this file instead of the default novel");
    app.add_option("--shards", shards_dir,
                   "recipe config: folder with train.bin and val.bin of examples/04_russian_novels");
    app.add_option("--data-dir", data_dir, "tinylm data directory (default: $TINYLM_DATA_DIR or ../shared/data)");
    app.add_option("--out", s.out, "output directory");
    CLI11_PARSE(app, argc, argv);
    o.decay = decay == "cosine"   ? tl::decay_kind::cosine
              : decay == "linear" ? tl::decay_kind::linear
                                  : tl::decay_kind::constant;
    o.adamw.decay_embeddings = !no_decay_embeddings;
    // The small configuration's default budget: 200 steps of 2 x 8 sequences of 128 (when not given explicitly).
    if (s.config_name == "small") {
        if (app.count("--steps") == 0) o.max_steps = 200;
        if (app.count("--grad-accum") == 0) o.grad_accum = 2;
    }
    if (app.count("--warmup") == 0) o.warmup_steps = o.max_steps / 10;

    if (s.config_name == "recipe") {
        if (shards_dir.empty())
            throw tl::error("learning_check: --config recipe needs --shards DIR (the data folder that "
                            "examples/04_russian_novels prepared, with train.bin and val.bin)");
        const tl::data::token_shard train_shard(fs::path(shards_dir) / "train.bin"),
            val_shard(fs::path(shards_dir) / "val.bin");
        s.tokens.resize(train_shard.size());
        train_shard.copy<tl::token_t>(0, s.tokens);
        // The validation windows come from the start of the validation split; no need to copy all of it.
        s.val_tokens.resize(std::min<std::uint64_t>(
            val_shard.size(), std::uint64_t(o.eval_windows) * tl::presets::russian_novels_cpu::value.max_seq_len + 1));
        val_shard.copy<tl::token_t>(0, s.val_tokens);
        s.source = shards_dir;
    } else {
        std::string text;
        if (!text_file.empty())
            text = read_file(text_file), s.source = text_file;
        else if (fs::path novel = fs::path(data_dir) / "russian_novels/corpus/Pushkin_CapitanskaaDochka.txt";
                 !data_dir.empty() && fs::exists(novel))
            text = read_file(novel), s.source = novel.string();
        else
            throw tl::error("learning_check: no data directory (give --data-dir, TINYLM_DATA_DIR or --text FILE)");
        for (unsigned char c : text)
            s.tokens.push_back(c);
    }
    return tl::presets::visit<configs>(s.config_name, [&]<class Config>() { return run<Config>(s); });
} catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
}
