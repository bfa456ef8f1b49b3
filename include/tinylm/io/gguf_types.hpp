// tinylm/io/gguf_types.hpp: the ggml element types of GGUF tensors (ggml.h numbering), their block sizes, and the
// values their blocks stand for, computed as ggml's dequantize_row_* (ggml-quants.c) and the `gguf` Python
// package's gguf.quants.dequantize compute them: float products rounded on their own, then the add (the
// `check_quants` torch test compares every type bit for bit on random blocks). tinylm writes F32, F16, Q8_0 and Q4_0
// (io/gguf_quants.hpp) and reads all of these, so that the files llama.cpp's llama-quantize makes (Q4_K_M: Q4_K and
// Q6_K, with Q5_0, Q8_0 or IQ4_NL for rows that are not whole 256-value blocks) load too.
//
//   type    values a block  bytes  layout (little-endian)                      value of element i
//   F32           1           4
//   F16, BF16     1           2
//   Q4_0         32          18   d, 16 bytes of nibbles                       d (q - 8)
//   Q4_1         32          20   d, m, 16 bytes of nibbles                    d q + m
//   Q5_0         32          22   d, qh u32 (bit i: q's bit 4), nibbles        d (q - 16)
//   Q5_1         32          24   d, m, qh, nibbles                            d q + m
//   Q8_0         32          34   d, 32 int8                                   d q
//   IQ4_NL       32          18   d, nibbles                                   d table[q]
//   (nibbles: element j < 16 in the low half of byte j, element j + 16 in its high half)
//   Q2_K        256          84   16 scale bytes (sc | m << 4), 64 bytes of    (d sc) q - (dmin m), per group of 16
//                                 2-bit q, d, dmin
//   Q3_K        256         110   32 bytes of high bits, 64 of 2-bit q, 12     (d (sc - 32)) (q - 4 [high bit clear])
//                                 bytes of 6-bit scales, d
//   Q4_K        256         144   d, dmin, 12 bytes of 6-bit scales and mins,  (d sc) q - (dmin m), per group of 32
//                                 128 bytes of nibbles
//   Q5_K        256         176   as Q4_K, with 32 bytes of fifth bits before the nibbles
//   Q6_K        256         210   128 bytes of low nibbles, 64 of 2-bit highs,   (d sc) (q - 32), per group of 16
//                                 16 int8 scales, d
// Within a 256-value block the 2-bit fields of a byte belong to elements 32 apart (shift 2s: element 32s + l of
// each 128), the nibbles of a byte to elements 32 apart (Q4_K/Q5_K) and the high bits of Q3_K/Q5_K to element
// 32b + l (bit b of byte l).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/io/gguf_quants.hpp>

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace tl::gguf {

enum class ggml_type : std::uint32_t {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q2_k = 10,
    q3_k = 11,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    iq4_nl = 20,
    bf16 = 30,
};

struct type_traits {
    std::uint32_t id = 0;
    const char* name = nullptr;
    std::uint32_t block = 0; // values a block; 0: not read
    std::uint32_t bytes = 0; // bytes a block
};

namespace detail {
// Every type of ggml.h: those read with their blocks, the others by name only (for the error).
inline constexpr type_traits ggml_types[] = {
    {0, "F32", 1, 4},
    {1, "F16", 1, 2},
    {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},
    {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},
    {9, "Q8_1"},
    {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},
    {12, "Q4_K", 256, 144},
    {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},
    {15, "Q8_K"},
    {16, "IQ2_XXS"},
    {17, "IQ2_XS"},
    {18, "IQ3_XXS"},
    {19, "IQ1_S"},
    {20, "IQ4_NL", 32, 18},
    {21, "IQ3_S"},
    {22, "IQ2_S"},
    {23, "IQ4_XS"},
    {24, "I8"},
    {25, "I16"},
    {26, "I32"},
    {27, "I64"},
    {28, "F64"},
    {29, "IQ1_M"},
    {30, "BF16", 1, 2},
    {34, "TQ1_0"},
    {35, "TQ2_0"},
    {39, "MXFP4"},
};
inline type_traits traits_of(std::uint32_t t) {
    for (const type_traits& x : ggml_types)
        if (x.id == t) return x;
    return {t};
}
} // namespace detail

// Whether tinylm reads tensors of ggml type number t.
inline bool readable_type(std::uint32_t t) { return detail::traits_of(t).block != 0; }
inline std::string type_name(std::uint32_t t) {
    const char* name = detail::traits_of(t).name;
    return name ? name : "type " + std::to_string(t);
}
inline std::string type_name(ggml_type t) { return type_name(static_cast<std::uint32_t>(t)); }
// Values a block of t (1 for F32, F16, BF16).
inline std::uint64_t block_values(ggml_type t) { return detail::traits_of(static_cast<std::uint32_t>(t)).block; }
// Bytes of n elements of type t (n a multiple of the block).
inline std::uint64_t type_bytes(ggml_type t, std::uint64_t n) {
    const type_traits tr = detail::traits_of(static_cast<std::uint32_t>(t));
    return tr.block ? n / tr.block * tr.bytes : 0;
}
// The names of the types read, for messages.
inline std::string readable_type_names() {
    std::string out;
    for (const type_traits& x : detail::ggml_types)
        if (x.block) out += (out.empty() ? "" : ", ") + std::string(x.name);
    return out;
}

namespace detail {
inline float bf16_to_float(const std::uint8_t* in) {
    return std::bit_cast<float>(static_cast<std::uint32_t>(in[0] | (in[1] << 8)) << 16);
}
// a * b - c and a * b + c with the product rounded first (no fused multiply-add), as ggml's reference and numpy.
inline float product_minus(float a, float b, float c) { return separate_product(a, b) - c; }
inline float product_plus(float a, float b, float c) { return separate_product(a, b) + c; }

inline constexpr std::array<std::int8_t, 16> iq4_nl_values{-127, -104, -83, -65, -49, -35, -22, -10,
                                                           1,    13,   25,  38,  53,  69,  89,  113};

// Q4_K / Q5_K: the 6-bit scale and min of group g (0..7) from the 12 packed bytes.
inline void k_scale_min(const std::uint8_t* s, int g, std::uint8_t& scale, std::uint8_t& min) {
    if (g < 4) {
        scale = s[g] & 63;
        min = s[g + 4] & 63;
    } else {
        scale = static_cast<std::uint8_t>((s[g + 4] & 0x0f) | ((s[g - 4] >> 6) << 4));
        min = static_cast<std::uint8_t>((s[g + 4] >> 4) | ((s[g] >> 6) << 4));
    }
}

inline void dequantize_q4_1(const std::uint8_t* in, float* y) {
    const float d = get_half(in), m = get_half(in + 2);
    for (int j = 0; j < 16; ++j) {
        y[j] = product_plus(d, float(in[4 + j] & 0x0f), m);
        y[j + 16] = product_plus(d, float(in[4 + j] >> 4), m);
    }
}
// Q5_0 (with_min false) and Q5_1 (true).
inline void dequantize_q5(const std::uint8_t* in, float* y, bool with_min) {
    const float d = get_half(in), m = with_min ? get_half(in + 2) : 0.0f;
    const std::uint8_t* qh_bytes = in + (with_min ? 4 : 2);
    const std::uint32_t qh = std::uint32_t(qh_bytes[0]) | std::uint32_t(qh_bytes[1]) << 8 |
                             std::uint32_t(qh_bytes[2]) << 16 | std::uint32_t(qh_bytes[3]) << 24;
    const std::uint8_t* qs = qh_bytes + 4;
    for (int j = 0; j < 16; ++j) {
        const int lo = (qs[j] & 0x0f) | int((qh >> j) & 1) << 4, hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
        if (with_min) {
            y[j] = product_plus(d, float(lo), m);
            y[j + 16] = product_plus(d, float(hi), m);
        } else {
            y[j] = d * float(lo - 16);
            y[j + 16] = d * float(hi - 16);
        }
    }
}
inline void dequantize_iq4_nl(const std::uint8_t* in, float* y) {
    const float d = get_half(in);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * float(iq4_nl_values[in[2 + j] & 0x0f]);
        y[j + 16] = d * float(iq4_nl_values[in[2 + j] >> 4]);
    }
}
inline void dequantize_q2_k(const std::uint8_t* in, float* y) {
    const std::uint8_t *scales = in, *qs = in + 16;
    const float d = get_half(in + 80), dmin = get_half(in + 82);
    for (int e = 0; e < 256; ++e) {
        const int half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
        const std::uint8_t sc = scales[e / 16];
        const int q = (qs[half * 32 + l] >> shift) & 3;
        y[e] = product_minus(d * float(sc & 0x0f), float(q), dmin * float(sc >> 4));
    }
}
inline void dequantize_q3_k(const std::uint8_t* in, float* y) {
    const std::uint8_t *hmask = in, *qs = in + 32, *s = in + 96;
    const float d = get_half(in + 108);
    for (int e = 0; e < 256; ++e) {
        const int g = e / 16, half = e / 128, shift = 2 * ((e % 128) / 32), l = e % 32;
        const int scale = (((s[g % 8] >> (4 * (g / 8))) & 0x0f) | (((s[8 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32;
        const int q = ((qs[half * 32 + l] >> shift) & 3) - (((hmask[l] >> (e / 32)) & 1) ? 0 : 4);
        y[e] = (d * float(scale)) * float(q);
    }
}
// Q4_K (fifth_bits null) and Q5_K.
inline void dequantize_q45_k(const std::uint8_t* in, float* y, bool five) {
    const float d = get_half(in), dmin = get_half(in + 2);
    const std::uint8_t *scales = in + 4, *qh = in + 16, *qs = in + (five ? 48 : 16);
    for (int e = 0; e < 256; ++e) {
        const int g = e / 32, l = e % 32;
        std::uint8_t sc = 0, m = 0;
        k_scale_min(scales, g, sc, m);
        int q = (qs[(g / 2) * 32 + l] >> (4 * (g % 2))) & 0x0f;
        if (five) q |= ((qh[l] >> g) & 1) << 4;
        y[e] = product_minus(d * float(sc), float(q), dmin * float(m));
    }
}
inline void dequantize_q6_k(const std::uint8_t* in, float* y) {
    const std::uint8_t *ql = in, *qh = in + 128;
    const std::int8_t* scales = reinterpret_cast<const std::int8_t*>(in + 192);
    const float d = get_half(in + 208);
    for (int e = 0; e < 256; ++e) {
        const int half = e / 128, quarter = (e % 128) / 32, l = e % 32;
        const int lo = (ql[half * 64 + (quarter % 2) * 32 + l] >> (4 * (quarter / 2))) & 0x0f;
        const int hi = (qh[half * 32 + l] >> (2 * quarter)) & 3;
        y[e] = (d * float(scales[e / 16])) * float((lo | hi << 4) - 32);
    }
}
} // namespace detail

// The values of n elements of type t stored in `in` (type_bytes(t, n) bytes), into out[0, n).
inline void dequantize(ggml_type t, const std::uint8_t* in, std::span<float> out) {
    const std::uint64_t block = block_values(t), bytes = type_bytes(t, block);
    check(block != 0 && out.size() % block == 0, [&] {
        return "gguf: cannot read " + std::to_string(out.size()) + " values of type " + type_name(t) +
               (block ? " (not whole blocks of " + std::to_string(block) + ")" : "");
    });
    switch (t) {
    case ggml_type::f32:
        std::memcpy(out.data(), in, out.size() * 4);
        return;
    case ggml_type::f16:
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = detail::get_half(in + 2 * i);
        return;
    case ggml_type::bf16:
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = detail::bf16_to_float(in + 2 * i);
        return;
    case ggml_type::q8_0:
        dequantize_q8_0(in, out);
        return;
    case ggml_type::q4_0:
        dequantize_q4_0(in, out);
        return;
    default:
        break;
    }
    for (std::size_t b = 0; b < out.size(); b += block, in += bytes) {
        float* y = out.data() + b;
        switch (t) {
        case ggml_type::q4_1:
            detail::dequantize_q4_1(in, y);
            break;
        case ggml_type::q5_0:
            detail::dequantize_q5(in, y, false);
            break;
        case ggml_type::q5_1:
            detail::dequantize_q5(in, y, true);
            break;
        case ggml_type::iq4_nl:
            detail::dequantize_iq4_nl(in, y);
            break;
        case ggml_type::q2_k:
            detail::dequantize_q2_k(in, y);
            break;
        case ggml_type::q3_k:
            detail::dequantize_q3_k(in, y);
            break;
        case ggml_type::q4_k:
            detail::dequantize_q45_k(in, y, false);
            break;
        case ggml_type::q5_k:
            detail::dequantize_q45_k(in, y, true);
            break;
        case ggml_type::q6_k:
            detail::dequantize_q6_k(in, y);
            break;
        default:
            fail("gguf: no dequantisation for " + type_name(t));
        }
    }
}

} // namespace tl::gguf
