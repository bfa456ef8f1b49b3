// tinylm/data/utf8.hpp: UTF-8 decoding, encoding and repair of raw bytes read from corpora.
//
// `repair_utf8` turns any byte sequence into valid UTF-8 without control characters, and counts what it
// changed: invalid sequences become U+FFFD, NUL and other C0/C1 control characters are dropped (tab and
// line feed are kept), byte order marks are dropped, CRLF and lone CR become LF. It never throws.
#pragma once

#include <tinylm/core/utf8.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tl::data {

// Counts of what repair changed, summed over everything read.
struct repair_counts {
    std::uint64_t bytes = 0;        // input bytes seen
    std::uint64_t invalid_utf8 = 0; // invalid or truncated sequences replaced by U+FFFD
    std::uint64_t nul = 0;          // NUL bytes removed
    std::uint64_t control = 0;      // other control characters removed (C0 except \t \n, DEL, C1)
    std::uint64_t bom = 0;          // U+FEFF removed (file start or inside text)
    std::uint64_t crlf = 0;         // CRLF turned into LF
    std::uint64_t lone_cr = 0;      // CR alone turned into LF
    repair_counts& operator+=(const repair_counts& o) {
        bytes += o.bytes, invalid_utf8 += o.invalid_utf8, nul += o.nul, control += o.control, bom += o.bom;
        crlf += o.crlf, lone_cr += o.lone_cr;
        return *this;
    }
};

inline constexpr char32_t replacement_char = utf8::replacement;

// The decoder and encoder of core/utf8.hpp under the names the corpus pipeline uses.
// Decodes one code point at s[i], advancing i. Returns replacement_char (advancing by one byte) for an
// invalid sequence and sets `ok` to false; overlong forms, surrogates and values above U+10FFFF are invalid.
inline char32_t decode_utf8(std::string_view s, std::size_t& i, bool& ok) { return utf8::decode(s, i, ok); }

// Decodes assuming valid UTF-8 (text that went through repair_utf8).
inline char32_t next_cp(std::string_view s, std::size_t& i) {
    bool ok;
    return utf8::decode(s, i, ok);
}

inline void append_utf8(std::string& out, char32_t cp) { utf8::append(out, cp); }
inline std::string utf8(char32_t cp) { return utf8::encode(cp); }

// Number of code points of valid UTF-8.
inline std::size_t utf8_length(std::string_view s) { return utf8::length(s); }

// Appends the repaired form of `in` to `out`. A CR at the very end of `in` is turned into LF; a reader that
// cuts input into pieces cuts after LF so that CRLF is never split.
inline void repair_utf8(std::string_view in, std::string& out, repair_counts& counts) {
    counts.bytes += in.size();
    out.reserve(out.size() + in.size());
    std::size_t i = 0;
    while (i < in.size()) {
        const auto b = static_cast<unsigned char>(in[i]);
        if (b >= 0x20 && b < 0x7F) { // printable ASCII, the common case
            std::size_t j = i + 1;
            while (j < in.size() && static_cast<unsigned char>(in[j]) >= 0x20 &&
                   static_cast<unsigned char>(in[j]) < 0x7F)
                ++j;
            out.append(in.data() + i, j - i);
            i = j;
            continue;
        }
        if (b == '\n' || b == '\t') {
            out.push_back(static_cast<char>(b));
            ++i;
            continue;
        }
        if (b == '\r') {
            if (i + 1 < in.size() && in[i + 1] == '\n') {
                ++counts.crlf;
                i += 2;
            } else {
                ++counts.lone_cr;
                ++i;
            }
            out.push_back('\n');
            continue;
        }
        if (b == 0) {
            ++counts.nul;
            ++i;
            continue;
        }
        if (b < 0x20 || b == 0x7F) {
            ++counts.control;
            ++i;
            continue;
        }
        bool ok;
        const std::size_t start = i;
        const char32_t cp = decode_utf8(in, i, ok);
        if (!ok) {
            ++counts.invalid_utf8;
            append_utf8(out, replacement_char);
        } else if (cp == 0xFEFF) {
            ++counts.bom;
        } else if (cp >= 0x80 && cp < 0xA0) {
            ++counts.control;
        } else {
            out.append(in.data() + start, i - start);
        }
    }
}

} // namespace tl::data
