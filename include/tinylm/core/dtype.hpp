// tinylm/core/dtype.hpp: element types. f32 is the compute type; bf16 is a storage type
// (1 sign, 8 exponent, 7 mantissa bits: the top half of an f32), converted with round-to-nearest-even.
#pragma once

#include <bit>
#include <cstdint>
#include <string_view>

namespace tl {

enum class dtype : std::uint8_t { f32, f64, bf16, i32, i64 };

constexpr std::string_view name_of(dtype t) {
    switch (t) {
    case dtype::f32:
        return "F32";
    case dtype::f64:
        return "F64";
    case dtype::bf16:
        return "BF16";
    case dtype::i32:
        return "I32";
    case dtype::i64:
        return "I64";
    }
    return "?";
}

constexpr int size_of(dtype t) {
    switch (t) {
    case dtype::f64:
    case dtype::i64:
        return 8;
    case dtype::bf16:
        return 2;
    default:
        return 4;
    }
}

struct bf16 {
    std::uint16_t bits = 0;

    constexpr bf16() = default;
    constexpr explicit bf16(float f) : bits(round_to_bf16(f)) {}
    constexpr explicit operator float() const { return std::bit_cast<float>(std::uint32_t(bits) << 16); }

    static constexpr bf16 from_bits(std::uint16_t b) {
        bf16 r;
        r.bits = b;
        return r;
    }

    // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then truncate.
    // NaN stays NaN (quiet bit forced so that truncation cannot turn it into infinity).
    static constexpr std::uint16_t round_to_bf16(float f) {
        const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
        if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) return std::uint16_t((u >> 16) | 0x0040u);
        const std::uint32_t lsb = (u >> 16) & 1u;
        return std::uint16_t((u + 0x7fffu + lsb) >> 16);
    }
};

template <class T>
constexpr dtype dtype_of();
template <>
constexpr dtype dtype_of<float>() {
    return dtype::f32;
}
template <>
constexpr dtype dtype_of<double>() {
    return dtype::f64;
}
template <>
constexpr dtype dtype_of<bf16>() {
    return dtype::bf16;
}
template <>
constexpr dtype dtype_of<std::int32_t>() {
    return dtype::i32;
}
template <>
constexpr dtype dtype_of<std::int64_t>() {
    return dtype::i64;
}

} // namespace tl
