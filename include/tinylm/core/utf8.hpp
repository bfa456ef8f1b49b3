// tinylm/core/utf8.hpp: the one UTF-8 decoder and encoder of tinylm, shared by the tokenizer, the corpus
// pipeline (data/utf8.hpp), the Jinja engine and the TensorBoard writer. Standard library only: no math
// backend, no utf8proc.
//
// Valid means what Unicode and Python mean: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
// U+10FFFF, no truncated sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tl::utf8 {

inline constexpr char32_t replacement = 0xFFFD;

// Decodes the code point at s[i] (i < s.size()) and advances i past it. An invalid or truncated sequence gives
// `replacement`, advances i by one byte and sets `ok` to false.
inline char32_t decode(std::string_view s, std::size_t& i, bool& ok) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    ok = true;
    if (b0 < 0x80) {
        ++i;
        return b0;
    }
    int n = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b0 & 0xE0) == 0xC0)
        n = 1, cp = b0 & 0x1F, min = 0x80;
    else if ((b0 & 0xF0) == 0xE0)
        n = 2, cp = b0 & 0x0F, min = 0x800;
    else if ((b0 & 0xF8) == 0xF0)
        n = 3, cp = b0 & 0x07, min = 0x10000;
    else {
        ok = false;
        ++i;
        return replacement;
    }
    for (int k = 1; k <= n; ++k) {
        if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) {
            ok = false;
            ++i;
            return replacement;
        }
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        ok = false;
        ++i;
        return replacement;
    }
    i += n + 1;
    return cp;
}

// Length in bytes of the valid sequence that starts at s[i], or 0 when it is invalid.
inline std::size_t sequence_length(std::string_view s, std::size_t i) {
    std::size_t j = i;
    bool ok;
    decode(s, j, ok);
    return ok ? j - i : 0;
}

// Decodes the code point at s[i] of text known to be valid (checked once by find_invalid, or repaired) and
// advances i: the hot loops of the tokenizer, without the checks of decode.
inline char32_t next(std::string_view s, std::size_t& i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        ++i;
        return b0;
    }
    if (b0 < 0xE0) {
        const char32_t c = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
        i += 2;
        return c;
    }
    if (b0 < 0xF0) {
        const char32_t c = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                           (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
        i += 3;
        return c;
    }
    const char32_t c = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                       ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) |
                       (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
    i += 4;
    return c;
}

// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
inline std::size_t find_invalid(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        // Eight ASCII bytes at a time.
        while (i + 8 <= n) {
            std::uint64_t w;
            __builtin_memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        const unsigned char b = p[i];
        if (b < 0x80) {
            ++i;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) { // two bytes (Cyrillic, ...)
            i += 2;
            continue;
        }
        bool ok;
        std::size_t j = i;
        decode(s, j, ok);
        if (!ok) return i;
        i = j;
    }
    return std::string_view::npos;
}

inline bool is_valid(std::string_view s) { return find_invalid(s) == std::string_view::npos; }

// Appends the UTF-8 encoding of code point c.
inline void append(std::string& out, char32_t c) {
    if (c < 0x80) {
        out += static_cast<char>(c);
    } else if (c < 0x800) {
        out += static_cast<char>(0xC0 | (c >> 6));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += static_cast<char>(0xE0 | (c >> 12));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (c >> 18));
        out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (c & 0x3F));
    }
}

inline std::string encode(char32_t c) {
    std::string s;
    append(s, c);
    return s;
}

// Number of code points of valid UTF-8 (the bytes that are not continuation bytes).
inline std::size_t length(std::string_view s) {
    std::size_t n = 0;
    for (char c : s)
        n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

} // namespace tl::utf8
