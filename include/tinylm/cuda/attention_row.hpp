// tinylm/cuda/attention_row.hpp: attention (causal, or bidirectional for an encoder) one query row (and, for the
// backward, one key row) at a time, as __host__ __device__ functions shared by the kernels of src/cuda/attention.cu and
// the CPU test (tests/cuda/test_row_math.cpp compares the CPU drivers at the end with tl::attention_*_reference in
// f64).
//
// Layout as ops/attention.hpp: q, out (B, T, Hq, D), k, v (B, T, Hkv, D), lse (B, Hq, T); query head h reads
// key/value head h / (Hq / Hkv) (GQA; MHA and MQA are its ends). Query i sees key j when j <= i, i - j < W with a
// window W > 0 (Mistral's rule) and j >= doc_start[b, i] with packed documents. With right padding
// (key_lengths[b], 1 .. T: the keys of row b from key_lengths[b] on are padding) no query sees a padded key, and a
// padded query whose own keys are all padding sees the valid keys 0 .. key_lengths[b] - 1 instead, as
// ops/attention.hpp rules; padded keys get dk = dv = 0.
//
// Forward: an online softmax over tiles of attention_key_tile keys (a flash kernel's loop): each tile's scores,
// its maximum, the running sum and output rescaled once per tile; the T x T matrix is never stored.
// Backward without atomics, deterministic: delta_i = dout_i . out_i per query row; dq_i from one pass over
// the keys query i sees; dk_j, dv_j from one pass over the queries that see key j (every query head of the
// group, heads and queries in ascending order). Each pass recomputes p = exp(q.k * scale - lse).
#pragma once

#include <tinylm/cuda/row_math.hpp>

#include <cstdint>
#include <string>

namespace tl::gpu {

inline constexpr int attention_key_tile = 32;      // keys per tile of the online softmax
inline constexpr int attention_max_head_dim = 256; // the kernels keep a row's accumulators in a fixed array

struct attention_dims {
    long long batch = 0, time = 0;
    int q_heads = 0, kv_heads = 0, head_dim = 0;
    int window = 0;     // 0: full causal attention
    bool causal = true; // false: bidirectional (an encoder): query i sees every key of its document; no window
};

// The shape, for the kernels' refusals (host code): "query heads 8, key/value heads 2, head width 64, window 0, causal,
// batch 2".
inline std::string attention_shape_text(const attention_dims& s) {
    return "query heads " + std::to_string(s.q_heads) + ", key/value heads " + std::to_string(s.kv_heads) +
           ", head width " + std::to_string(s.head_dim) + ", window " + std::to_string(s.window) +
           (s.causal ? ", causal" : ", bidirectional") + ", batch " + std::to_string(s.batch);
}

TINYLM_HD inline int attention_kv_head(int h, const attention_dims& s) { return h / (s.q_heads / s.kv_heads); }
// Offsets (in floats) of row i of head h: queries and outputs, keys and values.
TINYLM_HD inline long long attention_q_offset(long long b, long long i, int h, const attention_dims& s) {
    return ((b * s.time + i) * s.q_heads + h) * s.head_dim;
}
TINYLM_HD inline long long attention_kv_offset(long long b, long long j, int hk, const attention_dims& s) {
    return ((b * s.time + j) * s.kv_heads + hk) * s.head_dim;
}
TINYLM_HD inline long long attention_lse_offset(long long b, int h, long long i, const attention_dims& s) {
    return (b * s.q_heads + h) * s.time + i;
}
// First key query i of row b sees (its window and its document); the last is i itself.
TINYLM_HD inline long long attention_first_key(long long b, long long i, const attention_dims& s,
                                               const std::int64_t* doc_start) {
    long long first = s.window > 0 && i - s.window + 1 > 0 ? i - s.window + 1 : 0;
    if (doc_start && doc_start[b * s.time + i] > first) first = doc_start[b * s.time + i];
    return first;
}
// The masks beside causality and the window, device pointers or null: doc_start (B, T), key_lengths (B).
struct attention_masks {
    const std::int64_t* doc_start = nullptr;
    const std::int64_t* key_lengths = nullptr;
    TINYLM_HD attention_masks(const std::int64_t* docs = nullptr, const std::int64_t* lengths = nullptr)
        : doc_start(docs), key_lengths(lengths) {}
};
// The keys query i of row b sees: first .. last.
struct attention_span {
    long long first, last;
};
TINYLM_HD inline attention_span attention_keys(long long b, long long i, const attention_dims& s,
                                               const attention_masks& m) {
    attention_span r{attention_first_key(b, i, s, m.doc_start), i};
    if (!s.causal) { // to the end of the document: the key before the next document's first token, or the last
        r.last = s.time - 1;
        if (m.doc_start)
            for (long long t = i + 1; t < s.time; ++t)
                if (m.doc_start[b * s.time + t] != m.doc_start[b * s.time + i]) {
                    r.last = t - 1;
                    break;
                }
    }
    if (m.key_lengths) {
        const long long valid = m.key_lengths[b];
        if (r.last > valid - 1) r.last = valid - 1;
        if (r.first > r.last) r = {0, valid - 1}; // a padded query whose own keys are all padding
    }
    return r;
}
TINYLM_HD inline bool attention_sees(long long b, long long i, long long j, const attention_dims& s,
                                     const attention_masks& m) {
    const attention_span r = attention_keys(b, i, s, m);
    return j >= r.first && j <= r.last;
}

TINYLM_HD inline float attention_dot(const float* a, const float* b, int n) {
    float s = 0;
    for (int c = 0; c < n; ++c)
        s += a[c] * b[c];
    return s;
}

// One query row over keys first .. last (rows ldk floats apart): out = softmax(q k^T * scale) v, returns the
// log-sum-exp of the scaled scores. acc: head_dim floats of scratch (the kernel's registers or local memory).
TINYLM_HD inline float attention_row_forward(float* out, float* acc, const float* q, const float* k, const float* v,
                                             long long ldk, long long first, long long last, int head_dim,
                                             float scale) {
    for (int c = 0; c < head_dim; ++c)
        acc[c] = 0;
    float running_max = -INFINITY, running_sum = 0;
    float score[attention_key_tile];
    for (long long j0 = first; j0 <= last; j0 += attention_key_tile) {
        const int n = last + 1 - j0 < attention_key_tile ? int(last + 1 - j0) : attention_key_tile;
        float tile_max = -INFINITY;
        for (int t = 0; t < n; ++t) {
            score[t] = attention_dot(q, k + (j0 + t) * ldk, head_dim) * scale;
            tile_max = score[t] > tile_max ? score[t] : tile_max;
        }
        if (tile_max > running_max) { // rescale what has been summed so far (exp(-inf) = 0 the first time)
            const float r = expf(running_max - tile_max);
            running_sum *= r;
            for (int c = 0; c < head_dim; ++c)
                acc[c] *= r;
            running_max = tile_max;
        }
        for (int t = 0; t < n; ++t) {
            const float p = expf(score[t] - running_max);
            running_sum += p;
            const float* vj = v + (j0 + t) * ldk;
            for (int c = 0; c < head_dim; ++c)
                acc[c] += p * vj[c];
        }
    }
    const float inv_sum = 1.0f / running_sum;
    for (int c = 0; c < head_dim; ++c)
        out[c] = acc[c] * inv_sum;
    return running_max + logf(running_sum);
}

// ds of one (query, key) pair: p (dp - delta) * scale with p = exp(q.k * scale - lse), dp = dout . v; p too.
struct attention_pair_grad {
    float p, ds;
};
TINYLM_HD inline attention_pair_grad attention_pair(const float* q, const float* dout, const float* kj, const float* vj,
                                                    int head_dim, float scale, float lse, float delta) {
    const float p = expf(attention_dot(q, kj, head_dim) * scale - lse);
    const float dp = attention_dot(dout, vj, head_dim);
    return {p, p * (dp - delta) * scale};
}

// dq of one query row (assigned): sum over its keys first .. last of ds_j k_j.
TINYLM_HD inline void attention_row_dq(float* dq, const float* q, const float* dout, const float* k, const float* v,
                                       long long ldk, long long first, long long last, int head_dim, float scale,
                                       float lse, float delta) {
    for (int c = 0; c < head_dim; ++c)
        dq[c] = 0;
    for (long long j = first; j <= last; ++j) {
        const float* kj = k + j * ldk;
        const float ds = attention_pair(q, dout, kj, v + j * ldk, head_dim, scale, lse, delta).ds;
        for (int c = 0; c < head_dim; ++c)
            dq[c] += ds * kj[c];
    }
}

// dk, dv of key j of head hk in row b (assigned): the queries of every head of the group that see j, heads
// then queries in ascending order (causal: all of them at or after j). q, dout, lse, delta: the whole tensors.
TINYLM_HD inline void attention_key_dkdv(float* dk, float* dv, const float* q, const float* dout, const float* k,
                                         const float* v, const float* lse, const float* delta, const attention_masks& m,
                                         long long b, long long j, int hk, const attention_dims& s, float scale) {
    const int D = s.head_dim, group = s.q_heads / s.kv_heads;
    const float* kj = k + attention_kv_offset(b, j, hk, s);
    const float* vj = v + attention_kv_offset(b, j, hk, s);
    for (int c = 0; c < D; ++c)
        dk[c] = dv[c] = 0;
    if (m.key_lengths && j >= m.key_lengths[b]) return; // padding: no query sees it
    // Causal without padding, the queries that see j are j .. up to the window's end or the next document: stop
    // at the first that does not. With padding (a padded query past the window may see j again) or both ways,
    // test every query.
    const bool contiguous = s.causal && !m.key_lengths;
    const long long begin = s.causal ? j : 0;
    const long long end = contiguous && s.window > 0 && j + s.window < s.time ? j + s.window : s.time;
    for (int h = hk * group; h < (hk + 1) * group; ++h)
        for (long long i = begin; i < end; ++i) {
            if (!attention_sees(b, i, j, s, m)) {
                if (!contiguous) continue;
                break; // a later document: no later query sees j
            }
            const float* qi = q + attention_q_offset(b, i, h, s);
            const float* doi = dout + attention_q_offset(b, i, h, s);
            const long long at = attention_lse_offset(b, h, i, s);
            const attention_pair_grad g = attention_pair(qi, doi, kj, vj, D, scale, lse[at], delta[at]);
            for (int c = 0; c < D; ++c) {
                dk[c] += g.ds * qi[c];
                dv[c] += g.p * doi[c];
            }
        }
}

// 1 / sqrt(D) as ops/attention.hpp computes it (in double, then rounded).
TINYLM_HD inline float attention_scale(int head_dim) { return float(1.0 / sqrt(double(head_dim))); }

// ---- Query blocks: the tiles of a scores matrix the products compute (attention_products.hpp) ----------------
// The products split each sequence's queries into blocks of query_block rows and, for a causal model, compute
// only the key columns a block's queries can see: keys k0 .. r1 - 1 of queries r0 .. r1 - 1, with k0 = 0, or
// with a window w the key block holding r0 - w + 1 (k0 a multiple of query_block, so that the key blocks are the
// query blocks and a key block's queries, for the transposed products dv and dk, read computed tiles only).
// Documents only narrow a query's keys further (they are data, not shape: no skipping on them); with padding a
// padded query may see keys 0 .. length - 1 far before its window, so padding keeps k0 = 0. Bidirectional
// attention, or query_block 0 or >= T: one block of every key. Everything outside the computed tiles holds stale
// values (earlier steps', possibly NaN): the row functions below read and write a row's computed keys only.
// Queries per block by default: one row of cuBLASLt's 128-row tensor-core tiles (attention_products.hpp says why).
inline constexpr long long attention_default_query_block = 128;
struct attention_block {
    long long r0, r1; // queries r0 .. r1 - 1
    long long k0;     // keys k0 .. r1 - 1 (bidirectional: k0 = 0 and the keys run to T - 1: r1 = T)
};
TINYLM_HD inline bool attention_blocks_skip(const attention_dims& s, long long query_block) {
    return s.causal && query_block > 0 && query_block < s.time;
}
// The block of query i; padding: whether the masks have key_lengths.
TINYLM_HD inline attention_block attention_block_of(long long i, const attention_dims& s, bool padding,
                                                    long long query_block) {
    if (!attention_blocks_skip(s, query_block)) return {0, s.time, 0};
    const long long r0 = i / query_block * query_block;
    const long long r1 = r0 + query_block < s.time ? r0 + query_block : s.time;
    long long k0 = 0;
    if (s.window > 0 && !padding && r0 - s.window + 1 > 0) k0 = (r0 - s.window + 1) / query_block * query_block;
    return {r0, r1, k0};
}
// The keys of query i's scores row that the products computed: k0 .. r1 - 1 of its block.
TINYLM_HD inline attention_span attention_computed_keys(long long i, const attention_dims& s, bool padding,
                                                        long long query_block) {
    const attention_block q = attention_block_of(i, s, padding, query_block);
    return {q.k0, q.r1 - 1};
}

// ---- Attention through matrix products (decoder_step's attention_path::products) -------------------------------
// The scores of a chunk of sequences b0 .. b0 + nb - 1 as T x T matrices, one per (sequence, query head):
// row i of head h of sequence b at ((b - b0) Hq + h) T + i, made by batched products (s = scale q k^T); the
// functions below turn a row into probabilities in place, masked by attention_keys (causality, window, documents,
// padding), and the backward's scores gradient, so that the products that follow (p v, dp = dout v^T, ds k,
// ds^T q, p^T dout) run on tensor cores. Every computed key outside a row's span gets p = 0, so the products over
// the computed tiles (the query blocks above) give attention_row_forward's result and padded keys get dk = dv = 0
// as there.

// Forward: p_j = exp(s_j - lse) for the keys first .. last, 0 for the other computed keys (`computed`, which
// holds first .. last: attention_computed_keys); returns lse. Nothing outside `computed` is read or written.
TINYLM_HD inline float attention_softmax_row(float* row, long long first, long long last, attention_span computed) {
    softmax_state st;
    for (long long j = first; j <= last; ++j)
        st = softmax_push(st, row[j]);
    const float lse = softmax_lse(st);
    for (long long j = computed.first; j <= computed.last; ++j)
        row[j] = j >= first && j <= last ? expf(row[j] - lse) : 0.0f;
    return lse;
}
// Backward: the forward's probabilities again, from the recomputed scores and the saved lse.
TINYLM_HD inline float attention_probability(float score, long long j, long long first, long long last, float lse) {
    return j >= first && j <= last ? expf(score - lse) : 0.0f;
}
// ds = p (dp - delta) scale (d of the unscaled q k^T): zero wherever p is.
TINYLM_HD inline float attention_dscore(float p, float dp, float delta, float scale) {
    return p * (dp - delta) * scale;
}

// The query row (b, h, i) of scores row r of a chunk starting at sequence b0.
struct attention_score_row {
    long long b, i;
    int h;
};
TINYLM_HD inline attention_score_row attention_row_of(long long r, long long b0, const attention_dims& s) {
    const long long bh = r / s.time;
    return {b0 + bh / s.q_heads, r % s.time, int(bh % s.q_heads)};
}

// ---- CPU drivers of the products path ----------------------------------------------------------------------------
// scores (nb Hq T x T) of sequences b0 .. b0 + nb - 1, computed in query blocks of query_block rows (above; 0:
// whole rows): probabilities in place over each row's computed keys, lse (B, Hq, T) written.
inline void attention_softmax_rows(float* scores, float* lse, const attention_masks& m, const attention_dims& s,
                                   long long b0, long long nb, long long query_block) {
    for (long long r = 0; r < nb * s.q_heads * s.time; ++r) {
        const attention_score_row q = attention_row_of(r, b0, s);
        const attention_span keys = attention_keys(q.b, q.i, s, m);
        const attention_span computed = attention_computed_keys(q.i, s, m.key_lengths != nullptr, query_block);
        lse[attention_lse_offset(q.b, q.h, q.i, s)] =
            attention_softmax_row(scores + r * s.time, keys.first, keys.last, computed);
    }
}
inline void attention_probabilities_rows(float* scores, const float* lse, const attention_masks& m,
                                         const attention_dims& s, long long b0, long long nb, long long query_block) {
    for (long long r = 0; r < nb * s.q_heads * s.time; ++r) {
        const attention_score_row q = attention_row_of(r, b0, s);
        const attention_span keys = attention_keys(q.b, q.i, s, m);
        const attention_span computed = attention_computed_keys(q.i, s, m.key_lengths != nullptr, query_block);
        const float l = lse[attention_lse_offset(q.b, q.h, q.i, s)];
        for (long long j = computed.first; j <= computed.last; ++j)
            scores[r * s.time + j] = attention_probability(scores[r * s.time + j], j, keys.first, keys.last, l);
    }
}
// dscores (the products' dp) replaced by ds over each row's computed keys, from the probabilities p and delta
// (B, Hq, T); the masks decide the computed keys only (p is 0 wherever a query does not see a key).
inline void attention_dscores_rows(float* dscores, const float* p, const float* delta, const attention_masks& m,
                                   const attention_dims& s, long long b0, long long nb, long long query_block) {
    const float scale = attention_scale(s.head_dim);
    for (long long r = 0; r < nb * s.q_heads * s.time; ++r) {
        const attention_score_row q = attention_row_of(r, b0, s);
        const attention_span computed = attention_computed_keys(q.i, s, m.key_lengths != nullptr, query_block);
        const float d = delta[attention_lse_offset(q.b, q.h, q.i, s)];
        for (long long j = computed.first; j <= computed.last; ++j)
            dscores[r * s.time + j] = attention_dscore(p[r * s.time + j], dscores[r * s.time + j], d, scale);
    }
}
// delta (B, Hq, T) = dout . out per query row.
inline void attention_delta_rows(float* delta, const float* dout, const float* out, const attention_dims& s) {
    for (long long b = 0; b < s.batch; ++b)
        for (int h = 0; h < s.q_heads; ++h)
            for (long long i = 0; i < s.time; ++i) {
                const long long at = attention_q_offset(b, i, h, s);
                delta[attention_lse_offset(b, h, i, s)] = attention_dot(dout + at, out + at, s.head_dim);
            }
}

// ---- CPU drivers: the kernels' work row by row (what test_cuda_kernels compares the GPU with) -----------------
inline void attention_forward_rows(float* out, float* lse, const float* q, const float* k, const float* v,
                                   const attention_masks& m, const attention_dims& s) {
    const float scale = attention_scale(s.head_dim);
    const long long ldk = (long long)s.kv_heads * s.head_dim;
    std::vector<float> acc(std::size_t(s.head_dim));
    for (long long b = 0; b < s.batch; ++b)
        for (int h = 0; h < s.q_heads; ++h)
            for (long long i = 0; i < s.time; ++i) {
                const long long at = attention_q_offset(b, i, h, s),
                                kv = attention_kv_offset(b, 0, attention_kv_head(h, s), s);
                const attention_span r = attention_keys(b, i, s, m);
                lse[attention_lse_offset(b, h, i, s)] = attention_row_forward(
                    out + at, acc.data(), q + at, k + kv, v + kv, ldk, r.first, r.last, s.head_dim, scale);
            }
}
// dq, dk, dv assigned; delta (B, Hq, T) is scratch, filled first.
inline void attention_backward_rows(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                                    const float* k, const float* v, const float* out, const float* lse,
                                    const attention_masks& m, const attention_dims& s) {
    const float scale = attention_scale(s.head_dim);
    const long long ldk = (long long)s.kv_heads * s.head_dim;
    attention_delta_rows(delta, dout, out, s);
    for (long long b = 0; b < s.batch; ++b)
        for (int h = 0; h < s.q_heads; ++h)
            for (long long i = 0; i < s.time; ++i) {
                const long long at = attention_q_offset(b, i, h, s),
                                kv = attention_kv_offset(b, 0, attention_kv_head(h, s), s);
                const long long l = attention_lse_offset(b, h, i, s);
                const attention_span r = attention_keys(b, i, s, m);
                attention_row_dq(dq + at, q + at, dout + at, k + kv, v + kv, ldk, r.first, r.last, s.head_dim, scale,
                                 lse[l], delta[l]);
            }
    for (long long b = 0; b < s.batch; ++b)
        for (long long j = 0; j < s.time; ++j)
            for (int hk = 0; hk < s.kv_heads; ++hk) {
                const long long at = attention_kv_offset(b, j, hk, s);
                attention_key_dkdv(dk + at, dv + at, q, dout, k, v, lse, delta, m, b, j, hk, s, scale);
            }
}

} // namespace tl::gpu
