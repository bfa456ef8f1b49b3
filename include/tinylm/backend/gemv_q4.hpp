// tinylm/backend/gemv_q4.hpp: how the decoding products (gemv_blocks.hpp) read a q4_0 copy of a weight
// (decoding_weights.hpp): a block of 32 weights is 16 bytes, weight i in the low nibble of byte i and weight i + 16
// in its high nibble (ggml's order), weight = the block's scale * (nibble - 8). That order makes a block's low and
// high nibbles two whole registers of 16 on AVX-512, with no shuffle.
#pragma once

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv_rows.hpp>

#include <cstdint>

#if defined(TINYLM_AVX512_CLONES) || defined(TINYLM_AVX2_CLONES)
#include <immintrin.h>
#endif

namespace tl::detail {

struct q4_0_blocks {
    using code = std::uint8_t;
    static constexpr index_t block_bytes = q4_block_bytes;
    static constexpr int avx2_offset = -8; // widen_avx2 gives the nibbles: the kernel takes 8 sum a off a block once

    // Weight p of a row, unscaled: its code minus 8 (p from the row's first block).
    static float weight(const code* row, index_t p) {
        const index_t in_block = p % q8_block;
        const std::uint8_t byte = row[p / q8_block * q4_block_bytes + in_block % q4_block_bytes];
        return float(int(in_block < q4_block_bytes ? byte & 0x0f : byte >> 4) - 8);
    }

    // a . (a whole block's unscaled weights), in the generic loop's order.
    static float dot(const float* a, const code* block) {
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (index_t p = 0; p < q4_block_bytes; ++p)
            s += a[p] * float(int(block[p] & 0x0f) - 8) + a[p + 16] * float(int(block[p] >> 4) - 8);
        return s;
    }

#ifdef TINYLM_AVX512_CLONES
    // Weights 16 * half to 16 * half + 15 of a block as floats: the block's 16 bytes widened to 16 lanes of 32 bits
    // (vpmovzxbd; the kernel's two calls share it), shifted by 4 for the high nibbles, and turned into weights by a
    // permute through a table of the 16 values q - 8 (vpermps reads an index's low 4 bits).
    template <int half>
    TINYLM_TARGET_AVX512 static __m512 widen_avx512(const code* block) {
        // The zero-masking forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
        const __mmask16 all = 0xffff;
        const __m512 values = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
        __m512i bytes = _mm512_maskz_cvtepu8_epi32(all, _mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
        if constexpr (half == 1) bytes = _mm512_maskz_srli_epi32(all, bytes, 4);
        return _mm512_maskz_permutexvar_ps(all, bytes, values);
    }
#endif
#ifdef TINYLM_AVX2_CLONES
    // Weights 8 * quarter to 8 * quarter + 7 of a block plus 8 (avx2_offset), as floats: 8 of its bytes zero-extended
    // straight from memory (vpmovzxbd: the shuffles that splitting the nibbles of a 16-byte register and widening them
    // took bounded the loop, 0.8x q8_0's tokens/s), their low nibbles (quarters 0, 1) or high ones (2, 3). The 8 comes
    // off once a block for all rows (gemv_blocks_rows_avx2): 4 subtractions fewer a block and row.
    template <int quarter>
    TINYLM_TARGET_AVX2 static __m256 widen_avx2(const code* block) {
        const __m256i bytes =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 8 * (quarter % 2))));
        const __m256i nibbles =
            quarter < 2 ? _mm256_and_si256(bytes, _mm256_set1_epi32(0x0f)) : _mm256_srli_epi32(bytes, 4);
        return _mm256_cvtepi32_ps(nibbles);
    }
#endif
};

} // namespace tl::detail
