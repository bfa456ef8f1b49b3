// tinylm/tokenizer/pretokenizer.hpp: splitting text into words before BPE.
//
// The GPT-2 and Qwen2 splitting regexes are written out as scanners over Unicode character classes (no
// std::regex); each returns exactly what Hugging Face `tokenizers` (Oniguruma, find-all, "Isolated") returns:
//   gpt2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+
//          |\s+(?!\S)|\s+
//   llama3: qwen2's with \p{N}{1,3} for \p{N} (digits in groups of up to three; Llama 3's tokenizer.json)
// Also here: the GPT-2 byte-to-character map of the byte-level style, and the metaspace split of the
// Llama/SentencePiece style ("▁" replaces spaces and starts each word).
#pragma once

#include <tinylm/tokenizer/unicode.hpp>

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace tl {

enum class split_pattern {
    none,   // the whole text is one word
    gpt2,   // GPT-2's pattern (ByteLevel with use_regex)
    qwen2,  // Qwen2/Qwen3's pattern (single digits, letters may take one leading symbol)
    llama3, // Llama 3's: Qwen2's with digits in groups of up to three
};

namespace detail {

// Code point at byte i of valid UTF-8 text, with its length; past the end returns {0, 0}.
struct cp_at {
    char32_t c;
    std::size_t len;
};
inline cp_at peek(std::string_view s, std::size_t i) {
    if (i >= s.size()) return {0, 0};
    std::size_t j = i;
    const char32_t c = unicode::next(s, j);
    return {c, j - i};
}
inline unicode::char_class cls(char32_t c) { return unicode::classify(c); }
// One-byte classes of ASCII for the fast paths.
inline bool is_l(char32_t c) { return cls(c) == unicode::char_class::letter; }
inline bool is_n(char32_t c) { return cls(c) == unicode::char_class::number; }
inline bool is_s(char32_t c) { return cls(c) == unicode::char_class::space; }
inline bool is_other(char32_t c) { return cls(c) == unicode::char_class::other; }

// 's 't 're 've 'm 'll 'd at i; returns the match length in bytes or 0.
inline std::size_t contraction(std::string_view s, std::size_t i, bool ignore_case) {
    if (s[i] != '\'' || i + 1 >= s.size()) return 0;
    auto lower = [&](std::size_t k) -> char {
        if (k >= s.size()) return 0;
        const char ch = s[k];
        return ignore_case && ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch;
    };
    const char a = lower(i + 1), b = lower(i + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// End of the run of characters from i that satisfy pred.
template <class Pred>
std::size_t run_end(std::string_view s, std::size_t i, Pred pred) {
    while (i < s.size()) {
        const cp_at p = peek(s, i);
        if (!pred(p.c)) break;
        i += p.len;
    }
    return i;
}

// \s+(?!\S)|\s+ at i (s[i] is whitespace): the run, minus its last character when a non-space follows and
// the run is longer than one character.
inline std::size_t space_run(std::string_view s, std::size_t i) {
    std::size_t end = i, last = i;
    while (end < s.size()) {
        const cp_at p = peek(s, end);
        if (!is_s(p.c)) break;
        last = end;
        end += p.len;
    }
    if (end < s.size() && last > i) return last;
    return end;
}

inline std::size_t match_gpt2(std::string_view s, std::size_t i) {
    if (std::size_t n = contraction(s, i, false)) return i + n;
    const cp_at p0 = peek(s, i);
    std::size_t j = i;
    cp_at p = p0;
    if (p0.c == ' ') {
        const cp_at p1 = peek(s, i + 1);
        if (p1.len && !is_s(p1.c)) j = i + 1, p = p1;
    }
    if (j > i || !is_s(p.c)) {
        if (is_l(p.c)) return run_end(s, j, is_l);
        if (is_n(p.c)) return run_end(s, j, is_n);
        return run_end(s, j, is_other);
    }
    return space_run(s, i);
}

// Qwen2's pattern; with max_digits 3, Llama 3's.
inline std::size_t match_qwen2(std::string_view s, std::size_t i, int max_digits = 1) {
    if (std::size_t n = contraction(s, i, true)) return i + n;
    const cp_at p0 = peek(s, i);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (is_l(p0.c)) return run_end(s, i, is_l);
    if (p0.c != '\r' && p0.c != '\n' && !is_n(p0.c)) {
        const cp_at p1 = peek(s, i + p0.len);
        if (p1.len && is_l(p1.c)) return run_end(s, i + p0.len, is_l);
    }
    // \p{N}{1,max_digits}
    if (is_n(p0.c)) {
        std::size_t j = i + p0.len;
        for (int n = 1; n < max_digits; ++n) {
            const cp_at p = peek(s, j);
            if (!p.len || !is_n(p.c)) break;
            j += p.len;
        }
        return j;
    }
    // ' '?[^\s\p{L}\p{N}]+[\r\n]*
    {
        std::size_t j = i;
        cp_at p = p0;
        if (p0.c == ' ') j = i + 1, p = peek(s, j);
        if (p.len && is_other(p.c)) {
            j = run_end(s, j, is_other);
            while (j < s.size() && (s[j] == '\r' || s[j] == '\n'))
                ++j;
            return j;
        }
    }
    // \s*[\r\n]+ : up to the last line break of the whitespace run.
    std::size_t end = i, after_break = 0;
    while (end < s.size()) {
        const cp_at p = peek(s, end);
        if (!is_s(p.c)) break;
        end += p.len;
        if (p.c == '\r' || p.c == '\n') after_break = end;
    }
    if (after_break) return after_break;
    return space_run(s, i);
}

} // namespace detail

// Calls emit(std::string_view word) for each word of valid UTF-8 `text`, in order; the words concatenate to
// `text`.
template <class Emit>
void split_words(std::string_view text, split_pattern pattern, Emit&& emit) {
    if (text.empty()) return;
    if (pattern == split_pattern::none) {
        emit(text);
        return;
    }
    std::size_t i = 0;
    while (i < text.size()) {
        const std::size_t end = pattern == split_pattern::gpt2     ? detail::match_gpt2(text, i)
                                : pattern == split_pattern::llama3 ? detail::match_qwen2(text, i, 3)
                                                                   : detail::match_qwen2(text, i);
        emit(text.substr(i, end - i));
        i = end;
    }
}

// The first position at or after p where text can be cut without changing the words of the GPT-2 and Qwen2
// patterns: just after a '\n' that a non-space character follows (no match of either pattern runs across a
// line break into a non-space). text.size() when there is none.
inline std::size_t next_word_safe_cut(std::string_view text, std::size_t p) {
    if (p == 0) p = 1;
    while (p < text.size()) {
        const std::size_t nl = text.find('\n', p - 1);
        if (nl == std::string_view::npos || nl + 1 >= text.size()) return text.size();
        std::size_t j = nl + 1;
        if (!unicode::is_space(unicode::next(text, j))) return nl + 1;
        p = nl + 2;
    }
    return text.size();
}

// ---- byte-level ------------------------------------------------------------------------------------------

// GPT-2's map from bytes to printable characters (bytes_to_unicode): the printable Latin-1 bytes stand for
// themselves, the rest become U+0100 onwards. Vocabulary entries of byte-level files are written with it.
struct byte_level_map {
    std::array<char32_t, 256> to_char{};
    std::array<std::string, 256> to_utf8{};
    byte_level_map() {
        char32_t next_free = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            to_char[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next_free++;
            unicode::append_utf8(to_utf8[static_cast<std::size_t>(b)], to_char[static_cast<std::size_t>(b)]);
            from_char[to_char[static_cast<std::size_t>(b)]] = b;
        }
    }
    static const byte_level_map& get() {
        static const byte_level_map m;
        return m;
    }
    // Raw bytes to the byte-level spelling.
    std::string encode(std::string_view bytes) const {
        std::string out;
        out.reserve(bytes.size() * 2);
        for (unsigned char b : bytes)
            out += to_utf8[b];
        return out;
    }
    // Byte-level spelling back to raw bytes; false when a character is outside the map.
    bool decode(std::string_view spelled, std::string& out) const {
        out.clear();
        std::size_t i = 0;
        while (i < spelled.size()) {
            const char32_t c = unicode::next(spelled, i);
            if (c >= from_char.size() || from_char[c] < 0) return false;
            out += static_cast<char>(from_char[c]);
        }
        return true;
    }
    std::array<int, 324> from_char = [] {
        std::array<int, 324> a{};
        a.fill(-1);
        return a;
    }();
};

// ---- metaspace -------------------------------------------------------------------------------------------

inline constexpr std::string_view metaspace = "\xE2\x96\x81"; // U+2581 "▁"

// Replaces every space by "▁" and, when `prepend` and the text is not empty and does not start with one, adds
// a "▁" in front (the Llama normalizer: Prepend("▁") then Replace(" ", "▁")).
inline std::string metaspace_replace(std::string_view text, bool prepend) {
    std::string out;
    out.reserve(text.size() + text.size() / 4 + 3);
    if (prepend && !text.empty()) out += metaspace;
    for (char ch : text) {
        if (ch == ' ')
            out += metaspace;
        else
            out += ch;
    }
    return out;
}

// Splits metaspace text before each "▁" (Metaspace pre-tokenizer, MergedWithNext).
template <class Emit>
void split_metaspace(std::string_view text, Emit&& emit) {
    std::size_t start = 0;
    for (std::size_t i = 1; i + 3 <= text.size(); ++i) {
        if (text.compare(i, 3, metaspace) == 0) {
            emit(text.substr(start, i - start));
            start = i;
            i += 2;
        }
    }
    if (start < text.size()) emit(text.substr(start));
}

} // namespace tl
