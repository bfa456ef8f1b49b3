// tinylm/data/sentences.hpp: a rule-based sentence splitter for Russian (and Tatar) prose.
//
// A sentence ends at '.', '!', '?' or "..." (with any closing quotes or brackets after them) when a space
// follows and the next sentence visibly starts: an upper-case letter, an opening quote or bracket, or a
// dialogue dash followed by an upper-case letter ("— Иди! — Он ушёл." splits, "— Иди! — сказал он." does
// not). A single '.' does not end a sentence after an initial ("А. С. Пушкин") or after an abbreviation
// that is never final ("им.", "ул.", "т. е.", "проф.", and any single lower-case letter such as "с." or "т."
// except "г.", "в." and the "д."/"п." of "т. д."/"т. п."); other words, including abbreviations that can end
// a sentence ("гг.", "др."), end one before an upper-case letter.
#pragma once

#include <tinylm/data/normalize.hpp>
#include <tinylm/data/utf8.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace tl::data {

// Lower-case abbreviations (without the final dot) after which a '.' never ends a sentence.
inline bool is_nonfinal_abbreviation(std::string_view w) {
    static constexpr std::array<std::string_view, 48> list{
        "им",   "ул", "пер", "просп", "пл",  "проф", "акад", "доц", "ген",  "полк", "кап",  "лейт",
        "св",   "см", "ср",  "стр",   "рис", "табл", "напр", "т.е", "т.к",  "т.н",  "т.о",  "г-н",
        "г-жа", "гр", "тов", "гл",    "кв",  "обл",  "оз",   "р-н", "мр",   "ок",   "прим", "пос",
        "сс",   "ч",  "mr",  "mrs",   "dr",  "vs",   "e.g",  "i.e", "сокр", "англ", "лат",  "франц"};
    return std::find(list.begin(), list.end(), w) != list.end();
}

// Splits one paragraph (normalised whitespace) into sentences, as views into `text`.
inline std::vector<std::string_view> split_sentences(std::string_view text) {
    std::vector<std::string_view> out;
    std::size_t start = 0, i = 0;
    const auto is_term = [](char32_t c) { return c == '.' || c == '!' || c == '?' || c == U'…'; };
    const auto is_close = [](char32_t c) {
        return c == U'»' || c == '"' || c == U'”' || c == ')' || c == ']' || c == '\'' || c == U'’';
    };
    while (i < text.size()) {
        std::size_t at = i;
        const char32_t c = next_cp(text, i);
        if (c == '\n') { // a kept line break ends a sentence
            if (at > start) out.push_back(text.substr(start, at - start));
            start = i;
            continue;
        }
        if (!is_term(c)) continue;
        // the run of terminators and closing marks
        std::size_t end = i, n_term = 1;
        bool single_dot = c == '.';
        for (;;) {
            std::size_t k = end;
            if (k >= text.size()) break;
            const char32_t d = next_cp(text, k);
            if (is_term(d))
                ++n_term, single_dot = false;
            else if (!is_close(d))
                break;
            end = k;
        }
        i = end;
        if (end >= text.size() || text[end] != ' ') continue;
        // what follows the space
        std::size_t k = end + 1;
        if (k >= text.size()) continue;
        char32_t nx = next_cp(text, k);
        bool starts = is_upper(nx) || nx == U'«' || nx == '"' || nx == U'„' || nx == U'“' || nx == '(';
        if (nx == U'—' || nx == U'–' || nx == '-') {
            if (k < text.size() && text[k] == ' ') {
                std::size_t m = k + 1;
                starts = m < text.size() && is_upper(next_cp(text, m));
            }
        }
        if (!starts) continue;
        if (single_dot && n_term == 1) {
            // the word before the dot
            std::size_t ws = at;
            while (ws > start) {
                std::size_t p = ws - 1;
                while (p > start && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80)
                    --p;
                std::size_t q = p;
                const char32_t pc = next_cp(text, q);
                if (!(is_letter(pc) || pc == '-' || pc == '.')) break;
                ws = p;
            }
            const std::string_view word = text.substr(ws, at - ws);
            if (!word.empty()) {
                // the last dot-separated piece: "А" in "А", "Н" in "Л.Н"
                const std::string_view piece =
                    word.substr(word.rfind('.') == std::string_view::npos ? 0 : word.rfind('.') + 1);
                std::size_t pq = 0;
                if (!piece.empty() && is_upper(next_cp(piece, pq)) && pq == piece.size()) continue; // an initial
                std::size_t q = 0;
                const char32_t first = next_cp(word, q);
                std::string low;
                for (std::size_t r = 0; r < word.size();)
                    append_utf8(low, to_lower(next_cp(word, r)));
                if (is_nonfinal_abbreviation(low)) continue;
                if (q == word.size() && !is_upper(first) && is_letter(first)) {
                    // one lower-case letter: "т. е.", "с. 5", "в." — an abbreviation unless it is "т. д."/"т. п."
                    const std::string_view before = text.substr(start, ws - start);
                    const bool td =
                        (low == "д" || low == "п") && before.size() >= 4 && before.substr(before.size() - 4) == "т. ";
                    if (!td && low != "г" && low != "в") continue; // "г." (год) and "в." (век) may end one
                }
            }
        }
        out.push_back(text.substr(start, end - start));
        start = end + 1;
        i = start;
    }
    if (start < text.size()) out.push_back(text.substr(start));
    return out;
}

} // namespace tl::data
