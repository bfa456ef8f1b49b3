// jokes_data.hpp: the jokes of 08_jokes_lora as conversations "Расскажи анекдот про <тему>" -> joke.
#pragma once

#include <tinylm/data/normalize.hpp>
#include <tinylm/data/sft_formats.hpp>
#include <tinylm/data/wiki.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace jokes {

namespace fs = std::filesystem;

inline const std::string ask = "Расскажи анекдот";
// The jokes assignment's system message (08's default; --system changes it, --system '' drops it).
inline const std::string default_system =
    "Ты ассистент, который рассказывает короткие смешные анекдоты на русском языке.";

// Puts `system` first in every conversation that has no system message (nothing when it is empty).
inline void add_system_message(std::vector<tl::data::conversation>& convs, const std::string& system) {
    if (system.empty()) return;
    for (auto& c : convs)
        if (c.messages.empty() || c.messages.front().role != "system")
            c.messages.insert(c.messages.begin(), {"system", system});
}

// ---- cleaning: what the scraped jokes carry --------------------------------------------------------------

// What clean_joke changed, summed over the jokes.
struct cleaning_counts {
    std::size_t jokes = 0, changed = 0;
    std::size_t entities = 0;         // HTML entities decoded (&quot; &#8212; ...; data/wiki.hpp's table)
    std::size_t carriage_returns = 0; // \r\n and lone \r turned into \n
    std::size_t space_runs = 0;       // runs of spaces, tabs and no-break spaces made one space (or trimmed)
    std::size_t glued_sentences = 0;  // "еда...Хорошо": a space put between a sentence end and a capital
    std::size_t glued_jokes = 0;      // jokes split off a reply at a separator line (***, ---, %) or 2+ blank lines

    std::string markdown() const {
        std::string md = "| cleaning step | count |\n| --- | ---: |\n";
        const std::pair<const char*, std::size_t> rows[] = {{"jokes read", jokes},
                                                            {"jokes changed", changed},
                                                            {"HTML entities decoded", entities},
                                                            {"\\r\\n or \\r made \\n", carriage_returns},
                                                            {"runs of spaces made one", space_runs},
                                                            {"glued sentences separated", glued_sentences},
                                                            {"glued jokes split off", glued_jokes}};
        for (const auto& [name, count] : rows) {
            md += "| ";
            md += name;
            md += " | ";
            md += std::to_string(count);
            md += " |\n";
        }
        return md;
    }
};

namespace detail {
inline bool is_separator_line(std::string_view line) {
    std::size_t marks = 0;
    for (const char c : line) {
        if (c == '*' || c == '-' || c == '%' || c == '=' || c == '_')
            ++marks;
        else if (c != ' ' && c != '\t')
            return false;
    }
    return marks >= 1 && (marks >= 3 || line.find('%') != std::string_view::npos);
}
// A capital letter (Cyrillic or Latin) at s[i]?
inline bool capital_at(std::string_view s, std::size_t i) {
    std::size_t k = i;
    return k < s.size() && tl::data::is_upper(tl::data::next_cp(s, k));
}
} // namespace detail

// One reply cleaned: entities decoded, line ends made \n, runs of spaces made one and lines trimmed, a space
// after a sentence end glued to the next sentence ("дорого.Хорошо", not initials "А.С.Пушкин": the letter
// before the point must be lower-case); then split into the jokes it holds (separator lines, two or more blank
// lines), empty pieces dropped.
inline std::vector<std::string> clean_joke(std::string_view raw, cleaning_counts& n) {
    ++n.jokes;
    std::string s;
    for (std::size_t i = 0; i < raw.size();) { // entities and line ends
        if (raw[i] == '&') {
            if (const std::size_t used = tl::data::detail::decode_entity(raw, i, s)) {
                ++n.entities;
                i += used;
                continue;
            }
        }
        if (raw[i] == '\r') {
            ++n.carriage_returns;
            s += '\n';
            i += i + 1 < raw.size() && raw[i + 1] == '\n' ? 2 : 1;
            continue;
        }
        s += raw[i++];
    }
    std::string t; // spaces: runs inside a line made one, none at a line's ends
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t at = i;
        const char32_t c = tl::data::next_cp(s, i);
        const bool space = c == ' ' || c == '\t' || c == 0xA0;
        if (!space) {
            t.append(s, at, i - at);
            continue;
        }
        std::size_t end = i, count = 1;
        for (std::size_t k = end; k < s.size();) {
            const char32_t d = tl::data::next_cp(s, k);
            if (d != ' ' && d != '\t' && d != 0xA0) break;
            end = k, ++count;
        }
        const bool edge = t.empty() || t.back() == '\n' || end == s.size() || s[end] == '\n';
        if (count > 1 || edge || c != ' ') ++n.space_runs;
        if (!edge) t += ' ';
        i = end;
    }
    std::string u; // glued sentences
    for (std::size_t i = 0; i < t.size(); ++i) {
        u += t[i];
        const bool end_mark = t[i] == '.' || t[i] == '!' || t[i] == '?';
        if (!end_mark || !detail::capital_at(t, i + 1) || i == 0) continue;
        std::size_t k = i; // the character before the run of end marks must be a lower-case letter
        while (k > 0 && (t[k - 1] == '.' || t[k - 1] == '!' || t[k - 1] == '?'))
            --k;
        if (k == 0) continue;
        std::size_t b = k - 1;
        while (b > 0 && (static_cast<unsigned char>(t[b]) & 0xC0) == 0x80)
            --b;
        std::size_t q = b;
        const char32_t before = tl::data::next_cp(t, q);
        if (tl::data::is_letter(before) && !tl::data::is_upper(before)) {
            u += ' ';
            ++n.glued_sentences;
        }
    }
    std::vector<std::string> jokes;
    std::string cur;
    std::size_t blank_run = 0;
    bool split_here = false;
    auto flush = [&] {
        while (!cur.empty() && cur.back() == '\n')
            cur.pop_back();
        if (!cur.empty()) jokes.push_back(cur);
        cur.clear();
    };
    for (std::size_t at = 0; at <= u.size();) {
        const std::size_t nl = std::min(u.find('\n', at), u.size());
        const std::string_view line(u.data() + at, nl - at);
        if (line.empty()) {
            ++blank_run;
        } else if (detail::is_separator_line(line)) {
            split_here = true;
        } else {
            if (!cur.empty() && (split_here || blank_run >= 2)) {
                flush();
                ++n.glued_jokes;
            } else if (!cur.empty()) {
                cur += blank_run == 1 ? "\n\n" : "\n";
            }
            cur += line;
            blank_run = 0;
            split_here = false;
        }
        at = nl + 1;
    }
    flush();
    if (jokes.size() != 1 || jokes.front() != raw) ++n.changed;
    return jokes;
}

// Cleans the assistant's reply of every conversation; a reply holding several jokes becomes several
// conversations with the same other messages, and a reply left empty drops its conversation.
inline std::vector<tl::data::conversation> clean_conversations(const std::vector<tl::data::conversation>& convs,
                                                               cleaning_counts& n) {
    std::vector<tl::data::conversation> out;
    for (const auto& c : convs) {
        auto it =
            std::find_if(c.messages.begin(), c.messages.end(), [](const auto& m) { return m.role == "assistant"; });
        if (it == c.messages.end()) {
            out.push_back(c);
            continue;
        }
        const std::size_t at = std::size_t(it - c.messages.begin());
        for (std::string& joke : clean_joke(it->content, n)) {
            out.push_back(c);
            out.back().messages[at].content = std::move(joke);
        }
    }
    return out;
}

// ---- the data report: rating and length histograms before and after filtering ----------------------------

// Characters (code points) of a UTF-8 text.
inline std::size_t characters(std::string_view s) {
    std::size_t n = 0;
    for (const char c : s)
        n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

// Counts of `values` in the bins [edges[i], edges[i+1]); the last bin is closed ([.., edges.back()]) and values
// outside every bin are not counted.
inline std::vector<std::size_t> bin_counts(const std::vector<double>& values, const std::vector<double>& edges) {
    std::vector<std::size_t> counts(edges.size() - 1, 0);
    for (const double v : values)
        for (std::size_t b = 0; b + 1 < edges.size(); ++b)
            if (v >= edges[b] && (v < edges[b + 1] || (b + 2 == edges.size() && v == edges[b + 1]))) {
                ++counts[b];
                break;
            }
    return counts;
}

// A markdown table: one row per bin with the counts before and after filtering and a bar of each (█ before,
// ▓ after, 40 characters for the largest count).
inline std::string histogram_markdown(const std::string& what, const std::vector<double>& edges,
                                      const std::vector<double>& before, const std::vector<double>& after,
                                      int decimals) {
    const auto b = bin_counts(before, edges), a = bin_counts(after, edges);
    const std::size_t top = std::max<std::size_t>(1, *std::max_element(b.begin(), b.end()));
    const auto bar = [&](std::size_t n, const char* glyph) {
        std::string s;
        for (std::size_t k = 0; k < (n * 40 + top - 1) / top; ++k)
            s += glyph;
        return s.empty() ? s : "`" + s + "`";
    };
    const auto edge = [&](double x) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
        return std::string(buf);
    };
    std::string md = "| " + what + " | before | after | |\n| --- | ---: | ---: | --- |\n";
    for (std::size_t i = 0; i < b.size(); ++i) {
        const bool last = i + 2 == edges.size();
        const std::string range = last && edges[i + 1] >= 1e9
                                      ? "≥ " + edge(edges[i])
                                      : "[" + edge(edges[i]) + ", " + edge(edges[i + 1]) + (last ? "]" : ")");
        md += "| " + range + " | " + std::to_string(b[i]) + " | " + std::to_string(a[i]) + " | " + bar(b[i], "█") +
              "<br>" + bar(a[i], "▓") + " |\n";
    }
    md += "| all | " + std::to_string(before.size()) + " | " + std::to_string(after.size()) + " | |\n";
    return md;
}

// The score (mean of five ratings, 1-5) and text of every row of clean_comedy_gold_ru.csv.
struct rated_joke {
    double score = 0;
    std::string text;
};
inline std::vector<rated_joke> read_scores(const fs::path& path, const std::string& score_column = "score",
                                           const std::string& text_column = "text") {
    const auto rows = tl::data::parse_csv(tl::data::detail::read_whole_file(path), path.string());
    tl::check(!rows.empty(), [&] { return path.string() + ": empty CSV file"; });
    const auto& h = rows[0].fields;
    const auto col = [&](const std::string& name) {
        const auto it = std::find(h.begin(), h.end(), name);
        tl::check(it != h.end(), [&] { return path.string() + ":1: no column \"" + name + "\""; });
        return std::size_t(it - h.begin());
    };
    const std::size_t cs = col(score_column), ct = col(text_column);
    std::vector<rated_joke> out;
    for (std::size_t r = 1; r < rows.size(); ++r) {
        const auto& f = rows[r].fields;
        tl::check(f.size() == h.size(),
                  [&] { return path.string() + ":" + std::to_string(rows[r].line) + ": bad row"; });
        double v = 0;
        const auto [end, ec] = std::from_chars(f[cs].data(), f[cs].data() + f[cs].size(), v);
        tl::check(ec == std::errc() && end == f[cs].data() + f[cs].size(), [&] {
            return path.string() + ":" + std::to_string(rows[r].line) + ": the score \"" + f[cs] + "\" is not a number";
        });
        out.push_back({v, f[ct]});
    }
    return out;
}

// The assistants' replies of conversations, in characters.
inline std::vector<double> reply_lengths(const std::vector<tl::data::conversation>& convs) {
    std::vector<double> out;
    for (const auto& c : convs)
        for (const auto& m : c.messages)
            if (m.role == "assistant") out.push_back(double(characters(m.content)));
    return out;
}

inline const std::vector<double> score_edges = {1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0};
inline const std::vector<double> length_edges = {0, 50, 100, 200, 300, 400, 600, 1000, 1e9};

// anekdoty_themed.jsonl: {"theme": "Анекдоты про врачей", "text": ...}. Themes that are not "Анекдоты про X"
// (a few rows of the scrape are broken) get the plain request.
inline std::vector<tl::data::conversation> read_themed(const fs::path& path, std::size_t limit) {
    std::vector<tl::data::conversation> out;
    std::ifstream in(path, std::ios::binary);
    std::string line;
    for (std::size_t n = 1; std::getline(in, line) && (limit == 0 || out.size() < limit); ++n) {
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line);
        const std::string theme = j.at("theme").get<std::string>(), text = j.at("text").get<std::string>();
        const std::string prefix = "Анекдоты про ";
        const std::string prompt = theme.starts_with(prefix) ? ask + " про " + theme.substr(prefix.size()) : ask + ".";
        out.push_back({{{"user", prompt}, {"assistant", text}}, path.string() + ":" + std::to_string(n)});
    }
    return out;
}

// fortune(6) files: entries separated by lines holding only '%'. Attribution lines ("\t\t-- Author") are
// dropped; the file name gives the theme where it names one.
inline const std::map<std::string, std::string> fortune_themes = {{"armenian", "армянское радио"},
                                                                  {"computer", "компьютеры"},
                                                                  {"programming", "программистов"},
                                                                  {"M$", "Microsoft"},
                                                                  {"drink", "выпивку"},
                                                                  {"love", "любовь"},
                                                                  {"love_s", "любовь"},
                                                                  {"lovers", "влюблённых"},
                                                                  {"man_and_woman", "мужчин и женщин"},
                                                                  {"polit", "политику"},
                                                                  {"war", "войну"},
                                                                  {"work", "работу"},
                                                                  {"education", "учёбу"},
                                                                  {"wealth", "деньги"},
                                                                  {"friendship", "дружбу"},
                                                                  {"time", "время"},
                                                                  {"life", "жизнь"},
                                                                  {"ill", "болезни"},
                                                                  {"fidelity", "верность"},
                                                                  {"treason", "измену"},
                                                                  {"success", "успех"},
                                                                  {"future", "будущее"},
                                                                  {"knowledge", "знания"},
                                                                  {"happy", "счастье"},
                                                                  {"truth", "правду"},
                                                                  {"murphy", "законы Мэрфи"},
                                                                  {"russia_today", "Россию"},
                                                                  {"art", "искусство"},
                                                                  {"book", "книги"},
                                                                  {"flirt", "флирт"},
                                                                  {"foolish", "глупость"},
                                                                  {"genious", "гениев"},
                                                                  {"relations", "отношения"}};

inline bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (std::size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
        i += n;
    }
    return true;
}

inline std::vector<tl::data::conversation> read_fortunes(const fs::path& dir, std::size_t max_bytes) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
        const auto name = e.path().filename().string();
        // Skip the strfile indexes (.dat), the .u8 links to the same files, and one file of explicit content.
        if (e.is_regular_file() && !e.is_symlink() && e.path().extension() != ".dat" && e.path().extension() != ".u8" &&
            name != "sex")
            files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    std::vector<tl::data::conversation> out;
    for (const auto& f : files) {
        const auto theme = fortune_themes.find(f.filename().string());
        const std::string prompt = theme == fortune_themes.end() ? ask + "." : ask + " про " + theme->second;
        std::ifstream in(f, std::ios::binary);
        std::string line, entry;
        std::size_t n = 0, start = 1;
        auto flush = [&] {
            while (!entry.empty() && (entry.back() == '\n' || entry.back() == ' '))
                entry.pop_back();
            if (!entry.empty() && entry.size() <= max_bytes && valid_utf8(entry))
                out.push_back({{{"user", prompt}, {"assistant", entry}}, f.string() + ":" + std::to_string(start)});
            entry.clear();
        };
        while (std::getline(in, line)) {
            ++n;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line == "%") {
                flush();
                start = n + 1;
                continue;
            }
            const auto first = line.find_first_not_of(" \t");
            if (first != std::string::npos && line.compare(first, 2, "--") == 0 && first > 0) continue; // attribution
            entry += line + "\n";
        }
        flush();
    }
    return out;
}

} // namespace jokes
