// tinylm/backend/decoding_weights.hpp: bf16, q8_0 or q4_0 copies of a model's weights for decoding
// (docs/precision.md, "Decoding with bf16 weights", "Decoding with q8_0 weights", "Decoding with q4_0 weights").
//
// Decoding one token reads every weight matrix once (backend/gemv.hpp), so its speed is the memory bandwidth:
// smaller copies of the weights mean fewer bytes a token. While a decoding_weights lives, every product of up to
// max_gemv_rows (8) rows (the gemv path of onednn_cpu and eigen_cpu: one token, or one token of each of several
// sequences decoded together) whose weight lies inside one of the tensors it copied reads the copy instead, widened
// to f32 (the products and sums stay f32; each row summed as alone). Larger products (a prompt's prefill of more
// than 8 tokens, training) read the f32 weights, so a long prompt's first token comes from the f32 model and the
// rest from the copy.
//   bf16  2 bytes a weight, rounded to nearest even; widening is exact (a shift): any CPU gains.
//   q8_0  1 byte a weight plus an f32 scale per 32 consecutive weights of a row (1.125 bytes): each block is
//         rounded to round(w / d) with d = max |w| / 127, as llama.cpp's q8_0 (whose scale is f16). The
//         activations stay f32 (llama.cpp rounds them to 8 bits too).
//   q4_0  half a byte a weight plus an f32 scale per block of 32 (0.625 bytes): llama.cpp's q4_0 rule with an f32
//         scale: d = m / -8 where m is the block's weight of largest magnitude (its sign kept), codes
//         q = min(15, trunc(w / d + 8.5)) standing for d (q - 8); so m is exact and -m clips to 7 d. Byte i of a
//         block holds weight i in its low nibble and weight i + 16 in its high one (ggml's order). Weights that
//         came from a Q4_0 GGUF file get their own codes back (d = the file's scale: m = -8 d exactly).
//
//   tl::decoding_weights copies(model.parameter_entries(), tl::decoding_format::q8_0); // after loading
//   tl::generate(model, prompt, options);                                            // its steps read the copies
//
// The copies are a snapshot: the weights must not change while the object lives (no training, loading or
// merging of adapters: make it after them; `tinylm generate|chat|serve --precision bf16|q8_0|q4_0` does). Copies of
// several models may live at once; they are found by address, through a registry read under a shared lock once
// per product (and not at all while none lives). A q8_0 or q4_0 copy serves a product whose rows start at a block
// (its first weight a multiple of 32 from a row's start, with the tensor's row stride); any other reads f32.
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/core/dtype.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/core/tensor.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ranges>
#include <shared_mutex>
#include <string>
#include <vector>

namespace tl {

// What a decoding step reads: the f32 weights, or copies (above).
enum class decoding_format { f32, bf16, q8_0, q4_0 };

inline const char* to_string(decoding_format f) {
    switch (f) {
    case decoding_format::bf16:
        return "bf16";
    case decoding_format::q8_0:
        return "q8_0";
    case decoding_format::q4_0:
        return "q4_0";
    default:
        return "f32";
    }
}
inline decoding_format parse_decoding_format(const std::string& name) {
    for (const decoding_format f :
         {decoding_format::f32, decoding_format::bf16, decoding_format::q8_0, decoding_format::q4_0})
        if (name == to_string(f)) return f;
    throw error("unknown decoding precision '" + name + "': f32, bf16, q8_0 or q4_0");
}

namespace detail {

inline constexpr index_t q8_block = 32; // weights per q8_0 or q4_0 scale, along a row
inline constexpr index_t q4_block_bytes = q8_block / 2;

// Bytes of a row of `cols` weights in a q4_0 copy: 16 a block, a partial last block too.
inline index_t q4_row_bytes(index_t cols) { return (cols + q8_block - 1) / q8_block * q4_block_bytes; }

// The f32 range [begin, end) of one weight (`cols` to a row) and its copy: bf16 and q8_0 element for element (same
// offsets, same strides), q4_0 q4_row_bytes(cols) a row; q8_0's and q4_0's scales: (rows, ceil(cols / 32)).
struct decoding_copy_region {
    const float *begin, *end;
    index_t cols;
    decoding_format format;
    const void* copy;
    const float* scales;
};

// What a product reads instead of its f32 weights: the copy of its first weight (uint16 for bf16, int8 for q8_0,
// same strides; for q4_0 the byte of its first block); for q8_0 and q4_0 the codes' and the scales' row strides and
// the scale of its first block. format f32: no copy.
struct decoding_copy {
    decoding_format format = decoding_format::f32;
    const void* data = nullptr;
    const float* scales = nullptr;
    index_t scales_ld = 0;
    index_t codes_ld = 0; // q8_0, q4_0: codes (int8 or bytes) from one row to the next
};

struct decoding_copy_registry {
    std::shared_mutex mutex;
    std::vector<decoding_copy_region> regions; // sorted by begin; regions never overlap
    std::atomic<std::size_t> count{0};         // regions.size(), read without the lock
};

inline decoding_copy_registry& decoding_copies() {
    static decoding_copy_registry r;
    return r;
}

// The copy serving a product that reads `rows` rows of `k` f32 weights from `first`, `ld` apart, when one
// registered weight holds them all (and, for q8_0, each row starts at a block of one of its rows); else format f32.
inline decoding_copy decoding_copy_of(const float* first, index_t rows, index_t k, index_t ld) {
    decoding_copy_registry& r = decoding_copies();
    if (r.count.load(std::memory_order_acquire) == 0 || rows <= 0 || k <= 0) return {};
    const float* last = first + (rows - 1) * ld + (k - 1);
    std::shared_lock lock(r.mutex);
    // The last region that begins at or before `first`.
    auto it = std::upper_bound(r.regions.begin(), r.regions.end(), first, [](const float* p, const auto& region) {
        return std::less<const float*>{}(p, region.begin);
    });
    if (it == r.regions.begin()) return {};
    --it;
    if (!std::less<const float*>{}(last, it->end)) return {};
    const index_t offset = first - it->begin;
    if (it->format == decoding_format::bf16)
        return {.format = it->format, .data = static_cast<const std::uint16_t*>(it->copy) + offset};
    const index_t row = offset / it->cols, col = offset % it->cols, blocks = (it->cols + q8_block - 1) / q8_block;
    if (col % q8_block != 0 || col + k > it->cols || (rows > 1 && ld != it->cols)) return {};
    if (it->format == decoding_format::q4_0)
        return {.format = it->format,
                .data = static_cast<const std::uint8_t*>(it->copy) + row * q4_row_bytes(it->cols) + col / 2,
                .scales = it->scales + row * blocks + col / q8_block,
                .scales_ld = blocks,
                .codes_ld = q4_row_bytes(it->cols)};
    return {.format = it->format,
            .data = static_cast<const std::int8_t*>(it->copy) + offset,
            .scales = it->scales + row * blocks + col / q8_block,
            .scales_ld = blocks,
            .codes_ld = it->cols};
}

// std::lround for |x| < 2^31, in operations that vectorise even at SSE2 (truncating conversions, a compare):
// lround was a library call per weight, half of making a 0.5B model's q8_0 copies.
inline std::int32_t round_half_away(float x) {
    const std::int32_t t = static_cast<std::int32_t>(x); // toward zero
    const float rest = x - static_cast<float>(t);        // exact
    return t + (rest >= 0.5f ? 1 : 0) - (rest <= -0.5f ? 1 : 0);
}

// q8_0 of one (rows, cols) weight: codes element for element, a scale per block of 32 along each row.
inline void quantize_q8_0(const float* w, index_t rows, index_t cols, std::int8_t* codes, float* scales) {
    const index_t blocks = (cols + q8_block - 1) / q8_block;
#pragma omp parallel for schedule(static) if (rows * cols >= (index_t(1) << 20))
    for (index_t r = 0; r < rows; ++r)
        for (index_t b = 0; b < blocks; ++b) {
            const index_t p0 = r * cols + b * q8_block, p1 = r * cols + std::min(cols, (b + 1) * q8_block);
            float largest = 0;
            for (index_t p = p0; p < p1; ++p)
                largest = std::max(largest, std::abs(w[p]));
            const float d = largest / 127.0f, inverse = d != 0.0f ? 1.0f / d : 0.0f;
            scales[r * blocks + b] = d;
            for (index_t p = p0; p < p1; ++p)
                codes[p] = static_cast<std::int8_t>(round_half_away(w[p] * inverse));
        }
}

// q4_0 of one (rows, cols) weight (the rule in the header): q4_row_bytes(cols) bytes a row, a scale per block of 32
// along each row; a partial last block's missing weights get code 8 (zero).
inline void quantize_q4_0(const float* w, index_t rows, index_t cols, std::uint8_t* codes, float* scales) {
    const index_t blocks = (cols + q8_block - 1) / q8_block, row_bytes = q4_row_bytes(cols);
#pragma omp parallel for schedule(static) if (rows * cols >= (index_t(1) << 20))
    for (index_t r = 0; r < rows; ++r)
        for (index_t b = 0; b < blocks; ++b) {
            const float* x = w + r * cols + b * q8_block;
            const index_t n = std::min(q8_block, cols - b * q8_block);
            float largest = 0, signed_largest = 0; // the first of largest magnitude, as ggml
            for (index_t p = 0; p < n; ++p)
                if (std::abs(x[p]) > largest) largest = std::abs(x[p]), signed_largest = x[p];
            const float d = signed_largest / -8.0f, inverse = d != 0.0f ? 1.0f / d : 0.0f;
            scales[r * blocks + b] = d;
            std::uint8_t q[q8_block];
            for (index_t p = 0; p < q8_block; ++p)
                q[p] = p < n ? std::uint8_t(std::min(15.0f, std::trunc(x[p] * inverse + 8.5f))) : std::uint8_t(8);
            std::uint8_t* out = codes + r * row_bytes + b * q4_block_bytes;
            for (index_t p = 0; p < q4_block_bytes; ++p)
                out[p] = std::uint8_t(q[p] | (q[p + q4_block_bytes] << 4));
        }
}

} // namespace detail

class decoding_weights {
public:
    // Copies every parameter of two or more dimensions (projections, the embedding, which a tied head reads, the
    // head, and stacked experts (E, rows, cols) as one matrix of E * rows rows) of `entries` in `format` (bf16,
    // q8_0 or q4_0): a model's parameter_entries() (model/parameter.hpp), or any range of items with a
    // tensor_view<float> `value`.
    //
    // The copies live in one block of transparent huge pages (arena::pages::huge), as the f32 weights do: each
    // token streams them all, and with 4 KB pages each page is a TLB miss.
    template <std::ranges::forward_range Entries>
    decoding_weights(const Entries& entries, decoding_format format) : format_(format) {
        check(format != decoding_format::f32, "decoding_weights: f32 needs no copies (bf16, q8_0 or q4_0)");
        // Twice over the entries: to size the block, then to fill it (the same allocations, as plan_in).
        auto copy_all = [&](arena& memory) {
            for (const auto& e : entries) {
                if (e.value.data == nullptr || e.value.shape.rank < 2 || e.value.numel() == 0) continue; // NF4
                const index_t n = e.value.numel(), cols = e.value.shape[e.value.shape.rank - 1], rows = n / cols;
                const float* w = e.value.data;
                detail::decoding_copy_region region{w, w + n, cols, format, nullptr, nullptr};
                if (format == decoding_format::bf16) {
                    const tensor_view<std::uint16_t> copy = memory.allocate<std::uint16_t>({n});
                    if (copy.data == nullptr) continue;
#pragma omp parallel for schedule(static) if (n >= (index_t(1) << 20))
                    for (index_t i = 0; i < n; ++i)
                        copy.data[i] = bf16::round_to_bf16(w[i]);
                    region.copy = copy.data;
                    bytes_ += std::size_t(n) * sizeof(std::uint16_t);
                } else if (format == decoding_format::q4_0) {
                    const index_t scale_count = rows * ((cols + detail::q8_block - 1) / detail::q8_block);
                    const index_t code_bytes = rows * detail::q4_row_bytes(cols);
                    const tensor_view<std::uint8_t> codes = memory.allocate<std::uint8_t>({code_bytes});
                    const tensor_view<float> scales = memory.allocate<float>({scale_count});
                    if (codes.data == nullptr) continue;
                    detail::quantize_q4_0(w, rows, cols, codes.data, scales.data);
                    region.copy = codes.data, region.scales = scales.data;
                    bytes_ += std::size_t(code_bytes) + std::size_t(scale_count) * sizeof(float);
                } else {
                    const index_t scale_count = rows * ((cols + detail::q8_block - 1) / detail::q8_block);
                    const tensor_view<std::int8_t> codes = memory.allocate<std::int8_t>({n});
                    const tensor_view<float> scales = memory.allocate<float>({scale_count});
                    if (codes.data == nullptr) continue;
                    detail::quantize_q8_0(w, rows, cols, codes.data, scales.data);
                    region.copy = codes.data, region.scales = scales.data;
                    bytes_ += std::size_t(n) + std::size_t(scale_count) * sizeof(float);
                }
                regions_.push_back(region);
            }
        };
        arena measure = arena::measuring();
        copy_all(measure);
        memory_ = arena(measure.used(), arena::pages::huge);
        copy_all(memory_);
        detail::decoding_copy_registry& r = detail::decoding_copies();
        std::unique_lock lock(r.mutex);
        for (const detail::decoding_copy_region& mine : regions_)
            for (const detail::decoding_copy_region& other : r.regions)
                check(!std::less<const float*>{}(mine.begin, other.end) ||
                          !std::less<const float*>{}(other.begin, mine.end),
                      "decoding_weights: these weights already have decoding copies (one object per model)");
        r.regions.insert(r.regions.end(), regions_.begin(), regions_.end());
        std::sort(r.regions.begin(), r.regions.end(),
                  [](const auto& a, const auto& b) { return std::less<const float*>{}(a.begin, b.begin); });
        r.count.store(r.regions.size(), std::memory_order_release);
    }
    ~decoding_weights() {
        detail::decoding_copy_registry& r = detail::decoding_copies();
        std::unique_lock lock(r.mutex);
        std::erase_if(r.regions, [&](const detail::decoding_copy_region& region) {
            return std::any_of(regions_.begin(), regions_.end(),
                               [&](const auto& mine) { return mine.copy == region.copy; });
        });
        r.count.store(r.regions.size(), std::memory_order_release);
    }
    decoding_weights(const decoding_weights&) = delete;
    decoding_weights& operator=(const decoding_weights&) = delete;

    decoding_format format() const { return format_; }
    std::size_t bytes() const { return bytes_; } // the copies' memory
    std::size_t tensors() const { return regions_.size(); }

private:
    decoding_format format_;
    arena memory_; // every copy, and q8_0's and q4_0's scales
    std::vector<detail::decoding_copy_region> regions_;
    std::size_t bytes_ = 0;
};

// bf16 copies (the first format; kept as its own name).
class bf16_decoding_weights : public decoding_weights {
public:
    template <std::ranges::forward_range Entries>
    explicit bf16_decoding_weights(const Entries& entries) : decoding_weights(entries, decoding_format::bf16) {}
};

} // namespace tl
