// tinylm/core/rng.hpp: a counter-based deterministic random number generator.
//
// Value i of stream (seed, stream) is a pure function hash(seed, stream, i): no hidden state beyond the
// counter, so any element can be regenerated independently (parallel init, resume after a checkpoint gives
// the same numbers). The mixer is SplitMix64's finaliser applied twice over the packed triple; it passes
// the statistical needs of initialisation, dropout and sampling (it is not a cryptographic generator). mix64 and
// the value function are in core/counter_hash.hpp, host and device code alike.
#pragma once

#include <tinylm/core/counter_hash.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>

namespace tl {

class counter_rng {
public:
    constexpr counter_rng(std::uint64_t seed = 0, std::uint64_t stream = 0) : seed_(seed), stream_(stream) {}

    // The value at an explicit position; does not move the counter.
    constexpr std::uint64_t at(std::uint64_t i) const { return counter_hash(seed_, stream_, i); }
    constexpr std::uint64_t next_u64() { return at(counter_++); }
    // Uniform in [0, 1) with 53 random bits.
    constexpr double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
    // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
    constexpr std::uint64_t below(std::uint64_t n) {
        return std::uint64_t((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
    }
    // Standard normal by Box-Muller; uses two counter values per sample so the sequence stays positional.
    double normal() {
        const double u1 = (double(next_u64() >> 11) + 1.0) * 0x1.0p-53; // (0, 1]
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    }

    constexpr std::uint64_t counter() const { return counter_; }
    constexpr void set_counter(std::uint64_t c) { counter_ = c; }
    constexpr std::uint64_t seed() const { return seed_; }
    constexpr std::uint64_t stream() const { return stream_; }

private:
    std::uint64_t seed_;
    std::uint64_t stream_;
    std::uint64_t counter_ = 0;
};

} // namespace tl
