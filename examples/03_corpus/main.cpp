// 03_corpus: clean a corpus, write its statistics report, and (optionally) token shards.
//
//   03_corpus                                   # the Russian novels under the data dir
//   03_corpus --input tatar/song_lyrics.txt --alphabet tatar --keep-lang tt
//             --langid-train tt=tatar/ntrex128.tat.txt --langid-train ru=tatar/ntrex128.rus.txt
//   03_corpus --shards --context 256            # also train.bin / val.bin (byte-level placeholder tokenizer)
//   03_corpus --shards --tokenizer tokenizers/qwen3/tokenizer.json   # ... with a model's tokenizer.json
//   03_corpus --input wiki.jsonl --format jsonl --wiki                # wiki40b / wikitext markup out first
//   03_corpus --export-nanogpt DIR --out OUT    # OUT/{train,val}.bin -> nanoGPT's DIR/{train,val}.bin + meta.json
//   03_corpus --import-nanogpt DIR --out OUT    # and back (without --shards, neither step cleans anything)
//
// The data dir is --data-dir, else $TINYLM_DATA_DIR, else ../shared/data (or ../../, ../../../ as in
// docs/data.md). Output goes to --out: clean.jsonl (one kept paragraph per line: doc, source, text),
// report.md, report.json and three SVG plots.
#include "cli_checks.hpp"

#include <tinylm/core/data_dir.hpp>
#include <tinylm/data/langid.hpp>
#include <tinylm/data/nanogpt.hpp>
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/shards.hpp>
#include <tinylm/data/stats.hpp>
#include <tinylm/data/tokenizer_file.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace fs = std::filesystem;
using namespace tl::data;

namespace {

// Placeholder until the BPE tokenizer lands: bytes 0..255, <bos> 256, <eos> 257.
struct byte_encoder {
    std::vector<std::uint32_t> operator()(std::string_view s) const {
        std::vector<std::uint32_t> ids;
        ids.reserve(s.size());
        for (char c : s)
            ids.push_back(static_cast<unsigned char>(c));
        return ids;
    }
};

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"tinylm corpus pipeline: clean, report statistics, write token shards"};
    app.option_defaults()->always_capture_default(); // --help prints every default
    recipes::one_line_errors(app);
    std::string data_dir_flag, format = "text", field = "text", paragraphs = "auto", alpha = "russian";
    std::vector<std::string> inputs, langid_train, keep_lang;
    std::string out = "corpus_out", tokenizer_file, export_nanogpt_dir, import_nanogpt_dir;
    document_token_names doc_tokens;
    int threads = 2;
    bool no_dedup = false, no_punct = false, shards = false, wiki = false;
    double near_threshold = dedup_options{}.threshold, val_fraction = 0.05;
    std::size_t min_letters = 2, context = 512, langid_min_letters = 1;
    app.add_option("--data-dir", data_dir_flag, "data folder (default: $TINYLM_DATA_DIR, else ../shared/data)");
    app.add_option("--input", inputs, "files or folders (default: <data-dir>/russian_novels/corpus)");
    app.add_option("--format", format, "text, jsonl or csv")->check(CLI::IsMember({"text", "jsonl", "csv"}));
    app.add_option("--field", field, "JSONL field (a.b for nested) or CSV column (name or index)");
    app.add_option("--paragraphs", paragraphs, "text files: auto, line, blank or indent")
        ->check(CLI::IsMember({"auto", "line", "blank", "indent"}));
    app.add_option("--alphabet", alpha, "allowed letters: russian, tatar, latin or any");
    app.add_option("--langid-train", langid_train, "LANG=FILE sample text for the language identifier (repeat)");
    app.add_option("--keep-lang", keep_lang, "languages the language filter keeps");
    app.add_option("--langid-min-letters", langid_min_letters, "shorter sentences are kept without a decision")
        ->check(recipes::at_least(std::size_t{0}, "letters a sentence needs for a language decision"));
    app.add_option("--min-letters", min_letters, "sentences with fewer letters are dropped")
        ->check(recipes::at_least(std::size_t{0}, "letters a kept sentence has at least"));
    app.add_flag("--wiki", wiki, "remove Wikipedia markup first (wiki40b markers, templates, links, entities)");
    app.add_flag("--no-dedup", no_dedup, "skip exact and near-duplicate removal");
    app.add_flag("--no-punct", no_punct, "skip punctuation normalisation");
    app.add_option("--near-threshold", near_threshold, "near-duplicate Jaccard threshold")
        ->check(recipes::in_range(0.0, 1.0, "near-duplicate Jaccard threshold"));
    app.add_option("--threads", threads, "threads for the paragraph-local stages")
        ->check(recipes::in_range(1, 1024, "threads for the paragraph-local stages"));
    app.add_option("--out", out, "output folder");
    app.add_flag("--shards", shards, "also write train.bin and val.bin (byte-level placeholder tokenizer)");
    app.add_option("--tokenizer", tokenizer_file,
                   "tokenizer.json for the shards (Qwen, Llama-2, ...; relative paths also under the data dir); "
                   "copied to OUT/tokenizer.json");
    app.add_option("--export-nanogpt", export_nanogpt_dir,
                   "write OUT's shards as nanoGPT's DIR/train.bin, val.bin (uint16, uint32 for vocabularies over "
                   "65536) and meta.json");
    app.add_option("--import-nanogpt", import_nanogpt_dir,
                   "read nanoGPT's DIR/train.bin, val.bin and meta.json into OUT/train.bin, val.bin");
    app.add_option("--bos", doc_tokens.bos, "document start token for the shards (default: found by name)");
    app.add_option("--eos", doc_tokens.eos, "document end token for the shards (default: found by name)");
    app.add_option("--context", context, "tokens per chunk, <bos> and <eos> included")
        ->check(recipes::at_least(std::size_t{3}, "tokens per chunk, <bos> and <eos> included"));
    app.add_option("--val-fraction", val_fraction, "share of documents in val.bin")
        ->check(recipes::in_range(0.0, 1.0, "share of documents in val.bin"));
    CLI11_PARSE(app, argc, argv);

    const fs::path data_dir = tl::find_data_dir(data_dir_flag);
    const auto export_import = [&] {
        if (!export_nanogpt_dir.empty()) {
            const auto m = export_nanogpt(fs::path(out) / "train.bin", fs::path(out) / "val.bin", export_nanogpt_dir);
            if (fs::exists(fs::path(out) / "tokenizer.json"))
                copy_tokenizer_file(fs::path(out) / "tokenizer.json", fs::path(export_nanogpt_dir) / "tokenizer.json");
            std::printf("nanogpt   %s/{train,val}.bin: %llu + %llu %s tokens, vocabulary %u; meta.json\n",
                        export_nanogpt_dir.c_str(), (unsigned long long)m.train_tokens,
                        (unsigned long long)m.val_tokens, to_string(m.dtype), m.vocab_size);
        }
        if (!import_nanogpt_dir.empty()) {
            const auto m = import_nanogpt(import_nanogpt_dir, fs::path(out) / "train.bin", fs::path(out) / "val.bin");
            std::printf("imported  %s -> %s/{train,val}.bin: %llu + %llu tokens, vocabulary %u\n",
                        import_nanogpt_dir.c_str(), out.c_str(), (unsigned long long)m.train_tokens,
                        (unsigned long long)m.val_tokens, m.vocab_size);
        }
    };
    tl::check(import_nanogpt_dir.empty() || (!shards && export_nanogpt_dir.empty()),
              "--import-nanogpt writes OUT's shards: give it without --shards and --export-nanogpt");
    if (!shards && (!export_nanogpt_dir.empty() || !import_nanogpt_dir.empty())) {
        export_import();
        return 0;
    }
    std::vector<fs::path> in;
    for (const auto& i : inputs)
        in.emplace_back(fs::exists(i) || !fs::exists(data_dir / i) ? fs::path(i) : data_dir / i);
    if (in.empty()) {
        const fs::path novels = data_dir / "russian_novels" / "corpus";
        if (!fs::exists(novels)) {
            std::cerr << "error: 03_corpus: no --input and " << novels
                      << " does not exist. Set --data-dir or TINYLM_DATA_DIR, "
                      << "or download the corpus from github.com/JoannaBy/RussianNovels (folder corpus/).\n";
            return 2;
        }
        in.push_back(novels);
    }

    clean_options opt;
    opt.allowed = alphabet::preset(alpha);
    opt.punctuation = !no_punct;
    opt.wiki = wiki;
    opt.min_letters = min_letters;
    opt.dedup.exact = opt.dedup.near = !no_dedup;
    opt.dedup.threshold = near_threshold;
    opt.threads = threads;
    ngram_langid langid;
    if (!langid_train.empty()) {
        for (const auto& spec : langid_train) {
            const auto eq = spec.find('=');
            if (eq == std::string::npos) throw tl::error("--langid-train expects LANG=FILE, got '" + spec + "'");
            fs::path file = spec.substr(eq + 1);
            if (!fs::exists(file)) file = data_dir / file;
            text_reader r({file}, {.mode = paragraph_mode::line});
            record rec;
            while (r.next(rec))
                langid.train(spec.substr(0, eq), rec.text);
        }
        if (keep_lang.empty()) throw tl::error("--langid-train needs --keep-lang");
        opt.langid = &langid;
        opt.keep_languages = keep_lang;
        opt.langid_min_letters = langid_min_letters;
    }

    std::unique_ptr<reader> src;
    const paragraph_mode pm = paragraphs == "line"     ? paragraph_mode::line
                              : paragraphs == "blank"  ? paragraph_mode::blank_line
                              : paragraphs == "indent" ? paragraph_mode::indent
                                                       : paragraph_mode::automatic;
    if (format == "text")
        src = std::make_unique<text_reader>(in, text_reader_options{.mode = pm});
    else if (format == "jsonl")
        src = std::make_unique<jsonl_reader>(in, field);
    else
        src = std::make_unique<csv_reader>(in, field);

    recipes::prepare_out_dir(out, "--out");
    std::ofstream clean_out(fs::path(out) / "clean.jsonl", std::ios::binary);
    tl::check(bool(clean_out), [&] { return "cannot create " + (fs::path(out) / "clean.jsonl").string(); });
    cleaner c(opt);
    corpus_stats st;
    const auto t0 = std::chrono::steady_clock::now();
    c.run(*src, [&](const clean_paragraph& p) {
        st.add(p);
        clean_out << nlohmann::json{{"doc", p.doc}, {"source", p.source}, {"text", p.text}}.dump() << '\n';
    });
    clean_out.close();
    tl::check(bool(clean_out),
              [&] { return "writing " + (fs::path(out) / "clean.jsonl").string() + " failed (disk full?)"; });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_report(out, c.report(), st, "Corpus report");
    tl::check(c.report().paragraphs_out > 0, [&] {
        return "--input: no text left after cleaning " + std::to_string(c.report().files) +
               " file(s) (binary files? the wrong --alphabet or --format?)";
    });

    const auto& rep = c.report();
    std::printf("read      %.1f MB, %llu files, %llu paragraphs (repaired: %llu invalid UTF-8, %llu NUL, %llu control, "
                "%llu BOM, %llu CRLF)\n",
                double(rep.bytes_in) / 1e6, (unsigned long long)rep.files, (unsigned long long)rep.paragraphs_in,
                (unsigned long long)rep.repairs.invalid_utf8, (unsigned long long)rep.repairs.nul,
                (unsigned long long)rep.repairs.control, (unsigned long long)rep.repairs.bom,
                (unsigned long long)rep.repairs.crlf);
    for (const auto& s : rep.stages)
        std::printf("  %-22s seen %10llu  changed %9llu  removed %9llu  (%s)\n", s.name.c_str(),
                    (unsigned long long)s.seen, (unsigned long long)s.changed, (unsigned long long)s.removed,
                    s.unit.c_str());
    std::printf("kept      %.1f MB, %llu paragraphs, %llu sentences, %llu words (%zu types, TTR %.4f)\n",
                double(rep.bytes_out) / 1e6, (unsigned long long)rep.paragraphs_out,
                (unsigned long long)rep.sentences_out, (unsigned long long)st.words, st.word_counts.size(),
                st.type_token_ratio());
    std::printf("time      %.2f s clean+stats, %.1f MB/s, %d threads\n", secs, double(rep.bytes_in) / 1e6 / secs,
                threads);
    std::printf("report    %s/report.md\n", out.c_str());

    if (shards) {
        jsonl_reader cleaned({fs::path(out) / "clean.jsonl"}, "text", true, "doc");
        document_reader docs(cleaned);
        const auto t1 = std::chrono::steady_clock::now();
        shard_options so;
        so.chunk.context = context;
        so.val_fraction = val_fraction;
        so.threads = threads;
        const auto next = [&](document& d) { return docs.next(d); };
        shard_summary sum;
        std::string what = "byte-level placeholder tokenizer";
        if (tokenizer_file.empty()) {
            const tokenizer_info tok{.hash = 0xb17e5ull, .bos = 256, .eos = 257, .vocab_size = 258};
            sum = write_shards(next, byte_encoder{}, tok, fs::path(out) / "train.bin", fs::path(out) / "val.bin", so);
        } else {
            fs::path file = tokenizer_file;
            if (!fs::exists(file) && fs::exists(data_dir / file)) file = data_dir / file;
            const shard_tokenizer st = shard_tokenizer::load(file, doc_tokens);
            so.chunk = st.chunking(context);
            so.dtype = st.dtype();
            copy_tokenizer_file(file, fs::path(out) / "tokenizer.json");
            sum = write_shards(next, st, st.info(), fs::path(out) / "train.bin", fs::path(out) / "val.bin", so);
            const auto& t = st.tokenizer();
            what = file.string() + ": " + std::to_string(t.vocab_size()) + " tokens, " +
                   (so.dtype == token_dtype::u16 ? "16" : "32") + "-bit shards, documents " +
                   (st.has_bos() ? std::string(t.id_to_bytes(tl::token_t(st.info().bos))) + " ... " : "... ") +
                   std::string(t.id_to_bytes(tl::token_t(st.info().eos)));
        }
        std::printf("shards    train %llu docs, %llu chunks, %llu tokens; val %llu docs, %llu chunks, %llu tokens "
                    "(%.2f s, %s)\n",
                    (unsigned long long)sum.train_docs, (unsigned long long)sum.train_chunks,
                    (unsigned long long)sum.train_tokens, (unsigned long long)sum.val_docs,
                    (unsigned long long)sum.val_chunks, (unsigned long long)sum.val_tokens,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), what.c_str());
        export_import();
    }
    return 0;
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
