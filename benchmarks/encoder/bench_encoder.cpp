// bench_encoder: sentence-encoder throughput of tinylm on a sentence-transformers folder, the numbers run.py puts
// beside sentence-transformers' (docs/retrieval.md):
//   encode  sentences/s of SentenceTransformer.encode's work: tokenize, forward, pool, normalise (no gradients)
//   train   tokens/s of contrastive training steps: (anchor, positive) pairs, multiple-negatives ranking loss,
//           forward + backward + AdamW (full fine-tuning), as sentence-transformers' fit does
// Prints one JSON line.
#include <tinylm/data/pairs.hpp>
#include <tinylm/embed/cached_ranking.hpp>
#include <tinylm/io/sentence_transformers.hpp>
#include <tinylm/optim/adamw.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

int main(int argc, char** argv) {
    std::string model_dir, texts_file, mode = "encode";
    int batch = 64, threads = 2, repeats = 3, steps = 4, max_length = 128;
    CLI::App app{"tinylm sentence-encoder throughput (encode or train)"};
    app.add_option("--model", model_dir, "sentence-transformers folder")->required()->check(CLI::ExistingDirectory);
    app.add_option("--texts", texts_file, "one text per line (train: anchor<TAB>positive)")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("--mode", mode, "encode or train")->check(CLI::IsMember({"encode", "train"}));
    app.add_option("--batch", batch, "texts per forward (encode) or pairs per step (train)");
    app.add_option("--threads", threads);
    app.add_option("--repeats", repeats, "timed passes over the texts (encode) after one warm-up");
    app.add_option("--steps", steps, "timed training steps after one warm-up step");
    app.add_option("--max-length", max_length, "tokens per text");
    CLI11_PARSE(app, argc, argv);
    omp_set_num_threads(threads);
    try {
        const tl::sentence_folder f = tl::read_sentence_config(model_dir);
        const tl::wordpiece_tokenizer tok = tl::load_wordpiece_json((fs::path(model_dir) / "tokenizer.json").string());
        auto model = tl::load_bert(f.transformer_dir);
        tl::embed::sentence_config config = f.config;
        config.max_length = max_length;
        tl::embed::sentence_encoder se(*model, tl::sentence_tokenizer(tok), config);
        nlohmann::json out{{"what", mode}, {"batch", batch}, {"threads", threads}, {"max_length", max_length}};
        if (mode == "encode") {
            std::vector<std::string> texts;
            std::ifstream in(texts_file);
            for (std::string line; std::getline(in, line);)
                texts.push_back(line);
            se.encode(texts, batch); // warm-up: plans the activation memory of every batch shape
            std::vector<double> rates;
            for (int r = 0; r < repeats; ++r) {
                const auto t0 = clock_type::now();
                se.encode(texts, batch);
                rates.push_back(double(texts.size()) / std::chrono::duration<double>(clock_type::now() - t0).count());
            }
            out["sentences"] = texts.size();
            out["sentences_per_s"] = median(rates);
            out["rounds"] = rates;
        } else {
            const auto pairs = tl::data::read_pairs(texts_file);
            tl::adamw opt(*model, {.lr = 2e-5, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01});
            tl::embed::ranking_step<tl::default_backend> step;
            std::vector<double> rates;
            std::size_t next = 0;
            for (int k = 0; k <= steps; ++k) {
                tl::data::pair_batch b;
                for (int i = 0; i < batch; ++i, next = (next + 1) % pairs.size()) {
                    b.anchors.push_back(pairs[next].anchor);
                    b.positives.push_back(pairs[next].positive);
                }
                // Tokens the step computes: both columns at their padded lengths, as torch computes them.
                const auto ta = tok.encode_batch(b.anchors, std::size_t(max_length));
                const auto tp = tok.encode_batch(b.positives, std::size_t(max_length));
                const double tokens = double(ta.batch * ta.time + tp.batch * tp.time);
                const auto t0 = clock_type::now();
                model->zero_grad();
                step.run(se, {b.anchors, b.positives}, {.mini_batch_size = 0}); // no gradient cache: as torch
                opt.step();
                const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
                if (k > 0) rates.push_back(tokens / s);
            }
            out["tokens_per_s"] = median(rates);
            out["rounds"] = rates;
        }
        std::printf("%s\n", out.dump().c_str());
    } catch (const tl::error& e) {
        std::fprintf(stderr, "bench_encoder: %s\n", e.what());
        return 1;
    }
    return 0;
}
