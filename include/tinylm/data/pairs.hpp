// tinylm/data/pairs.hpp: (anchor, positive[, negatives]) text pairs for contrastive training (docs/retrieval.md).
//
//   auto rows = tl::data::read_pairs("train.jsonl");        // or .tsv; the extension decides
//   auto batch = tl::data::gather_pairs(rows, indices);      // the texts of one batch, column by column
//
// JSONL (.jsonl, .json): one object per line, blank lines skipped. The two sides are the first of these key
// pairs that the object has: ("anchor", "positive"), ("query", "document"), ("query", "positive"),
// ("sentence1", "sentence2"). Hard negatives, optional: "negative" (a string or a list of strings) or
// "negatives" (a list). Other keys are ignored.
// TSV (.tsv, .txt): anchor <TAB> positive [<TAB> negative ...]; a first line whose first two columns are one of
// the key pairs above is a header and skipped. No quoting: a text cannot hold a tab or a line break.
//
// Every row must have the same number of negatives (the loss takes H per anchor). Bad input throws tl::error
// naming file:line: an empty file, invalid JSON, a missing or non-string field, a row with fewer than two
// columns, an empty (or all-whitespace) anchor, positive or negative.
#pragma once

#include <tinylm/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl::data {

struct text_pair {
    std::string anchor;
    std::string positive;
    std::vector<std::string> negatives; // hard negatives of this anchor (the same count in every row)
    std::string source;                 // "file:line"
};

struct pair_read_options {
    std::size_t limit = 0; // stop after this many rows; 0: all
};

namespace detail {

inline constexpr std::pair<const char*, const char*> pair_keys[] = {
    {"anchor", "positive"}, {"query", "document"}, {"query", "positive"}, {"sentence1", "sentence2"}};

// "key" with its quotes, or "key"[index] (appended: GCC 12 warns falsely, -Wrestrict, on a literal + a
// temporary string).
inline std::string quoted(std::string_view key, std::ptrdiff_t index = -1) {
    std::string s(1, '"');
    s.append(key).append(1, '"');
    if (index >= 0) s.append(1, '[').append(std::to_string(index)).append(1, ']');
    return s;
}

inline bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos; }

inline void check_pair_text(const std::string& text, const char* what, const std::string& where) {
    check(!blank(text), [&] { return where + ": the " + std::string(what) + " is empty"; });
}

// Every line of a file without its line break (and a trailing \r); f(line, line_number).
template <class F>
void for_each_line(const std::filesystem::path& path, F&& f) {
    std::ifstream in(path, std::ios::binary);
    check(static_cast<bool>(in), [&] { return path.string() + ": cannot open for reading"; });
    std::string line;
    for (std::size_t n = 1; std::getline(in, line); ++n) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (n == 1 && line.starts_with("\xEF\xBB\xBF")) line.erase(0, 3); // a UTF-8 byte order mark
        if (!f(std::string_view(line), n)) return;
    }
}

inline void finish_pairs(const std::vector<text_pair>& rows, const std::filesystem::path& path) {
    check(!rows.empty(), [&] { return path.string() + ": no pairs (the file is empty)"; });
    for (const text_pair& r : rows)
        check(r.negatives.size() == rows.front().negatives.size(), [&] {
            return r.source + ": " + std::to_string(r.negatives.size()) + " negatives, but " + rows.front().source +
                   " has " + std::to_string(rows.front().negatives.size()) + " (every anchor needs the same number)";
        });
}

} // namespace detail

inline std::vector<text_pair> read_pairs_jsonl(const std::filesystem::path& path, const pair_read_options& opt = {}) {
    std::vector<text_pair> rows;
    detail::for_each_line(path, [&](std::string_view line, std::size_t n) {
        if (detail::blank(line)) return true;
        const std::string where = path.string() + ":" + std::to_string(n);
        nlohmann::json obj;
        try {
            obj = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
            fail(where + ": invalid JSON (" + e.what() + ")");
        }
        check(obj.is_object(), [&] { return where + ": expected a JSON object, got " + std::string(obj.type_name()); });
        const char *first = nullptr, *second = nullptr;
        for (const auto& [a, p] : detail::pair_keys)
            if (obj.contains(a) && obj.contains(p)) {
                first = a;
                second = p;
                break;
            }
        check(first != nullptr, [&] {
            return where +
                   ": missing field: a pair needs \"anchor\" and \"positive\" (or query/document, query/positive, "
                   "sentence1/sentence2)";
        });
        auto text = [&](const nlohmann::json& v, const std::string& what) {
            check(v.is_string(),
                  [&] { return where + ": " + what + " must be a string, got " + std::string(v.type_name()); });
            std::string s = v.get<std::string>();
            detail::check_pair_text(s, what.c_str(), where);
            return s;
        };
        text_pair row{text(obj[first], detail::quoted(first)), text(obj[second], detail::quoted(second)), {}, where};
        for (const char* key : {"negative", "negatives"}) {
            if (!obj.contains(key) || obj[key].is_null()) continue;
            const nlohmann::json& v = obj[key];
            if (v.is_array()) {
                for (std::size_t i = 0; i < v.size(); ++i)
                    row.negatives.push_back(text(v[i], detail::quoted(key, std::ptrdiff_t(i))));
            } else {
                row.negatives.push_back(text(v, detail::quoted(key)));
            }
        }
        rows.push_back(std::move(row));
        return opt.limit == 0 || rows.size() < opt.limit;
    });
    detail::finish_pairs(rows, path);
    return rows;
}

inline std::vector<text_pair> read_pairs_tsv(const std::filesystem::path& path, const pair_read_options& opt = {}) {
    std::vector<text_pair> rows;
    detail::for_each_line(path, [&](std::string_view line, std::size_t n) {
        if (detail::blank(line)) return true;
        const std::string where = path.string() + ":" + std::to_string(n);
        std::vector<std::string> cols;
        for (std::size_t start = 0;;) {
            const std::size_t tab = line.find('\t', start);
            cols.emplace_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
            if (tab == std::string_view::npos) break;
            start = tab + 1;
        }
        check(cols.size() >= 2, [&] {
            return where + ": a pair needs two tab-separated columns (anchor, positive), got " +
                   std::to_string(cols.size());
        });
        if (rows.empty() && n == 1)
            for (const auto& [a, p] : detail::pair_keys)
                if (cols[0] == a && cols[1] == p) return true; // a header
        detail::check_pair_text(cols[0], "anchor (column 1)", where);
        detail::check_pair_text(cols[1], "positive (column 2)", where);
        text_pair row{std::move(cols[0]), std::move(cols[1]), {}, where};
        for (std::size_t c = 2; c < cols.size(); ++c) {
            detail::check_pair_text(cols[c], ("negative (column " + std::to_string(c + 1) + ")").c_str(), where);
            row.negatives.push_back(std::move(cols[c]));
        }
        rows.push_back(std::move(row));
        return opt.limit == 0 || rows.size() < opt.limit;
    });
    detail::finish_pairs(rows, path);
    return rows;
}

// By extension: .tsv and .txt are TSV, everything else JSONL.
inline std::vector<text_pair> read_pairs(const std::filesystem::path& path, const pair_read_options& opt = {}) {
    const std::string ext = path.extension().string();
    return ext == ".tsv" || ext == ".txt" ? read_pairs_tsv(path, opt) : read_pairs_jsonl(path, opt);
}

// The texts of one batch, column by column (embed::text_batch views these): B anchors, B positives and the
// B*H negatives with anchor b's at rows b*H .. b*H+H-1.
struct pair_batch {
    std::vector<std::string> anchors, positives, negatives;
};

inline pair_batch gather_pairs(std::span<const text_pair> rows, std::span<const std::size_t> indices) {
    pair_batch out;
    for (std::size_t i : indices) {
        check(i < rows.size(),
              [&] { return "gather_pairs: row " + std::to_string(i) + " of " + std::to_string(rows.size()); });
        const text_pair& r = rows[i];
        check(r.negatives.size() == rows[indices[0]].negatives.size(),
              [&] { return "gather_pairs: " + r.source + " has a different number of negatives"; });
        out.anchors.push_back(r.anchor);
        out.positives.push_back(r.positive);
        out.negatives.insert(out.negatives.end(), r.negatives.begin(), r.negatives.end());
    }
    return out;
}

} // namespace tl::data
