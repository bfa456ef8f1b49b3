// tinylm/core/crc32c.hpp: CRC-32C (Castagnoli), the checksum of TensorBoard's records (train/tensorboard.hpp) and
// of a training checkpoint's tensor files (train/checkpoint_checksums.hpp). Slice-by-8 tables, about 1-2 GB/s per
// core in portable code; a CRC detects every error burst up to 32 bits long, so any flipped byte.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tl {

// ---- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), slice-by-8 -------------------------------
namespace crc32c_detail {

inline constexpr std::uint32_t polynomial = 0x82F63B78u;

constexpr std::array<std::array<std::uint32_t, 256>, 8> make_tables() {
    std::array<std::array<std::uint32_t, 256>, 8> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int bit = 0; bit < 8; ++bit)
            c = (c & 1u) ? (c >> 1) ^ polynomial : c >> 1;
        t[0][i] = c;
    }
    for (std::size_t k = 1; k < 8; ++k)
        for (std::size_t i = 0; i < 256; ++i)
            t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
    return t;
}

inline constexpr auto tables = make_tables();

inline std::uint32_t load_le32(const unsigned char* p) {
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

} // namespace crc32c_detail

// Continues a CRC-32C: crc32c_extend(crc32c(a), b) == crc32c(a + b); crc32c_extend(0, x) == crc32c(x).
inline std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t n) {
    const auto& t = crc32c_detail::tables;
    const auto* p = static_cast<const unsigned char*>(data);
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        const std::uint32_t lo = crc32c_detail::load_le32(p) ^ crc;
        const std::uint32_t hi = crc32c_detail::load_le32(p + 4);
        crc = t[7][lo & 0xffu] ^ t[6][(lo >> 8) & 0xffu] ^ t[5][(lo >> 16) & 0xffu] ^ t[4][lo >> 24] ^
              t[3][hi & 0xffu] ^ t[2][(hi >> 8) & 0xffu] ^ t[1][(hi >> 16) & 0xffu] ^ t[0][hi >> 24];
    }
    for (; n > 0; --n, ++p)
        crc = t[0][(crc ^ *p) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

inline std::uint32_t crc32c(const void* data, std::size_t n) { return crc32c_extend(0, data, n); }
inline std::uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

} // namespace tl
