// tinylm/cuda/decoder_step_moe.hpp: decoder_step's mixture-of-experts layers (cuda/decoder_step.hpp declares them,
// with what each does): routing, dispatch and the experts' grouped products forward, the balancing statistics and
// loss (summed over the ranks when a hook is set), and the experts' and the router's backward. Included by
// decoder_step.hpp, not on its own.
#pragma once

#include <tinylm/cuda/decoder_step.hpp>

namespace tl::gpu {

template <class Ex>
void decoder_step<Ex>::moe_start_forward() {
    ex_.zero(buf("moe.prob_sum"), plan_.at("moe.prob_sum").bytes);
    std::fill(moe_counts_.begin(), moe_counts_.end(), 0.0);
}

template <class Ex>
void decoder_step<Ex>::moe_forward(int l, bool onwards) {
    const long long n = n_, k = c_.moe.top_k, nk = n * k;
    const int d = c_.d_model, ff = c_.d_ff, experts = c_.moe.n_experts;
    const std::string at = "model.layers." + std::to_string(l) + ".";
    float *probs = layer(l, "moe.probs"), *gate_up = layer(l, "moe.gate_up"), *hidden = layer(l, "moe.hidden");
    std::int32_t *slot_row = moe_int(l, "moe.slot_row"), *row_token = moe_int(l, "moe.row_token");
    linear(probs, operand(layer(l, "normed2"), n * d, "scratch.bf16.a"),
           weight_operand(parameter(at + "mlp.gate.weight")), n, experts, d);
    ex_.moe_route(probs, moe_int(l, "moe.expert"), layer(l, "moe.weight"), n, experts, int(k));
    ex_.moe_dispatch(moe_int(l, "moe.offsets"), slot_row, row_token, as<std::int32_t>("moe.counts"),
                     moe_int(l, "moe.expert"), nk, int(k), experts);
    std::vector<std::int32_t>& offsets = moe_offsets_[std::size_t(l)];
    ex_.download(offsets.data(), moe_int(l, "moe.offsets"), offsets.size() * sizeof(std::int32_t));
    ex_.moe_gather(f("moe.gathered"), row_token, layer(l, "normed2"), nk, d);
    const void* x = operand(f("moe.gathered"), nk * d, "scratch.bf16.a");
    const float* w_gate_up = parameter(at + "mlp.experts.gate_up_proj");
    for (int e = 0; e < experts; ++e) {
        const long long r0 = offsets[std::size_t(e)], m = offsets[std::size_t(e) + 1] - r0;
        if (m > 0)
            linear(gate_up + r0 * 2 * ff, operand_at(x, r0 * d), weight_operand(w_gate_up + e * 2LL * ff * d), m,
                   2LL * ff, d);
    }
    ex_.moe_swiglu_forward(hidden, gate_up, nk, ff);
    if (!onwards) return; // a recomputation: the forward added the statistics and the output is not needed
    const int b = moe_balance(l);
    ex_.moe_probability_sums(as<double>("moe.prob_sum") + b * experts, probs, balance_tokens_, experts);
    long long* layer_counts = moe_layer_counts_.data() + std::ptrdiff_t(l) * experts;
    if (balance_tokens_ == n) {
        for (int e = 0; e < experts; ++e)
            layer_counts[e] = offsets[std::size_t(e) + 1] - offsets[std::size_t(e)];
    } else { // validation of a padded batch: the choices of the real tokens only (token-major slots)
        const std::size_t real = std::size_t(balance_tokens_ * k);
        ex_.download(moe_chosen_.data(), moe_int(l, "moe.expert"), real * sizeof(std::int32_t));
        std::fill_n(layer_counts, experts, 0LL);
        for (std::size_t s = 0; s < real; ++s)
            ++layer_counts[moe_chosen_[s]];
    }
    for (int e = 0; e < experts; ++e)
        moe_counts_[std::size_t(b * experts + e)] += double(layer_counts[e]);
    const void* h = operand(hidden, nk * ff, "scratch.bf16.b");
    const float* w_down = parameter(at + "mlp.experts.down_proj");
    for (int e = 0; e < experts; ++e) {
        const long long r0 = offsets[std::size_t(e)], m = offsets[std::size_t(e) + 1] - r0;
        if (m > 0)
            linear(f("moe.rows") + r0 * d, operand_at(h, r0 * ff), weight_operand(w_down + e * (long long)d * ff), m, d,
                   ff);
    }
    ex_.moe_combine(f("scratch.tmp"), f("moe.rows"), slot_row, layer(l, "moe.weight"), n, int(k), d);
}

template <class Ex>
void decoder_step<Ex>::moe_finish_forward() {
    ex_.download(moe_sums_.data(), buf("moe.prob_sum"), moe_sums_.size() * sizeof(double));
    std::fill(moe_rows_.begin(), moe_rows_.end(), moe_balance_rows());
    moe_update_aux_loss();
}

template <class Ex>
void decoder_step<Ex>::moe_update_aux_loss() {
    const int experts = c_.moe.n_experts, balances = moe_balances();
    aux_loss_ = 0;
    for (int b = 0; b < balances; ++b) {
        const double rows = moe_rows_[std::size_t(b)];
        double s = 0;
        for (int e = 0; e < experts; ++e)
            s += moe_counts_[std::size_t(b * experts + e)] / rows * (moe_sums_[std::size_t(b * experts + e)] / rows);
        aux_loss_ += double(experts) * s / double(balances);
    }
}

template <class Ex>
void decoder_step<Ex>::use_global_balance() {
    const std::size_t experts = std::size_t(c_.moe.n_experts);
    std::vector<double>& packed = balance_statistics_;
    std::size_t at = 0;
    for (std::size_t b = 0; b < moe_rows_.size(); ++b) {
        for (std::size_t e = 0; e < experts; ++e)
            packed[at++] = moe_counts_[b * experts + e];
        for (std::size_t e = 0; e < experts; ++e)
            packed[at++] = moe_sums_[b * experts + e];
        packed[at++] = moe_rows_[b];
    }
    sum_balance_(std::span<double>(packed));
    at = 0;
    for (std::size_t b = 0; b < moe_rows_.size(); ++b) {
        for (std::size_t e = 0; e < experts; ++e)
            moe_counts_[b * experts + e] = packed[at++];
        for (std::size_t e = 0; e < experts; ++e)
            moe_sums_[b * experts + e] = packed[at++];
        moe_rows_[b] = packed[at++];
    }
    moe_update_aux_loss();
}

template <class Ex>
void decoder_step<Ex>::moe_start_backward() {
    const int experts = c_.moe.n_experts;
    const double daux = c_.moe.aux_loss_weight * aux_gradient_scale_ / double(moe_balances());
    moe_aux_scale_ = daux;
    std::vector<double>& aux = moe_aux_;
    for (int l = 0; l < c_.n_layers; ++l) {
        const double rows = moe_rows_[std::size_t(moe_balance(l))];
        const double coefficient = daux != 0.0 ? daux * double(experts) / (rows * rows) : 0.0;
        for (int e = 0; e < experts; ++e)
            aux[std::size_t(l * experts + e)] = coefficient * moe_counts_[std::size_t(moe_balance(l) * experts + e)];
    }
    ex_.upload(buf("moe.aux"), aux.data(), aux.size() * sizeof(double));
}

template <class Ex>
void decoder_step<Ex>::moe_backward(int l) {
    const long long n = n_, k = c_.moe.top_k, nk = n * k;
    const int d = c_.d_model, ff = c_.d_ff, experts = c_.moe.n_experts;
    const std::string at = "model.layers." + std::to_string(l) + ".";
    const std::vector<std::int32_t>& offsets = moe_offsets_[std::size_t(l)];
    float *rows = f("moe.rows"), *dh = f("moe.dhidden"), *dgu = f("moe.dgate_up"), *hidden = layer(l, "moe.hidden");
    const std::int32_t *slot_row = moe_int(l, "moe.slot_row"), *row_token = moe_int(l, "moe.row_token");
    const float *w_down = parameter(at + "mlp.experts.down_proj"),
                *w_gate_up = parameter(at + "mlp.experts.gate_up_proj");
    auto each_expert = [&](auto&& product) {
        for (int e = 0; e < experts; ++e) {
            const long long r0 = offsets[std::size_t(e)], m = offsets[std::size_t(e) + 1] - r0;
            if (m > 0) product(e, r0, m);
        }
    };
    // dy per grouped row, dz = dy down_e; then g = dz . h per slot, dz and dy scaled by the slot's weight.
    ex_.moe_gather(rows, row_token, f("scratch.dx"), nk, d);
    const void* dy = operand(rows, nk * d, "scratch.bf16.a");
    each_expert([&](int e, long long r0, long long m) {
        linear_dx(dh + r0 * ff, operand_at(dy, r0 * d), weight_operand(w_down + e * (long long)d * ff), m, d, ff, 0.0f);
    });
    ex_.moe_weight_gradient(as<double>("moe.dweight"), dh, rows, hidden, slot_row, layer(l, "moe.weight"), nk, ff, d);
    ex_.moe_swiglu_backward(dgu, dh, layer(l, "moe.gate_up"), nk, ff);
    // ddown_e += (w dy)^T h (frozen under an adapter: no weight gradients for the router and the experts)
    float* g_gate_up = lora_ ? nullptr : gradient(at + "mlp.experts.gate_up_proj");
    if (!lora_) {
        const void* wdy = operand(rows, nk * d, "scratch.bf16.a");
        const void* h = operand(hidden, nk * ff, "scratch.bf16.b");
        float* g_down = gradient(at + "mlp.experts.down_proj");
        each_expert([&](int e, long long r0, long long m) {
            linear_dw(g_down + e * (long long)d * ff, operand_at(wdy, r0 * d), operand_at(h, r0 * ff), m, d, ff);
        });
    }
    // dgate_up_e += dgu^T x (x gathered again: the scratch served later layers), the grouped rows' dx = dgu
    // gate_up_e (frozen: the input gradient alone)
    if (!lora_) ex_.moe_gather(f("moe.gathered"), row_token, layer(l, "normed2"), nk, d);
    const void* dg = operand(dgu, nk * 2 * ff, "scratch.bf16.a");
    const void* x = lora_ ? nullptr : operand(f("moe.gathered"), nk * d, "scratch.bf16.b");
    each_expert([&](int e, long long r0, long long m) {
        if (!lora_)
            linear_dw(g_gate_up + e * 2LL * ff * d, operand_at(dg, r0 * 2 * ff), operand_at(x, r0 * d), m, 2LL * ff, d);
        linear_dx(rows + r0 * d, operand_at(dg, r0 * 2 * ff), weight_operand(w_gate_up + e * 2LL * ff * d), m, 2LL * ff,
                  d, 0.0f);
    });
    // The router: d logits, d router += dz^T normed2, d normed2 = dz router; then the experts' dx per token.
    ex_.moe_router_backward(f("moe.dlogits"), layer(l, "moe.probs"), moe_int(l, "moe.expert"), layer(l, "moe.weight"),
                            as<double>("moe.dweight"),
                            moe_aux_scale_ != 0.0 ? as<double>("moe.aux") + l * experts : nullptr, n, experts, int(k));
    const void* dz = operand(f("moe.dlogits"), n * experts, "scratch.bf16.a");
    if (!lora_)
        linear_dw(gradient(at + "mlp.gate.weight"), dz, operand(layer(l, "normed2"), n * d, "scratch.bf16.b"), n,
                  experts, d);
    linear_dx(f("scratch.dnormed"), dz, weight_operand(parameter(at + "mlp.gate.weight")), n, experts, d, 0.0f);
    ex_.moe_combine_backward(f("scratch.dnormed"), rows, slot_row, n, int(k), d);
}

} // namespace tl::gpu
