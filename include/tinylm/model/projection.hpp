// tinylm/model/projection.hpp: one linear map y = x W^T (+ b) of a block, in one of three forms chosen by the
// adapter type at compile time:
//   dense          W trainable (no adapter)
//   LoRA           W frozen, y += (alpha / r) * (dropout(x) A^T) B^T with A (r, in), B (out, r) trainable
//   NF4 + LoRA     the same with W stored in NF4 (QLoRA), dequantised tile by tile (ops/nf4_linear.hpp)
// LoRA follows peft: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a = sqrt(5)), B = 0, dropout on the
// adapter's input only, during training forwards. Dropout masks come from the counter-based RNG at stream
// (training forward count, layer, target), so a recomputed forward (gradient checkpointing) and a resumed
// run draw the same masks.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/model/config.hpp>
#include <tinylm/model/slot.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/nf4_linear.hpp>

#include <array>
#include <span>
#include <string>
#include <vector>

namespace tl {

// What the adapter paths share across projections: dropout state and scratch (owned by the model).
struct adapter_state {
    std::uint64_t dropout_seed = 0, dropout_calls = 0; // key and training-forward count of the masks
    // Rows (tokens) of the batch before this process's: a data-parallel rank trains rows [row0, row0 + N) of the
    // global batch and draws their masks as one process training the whole batch would (0 in a world of one).
    index_t dropout_row0 = 0;
    index_t n_layers = 0;
    bool train = false;                     // inside a training forward: dropout is active
    bool merged = false;                    // W holds W + (alpha / r) B A; the adapter path is skipped
    tensor_view<float> x, dx, dh;           // (N, widest in) dropout(x) and its gradient, (N, r) dh
    mutable std::vector<float> nf4_scratch; // QLoRA: nf4_tile_rows x the widest input
};

template <class Backend, LoraAdapter Adapter>
class projection {
public:
    using backend_t = Backend;
    static constexpr lora_config lora = Adapter::value;
    static constexpr bool has_adapter = lora.rank > 0;
    static constexpr bool quantized = has_adapter && lora.quantized_base;
    static constexpr bool dropout = has_adapter && lora.dropout > 0;
    static constexpr float scale = has_adapter ? lora.alpha / float(lora.rank) : 0.0f;
    static constexpr index_t nf4_tile_rows = 512; // fewer gemm calls; 512 x 4864 f32 = 10 MB for Qwen2.5

    projection() = default;
    projection(index_t in, index_t out, index_t layer, proj which, bool bias)
        : in_(in), out_(out), layer_(layer), which_(which), has_bias_(bias),
          targeted_(has_adapter && ((lora.targets >> int(which)) & 1u)) {}

    index_t in() const { return in_; }
    index_t out() const { return out_; }
    bool targeted() const { return targeted_; }
    proj which() const { return which_; }
    tensor_view<float> weight() const { return w_; }
    const nf4_tensor& quantized_weight() const { return qw_; }
    nf4_tensor& quantized_weight() { return qw_; }
    tensor_view<float> lora_a() const { return a_; }
    tensor_view<float> lora_b() const { return b_; }

    // The base weight (and bias) under prefix + ".weight" / ".bias".
    template <class Visit>
    void walk(Visit&& visit, const std::string& prefix, param_group group) {
        param_slot w{prefix + ".weight", {out_, in_}, param_kind::weight, group, &w_, &dw_};
        if constexpr (quantized) w.value = nullptr, w.grad = nullptr, w.quantized = &qw_;
        visit(std::move(w));
        if (has_bias_) visit(param_slot{prefix + ".bias", {out_}, param_kind::bias, group, &bias_, &dbias_});
    }
    // The adapter's A and B under peft's names (without "base_model.model.").
    template <class Visit>
    void walk_adapter(Visit&& visit, const std::string& prefix) {
        if (!targeted_) return;
        visit(param_slot{
            prefix + ".lora_A.weight", {lora.rank, in_}, param_kind::adapter, param_group::adapter, &a_, &da_});
        visit(param_slot{
            prefix + ".lora_B.weight", {out_, lora.rank}, param_kind::adapter, param_group::adapter, &b_, &db_});
    }
    // peft's initialisation: A uniform in +-1/sqrt(in), B zero, from (seed, layer, target).
    void init_adapter(std::uint64_t seed) {
        if (!targeted_) return;
        counter_rng rng(seed ^ 0x6c6f7261ull, std::uint64_t(layer_ * lora_target_count + int(which_)));
        const double bound = 1.0 / std::sqrt(double(in_));
        for (float& w : a_)
            w = float((2 * rng.uniform() - 1) * bound);
        b_.fill(0.0f);
    }

    // y = x W^T (+ b) (+ the adapter path; h keeps dropout(x) A^T (N, r) for the backward).
    void forward(tensor_view<float> y, cview<float> x, tensor_view<float> h, const adapter_state& s) const {
        if constexpr (quantized)
            nf4_linear_forward<Backend, float>(y, x, qw_, bias_, nf4_scratch(s));
        else
            linear_forward<Backend, float>(y, x, w_, bias_);
        forward_adapter(y, x, h, s);
    }
    // forward() in two steps, for projections that share their input (forward_together): the product with the
    // dense base weight (bias written into y), to hand to the backend, then the adapter path.
    gemm_args<float> base_product(tensor_view<float> y, cview<float> x) const requires(!quantized) {
        return linear_product<float>(y, x, w_, bias_);
    }
    void forward_adapter(tensor_view<float> y, cview<float> x, tensor_view<float> h, const adapter_state& s) const {
        if constexpr (has_adapter) {
            if (!targeted_ || s.merged) return;
            const index_t n = x.rows(), r = lora.rank;
            const cview<float> xd = dropout && s.train ? dropout_input(x, s) : x;
            Backend::gemm(gemm_args<float>{.trans_b = true,
                                           .m = n,
                                           .n = r,
                                           .k = in_,
                                           .a = xd.data,
                                           .lda = in_,
                                           .b = a_.data,
                                           .ldb = in_,
                                           .c = h.data,
                                           .ldc = r});
            Backend::gemm(gemm_args<float>{.trans_b = true,
                                           .m = n,
                                           .n = out_,
                                           .k = r,
                                           .alpha = scale,
                                           .a = h.data,
                                           .lda = r,
                                           .b = b_.data,
                                           .ldb = r,
                                           .beta = 1.0f,
                                           .c = y.data,
                                           .ldc = out_});
        }
    }

    // Accumulates dW (and db) and writes or adds dx = dy W. With an adapter the base is frozen: dx only, plus
    // dB += s dy^T h, dh = s dy B, dA += dh^T dropout(x), dx += dropout'(dh A).
    void backward(tensor_view<float> dx, cview<float> dy, cview<float> x, cview<float> h, const adapter_state& s,
                  grad_write mode) const {
        if constexpr (!has_adapter) {
            linear_backward<Backend, float>(dx, dw_, dbias_, dy, x, w_, mode);
        } else {
            const index_t n = x.rows(), r = lora.rank;
            if constexpr (quantized)
                nf4_linear_backward<Backend, float>(dx, dy, qw_, nf4_scratch(s), mode);
            else
                Backend::gemm(gemm_args<float>{.m = n,
                                               .n = in_,
                                               .k = out_,
                                               .a = dy.data,
                                               .lda = out_,
                                               .b = w_.data,
                                               .ldb = in_,
                                               .beta = mode == grad_write::add ? 1.0f : 0.0f,
                                               .c = dx.data,
                                               .ldc = in_});
            if (!targeted_) return;
            float* dh = s.dh.data;
            Backend::gemm(gemm_args<float>{.trans_a = true,
                                           .m = out_,
                                           .n = r,
                                           .k = n,
                                           .alpha = scale,
                                           .a = dy.data,
                                           .lda = out_,
                                           .b = h.data,
                                           .ldb = r,
                                           .beta = 1.0f,
                                           .c = db_.data,
                                           .ldc = r});
            Backend::gemm(gemm_args<float>{.m = n,
                                           .n = r,
                                           .k = out_,
                                           .alpha = scale,
                                           .a = dy.data,
                                           .lda = out_,
                                           .b = b_.data,
                                           .ldb = r,
                                           .c = dh,
                                           .ldc = r});
            const cview<float> xd = dropout ? dropout_input(x, s) : x;
            Backend::gemm(gemm_args<float>{.trans_a = true,
                                           .m = r,
                                           .n = in_,
                                           .k = n,
                                           .a = dh,
                                           .lda = r,
                                           .b = xd.data,
                                           .ldb = in_,
                                           .beta = 1.0f,
                                           .c = da_.data,
                                           .ldc = in_});
            if constexpr (!dropout) {
                Backend::gemm(gemm_args<float>{.m = n,
                                               .n = in_,
                                               .k = r,
                                               .a = dh,
                                               .lda = r,
                                               .b = a_.data,
                                               .ldb = in_,
                                               .beta = 1.0f,
                                               .c = dx.data,
                                               .ldc = in_});
            } else {
                float* dxd = s.dx.data;
                Backend::gemm(gemm_args<float>{
                    .m = n, .n = in_, .k = r, .a = dh, .lda = r, .b = a_.data, .ldb = in_, .c = dxd, .ldc = in_});
                const counter_rng rng = dropout_rng(s);
                const float keep_scale = float(1.0 / (1.0 - double(lora.dropout)));
                const index_t first = s.dropout_row0 * in_;
                for (index_t i = 0; i < n * in_; ++i)
                    if (keeps(rng, first + i)) dx.data[i] += dxd[i] * keep_scale;
            }
        }
    }

    // W +/-= (alpha / r) B A. QLoRA: W' = nf4(dequantize(W) + (alpha / r) B A), keeping W for the unmerge (exact).
    void merge(int sign) {
        if (!targeted_) return;
        if constexpr (quantized) {
            if (sign < 0) {
                qw_ = std::move(qw_unmerged_);
                qw_unmerged_ = nf4_tensor{};
                return;
            }
            std::vector<float> w(std::size_t(qw_.numel()));
            dequantize(qw_, tensor_view<float>{w.data(), qw_.shape()});
            add_product(w.data(), 1.0f);
            qw_unmerged_ = std::move(qw_);
            qw_ = quantize_nf4(cview<float>{w.data(), qw_unmerged_.shape()}, true);
        } else {
            add_product(w_.data, float(sign));
        }
    }

private:
    void add_product(float* w, float sign) const {
        Backend::gemm(gemm_args<float>{.m = out_,
                                       .n = in_,
                                       .k = lora.rank,
                                       .alpha = sign * scale,
                                       .a = b_.data,
                                       .lda = lora.rank,
                                       .b = a_.data,
                                       .ldb = in_,
                                       .beta = 1.0f,
                                       .c = w,
                                       .ldc = in_});
    }
    tensor_view<float> nf4_scratch(const adapter_state& s) const {
        return tensor_view<float>{s.nf4_scratch.data(), {nf4_tile_rows, in_}};
    }
    counter_rng dropout_rng(const adapter_state& s) const {
        return counter_rng(s.dropout_seed,
                           (s.dropout_calls * std::uint64_t(s.n_layers) + std::uint64_t(layer_)) * lora_target_count +
                               std::uint64_t(which_));
    }
    static bool keeps(const counter_rng& rng, index_t i) {
        return double(rng.at(std::uint64_t(i)) >> 11) * 0x1.0p-53 >= double(lora.dropout);
    }
    // dropout(x) into the scratch s.x, (N, in).
    cview<float> dropout_input(cview<float> x, const adapter_state& s) const {
        const tensor_view<float> xd{s.x.data, {x.rows(), x.cols()}};
        const counter_rng rng = dropout_rng(s);
        const float keep_scale = float(1.0 / (1.0 - double(lora.dropout)));
        const index_t n = x.numel(), first = s.dropout_row0 * x.cols();
        for (index_t i = 0; i < n; ++i)
            xd.data[i] = keeps(rng, first + i) ? x.data[i] * keep_scale : 0.0f;
        return xd;
    }

    index_t in_ = 0, out_ = 0, layer_ = 0;
    proj which_ = proj::q;
    bool has_bias_ = false, targeted_ = false;
    tensor_view<float> w_, dw_, bias_, dbias_; // base (w_ empty with an NF4 base)
    nf4_tensor qw_, qw_unmerged_;              // QLoRA: the base, and the one merge() replaced
    tensor_view<float> a_, b_, da_, db_;       // adapter (targeted only)
};

// y_i = p_i(x) for projections that read the same x (q, k, v; gate, up): their dense base products go to the
// backend together (gemm_each: one parallel region for all of them when decoding one token, instead of one
// each), then each adapter path runs. The same results as p_i->forward(y_i, x, h_i, s) one after another.
template <class Projection, std::size_t N>
void forward_together(const std::array<const Projection*, N>& ps, const std::array<tensor_view<float>, N>& ys,
                      cview<float> x, const std::array<tensor_view<float>, N>& hs, const adapter_state& s) {
    if constexpr (Projection::quantized) {
        for (std::size_t i = 0; i < N; ++i)
            ps[i]->forward(ys[i], x, hs[i], s);
    } else {
        std::array<gemm_args<float>, N> products;
        for (std::size_t i = 0; i < N; ++i)
            products[i] = ps[i]->base_product(ys[i], x);
        gemm_each<typename Projection::backend_t, float>(std::span<const gemm_args<float>>(products));
        for (std::size_t i = 0; i < N; ++i)
            ps[i]->forward_adapter(ys[i], x, hs[i], s);
    }
}

} // namespace tl
