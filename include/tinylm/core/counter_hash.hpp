// tinylm/core/counter_hash.hpp: the pure function behind tl::counter_rng (core/rng.hpp), value i of stream
// (seed, stream), as a __host__ __device__ function: the CUDA kernels draw the same numbers as the CPU (LoRA
// dropout's masks, cuda/dropout_row.hpp) without a CUDA header here and without any state.
#pragma once

#include <tinylm/core/host_device.hpp>

#include <cstdint>

namespace tl {

// SplitMix64's finaliser.
TINYLM_HD constexpr std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Value i of stream (seed, stream): counter_rng(seed, stream).at(i).
TINYLM_HD constexpr std::uint64_t counter_hash(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
    return mix64(mix64(seed ^ mix64(stream + 0x9e3779b97f4a7c15ull)) + i * 0x9e3779b97f4a7c15ull);
}

} // namespace tl
