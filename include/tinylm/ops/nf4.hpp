// tinylm/ops/nf4.hpp: 4-bit NormalFloat (NF4) block quantisation of frozen weights, the base of QLoRA
// (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", appendix E), in the layout of
// bitsandbytes `quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)`.
//
// Format of an nf4_tensor holding a weight W (out, in):
//   blocks   W is flattened row-major and cut into blocks of 64 elements; out * in need not be a multiple of 64,
//            the last block is then shorter and blocks may straddle rows (as in bitsandbytes).
//   scales   absmax_b = max |w| over block b (f32).
//   codes    each w gets the index of the nearest of the 16 NF4 values to w * (1 / absmax_b) (in f32; a short
//            last block divides, w / absmax_b), ties to the lower index: torch.bucketize against the f32
//            midpoints, exactly as bitsandbytes' quantize_4bit.
//   packing  two codes per byte, element 2i in the HIGH nibble and element 2i + 1 in the LOW nibble of byte i
//            (bitsandbytes: packed = q[0::2] << 4 | q[1::2]). An odd element count pads the last low nibble with
//            7, the code of 0.0 (what bitsandbytes' zero padding quantises to).
//   double quantisation (optional): offset = mean of the absmax_b (f32); c_b = absmax_b - offset is quantised in
//            blocks of 256 scales to 8 bits with bitsandbytes' signed dynamic code (create_dynamic_map()), one
//            f32 absmax2 per 256 scales, by the same nearest-code rule (bitsandbytes' "default" blockwise
//            kernel; its native CPU kernel rounds a few values to a neighbouring code, see
//            docs/quantization.md). Dequantised: absmax_b = dynamic[q_b] * absmax2[b / 256] + offset.
//   values   w ~= nf4[code] * absmax_b, one f32 multiply (bitsandbytes' dequantize_4bit).
// Storage: 0.5 byte per weight for the codes, plus 4 / 64 (f32 scales) or 1 / 64 + 4 / (64 * 256) (double
// quantisation) per weight: 0.5625 or 0.5159 bytes per parameter (bytes_per_param below).
//
// API:
//   nf4_tensor quantize_nf4(cview<float> w, bool double_quant = true, std::optional<float> offset = {});
//   void dequantize(const nf4_tensor& q, tensor_view<float> w);                       // the whole (out, in)
//   template <class T> void dequantize_rows(const nf4_tensor& q, index_t row0, tensor_view<T> rows);
//   void quantize_scales(std::span<const float> absmax, float offset, std::span<std::uint8_t> codes,
//                        std::span<float> absmax2);                                   // double quantisation
//   std::size_t storage_bytes(const nf4_tensor&); double bytes_per_param(const nf4_tensor&);
#pragma once

#include <tinylm/core/tensor.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tl {

inline constexpr index_t nf4_block_size = 64;        // weights per absmax scale
inline constexpr index_t nf4_scale_block_size = 256; // scales per second-level scale (double quantisation)

// The 16 NF4 values: QLoRA appendix E, identical to bitsandbytes get_4bit_type("nf4") (f32).
inline constexpr std::array<float, 16> nf4_code{-1.0f,
                                                -0.6961928009986877f,
                                                -0.5250730514526367f,
                                                -0.39491748809814453f,
                                                -0.28444138169288635f,
                                                -0.18477343022823334f,
                                                -0.09105003625154495f,
                                                0.0f,
                                                0.07958029955625534f,
                                                0.16093020141124725f,
                                                0.24611230194568634f,
                                                0.33791524171829224f,
                                                0.44070982933044434f,
                                                0.5626170039176941f,
                                                0.7229568362236023f,
                                                1.0f};

// bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted, as f32: the 8-bit
// code of the double-quantised scales. Index 127 is 0.0, index 255 is 1.0; the most negative is -0.99296874.
inline constexpr std::array<float, 256> nf4_scale_code{
    -0.992968738f,    -0.978906274f,    -0.96484375f,     -0.950781226f,
    -0.936718762f,    -0.922656238f,    -0.908593774f,    -0.89453125f,
    -0.880468726f,    -0.866406262f,    -0.852343738f,    -0.838281274f,
    -0.82421875f,     -0.810156226f,    -0.796093762f,    -0.782031238f,
    -0.767968774f,    -0.75390625f,     -0.739843726f,    -0.725781262f,
    -0.711718798f,    -0.697656274f,    -0.68359375f,     -0.669531226f,
    -0.655468762f,    -0.641406298f,    -0.627343774f,    -0.61328125f,
    -0.599218726f,    -0.585156262f,    -0.571093798f,    -0.557031274f,
    -0.54296875f,     -0.528906226f,    -0.514843702f,    -0.500781238f,
    -0.486718714f,    -0.47265625f,     -0.458593726f,    -0.444531262f,
    -0.430468738f,    -0.416406244f,    -0.40234375f,     -0.388281226f,
    -0.374218762f,    -0.360156238f,    -0.346093744f,    -0.33203125f,
    -0.317968726f,    -0.303906262f,    -0.289843738f,    -0.275781274f,
    -0.26171875f,     -0.247656241f,    -0.233593747f,    -0.219531253f,
    -0.205468744f,    -0.19140625f,     -0.177343756f,    -0.163281247f,
    -0.149218753f,    -0.135156244f,    -0.12109375f,     -0.107031256f,
    -0.0985937491f,   -0.0957812592f,   -0.0929687545f,   -0.0901562497f,
    -0.0873437524f,   -0.0845312476f,   -0.0817187577f,   -0.078906253f,
    -0.0760937482f,   -0.0732812509f,   -0.0704687461f,   -0.0676562563f,
    -0.0648437515f,   -0.0620312504f,   -0.0592187531f,   -0.0564062484f,
    -0.053593751f,    -0.05078125f,     -0.047968749f,    -0.0451562516f,
    -0.0423437469f,   -0.0395312496f,   -0.0367187522f,   -0.0339062512f,
    -0.0310937501f,   -0.028281251f,    -0.0254687499f,   -0.0226562507f,
    -0.0198437516f,   -0.0170312505f,   -0.0142187504f,   -0.0114062503f,
    -0.00971874967f,  -0.00915624946f,  -0.00859375019f,  -0.00803124998f,
    -0.00746874977f,  -0.00690625003f,  -0.00634374982f,  -0.00578125007f,
    -0.00521875033f,  -0.00465624966f,  -0.00409374991f,  -0.00353124971f,
    -0.00296874996f,  -0.00240624999f,  -0.00184375001f,  -0.00128124992f,
    -0.000943750085f, -0.000831249985f, -0.00071875006f,  -0.000606250076f,
    -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f,
    -7.7499999e-06f,  -3.25000019e-06f, -5.50000038e-07f, 0.0f,
    5.50000038e-07f,  3.25000019e-06f,  7.7499999e-06f,   2.12499981e-05f,
    4.37499984e-05f,  6.62500024e-05f,  8.87499991e-05f,  0.000156250011f,
    0.000268750038f,  0.000381250022f,  0.000493750034f,  0.000606250076f,
    0.00071875006f,   0.000831249985f,  0.000943750085f,  0.00128124992f,
    0.00184375001f,   0.00240624999f,   0.00296874996f,   0.00353124971f,
    0.00409374991f,   0.00465624966f,   0.00521875033f,   0.00578125007f,
    0.00634374982f,   0.00690625003f,   0.00746874977f,   0.00803124998f,
    0.00859375019f,   0.00915624946f,   0.00971874967f,   0.0114062503f,
    0.0142187504f,    0.0170312505f,    0.0198437516f,    0.0226562507f,
    0.0254687499f,    0.028281251f,     0.0310937501f,    0.0339062512f,
    0.0367187522f,    0.0395312496f,    0.0423437469f,    0.0451562516f,
    0.047968749f,     0.05078125f,      0.053593751f,     0.0564062484f,
    0.0592187531f,    0.0620312504f,    0.0648437515f,    0.0676562563f,
    0.0704687461f,    0.0732812509f,    0.0760937482f,    0.078906253f,
    0.0817187577f,    0.0845312476f,    0.0873437524f,    0.0901562497f,
    0.0929687545f,    0.0957812592f,    0.0985937491f,    0.107031256f,
    0.12109375f,      0.135156244f,     0.149218753f,     0.163281247f,
    0.177343756f,     0.19140625f,      0.205468744f,     0.219531253f,
    0.233593747f,     0.247656241f,     0.26171875f,      0.275781274f,
    0.289843738f,     0.303906262f,     0.317968726f,     0.33203125f,
    0.346093744f,     0.360156238f,     0.374218762f,     0.388281226f,
    0.40234375f,      0.416406244f,     0.430468738f,     0.444531262f,
    0.458593726f,     0.47265625f,      0.486718714f,     0.500781238f,
    0.514843702f,     0.528906226f,     0.54296875f,      0.557031274f,
    0.571093798f,     0.585156262f,     0.599218726f,     0.61328125f,
    0.627343774f,     0.641406298f,     0.655468762f,     0.669531226f,
    0.68359375f,      0.697656274f,     0.711718798f,     0.725781262f,
    0.739843726f,     0.75390625f,      0.767968774f,     0.782031238f,
    0.796093762f,     0.810156226f,     0.82421875f,      0.838281274f,
    0.852343738f,     0.866406262f,     0.880468726f,     0.89453125f,
    0.908593774f,     0.922656238f,     0.936718762f,     0.950781226f,
    0.96484375f,      0.978906274f,     0.992968738f,     1.0f,
};

namespace detail {

// Midpoints of a sorted code, computed in f32 as bitsandbytes does: (c[i] + c[i + 1]) / 2.
template <std::size_t N>
constexpr std::array<float, N - 1> code_midpoints(const std::array<float, N>& c) {
    std::array<float, N - 1> m{};
    for (std::size_t i = 0; i + 1 < N; ++i)
        m[i] = (c[i] + c[i + 1]) / 2.0f;
    return m;
}
inline constexpr auto nf4_bounds = code_midpoints(nf4_code);
inline constexpr auto scale_bounds = code_midpoints(nf4_scale_code);

// torch.bucketize(x, bounds, right=False): the number of bounds strictly below x, so a value on a midpoint
// takes the lower code.
template <std::size_t M>
inline int bucketize(float x, const std::array<float, M>& bounds) {
    return int(std::lower_bound(bounds.begin(), bounds.end(), x) - bounds.begin());
}

// dynamic[q] * absmax2 + offset as bitsandbytes computes it: an f32 product, rounded, then an f32 add. The
// volatile keeps -ffp-contract=fast (GCC's default in GNU mode, with -march=native) from fusing the two into
// an FMA, which would change the last bit. Once per 64 weights, so free.
inline float scale_from_code(std::uint8_t q, float absmax2, float offset) {
    const volatile float product = nf4_scale_code[q] * absmax2;
    return product + offset;
}

// bitsandbytes' default blockwise quantiser over x[0, n): per block of `block`, absmax = max |x|, scaled =
// clamp(x * (1 / max(absmax, 1e-38)), -1, 1) (a short last block: x / max(absmax, 1e-38)), index =
// bucketize(scaled, bounds). Calls store(i, index) and writes absmax[block index].
template <std::size_t M, class Store>
void quantize_blockwise(const float* x, index_t n, index_t block, const std::array<float, M>& bounds, float* absmax,
                        Store&& store) {
    for (index_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
        const index_t len = std::min(block, n - b0);
        float am = 0;
        for (index_t i = 0; i < len; ++i)
            am = std::max(am, std::abs(x[b0 + i]));
        absmax[bi] = am;
        const float safe = std::max(am, 1e-38f);
        const float inv = 1.0f / safe;
        for (index_t i = 0; i < len; ++i) {
            const float s = len == block ? x[b0 + i] * inv : x[b0 + i] / safe;
            store(b0 + i, bucketize(std::clamp(s, -1.0f, 1.0f), bounds));
        }
    }
}

} // namespace detail

// A frozen weight (out, in) in NF4; see the format at the top of this header.
struct nf4_tensor {
    index_t out = 0, in = 0;
    std::vector<std::uint8_t> codes; // (out * in + 1) / 2 bytes, element 2i in the high nibble of byte i
    bool double_quant = false;
    std::vector<float> absmax;         // without double quantisation: one f32 scale per block
    std::vector<std::uint8_t> qabsmax; // with: one 8-bit code of (absmax - offset) per block
    std::vector<float> absmax2;        // with: one f32 scale per 256 blocks
    float offset = 0;                  // with: the mean of the f32 scales

    tl::shape shape() const { return {out, in}; }
    index_t numel() const { return out * in; }
    index_t n_blocks() const { return (numel() + nf4_block_size - 1) / nf4_block_size; }
    index_t n_scale_blocks() const { return (n_blocks() + nf4_scale_block_size - 1) / nf4_scale_block_size; }

    // The f32 scale of block b as dequantisation uses it.
    float block_scale(index_t b) const {
        if (!double_quant) return absmax[std::size_t(b)];
        return detail::scale_from_code(qabsmax[std::size_t(b)], absmax2[std::size_t(b / nf4_scale_block_size)], offset);
    }
    // The 4-bit code of flat element i.
    int code(index_t i) const {
        const std::uint8_t byte = codes[std::size_t(i / 2)];
        return i % 2 ? byte & 0x0F : byte >> 4;
    }
};

// Throws tl::error unless the sizes of q's arrays agree with its shape (for tensors built or loaded by hand).
inline void check_nf4(std::string_view op, const nf4_tensor& q) {
    const auto want = [&](std::string_view what, std::size_t have, index_t expected) {
        check(have == std::size_t(expected), [&] {
            return std::string(op) + ": nf4 weight " + q.shape().str() + " has " + std::to_string(have) + " " +
                   std::string(what) + ", expected " + std::to_string(expected);
        });
    };
    check(q.out >= 0 && q.in >= 0, [&] { return std::string(op) + ": nf4 weight has shape " + q.shape().str(); });
    want("code bytes", q.codes.size(), (q.numel() + 1) / 2);
    if (q.double_quant) {
        want("8-bit scales", q.qabsmax.size(), q.n_blocks());
        want("second-level scales", q.absmax2.size(), q.n_scale_blocks());
    } else {
        want("f32 scales", q.absmax.size(), q.n_blocks());
    }
}

// Mean of f32 values, summed in double and rounded to f32 (torch's f32 mean, which bitsandbytes uses, may differ
// from this in the last bit; pass its stored offset to quantize_nf4 to reproduce its bytes exactly).
inline float mean_f32(std::span<const float> v) {
    double s = 0;
    for (float x : v)
        s += x;
    return v.empty() ? 0.0f : float(s / double(v.size()));
}

// Double quantisation of f32 block scales: codes[b] = nearest nf4_scale_code value to (absmax[b] - offset) /
// absmax2[b / 256] (bitsandbytes' default quantize_blockwise with blocksize 256), absmax2 = max |absmax - offset|
// per 256 scales.
inline void quantize_scales(std::span<const float> absmax, float offset, std::span<std::uint8_t> codes,
                            std::span<float> absmax2) {
    const index_t n = index_t(absmax.size());
    check(codes.size() == absmax.size() &&
              absmax2.size() == std::size_t((n + nf4_scale_block_size - 1) / nf4_scale_block_size),
          [&] {
              return "quantize_scales: " + std::to_string(n) + " scales need as many codes and " +
                     std::to_string((n + nf4_scale_block_size - 1) / nf4_scale_block_size) +
                     " second-level scales, got " + std::to_string(codes.size()) + " and " +
                     std::to_string(absmax2.size());
          });
    std::vector<float> centred(absmax.size());
    for (std::size_t i = 0; i < absmax.size(); ++i)
        centred[i] = absmax[i] - offset;
    detail::quantize_blockwise(centred.data(), n, nf4_scale_block_size, detail::scale_bounds, absmax2.data(),
                               [&](index_t i, int q) { codes[std::size_t(i)] = std::uint8_t(q); });
}

// Quantises w (out, in) to NF4 with block 64 and, when double_quant, 8-bit scales. `offset` overrides the mean
// subtracted from the scales (bitsandbytes' stored offset reproduces its bytes exactly).
inline nf4_tensor quantize_nf4(cview<float> w, bool double_quant = true, std::optional<float> offset = {}) {
    check(w.shape.rank == 2,
          [&] { return "quantize_nf4: weight has shape " + w.shape.str() + ", expected (out, in)"; });
    for (index_t i = 0; i < w.numel(); ++i)
        check(std::isfinite(w[i]), [&] {
            return "quantize_nf4: weight " + w.shape.str() + " holds a non-finite value at flat index " +
                   std::to_string(i);
        });
    nf4_tensor q;
    q.out = w.dim(0);
    q.in = w.dim(1);
    q.double_quant = double_quant;
    const index_t n = q.numel();
    q.codes.assign(std::size_t((n + 1) / 2), std::uint8_t(0x77)); // 7 = code of 0.0 in an odd count's pad
    std::vector<float> absmax(std::size_t(q.n_blocks()));
    detail::quantize_blockwise(w.data, n, nf4_block_size, detail::nf4_bounds, absmax.data(), [&](index_t i, int c) {
        std::uint8_t& byte = q.codes[std::size_t(i / 2)];
        byte = i % 2 ? std::uint8_t((byte & 0xF0) | c) : std::uint8_t((byte & 0x0F) | (c << 4));
    });
    if (!double_quant) {
        q.absmax = std::move(absmax);
        return q;
    }
    q.offset = offset ? *offset : mean_f32(absmax);
    q.qabsmax.resize(absmax.size());
    q.absmax2.resize(std::size_t(q.n_scale_blocks()));
    quantize_scales(absmax, q.offset, q.qabsmax, q.absmax2);
    return q;
}

// Dequantises rows [row0, row0 + rows.rows()) of q into rows (k, in): nf4[code] * scale in f32, then converted
// to T (float, or double for finite-difference checks).
template <class T>
void dequantize_rows(const nf4_tensor& q, index_t row0, tensor_view<T> rows) {
    check_nf4("dequantize_rows", q);
    check(rows.shape.rank == 2 && rows.cols() == q.in && row0 >= 0 && row0 + rows.rows() <= q.out, [&] {
        return "dequantize_rows: rows " + std::to_string(row0) + ".." + std::to_string(row0 + rows.rows()) +
               " into a buffer " + rows.shape.str() + " of an nf4 weight " + q.shape().str();
    });
    const index_t begin = row0 * q.in, end = begin + rows.numel();
    const std::uint8_t* codes = q.codes.data();
    T* out = rows.data;
    for (index_t b0 = begin - begin % nf4_block_size; b0 < end; b0 += nf4_block_size) {
        // The block's 16 values nf4[c] * scale, each the same f32 product as element-wise dequantisation.
        const float scale = q.block_scale(b0 / nf4_block_size);
        std::array<float, 16> value;
        for (std::size_t c = 0; c < 16; ++c)
            value[c] = nf4_code[c] * scale;
        const index_t lo = std::max(b0, begin), hi = std::min(b0 + nf4_block_size, end);
        index_t i = lo;
        if (i % 2 && i < hi) { // odd start: the low nibble of a byte
            out[i - begin] = T(value[codes[i / 2] & 0x0F]);
            ++i;
        }
        for (; i + 1 < hi; i += 2) { // two elements per byte, high nibble first
            const std::uint8_t byte = codes[i / 2];
            out[i - begin] = T(value[byte >> 4]);
            out[i + 1 - begin] = T(value[byte & 0x0F]);
        }
        if (i < hi) out[i - begin] = T(value[codes[i / 2] >> 4]);
    }
}

// The whole weight (out, in), as bitsandbytes' dequantize_4bit returns it.
inline void dequantize(const nf4_tensor& q, tensor_view<float> w) {
    check_nf4("dequantize", q);
    expect_shape("dequantize", "w", w, q.shape());
    dequantize_rows(q, 0, w);
}

// Heap bytes the tensor holds (codes, scales, second-level scales and offset; not the ~100-byte struct itself).
inline std::size_t storage_bytes(const nf4_tensor& q) {
    return q.codes.size() + q.absmax.size() * sizeof(float) + q.qabsmax.size() + q.absmax2.size() * sizeof(float) +
           (q.double_quant ? sizeof(float) : 0);
}

// storage_bytes / (out * in): 0.5625 without double quantisation, about 0.5159 with it (large weights).
inline double bytes_per_param(const nf4_tensor& q) {
    return q.numel() ? double(storage_bytes(q)) / double(q.numel()) : 0.0;
}

} // namespace tl
