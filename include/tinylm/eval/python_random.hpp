// tinylm/eval/python_random.hpp: Python's random.Random (MT19937) seeded with an integer, with the same
// getrandbits, _randbelow and sample as CPython 3.11, so that few-shot examples drawn with a seed are the
// ones lm-evaluation-harness draws with that seed (its samplers call random.Random(seed).sample(docs, k)).
//
//   tl::eval::python_random rnd(1234);
//   std::vector<std::size_t> picked = rnd.sample_indices(n_docs, 2); // == random.Random(1234).sample(range(n), 2)
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tl::eval {

class python_random {
public:
    // random.Random(seed): init_by_array over the 32-bit words of |seed|, least significant first.
    explicit python_random(std::uint64_t seed) {
        std::vector<std::uint32_t> key{std::uint32_t(seed)};
        if (seed >> 32) key.push_back(std::uint32_t(seed >> 32));
        init_by_array(key);
    }

    std::uint32_t genrand_uint32() {
        if (index_ >= n) twist();
        std::uint32_t y = state_[index_++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        return y;
    }

    // random.getrandbits(k) for 1 <= k <= 64: 32-bit words, least significant first, the last one shifted.
    std::uint64_t getrandbits(int k) {
        if (k <= 32) return genrand_uint32() >> (32 - k);
        const std::uint64_t low = genrand_uint32();
        const std::uint64_t high = genrand_uint32() >> (64 - k);
        return low | (high << 32);
    }

    // random._randbelow(n): rejection sampling over bit_length(n) bits.
    std::uint64_t randbelow(std::uint64_t n) {
        if (n == 0) return 0;
        int k = 0;
        for (std::uint64_t v = n; v; v >>= 1)
            ++k;
        std::uint64_t r = getrandbits(k);
        while (r >= n)
            r = getrandbits(k);
        return r;
    }

    // random.sample(range(n), k): a pool when a list is smaller than a set would be, else a set of picks.
    std::vector<std::size_t> sample_indices(std::size_t n, std::size_t k) {
        std::vector<std::size_t> result(k);
        std::size_t setsize = 21;
        if (k > 5) setsize += std::size_t(std::pow(4.0, std::ceil(std::log(double(k) * 3) / std::log(4.0))));
        if (n <= setsize) {
            std::vector<std::size_t> pool(n);
            for (std::size_t i = 0; i < n; ++i)
                pool[i] = i;
            for (std::size_t i = 0; i < k; ++i) {
                const std::size_t j = std::size_t(randbelow(n - i));
                result[i] = pool[j];
                pool[j] = pool[n - i - 1];
            }
        } else {
            std::vector<bool> selected(n, false);
            for (std::size_t i = 0; i < k; ++i) {
                std::size_t j = std::size_t(randbelow(n));
                while (selected[j])
                    j = std::size_t(randbelow(n));
                selected[j] = true;
                result[i] = j;
            }
        }
        return result;
    }

private:
    static constexpr int n = 624, m = 397;

    void init_genrand(std::uint32_t s) {
        state_[0] = s;
        for (int i = 1; i < n; ++i)
            state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + std::uint32_t(i);
        index_ = n;
    }
    void init_by_array(const std::vector<std::uint32_t>& key) {
        init_genrand(19650218u);
        int i = 1;
        std::size_t j = 0;
        for (std::size_t k = std::max<std::size_t>(n, key.size()); k; --k) {
            state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1664525u)) + key[j] + std::uint32_t(j);
            ++i;
            ++j;
            if (i >= n) {
                state_[0] = state_[n - 1];
                i = 1;
            }
            if (j >= key.size()) j = 0;
        }
        for (int k = n - 1; k; --k) {
            state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1566083941u)) - std::uint32_t(i);
            ++i;
            if (i >= n) {
                state_[0] = state_[n - 1];
                i = 1;
            }
        }
        state_[0] = 0x80000000u;
    }
    void twist() {
        for (int i = 0; i < n; ++i) {
            const std::uint32_t y = (state_[i] & 0x80000000u) | (state_[(i + 1) % n] & 0x7fffffffu);
            state_[i] = state_[(i + m) % n] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        index_ = 0;
    }

    std::array<std::uint32_t, n> state_{};
    int index_ = n;
};

} // namespace tl::eval
