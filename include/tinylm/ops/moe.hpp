// tinylm/ops/moe.hpp: a sparse mixture-of-experts block as in Mixtral (transformers' MixtralSparseMoeBlock):
// a softmax router with top-k and renormalised weights, SwiGLU experts, and the load-balancing loss.
//
// Shapes: x (N, d); router (E, d); gate_up (E, 2F, d), the gate in rows [0, F) and up in rows [F, 2F) of
// each expert (transformers' fused `experts.gate_up_proj`); down (E, d, F); y (N, d); K = top_k.
//
//   forward:  z = x router^T (N, E);  p_n = softmax(z_n) (in double);  S_n = the K largest p_n (a tie goes to
//             the lower expert);  w_nj = p_n,e_j / sum_{e in S_n} p_n,e   (renormalised, as Mixtral does)
//             h_nj = silu(x_n gate_e^T) * (x_n up_e^T) (F);  o_nj = h_nj down_e^T (d);  y_n = sum_j w_nj o_nj
//   dispatch: the N*K (token, choice) slots are grouped by expert with a counting sort (token order kept);
//             each expert runs its two gemms (B::gemm) on its gathered rows only: no padding to a capacity,
//             no token dropped. The outputs are gathered back per token, so no two threads write one row.
//   aux loss: transformers' load_balancing_loss_func over every layer sharing one moe_balance: with R rows
//             in all, c_e the top-k assignments to expert e and s_e = sum_n p_ne,
//             aux = E * sum_e (c_e / R) * (s_e / R).   (Uniform routing gives K.)
//   backward: g_nj = dy_n . o_nj;  dh_nj = w_nj (dy_n down_e);  ddown_e += sum w_nj dy_n^T h_nj;
//             SwiGLU backward to dgate_up rows;  dgate_up_e += d(gate|up)^T x;  dx_n += sum_j d(gate|up)_nj gate_up_e
//             router: dp_ne = [e in S_n] (g_ne - sum_j w_nj g_nj) / sum_{S_n} p  +  daux * E * c_e / R^2
//                     dz_ne = p_ne (dp_ne - sum_e' p_ne' dp_ne');  drouter += dz^T x;  dx += dz router
//             (the top-k choice and the counts c_e are piecewise constant: no gradient flows through them)
// Parameter gradients accumulate; dx is assigned, or added with grad_write::add.
//
// Memory: moe_cache holds what one layer's forward keeps for its backward (and its expert usage);
// moe_workspace is scratch that layers share; moe_balance sums the aux-loss statistics over layers. All three
// are allocated once from an arena, so neither forward nor backward allocates.
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/arena.hpp>
#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace tl {

// What one forward keeps for its backward; also the expert usage of that forward (for logging).
template <class T>
struct moe_cache {
    tensor_view<T> probs;           // (N, E) router probabilities
    tensor_view<index_t> expert;    // (N, K) chosen experts, by decreasing probability
    tensor_view<T> weight;          // (N, K) renormalised routing weights
    tensor_view<index_t> slot_row;  // (N, K) row of slot (n, j) in the grouped buffers
    tensor_view<index_t> row_token; // (N*K) token of each grouped row
    tensor_view<index_t> offsets;   // (E + 1) expert e owns grouped rows [offsets[e], offsets[e + 1])
    tensor_view<T> gate_up;         // (N*K, 2F) expert pre-activations, grouped
    tensor_view<T> hidden;          // (N*K, F) silu(gate) * up, grouped

    index_t rows() const { return probs.dim(0); }
    index_t n_experts() const { return probs.dim(1); }
    index_t top_k() const { return expert.dim(1); }
    // Tokens routed to expert e by the last forward (each token counts once per expert it chose).
    index_t tokens_of(index_t e) const { return offsets[e + 1] - offsets[e]; }

    static moe_cache allocate(arena& a, index_t rows, index_t d_ff, index_t n_experts, index_t top_k) {
        moe_cache c;
        c.probs = a.allocate<T>({rows, n_experts});
        c.expert = a.allocate<index_t>({rows, top_k});
        c.weight = a.allocate<T>({rows, top_k});
        c.slot_row = a.allocate<index_t>({rows, top_k});
        c.row_token = a.allocate<index_t>({rows * top_k});
        c.offsets = a.allocate<index_t>({n_experts + 1});
        c.gate_up = a.allocate<T>({rows * top_k, 2 * d_ff});
        c.hidden = a.allocate<T>({rows * top_k, d_ff});
        return c;
    }
    // The same buffers for the first `n` rows (a smaller batch than allocated, e.g. a short chunk).
    moe_cache first_rows(index_t n) const {
        const index_t k = top_k();
        return {{probs.data, {n, n_experts()}},
                {expert.data, {n, k}},
                {weight.data, {n, k}},
                {slot_row.data, {n, k}},
                {row_token.data, {n * k}},
                offsets,
                {gate_up.data, {n * k, gate_up.dim(1)}},
                {hidden.data, {n * k, hidden.dim(1)}}};
    }
};

// Scratch shared by the layers (nothing in it outlives one call).
template <class T>
struct moe_workspace {
    tensor_view<T> gathered;     // (N*K, d) inputs of the grouped rows
    tensor_view<T> rows;         // (N*K, d) expert outputs in forward; dy, then dx of the grouped rows in backward
    tensor_view<T> dhidden;      // (N*K, F)
    tensor_view<T> dgate_up;     // (N*K, 2F)
    tensor_view<double> dweight; // (N, K) d(loss)/d(routing weight)
    tensor_view<T> dlogits;      // (N, E)

    static moe_workspace allocate(arena& a, index_t rows, index_t d, index_t d_ff, index_t n_experts, index_t top_k) {
        moe_workspace w;
        w.gathered = a.allocate<T>({rows * top_k, d});
        w.rows = a.allocate<T>({rows * top_k, d});
        w.dhidden = a.allocate<T>({rows * top_k, d_ff});
        w.dgate_up = a.allocate<T>({rows * top_k, 2 * d_ff});
        w.dweight = a.allocate<double>({rows, top_k});
        w.dlogits = a.allocate<T>({rows, n_experts});
        return w;
    }
    moe_workspace first_rows(index_t n) const {
        const index_t k = dweight.dim(1);
        return {{gathered.data, {n * k, gathered.dim(1)}},
                {rows.data, {n * k, rows.dim(1)}},
                {dhidden.data, {n * k, dhidden.dim(1)}},
                {dgate_up.data, {n * k, dgate_up.dim(1)}},
                {dweight.data, {n, k}},
                {dlogits.data, {n, dlogits.dim(1)}}};
    }
};

// The load-balancing statistics of the layers that share one auxiliary loss (transformers pools all layers
// before it multiplies, so the loss is not a sum of per-layer losses). clear() before the first layer.
struct moe_balance {
    tensor_view<double> counts;   // (E) top-k assignments per expert
    tensor_view<double> prob_sum; // (E) router probability per expert, summed over rows
    double rows = 0;
    index_t top_k = 0;

    static moe_balance allocate(arena& a, index_t n_experts) {
        return {a.allocate<double>({n_experts}), a.allocate<double>({n_experts})};
    }
    void clear() {
        counts.fill(0.0);
        prob_sum.fill(0.0);
        rows = 0;
    }
    // aux = E * sum_e (c_e / R) (s_e / R); 0 before any row.
    double loss() const {
        if (rows == 0) return 0.0;
        double s = 0;
        for (index_t e = 0; e < counts.numel(); ++e)
            s += counts[e] / rows * (prob_sum[e] / rows);
        return double(counts.numel()) * s;
    }
};

namespace detail {
template <class T>
void moe_check(const char* op, cview<T> x, cview<T> router, cview<T> gate_up, cview<T> down, const moe_cache<T>& c) {
    const index_t n = x.rows(), d = x.cols(), e = router.dim(0), f = down.shape.rank == 3 ? down.dim(2) : 0;
    check(x.shape.rank == 2 && router.shape.rank == 2 && router.dim(1) == d, [&] {
        return std::string(op) + ": router has shape " + router.shape.str() + " but x " + x.shape.str() +
               " needs (n_experts, " + std::to_string(d) + ")";
    });
    expect_shape(op, "gate_up", gate_up, {e, 2 * f, d});
    expect_shape(op, "down", down, {e, d, f});
    const index_t k = c.expert.shape.rank == 2 ? c.expert.dim(1) : 0;
    check(k >= 1 && k <= e, [&] {
        return std::string(op) + ": top_k " + std::to_string(k) + " must be in [1, n_experts = " + std::to_string(e) +
               "]";
    });
    expect_shape(op, "cache.probs", c.probs, {n, e});
    expect_shape(op, "cache.expert", c.expert, {n, k});
    expect_shape(op, "cache.gate_up", c.gate_up, {n * k, 2 * f});
    expect_shape(op, "cache.hidden", c.hidden, {n * k, f});
}
template <class T>
void moe_check_workspace(const char* op, const moe_workspace<T>& w, index_t n, index_t d, index_t f, index_t e,
                         index_t k) {
    expect_shape(op, "workspace.gathered", w.gathered, {n * k, d});
    expect_shape(op, "workspace.rows", w.rows, {n * k, d});
    expect_shape(op, "workspace.dhidden", w.dhidden, {n * k, f});
    expect_shape(op, "workspace.dgate_up", w.dgate_up, {n * k, 2 * f});
    expect_shape(op, "workspace.dweight", w.dweight, {n, k});
    expect_shape(op, "workspace.dlogits", w.dlogits, {n, e});
}
} // namespace detail

template <class B, class T>
requires BackendFor<B, T>
void moe_forward(tensor_view<T> y, const moe_cache<T>& c, const moe_workspace<T>& ws, cview<T> x, cview<T> router,
                 cview<T> gate_up, cview<T> down, moe_balance* balance = nullptr) {
    detail::moe_check("moe", x, router, gate_up, down, c);
    const index_t n = x.rows(), d = x.cols(), n_exp = router.dim(0), f = down.dim(2), k = c.top_k();
    detail::moe_check_workspace("moe", ws, n, d, f, n_exp, k);
    expect_same_shape("moe", "y", y, x);
    if (balance) {
        expect_shape("moe", "balance.counts", balance->counts, {n_exp});
        check(balance->top_k == 0 || balance->top_k == k, "moe: layers sharing a moe_balance must use one top_k");
        balance->top_k = k;
    }
    // Router: logits, then softmax and top-k per row in double.
    B::gemm(gemm_args<T>{.trans_b = true,
                         .m = n,
                         .n = n_exp,
                         .k = d,
                         .a = x.data,
                         .lda = d,
                         .b = router.data,
                         .ldb = d,
                         .c = c.probs.data,
                         .ldc = n_exp});
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < n; ++r) {
        T* p = c.probs.row(r);
        const double m = double(*std::max_element(p, p + n_exp));
        double s = 0;
        for (index_t e = 0; e < n_exp; ++e)
            s += std::exp(double(p[e]) - m);
        for (index_t e = 0; e < n_exp; ++e)
            p[e] = T(std::exp(double(p[e]) - m) / s);
        index_t* chosen = c.expert.row(r);
        double kept = 0;
        for (index_t j = 0; j < k; ++j) {
            index_t best = -1;
            for (index_t e = 0; e < n_exp; ++e) {
                if (std::find(chosen, chosen + j, e) != chosen + j) continue;
                if (best < 0 || p[e] > p[best]) best = e;
            }
            chosen[j] = best;
            kept += double(p[best]);
        }
        for (index_t j = 0; j < k; ++j)
            c.weight.row(r)[j] = T(double(p[chosen[j]]) / kept);
    }
    // Group the slots by expert: a counting sort over (token, choice), stable in token order. offsets[e]
    // serves as expert e's write cursor, then is shifted back to the start of its range.
    std::fill_n(c.offsets.data, n_exp + 1, index_t(0));
    for (index_t i = 0; i < n * k; ++i)
        ++c.offsets[c.expert[i] + 1];
    for (index_t e = 0; e < n_exp; ++e)
        c.offsets[e + 1] += c.offsets[e];
    for (index_t i = 0; i < n * k; ++i) {
        const index_t r = c.offsets[c.expert[i]]++;
        c.slot_row[i] = r;
        c.row_token[r] = i / k;
    }
    for (index_t e = n_exp - 1; e > 0; --e)
        c.offsets[e] = c.offsets[e - 1];
    c.offsets[0] = 0;
    const tensor_view<T> xg = ws.gathered, out = ws.rows;
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < n * k; ++r)
        std::copy_n(x.row(c.row_token[r]), d, xg.row(r));
    for (index_t e = 0; e < n_exp; ++e) {
        const index_t r0 = c.offsets[e], rows = c.offsets[e + 1] - r0;
        if (rows == 0) continue;
        B::gemm(gemm_args<T>{.trans_b = true,
                             .m = rows,
                             .n = 2 * f,
                             .k = d,
                             .a = xg.row(r0),
                             .lda = d,
                             .b = gate_up.data + e * 2 * f * d,
                             .ldb = d,
                             .c = c.gate_up.row(r0),
                             .ldc = 2 * f});
#pragma omp parallel for schedule(static)
        for (index_t r = r0; r < r0 + rows; ++r) {
            const T* gu = c.gate_up.row(r);
            T* h = c.hidden.row(r);
            for (index_t i = 0; i < f; ++i) {
                const double g = double(gu[i]);
                h[i] = T(g / (1.0 + std::exp(-g)) * double(gu[f + i]));
            }
        }
        B::gemm(gemm_args<T>{.trans_b = true,
                             .m = rows,
                             .n = d,
                             .k = f,
                             .a = c.hidden.row(r0),
                             .lda = f,
                             .b = down.data + e * d * f,
                             .ldb = f,
                             .c = out.row(r0),
                             .ldc = d});
    }
    // Combine: each token gathers its K weighted expert outputs.
#pragma omp parallel for schedule(static)
    for (index_t t = 0; t < n; ++t) {
        T* yt = y.row(t);
        for (index_t i = 0; i < d; ++i) {
            double acc = 0;
            for (index_t j = 0; j < k; ++j)
                acc += double(c.weight.row(t)[j]) * double(out.row(c.slot_row.row(t)[j])[i]);
            yt[i] = T(acc);
        }
    }
    if (balance) {
        for (index_t e = 0; e < n_exp; ++e) {
            balance->counts[e] += double(c.tokens_of(e));
            double s = 0;
            for (index_t t = 0; t < n; ++t)
                s += double(c.probs.row(t)[e]);
            balance->prob_sum[e] += s;
        }
        balance->rows += double(n);
    }
}

// dy (N, d) is d(loss)/dy; daux is d(loss)/d(aux loss) (0: no aux term), with `balance` the statistics the
// forward of every layer sharing the aux loss added up.
template <class B, class T>
requires BackendFor<B, T>
void moe_backward(tensor_view<T> dx, tensor_view<T> drouter, tensor_view<T> dgate_up, tensor_view<T> ddown, cview<T> dy,
                  cview<T> x, cview<T> router, cview<T> gate_up, cview<T> down, const moe_cache<T>& c,
                  const moe_workspace<T>& ws, const moe_balance* balance = nullptr, double daux = 0.0,
                  grad_write mode = grad_write::assign) {
    detail::moe_check("moe_backward", x, router, gate_up, down, c);
    const index_t n = x.rows(), d = x.cols(), n_exp = router.dim(0), f = down.dim(2), k = c.top_k();
    detail::moe_check_workspace("moe_backward", ws, n, d, f, n_exp, k);
    expect_same_shape("moe_backward", "dx", dx, x);
    expect_same_shape("moe_backward", "dy", dy, x);
    // Empty weight gradients (a frozen MoE block under a LoRA adapter) skip their products.
    if (drouter.data) expect_same_shape("moe_backward", "drouter", drouter, router);
    if (dgate_up.data) expect_same_shape("moe_backward", "dgate_up", dgate_up, gate_up);
    if (ddown.data) expect_same_shape("moe_backward", "ddown", ddown, down);
    check(daux == 0.0 || (balance && balance->rows > 0),
          "moe_backward: the aux-loss gradient needs the moe_balance that the forward filled");
    const tensor_view<T> rows = ws.rows, xg = ws.gathered, dh = ws.dhidden, dgu = ws.dgate_up;

    // dy of each grouped row, then dz = dy down_e (N*K, F).
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < n * k; ++r)
        std::copy_n(dy.row(c.row_token[r]), d, rows.row(r));
    for (index_t e = 0; e < n_exp; ++e) {
        const index_t r0 = c.offsets[e], m = c.offsets[e + 1] - r0;
        if (m == 0) continue;
        B::gemm(gemm_args<T>{.m = m,
                             .n = f,
                             .k = d,
                             .a = rows.row(r0),
                             .lda = d,
                             .b = down.data + e * d * f,
                             .ldb = f,
                             .c = dh.row(r0),
                             .ldc = f});
    }
    // g_nj = dz . h (= dy . o); then scale dz and dy by the routing weight.
#pragma omp parallel for schedule(static)
    for (index_t t = 0; t < n; ++t)
        for (index_t j = 0; j < k; ++j) {
            const index_t r = c.slot_row.row(t)[j];
            const double w = double(c.weight.row(t)[j]);
            T* dz = dh.row(r);
            const T* h = c.hidden.row(r);
            double g = 0;
            for (index_t i = 0; i < f; ++i) {
                g += double(dz[i]) * double(h[i]);
                dz[i] = T(double(dz[i]) * w);
            }
            ws.dweight.row(t)[j] = g;
            T* dyr = rows.row(r);
            for (index_t i = 0; i < d; ++i)
                dyr[i] = T(double(dyr[i]) * w);
        }
        // ddown_e += (w dy)^T h; SwiGLU backward; dgate_up_e += dgu^T x; dx rows = dgu gate_up_e.
#pragma omp parallel for schedule(static)
    for (index_t r = 0; r < n * k; ++r) {
        std::copy_n(x.row(c.row_token[r]), d, xg.row(r));
        const T* gu = c.gate_up.row(r);
        const T* dhr = dh.row(r);
        T* out = dgu.row(r);
        for (index_t i = 0; i < f; ++i) {
            const double g = double(gu[i]), u = double(gu[f + i]), sig = 1.0 / (1.0 + std::exp(-g));
            out[i] = T(double(dhr[i]) * u * sig * (1.0 + g * (1.0 - sig)));
            out[f + i] = T(double(dhr[i]) * g * sig);
        }
    }
    for (index_t e = 0; e < n_exp; ++e) {
        const index_t r0 = c.offsets[e], m = c.offsets[e + 1] - r0;
        if (m == 0) continue;
        if (ddown.data)
            B::gemm(gemm_args<T>{.trans_a = true,
                                 .m = d,
                                 .n = f,
                                 .k = m,
                                 .a = rows.row(r0),
                                 .lda = d,
                                 .b = c.hidden.row(r0),
                                 .ldb = f,
                                 .beta = T(1),
                                 .c = ddown.data + e * d * f,
                                 .ldc = f});
        if (dgate_up.data)
            B::gemm(gemm_args<T>{.trans_a = true,
                                 .m = 2 * f,
                                 .n = d,
                                 .k = m,
                                 .a = dgu.row(r0),
                                 .lda = 2 * f,
                                 .b = xg.row(r0),
                                 .ldb = d,
                                 .beta = T(1),
                                 .c = dgate_up.data + e * 2 * f * d,
                                 .ldc = d});
        B::gemm(gemm_args<T>{.m = m,
                             .n = d,
                             .k = 2 * f,
                             .a = dgu.row(r0),
                             .lda = 2 * f,
                             .b = gate_up.data + e * 2 * f * d,
                             .ldb = d,
                             .c = rows.row(r0),
                             .ldc = d});
    }
    // Router: through the renormalised weights (chosen experts) and the aux loss (every expert).
    const double aux_scale =
        daux != 0.0 ? daux * double(n_exp) / (balance->rows * balance->rows) : 0.0; // daux * E / R^2, times c_e
#pragma omp parallel for schedule(static)
    for (index_t t = 0; t < n; ++t) {
        const T* p = c.probs.row(t);
        const index_t* chosen = c.expert.row(t);
        double kept = 0, gbar = 0;
        for (index_t j = 0; j < k; ++j) {
            kept += double(p[chosen[j]]);
            gbar += double(c.weight.row(t)[j]) * ws.dweight.row(t)[j];
        }
        auto dp = [&](index_t e) {
            double v = aux_scale != 0.0 ? aux_scale * balance->counts[e] : 0.0;
            for (index_t j = 0; j < k; ++j)
                if (chosen[j] == e) v += (ws.dweight.row(t)[j] - gbar) / kept;
            return v;
        };
        double dot = 0;
        for (index_t e = 0; e < n_exp; ++e)
            dot += double(p[e]) * dp(e);
        for (index_t e = 0; e < n_exp; ++e)
            ws.dlogits.row(t)[e] = T(double(p[e]) * (dp(e) - dot));
    }
    if (drouter.data)
        B::gemm(gemm_args<T>{.trans_a = true,
                             .m = n_exp,
                             .n = d,
                             .k = n,
                             .a = ws.dlogits.data,
                             .lda = n_exp,
                             .b = x.data,
                             .ldb = d,
                             .beta = T(1),
                             .c = drouter.data,
                             .ldc = d});
    B::gemm(gemm_args<T>{.m = n,
                         .n = d,
                         .k = n_exp,
                         .a = ws.dlogits.data,
                         .lda = n_exp,
                         .b = router.data,
                         .ldb = d,
                         .beta = T(mode == grad_write::add ? 1 : 0),
                         .c = dx.data,
                         .ldc = d});
    // The experts' input gradients, gathered back per token.
#pragma omp parallel for schedule(static)
    for (index_t t = 0; t < n; ++t) {
        T* dxt = dx.row(t);
        for (index_t i = 0; i < d; ++i) {
            double acc = double(dxt[i]);
            for (index_t j = 0; j < k; ++j)
                acc += double(rows.row(c.slot_row.row(t)[j])[i]);
            dxt[i] = T(acc);
        }
    }
}

} // namespace tl
