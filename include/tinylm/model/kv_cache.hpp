// tinylm/model/kv_cache.hpp: keys and values of every layer for `batch` sequences of up to `capacity`
// positions, plus the scratch one chunk of new tokens needs; memory is allocated once, at construction.
// The model's forward_cached runs each chunk through the same block forward as training (the attention half
// appends the chunk's keys and values and attends over the cache): there is no second copy of the forward.
//
// Keys and values are kept in f32, or in bf16 (kv_precision::bf16: half the memory and half the bytes each decoded
// token reads, as llama.cpp's f16 cache; each element rounded to nearest even when stored, widened exactly when read,
// the sums in f32).
#pragma once

#include <tinylm/core/arena.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/model/self_attention.hpp>

#include <algorithm>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tl {

enum class kv_precision { f32, bf16 };

inline const char* to_string(kv_precision p) { return p == kv_precision::bf16 ? "bf16" : "f32"; }
inline kv_precision parse_kv_precision(const std::string& name) {
    if (name == "f32") return kv_precision::f32;
    if (name == "bf16") return kv_precision::bf16;
    throw error("unknown KV cache precision '" + name + "': f32 or bf16");
}

template <class Block>
class kv_cache {
public:
    kv_cache() = default;
    kv_cache(const Block& b, const model_config& c, index_t batch, index_t capacity, index_t chunk,
             kv_precision precision = kv_precision::f32)
        : batch_(batch), capacity_(capacity), chunk_(std::min(chunk, capacity)), precision_(precision) {
        check(batch > 0 && capacity > 0 && chunk > 0, "make_cache: batch, capacity and chunk must be positive");
        auto plan = [&](arena& a) {
            k_.clear();
            v_.clear();
            const shape keys{batch, capacity, c.n_kv_heads, c.head_dim()};
            for (int l = 0; l < c.n_layers; ++l)
                for (std::vector<kv_tensor>* kv : {&k_, &v_})
                    kv->push_back(precision == kv_precision::bf16 ? kv_tensor{.half = a.allocate<bf16>(keys)}
                                                                  : kv_tensor{.f32 = a.allocate<float>(keys)});
            rope_cos_ = a.allocate<float>({capacity, c.head_dim() / 2});
            rope_sin_ = a.allocate<float>({capacity, c.head_dim() / 2});
            last_ = a.allocate<float>({batch, c.d_model});
            last_normed_ = a.allocate<float>({batch, c.d_model});
        };
        arena measure = arena::measuring();
        plan(measure);
        arena_ = arena(measure.used());
        plan(arena_);
        arena chunk_measure = arena::measuring();
        plan_chunk(b, c.d_model, chunk_measure, chunk_);
        chunk_arena_ = arena(chunk_measure.used());
    }

    index_t batch() const { return batch_; }
    index_t capacity() const { return capacity_; }
    index_t chunk() const { return chunk_; }
    index_t length() const { return length_; } // positions filled so far
    kv_precision precision() const { return precision_; }
    void clear() { length_ = 0; }
    // Keeps the first n positions (n <= length()); the next append writes from position n.
    void truncate(index_t n) {
        check(n >= 0 && n <= length_, "kv_cache::truncate: beyond the positions filled");
        length_ = n;
    }
    // The first n positions of `from` (the same batch, or one sequence given to every one here; n <= capacity();
    // the same precision): keys and values copied, length n.
    void copy_prefix(const kv_cache& from, index_t n) {
        check((from.batch_ == batch_ || from.batch_ == 1) && n <= from.length_ && n <= capacity_ &&
                  from.k_.size() == k_.size() && from.precision_ == precision_,
              "kv_cache::copy_prefix: another batch or precision, or more positions than either cache has");
        auto copy = [&](const auto& source, const auto& target) {
            const index_t row = target.numel() / (batch_ * capacity_); // Hkv * D
            for (index_t b = 0; b < batch_; ++b) {
                const index_t fb = from.batch_ == 1 ? 0 : b;
                std::copy_n(source.data + fb * from.capacity_ * row, n * row, target.data + b * capacity_ * row);
            }
        };
        for (std::size_t l = 0; l < k_.size(); ++l)
            for (const auto& [source, target] : {std::pair{from.k_[l], k_[l]}, std::pair{from.v_[l], v_[l]}}) {
                if (precision_ == kv_precision::bf16)
                    copy(source.half, target.half);
                else
                    copy(source.f32, target.f32);
            }
        length_ = n;
    }

    tensor_view<float> rope_cos() const { return rope_cos_; }
    tensor_view<float> rope_sin() const { return rope_sin_; }
    tensor_view<float> last_normed() const { return last_normed_; }

    // Runs ids (B, T) through the blocks chunk by chunk, appending their keys and values; leaves each
    // sequence's last position, final-normed, in last_normed().
    template <class Norm, class Adapter>
    void append(cview<token_t> ids, cview<float> embed, const std::vector<Block>& blocks, const Norm& final_norm,
                const Adapter& adapter) {
        check(ids.shape.rank == 2 && ids.dim(0) == batch_, [&] {
            return "forward_cached: ids must be (" + std::to_string(batch_) + ", T), got " + ids.shape.str();
        });
        const index_t total = ids.dim(1), d = embed.dim(1), half = rope_cos_.dim(1);
        check(length_ + total <= capacity_, [&] {
            return "forward_cached: " + std::to_string(length_ + total) + " positions exceed the cache capacity " +
                   std::to_string(capacity_);
        });
        for (index_t t0 = 0; t0 < total; t0 += chunk_) {
            const index_t t_len = std::min(chunk_, total - t0), start = length_;
            chunk_arena_.reset();
            const chunk_views v = plan_chunk(blocks.front(), d, chunk_arena_, t_len);
            for (index_t b = 0; b < batch_; ++b)
                for (index_t t = 0; t < t_len; ++t) {
                    const token_t id = ids[b * total + t0 + t];
                    check(id >= 0 && id < embed.dim(0), [&] {
                        return "forward_cached: token id " + std::to_string(id) + " is outside the vocabulary";
                    });
                    std::copy_n(embed.row(id), d, v.x.row(b * t_len + t));
                }
            attention_context ctx{.cos = {rope_cos_.data + start * half, {t_len, half}},
                                  .sin = {rope_sin_.data + start * half, {t_len, half}},
                                  .start = start};
            for (std::size_t l = 0; l < blocks.size(); ++l) {
                ctx.k_cache = k_[l];
                ctx.v_cache = v_[l];
                blocks[l].forward(v.x, v.x, v.acts, v.scratch, ctx, adapter, {});
            }
            length_ += t_len;
            for (index_t b = 0; b < batch_; ++b)
                std::copy_n(v.x.row(b * t_len + t_len - 1), d, last_.row(b));
            final_norm.forward(last_normed_, {v.last_mean, v.last_rstd}, last_);
        }
    }

    // One new token for each of several sequences, each in a cache of its own (batch 1; any lengths and
    // capacities): one forward for all of them, so each product reads the weights once for every sequence (a
    // server's clients decoded together). Sequence b's token ids[b] is appended to *caches[b]; `normed` (n, d) gets
    // each new position, final-normed. Each sequence gets what append gives it alone, where the products do
    // (backend/gemv.hpp: each row summed as alone, but for f32 weights on a CPU without AVX2).
    // The scratch of one token per sequence is planned and allocated per call: tens of KB for a 0.5B model, beside
    // a step's milliseconds, and the set of caches changes from step to step.
    template <class Norm, class Adapter>
    static void append_each(std::span<kv_cache* const> caches, std::span<const token_t> ids, cview<float> embed,
                            const std::vector<Block>& blocks, const Norm& final_norm, const Adapter& adapter,
                            tensor_view<float> normed) {
        const index_t n = index_t(caches.size()), d = embed.dim(1);
        check(n > 0 && ids.size() == caches.size(), "forward_each: one token id for each cache");
        expect_shape("forward_each", "normed", normed, {n, d});
        kv_cache* widest = caches.front(); // its rope table covers every position below the largest capacity
        for (index_t b = 0; b < n; ++b) {
            const kv_cache& c = *caches[std::size_t(b)];
            check(c.precision_ == caches.front()->precision_,
                  "forward_each: the caches decoded together must have the same precision");
            check(c.batch_ == 1 && c.length_ < c.capacity_, [&] {
                return "forward_each: cache " + std::to_string(b) + " must hold one sequence with room for a token (" +
                       std::to_string(c.length_) + " of " + std::to_string(c.capacity_) + " positions)";
            });
            check(ids[std::size_t(b)] >= 0 && ids[std::size_t(b)] < embed.dim(0), [&] {
                return "forward_each: token id " + std::to_string(ids[std::size_t(b)]) + " is outside the vocabulary";
            });
            if (c.capacity_ > widest->capacity_) widest = caches[std::size_t(b)];
        }
        auto plan = [&](arena& a) {
            struct {
                chunk_views v;
                tensor_view<index_t> positions;
            } p{plan_rows(blocks.front(), d, a, n, 1), a.allocate<index_t>({n, 1})};
            return p;
        };
        arena measure = arena::measuring();
        plan(measure);
        arena scratch(measure.used());
        const auto [v, positions] = plan(scratch);
        // This layer's caches, in the one precision they share (the views of the other stay empty).
        const bool half = caches.front()->precision_ == kv_precision::bf16;
        std::vector<tensor_view<float>> row_k(half ? 0 : caches.size()), row_v(row_k.size());
        std::vector<tensor_view<bf16>> row_k_half(half ? caches.size() : 0), row_v_half(row_k_half.size());
        for (index_t b = 0; b < n; ++b) {
            positions[b] = caches[std::size_t(b)]->length_;
            std::copy_n(embed.row(ids[std::size_t(b)]), d, v.x.row(b));
        }
        attention_context ctx{.cos = widest->rope_cos_,
                              .sin = widest->rope_sin_,
                              .positions = positions,
                              .row_start = std::span<const index_t>(positions.data, caches.size())};
        for (std::size_t l = 0; l < blocks.size(); ++l) {
            for (std::size_t b = 0; b < caches.size(); ++b) {
                if (half)
                    row_k_half[b] = caches[b]->k_[l].half, row_v_half[b] = caches[b]->v_[l].half;
                else
                    row_k[b] = caches[b]->k_[l].f32, row_v[b] = caches[b]->v_[l].f32;
            }
            ctx.row_k = row_k, ctx.row_v = row_v, ctx.row_k_half = row_k_half, ctx.row_v_half = row_v_half;
            blocks[l].forward(v.x, v.x, v.acts, v.scratch, ctx, adapter, {});
        }
        final_norm.forward(normed, {v.last_mean, v.last_rstd}, v.x);
        for (index_t b = 0; b < n; ++b) {
            kv_cache& c = *caches[std::size_t(b)];
            ++c.length_;
            std::copy_n(v.x.row(b), d, c.last_.row(0));
            std::copy_n(normed.row(b), d, c.last_normed_.row(0));
        }
    }

private:
    struct chunk_views {
        tensor_view<float> x, last_mean, last_rstd; // x (B * t_len, d)
        typename Block::activations acts;
        typename Block::scratch scratch;
    };
    chunk_views plan_chunk(const Block& b, index_t d, arena& a, index_t t_len) const {
        return plan_rows(b, d, a, batch_, t_len);
    }
    static chunk_views plan_rows(const Block& b, index_t d, arena& a, index_t batch, index_t t_len) {
        chunk_views v;
        v.x = a.allocate<float>({batch * t_len, d});
        v.last_mean = a.allocate<float>({batch});
        v.last_rstd = a.allocate<float>({batch});
        v.acts = b.allocate(a, batch, t_len, false);
        v.scratch = b.allocate_scratch(a, batch, t_len, false);
        return v;
    }

    arena arena_, chunk_arena_;
    index_t batch_ = 0, capacity_ = 0, chunk_ = 0, length_ = 0;
    kv_precision precision_ = kv_precision::f32;
    std::vector<kv_tensor> k_, v_;           // per layer (B, capacity, Hkv, D)
    tensor_view<float> rope_cos_, rope_sin_; // (capacity, D/2)
    tensor_view<float> last_, last_normed_;  // each sequence's last position: residual stream, final norm
};

} // namespace tl
