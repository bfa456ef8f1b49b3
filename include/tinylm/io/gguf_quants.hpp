// tinylm/io/gguf_quants.hpp: the element encodings of a GGUF file (io/gguf.hpp): IEEE half precision and ggml's
// Q8_0 and Q4_0 blocks, each written to give the same bytes as ggml's reference quantiser (ggml-quants.c,
// quantize_row_q8_0_ref / quantize_row_q4_0_ref) and the `gguf` Python package's gguf.quants.quantize.
//
//   Q8_0  32 weights -> 34 bytes: d = max|x| / 127 as f16, then 32 int8 q = round(x / d) (half away from zero)
//   Q4_0  32 weights -> 18 bytes: m = the x of largest |x| (the first on ties), d = m / -8 as f16, then
//         q = min(15, trunc(x / d + 8.5)) packed two per byte: x[j] in the low nibble, x[j + 16] in the high one
//
// Both compute x / d as x * (1 / d) in float, as the reference does; the product is kept out of a fused
// multiply-add (which would round once instead of twice and change a nibble now and then).
#pragma once

#include <tinylm/core/error.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace tl::gguf {

inline constexpr std::size_t quant_block = 32; // weights per Q8_0 / Q4_0 block
inline constexpr std::size_t q8_0_bytes = 34;  // bytes per Q8_0 block
inline constexpr std::size_t q4_0_bytes = 18;  // bytes per Q4_0 block

// f32 to IEEE binary16 with round-to-nearest-even (numpy's astype(float16)): overflow gives infinity, NaN stays
// a (quiet) NaN, values below the smallest subnormal round to signed zero.
inline std::uint16_t float_to_half(float f) {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu)); // NaN
    if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u); // rounds to >= 65520: infinity
    if (abs >= 0x38800000u) {                                                  // normal half
        const std::uint32_t mant_odd = (abs >> 13) & 1u;
        const std::uint32_t rounded = abs + 0xfffu + mant_odd; // RNE on the 13 dropped bits
        return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
    }
    // Subnormal half (or zero): value = m * 2^-24 with m = round(|f| * 2^24).
    if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign); // below half the smallest subnormal
    const std::uint32_t exp = abs >> 23;                            // 102 .. 112
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;       // 24 significant bits
    const std::uint32_t shift = 126u - exp;                         // 14 .. 24
    std::uint32_t m = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (m & 1u))) ++m;
    return static_cast<std::uint16_t>(sign | m);
}

// IEEE binary16 to f32, exactly.
inline float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        const float v = std::ldexp(static_cast<float>(mant), -24);
        return sign ? -v : v;
    }
    if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
    return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

namespace detail {
// a * b rounded to float on its own: a volatile store keeps the compiler from fusing it into a later add.
inline float separate_product(float a, float b) {
    volatile float p = a * b;
    return p;
}
inline void put_half(std::uint8_t* out, float d) {
    const std::uint16_t h = float_to_half(d);
    out[0] = static_cast<std::uint8_t>(h & 0xffu);
    out[1] = static_cast<std::uint8_t>(h >> 8);
}
inline float get_half(const std::uint8_t* in) {
    return half_to_float(static_cast<std::uint16_t>(in[0] | (static_cast<std::uint16_t>(in[1]) << 8)));
}
inline void check_blocks(std::size_t n, const char* what) {
    check(n % quant_block == 0,
          [&] { return std::string("gguf: ") + what + " needs a multiple of 32 values, got " + std::to_string(n); });
}
} // namespace detail

// Quantises x (a multiple of 32 values) into x.size() / 32 * 34 bytes.
inline void quantize_q8_0(std::span<const float> x, std::uint8_t* out) {
    detail::check_blocks(x.size(), "Q8_0");
    for (std::size_t b = 0; b < x.size(); b += quant_block, out += q8_0_bytes) {
        float amax = 0;
        for (std::size_t j = 0; j < quant_block; ++j)
            amax = std::max(amax, std::fabs(x[b + j]));
        const float d = amax / 127.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        detail::put_half(out, d);
        for (std::size_t j = 0; j < quant_block; ++j)
            out[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::round(x[b + j] * id)));
    }
}

// Quantises x (a multiple of 32 values) into x.size() / 32 * 18 bytes.
inline void quantize_q4_0(std::span<const float> x, std::uint8_t* out) {
    detail::check_blocks(x.size(), "Q4_0");
    for (std::size_t b = 0; b < x.size(); b += quant_block, out += q4_0_bytes) {
        float amax = 0, max = 0;
        for (std::size_t j = 0; j < quant_block; ++j)
            if (std::fabs(x[b + j]) > amax) amax = std::fabs(x[b + j]), max = x[b + j];
        const float d = max / -8.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        detail::put_half(out, d);
        auto nibble = [&](float v) {
            const float t = std::trunc(detail::separate_product(v, id) + 8.5f);
            return static_cast<std::uint8_t>(std::min(15.0f, t));
        };
        for (std::size_t j = 0; j < quant_block / 2; ++j)
            out[2 + j] = static_cast<std::uint8_t>(nibble(x[b + j]) | (nibble(x[b + j + quant_block / 2]) << 4));
    }
}

// The values blocks stand for (d * q), as ggml dequantises them; `out` holds a multiple of 32 values.
inline void dequantize_q8_0(const std::uint8_t* in, std::span<float> out) {
    detail::check_blocks(out.size(), "Q8_0");
    for (std::size_t b = 0; b < out.size(); b += quant_block, in += q8_0_bytes) {
        const float d = detail::get_half(in);
        for (std::size_t j = 0; j < quant_block; ++j)
            out[b + j] = d * static_cast<float>(static_cast<std::int8_t>(in[2 + j]));
    }
}
inline void dequantize_q4_0(const std::uint8_t* in, std::span<float> out) {
    detail::check_blocks(out.size(), "Q4_0");
    for (std::size_t b = 0; b < out.size(); b += quant_block, in += q4_0_bytes) {
        const float d = detail::get_half(in);
        for (std::size_t j = 0; j < quant_block / 2; ++j) {
            out[b + j] = d * static_cast<float>((in[2 + j] & 0x0f) - 8);
            out[b + j + quant_block / 2] = d * static_cast<float>((in[2 + j] >> 4) - 8);
        }
    }
}

} // namespace tl::gguf
