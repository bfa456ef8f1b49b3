// 09_retrieval: fine-tune a pretrained sentence encoder contrastively on (query, document) pairs, in full, with
// LoRA and with QLoRA, and measure retrieval of held-out queries against the base model (docs/retrieval.md).
//
//   09_retrieval --base ~/.cache/tinylm/models/all-MiniLM-L6-v2 --out runs/retrieval
//
// For each task (xquad-ru, tatar-ru, xquad-en; retrieval_data.hpp) the base model is evaluated first (the
// baseline), then each mode trains from it with the multiple-negatives ranking loss (in-batch negatives, batches
// without repeated texts, a gradient cache so the batch can exceed what fits in memory) and is evaluated the same
// way. Results: <out>/report.md (a table per task and the loss curves), <out>/metrics.json, the fine-tuned models
// (<out>/<task>/full/model: a sentence-transformers folder; <out>/<task>/{lora,qlora}/adapter: PEFT adapters;
// <out>/<task>/lora/model: the LoRA merged into a sentence-transformers folder). A run resumes from the checkpoint
// of each (task, mode) it finds in <out>, and skips those already finished.
//
// Under `mpirun -np N` (tinylm::mpi; docs/distributed.md) the same run trains on N ranks: --batch is the global
// batch, each rank embeds its pairs, the embeddings are all-gathered so that the in-batch negatives are the whole
// batch's, and the gradients are summed over the ranks (embed/data_parallel_ranking.hpp): the losses are one
// process's. Rank 0 alone evaluates, prints and writes (report, metrics, models, checkpoints).
//
// Devices (--device, full fine-tuning, LoRA and QLoRA; docs/gpu.md): cpu (tl::encoder, the default), cuda (the same
// loop with its step on the GPU: gpu::ranking_step<gpu_ops>, the encoder, pooling and ranking loss on the device, bf16
// products; needs a build with tinylm::cuda) or cpu-ops (that step's code on the CPU, f32: slow, a check). The
// weights (LoRA: the adapter's) come back to the host model for evaluation and saving: the same files as a CPU run
// (LoRA: the same PEFT adapter and merged folder; QLoRA: the same PEFT adapter, the NF4 base quantised on the host as
// tl::encoder quantises it and dequantised on the device before each product). On a device the whole batch is one
// forward (no gradient cache: --mini-batch is the CPU's), its texts packed end to end into rows
// of --max-length (attention inside each text; --device-padded: a padded row per text). Its checkpoints are a CPU run's
// files (the device's AdamW moments under tl::adamw's names: gpu::ranking_adamw), so either device resumes the
// other's. --precision bf16: the CPU step's products in bf16 with f32 accumulation (a CPU with AVX-512 BF16 or AMX;
// docs/precision.md); evaluation stays f32.
#include "retrieval_data.hpp"

#include <options.hpp>
#include <ranks.hpp>

#include <tinylm/core/data_dir.hpp>
#include <tinylm/core/svg_plot.hpp>
#include <tinylm/cuda/ranking_step.hpp>
#include <tinylm/data/pair_sampler.hpp>
#include <tinylm/embed/data_parallel_ranking.hpp>
#include <tinylm/eval/retrieval.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/io/sentence_transformers.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/train/checkpoint.hpp>
#include <tinylm/train/progress.hpp>

#include <CLI/CLI.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

namespace {

using backend = tl::default_backend;
namespace fs = std::filesystem;

// LoRA on every projection of every layer (peft's target_modules: query, key, value, attention.output.dense,
// intermediate.dense, output.dense). No LoRA dropout: the gradient cache embeds each text twice and needs both
// passes to compute the same function.
struct lora_r8 {
    static constexpr tl::lora_config value{
        .rank = 8, .alpha = 16, .dropout = 0, .targets = tl::lora_attention | tl::lora_up | tl::lora_down};
};
struct qlora_r8 {
    static constexpr tl::lora_config value{.rank = 8,
                                           .alpha = 16,
                                           .dropout = 0,
                                           .targets = tl::lora_attention | tl::lora_up | tl::lora_down,
                                           .quantized_base = true};
};

struct settings {
    std::string base, out = "runs/retrieval";
    std::vector<std::string> tasks{"xquad-ru", "tatar-ru"}, modes{"full", "lora", "qlora"};
    long long steps = 60;
    int batch = 32, mini_batch = 16, eval_batch = 64, max_length = 128, checkpoint_every = 20;
    double lr_full = 2e-5, lr_lora = 2e-4, warmup = 0.1, scale = 20, test_fraction = 0.2;
    bool symmetric = false;
    std::size_t smoke_queries = 0; // --smoke: this many test queries and training pairs
    std::string device = "cpu";    // cpu, cuda or cpu-ops (full fine-tuning)
    bool device_padded = false;    // on a device: a row per text (else the texts packed end to end into rows)
    tl::precision products = tl::precision::f32; // the CPU step's products (--precision, checked_precision)
};

struct mode_result {
    std::string mode;
    tl::eval::retrieval_result metrics;
    std::vector<double> losses;
    double train_seconds = 0;
    std::string saved;
};

// The encoder, its tokenizer and its sentence-transformers settings, as the base folder gives them.
struct base_model {
    fs::path transformer_dir, tokenizer_dir;
    tl::embed::sentence_config config;
    tl::wordpiece_tokenizer tokenizer;
};

base_model open_base(const settings& s) {
    base_model b;
    const fs::path dir = s.base;
    tl::check(fs::is_directory(dir), [&] {
        return "09_retrieval: --base " + s.base + " is not a folder (run scripts/fetch-models.sh for all-MiniLM-L6-v2)";
    });
    if (fs::exists(dir / "modules.json")) {
        const tl::sentence_folder f = tl::read_sentence_config(dir);
        b.transformer_dir = f.transformer_dir;
        b.config = f.config;
    } else { // a plain BertModel folder: mean pooling, normalised (all-MiniLM's recipe)
        b.transformer_dir = dir;
    }
    b.config.max_length =
        std::min<tl::index_t>(s.max_length, tl::read_bert_folder_config(b.transformer_dir).max_seq_len);
    b.tokenizer_dir = fs::exists(b.transformer_dir / "tokenizer.json") ? b.transformer_dir : dir;
    b.tokenizer = tl::load_wordpiece_json((b.tokenizer_dir / "tokenizer.json").string());
    return b;
}

template <class Model>
tl::embed::sentence_encoder<Model> sentence_encoder_of(Model& m, const base_model& b) {
    return {m, tl::sentence_tokenizer(b.tokenizer), b.config};
}

// Held-out queries against the whole corpus.
template <class Encoder>
tl::eval::retrieval_result evaluate(Encoder& se, const recipes::retrieval_task& t, const settings& s) {
    const tl::index_t d = se.embedding_dim();
    const auto queries = se.encode(t.test_queries, s.eval_batch);
    const auto corpus = se.encode(t.corpus, s.eval_batch);
    return tl::eval::evaluate_retrieval<backend>(
        tl::cview<float>{queries.data(), {tl::index_t(t.test_queries.size()), d}},
        tl::cview<float>{corpus.data(), {tl::index_t(t.corpus.size()), d}}, t.relevant);
}

// Full fine-tuning or LoRA on a device (--device cuda or cpu-ops): the training loop's gradients, clipping and AdamW
// calls
// on gpu::ranking_step (cuda/ranking_step.hpp), the host model receiving the weights for checkpoints and at the end.
// Checkpoints go through the host model and gpu::ranking_adamw: a CPU run's files, written the same way (staged in
// <dir>.tmp and swapped in whole).
template <class Model>
struct device_training {
    virtual ~device_training() = default;
    virtual double gradients(const tl::embed::token_batch& tokens, tl::index_t pairs,
                             const tl::embed::ranking_loss_options& loss) = 0;
    virtual void clip_and_step(double max_norm, double lr) = 0;
    virtual void store_into(Model& model) = 0;
    // The device's weights and moments into a checkpoint, through `model`; and back (the model's weights too).
    virtual void save(Model& model, const tl::training_state& state, const fs::path& dir) = 0;
    virtual tl::training_state resume(Model& model, const fs::path& dir) = 0;
    virtual std::size_t arena_bytes() const = 0;
};
template <class Model, class Ex>
struct device_training_on final : device_training<Model> {
    device_training_on(const Model& model, const tl::embed::sentence_config& sc, const tl::gpu::ranking_step_shape& s,
                       const tl::adamw_options& o)
        : step(model.config(), sc, s), opt(step, o) {
        step.load_from(model);
    }
    double gradients(const tl::embed::token_batch& tokens, tl::index_t pairs,
                     const tl::embed::ranking_loss_options& loss) override {
        step.zero_gradients();
        return step.forward_backward(tokens, pairs, loss);
    }
    void clip_and_step(double max_norm, double lr) override {
        step.clip_gradients(max_norm);
        opt.step(lr);
    }
    void store_into(Model& model) override { step.store_into(model); }
    void save(Model& model, const tl::training_state& state, const fs::path& dir) override {
        step.store_into(model);
        tl::save_training_checkpoint(model, opt, state, dir);
    }
    tl::training_state resume(Model& model, const fs::path& dir) override {
        tl::training_state state = tl::load_training_checkpoint(model, opt, dir); // the moments to the device
        step.load_from(model);
        return state;
    }
    std::size_t arena_bytes() const override { return step.arena_bytes(); }
    tl::gpu::ranking_step<Ex> step;
    tl::gpu::ranking_adamw<Ex> opt; // after step: it refers to it
};
template <class Model>
std::unique_ptr<device_training<Model>>
device_training_of(const std::string& device, const Model& model, const tl::embed::sentence_config& sc,
                   tl::index_t pairs, tl::index_t negatives, const tl::adamw_options& o, bool packed) {
    tl::gpu::ranking_step_shape shape; // packed: the worst case planned (a row per text), so every batch fits
    shape.pairs = pairs, shape.negatives = negatives, shape.bf16 = device == "cuda", shape.packed = packed;
    shape.lora = Model::lora; // rank 0: full fine-tuning; else the base frozen and the adapter trains
#ifdef TINYLM_HAS_CUDA
    if (device == "cuda") return std::make_unique<device_training_on<Model, tl::gpu::gpu_ops>>(model, sc, shape, o);
#endif
    tl::check(device == "cpu-ops", "09_retrieval: --device " + device + " is not available in this build");
    return std::make_unique<device_training_on<Model, tl::gpu::cpu_ops>>(model, sc, shape, o);
}

// Whatever decides a mode's training and the order of its collectives: every rank must agree (data_parallel_ranking).
std::string training_settings(const std::string& mode, const settings& s, std::uint64_t seed, long long first,
                              std::size_t pairs) {
    std::string text = mode;
    for (double v :
         {double(s.steps), double(s.batch), double(s.mini_batch), double(s.max_length), s.lr_full, s.lr_lora, s.warmup,
          s.scale, double(s.symmetric), double(s.checkpoint_every), double(seed), double(first), double(pairs)}) {
        text += ' ';
        text += std::to_string(v);
    }
    return text;
}

template <tl::LoraAdapter A>
mode_result train_mode(const std::string& mode, const base_model& b, const recipes::retrieval_task& t,
                       const settings& s, std::uint64_t seed, const fs::path& dir, tl::dist::communicator& world) {
    const bool root = world.is_root();
    constexpr bool lora = A::value.rank > 0;
    auto model = tl::load_bert<backend, A>(b.transformer_dir, seed);
    auto se = sentence_encoder_of(*model, b);
    const double peak = lora ? s.lr_lora : s.lr_full;
    // sentence-transformers' defaults: AdamW (betas 0.9, 0.999, weight decay 0.01), linear warmup and decay.
    tl::adamw opt(*model, {.lr = peak, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01});
    const tl::lr_schedule schedule{.peak_lr = peak,
                                   .warmup_steps = (long long)(double(s.steps) * s.warmup),
                                   .total_steps = s.steps,
                                   .decay = tl::decay_kind::linear};
    tl::data::no_duplicates_sampler sampler(t.train, std::size_t(s.batch), seed, true);
    tl::embed::data_parallel_ranking<backend> step(world);
    const tl::embed::ranking_step_options step_options{.loss = {.scale = s.scale, .symmetric = s.symmetric},
                                                       .mini_batch_size = s.mini_batch};

    mode_result r{mode, {}, {}, 0, ""};
    const fs::path checkpoint = dir / "checkpoint";
    long long first = 0;
    // On a device (full fine-tuning, LoRA or QLoRA) the step runs on gpu::ranking_step.
    using model_t = std::remove_cvref_t<decltype(*model)>;
    std::unique_ptr<device_training<model_t>> device;
    tl::embed::batch_tokenizer tokenize;
    const bool on_device = s.device != "cpu";
    if (on_device) {
        std::size_t negatives = 0;
        for (const auto& row : t.train)
            negatives = std::max(negatives, row.negatives.size());
        device = device_training_of(s.device, *model, b.config, s.batch, tl::index_t(negatives), opt.options(),
                                    !s.device_padded);
        tokenize = tl::sentence_tokenizer(b.tokenizer);
        std::printf("  on %s: gpu::ranking_step, %d pairs of at most %lld tokens in one batch (%s), arena "
                    "%.1f MiB\n",
                    s.device.c_str(), s.batch, static_cast<long long>(b.config.max_length),
                    s.device_padded ? "a padded row per text" : "texts packed end to end into rows",
                    double(device->arena_bytes()) / (1 << 20));
    }
    if (fs::exists(checkpoint / "trainer_state.json")) { // a CPU run's or a device run's: the same files
        const tl::training_state st =
            device ? device->resume(*model, checkpoint) : tl::load_training_checkpoint(*model, opt, checkpoint);
        first = st.step;
        sampler.set_position(
            {st.history.at("sampler_epoch").get<std::uint64_t>(), st.history.at("sampler_batch").get<std::size_t>()});
        r.losses = st.history.at("losses").get<std::vector<double>>();
        r.train_seconds = st.history.value("seconds", 0.0);
        std::printf("  resuming %s from step %lld\n", mode.c_str(), first);
    }
    auto save_checkpoint = [&](long long done) {
        const auto pos = sampler.position();
        tl::training_state st{done,
                              0,
                              {{"sampler_epoch", pos.epoch},
                               {"sampler_batch", pos.batch},
                               {"losses", r.losses},
                               {"seconds", r.train_seconds}}};
        if (device)
            device->save(*model, st, checkpoint); // one process (main refuses data parallel on a device)
        else if (root)
            tl::save_training_checkpoint(*model, opt, st, checkpoint);
        world.barrier(); // complete for every rank (a restart finds it)
    };
    // Every rank resumed from the same checkpoint (a file system they all see) with the same settings; rank 0's
    // weights to all.
    step.join(*model, training_settings(mode, s, seed, first, t.train.size()));

    tl::progress_bar bar(s.steps, {.plain_every = 10, .first_step = first}); // stdout: /dev/null but on rank 0
    // --precision bf16: the CPU step's products while the loop runs (evaluation after it computes in f32).
    auto products = tl::scoped_matmul_precision<model_t>(s.products);
    std::vector<std::string> texts; // a device step's: anchors, positives, negatives
    tl::index_t device_truncated = 0, device_embedded = 0;
    long long device_real = 0, device_computed = 0, device_padded_rows = 0; // tokens: the encoder's work
    for (long long k = first; k < s.steps; ++k) {
        const auto t0 = std::chrono::steady_clock::now();
        const tl::data::pair_batch pb = tl::data::gather_pairs(t.train, sampler.next());
        const double lr = schedule.lr_at(k);
        double loss = 0;
        if (device) {
            texts.assign(pb.anchors.begin(), pb.anchors.end());
            texts.insert(texts.end(), pb.positives.begin(), pb.positives.end());
            texts.insert(texts.end(), pb.negatives.begin(), pb.negatives.end());
            const tl::embed::token_batch tokens = tokenize(texts, b.config.max_length);
            device_truncated += tokens.truncated, device_embedded += tl::index_t(texts.size());
            const auto rows = [&](bool packed) {
                return tl::gpu::pack_texts(tokens.lengths.data(), tokens.batch, b.config.max_length, packed).rows;
            };
            for (const tl::index_t len : tokens.lengths)
                device_real += len;
            device_computed += rows(!s.device_padded) * b.config.max_length;
            device_padded_rows += rows(false) * b.config.max_length;
            loss = device->gradients(tokens, tl::index_t(pb.anchors.size()), step_options.loss);
        } else {
            loss = step.gradients(se, {pb.anchors, pb.positives, pb.negatives}, step_options);
        }
        tl::check(std::isfinite(loss),
                  [&] { return "09_retrieval: the loss is not finite at step " + std::to_string(k + 1); });
        if (device) {
            device->clip_and_step(1.0, lr);
        } else {
            tl::clip_grad_norm(model->trainable_entries(), 1.0);
            opt.step(lr);
        }
        r.losses.push_back(loss);
        r.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        bar.update({.step = k + 1, .loss = loss, .lr = lr});
        if (s.checkpoint_every > 0 && (k + 1) % s.checkpoint_every == 0 && k + 1 < s.steps) save_checkpoint(k + 1);
    }
    bar.finish();
    products.reset();
    if (world.size() > 1 && first < s.steps)
        std::printf("  data parallel over %d ranks: %zu gradient buckets, %zu started inside the last backward\n",
                    world.size(), step.gradient_buckets().bucket_count(),
                    step.gradient_buckets().started_during_backward());
    if (!root) return r; // rank 0 evaluates and saves
    if (device) {
        device->store_into(*model); // evaluation and saving on the CPU
        if (device_computed > 0)
            std::printf("  encoder tokens on %s: %lld computed (rows x %lld) for %lld real; a padded row per text "
                        "would be %lld (%.2fx)\n",
                        s.device.c_str(), device_computed, static_cast<long long>(b.config.max_length), device_real,
                        device_padded_rows, double(device_padded_rows) / double(device_computed));
        if (device_truncated > 0)
            std::printf("  note: %lld of %lld texts trained on were longer than %lld tokens and were truncated\n",
                        static_cast<long long>(device_truncated), static_cast<long long>(device_embedded),
                        static_cast<long long>(b.config.max_length));
    }
    if (se.truncated_texts() > 0)
        std::printf("  note: %lld of %lld texts embedded were longer than %lld tokens and were truncated\n",
                    static_cast<long long>(se.truncated_texts()), static_cast<long long>(se.embedded_texts()),
                    static_cast<long long>(b.config.max_length));
    r.metrics = evaluate(se, t, s);
    if constexpr (lora) {
        tl::save_adapter(*model, dir / "adapter", b.transformer_dir.string());
        r.saved = (dir / "adapter").string();
        if constexpr (!A::value.quantized_base) { // the merged model, for SentenceTransformer(path)
            model->merge();
            tl::write_sentence_folder(*model, dir / "model", b.config, b.tokenizer_dir);
            model->unmerge();
            r.saved += ", " + (dir / "model").string();
        }
    } else {
        tl::write_sentence_folder(*model, dir / "model", b.config, b.tokenizer_dir);
        r.saved = (dir / "model").string();
    }
    fs::remove_all(checkpoint);
    return r;
}

nlohmann::json result_json(const mode_result& r) {
    nlohmann::json j = r.metrics.to_json();
    j["mode"] = r.mode;
    j["train_seconds"] = r.train_seconds;
    j["losses"] = r.losses;
    j["saved"] = r.saved;
    return j;
}
mode_result result_from_json(const nlohmann::json& j) {
    mode_result r;
    r.mode = j.at("mode").get<std::string>();
    r.train_seconds = j.value("train_seconds", 0.0);
    r.losses = j.value("losses", std::vector<double>{});
    r.saved = j.value("saved", "");
    r.metrics.n_queries = j.value("queries", 0);
    r.metrics.n_corpus = j.value("corpus", 0);
    for (int k : {1, 3, 5, 10}) {
        r.metrics.accuracy[k] = j.value("accuracy@" + std::to_string(k), 0.0);
        r.metrics.recall[k] = j.value("recall@" + std::to_string(k), 0.0);
        r.metrics.precision[k] = j.value("precision@" + std::to_string(k), 0.0);
    }
    r.metrics.mrr[10] = j.value("mrr@10", 0.0);
    r.metrics.ndcg[10] = j.value("ndcg@10", 0.0);
    r.metrics.map[100] = j.value("map@100", 0.0);
    return r;
}

std::string report_table(const std::vector<mode_result>& rows) {
    std::string out = "| model | recall@1 | recall@10 | MRR@10 | nDCG@10 | MAP@100 | train time |\n"
                      "| --- | --- | --- | --- | --- | --- | --- |\n";
    char line[256];
    for (const mode_result& r : rows) {
        std::snprintf(line, sizeof line, "| %s | %.4f | %.4f | %.4f | %.4f | %.4f | %s |\n", r.mode.c_str(),
                      r.metrics.recall.at(1), r.metrics.recall.at(10), r.metrics.mrr.at(10), r.metrics.ndcg.at(10),
                      r.metrics.map.at(100),
                      r.mode == "base" ? "-" : (std::to_string(int(r.train_seconds)) + " s").c_str());
        out += line;
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    settings s;
    recipes::data_flags data;
    bool fresh = false, smoke = false;
    std::uint64_t seed = 1;
    s.base = recipes::default_model("all-MiniLM-L6-v2");

    CLI::App app{"Fine-tune a sentence encoder for retrieval (full, LoRA, QLoRA) and compare with the base model"};
    recipes::show_defaults(app);
    recipes::add_data_options(app, data);
    app.add_option("--base", s.base, "the pretrained encoder: a sentence-transformers folder or a BertModel folder");
    app.add_option("--out", s.out, "run directory (report, metrics, models, checkpoints)");
    app.add_option("--tasks", s.tasks, "xquad-ru, tatar-ru, xquad-en")->delimiter(',');
    app.add_option("--modes", s.modes, "full, lora, qlora (the base model is always evaluated)")->delimiter(',');
    app.add_option("--steps", s.steps, "optimizer steps per mode")
        ->check(recipes::in_range(1LL, 1000000LL, "optimizer steps per mode"));
    app.add_option("--batch", s.batch, "pairs per step (in-batch negatives: batch - 1 per query)")
        ->check(recipes::in_range(2, 65536, "pairs per step"));
    app.add_option("--mini-batch", s.mini_batch, "texts per forward in the gradient cache (0: no cache)")
        ->check(recipes::in_range(0, 65536, "texts per forward in the gradient cache; 0: no cache"));
    app.add_option("--max-length", s.max_length, "tokens per text (longer ones are truncated and counted)")
        ->check(recipes::in_range(8, 8192, "tokens per text"));
    app.add_option("--lr-full", s.lr_full, "peak learning rate, full fine-tuning")
        ->check(recipes::above(0.0, "peak learning rate, full fine-tuning"));
    app.add_option("--lr-lora", s.lr_lora, "peak learning rate, LoRA and QLoRA")
        ->check(recipes::above(0.0, "peak learning rate, LoRA and QLoRA"));
    app.add_option("--scale", s.scale, "similarity scale of the ranking loss (1 / temperature)")
        ->check(recipes::above(0.0, "similarity scale of the ranking loss"));
    app.add_flag("--symmetric", s.symmetric, "also rank the queries for each document (symmetric loss)");
    app.add_option("--test-fraction", s.test_fraction, "documents held out for evaluation")
        ->check(recipes::in_range(0.05, 0.9, "documents held out for evaluation"));
    app.add_option("--eval-batch", s.eval_batch, "texts per forward when encoding for evaluation")
        ->check(recipes::in_range(1, 65536, "texts per forward when encoding"));
    app.add_option("--checkpoint-every", s.checkpoint_every, "steps between checkpoints (0: none)")
        ->check(recipes::in_range(0, 1000000, "steps between checkpoints; 0: none"));
    app.add_option("--seed", seed, "split, sampling and adapter initialisation seed");
    app.add_option("--device", s.device,
                   "cpu (tl::encoder), cuda: full fine-tuning, LoRA and QLoRA on the GPU (gpu::ranking_step, bf16 "
                   "products; in a build with tinylm::cuda), or cpu-ops: the GPU's code path on the CPU "
                   "(slow; a check)")
        ->check(CLI::IsMember({"cpu", "cuda", "cpu-ops"}));
    app.add_flag("--device-padded", s.device_padded,
                 "on a device, every text in a row of its own padded to --max-length (the default packs the batch's "
                 "texts end to end into rows of --max-length: the same loss, fewer rows)");
    std::string precision = "f32";
    recipes::add_precision_option(app, precision);
    app.add_flag("--fresh", fresh, "discard results and checkpoints in --out");
    app.add_flag("--smoke", smoke, "a minute-long run: 40 test queries, 3 steps, short texts (for CI)");
    CLI11_PARSE(app, argc, argv);
    tl::dist::communicator& world = recipes::join_world(); // rank 0 prints (examples/common/ranks.hpp)
    const bool root = world.is_root();
    if (s.device != "cpu") {
        if (s.device == "cuda") {
#ifdef TINYLM_HAS_CUDA
            if (tl::gpu::device_count() == 0)
                return recipes::report_error(tl::error("09_retrieval: --device cuda: no CUDA device is visible "
                                                       "(device_count() == 0): no GPU or no driver on this machine"));
#else
            return recipes::report_error(
                tl::error("09_retrieval: --device cuda: this build has no CUDA backend (tinylm::cuda); configure with "
                          "-DTINYLM_WITH_CUDA=ON (needs nvcc) and rebuild, or use --device cpu"));
#endif
        }
        if (world.size() > 1)
            return recipes::report_error(tl::error("09_retrieval: --device " + s.device +
                                                   " runs in one process (data parallel on the device is not "
                                                   "there yet): run without mpirun"));
    }

    if (!fs::is_directory(s.base)) { // exit code 2: the smoke test reports "skipped"
        std::fprintf(
            stderr,
            "error: 09_retrieval: the base model %s is missing; scripts/fetch-models.sh fetches all-MiniLM-L6-v2, or "
            "give --base DIR\n",
            s.base.c_str());
        return 2;
    }
    try {
        // Under mpirun the ranks share the machine: OMP_NUM_THREADS decides unless --threads is given.
        if (world.size() == 1 || app.count("--threads") > 0) omp_set_num_threads(data.threads);
        s.products = recipes::checked_precision("09_retrieval", precision, s.device);
        if (s.products == tl::precision::bf16)
            std::printf("training: bf16 products with f32 accumulation (--precision bf16)\n");
        if (smoke) {
            s.steps = 3, s.batch = 8, s.mini_batch = 4, s.max_length = 32, s.checkpoint_every = 2;
            s.smoke_queries = 40;
        }
        const fs::path data_dir = tl::find_data_dir(data.dir);
        for (const std::string& name : s.tasks)
            for (const std::string& file : recipes::task_files(name))
                if (!fs::exists(data_dir / file)) { // exit code 2: the smoke test reports "skipped"
                    std::fprintf(stderr, "error: 09_retrieval: %s is not in the data dir %s (docs/data.md)\n",
                                 file.c_str(), data_dir.c_str());
                    return 2;
                }
        const fs::path out = s.out;
        recipes::root_only(world, [&] {
            if (fresh) fs::remove_all(out);
            recipes::prepare_out_dir(out, "--out");
        });
        const base_model b = open_base(s);
        std::printf("base: %s (%s pooling%s, max %lld tokens)\n", s.base.c_str(), tl::pooling_name(b.config.pooling),
                    b.config.normalize ? ", normalised" : "", static_cast<long long>(b.config.max_length));

        nlohmann::json metrics = fs::exists(out / "metrics.json")
                                     ? nlohmann::json::parse(recipes::read_text_file(out / "metrics.json"))
                                     : nlohmann::json::object();
        world.barrier(); // every rank read the modes already finished before rank 0 writes metrics.json again
        std::string report = "# 09_retrieval\n\nBase model: `" + s.base + "`. " + std::to_string(s.steps) +
                             " steps of " + std::to_string(s.batch) +
                             " pairs per mode, multiple-negatives ranking loss (scale " + std::to_string(int(s.scale)) +
                             "), max " + std::to_string(b.config.max_length) +
                             " tokens per text. Held-out queries ask about documents no training pair showed; the "
                             "corpus searched is every document of the task.\n";
        std::vector<tl::plot_series> curves;
        for (const std::string& name : s.tasks) {
            recipes::retrieval_task t = recipes::make_task(name, data_dir, s.test_fraction, seed);
            if (s.smoke_queries > 0) {
                t.test_queries.resize(std::min(t.test_queries.size(), s.smoke_queries));
                t.relevant.resize(t.test_queries.size());
                t.train.resize(std::min(t.train.size(), 4 * s.smoke_queries));
            }
            std::printf("\n== %s: %zu training pairs, %zu held-out queries about %zu unseen documents, corpus %zu\n",
                        t.description.c_str(), t.train.size(), t.test_queries.size(), t.test_documents,
                        t.corpus.size());
            nlohmann::json& task_json = metrics[name];
            std::vector<mode_result> rows;
            if (root && !task_json.contains("base")) {
                auto model = tl::load_bert<backend>(b.transformer_dir);
                auto se = sentence_encoder_of(*model, b);
                mode_result base{"base", evaluate(se, t, s), {}, 0, s.base};
                task_json["base"] = result_json(base);
            }
            if (root) {
                rows.push_back(result_from_json(task_json["base"]));
                std::printf("base model (the baseline):\n%s", rows.back().metrics.table().c_str());
            }
            for (const std::string& mode : s.modes) {
                if (!task_json.contains(mode)) {
                    const fs::path dir = out / name / mode;
                    if (root) fs::create_directories(dir);
                    std::printf("-- %s fine-tuning\n", mode.c_str());
                    mode_result r;
                    if (mode == "full")
                        r = train_mode<tl::no_adapter>(mode, b, t, s, seed, dir, world);
                    else if (mode == "lora")
                        r = train_mode<lora_r8>(mode, b, t, s, seed, dir, world);
                    else if (mode == "qlora")
                        r = train_mode<qlora_r8>(mode, b, t, s, seed, dir, world);
                    else
                        tl::fail("09_retrieval: unknown mode \"" + mode + "\" (full, lora, qlora)");
                    if (!root) continue; // its part of the training done
                    task_json[mode] = result_json(r);
                    std::ofstream(out / "metrics.json") << metrics.dump(2) << "\n"; // a finished mode is kept
                }
                if (!root) continue;
                rows.push_back(result_from_json(task_json[mode]));
                std::printf("%s:\n%s", mode.c_str(), rows.back().metrics.table().c_str());
                tl::plot_series curve{name + " " + mode, {}, {}};
                for (std::size_t i = 0; i < rows.back().losses.size(); ++i) {
                    curve.x.push_back(double(i + 1));
                    curve.y.push_back(rows.back().losses[i]);
                }
                curves.push_back(curve);
            }
            if (!root) continue;
            std::ofstream(out / "metrics.json") << metrics.dump(2) << "\n";
            report += "\n## " + t.description + "\n\n" + std::to_string(t.train.size()) + " training pairs; " +
                      std::to_string(t.test_queries.size()) + " held-out queries about " +
                      std::to_string(t.test_documents) + " unseen documents; corpus of " +
                      std::to_string(t.corpus.size()) + " documents.\n\n" + report_table(rows);
        }
        if (!root) return 0;
        if (!curves.empty()) {
            std::ofstream(out / "loss.svg") << tl::svg_line_plot(
                curves, {.title = "training loss (multiple-negatives ranking)", .x_label = "step", .y_label = "loss"});
            report += "\n![training loss](loss.svg)\n";
        }
        std::ofstream(out / "report.md") << report;
        std::printf("\nreport: %s\n", (out / "report.md").c_str());
    } catch (const std::exception& e) {
        if (world.size() > 1) world.abort(e.what()); // the other ranks would wait for this one forever
        return recipes::report_error(e);
    }
    return 0;
}
