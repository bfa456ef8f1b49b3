// tinylm/core/simd.hpp: what the elementwise and row kernels share to run at vector speed.
//   fast_exp(x)                 float exp that vectorises inside `omp simd` (double keeps std::exp)
//   parallel_ranges(n, g, f)    f(begin, end) over [0, n) in blocks of g, spread over the OpenMP threads, and
//                               compiled a second time for AVX2 + FMA, chosen at run time; one block runs on
//                               the calling thread
//   min_parallel_work           below this much work a loop runs on the calling thread (its `if` clause)
// The default build targets baseline x86-64 (SSE2) so that its binaries run anywhere; on GCC the hot loops
// get an AVX2 + FMA copy (a `target` function that inlines the loop body: `flatten`) used when the CPU has
// them. allow_avx2_clones = false runs the baseline copy (tests, and benchmarks of the difference).
// The attention tiles, compute-bound, get an AVX-512 copy as well (16 floats a register, 32 registers:
// docs/performance.md "Current figures: an AVX-512 machine"); allow_avx512_clones = false keeps them at AVX2. The
// elementwise loops of parallel_ranges stay at AVX2: they are bound by memory, and a third copy of every one would
// cost compile time for nothing.
#pragma once

#include <tinylm/core/tensor.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tl::detail {

// exp(x), vectorisable inside omp simd: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to
// r^7 (truncation error < 6e-9, below float's rounding), 2^n written into the exponent bits. Double keeps
// std::exp, so that the gradient checks see exact arithmetic.
template <class T>
inline T fast_exp(T x) {
    if constexpr (std::is_same_v<T, float>) {
        // n = round(x / ln2) by the 1.5 * 2^23 trick. No float comparison: with GCC's default -ftrapping-math
        // it would be a branch, and the loop would not vectorise. Accurate to float rounding on -87 < x < 88,
        // 0 below about -87.7 (down to x ~ -1e12), 2^127 * exp(r) (finite, huge) above 88.
        const float nf = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
        const float r = (x - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;
        float p = 1.f / 5040.f;
        p = p * r + 1.f / 720.f;
        p = p * r + 1.f / 120.f;
        p = p * r + 1.f / 24.f;
        p = p * r + 1.f / 6.f;
        p = p * r + 0.5f;
        p = p * r + 1.f;
        p = p * r + 1.f;
        std::int32_t n = std::int32_t(nf);
        n = n > 127 ? 127 : n;
        const std::int32_t two_n = n < -126 ? 0 : (n + 127) << 23; // 2^n, or 0 where it would be subnormal
        return p * std::bit_cast<float>(two_n);
    } else {
        return std::exp(x);
    }
}

// Loops with less work than this (elements written, or multiply-adds) run on the calling thread: their
// `omp parallel` carries `if (work >= min_parallel_work)`. Decoding one token (m = 1) is mostly such loops
// (norms, residuals, rope, SwiGLU of one 512-wide row: a microsecond each) between the matrix-vector products,
// and every parallel region costs a wake-up of the other threads: tens of microseconds when they sleep
// (OMP_WAIT_POLICY=PASSIVE, or libgomp's default once its spin ends, or a busy machine), more than the loop.
// Serial or parallel, every element is computed the same way: the results are identical.
// Training sizes (thousands of rows) are far above it.
inline constexpr index_t min_parallel_work = index_t(1) << 15;

inline bool allow_avx2_clones = true;
inline bool allow_avx512_clones = true;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__)
#define TINYLM_AVX2_CLONES 1
inline bool cpu_has_avx2_fma() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
template <class F>
__attribute__((target("avx2,fma"), flatten)) void call_avx2(F& f, index_t begin, index_t end) {
    f(begin, end);
}
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__)
#define TINYLM_AVX512_CLONES 1
// The subsets every AVX-512 CPU since Skylake-SP has (Intel, and AMD from Zen 4). __builtin_cpu_supports also
// asks whether the OS saves the 512-bit registers.
inline bool cpu_has_avx512() {
    static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                            __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
#endif

// True where the attention kernels run their AVX-512 copies.
inline bool avx512_clones_active() {
#ifdef TINYLM_AVX512_CLONES
    return allow_avx2_clones && allow_avx512_clones && cpu_has_avx512();
#else
    return false;
#endif
}

// True where parallel_ranges (and the attention kernels) run their AVX2 + FMA copies.
inline bool avx2_clones_active() {
#ifdef TINYLM_AVX2_CLONES
    return allow_avx2_clones && cpu_has_avx2_fma();
#else
    return false;
#endif
}

// body(begin, end) for consecutive blocks of `grain` indices covering [0, n), statically spread over the
// OpenMP threads. The body must not open parallel regions itself (they would keep the baseline target).
// A single block runs on the calling thread, without opening a parallel region.
template <class F>
void parallel_ranges(index_t n, index_t grain, F&& body) {
    const index_t blocks = (n + grain - 1) / grain;
    [[maybe_unused]] const bool avx2 = avx2_clones_active();
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (index_t b = 0; b < blocks; ++b) {
        const index_t begin = b * grain, end = std::min(n, begin + grain);
#ifdef TINYLM_AVX2_CLONES
        if (avx2) {
            call_avx2(body, begin, end);
            continue;
        }
#endif
        body(begin, end);
    }
}

} // namespace tl::detail
