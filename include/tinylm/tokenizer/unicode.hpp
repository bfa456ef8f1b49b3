// tinylm/tokenizer/unicode.hpp: UTF-8 decoding and validation, the character classes the pre-tokenizers
// need (\p{L}, \p{N}, \s as Oniguruma defines them), and NFC through utf8proc.
//
// Classes come from utf8proc's general categories and are kept in a table of one byte per code point, built
// once on first use (about 1 MiB, a few milliseconds).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/utf8.hpp>

#include <utf8proc.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

namespace tl::unicode {

// What the splitting patterns ask of a code point.
enum class char_class : std::uint8_t { other = 0, letter = 1, number = 2, space = 3 };

// Unicode White_Space (what Oniguruma's \s matches).
constexpr bool is_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace detail {
inline const std::uint8_t* class_table() {
    static const std::unique_ptr<std::uint8_t[]> table = [] {
        auto t = std::make_unique<std::uint8_t[]>(0x110000);
        for (char32_t c = 0; c < 0x110000; ++c) {
            char_class k = char_class::other;
            if (is_space(c)) {
                k = char_class::space;
            } else {
                switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
                case UTF8PROC_CATEGORY_LU:
                case UTF8PROC_CATEGORY_LL:
                case UTF8PROC_CATEGORY_LT:
                case UTF8PROC_CATEGORY_LM:
                case UTF8PROC_CATEGORY_LO:
                    k = char_class::letter;
                    break;
                case UTF8PROC_CATEGORY_ND:
                case UTF8PROC_CATEGORY_NL:
                case UTF8PROC_CATEGORY_NO:
                    k = char_class::number;
                    break;
                default:
                    break;
                }
            }
            t[c] = static_cast<std::uint8_t>(k);
        }
        return t;
    }();
    return table.get();
}
} // namespace detail

// The table, built during static initialisation (or on first use, if that comes earlier), so that the hot
// loops read a plain pointer.
inline const std::uint8_t* const class_table_ptr = detail::class_table();
inline char_class classify(char32_t c) {
    const std::uint8_t* t = class_table_ptr;
    if (!t) [[unlikely]]
        t = detail::class_table();
    return c < 0x110000 ? static_cast<char_class>(t[c]) : char_class::other;
}

// Decodes one code point at s[i] (which must be valid UTF-8) and advances i (core/utf8.hpp).
using tl::utf8::next;

// Length in bytes of the UTF-8 sequence that starts with byte b (1 for a stray continuation byte).
constexpr std::size_t sequence_length(unsigned char b) { return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

// Byte offset of the first invalid UTF-8 sequence, or npos when `s` is valid (no overlongs, no surrogates,
// nothing above U+10FFFF); core/utf8.hpp.
using tl::utf8::find_invalid;

// Throws tl::error naming `what` and the byte offset when `s` is not valid UTF-8.
inline void check_utf8(std::string_view s, std::string_view what) {
    const std::size_t bad = find_invalid(s);
    if (bad != std::string_view::npos)
        fail(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(bad) + " of " + std::to_string(s.size()));
}

// Appends the UTF-8 encoding of c.
inline void append_utf8(std::string& out, char32_t c) { tl::utf8::append(out, c); }

// True when NFC leaves c alone whatever surrounds it: ASCII and Latin-1 below the combining marks, the
// Cyrillic letters (their decompositions recompose, and none of them combines with a preceding character), and
// the general punctuation other than the spaces U+2000-U+200F and U+2028-U+202F.
constexpr bool nfc_inert(char32_t c) {
    return c < 0x300 || (c >= 0x400 && c < 0x483) || (c >= 0x48A && c < 0x530) || (c >= 0x2010 && c < 0x2028) ||
           (c >= 0x2030 && c < 0x205F);
}

// True when NFC cannot change valid UTF-8 `s` (a quick, conservative test on the characters one by one).
inline bool nfc_quick_check(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
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
        } else if (b < 0xCC) { // U+0080..U+02FF
            i += 2;
        } else if (b >= 0xD0 && b <= 0xD4) { // U+0400..U+053F
            const char32_t c = ((b & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
            if (!nfc_inert(c)) return false;
            i += 2;
        } else {
            std::size_t j = i;
            if (!nfc_inert(next(s, j))) return false;
            i = j;
        }
    }
    return true;
}

// NFC of valid UTF-8 `s`. Runs utf8proc only on the lines that hold a character NFC might change.
inline std::string nfc(std::string_view s) {
    if (nfc_quick_check(s)) return std::string(s);
    std::string out;
    out.reserve(s.size());
    std::size_t line_start = 0;
    while (line_start < s.size()) {
        std::size_t line_end = s.find('\n', line_start);
        line_end = line_end == std::string_view::npos ? s.size() : line_end + 1;
        const std::string_view line = s.substr(line_start, line_end - line_start);
        if (nfc_quick_check(line)) {
            out += line;
        } else {
            utf8proc_uint8_t* mapped = nullptr;
            const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(line.data()),
                                                    static_cast<utf8proc_ssize_t>(line.size()), &mapped,
                                                    static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
            if (n < 0) fail(std::string("NFC normalisation failed: ") + utf8proc_errmsg(n));
            out.append(reinterpret_cast<const char*>(mapped), static_cast<std::size_t>(n));
            std::free(mapped);
        }
        line_start = line_end;
    }
    return out;
}

} // namespace tl::unicode
