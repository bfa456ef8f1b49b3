// 11_topic_classifier: a topic classifier on the theme labels of ../shared/data/jokes/anekdoty_themed.jsonl and
// the balancing step that samples the corpus to a uniform theme mix (issue 22).
//
//   11_topic_classifier --out runs/topic_classifier
//
// Themes with at least --min-count jokes are the classes (the file's long tail and its rows broken by a CSV
// export, whose "theme" is joke text, fall below it). --repeats stratified held-out splits (seeds --seed, --seed
// + 1, ...: the held-out set is small, so one split alone says little); on each, two linear softmax heads
// (eval/text_classifier.hpp) train with AdamW on the training split:
//   - the baseline on hashed bags of words and character 2..4-grams,
//   - one on the mean-pooled, normalised sentence embedding of all-MiniLM-L6-v2 (--base): the embeddings are
//     computed once by the tinylm encoder, which stays frozen; only the head trains;
//   - with --finetune-epochs N, the encoder itself fine-tuned with a linear head through the trainer
//     (eval/encoder_classifier.hpp), the epoch kept by accuracy on a validation part of the training split
//     (--precision bf16: its products in bf16 with f32 accumulation, on a CPU with AVX-512 BF16 or AMX).
// Both report accuracy and macro-F1 on each held-out split, and their means. Then data/balance.hpp samples the
// classified corpus to a uniform mix (--per-class per theme; 0: the smallest theme's size, no repeats) and
// <out>/balanced.jsonl gets the chosen rows as they were in the file. --classify FILE.jsonl does the course's
// step on an unlabelled corpus: the baseline head, trained on every labelled joke, predicts each row's theme and
// the rows are balanced by it (<out>/classified_balanced.jsonl, with "predicted_theme"). <out>/report.md has the
// tables, <out>/metrics.json the numbers.
#include <options.hpp>

#include <tinylm/core/data_dir.hpp>
#include <tinylm/core/json_field.hpp>
#include <tinylm/data/balance.hpp>
#include <tinylm/eval/encoder_classifier.hpp>
#include <tinylm/eval/text_classifier.hpp>
#include <tinylm/io/hf_encoder.hpp>
#include <tinylm/io/sentence_transformers.hpp>
#include <tinylm/train/trainer.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>

namespace {

using backend = tl::default_backend;
namespace fs = std::filesystem;

struct settings {
    std::string input, base, out = "runs/topic_classifier", classify, classify_field = "text";
    std::size_t min_count = 10, per_class = 0, smoke_classes = 0;
    double test_fraction = 0.25;
    int bits = 14, max_length = 128, eval_batch = 32, repeats = 5;
    tl::eval::head_options head{.epochs = 100, .batch = 32, .lr = 1e-2, .weight_decay = 1e-2, .seed = 1};
    // The fine-tuned encoder (0 epochs: not run): trainer rows of row_tokens packed texts, AdamW at finetune_lr
    // (linear warmup over the first epoch, then linear decay), the epoch kept by accuracy on a validation part
    // of the training split (validation_fraction of each theme), never by the held-out split.
    int finetune_epochs = 0, finetune_rows = 4;
    tl::index_t row_tokens = 256;
    double finetune_lr = 1e-4, validation_fraction = 0.2;
    tl::precision products = tl::precision::f32; // the fine-tuning's products (--precision, checked_precision)
};

struct labelled_rows {
    std::vector<std::string> lines, texts; // the file's own line (for the balanced JSONL) and its text
    std::vector<int> labels;
    std::vector<std::string> classes; // by count, largest first
    std::size_t read = 0, unreadable = 0, rare = 0;
};

// Rows {"theme": ..., "text": ...}; a line that is not such an object is counted and skipped.
labelled_rows read_themes(const fs::path& file, const settings& s) {
    std::ifstream in(file);
    tl::check(bool(in), [&] { return "11_topic_classifier: cannot open " + file.string(); });
    std::vector<std::pair<std::string, std::string>> rows; // theme, text
    std::vector<std::string> lines;
    labelled_rows r;
    for (std::string line; std::getline(in, line);) {
        ++r.read;
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("theme") || !j.contains("text") ||
            !j["theme"].is_string() || !j["text"].is_string() || j["text"].get<std::string>().empty()) {
            ++r.unreadable;
            continue;
        }
        rows.emplace_back(j["theme"].get<std::string>(), j["text"].get<std::string>());
        lines.push_back(line);
    }
    std::map<std::string, std::size_t> count;
    for (const auto& row : rows)
        ++count[row.first];
    for (const auto& [theme, n] : count)
        if (n >= s.min_count) r.classes.push_back(theme);
    std::stable_sort(r.classes.begin(), r.classes.end(),
                     [&](const std::string& a, const std::string& b) { return count[a] > count[b]; });
    if (s.smoke_classes > 0 && r.classes.size() > s.smoke_classes) r.classes.resize(s.smoke_classes);
    std::map<std::string, int> id;
    for (std::size_t k = 0; k < r.classes.size(); ++k)
        id[r.classes[k]] = int(k);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto it = id.find(rows[i].first);
        if (it == id.end()) {
            ++r.rare;
            continue;
        }
        r.lines.push_back(lines[i]);
        r.texts.push_back(rows[i].second);
        r.labels.push_back(it->second);
    }
    return r;
}

// Per class of the rows in `pool`, a seeded shuffle; round(fraction * count) (at least 1) rows go to the test split.
void stratified_split(const labelled_rows& r, const std::vector<std::size_t>& pool, double fraction, std::uint64_t seed,
                      std::uint64_t stream, std::vector<std::size_t>& train, std::vector<std::size_t>& test) {
    std::vector<std::vector<std::size_t>> members(r.classes.size());
    for (std::size_t i : pool)
        members[std::size_t(r.labels[i])].push_back(i);
    tl::counter_rng rng(seed, stream);
    for (auto& m : members) {
        for (std::size_t i = m.size(); i > 1; --i)
            std::swap(m[i - 1], m[rng.below(i)]);
        const std::size_t n_test = std::max<std::size_t>(1, std::size_t(std::lround(fraction * double(m.size()))));
        test.insert(test.end(), m.begin(), m.begin() + std::ptrdiff_t(n_test));
        train.insert(train.end(), m.begin() + std::ptrdiff_t(n_test), m.end());
    }
}

tl::eval::feature_matrix rows_of(const tl::eval::feature_matrix& x, const std::vector<std::size_t>& rows) {
    tl::eval::feature_matrix out;
    out.rows = tl::index_t(rows.size()), out.dim = x.dim;
    for (std::size_t i : rows) {
        const auto r = x.row(tl::index_t(i));
        out.values.insert(out.values.end(), r.begin(), r.end());
    }
    return out;
}

struct head_result {
    std::string name;
    tl::eval::classification_metrics metrics;
    double feature_seconds = 0, train_seconds = 0, final_loss = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

head_result train_and_score(const std::string& name, const tl::eval::feature_matrix& x, const labelled_rows& r,
                            const std::vector<std::size_t>& train, const std::vector<std::size_t>& test,
                            const settings& s) {
    std::vector<int> y_train, y_test;
    for (std::size_t i : train)
        y_train.push_back(r.labels[i]);
    for (std::size_t i : test)
        y_test.push_back(r.labels[i]);
    head_result h;
    h.name = name;
    const auto t0 = std::chrono::steady_clock::now();
    tl::eval::linear_classifier head(x.dim, tl::index_t(r.classes.size()));
    const auto losses = head.fit(rows_of(x, train), y_train, s.head);
    h.train_seconds = seconds_since(t0);
    h.final_loss = losses.back();
    h.metrics = tl::eval::score_predictions(y_test, head.predict(rows_of(x, test)), int(r.classes.size()));
    std::printf("%-28s accuracy %.3f  macro-F1 %.3f  (%zu held out; training loss %.3f -> %.3f, %.1f s)\n",
                name.c_str(), h.metrics.accuracy, h.metrics.macro_f1, test.size(), losses.front(), losses.back(),
                h.train_seconds);
    return h;
}

// The encoder's folder: a sentence-transformers folder (its BertModel folder, pooling and normalisation) or a plain
// BertModel folder (mean pooling, normalised: all-MiniLM's recipe), and its WordPiece tokenizer.
struct encoder_folder {
    fs::path transformer_dir;
    tl::embed::sentence_config config;
    tl::wordpiece_tokenizer tokenizer;
};

encoder_folder read_encoder_folder(const settings& s) {
    encoder_folder f;
    f.transformer_dir = s.base;
    if (fs::exists(fs::path(s.base) / "modules.json")) {
        const tl::sentence_folder sf = tl::read_sentence_config(s.base);
        f.transformer_dir = sf.transformer_dir;
        f.config = sf.config;
    }
    f.config.max_length =
        std::min<tl::index_t>(s.max_length, tl::read_bert_folder_config(f.transformer_dir).max_seq_len);
    const fs::path tokenizer_dir =
        fs::exists(f.transformer_dir / "tokenizer.json") ? f.transformer_dir : fs::path(s.base);
    f.tokenizer = tl::load_wordpiece_json((tokenizer_dir / "tokenizer.json").string());
    return f;
}

// The mean-pooled sentence embeddings of every text, computed once by the frozen encoder.
tl::eval::feature_matrix encoder_features(const labelled_rows& r, const encoder_folder& f, const settings& s) {
    auto model = tl::load_bert<backend>(f.transformer_dir);
    tl::embed::sentence_encoder se(*model, tl::sentence_tokenizer(f.tokenizer), f.config);
    tl::eval::feature_matrix x;
    x.rows = tl::index_t(r.texts.size()), x.dim = se.embedding_dim();
    x.values = se.encode(r.texts, s.eval_batch);
    std::printf("encoder: %s, %s pooling%s, max %lld tokens, %lld of %lld texts truncated\n", s.base.c_str(),
                tl::pooling_name(f.config.pooling), f.config.normalize ? ", normalised" : "",
                static_cast<long long>(f.config.max_length), static_cast<long long>(se.truncated_texts()),
                static_cast<long long>(se.embedded_texts()));
    return x;
}

// Each text's WordPiece ids ([CLS] ... [SEP], cut at max_length), as the fine-tuned classifier reads them.
std::vector<std::vector<tl::token_t>> text_tokens(const labelled_rows& r, const encoder_folder& f) {
    const tl::wordpiece_batch b = f.tokenizer.encode_batch(r.texts, std::size_t(f.config.max_length));
    std::vector<std::vector<tl::token_t>> out(b.batch);
    for (std::size_t i = 0; i < b.batch; ++i)
        out[i].assign(b.ids.begin() + std::ptrdiff_t(i * b.time),
                      b.ids.begin() + std::ptrdiff_t(i * b.time + std::size_t(b.lengths[i])));
    return out;
}

struct finetune_run {
    int best_epoch = 0;
    double best_validation_accuracy = 0;
    std::vector<double> validation_accuracy; // per epoch
};

// The encoder fine-tuned end to end with a linear head (eval/encoder_classifier.hpp) by the trainer, from the
// pretrained weights anew on each split: trained on the training split less a stratified validation part, the
// weights of the epoch with the best validation accuracy (the first on ties) scored on the held-out split.
head_result finetune_and_score(const std::string& name, const std::vector<std::vector<tl::token_t>>& tokens,
                               const labelled_rows& r, const encoder_folder& f, const std::vector<std::size_t>& train,
                               const std::vector<std::size_t>& test, std::uint64_t seed, const settings& s,
                               finetune_run& run) {
    std::vector<std::size_t> fit, validation;
    stratified_split(r, train, s.validation_fraction, seed, 0x7a11d, fit, validation);
    auto pick = [&](const std::vector<std::size_t>& rows, std::vector<std::vector<tl::token_t>>& t,
                    std::vector<int>& y) {
        for (std::size_t i : rows)
            t.push_back(tokens[i]), y.push_back(r.labels[i]);
    };
    std::vector<std::vector<tl::token_t>> fit_tokens, validation_tokens, test_tokens;
    std::vector<int> fit_labels, validation_labels, test_labels;
    pick(fit, fit_tokens, fit_labels);
    pick(validation, validation_tokens, validation_labels);
    pick(test, test_tokens, test_labels);

    head_result h;
    h.name = name;
    const auto t0 = std::chrono::steady_clock::now();
    auto model = tl::load_bert<backend>(f.transformer_dir);
    const tl::index_t K = tl::index_t(r.classes.size());
    tl::eval::encoder_classifier clf(*model, K, {.pooling = f.config.pooling, .seed = seed});
    const tl::eval::classification_rows rows =
        tl::eval::pack_classification_rows(fit_tokens, fit_labels, s.row_tokens, f.tokenizer.pad_id);
    tl::packed_rows source(rows.ids, rows.targets, rows.doc_start, rows.time, seed);
    const long long steps_per_epoch = (rows.rows + s.finetune_rows - 1) / s.finetune_rows;
    tl::trainer_options o{.batch_size = s.finetune_rows,
                          .seq_len = rows.time,
                          .max_steps = steps_per_epoch * s.finetune_epochs,
                          .peak_lr = s.finetune_lr};
    o.min_lr = 0.0, o.warmup_steps = steps_per_epoch, o.decay = tl::decay_kind::linear;
    o.eval_every = int(steps_per_epoch), o.checkpoint_every = 0; // no out_dir: nothing written
    o.adamw.weight_decay = 0.01;
    o.matmul_precision = s.products; // validation inside the run too
    // The best epoch's weights, kept in memory.
    std::vector<std::vector<float>> best;
    run = {};
    auto validate = [&] {
        const auto m = tl::eval::score_predictions(validation_labels, clf.predict(validation_tokens), int(K));
        run.validation_accuracy.push_back(m.accuracy);
        if (best.empty() || m.accuracy > run.best_validation_accuracy) {
            run.best_validation_accuracy = m.accuracy, run.best_epoch = int(run.validation_accuracy.size());
            best.clear();
            for (const tl::parameter_entry& e : clf.parameter_entries())
                best.emplace_back(e.value.data, e.value.data + e.value.numel());
        }
        return 1.0 - m.accuracy;
    };
    tl::trainer t(clf, source, std::function<double()>(validate), o);
    double last_loss = 0;
    t.on_step = [&](const tl::step_report& r) { last_loss = r.loss; };
    t.on_eval = [&](long long step, double) {
        std::printf("  fine-tuning: epoch %lld, training loss %.3f, validation accuracy %.3f (%zu jokes)\n",
                    step / steps_per_epoch, last_loss, run.validation_accuracy.back(), validation.size());
        std::fflush(stdout);
    };
    t.run();
    for (std::size_t i = 0; i < best.size(); ++i)
        std::copy(best[i].begin(), best[i].end(), clf.parameter_entries()[i].value.data);
    h.train_seconds = seconds_since(t0);
    h.final_loss = last_loss;
    h.metrics = tl::eval::score_predictions(test_labels, clf.predict(test_tokens), int(K));
    std::printf("%-28s accuracy %.3f  macro-F1 %.3f  (%zu held out; %zu trained, %zu validation, epoch %d of %d "
                "kept; %.1f s)\n",
                name.c_str(), h.metrics.accuracy, h.metrics.macro_f1, test.size(), fit.size(), validation.size(),
                run.best_epoch, s.finetune_epochs, h.train_seconds);
    std::fflush(stdout); // minutes per split: the log shows each as it ends
    return h;
}

// Unlabelled JSONL rows: the baseline head, trained on every labelled joke, names each row's theme; the rows are
// then balanced by the predicted themes. Features are built per chunk (2^bits floats a row).
struct predicted_rows {
    std::vector<std::string> lines;
    std::vector<int> labels;
    std::size_t read = 0, skipped = 0;
};

predicted_rows classify_file(const fs::path& file, const std::string& field, const tl::eval::linear_classifier& head,
                             const settings& s) {
    std::ifstream in(file);
    tl::check(bool(in), [&] { return "11_topic_classifier: cannot open --classify " + file.string(); });
    predicted_rows p;
    std::vector<std::string> texts;
    auto flush = [&] {
        if (texts.empty()) return;
        const auto predicted = head.predict(tl::eval::hashed_ngram_features(texts, {.bits = s.bits}));
        p.labels.insert(p.labels.end(), predicted.begin(), predicted.end());
        texts.clear();
    };
    for (std::string line; std::getline(in, line);) {
        ++p.read;
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains(field) || !j[field].is_string() ||
            j[field].get<std::string>().empty()) {
            ++p.skipped;
            continue;
        }
        p.lines.push_back(line);
        texts.push_back(j[field].get<std::string>());
        if (texts.size() == 1024) flush();
    }
    flush();
    return p;
}

std::string histogram_table(const labelled_rows& r, const tl::data::balance_result& b) {
    std::string t = "| theme | before | after |\n|---|---:|---:|\n";
    for (std::size_t k = 0; k < r.classes.size(); ++k) {
        t += "| ";
        t += r.classes[k];
        t += " | " + std::to_string(b.before[k]) + " | " + std::to_string(b.after[k]) + " |\n";
    }
    return t;
}

} // namespace

int main(int argc, char** argv) {
    settings s;
    recipes::data_flags data;
    bool smoke = false;
    std::uint64_t seed = 1;
    std::string precision = "f32"; // --precision: the fine-tuned encoder's products
    s.base = recipes::default_model("all-MiniLM-L6-v2");

    CLI::App app{"Classify jokes by theme (bag of n-grams vs a sentence encoder) and balance the corpus by theme"};
    recipes::show_defaults(app);
    recipes::add_data_options(app, data);
    app.add_option("--input", s.input,
                   "labelled JSONL with theme and text (empty: <data>/jokes/anekdoty_themed.jsonl)");
    app.add_option("--base", s.base, "the sentence encoder: a sentence-transformers folder or a BertModel folder");
    app.add_option("--out", s.out, "run directory (report.md, metrics.json, balanced.jsonl)");
    app.add_option("--min-count", s.min_count, "themes with fewer jokes are left out")
        ->check(recipes::in_range(std::size_t{2}, std::size_t{1000000}, "jokes a theme needs"));
    app.add_option("--test-fraction", s.test_fraction, "share of each theme held out")
        ->check(recipes::in_range(0.05, 0.9, "share of each theme held out"));
    app.add_option("--epochs", s.head.epochs, "passes over the training split (both heads)")
        ->check(recipes::in_range(1, 100000, "passes over the training split"));
    app.add_option("--batch", s.head.batch, "rows per AdamW step")
        ->check(recipes::in_range(tl::index_t{1}, tl::index_t{65536}, "rows per AdamW step"));
    app.add_option("--lr", s.head.lr, "AdamW learning rate (both heads)")
        ->check(recipes::above(0.0, "AdamW learning rate"));
    app.add_option("--weight-decay", s.head.weight_decay, "AdamW decoupled weight decay of W")
        ->check(recipes::at_least(0.0, "AdamW weight decay"));
    app.add_option("--bits", s.bits, "2^bits hashed n-gram buckets (the baseline)")
        ->check(recipes::in_range(8, 20, "bits of the hashed n-gram buckets"));
    app.add_option("--max-length", s.max_length, "tokens per text for the encoder")
        ->check(recipes::in_range(8, 8192, "tokens per text"));
    app.add_option("--eval-batch", s.eval_batch, "texts per encoder forward")
        ->check(recipes::in_range(1, 65536, "texts per encoder forward"));
    app.add_option("--finetune-epochs", s.finetune_epochs,
                   "fine-tune the encoder with a linear head for at most this many epochs (0: not run)")
        ->check(recipes::in_range(0, 1000, "fine-tuning epochs"));
    app.add_option("--finetune-lr", s.finetune_lr, "AdamW peak learning rate of the fine-tuned encoder and head")
        ->check(recipes::above(0.0, "fine-tuning learning rate"));
    app.add_option("--finetune-rows", s.finetune_rows, "rows of packed texts per fine-tuning step")
        ->check(recipes::in_range(1, 4096, "rows per fine-tuning step"));
    app.add_option("--row-tokens", s.row_tokens, "tokens per row of packed texts (at least --max-length)")
        ->check(recipes::in_range(tl::index_t{8}, tl::index_t{65536}, "tokens per row of packed texts"));
    recipes::add_precision_option(app, precision);
    app.add_option("--validation-fraction", s.validation_fraction,
                   "share of each theme's training jokes that picks the fine-tuned epoch")
        ->check(recipes::in_range(0.05, 0.9, "share of the training split for validation"));
    app.add_option("--per-class", s.per_class, "balanced jokes per theme (0: the smallest theme, no repeats)")
        ->check(recipes::at_least(std::size_t{0}, "balanced jokes per theme; 0: the smallest theme"));
    app.add_option("--repeats", s.repeats, "held-out splits (seeds seed, seed + 1, ...), each training both heads")
        ->check(recipes::in_range(1, 100, "held-out splits"));
    app.add_option(
        "--classify", s.classify,
        "unlabelled JSONL: themes predicted by the baseline head, then balanced (classified_balanced.jsonl)");
    app.add_option("--classify-field", s.classify_field, "the text field of --classify rows");
    app.add_option("--seed", seed, "split, training order and balancing seed");
    app.add_flag("--smoke", smoke,
                 "a seconds-long run: the 5 largest themes, 20 epochs, 32 tokens, one fine-tuning epoch (for CI)");
    CLI11_PARSE(app, argc, argv);

    try {
        omp_set_num_threads(data.threads);
        s.products = recipes::checked_precision("11_topic_classifier", precision, "cpu");
        if (s.products == tl::precision::bf16)
            std::printf("fine-tuning: bf16 products with f32 accumulation (--precision bf16)\n");
        if (smoke) {
            s.smoke_classes = 5, s.head.epochs = 20, s.max_length = 32, s.repeats = 1;
            s.finetune_epochs = 1, s.row_tokens = 128;
        }
        const fs::path input =
            s.input.empty() ? tl::find_data_dir(data.dir) / "jokes" / "anekdoty_themed.jsonl" : fs::path(s.input);
        if (!fs::exists(input)) { // exit code 2: the smoke test reports "skipped"
            std::fprintf(stderr, "error: 11_topic_classifier: %s is missing (docs/data.md)\n", input.c_str());
            return 2;
        }
        if (!fs::is_directory(s.base)) {
            std::fprintf(stderr,
                         "error: 11_topic_classifier: the encoder %s is missing; scripts/fetch-models.sh fetches "
                         "all-MiniLM-L6-v2, or give --base DIR\n",
                         s.base.c_str());
            return 2;
        }
        const fs::path out = s.out;
        recipes::prepare_out_dir(out, "--out");

        const labelled_rows r = read_themes(input, s);
        tl::check(r.classes.size() >= 2, [&] {
            return "11_topic_classifier: fewer than two themes in " + input.string() + " have --min-count " +
                   std::to_string(s.min_count) + " jokes";
        });
        std::printf("%s: %zu lines, %zu unreadable, %zu in themes under %zu jokes; %zu jokes in %zu themes\n",
                    input.c_str(), r.read, r.unreadable, r.rare, s.min_count, r.texts.size(), r.classes.size());

        auto t0 = std::chrono::steady_clock::now();
        const tl::eval::feature_matrix ngrams = tl::eval::hashed_ngram_features(r.texts, {.bits = s.bits});
        const double ngram_seconds = seconds_since(t0);
        t0 = std::chrono::steady_clock::now();
        const encoder_folder folder = read_encoder_folder(s);
        const tl::eval::feature_matrix embeddings = encoder_features(r, folder, s);
        const double embed_seconds = seconds_since(t0);
        const std::vector<std::vector<tl::token_t>> tokens = text_tokens(r, folder);
        tl::check(s.finetune_epochs == 0 || s.row_tokens >= folder.config.max_length, [&] {
            return "11_topic_classifier: --row-tokens " + std::to_string(s.row_tokens) + " is shorter than a text's " +
                   std::to_string(folder.config.max_length) + " tokens (--max-length)";
        });
        const std::string encoder_name = fs::path(s.base).filename().string() + " mean pooled";
        const std::string finetuned_name = fs::path(s.base).filename().string() + " fine-tuned";
        // The heads are small: an OpenMP team per AdamW step costs more than it saves (10.8 s instead of 0.1 s per
        // MiniLM head with 2 threads on a busy 2-core machine), so they train on one thread.
        const auto heads_on_one_thread = [] { omp_set_num_threads(1); };
        std::vector<std::size_t> all_rows(r.labels.size());
        std::iota(all_rows.begin(), all_rows.end(), std::size_t(0));
        std::vector<finetune_run> finetuned;

        // Each repeat: another stratified split (seed + repeat), both heads trained anew on the same features.
        std::vector<std::vector<head_result>> repeats;
        std::size_t n_train = 0, n_test = 0;
        for (int rep = 0; rep < s.repeats; ++rep) {
            std::vector<std::size_t> train, test;
            const std::uint64_t split_seed = seed + std::uint64_t(rep);
            stratified_split(r, all_rows, s.test_fraction, split_seed, 0x5b117, train, test);
            n_train = train.size(), n_test = test.size();
            std::printf("\nsplit %d: %zu training, %zu held out (stratified, seed %llu)\n", rep + 1, train.size(),
                        test.size(), static_cast<unsigned long long>(split_seed));
            s.head.seed = split_seed;
            heads_on_one_thread();
            repeats.push_back({train_and_score("bag of n-grams (baseline)", ngrams, r, train, test, s),
                               train_and_score(encoder_name, embeddings, r, train, test, s)});
            repeats.back()[0].feature_seconds = ngram_seconds;
            repeats.back()[1].feature_seconds = embed_seconds;
            if (s.finetune_epochs > 0) { // the encoder's products are large: every thread
                omp_set_num_threads(data.threads);
                finetuned.emplace_back();
                repeats.back().push_back(finetune_and_score(finetuned_name, tokens, r, folder, train, test, split_seed,
                                                            s, finetuned.back()));
            }
        }

        heads_on_one_thread();
        const tl::data::balance_result b =
            tl::data::balance(r.labels, int(r.classes.size()), {.total = s.per_class * r.classes.size(), .seed = seed});
        const std::string table = histogram_table(r, b);
        std::printf("\nthemes before and after balancing (%zu repeated):\n%s", b.repeated, table.c_str());
        const fs::path balanced = out / "balanced.jsonl";
        {
            std::ofstream f(balanced);
            for (std::size_t i : b.indices)
                f << r.lines[i] << '\n';
            tl::check(bool(f), [&] { return "11_topic_classifier: cannot write " + balanced.string(); });
        }
        std::printf("balanced: %zu jokes -> %s\n", b.indices.size(), balanced.c_str());

        std::string classified_report;
        if (!s.classify.empty()) {
            tl::eval::linear_classifier head(ngrams.dim, tl::index_t(r.classes.size()));
            s.head.seed = seed;
            head.fit(ngrams, r.labels, s.head);
            const predicted_rows p = classify_file(s.classify, s.classify_field, head, s);
            tl::check(!p.lines.empty(), [&] {
                return "11_topic_classifier: no row of " + s.classify + " has a string field \"" + s.classify_field +
                       "\"";
            });
            // Without --per-class: the smallest predicted theme's size (themes never predicted stay empty).
            std::vector<std::size_t> count(r.classes.size());
            for (int l : p.labels)
                ++count[std::size_t(l)];
            std::size_t smallest = p.lines.size();
            for (std::size_t c : count)
                if (c > 0) smallest = std::min(smallest, c);
            const std::size_t per_class = s.per_class > 0 ? s.per_class : smallest;
            const tl::data::balance_result pb = tl::data::balance(
                p.labels, int(r.classes.size()),
                {.total = per_class * r.classes.size(), .replacement = s.per_class > 0, .seed = seed});
            const std::string ptable = histogram_table(r, pb);
            std::printf("\n%s: %zu rows, %zu without \"%s\"; predicted themes before and after balancing:\n%s",
                        s.classify.c_str(), p.read, p.skipped, s.classify_field.c_str(), ptable.c_str());
            const fs::path classified = out / "classified_balanced.jsonl";
            std::ofstream f(classified);
            for (std::size_t i : pb.indices) {
                nlohmann::json j = nlohmann::json::parse(p.lines[i]);
                j["predicted_theme"] = r.classes[std::size_t(p.labels[i])];
                f << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
            }
            tl::check(bool(f), [&] { return "11_topic_classifier: cannot write " + classified.string(); });
            std::printf("classified and balanced: %zu rows -> %s\n", pb.indices.size(), classified.c_str());
            classified_report = "\n## " + s.classify + ": predicted themes before and after balancing\n\n" +
                                std::to_string(p.lines.size()) + " rows classified by the baseline head trained on " +
                                "every labelled joke; `classified_balanced.jsonl` adds `predicted_theme`.\n\n" + ptable;
        }

        nlohmann::json metrics;
        char lr_text[32];
        std::snprintf(lr_text, sizeof lr_text, "%g", s.head.lr);
        metrics["classes"] = r.classes;
        metrics["train"] = n_train;
        metrics["test"] = n_test;
        std::string report = "# 11_topic_classifier\n\nData: `" + input.string() + "`, " +
                             std::to_string(r.texts.size()) + " jokes in " + std::to_string(r.classes.size()) +
                             " themes with at least " + std::to_string(s.min_count) + " jokes; " +
                             std::to_string(n_train) + " training, " + std::to_string(n_test) +
                             " held out in each of " + std::to_string(s.repeats) + " stratified splits (seeds " +
                             std::to_string(seed) + ".." + std::to_string(seed + std::uint64_t(s.repeats) - 1) +
                             "). Linear softmax heads, " + std::to_string(s.head.epochs) + " epochs of AdamW (lr " +
                             lr_text + ", batch " + std::to_string(s.head.batch) +
                             "); the encoder's embeddings are computed once and the encoder stays frozen.\n\n";
        report += "| features | split | accuracy | macro-F1 | features (s) | training (s) |\n"
                  "|---|---:|---:|---:|---:|---:|\n";
        for (std::size_t h = 0; h < repeats[0].size(); ++h) {
            double acc = 0, f1 = 0;
            for (std::size_t rep = 0; rep < repeats.size(); ++rep) {
                const head_result& x = repeats[rep][h];
                char line[256];
                std::snprintf(line, sizeof line, "| %s | %zu | %.3f | %.3f | %.1f | %.1f |\n", x.name.c_str(), rep + 1,
                              x.metrics.accuracy, x.metrics.macro_f1, x.feature_seconds, x.train_seconds);
                report += line;
                acc += x.metrics.accuracy / double(repeats.size());
                f1 += x.metrics.macro_f1 / double(repeats.size());
                metrics["heads"][x.name]["accuracy"].push_back(x.metrics.accuracy);
                metrics["heads"][x.name]["macro_f1"].push_back(x.metrics.macro_f1);
            }
            char line[256];
            std::snprintf(line, sizeof line, "| %s | mean | %.3f | %.3f | | |\n", repeats[0][h].name.c_str(), acc, f1);
            report += line;
            std::printf("%-28s mean of %zu split(s): accuracy %.3f  macro-F1 %.3f\n", repeats[0][h].name.c_str(),
                        repeats.size(), acc, f1);
        }
        if (!finetuned.empty()) {
            char lr[32];
            std::snprintf(lr, sizeof lr, "%g", s.finetune_lr);
            report += "\nFine-tuned: " + finetuned_name + " with a linear head, trained end to end by the trainer (" +
                      std::to_string(s.finetune_epochs) + " epochs at most, AdamW lr " + lr + ", rows of " +
                      std::to_string(s.row_tokens) + " packed tokens, " + std::to_string(s.finetune_rows) +
                      " rows a step); the epoch kept by accuracy on a validation part of each training split:";
            for (std::size_t rep = 0; rep < finetuned.size(); ++rep) {
                char line[96];
                std::snprintf(line, sizeof line, " split %zu epoch %d (validation %.3f)%s", rep + 1,
                              finetuned[rep].best_epoch, finetuned[rep].best_validation_accuracy,
                              rep + 1 < finetuned.size() ? "," : ".\n");
                report += line;
                metrics["finetuned"]["best_epoch"].push_back(finetuned[rep].best_epoch);
                metrics["finetuned"]["validation_accuracy"].push_back(finetuned[rep].validation_accuracy);
            }
        }
        report += "\n## Themes before and after balancing\n\n" + table + classified_report;
        metrics["balance"] = {{"before", b.before}, {"after", b.after}, {"repeated", b.repeated}};
        const auto write = [](const fs::path& file, const std::string& text) {
            std::ofstream f(file);
            f << text;
            tl::check(bool(f), [&] { return "11_topic_classifier: cannot write " + file.string() + " (disk full?)"; });
        };
        write(out / "report.md", report);
        write(out / "metrics.json", metrics.dump(2) + "\n");
        std::printf("report: %s\n", (out / "report.md").c_str());
        return 0;
    } catch (const std::exception& e) {
        return recipes::report_error(e);
    }
}
