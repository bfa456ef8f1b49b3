// tinylm/tokenizer/special_tokens.hpp: added tokens (<bos>, <eos>, <pad>, <unk>, chat markers such as
// <|im_start|>) that are matched in the raw text before normalisation and splitting, leftmost and longest first,
// as Hugging Face `tokenizers` does.
#pragma once

#include <tinylm/core/utf8.hpp>
#include <tinylm/tokenizer/bpe.hpp>
#include <tinylm/tokenizer/unicode.hpp>

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

struct added_token {
    std::string content;
    token_t id = -1;
    // Special tokens are control tokens (skipped by decode with skip_special); the others are ordinary words
    // that must never be split.
    bool special = true;
    // Matched in the normalized text rather than the raw text (Hugging Face's default for non-special tokens).
    bool normalized = false;
    // Hugging Face's AddedToken flags: match only as a whole word; swallow the whitespace on the left / right.
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
};

namespace detail {

// Rust regex's \w as Hugging Face `tokenizers` uses it for single_word: Alphabetic, marks, decimal digits,
// connector punctuation and the join controls. Alphabetic is taken as the letters (L*), letter numbers (Nl) and
// the marks, plus the letter-like symbols that Other_Alphabetic adds (circled and squared Latin letters).
inline bool is_word_char(char32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
        (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189))
        return true;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

// The code point that ends valid UTF-8 `s` (s not empty).
inline char32_t last_code_point(std::string_view s) {
    std::size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80)
        --i;
    return utf8::next(s, i);
}

// Bytes of the whitespace (Unicode White_Space) that ends / starts valid UTF-8 `s`.
inline std::size_t trailing_space_bytes(std::string_view s) {
    std::size_t n = s.size();
    while (n > 0) {
        std::size_t i = n - 1;
        while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80)
            --i;
        std::size_t j = i;
        if (!unicode::is_space(utf8::next(s, j))) break;
        n = i;
    }
    return s.size() - n;
}
inline std::size_t leading_space_bytes(std::string_view s) {
    std::size_t n = 0;
    while (n < s.size()) {
        std::size_t j = n;
        if (!unicode::is_space(utf8::next(s, j))) break;
        n = j;
    }
    return n;
}

} // namespace detail

// Added tokens and the matcher that finds them in a text, leftmost first and longest at one place, without
// overlaps (Aho-Corasick with MatchKind::LeftmostLongest, as `tokenizers` builds it), honouring the flags:
//   single_word  a match whose neighbour on either side is a word character (\w) is dropped;
//   lstrip       the match takes the whitespace before it (not what an earlier match already took);
//   rstrip       the match takes the whitespace after it.
// Each token is matched by its pattern: its content, or for the tokens that match in normalised text the
// normalizer's output for the content (Hugging Face normalises the content of normalized tokens the same way).
class added_vocabulary {
public:
    const std::vector<added_token>& tokens() const { return tokens_; }
    bool empty() const { return tokens_.empty(); }

    // `pattern`: the text to find (default: the content).
    void add(added_token t, std::string pattern = {}) {
        check(!t.content.empty(), "added token with empty content");
        if (pattern.empty()) pattern = t.content;
        tokens_.push_back(std::move(t));
        patterns_.push_back(std::move(pattern));
        const std::size_t k = tokens_.size() - 1;
        auto& list = by_first_[static_cast<unsigned char>(patterns_[k][0])];
        list.push_back(k);
        std::stable_sort(list.begin(), list.end(),
                         [&](std::size_t a, std::size_t b) { return patterns_[a].size() > patterns_[b].size(); });
        single_first_ = -1;
        for (int b = 0, n = 0; b < 256; ++b)
            if (!by_first_[static_cast<std::size_t>(b)].empty()) single_first_ = ++n == 1 ? b : -2;
        if (single_first_ < 0) single_first_ = -1;
        if (static_cast<std::size_t>(tokens_[k].id) >= by_id_.size())
            by_id_.resize(static_cast<std::size_t>(tokens_[k].id) + 1, -1);
        by_id_[static_cast<std::size_t>(tokens_[k].id)] = static_cast<std::int32_t>(k);
    }

    // The added token with this id, or nullptr.
    const added_token* find(token_t id) const {
        if (id < 0 || static_cast<std::size_t>(id) >= by_id_.size() || by_id_[static_cast<std::size_t>(id)] < 0)
            return nullptr;
        return &tokens_[static_cast<std::size_t>(by_id_[static_cast<std::size_t>(id)])];
    }
    // The text matched for the token with this id (its content, or its normalised content); the token must exist.
    std::string_view pattern(token_t id) const {
        const added_token* t = find(id);
        check(t != nullptr, [&] { return "added_vocabulary: no added token " + std::to_string(id); });
        return patterns_[static_cast<std::size_t>(t - tokens_.data())];
    }
    const added_token* find(std::string_view content) const {
        for (const auto& t : tokens_)
            if (t.content == content) return &t;
        return nullptr;
    }

    // Calls on_text(std::string_view) for the stretches between added tokens and on_token(token_t) for each
    // added token found, in order. `text` must be valid UTF-8 when a token has single_word, lstrip or rstrip.
    template <class OnText, class OnToken>
    void split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
        if (tokens_.empty()) {
            if (!text.empty()) on_text(text);
            return;
        }
        std::size_t emitted = 0; // text before this has been handed out
        for (std::size_t i = 0; i < text.size();) {
            if (single_first_ >= 0) { // one first byte: let memchr find the candidates
                const void* hit = std::memchr(text.data() + i, single_first_, text.size() - i);
                if (!hit) break;
                i = static_cast<std::size_t>(static_cast<const char*>(hit) - text.data());
            }
            std::size_t found = npos;
            for (std::size_t k : by_first_[static_cast<unsigned char>(text[i])])
                if (text.compare(i, patterns_[k].size(), patterns_[k]) == 0) {
                    found = k;
                    break;
                }
            if (found == npos) {
                ++i;
                continue;
            }
            const added_token& t = tokens_[found];
            std::size_t start = i, stop = i + patterns_[found].size();
            i = stop; // the search goes on after the match, whether it is kept or not
            if (t.single_word) {
                std::size_t after = stop;
                if ((start > 0 && detail::is_word_char(detail::last_code_point(text.substr(0, start)))) ||
                    (stop < text.size() && detail::is_word_char(utf8::next(text, after))))
                    continue;
            }
            if (t.lstrip) start = std::max(start - detail::trailing_space_bytes(text.substr(0, start)), emitted);
            if (t.rstrip) stop += detail::leading_space_bytes(text.substr(stop));
            if (emitted < start) on_text(text.substr(emitted, start - emitted));
            on_token(t.id);
            emitted = stop;
        }
        if (emitted < text.size()) on_text(text.substr(emitted));
    }

private:
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
    std::vector<added_token> tokens_;
    std::vector<std::string> patterns_;
    std::array<std::vector<std::size_t>, 256> by_first_;
    std::vector<std::int32_t> by_id_;
    int single_first_ = -1; // the first byte of every pattern when they share one, else -1
};

} // namespace tl
