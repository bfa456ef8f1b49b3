// tinylm/cuda/attention_products.hpp: attention through matrix products, the fast path of decoder_step
// (decoder_plan.hpp's attention_path::products), written once against an executor (cpu_ops or gpu_ops).
//
// Per chunk of sequences, per query head h (query head h reads key/value head h / (Hq / Hkv), GQA):
//   forward   s_h = scale q_h k^T            (T x T scores, a batched product over the chunk's sequences)
//             p_h = softmax of s_h over the keys each query sees, 0 elsewhere; lse saved  (row kernel)
//             out_h = p_h v
//   backward  delta = dout . out per query row                                             (row kernel)
//             s_h again, p_h = exp(s_h - lse) over the same keys                           (recomputed)
//             dp_h = dout_h v^T;  dv += p_h^T dout_h;  ds_h = p_h (dp_h - delta) scale     (row kernel)
//             dq_h = ds_h k;      dk += ds_h^T q_h
// The masks (causality, window, documents, padding, or bidirectional) live only in the row kernels
// (attention_row.hpp's attention_keys): every key a query does not see gets p = 0, so the products run over whole
// T x T tiles, on tensor cores in bf16, and the masked half of a causal product is wasted work (about a third of
// the step's attention time at T = 512; a tiled kernel that skips it is left for later: docs/gpu.md).
// With bf16 products the operands (q, k, v, dout, p, ds) are rounded to bf16 right before their products and
// everything is accumulated and stored in f32. Gradients of a key/value head add the heads of its group in
// ascending order (the first assigns): deterministic, no atomics. Memory: the scores of `chunk` sequences.
#pragma once

#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace tl::gpu {

// The products path's scratch (decoder_plan.hpp plans it as attention.*).
struct attention_scratch {
    float* scores = nullptr;  // chunk Hq T x T
    float* dscores = nullptr; // chunk Hq T x T
    long long chunk = 1;      // sequences per chunk of scores
    // bf16 products: copies of the operands (N q, N kv, N kv, N q, chunk Hq T T); all null for f32 products.
    std::uint16_t *q = nullptr, *k = nullptr, *v = nullptr, *dout = nullptr, *p = nullptr;
    bool bf16() const { return p != nullptr; }
};

template <class Ex>
class attention_products {
public:
    attention_products(Ex& ex, const attention_scratch& scratch) : ex_(ex), x_(scratch) {}

    // out (B, T, Hq, D), lse (B, Hq, T) as attention_row.hpp lays them out.
    void forward(float* out, float* lse, const float* q, const float* k, const float* v, const attention_masks& m,
                 const attention_dims& s) {
        check_scratch();
        const operand q16 = convert(q, s.batch * s.time * s.q_heads * s.head_dim, x_.q);
        const operand k16 = convert(k, s.batch * s.time * s.kv_heads * s.head_dim, x_.k);
        const operand v16 = convert(v, s.batch * s.time * s.kv_heads * s.head_dim, x_.v);
        for (long long b0 = 0; b0 < s.batch; b0 += x_.chunk) {
            const chunk c = chunk_of(s, b0);
            scores(x_.scores, q16, k16, s, c);
            ex_.attention_softmax(x_.scores, lse, m, s, c.b0, c.nb);
            const operand p = convert(x_.scores, c.scores(), x_.p);
            times_scores(out, false, p, false, v16, true, s, c); // out = p v
        }
    }

    // dq, dk, dv assigned; delta (B, Hq, T) is scratch, filled first.
    void backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q, const float* k,
                  const float* v, const float* out, const float* lse, const attention_masks& m,
                  const attention_dims& s) {
        check_scratch();
        ex_.attention_delta(delta, dout, out, s);
        const long long nq = s.batch * s.time * s.q_heads * s.head_dim,
                        nkv = s.batch * s.time * s.kv_heads * s.head_dim;
        const operand q16 = convert(q, nq, x_.q), k16 = convert(k, nkv, x_.k), v16 = convert(v, nkv, x_.v);
        const operand do16 = convert(dout, nq, x_.dout);
        for (long long b0 = 0; b0 < s.batch; b0 += x_.chunk) {
            const chunk c = chunk_of(s, b0);
            scores(x_.scores, q16, k16, s, c); // recomputed
            ex_.attention_probabilities(x_.scores, lse, m, s, c.b0, c.nb);
            const operand p = convert(x_.scores, c.scores(), x_.p);
            for (int h = 0; h < s.q_heads; ++h) { // dp_h = dout_h v^T
                matmul_args g;
                g.trans_b = true, g.m = s.time, g.n = s.time, g.k = s.head_dim;
                operands(g, do16, head_slice(false, h, s, c), v16, head_slice(true, h, s, c), s);
                scores_of(g, x_.dscores, h, s);
                run(g, c);
            }
            times_scores(dv, true, p, true, do16, false, s, c); // dv = p^T dout
            ex_.attention_dscores(x_.dscores, x_.scores, delta, s, c.b0, c.nb);
            const operand ds = convert(x_.dscores, c.scores(), x_.p); // p's copy is no longer needed
            times_scores(dq, false, ds, false, k16, true, s, c);      // dq = ds k
            times_scores(dk, true, ds, true, q16, false, s, c);       // dk = ds^T q
        }
    }

private:
    void check_scratch() const {
        check(x_.chunk > 0 && x_.scores && x_.dscores,
              "gpu::attention_products: scores, dscores and a chunk of at least one sequence are needed");
    }
    // An operand: f32 data, or its bf16 copy.
    struct operand {
        const void* data;
        std::size_t element_bytes;
        const void* at(long long offset) const {
            return static_cast<const std::byte*>(data) + std::size_t(offset) * element_bytes;
        }
    };
    operand convert(const float* x, long long count, std::uint16_t* copy) {
        if (!x_.bf16()) return {x, sizeof(float)};
        ex_.to_bf16(copy, x, count);
        return {copy, sizeof(std::uint16_t)};
    }
    // The sequences b0 .. b0 + nb - 1 of one chunk of scores.
    struct chunk {
        long long b0, nb, T;
        int heads;
        long long scores() const { return nb * heads * T * T; }
    };
    chunk chunk_of(const attention_dims& s, long long b0) const {
        return {b0, std::min(x_.chunk, s.batch - b0), s.time, s.q_heads};
    }
    void run(matmul_args g, const chunk& c) {
        g.batch = c.nb;
        g.input = x_.bf16() ? matmul_input::bf16 : matmul_input::f32;
        ex_.matmul(g);
    }
    // Head h's slice of a query-head tensor (B, T, Hq, D) or a key/value one (B, T, Hkv, D) for the chunk's first
    // sequence: its offset in elements and its row stride; a product steps T rows to the next sequence.
    struct slice {
        long long offset, ld;
    };
    static slice head_slice(bool kv, int h, const attention_dims& s, const chunk& c) {
        if (kv) return {attention_kv_offset(c.b0, 0, attention_kv_head(h, s), s), (long long)s.kv_heads * s.head_dim};
        return {attention_q_offset(c.b0, 0, h, s), (long long)s.q_heads * s.head_dim};
    }
    // c (T, T) of head h in a chunk's scores: row i of sequence b at ((b - b0) Hq + h) T + i.
    static void scores_of(matmul_args& g, float* scores, int h, const attention_dims& s) {
        g.c = scores + h * s.time * s.time, g.ldc = s.time, g.stride_c = s.q_heads * s.time * s.time;
    }
    // a and b of a product of two head slices.
    static void operands(matmul_args& g, const operand& a, slice sa, const operand& b, slice sb,
                         const attention_dims& s) {
        g.a = a.at(sa.offset), g.lda = sa.ld, g.stride_a = s.time * sa.ld;
        g.b = b.at(sb.offset), g.ldb = sb.ld, g.stride_b = s.time * sb.ld;
    }
    // scores_h = scale q_h k^T for every head.
    void scores(float* out, const operand& q, const operand& k, const attention_dims& s, const chunk& c) {
        for (int h = 0; h < s.q_heads; ++h) {
            matmul_args g;
            g.trans_b = true, g.m = s.time, g.n = s.time, g.k = s.head_dim, g.alpha = attention_scale(s.head_dim);
            operands(g, q, head_slice(false, h, s, c), k, head_slice(true, h, s, c), s);
            scores_of(g, out, h, s);
            run(g, c);
        }
    }
    // y_h (T, D) (+)= op(scores_h) (T, T) x_h (T, D) for every head. x and y are query-head tensors or key/value
    // ones (*_kv); into a key/value head the heads of its group add up in ascending order (the first assigns).
    void times_scores(float* y, bool y_kv, const operand& scores, bool transpose, const operand& x, bool x_kv,
                      const attention_dims& s, const chunk& c) {
        const int group = s.q_heads / s.kv_heads;
        for (int h = 0; h < s.q_heads; ++h) {
            matmul_args g;
            g.trans_a = transpose, g.m = s.time, g.n = s.head_dim, g.k = s.time;
            g.a = scores.at(h * s.time * s.time), g.lda = s.time, g.stride_a = s.q_heads * s.time * s.time;
            const slice in = head_slice(x_kv, h, s, c), to = head_slice(y_kv, h, s, c);
            g.b = x.at(in.offset), g.ldb = in.ld, g.stride_b = s.time * in.ld;
            g.c = y + to.offset, g.ldc = to.ld, g.stride_c = s.time * to.ld;
            g.beta = y_kv && h % group != 0 ? 1.0f : 0.0f;
            run(g, c);
        }
    }

    Ex& ex_;
    attention_scratch x_;
};

} // namespace tl::gpu
