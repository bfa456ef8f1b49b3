// 04_russian_novels: the course's pretraining recipe, from raw novels to a model that writes Russian.
//
// Task:     a Llama-style decoder (RoPE, GQA, SwiGLU, RMSNorm) trained from scratch on 107 Russian novels.
// Stages:   1. clean the corpus (NFC, whitespace and punctuation, sentences with Latin or pre-reform letters
//              dropped, exact and near duplicates removed: tinylm/data);
//           2. train a 3,000-token byte-level BPE tokenizer on the cleaned text (tinylm/tokenizer);
//           3. cut documents into context-sized chunks with <bos>/<eos> and write train.bin / val.bin
//              (split by document);
//           4. train with AdamW, warmup + cosine, clipping and gradient accumulation, validating and
//              sampling the course's ten prompts every --eval-every steps; checkpoints (Hugging Face layout
//              with tokenizer.json) let an interrupted run resume bit-identically;
//           5. continue the ten prompts with the final model.
//           Stages 1-3 are cached in OUT/data and skipped when their files exist.
// Data:     ../shared/data/russian_novels/corpus (TINYLM_DATA_DIR or --data-dir; public source:
//           github.com/JoannaBy/RussianNovels, folder corpus/).
// Presets:  --preset cpu (the default: sized so that the README's main command ends within 30 minutes on
//           2 cores) and --preset 150m (the course's configuration: hidden 1024, 16 layers, 16/8 heads,
//           intermediate 1536, context 512; 132M parameters; days on 2 cores, meant for bigger machines).
// Command:  build/examples/04_russian_novels [--preset cpu] [--steps N] [--out runs/russian_novels]
// Output:   progress lines, validation loss and perplexity, the ten continuations; OUT/report.md (loss
//           curves and samples), OUT/tensorboard, OUT/log.jsonl, OUT/checkpoint.
#include <tinylm/core/data_dir.hpp>
#include <tinylm/data/corpus.hpp>
#include <tinylm/eval/generate.hpp>
#include <tinylm/tinylm.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/train/run_logger.hpp>
#include <tinylm/train/shard_batches.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> course_prompts = {"Все мысли, которые имеют огромные последствия",
                                                 "Сила войска зависит от его духа",
                                                 "Мысль о том, что он принес страдания",
                                                 "Человек сознает себя свободным",
                                                 "Что бы ни случилось, я всегда буду",
                                                 "Любовь мешает смерти",
                                                 "Нет, жизнь не кончена",
                                                 "Всякая мысль, даже самая простая",
                                                 "Война не любезность, а самое гадкое дело",
                                                 "Чтобы жить честно"};

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::uint64_t file_hash(const fs::path& p) { // FNV-1a over the bytes: identifies the tokenizer in shard headers
    std::ifstream in(p, std::ios::binary);
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (char c; in.get(c);)
        h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    return h;
}

struct prepared_data {
    tl::tokenizer tok;
    tl::data::tokenizer_info info;
    fs::path train_bin, val_bin;
};

// Stages 1-3, cached in `dir`.
prepared_data prepare(const fs::path& corpus, const fs::path& dir, std::size_t vocab, std::size_t context,
                      std::size_t max_files, double val_fraction, int threads) {
    namespace td = tl::data;
    prepared_data d;
    d.train_bin = dir / "train.bin";
    d.val_bin = dir / "val.bin";
    const fs::path tok_path = dir / "tokenizer.json", clean_path = dir / "clean.jsonl";
    if (fs::exists(d.val_bin) && fs::exists(tok_path)) {
        d.tok = tl::load_tokenizer_json(tok_path.string());
        d.info = {file_hash(tok_path), std::uint32_t(d.tok.token_to_id("<bos>")),
                  std::uint32_t(d.tok.token_to_id("<eos>")), std::uint32_t(d.tok.vocab_size())};
        std::printf("data: reusing %s\n", dir.c_str());
        return d;
    }
    fs::create_directories(dir);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(corpus))
        if (e.path().extension() == ".txt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    tl::check(!files.empty(), [&] { return "04_russian_novels: no .txt files in " + corpus.string(); });
    if (max_files > 0 && files.size() > max_files) files.resize(max_files);

    // 1. Clean.
    td::clean_options opt;
    opt.allowed = td::alphabet::preset("russian");
    opt.threads = threads;
    td::cleaner cleaner(opt);
    td::text_reader reader(files);
    std::string all_text; // tokenizer training text
    {
        std::ofstream out(clean_path, std::ios::binary);
        cleaner.run(reader, [&](const td::clean_paragraph& p) {
            out << nlohmann::json{{"doc", p.doc}, {"source", p.source}, {"text", p.text}}.dump() << '\n';
            all_text += p.text;
            all_text += '\n';
        });
    }
    const auto& rep = cleaner.report();
    std::printf("data: cleaned %zu files, %.1f MB -> %.1f MB, %llu paragraphs kept (%.1f s)\n", files.size(),
                double(rep.bytes_in) / 1e6, double(rep.bytes_out) / 1e6, (unsigned long long)rep.paragraphs_out,
                seconds_since(t0));

    // 2. Tokenizer.
    t0 = std::chrono::steady_clock::now();
    tl::bpe_trainer_options topt;
    topt.vocab_size = vocab;
    topt.special_tokens = {"<bos>", "<eos>", "<pad>"};
    topt.n_threads = threads;
    tl::bpe_trainer trainer(topt);
    trainer.feed(all_text);
    d.tok = trainer.train();
    tl::save_tokenizer_json(d.tok, tok_path.string());
    std::printf("data: trained a %zu-token byte-level BPE tokenizer (%.1f s)\n", d.tok.vocab_size(), seconds_since(t0));
    all_text.clear();
    all_text.shrink_to_fit();

    // 3. Shards.
    t0 = std::chrono::steady_clock::now();
    d.info = {file_hash(tok_path), std::uint32_t(d.tok.token_to_id("<bos>")), std::uint32_t(d.tok.token_to_id("<eos>")),
              std::uint32_t(d.tok.vocab_size())};
    td::jsonl_reader cleaned({clean_path}, "text", true, "doc");
    td::document_reader docs(cleaned);
    const auto encode = [&](std::string_view s) {
        thread_local tl::encode_cache cache;
        std::vector<tl::token_t> ids;
        d.tok.encode_into(s, ids, &cache);
        return std::vector<std::uint32_t>(ids.begin(), ids.end());
    };
    const auto sum =
        td::write_shards([&](td::document& doc) { return docs.next(doc); }, encode, d.info, d.train_bin, d.val_bin,
                         {.chunk = {.context = context}, .val_fraction = val_fraction, .threads = threads});
    std::printf("data: shards: train %llu tokens (%llu documents), validation %llu tokens (%llu documents) (%.1f s)\n",
                (unsigned long long)sum.train_tokens, (unsigned long long)sum.train_docs,
                (unsigned long long)sum.val_tokens, (unsigned long long)sum.val_docs, seconds_since(t0));
    return d;
}

template <class Model>
std::vector<std::pair<std::string, std::string>> continue_prompts(const Model& model, const tl::tokenizer& tok,
                                                                  int new_tokens, std::uint64_t seed) {
    std::vector<std::pair<std::string, std::string>> out;
    const tl::token_t bos = tok.token_to_id("<bos>"), eos = tok.token_to_id("<eos>");
    for (std::size_t i = 0; i < course_prompts.size(); ++i) {
        std::vector<tl::token_t> ids{bos};
        for (tl::token_t id : tok.encode(course_prompts[i]))
            ids.push_back(id);
        const tl::generation_options g{
            .max_new_tokens = new_tokens,
            .stop_tokens = {eos},
            .sampling = {.temperature = 0.8, .top_k = 50, .top_p = 0.95, .repetition_penalty = 1.1, .seed = seed + i}};
        const auto gen = tl::generate(model, ids, g);
        out.emplace_back(course_prompts[i], tok.decode(std::vector<tl::token_t>(gen.begin(), gen.end()), true));
    }
    return out;
}

template <class Config>
int train(const prepared_data& data, tl::trainer_options options, std::uint64_t seed, int sample_tokens,
          const std::string& title) {
    using model_t = tl::decoder<Config>;
    tl::check(data.tok.vocab_size() <= std::size_t(Config::value.vocab_size),
              "04_russian_novels: the tokenizer is larger than the model's vocabulary");
    const tl::data::token_shard train_shard(data.train_bin, data.info.hash), val_shard(data.val_bin, data.info.hash);
    tl::check(val_shard.size() > std::size_t(options.seq_len) + 1, [&] {
        return "04_russian_novels: the validation split has only " + std::to_string(val_shard.size()) +
               " tokens; use more novels (--max-files) or delete " + data.val_bin.parent_path().string();
    });
    std::vector<tl::token_t> val_tokens(
        std::min<std::size_t>(val_shard.size(), std::size_t(options.eval_windows * options.seq_len + 1)));
    val_shard.copy<tl::token_t>(0, val_tokens);

    model_t model(seed);
    tl::shard_batches batches(train_shard, options.batch_size, options.seq_len, seed);
    options.special = {.bos = int(data.info.bos), .eos = int(data.info.eos), .pad = data.tok.token_to_id("<pad>")};
    tl::trainer run(model, batches, val_tokens, options);
    const fs::path tok_json = fs::path(data.val_bin).parent_path() / "tokenizer.json";
    run.add_to_checkpoint = [&](const fs::path& dir) { fs::copy_file(tok_json, dir / "tokenizer.json"); };
    tl::run_logger logger(options.out_dir, title, options.max_steps, run.restore());
    const double tokens = double(options.max_steps) * options.batch_size * options.seq_len * options.grad_accum;
    logger.summary("model", std::to_string(tl::parameter_count(Config::value)) + " parameters, backend " +
                                std::string(model_t::backend::name));
    logger.summary("training tokens", std::to_string(static_cast<long long>(tokens)));
    std::printf("model: %lld parameters, %lld steps of %lld tokens (%.1fM tokens), backend %s\n",
                static_cast<long long>(tl::parameter_count(Config::value)), options.max_steps,
                static_cast<long long>(options.batch_size * options.seq_len * options.grad_accum), tokens / 1e6,
                std::string(model_t::backend::name).c_str());
    double val_loss = NAN;
    run.on_step = [&](const tl::step_report& r) { logger.step(r); };
    run.on_eval = [&](long long step, double loss) {
        logger.eval(step, loss);
        val_loss = loss;
        if (step < options.max_steps) logger.samples(step, continue_prompts(model, data.tok, sample_tokens / 2, seed));
    };
    if (run.run() == tl::train_outcome::interrupted) {
        logger.finish();
        std::printf("interrupted at step %lld; checkpoint in %s (run again to resume)\n", run.state().step,
                    run.checkpoint_dir().c_str());
        return 130;
    }
    if (std::isnan(val_loss)) val_loss = run.evaluate();
    const auto samples = continue_prompts(model, data.tok, sample_tokens, seed);
    logger.samples(-1, samples);
    logger.summary("validation loss",
                   std::to_string(val_loss) + " nats/token (perplexity " + std::to_string(std::exp(val_loss)) + ")");
    std::printf("\nvalidation loss %.4f nats/token, perplexity %.1f\n\n", val_loss, std::exp(val_loss));
    for (const auto& [prompt, text] : samples)
        std::printf("%s|%s\n\n", prompt.c_str(), text.c_str());
    std::printf("report: %s\ncheckpoint: %s (Hugging Face layout, with tokenizer.json)\n", logger.finish().c_str(),
                run.checkpoint_dir().c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"Pretrain a Llama-style model on Russian novels"};
    std::string preset = "cpu", data_dir_flag;
    tl::trainer_options options{.batch_size = 8,
                                .seq_len = 256,
                                .grad_accum = 2,
                                .max_steps = 700,
                                .peak_lr = 3e-3,
                                .min_lr = 3e-4,
                                .warmup_steps = 60,
                                .adamw = {.weight_decay = 0.1},
                                .eval_every = 175,
                                .eval_windows = 64,
                                .checkpoint_every = 100,
                                .out_dir = "runs/russian_novels"};
    std::uint64_t seed = 1;
    std::size_t max_files = 0;
    double val_fraction = 0.05;
    int threads = 2, sample_tokens = 60;
    bool fresh = false, smoke = false;
    app.add_option("--preset", preset, "cpu or 150m")->check(CLI::IsMember({"cpu", "150m"}));
    app.add_option("--data-dir", data_dir_flag, "tinylm data directory (default: $TINYLM_DATA_DIR or ../shared/data)");
    app.add_option("--out", options.out_dir, "run directory");
    app.add_option("--steps", options.max_steps, "optimizer steps")->check(CLI::PositiveNumber);
    app.add_option("--batch", options.batch_size, "sequences per micro-batch")->check(CLI::PositiveNumber);
    app.add_option("--grad-accum", options.grad_accum, "micro-batches per step")->check(CLI::PositiveNumber);
    app.add_flag("--gradient-checkpointing", options.gradient_checkpointing,
                 "recompute each block's forward in backward: activations of one layer instead of all");
    app.add_option("--lr", options.peak_lr, "peak learning rate");
    app.add_option("--eval-every", options.eval_every, "steps between validation and prompt samples");
    app.add_option("--max-files", max_files, "use only the first N novels (0: all)");
    app.add_option("--sample-tokens", sample_tokens, "new tokens per prompt continuation");
    app.add_option("--seed", seed, "initialisation and batching seed");
    app.add_flag("--fresh", fresh, "discard the checkpoint in --out (the prepared data is kept)");
    app.add_flag("--smoke", smoke, "a minute-long run on 3 novels (for CI)");
    CLI11_PARSE(app, argc, argv);
    if (smoke) {
        max_files = 8;
        val_fraction = 0.3;
        options.max_steps = 20;
        options.batch_size = 2;
        options.grad_accum = 1;
        options.seq_len = 64;
        options.eval_every = 10;
        options.eval_windows = 4;
        options.warmup_steps = 2;
        sample_tokens = 8;
        options.out_dir = options.out_dir / "smoke";
    }
    options.min_lr = options.peak_lr / 10;
    options.warmup_steps = std::min<long long>(options.warmup_steps, options.max_steps / 5);
    if (preset == "150m") {
        options.seq_len = smoke ? options.seq_len : 512;
        options.peak_lr = 3e-4;
        options.min_lr = 3e-5;
    }
    if (fresh) fs::remove_all(options.out_dir / "checkpoint");

    const fs::path data_dir = tl::find_data_dir(data_dir_flag), corpus = data_dir / "russian_novels" / "corpus";
    if (!fs::exists(corpus)) {
        std::cerr << "04_russian_novels: " << corpus << " does not exist. Set --data-dir or TINYLM_DATA_DIR, or "
                  << "download the corpus from github.com/JoannaBy/RussianNovels (folder corpus/).\n";
        return 2;
    }
    const auto start = std::chrono::steady_clock::now();
    const fs::path data_cache = options.out_dir / ("data_ctx" + std::to_string(options.seq_len) +
                                                   (max_files ? "_files" + std::to_string(max_files) : ""));
    const prepared_data data =
        prepare(corpus, data_cache, 3000, std::size_t(options.seq_len), max_files, val_fraction, threads);
    std::printf("data: ready after %.0f s\n", seconds_since(start));
    const int rc = preset == "150m" ? train<tl::presets::russian_novels_150m>(data, options, seed, sample_tokens,
                                                                              "tinylm: Russian novels, 150m preset")
                                    : train<tl::presets::russian_novels_cpu>(data, options, seed, sample_tokens,
                                                                             "tinylm: Russian novels, cpu preset");
    std::printf("total time %.1f minutes\n", seconds_since(start) / 60);
    return rc;
} catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
}
