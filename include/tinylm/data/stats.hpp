// tinylm/data/stats.hpp: corpus statistics and the report (Markdown, JSON and SVG plots).
//
// Words are runs of letters, with single inner hyphens or apostrophes ("кто-то", "d'Artagnan"), lower-cased.
// Characters are code points. `write_report` writes report.md, report.json, zipf.svg, sentence_words.svg and
// paragraph_chars.svg into a folder, combining these statistics with a cleaner's per-stage counts.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/svg_plot.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/utf8.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace tl::data {

struct histogram {
    double lo = 0, width = 1;
    std::vector<std::uint64_t> bins; // the last bin also holds everything above
    histogram() = default;
    histogram(double lo_, double width_, std::size_t n) : lo(lo_), width(width_), bins(n, 0) {}
    void add(double v) {
        auto i = static_cast<std::ptrdiff_t>(std::floor((v - lo) / width));
        i = std::clamp<std::ptrdiff_t>(i, 0, std::ptrdiff_t(bins.size()) - 1);
        ++bins[std::size_t(i)];
    }
    void merge(const histogram& o) {
        for (std::size_t i = 0; i < bins.size() && i < o.bins.size(); ++i)
            bins[i] += o.bins[i];
    }
};

class corpus_stats {
public:
    std::uint64_t chars = 0, letters = 0, words = 0, sentences = 0, paragraphs = 0, documents = 0, bytes = 0;
    std::map<std::string, std::uint64_t> scripts; // code points by script (script_of)
    std::unordered_map<std::string, std::uint64_t> word_counts;
    histogram sentence_words{0, 2, 50};   // words per sentence
    histogram paragraph_chars{0, 50, 60}; // characters per paragraph
    histogram word_chars{1, 1, 25};       // characters per word

    // One paragraph and its sentences (views into it or separate strings).
    void add(std::string_view paragraph, const std::vector<std::string_view>& sents, std::uint64_t doc) {
        if (paragraphs == 0 || doc != last_doc_) ++documents;
        last_doc_ = doc;
        ++paragraphs;
        bytes += paragraph.size();
        const std::size_t n_chars = count_text(paragraph);
        paragraph_chars.add(double(n_chars));
        for (std::string_view s : sents) {
            ++sentences;
            sentence_words.add(double(count_words(s)));
        }
        if (sents.empty()) count_words(paragraph);
    }
    void add(const clean_paragraph& p) { add(p.text, p.sentences, p.doc); }

    double type_token_ratio() const { return words ? double(word_counts.size()) / double(words) : 0.0; }

    std::vector<std::pair<std::string, std::uint64_t>> top_words(std::size_t n) const {
        std::vector<std::pair<std::string, std::uint64_t>> v(word_counts.begin(), word_counts.end());
        std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
            return a.second != b.second ? a.second > b.second : a.first < b.first;
        });
        if (v.size() > n) v.resize(n);
        return v;
    }

private:
    std::size_t count_text(std::string_view t) {
        std::size_t n = 0;
        for (std::size_t i = 0; i < t.size();) {
            const char32_t c = next_cp(t, i);
            ++n;
            // scripts: a small cache for the two common blocks
            if (c < 0x80)
                ++ascii_[c];
            else if (c >= 0x400 && c < 0x500)
                ++cyr_[c - 0x400];
            else
                ++scripts[script_of(c)];
            letters += is_letter(c);
        }
        chars += n;
        flush_scripts();
        return n;
    }
    void flush_scripts() {
        for (std::size_t c = 0; c < ascii_.size(); ++c)
            if (ascii_[c]) scripts[script_of(char32_t(c))] += ascii_[c], ascii_[c] = 0;
        for (std::size_t c = 0; c < cyr_.size(); ++c)
            if (cyr_[c]) scripts[script_of(char32_t(0x400 + c))] += cyr_[c], cyr_[c] = 0;
    }
    // Counts the words of `s` into word_counts (and `words`), returns how many.
    std::size_t count_words(std::string_view s) {
        std::size_t n = 0;
        std::string w;
        std::size_t len = 0;
        const auto flush = [&] {
            if (!w.empty()) {
                while (!w.empty() && (w.back() == '-' || w.back() == '\''))
                    w.pop_back(), --len;
                ++word_counts[w];
                word_chars.add(double(len));
                ++n;
                w.clear();
                len = 0;
            }
        };
        for (std::size_t i = 0; i < s.size();) {
            const char32_t c = next_cp(s, i);
            if (is_letter(c)) {
                append_utf8(w, to_lower(c));
                ++len;
            } else if ((c == '-' || c == '\'' || c == U'’') && !w.empty() && w.back() != '-' && w.back() != '\'') {
                w.push_back(c == '-' ? '-' : '\'');
                ++len;
            } else if (c == 0x301 || c == 0x300) {
                // stress marks inside a word are skipped
            } else
                flush();
        }
        flush();
        words += n;
        return n;
    }

    std::uint64_t last_doc_ = 0;
    std::array<std::uint64_t, 0x80> ascii_{};
    std::array<std::uint64_t, 0x100> cyr_{};
};

namespace detail {
inline void write_text(const std::filesystem::path& p, const std::string& s) {
    std::ofstream f(p, std::ios::binary);
    check(bool(f), [&] { return p.string() + ": cannot open for writing"; });
    f << s;
    check(bool(f), [&] { return p.string() + ": write failed"; });
}
inline std::string fmt_count(std::uint64_t v) {
    std::string s = std::to_string(v), o;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i && (s.size() - i) % 3 == 0) o.push_back(',');
        o.push_back(s[i]);
    }
    return o;
}
inline std::string md_cell(std::string s) {
    std::string o;
    for (char c : s) {
        if (c == '|')
            o += "\\|";
        else if (c == '\n')
            o += ' ';
        else
            o.push_back(c);
    }
    return o;
}
} // namespace detail

inline nlohmann::json report_json(const clean_report& rep, const corpus_stats& st, std::size_t top_n = 50) {
    using nlohmann::json;
    json j;
    j["input"] = {{"files", rep.files},
                  {"bytes", rep.bytes_in},
                  {"paragraphs", rep.paragraphs_in},
                  {"repairs",
                   {{"bytes_read", rep.repairs.bytes},
                    {"invalid_utf8", rep.repairs.invalid_utf8},
                    {"nul", rep.repairs.nul},
                    {"control", rep.repairs.control},
                    {"bom", rep.repairs.bom},
                    {"crlf", rep.repairs.crlf},
                    {"lone_cr", rep.repairs.lone_cr}}},
                  {"skipped_records", rep.problems.count},
                  {"skipped_examples", rep.problems.examples}};
    json stages = json::array();
    for (const auto& s : rep.stages) {
        json r = json::object();
        for (const auto& [k, v] : s.reasons)
            r[k] = {{"count", v.count}, {"examples", v.examples}};
        stages.push_back({{"name", s.name},
                          {"unit", s.unit},
                          {"seen", s.seen},
                          {"changed", s.changed},
                          {"removed", s.removed},
                          {"reasons", r}});
    }
    j["stages"] = stages;
    j["output"] = {{"bytes", rep.bytes_out}, {"paragraphs", rep.paragraphs_out}, {"sentences", rep.sentences_out}};
    j["seconds"] = rep.seconds;
    json words = json::array();
    for (const auto& [w, c] : st.top_words(top_n))
        words.push_back({w, c});
    j["statistics"] = {
        {"documents", st.documents},
        {"paragraphs", st.paragraphs},
        {"sentences", st.sentences},
        {"words", st.words},
        {"word_types", st.word_counts.size()},
        {"type_token_ratio", st.type_token_ratio()},
        {"characters", st.chars},
        {"letters", st.letters},
        {"scripts", st.scripts},
        {"top_words", words},
        {"sentence_words_histogram",
         {{"lo", st.sentence_words.lo}, {"width", st.sentence_words.width}, {"bins", st.sentence_words.bins}}},
        {"paragraph_chars_histogram",
         {{"lo", st.paragraph_chars.lo}, {"width", st.paragraph_chars.width}, {"bins", st.paragraph_chars.bins}}}};
    return j;
}

inline std::string report_markdown(const clean_report& rep, const corpus_stats& st, std::string_view title,
                                   std::size_t top_n = 30) {
    using detail::fmt_count;
    std::string m = "# " + std::string(title) + "\n\n";
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.1f MB in %s files, %s paragraphs; cleaned in %.1f s (%.1f MB/s).\n\n",
                  double(rep.bytes_in) / 1e6, fmt_count(rep.files).c_str(), fmt_count(rep.paragraphs_in).c_str(),
                  rep.seconds, rep.seconds > 0 ? double(rep.bytes_in) / 1e6 / rep.seconds : 0.0);
    m += buf;
    m += "## Input repairs\n\n| repair | count |\n| --- | ---: |\n";
    m += "| invalid UTF-8 sequences (→ U+FFFD) | " + fmt_count(rep.repairs.invalid_utf8) + " |\n";
    m += "| NUL bytes removed | " + fmt_count(rep.repairs.nul) + " |\n";
    m += "| other control characters removed | " + fmt_count(rep.repairs.control) + " |\n";
    m += "| byte order marks removed | " + fmt_count(rep.repairs.bom) + " |\n";
    m += "| CRLF → LF | " + fmt_count(rep.repairs.crlf) + " |\n";
    m += "| lone CR → LF | " + fmt_count(rep.repairs.lone_cr) + " |\n";
    m += "| records skipped (malformed JSONL/CSV) | " + fmt_count(rep.problems.count) + " |\n\n";
    m += "## Stages\n\n| stage | unit | seen | changed | removed |\n| --- | --- | ---: | ---: | ---: |\n";
    for (const auto& s : rep.stages)
        m += "| " + s.name + " | " + s.unit + " | " + fmt_count(s.seen) + " | " + fmt_count(s.changed) + " | " +
             fmt_count(s.removed) + " |\n";
    m += "\n### Removal reasons and examples\n\n";
    for (const auto& s : rep.stages)
        for (const auto& [k, v] : s.reasons) {
            m += "- **" + s.name + "**: " + k + " — " + fmt_count(v.count) + "\n";
            for (const auto& e : v.examples)
                m += "  - `" + detail::md_cell(e) + "`\n";
        }
    m += "\n## Cleaned corpus\n\n| measure | value |\n| --- | ---: |\n";
    m += "| documents | " + fmt_count(st.documents) + " |\n";
    m += "| paragraphs | " + fmt_count(st.paragraphs) + " |\n";
    m += "| sentences | " + fmt_count(st.sentences) + " |\n";
    m += "| words | " + fmt_count(st.words) + " |\n";
    m += "| word types | " + fmt_count(st.word_counts.size()) + " |\n";
    std::snprintf(buf, sizeof buf, "| type/token ratio | %.4f |\n", st.type_token_ratio());
    m += buf;
    m += "| characters | " + fmt_count(st.chars) + " |\n";
    m += "| letters | " + fmt_count(st.letters) + " |\n";
    m += "\n### Script composition (characters)\n\n| class | count | share |\n| --- | ---: | ---: |\n";
    for (const auto& [k, v] : st.scripts) {
        std::snprintf(buf, sizeof buf, " | %.3f%% |\n", st.chars ? 100.0 * double(v) / double(st.chars) : 0.0);
        m += "| " + k + " | " + fmt_count(v) + buf;
    }
    m += "\n### Top words\n\n| rank | word | count |\n| ---: | --- | ---: |\n";
    std::size_t r = 0;
    for (const auto& [w, c] : st.top_words(top_n))
        m += "| " + std::to_string(++r) + " | " + w + " | " + fmt_count(c) + " |\n";
    m += "\n### Plots\n\n![Zipf](zipf.svg)\n![sentence lengths](sentence_words.svg)\n"
         "![paragraph lengths](paragraph_chars.svg)\n";
    return m;
}

// Writes report.md, report.json and the three SVG plots into `dir` (created if needed).
inline void write_report(const std::filesystem::path& dir, const clean_report& rep, const corpus_stats& st,
                         std::string_view title = "Corpus report") {
    std::filesystem::create_directories(dir);
    detail::write_text(dir / "report.md", report_markdown(rep, st, title));
    detail::write_text(dir / "report.json", report_json(rep, st).dump(2));
    // Zipf: frequency against rank, at most ~400 points spread evenly in log rank
    std::vector<std::uint64_t> freq;
    freq.reserve(st.word_counts.size());
    for (const auto& [w, c] : st.word_counts)
        freq.push_back(c);
    std::sort(freq.rbegin(), freq.rend());
    plot_series zipf;
    double next = 1;
    for (std::size_t i = 0; i < freq.size(); ++i)
        if (double(i + 1) >= next || i + 1 == freq.size()) {
            zipf.x.push_back(double(i + 1));
            zipf.y.push_back(double(freq[i]));
            next = double(i + 1) * 1.02;
        }
    const auto opts = [](const char* title, const char* x, const char* y, bool log = false) {
        return plot_options{
            .title = title, .x_label = x, .y_label = y, .width = 640, .height = 420, .log_x = log, .log_y = log};
    };
    detail::write_text(dir / "zipf.svg",
                       svg_line_plot({zipf}, opts("Word frequency by rank (Zipf)", "rank", "count", true)));
    detail::write_text(dir / "sentence_words.svg",
                       svg_bar_plot(st.sentence_words.bins, st.sentence_words.lo, st.sentence_words.width,
                                    opts("Words per sentence (last bar: more)", "words", "sentences")));
    detail::write_text(dir / "paragraph_chars.svg",
                       svg_bar_plot(st.paragraph_chars.bins, st.paragraph_chars.lo, st.paragraph_chars.width,
                                    opts("Characters per paragraph (last bar: more)", "characters", "paragraphs")));
}

} // namespace tl::data
