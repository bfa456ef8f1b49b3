// tinylm/backend/gemv_q8.hpp: how the decoding products (gemv_blocks.hpp) read a q8_0 copy of a weight
// (decoding_weights.hpp): a block of 32 weights is 32 signed codes, weight = the block's scale * code.
#pragma once

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv_rows.hpp>

#include <cstdint>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

namespace tl::detail {

struct q8_0_blocks {
    using code = std::int8_t;
    static constexpr index_t block_bytes = q8_block;
    static constexpr int avx2_offset = 0;

    // Weight p of a row, unscaled (p from the row's first block).
    static float weight(const code* row, index_t p) { return float(row[p]); }

    // a . (a whole block's unscaled weights), in the generic loop's order.
    static float dot(const float* a, const code* block) {
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (index_t p = 0; p < q8_block; ++p)
            s += a[p] * float(block[p]);
        return s;
    }

#ifdef TINYLM_AVX512_CLONES
    // Weights 16 * half to 16 * half + 15 of a block as floats: sign extension (vpmovsxbd), then a conversion.
    template <int half>
    TINYLM_TARGET_AVX512 static __m512 widen_avx512(const code* block) {
        // The zero-masking forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
        const __mmask16 all = 0xffff;
        const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * half));
        return _mm512_maskz_cvtepi32_ps(all, _mm512_maskz_cvtepi8_epi32(all, codes));
    }
#endif
#ifdef TINYLM_AVX2_CLONES
    // Weights 8 * quarter to 8 * quarter + 7 of a block as floats, sign-extended straight from memory.
    template <int quarter>
    TINYLM_TARGET_AVX2 static __m256 widen_avx2(const code* block) {
        return _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 8 * quarter))));
    }
#endif
};

} // namespace tl::detail
