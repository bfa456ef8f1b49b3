// tinylm/backend/decoding_weights.hpp: bf16 copies of a model's weights for decoding (docs/precision.md,
// "Decoding with bf16 weights").
//
// Decoding one token reads every weight matrix once (backend/gemv.hpp), so its speed is the memory bandwidth:
// bf16 copies halve the bytes a token reads. While a bf16_decoding_weights lives, every one-row product (m = 1,
// the gemv path of onednn_cpu and eigen_cpu) whose weight lies inside one of the tensors it copied reads the copy
// instead, widened to f32 exactly (the products and sums stay f32, as llama.cpp's bf16 files compute). Every
// other product (a prompt's prefill, training, batched decoding of several rows) reads the f32 weights, so a
// prompt's first token comes from the f32 model and the rest from the bf16 one.
//
//   tl::bf16_decoding_weights bf16(model.parameter_entries()); // the 2-D weights: half their f32 size more memory
//   tl::generate(model, prompt, options);                      // its decoding steps read the copies
//
// The copies are a snapshot: the weights must not change while the object lives (no training, loading or
// merging of adapters: make it after them; `tinylm generate|chat|serve --precision bf16` does). Any CPU gains:
// widening bf16 is a shift, no AVX-512 BF16 needed. Copies of several models may live at once; they are found
// by address, through a registry read under a shared lock once per product (and not at all while none lives).
#pragma once

#include <tinylm/core/dtype.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/core/tensor.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ranges>
#include <shared_mutex>
#include <vector>

namespace tl {

namespace detail {

// The f32 range [begin, end) of one weight and its bf16 copy, element for element (same offsets, same strides).
struct decoding_copy_region {
    const float *begin, *end;
    const std::uint16_t* copy;
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

// The bf16 copy of the f32 elements [first, last] when one registered weight holds them all, else nullptr.
inline const std::uint16_t* decoding_copy_of(const float* first, const float* last) {
    decoding_copy_registry& r = decoding_copies();
    if (r.count.load(std::memory_order_acquire) == 0) return nullptr;
    std::shared_lock lock(r.mutex);
    // The last region that begins at or before `first`.
    auto it = std::upper_bound(r.regions.begin(), r.regions.end(), first, [](const float* p, const auto& region) {
        return std::less<const float*>{}(p, region.begin);
    });
    if (it == r.regions.begin()) return nullptr;
    --it;
    if (!std::less<const float*>{}(last, it->end)) return nullptr;
    return it->copy + (first - it->begin);
}

} // namespace detail

class bf16_decoding_weights {
public:
    // Copies every 2-D parameter (projections, experts, the embedding, which a tied head reads, and the head) of
    // `entries`: a model's parameter_entries() (model/parameter.hpp), or any range of items with a
    // tensor_view<float> `value`.
    template <std::ranges::input_range Entries>
    explicit bf16_decoding_weights(const Entries& entries) {
        for (const auto& e : entries) {
            if (e.value.data == nullptr || e.value.shape.rank != 2 || e.value.numel() == 0) continue; // NF4: none
            const index_t n = e.value.numel();
            auto copy = std::make_unique<std::uint16_t[]>(std::size_t(n));
            const float* w = e.value.data;
#pragma omp parallel for schedule(static) if (n >= (index_t(1) << 20))
            for (index_t i = 0; i < n; ++i)
                copy[std::size_t(i)] = bf16::round_to_bf16(w[i]);
            regions_.push_back({w, w + n, copy.get()});
            copies_.push_back(std::move(copy));
            bytes_ += std::size_t(n) * sizeof(std::uint16_t);
        }
        detail::decoding_copy_registry& r = detail::decoding_copies();
        std::unique_lock lock(r.mutex);
        for (const detail::decoding_copy_region& mine : regions_)
            for (const detail::decoding_copy_region& other : r.regions)
                check(!std::less<const float*>{}(mine.begin, other.end) ||
                          !std::less<const float*>{}(other.begin, mine.end),
                      "bf16_decoding_weights: these weights already have bf16 copies (one object per model)");
        r.regions.insert(r.regions.end(), regions_.begin(), regions_.end());
        std::sort(r.regions.begin(), r.regions.end(),
                  [](const auto& a, const auto& b) { return std::less<const float*>{}(a.begin, b.begin); });
        r.count.store(r.regions.size(), std::memory_order_release);
    }
    ~bf16_decoding_weights() {
        detail::decoding_copy_registry& r = detail::decoding_copies();
        std::unique_lock lock(r.mutex);
        std::erase_if(r.regions, [&](const detail::decoding_copy_region& region) {
            return std::any_of(regions_.begin(), regions_.end(),
                               [&](const auto& mine) { return mine.copy == region.copy; });
        });
        r.count.store(r.regions.size(), std::memory_order_release);
    }
    bf16_decoding_weights(const bf16_decoding_weights&) = delete;
    bf16_decoding_weights& operator=(const bf16_decoding_weights&) = delete;

    std::size_t bytes() const { return bytes_; } // the copies' memory
    std::size_t tensors() const { return copies_.size(); }

private:
    std::vector<std::unique_ptr<std::uint16_t[]>> copies_;
    std::vector<detail::decoding_copy_region> regions_;
    std::size_t bytes_ = 0;
};

} // namespace tl
