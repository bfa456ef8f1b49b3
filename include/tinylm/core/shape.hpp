// tinylm/core/shape.hpp: a small fixed-capacity shape (up to 4 dimensions), row-major.
#pragma once

#include <tinylm/core/error.hpp>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace tl {

using index_t = std::int64_t;

struct shape {
    static constexpr int max_rank = 4;
    std::array<index_t, max_rank> dims{};
    int rank = 0;

    constexpr shape() = default;
    constexpr shape(std::initializer_list<index_t> d) {
        if (d.size() > max_rank) throw error("tinylm: shape has more than 4 dimensions");
        for (index_t v : d)
            dims[rank++] = v;
    }

    constexpr index_t operator[](int i) const { return dims[i]; }
    // Checked: [2^32, 2^32] from a hostile file must not wrap into a small, plausible element count.
    constexpr index_t numel() const {
        index_t n = 1;
        for (int i = 0; i < rank; ++i)
            if (__builtin_mul_overflow(n, dims[i], &n))
                throw error("tinylm: shape " + str() + " has over 2^63 elements");
        return n;
    }
    // Product of all dimensions but the last: the number of rows of a row-major matrix view.
    constexpr index_t rows() const { return rank == 0 ? 1 : numel() / dims[rank - 1]; }
    constexpr index_t cols() const { return rank == 0 ? 1 : dims[rank - 1]; }

    // Dimensions past the rank are always zero, so whole arrays compare. (A loop to the rank made GCC 12
    // warn that an inlined temporary shape "may be used uninitialized".)
    friend constexpr bool operator==(const shape& a, const shape& b) { return a.rank == b.rank && a.dims == b.dims; }

    std::string str() const {
        std::string s = "[";
        for (int i = 0; i < rank; ++i)
            s += (i ? ", " : "") + std::to_string(dims[i]);
        return s + "]";
    }
};

} // namespace tl
