// tinylm/cuda/dropout_row.hpp: LoRA dropout (model/projection.hpp) as __host__ __device__ arithmetic, for the
// training steps' kernels (src/cuda/kernels.cu) and their CPU executor (cpu_ops.hpp).
//
// tl::decoder drops element i of a projection's (N, in) input, flat row-major, with the counter RNG of stream
// (seed, (calls * n_layers + layer) * 7 + projection) at position row0 * in + i (row0: the rows of the global
// batch before this process's), keeping it when its 53-bit uniform is >= p and scaling the kept ones by 1 / (1 - p).
// The same here: counter_hash (core/counter_hash.hpp) is counter_rng's value function, and "uniform >= p" is
// compared in integers, (value >> 11) >= ceil(p 2^53), which is the same test (value >> 11 is an integer and
// p 2^53 is exact in double), so the masks are the CPU's bit for bit.
//
// A step whose rows lay the tokens out otherwise than the CPU model that it reproduces (the device ranking step's
// padded or first-fit rows against sentence_encoder's texts end to end) gives each of its rows the row the CPU holds
// it in (token_positions, `width` = in elements per row): element i of row t then draws the CPU's counter position
// first + token_positions[t] in + (i - t in).
#pragma once

#include <tinylm/core/counter_hash.hpp>

#include <cmath>
#include <cstdint>

namespace tl::gpu {

// One projection's mask for one training forward.
struct dropout_mask {
    std::uint64_t seed = 0, stream = 0;
    std::uint64_t threshold = 0; // element kept when (its value >> 11) >= threshold
    std::uint64_t first = 0;     // the counter position of element 0 (row0 * in)
    float scale = 1.0f;          // 1 / (1 - p), applied to the kept elements
    // Optional (memory of the executor that draws the mask): each row's row in the CPU's layout; null: row t is t.
    const std::int64_t* token_positions = nullptr;
    std::uint64_t width = 0; // elements per row (the projection's in), with token_positions
};

// tl::projection's stream: (training forward count, layer, projection index in lora_target's order).
inline std::uint64_t lora_dropout_stream(std::uint64_t calls, std::uint64_t n_layers, std::uint64_t layer,
                                         std::uint64_t projection, std::uint64_t projections_per_layer) {
    return (calls * n_layers + layer) * projections_per_layer + projection;
}

// p in [0, 1); first: the counter position of the input's element 0.
inline dropout_mask make_dropout_mask(std::uint64_t seed, std::uint64_t stream, float p, std::uint64_t first) {
    dropout_mask m;
    m.seed = seed, m.stream = stream, m.first = first;
    m.threshold = std::uint64_t(std::ceil(double(p) * 0x1.0p53));
    m.scale = float(1.0 / (1.0 - double(p)));
    return m;
}

// The counter position of element i.
TINYLM_HD inline std::uint64_t dropout_position(const dropout_mask& m, long long i) {
    if (m.token_positions == nullptr) return m.first + std::uint64_t(i);
    const std::uint64_t row = std::uint64_t(i) / m.width;
    return m.first + std::uint64_t(m.token_positions[row]) * m.width + (std::uint64_t(i) - row * m.width);
}
TINYLM_HD inline bool dropout_keeps(const dropout_mask& m, long long i) {
    return (counter_hash(m.seed, m.stream, dropout_position(m, i)) >> 11) >= m.threshold;
}
// Forward: element i of dropout(x).
TINYLM_HD inline float dropout_value(const dropout_mask& m, float x, long long i) {
    return dropout_keeps(m, i) ? x * m.scale : 0.0f;
}
// Backward: dx_i + d dropout(x)_i / dx_i * g_i (the input gradient added where the element was kept).
TINYLM_HD inline float dropout_gradient_add(const dropout_mask& m, float dx, float g, long long i) {
    return dropout_keeps(m, i) ? dx + g * m.scale : dx;
}

// CPU drivers (the kernels spread the same elements over threads).
inline void dropout_rows(float* out, const float* x, long long n, const dropout_mask& m) {
    for (long long i = 0; i < n; ++i)
        out[i] = dropout_value(m, x[i], i);
}
inline void dropout_backward_rows(float* dx, const float* g, long long n, const dropout_mask& m) {
    for (long long i = 0; i < n; ++i)
        dx[i] = dropout_gradient_add(m, dx[i], g[i], i);
}

} // namespace tl::gpu
