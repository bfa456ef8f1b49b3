// Tokenizer lab: train BPE tokenizers at several vocabulary sizes on a corpus and compare them.
//
//   02_tokenizer_lab --corpus ../shared/data/russian_novels/corpus --vocab 1000 3000 8000 16000 32000 --out lab
//
// The corpus (a file or a directory of text files) is split into a training part and a held-out part (the
// last --holdout share of each file's lines). For each vocabulary size the lab trains a tokenizer, saves it as
// lab/tokenizer_<V>.json (Hugging Face format) and measures on the held-out text:
//   - bytes per token and tokens per word (words as the pre-tokenizer splits them, spaces excluded),
//   - the share of word occurrences that are a single token,
//   - the rarest used tokens and how many tokens are never used,
//   - the vocabulary by script (Cyrillic, Latin, digits, punctuation and spaces, mixed, partial characters).
// Report: lab/report.md, lab/report.json and lab/bytes_per_token.svg (the curve over vocabulary size).
#include "cli_checks.hpp"

#include <tinylm/core/svg_plot.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw tl::error("tinylm: tokenizer lab: cannot open " + p.string());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Training and held-out text: the last `holdout` share of each file's lines is held out.
void load_corpus(const fs::path& corpus, double holdout, std::size_t max_bytes, std::string& train, std::string& test) {
    std::vector<fs::path> files;
    if (fs::is_directory(corpus)) {
        for (const auto& e : fs::directory_iterator(corpus))
            if (e.is_regular_file()) files.push_back(e.path());
        std::sort(files.begin(), files.end());
    } else {
        files.push_back(corpus);
    }
    for (const auto& f : files) {
        std::string text = read_file(f);
        recipes::check_is_text(text, f, "--corpus");
        if (!text.empty() && text.back() != '\n') text += '\n';
        std::size_t cut = static_cast<std::size_t>(static_cast<double>(text.size()) * (1.0 - holdout));
        cut = std::min(text.size(), text.find('\n', cut) == std::string::npos ? text.size() : text.find('\n', cut) + 1);
        train.append(text, 0, cut);
        test.append(text, cut);
        if (max_bytes && train.size() + test.size() >= max_bytes) break;
    }
}

std::string script_of(std::string_view token, bool metaspace_style) {
    if (tl::unicode::find_invalid(token) != std::string_view::npos) return "partial character (bytes)";
    bool cyr = false, lat = false, other_letter = false, digit = false, punct = false;
    for (std::size_t i = 0; i < token.size();) {
        const char32_t c = tl::unicode::next(token, i);
        if (metaspace_style && c == 0x2581) continue;
        const auto k = tl::unicode::classify(c);
        if (k == tl::unicode::char_class::letter) {
            if (c >= 0x400 && c < 0x530)
                cyr = true;
            else if (c < 0x250)
                lat = true;
            else
                other_letter = true;
        } else if (k == tl::unicode::char_class::number) {
            digit = true;
        } else if (k != tl::unicode::char_class::space) {
            punct = true;
        }
    }
    const int scripts = cyr + lat + other_letter;
    if (scripts > 1) return "mixed letters";
    if (cyr) return punct || digit ? "Cyrillic + symbols" : "Cyrillic";
    if (lat) return punct || digit ? "Latin + symbols" : "Latin";
    if (other_letter) return "other letters";
    if (digit) return "digits";
    if (punct) return "punctuation";
    return "spaces";
}

struct result {
    std::size_t vocab = 0;
    double train_seconds = 0, bytes_per_token = 0, tokens_per_word = 0, single_token_words = 0;
    std::size_t never_used = 0, merges = 0;
    std::vector<std::pair<std::string, std::size_t>> rarest;
    std::map<std::string, std::size_t> by_script;
};

// The token's text, with the bytes of an incomplete UTF-8 character written as \xNN.
std::string printable(std::string_view token) {
    std::string out;
    for (std::size_t i = 0; i < token.size();) {
        const std::size_t bad = tl::unicode::find_invalid(token.substr(i));
        if (bad == std::string_view::npos) {
            out += token.substr(i);
            break;
        }
        out += token.substr(i, bad);
        static constexpr char hex[] = "0123456789ABCDEF";
        const auto b = static_cast<unsigned char>(token[i + bad]);
        out += std::string("\\x") + hex[b >> 4] + hex[b & 15];
        i += bad + 1;
    }
    return out;
}

std::string escape_md(std::string s) {
    std::string out;
    for (char c : s) {
        if (c == '|' || c == '`') out += '\\';
        if (c == '\n')
            out += "\\n";
        else if (c == '\r')
            out += "\\r";
        else if (c == '\t')
            out += "\\t";
        else
            out += c;
    }
    return out;
}

std::string svg_curve(const std::vector<result>& rs) {
    tl::plot_series curve{.name = "held-out text", .markers = true};
    for (const auto& x : rs) {
        curve.x.push_back(static_cast<double>(x.vocab));
        curve.y.push_back(x.bytes_per_token);
    }
    return tl::svg_line_plot({curve}, {.title = "bytes per token (held-out text) by vocabulary size",
                                       .x_label = "vocabulary size (log scale)",
                                       .y_label = "bytes per token",
                                       .width = 640,
                                       .height = 360,
                                       .log_x = true});
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"tinylm tokenizer lab: BPE at several vocabulary sizes"};
    app.option_defaults()->always_capture_default(); // --help prints every default
    recipes::one_line_errors(app);
    std::string corpus = TINYLM_DEFAULT_CORPUS, out = "tokenizer_lab", style = "byte_level";
    std::vector<std::size_t> vocabs{1000, 3000, 8000, 16000, 32000};
    double holdout = 0.1;
    std::size_t max_bytes = 0;
    int threads = 2;
    app.add_option("--corpus", corpus, "a text file or a directory of text files")->capture_default_str();
    app.add_option("--vocab", vocabs, "vocabulary sizes")
        ->check(recipes::at_least(std::size_t{257}, "vocabulary size: the 256 bytes and merges"))
        ->capture_default_str();
    app.add_option("--out", out, "output directory")->capture_default_str();
    app.add_option("--style", style, "byte_level (GPT-2/Qwen) or byte_fallback (Llama)")
        ->check(CLI::IsMember({"byte_level", "byte_fallback"}))
        ->capture_default_str();
    app.add_option("--holdout", holdout, "share of each file held out for evaluation")
        ->check(recipes::in_range(0.01, 0.99, "share of each file held out for evaluation"))
        ->capture_default_str();
    app.add_option("--max-bytes", max_bytes, "stop reading the corpus after this many bytes (0: all)");
    app.add_option("--threads", threads, "threads for counting words")
        ->check(recipes::in_range(1, 1024, "threads for counting words"))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    try {
        std::string train_text, test_text;
        load_corpus(corpus, holdout, max_bytes, train_text, test_text);
        tl::check(!train_text.empty() && !test_text.empty(), "tokenizer lab: the corpus " + corpus + " is empty");
        recipes::prepare_out_dir(out, "--out");
        std::sort(vocabs.begin(), vocabs.end());
        std::cout << "corpus " << corpus << ": " << train_text.size() << " bytes for training, " << test_text.size()
                  << " held out\n";

        const bool fallback = style == "byte_fallback";
        std::vector<result> results;
        for (std::size_t vocab : vocabs) {
            result r;
            r.vocab = vocab;
            tl::bpe_trainer_options opt;
            opt.vocab_size = vocab;
            opt.n_threads = threads;
            opt.style = fallback ? tl::bpe_style::byte_fallback : tl::bpe_style::byte_level;
            const auto t0 = std::chrono::steady_clock::now();
            tl::bpe_trainer trainer(opt);
            trainer.feed(train_text);
            const tl::tokenizer tok = trainer.train();
            r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            r.merges = tok.model.merges.size();
            const std::string path = out + "/tokenizer_" + std::to_string(vocab) + ".json";
            tl::save_tokenizer_json(tok, path);

            // Held-out statistics.
            const std::vector<tl::token_t> ids = tok.encode_parallel(test_text, threads);
            r.bytes_per_token =
                static_cast<double>(test_text.size()) / static_cast<double>(std::max<std::size_t>(ids.size(), 1));
            std::vector<std::size_t> use(tok.vocab_size(), 0);
            for (tl::token_t id : ids)
                ++use[static_cast<std::size_t>(id)];
            std::size_t words = 0, word_tokens = 0, single = 0;
            tl::encode_cache cache;
            std::vector<tl::token_t> tmp;
            const std::string normalized = tok.norm.nfc ? tl::unicode::nfc(test_text) : test_text;
            auto per_word = [&](std::string_view w) {
                bool has_non_space = false;
                for (std::size_t i = 0; i < w.size() && !has_non_space;) {
                    const char32_t c = tl::unicode::next(w, i);
                    has_non_space = !tl::unicode::is_space(c) && c != 0x2581;
                }
                if (!has_non_space) return;
                tmp.clear();
                tok.model.encode_word(w, tmp);
                ++words;
                word_tokens += tmp.size();
                single += tmp.size() == 1;
            };
            if (fallback)
                tl::split_metaspace(tl::metaspace_replace(normalized, true), per_word);
            else
                tl::split_words(normalized, tok.pre.pattern, per_word);
            r.tokens_per_word = static_cast<double>(word_tokens) / static_cast<double>(std::max<std::size_t>(words, 1));
            r.single_token_words = static_cast<double>(single) / static_cast<double>(std::max<std::size_t>(words, 1));
            std::vector<std::pair<std::size_t, tl::token_t>> used;
            const std::size_t first_learned = tok.model.tokens.size() - tok.model.merges.size();
            for (std::size_t id = first_learned; id < tok.model.tokens.size(); ++id) {
                if (use[id] == 0)
                    ++r.never_used;
                else
                    used.emplace_back(use[id], static_cast<tl::token_t>(id));
            }
            std::sort(used.begin(), used.end());
            for (std::size_t k = 0; k < std::min<std::size_t>(10, used.size()); ++k)
                r.rarest.emplace_back(printable(tok.decode(std::vector<tl::token_t>{used[k].second})), used[k].first);
            for (const std::string& t : tok.model.tokens)
                ++r.by_script[script_of(t, fallback)];
            std::cout << "vocab " << vocab << ": trained in " << r.train_seconds << " s, " << r.bytes_per_token
                      << " bytes/token, " << r.tokens_per_word << " tokens/word, " << 100 * r.single_token_words
                      << "% words in one token, " << r.never_used << " learned tokens never used; wrote " << path
                      << "\n";
            results.push_back(std::move(r));
        }

        // Report.
        nlohmann::json j;
        j["corpus"] = corpus;
        j["style"] = style;
        j["train_bytes"] = train_text.size();
        j["heldout_bytes"] = test_text.size();
        for (const auto& r : results) {
            nlohmann::json x;
            x["vocab_size"] = r.vocab;
            x["merges"] = r.merges;
            x["train_seconds"] = r.train_seconds;
            x["bytes_per_token"] = r.bytes_per_token;
            x["tokens_per_word"] = r.tokens_per_word;
            x["single_token_word_share"] = r.single_token_words;
            x["learned_tokens_never_used"] = r.never_used;
            x["vocabulary_by_script"] = r.by_script;
            for (const auto& [t, n] : r.rarest)
                x["rarest_used_tokens"].push_back({{"token", t}, {"count", n}});
            x["tokenizer_json"] = "tokenizer_" + std::to_string(r.vocab) + ".json";
            j["results"].push_back(x);
        }
        std::ofstream(out + "/report.json") << j.dump(2) << "\n";
        std::ofstream(out + "/bytes_per_token.svg") << svg_curve(results);
        std::ofstream md(out + "/report.md");
        md << "# Tokenizer lab\n\nCorpus `" << corpus << "` (" << style << "), " << train_text.size()
           << " bytes for training, " << test_text.size() << " held out. Statistics are on the held-out text.\n\n"
           << "![bytes per token](bytes_per_token.svg)\n\n"
           << "| vocabulary | train s | bytes/token | tokens/word | one-token words | never used |\n"
           << "| ---: | ---: | ---: | ---: | ---: | ---: |\n";
        for (const auto& r : results)
            md << "| " << r.vocab << " | " << std::round(r.train_seconds * 100) / 100 << " | "
               << std::round(r.bytes_per_token * 1000) / 1000 << " | " << std::round(r.tokens_per_word * 1000) / 1000
               << " | " << std::round(r.single_token_words * 1000) / 10 << "% | " << r.never_used << " |\n";
        md << "\n## Vocabulary by script\n\n| vocabulary |";
        std::map<std::string, int> scripts;
        for (const auto& r : results)
            for (const auto& [s, n] : r.by_script)
                scripts[s] = 1;
        for (const auto& [s, _] : scripts)
            md << " " << s << " |";
        md << "\n| ---: |";
        for (std::size_t k = 0; k < scripts.size(); ++k)
            md << " ---: |";
        md << "\n";
        for (const auto& r : results) {
            md << "| " << r.vocab << " |";
            for (const auto& [s, _] : scripts)
                md << " " << (r.by_script.count(s) ? r.by_script.at(s) : 0) << " |";
            md << "\n";
        }
        md << "\n## Rarest used tokens (held-out count)\n\n";
        for (const auto& r : results) {
            md << "- " << r.vocab << ":";
            for (const auto& [t, n] : r.rarest)
                md << " `" << escape_md(t) << "` (" << n << ")";
            md << "\n";
        }
        md.close();
        std::cout << "wrote " << out << "/report.md, report.json, bytes_per_token.svg\n";
    } catch (const std::exception& e) {
        return recipes::report_error(e);
    }
    return 0;
}
