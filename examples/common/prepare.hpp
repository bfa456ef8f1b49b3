// examples/common/prepare.hpp: the data stage of the pretraining recipes (04_russian_novels, 05_tatar), written once:
//
//   1. clean: the records of a reader through tl::data::cleaner (the alphabet, language filter and the rest of
//      clean_options) into CORPUS/clean.jsonl (one paragraph per line: doc, source, text);
//   2. tokenizer: a byte-level BPE tokenizer with <bos>, <eos>, <pad> trained on the cleaned text, or a given
//      tokenizer.json (prepare_options::tokenizer_file: Qwen, Llama-2, ...) copied -> DIR/tokenizer.json;
//   3. shards: the cleaned documents cut into context-sized chunks with <bos>/<eos> (the tokenizer's document
//      tokens, tinylm/data/tokenizer_file.hpp), split by document -> DIR/train.bin, DIR/val.bin (headers carry
//      the FNV-1a hash of tokenizer.json; 32-bit tokens when the vocabulary exceeds 65,536).
//
// CORPUS is DIR/<corpus_subdir>. CORPUS/summary.json (the counts the recipes report) is written last: when it,
// tokenizer.json and val.bin exist, the stage reuses them instead (the recipes name DIR after the settings that
// change its output: context, vocabulary, inputs). The output is the same for any number of threads.
#pragma once

#include <tinylm/data/corpus.hpp>
#include <tinylm/data/tokenizer_file.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace recipes {

namespace fs = std::filesystem;

inline double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// FNV-1a over a file's bytes: identifies the tokenizer in shard headers.
inline std::uint64_t file_hash(const fs::path& p) { return tl::data::file_fnv1a(p); }

// A --tokenizer FILE of a recipe: the file itself, else under the data dir; empty stays empty.
inline fs::path resolve_tokenizer_file(const std::string& flag, const fs::path& data_dir) {
    if (flag.empty()) return {};
    fs::path f = flag;
    if (!fs::exists(f) && fs::exists(data_dir / f)) f = data_dir / f;
    tl::check(fs::exists(f),
              [&] { return "--tokenizer " + flag + ": no such file (nor under " + data_dir.string() + ")"; });
    return f;
}

// The part of a data folder's name that tells a given tokenizer from another (and from a trained one).
inline std::string tokenizer_dir_suffix(const fs::path& tokenizer_file) {
    if (tokenizer_file.empty()) return "";
    char b[24];
    std::snprintf(b, sizeof b, "_tok%08llx", static_cast<unsigned long long>(file_hash(tokenizer_file) >> 32));
    return b;
}

struct prepare_options {
    std::size_t vocab = 3000;        // BPE vocabulary, the special tokens included
    std::size_t context = 256;       // tokens per chunk, <bos> and <eos> included
    double val_fraction = 0.05;      // share of documents in val.bin
    int threads = 2;                 // cleaning, tokenizer training, shards
    tl::data::clean_options clean{}; // the alphabet, the language filter (its langid must outlive the call), ...
    std::string corpus_subdir{};     // where clean.jsonl and summary.json go, under DIR ("": DIR itself)
    bool write_clean_text = false;   // also CORPUS/clean.txt: the cleaned paragraphs, one per line
    std::string report_title{};      // not empty: corpus statistics and CORPUS/report.md (tl::data::write_report)
    std::string doc_id_prefix{};     // not empty: document ids become PREFIX#n, so the split ignores file paths
    fs::path tokenizer_file{};       // not empty: this tokenizer.json instead of training one (`vocab` unused)
    tl::data::document_token_names doc_tokens{}; // its document tokens (empty: found by name)
};

struct prepared_data {
    tl::tokenizer tok;
    tl::data::tokenizer_info info;
    tl::data::token_dtype dtype = tl::data::token_dtype::u16;
    fs::path dir, train_bin, val_bin, tokenizer_json;
    nlohmann::json corpus; // CORPUS/summary.json: files, mb_in, mb_out, paragraphs, sentences, tokens, ...
};

// Stages 1-3 into `dir`, or the files a previous call left there. `open` gives the input (called only when
// the stage runs).
inline prepared_data prepare_data(const std::function<std::unique_ptr<tl::data::reader>()>& open, const fs::path& dir,
                                  const prepare_options& o) {
    namespace td = tl::data;
    prepared_data d;
    d.dir = dir;
    d.train_bin = dir / "train.bin";
    d.val_bin = dir / "val.bin";
    d.tokenizer_json = dir / "tokenizer.json";
    const fs::path corpus = o.corpus_subdir.empty() ? dir : dir / o.corpus_subdir;
    const fs::path clean_path = corpus / "clean.jsonl", summary_path = corpus / "summary.json";
    std::optional<tl::data::shard_tokenizer> shard_tok;
    const auto load_info = [&] {
        shard_tok.emplace(tl::data::shard_tokenizer::load(d.tokenizer_json, o.doc_tokens));
        d.tok = shard_tok->tokenizer();
        d.info = shard_tok->info();
        d.dtype = shard_tok->dtype();
    };
    if (fs::exists(d.val_bin) && fs::exists(d.tokenizer_json) && fs::exists(summary_path)) {
        load_info();
        d.corpus = nlohmann::json::parse(std::ifstream(summary_path));
        std::printf("data: reusing %s\n", dir.c_str());
        return d;
    }
    fs::create_directories(corpus);

    // 1. Clean.
    auto t0 = std::chrono::steady_clock::now();
    const std::unique_ptr<td::reader> reader = open();
    td::clean_options copt = o.clean;
    copt.threads = o.threads;
    td::cleaner cleaner(copt);
    const bool with_stats = !o.report_title.empty();
    td::corpus_stats stats;
    std::string all_text; // tokenizer training text
    {
        std::ofstream out(clean_path, std::ios::binary);
        tl::check(bool(out), [&] { return "data: cannot create " + clean_path.string(); });
        cleaner.run(*reader, [&](const td::clean_paragraph& p) {
            if (with_stats) stats.add(p);
            out << nlohmann::json{{"doc", p.doc}, {"source", p.source}, {"text", p.text}}.dump() << '\n';
            all_text += p.text;
            all_text += '\n';
        });
        out.flush(); // a full disk must not leave a short clean.jsonl behind a successful exit
        tl::check(bool(out), [&] { return "data: writing " + clean_path.string() + " failed (disk full?)"; });
    }
    if (o.write_clean_text) {
        std::ofstream text(corpus / "clean.txt", std::ios::binary);
        text << all_text << std::flush;
        tl::check(bool(text),
                  [&] { return "data: writing " + (corpus / "clean.txt").string() + " failed (disk full?)"; });
    }
    const auto& rep = cleaner.report();
    if (with_stats) td::write_report(corpus, rep, stats, o.report_title);
    const auto* lang_stage = rep.stage("language");
    const std::uint64_t removed_by_language = lang_stage ? lang_stage->removed : 0;
    d.corpus = {{"files", rep.files},
                {"mb_in", double(rep.bytes_in) / 1e6},
                {"mb_out", double(rep.bytes_out) / 1e6},
                {"paragraphs", rep.paragraphs_out},
                {"sentences_in", rep.sentences_in},
                {"sentences", rep.sentences_out},
                {"removed_by_language", removed_by_language}};
    if (with_stats) d.corpus["words"] = stats.words, d.corpus["word_types"] = stats.word_counts.size();
    std::printf("data: cleaned %llu files, %.1f MB -> %.1f MB, %llu paragraphs, %llu of %llu sentences kept",
                (unsigned long long)rep.files, double(rep.bytes_in) / 1e6, double(rep.bytes_out) / 1e6,
                (unsigned long long)rep.paragraphs_out, (unsigned long long)rep.sentences_out,
                (unsigned long long)rep.sentences_in);
    if (lang_stage) std::printf(", %llu dropped by the language filter", (unsigned long long)removed_by_language);
    std::printf(" (%.1f s)\n", seconds_since(t0));

    // 2. Tokenizer.
    t0 = std::chrono::steady_clock::now();
    if (!o.tokenizer_file.empty()) {
        tl::data::copy_tokenizer_file(o.tokenizer_file, d.tokenizer_json);
        std::printf("data: tokenizer %s\n", o.tokenizer_file.c_str());
    } else {
        tl::bpe_trainer_options topt;
        topt.vocab_size = o.vocab;
        topt.special_tokens = {"<bos>", "<eos>", "<pad>"};
        topt.n_threads = o.threads;
        tl::bpe_trainer trainer(topt);
        trainer.feed(all_text);
        const tl::tokenizer trained = trainer.train();
        tl::save_tokenizer_json(trained, d.tokenizer_json.string());
        std::printf("data: trained a %zu-token byte-level BPE tokenizer (%.1f s)\n", trained.vocab_size(),
                    seconds_since(t0));
    }
    all_text.clear();
    all_text.shrink_to_fit();

    // 3. Shards.
    t0 = std::chrono::steady_clock::now();
    load_info();
    td::jsonl_reader cleaned({clean_path}, "text", true, "doc");
    td::document_reader docs(cleaned);
    td::shard_options so;
    so.chunk = shard_tok->chunking(o.context);
    so.val_fraction = o.val_fraction;
    so.threads = o.threads;
    so.dtype = d.dtype;
    const auto sum = td::write_shards(
        [&](td::document& doc) {
            if (!docs.next(doc)) return false;
            if (!o.doc_id_prefix.empty()) doc.id = o.doc_id_prefix + doc.id.substr(doc.id.rfind('#'));
            return true;
        },
        *shard_tok, d.info, d.train_bin, d.val_bin, so);
    d.corpus["train_tokens"] = sum.train_tokens;
    d.corpus["val_tokens"] = sum.val_tokens;
    d.corpus["train_docs"] = sum.train_docs;
    d.corpus["val_docs"] = sum.val_docs;
    { // written last, whole or not at all: its presence marks the cache complete
        const fs::path staged = summary_path.string() + ".tmp";
        std::ofstream summary(staged, std::ios::binary | std::ios::trunc);
        summary << d.corpus.dump(2) << '\n' << std::flush;
        tl::check(bool(summary), [&] { return "data: writing " + staged.string() + " failed (disk full?)"; });
        summary.close();
        fs::rename(staged, summary_path);
    }
    std::printf("data: shards: train %llu tokens (%llu documents), validation %llu tokens (%llu documents) (%.1f s)\n",
                (unsigned long long)sum.train_tokens, (unsigned long long)sum.train_docs,
                (unsigned long long)sum.val_tokens, (unsigned long long)sum.val_docs, seconds_since(t0));
    return d;
}

} // namespace recipes
