// tinylm/tokenizer/bert_normalizer.hpp: BERT's text normalisation and word splitting, as Hugging Face
// `tokenizers` does them (BertNormalizer, BertPreTokenizer):
//   clean_text            drop NUL, U+FFFD and control/format/private-use characters; whitespace becomes " "
//   handle_chinese_chars  put spaces around CJK ideographs (each becomes a word of its own)
//   strip_accents         NFD, then drop the nonspacing marks (Hugging Face: null means "as lowercase")
//   lowercase             full lowercase mapping, one character at a time (İ → i + U+0307)
// then the words: split at whitespace (removed), each punctuation character a word of its own.
//
// The character classes come from detail/bert_tables.hpp, measured from `tokenizers` itself, because its
// Unicode tables are older than utf8proc's; NFD and lowercase come from utf8proc.
#pragma once

#include <tinylm/tokenizer/detail/bert_tables.hpp>
#include <tinylm/tokenizer/unicode.hpp>

#include <utf8proc.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

namespace detail {

enum bert_class : std::uint8_t {
    bert_removed = 1,
    bert_punct = 2,
    bert_mark = 4,
    bert_cjk = 8,
    bert_lower = 16,
    bert_nfd_keep = 32
};

// One byte of bert_class bits per code point (1.1 MiB), built on first use.
inline const std::uint8_t* bert_class_table() {
    static const std::unique_ptr<std::uint8_t[]> table = [] {
        auto t = std::make_unique<std::uint8_t[]>(0x110000);
        auto mark = [&](const auto& ranges, std::uint8_t bit) {
            for (const auto& r : ranges)
                for (std::uint32_t c = r.first; c <= r.last; ++c)
                    t[c] |= bit;
        };
        mark(bert_tables::removed, bert_removed);
        mark(bert_tables::punctuation, bert_punct);
        mark(bert_tables::mark, bert_mark);
        mark(bert_tables::cjk, bert_cjk);
        mark(bert_tables::nfd_keep, bert_nfd_keep);
        for (const auto& p : bert_tables::lower_extra)
            t[p.from] |= bert_lower;
        return t;
    }();
    return table.get();
}

inline std::uint8_t bert_classes(char32_t c) { return c < 0x110000 ? bert_class_table()[c] : 0; }

// Rust's char::to_lowercase: utf8proc's simple mapping, plus the one unconditional multi-character mapping of
// SpecialCasing.txt (U+0130 → "i̇") and the mappings of a Unicode newer than utf8proc's.
inline void append_lowercase(std::string& out, char32_t c) {
    if (c < 0x80) {
        out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    } else if (c == 0x130) {
        out += "i\xCC\x87";
    } else if (bert_classes(c) & bert_lower) {
        const auto& t = bert_tables::lower_extra;
        const auto* p = std::lower_bound(t.begin(), t.end(), c, [](const auto& e, char32_t x) { return e.from < x; });
        unicode::append_utf8(out, p->to);
    } else {
        unicode::append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
}

} // namespace detail

struct bert_normalizer {
    bool clean_text = true;
    bool handle_chinese_chars = true;
    bool strip_accents = true;
    bool lowercase = true;

    // Appends the normalised form of valid UTF-8 `text` to out.
    void apply(std::string_view text, std::string& out) const {
        // Pass 1: cleaning and CJK spacing, character by character (ASCII needs no table).
        thread_local std::string stage;
        std::string& s = (strip_accents || lowercase) ? stage : out;
        if (&s == &stage) s.clear();
        bool ascii = true;
        for (std::size_t i = 0; i < text.size();) {
            const auto b = static_cast<unsigned char>(text[i]);
            if (b < 0x80) {
                ++i;
                if (clean_text) {
                    if (b == '\t' || b == '\n' || b == '\r' || b == ' ') {
                        s += ' ';
                        continue;
                    }
                    if (b < 0x20 || b == 0x7F) continue;
                }
                s += static_cast<char>(b);
                continue;
            }
            const std::size_t start = i;
            const char32_t c = unicode::next(text, i);
            const std::uint8_t k = detail::bert_classes(c);
            if (clean_text) {
                if (k & detail::bert_removed) continue;
                if (unicode::is_space(c)) {
                    s += ' ';
                    continue;
                }
            }
            ascii = false;
            if (handle_chinese_chars && (k & detail::bert_cjk)) {
                s += ' ';
                s.append(text, start, i - start);
                s += ' ';
            } else {
                s.append(text, start, i - start);
            }
        }
        if (&s == &out) return;
        if (ascii) {
            for (char ch : s)
                out += lowercase && ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch + ('a' - 'A')) : ch;
            return;
        }
        // Pass 2: NFD and mark removal, lowercase.
        if (strip_accents) {
            // Characters whose decomposition `tokenizers` does not know yet stay whole; they are starters, so
            // decomposing the stretches between them separately gives the same canonical order.
            std::size_t seg = 0;
            for (std::size_t i = 0; i < s.size();) {
                const std::size_t at = i;
                const char32_t c = unicode::next(s, i);
                if (c < 0x80 || !(detail::bert_classes(c) & detail::bert_nfd_keep)) continue;
                decompose_into(std::string_view(s).substr(seg, at - seg), out);
                append_char(out, c);
                seg = i;
            }
            decompose_into(std::string_view(s).substr(seg), out);
            return;
        }
        for (std::size_t i = 0; i < s.size();)
            detail::append_lowercase(out, unicode::next(s, i));
    }

    std::string apply(std::string_view text) const {
        std::string out;
        apply(text, out);
        return out;
    }

private:
    void append_char(std::string& out, char32_t c) const {
        if (lowercase)
            detail::append_lowercase(out, c);
        else
            unicode::append_utf8(out, c);
    }
    // NFD of `s` without its nonspacing marks, lowercased when asked, appended to out.
    void decompose_into(std::string_view s, std::string& out) const {
        if (s.empty()) return;
        thread_local std::vector<utf8proc_int32_t> cps;
        cps.resize(s.size() + 16);
        const auto opts = static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_STABLE);
        const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
        const auto n_bytes = static_cast<utf8proc_ssize_t>(s.size());
        auto n = utf8proc_decompose(bytes, n_bytes, cps.data(), static_cast<utf8proc_ssize_t>(cps.size()), opts);
        if (n > static_cast<utf8proc_ssize_t>(cps.size())) {
            cps.resize(static_cast<std::size_t>(n));
            n = utf8proc_decompose(bytes, n_bytes, cps.data(), n, opts);
        }
        if (n < 0) fail(std::string("BertNormalizer: NFD failed: ") + utf8proc_errmsg(n));
        for (std::size_t j = 0; j < static_cast<std::size_t>(n); ++j) {
            const auto c = static_cast<char32_t>(cps[j]);
            if (!(detail::bert_classes(c) & detail::bert_mark)) append_char(out, c);
        }
    }
};

// BertPreTokenizer: calls emit(std::string_view word) for each word of valid UTF-8 `text`: whitespace
// (Unicode White_Space) separates words and is dropped; each punctuation character is a word of its own.
template <class Emit>
void split_bert_words(std::string_view text, Emit&& emit) {
    std::size_t start = 0, i = 0;
    while (i < text.size()) {
        const std::size_t at = i;
        const auto b = static_cast<unsigned char>(text[i]);
        char32_t c = b;
        if (b < 0x80)
            ++i;
        else
            c = unicode::next(text, i);
        const bool space = unicode::is_space(c);
        if (!space && !(detail::bert_classes(c) & detail::bert_punct)) continue;
        if (at > start) emit(text.substr(start, at - start));
        if (!space) emit(text.substr(at, i - at));
        start = i;
    }
    if (start < text.size()) emit(text.substr(start));
}

} // namespace tl
