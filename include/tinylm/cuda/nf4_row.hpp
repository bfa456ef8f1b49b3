// tinylm/cuda/nf4_row.hpp: NF4 dequantisation (QLoRA's frozen base, ops/nf4.hpp's format) one element at a time, as
// a __host__ __device__ function shared by the kernel (gpu::nf4_dequantize, src/cuda/kernels.cu) and the CPU
// driver below, which test_cuda_math compares bit for bit with tl::dequantize.
//
// The element arithmetic needs only the two code books, which the kernel takes by value (nf4_tables); the host
// helpers that read them and tl::nf4_tensor from ops/nf4.hpp are left out of nvcc's translation units (src/cuda),
// where core/tensor.hpp does not compile warning-free.
#pragma once

#include <tinylm/cuda/row_math.hpp>

#include <cstdint>

namespace tl::gpu {

inline constexpr long long nf4_weights_per_scale = 64, nf4_scales_per_scale2 = 256; // ops/nf4.hpp's block sizes

// One NF4 weight's arrays (device or host pointers), as tl::nf4_tensor holds them.
struct nf4_weight {
    const std::uint8_t* codes = nullptr;   // (n + 1) / 2 bytes, element 2i in the high nibble of byte i
    const float* absmax = nullptr;         // one f32 scale per block of 64 (without double quantisation)
    const std::uint8_t* qabsmax = nullptr; // with it: one 8-bit code of (absmax - offset) per block ...
    const float* absmax2 = nullptr;        // ... and one f32 scale per 256 blocks
    float offset = 0;
    long long n = 0; // elements
};

// The two code books (tl::nf4_code, tl::nf4_scale_code) by value: a kernel takes them as an argument.
struct nf4_tables {
    float value[16];
    float scale[256];
};

// Block b's f32 scale, as nf4_tensor::block_scale: with double quantisation an f32 product, rounded, then an f32
// add (never fused: --fmad=false on the device, a volatile on the host as in ops/nf4.hpp).
TINYLM_HD inline float nf4_block_scale(const nf4_weight& q, long long b, const nf4_tables& t) {
    if (!q.qabsmax) return q.absmax[b];
#if defined(__CUDA_ARCH__)
    const float product = t.scale[q.qabsmax[b]] * q.absmax2[b / nf4_scales_per_scale2];
#else
    const volatile float product = t.scale[q.qabsmax[b]] * q.absmax2[b / nf4_scales_per_scale2];
#endif
    return product + q.offset;
}
// Element i: nf4[code] * its block's scale, the product dequantize_rows makes.
TINYLM_HD inline float nf4_element(const nf4_weight& q, long long i, const nf4_tables& t) {
    const std::uint8_t byte = q.codes[i / 2];
    const int code = i % 2 ? byte & 0x0F : byte >> 4;
    return t.value[code] * nf4_block_scale(q, i / nf4_weights_per_scale, t);
}

} // namespace tl::gpu

#if !defined(__CUDACC__)
#include <tinylm/ops/nf4.hpp>

namespace tl::gpu {

static_assert(nf4_weights_per_scale == nf4_block_size && nf4_scales_per_scale2 == nf4_scale_block_size);
inline nf4_tables make_nf4_tables() {
    nf4_tables t{};
    for (std::size_t i = 0; i < 16; ++i)
        t.value[i] = nf4_code[i];
    for (std::size_t i = 0; i < 256; ++i)
        t.scale[i] = nf4_scale_code[i];
    return t;
}
// The CPU driver: the whole weight, f32.
inline void nf4_dequantize_elements(float* out, const nf4_weight& q) {
    const nf4_tables t = make_nf4_tables();
    for (long long i = 0; i < q.n; ++i)
        out[i] = nf4_element(q, i, t);
}
// A host nf4_tensor's arrays as an nf4_weight.
inline nf4_weight nf4_weight_of(const nf4_tensor& q) {
    nf4_weight w;
    w.codes = q.codes.data(), w.n = q.numel(), w.offset = q.offset;
    if (q.double_quant)
        w.qabsmax = q.qabsmax.data(), w.absmax2 = q.absmax2.data();
    else
        w.absmax = q.absmax.data();
    return w;
}

} // namespace tl::gpu
#endif
