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
// The masks (causality, window, documents, padding, or bidirectional) live in the row kernels
// (attention_row.hpp's attention_keys): every key a query does not see gets p = 0.
//
// Masked tiles skipped: a causal model's queries are split into blocks of query_block rows, and every product
// runs over the tiles a block's queries can see only (attention_row.hpp's attention_block_of): queries r0 .. r1 - 1
// against keys k0 .. r1 - 1, k0 = 0, or with a window the key block holding r0 - w + 1 (padding keeps k0 = 0).
// So s, p v, dp and ds k are one product per query block, and p^T dout, ds^T q one per key block over the queries
// that see it (the same tiles transposed: keys c0 .. c1 - 1 against queries c0 .. Q1 - 1). At T = 512 with blocks
// of 128 the products do 62.5 % of the whole ones' multiply-adds (attention_products_work; docs/gpu.md's table).
// The scores outside the computed tiles are never written nor read (stale, possibly NaN: the row kernels keep to
// attention_computed_keys). Bidirectional attention, or T <= query_block: one block, the whole T x T products.
// Default block 128: cuBLASLt's tensor-core tiles on Hopper are 128 (or 64) rows high, so a block is one row of
// tiles and its products stay large; smaller blocks waste less (the blocked area is about T^2 / 2 + T B / 2
// against the T (T + 1) / 2 needed) but multiply the number of products (7 per head and block) and thin them.
// Bits: the f32 results are the same sums as the whole products' minus terms that are exact zeros (p = 0, ds = 0),
// but a product's summation order depends on its k extent (blocking, split-k), so they need not be bit-identical
// to query_block 0; the CPU test bounds blocks against no blocks (1e-6 of scale) and both against f64.
//
// With bf16 products the operands (q, k, v, dout, p, ds) are rounded to bf16 right before their products and
// everything is accumulated and stored in f32. Gradients of a key/value head add the heads of its group in
// ascending order (the first assigns; each key block is written by one product per head): deterministic, no
// atomics. Memory: the scores of `chunk` sequences (whole T x T matrices; only the computed tiles are touched).
#pragma once

#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tl::gpu {

// The products path's scratch (decoder_plan.hpp plans it as attention.*).
struct attention_scratch {
    float* scores = nullptr;                               // chunk Hq T x T
    float* dscores = nullptr;                              // chunk Hq T x T
    long long chunk = 1;                                   // sequences per chunk of scores
    long long query_block = attention_default_query_block; // queries per block (causal); 0: whole T x T products
    // bf16 products: copies of the operands (N q, N kv, N kv, N q, chunk Hq T T); all null for f32 products.
    std::uint16_t *q = nullptr, *k = nullptr, *v = nullptr, *dout = nullptr, *p = nullptr;
    bool bf16() const { return p != nullptr; }
};

// The query blocks of one sequence (attention_row.hpp's attention_block_of, r0 ascending), and for the
// transposed products the queries that see each key block: key block n is query block n's rows c0 .. c1 - 1
// (its tiles run down the column to the last query block whose k0 is at most c0, k0 being block-aligned).
class attention_query_blocks {
public:
    attention_query_blocks(const attention_dims& s, bool padding, long long query_block) {
        for (long long r0 = 0; r0 < s.time;) {
            blocks_.push_back(attention_block_of(r0, s, padding, query_block));
            r0 = blocks_.back().r1;
        }
    }
    std::size_t size() const { return blocks_.size(); }
    const attention_block& operator[](std::size_t n) const { return blocks_[n]; }
    auto begin() const { return blocks_.begin(); }
    auto end() const { return blocks_.end(); }
    // Q1: the queries c0 .. Q1 - 1 whose computed tiles hold key block n.
    long long queries_seeing(std::size_t n) const {
        std::size_t last = n;
        while (last + 1 < blocks_.size() && blocks_[last + 1].k0 <= blocks_[n].r0)
            ++last;
        return blocks_[last].r1;
    }
    // Score elements computed per (sequence, query head): the sum of the blocks' (r1 - r0) (r1 - k0).
    long long computed_scores() const {
        long long area = 0;
        for (const attention_block& b : blocks_)
            area += (b.r1 - b.r0) * (b.r1 - b.k0);
        return area;
    }

private:
    std::vector<attention_block> blocks_;
};

// Multiply-adds of the products per (sequence, query head) with query blocks of query_block (0: none): the forward
// (s and p v) and the backward (s again, dp, dv, dq, dk), each A D with A the computed scores (T^2 without
// blocks; the transposed products cover the same tiles).
struct attention_product_work {
    long long computed_scores; // A
    long long forward, backward;
};
inline attention_product_work attention_products_work(const attention_dims& s, bool padding, long long query_block) {
    const long long area = attention_query_blocks(s, padding, query_block).computed_scores();
    return {area, 2 * area * s.head_dim, 5 * area * s.head_dim};
}

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
            const chunk c = chunk_of(s, m, b0);
            scores(x_.scores, q16, k16, s, c);
            ex_.attention_softmax(x_.scores, lse, m, s, c.b0, c.nb, x_.query_block);
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
            const chunk c = chunk_of(s, m, b0);
            scores(x_.scores, q16, k16, s, c); // recomputed
            ex_.attention_probabilities(x_.scores, lse, m, s, c.b0, c.nb, x_.query_block);
            const operand p = convert(x_.scores, c.scores(), x_.p);
            for (int h = 0; h < s.q_heads; ++h) // dp_h = dout_h v^T
                for (const attention_block& qb : c.blocks) {
                    matmul_args g;
                    g.trans_b = true, g.m = qb.r1 - qb.r0, g.n = qb.r1 - qb.k0, g.k = s.head_dim;
                    operands(g, do16, head_slice(false, h, s, c), qb.r0, v16, head_slice(true, h, s, c), qb.k0, s);
                    scores_of(g, x_.dscores, h, qb.r0, qb.k0, s);
                    run(g, c);
                }
            times_scores(dv, true, p, true, do16, false, s, c); // dv = p^T dout
            ex_.attention_dscores(x_.dscores, x_.scores, delta, m, s, c.b0, c.nb, x_.query_block);
            const operand ds = convert(x_.dscores, c.scores(), x_.p); // p's copy is no longer needed
            times_scores(dq, false, ds, false, k16, true, s, c);      // dq = ds k
            times_scores(dk, true, ds, true, q16, false, s, c);       // dk = ds^T q
        }
    }

private:
    void check_scratch() const {
        check(x_.chunk > 0 && x_.scores && x_.dscores && x_.query_block >= 0,
              "gpu::attention_products: scores, dscores, a chunk of at least one sequence and a query block of 0 "
              "(none) or more are needed");
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
    // The sequences b0 .. b0 + nb - 1 of one chunk of scores, and the query blocks of a sequence.
    struct chunk {
        long long b0, nb, T;
        int heads;
        attention_query_blocks blocks;
        long long scores() const { return nb * heads * T * T; }
    };
    chunk chunk_of(const attention_dims& s, const attention_masks& m, long long b0) const {
        return {b0, std::min(x_.chunk, s.batch - b0), s.time, s.q_heads,
                attention_query_blocks(s, m.key_lengths != nullptr, x_.query_block)};
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
    // c: the tile from row i, column j of head h's (T, T) scores in a chunk: row i of sequence b at
    // ((b - b0) Hq + h) T + i.
    static void scores_of(matmul_args& g, float* scores, int h, long long i, long long j, const attention_dims& s) {
        g.c = scores + (h * s.time + i) * s.time + j, g.ldc = s.time, g.stride_c = s.q_heads * s.time * s.time;
    }
    // a and b of a product of two head slices, from their rows ia and ib.
    static void operands(matmul_args& g, const operand& a, slice sa, long long ia, const operand& b, slice sb,
                         long long ib, const attention_dims& s) {
        g.a = a.at(sa.offset + ia * sa.ld), g.lda = sa.ld, g.stride_a = s.time * sa.ld;
        g.b = b.at(sb.offset + ib * sb.ld), g.ldb = sb.ld, g.stride_b = s.time * sb.ld;
    }
    // scores_h = scale q_h k^T for every head, over each query block's tiles.
    void scores(float* out, const operand& q, const operand& k, const attention_dims& s, const chunk& c) {
        for (int h = 0; h < s.q_heads; ++h)
            for (const attention_block& qb : c.blocks) {
                matmul_args g;
                g.trans_b = true, g.m = qb.r1 - qb.r0, g.n = qb.r1 - qb.k0, g.k = s.head_dim;
                g.alpha = attention_scale(s.head_dim);
                operands(g, q, head_slice(false, h, s, c), qb.r0, k, head_slice(true, h, s, c), qb.k0, s);
                scores_of(g, out, h, qb.r0, qb.k0, s);
                run(g, c);
            }
    }
    // y_h (T, D) (+)= op(scores_h) (T, T) x_h (T, D) for every head, over the computed tiles: without transpose
    // rows r0 .. r1 - 1 of y from keys k0 .. r1 - 1 per query block; transposed, rows c0 .. c1 - 1 of y (a key
    // block) from the queries c0 .. Q1 - 1 that see it. x and y are query-head tensors or key/value ones (*_kv);
    // into a key/value head the heads of its group add up in ascending order (the first assigns).
    void times_scores(float* y, bool y_kv, const operand& scores, bool transpose, const operand& x, bool x_kv,
                      const attention_dims& s, const chunk& c) {
        const int group = s.q_heads / s.kv_heads;
        for (int h = 0; h < s.q_heads; ++h)
            for (std::size_t n = 0; n < c.blocks.size(); ++n) {
                const attention_block& qb = c.blocks[n];
                // rows of y (from) and rows of x (inner .. inner_end): the tile's rows and columns
                const long long row = qb.r0, rows = qb.r1 - qb.r0;
                const long long inner = transpose ? qb.r0 : qb.k0;
                const long long inner_end = transpose ? c.blocks.queries_seeing(n) : qb.r1;
                matmul_args g;
                g.trans_a = transpose, g.m = rows, g.n = s.head_dim, g.k = inner_end - inner;
                // op(a)'s rows are y's rows: a = scores[row, inner] or, transposed, scores[inner, row]
                const long long at = transpose ? inner * s.time + row : row * s.time + inner;
                g.a = scores.at(h * s.time * s.time + at), g.lda = s.time, g.stride_a = s.q_heads * s.time * s.time;
                const slice in = head_slice(x_kv, h, s, c), to = head_slice(y_kv, h, s, c);
                g.b = x.at(in.offset + inner * in.ld), g.ldb = in.ld, g.stride_b = s.time * in.ld;
                g.c = y + to.offset + row * to.ld, g.ldc = to.ld, g.stride_c = s.time * to.ld;
                g.beta = y_kv && h % group != 0 ? 1.0f : 0.0f;
                run(g, c);
            }
    }

    Ex& ex_;
    attention_scratch x_;
};

} // namespace tl::gpu
