// tinylm/cuda/attention_fused.hpp: fused attention (decoder_step's attention_path::fused, src/cuda/flash_attention.cu):
// FlashAttention-2's loop on tensor cores. A block of fused_threads threads takes a tile of fused_query_tile queries
// of one head and walks the key tiles its queries see; the products (S = Q K^T, O += P V and the backward's dP, dV,
// dK, dQ) run in bf16 with f32 accumulation (wmma), the T x T scores are never stored in global memory. What is not a
// product (the masks, the online softmax, the rescaling) is per element and lives here, as __host__ __device__
// functions shared by the kernels and the CPU drivers at the end (gpu::cpu_ops's fused entry points), so that the CPU
// executor computes the kernel's arithmetic: the same operands rounded to bf16 (q, k, v, dout, and p, ds where they
// are a product's operand), the same key tiles (multiples of fused_key_tile), f32 sums in another order.
//
// Layout, masks and lse as attention_row.hpp (attention_keys decides every (query, key) pair), so the backward of
// one path runs on the forward of another and attention_delta serves both. The backward is deterministic (no
// atomics): dq per query tile over its key tiles; dk, dv per key tile over the query heads of its group and their
// query tiles, both in ascending order.
#pragma once

#include <tinylm/cuda/attention_row.hpp>

#include <vector>

namespace tl::gpu {

inline constexpr int fused_query_tile = 32; // queries per block (two 16-row wmma tiles)
inline constexpr int fused_key_tile = 32;   // keys per step of the online softmax (two 16-column wmma tiles)
inline constexpr int fused_threads = 128;   // 4 warps: one 16 x 16 tile of S each
// The forward's online softmax runs fused_row_threads threads per query row (every thread of the block), each on
// fused_lane_keys consecutive keys of the key tile (its lane); the row's maximum and sum combine the lanes' in lane
// order (fused_rescale, fused_add_lane_sums), which the CPU driver repeats.
inline constexpr int fused_row_threads = fused_threads / fused_query_tile;
inline constexpr int fused_lane_keys = fused_key_tile / fused_row_threads;
static_assert(fused_row_threads * fused_query_tile == fused_threads &&
              fused_lane_keys * fused_row_threads == fused_key_tile);
// The head widths the kernels take: each its own instance (the tiles are compile-time sizes), both with static shared
// memory under 48 KB (flash_attention.cu's header says how 128 fits).
TINYLM_HD constexpr bool fused_head_dim_supported(int d) { return d == 64 || d == 128; }
inline constexpr const char* fused_head_dims_text = "64 or 128";

// x rounded to bf16 (round to nearest even, row_math.hpp's bf16_bits), as a float: a product's operand.
TINYLM_HD inline float bf16_rounded(float x) {
    const std::uint32_t u = std::uint32_t(bf16_bits(x)) << 16;
    float f = 0;
    memcpy(&f, &u, sizeof f);
    return f;
}

// The keys query i of row b sees (attention_keys), or none (first > last) for the rows of a tile past the sequence.
TINYLM_HD inline attention_span fused_row_keys(long long b, long long i, const attention_dims& s,
                                               const attention_masks& m) {
    if (i >= s.time) return {1, 0};
    return attention_keys(b, i, s, m);
}
// The keys any of a tile's n rows sees (first .. last of their spans): the key tiles outside are skipped. Empty
// (first > last) when no row sees any.
TINYLM_HD inline attention_span fused_tile_keys(const long long* first, const long long* last, int n) {
    attention_span r{0x7fffffffffffffffLL, -1};
    for (int t = 0; t < n; ++t) {
        if (first[t] > last[t]) continue;
        r.first = first[t] < r.first ? first[t] : r.first;
        r.last = last[t] > r.last ? last[t] : r.last;
    }
    return r;
}
// Whether any of a tile's n rows sees a key of key_first .. key_last (the backward's skipped query tiles).
TINYLM_HD inline bool fused_tile_sees(const long long* first, const long long* last, int n, long long key_first,
                                      long long key_last) {
    for (int t = 0; t < n; ++t)
        if (first[t] <= last[t] && first[t] <= key_last && last[t] >= key_first) return true;
    return false;
}

// ---- Forward: one query row's online softmax, one key tile at a time ---------------------------------------------
struct fused_row_state {
    float max = -INFINITY, sum = 0; // the running maximum of the scaled scores and the sum of exp(score - max)
};
// One key tile of n keys j0 .. j0 + n - 1, `score` the unscaled q.k (the product's f32 results), keys outside
// first .. last masked, in fused_row_threads lanes of fused_lane_keys keys (the kernel's threads of a row):
// fused_lane_max is a lane's maximum of the scaled scores; fused_rescale takes the lanes' (in lane order), updates the
// row's maximum, rescales its sum and returns the factor the row's output so far is to be multiplied by;
// fused_lane_exp writes the lane's p (exp(scaled score - max), 0 where masked or past n) rounded to bf16 (the
// operand of P V) and returns its sum before rounding (lse is the f32 log-sum-exp of the other paths), in key order;
// fused_add_lane_sums adds the lanes' sums, in lane order, to the row's.
TINYLM_HD inline float fused_lane_max(const float* score, long long j0, int n, int lane, long long first,
                                      long long last, float scale) {
    float m = -INFINITY;
    for (int t = lane * fused_lane_keys; t < (lane + 1) * fused_lane_keys && t < n; ++t)
        if (j0 + t >= first && j0 + t <= last) m = score[t] * scale > m ? score[t] * scale : m;
    return m;
}
TINYLM_HD inline float fused_rescale(fused_row_state& st, const float* lane_max) {
    float tile_max = -INFINITY;
    for (int l = 0; l < fused_row_threads; ++l)
        tile_max = lane_max[l] > tile_max ? lane_max[l] : tile_max;
    float rescale = 1;
    if (tile_max > st.max) { // exp(-inf) = 0 the first time
        rescale = expf(st.max - tile_max);
        st.sum *= rescale;
        st.max = tile_max;
    }
    return rescale;
}
TINYLM_HD inline float fused_lane_exp(float* p, const float* score, long long j0, int n, int lane, long long first,
                                      long long last, float scale, float max) {
    float sum = 0;
    for (int u = 0; u < fused_lane_keys; ++u) {
        const int t = lane * fused_lane_keys + u;
        const float e = t < n && j0 + t >= first && j0 + t <= last ? expf(score[t] * scale - max) : 0.0f;
        sum += e;
        p[u] = bf16_rounded(e);
    }
    return sum;
}
TINYLM_HD inline void fused_add_lane_sums(fused_row_state& st, const float* lane_sum) {
    float tile_sum = 0;
    for (int l = 0; l < fused_row_threads; ++l)
        tile_sum += lane_sum[l];
    st.sum += tile_sum;
}
// The whole step of one row as the kernel's lanes compute it: p[0 .. fused_key_tile) (0 past n); the factor.
TINYLM_HD inline float fused_softmax_step(fused_row_state& st, float* p, const float* score, long long j0, int n,
                                          long long first, long long last, float scale) {
    float lane_max[fused_row_threads], lane_sum[fused_row_threads];
    for (int l = 0; l < fused_row_threads; ++l)
        lane_max[l] = fused_lane_max(score, j0, n, l, first, last, scale);
    const float rescale = fused_rescale(st, lane_max);
    for (int l = 0; l < fused_row_threads; ++l)
        lane_sum[l] = fused_lane_exp(p + l * fused_lane_keys, score, j0, n, l, first, last, scale, st.max);
    fused_add_lane_sums(st, lane_sum);
    return rescale;
}
// The output accumulated so far, rescaled, plus this tile's P V.
TINYLM_HD inline float fused_accumulate(float acc, float rescale, float pv) { return acc * rescale + pv; }
TINYLM_HD inline float fused_output(float acc, const fused_row_state& st) { return acc / st.sum; }
TINYLM_HD inline float fused_lse(const fused_row_state& st) { return st.max + logf(st.sum); }

// ---- Backward: per (query, key) pair, from the recomputed score and dp = dout . v (attention_row.hpp's formulas) --
struct fused_pair {
    float p, ds; // both rounded to bf16: the operands of dV += P^T dO, dK += dS^T Q and dQ += dS K
};
TINYLM_HD inline fused_pair fused_pair_grad(float score, float dp, long long j, long long first, long long last,
                                            float lse, float delta, float scale) {
    const float p = attention_probability(score * scale, j, first, last, lse);
    return {bf16_rounded(p), bf16_rounded(attention_dscore(p, dp, delta, scale))};
}

// ---- CPU drivers: the kernels' arithmetic row by row (gpu::cpu_ops's attention_fused_*) --------------------------
namespace detail {
inline std::vector<float> bf16_copy(const float* x, long long n) {
    std::vector<float> r(std::size_t(n > 0 ? n : 0));
    for (std::size_t i = 0; i < r.size(); ++i)
        r[i] = bf16_rounded(x[i]);
    return r;
}
} // namespace detail

inline void attention_fused_forward_rows(float* out, float* lse, const float* q, const float* k, const float* v,
                                         const attention_masks& m, const attention_dims& s) {
    const int D = s.head_dim;
    const float scale = attention_scale(D);
    const long long ldk = (long long)s.kv_heads * D;
    const std::vector<float> qr = detail::bf16_copy(q, s.batch * s.time * s.q_heads * D),
                             kr = detail::bf16_copy(k, s.batch * s.time * ldk),
                             vr = detail::bf16_copy(v, s.batch * s.time * ldk);
    std::vector<float> acc(static_cast<std::size_t>(D)), pv(static_cast<std::size_t>(D));
    float score[fused_key_tile], p[fused_key_tile];
    for (long long b = 0; b < s.batch; ++b)
        for (int h = 0; h < s.q_heads; ++h)
            for (long long i = 0; i < s.time; ++i) {
                const long long at = attention_q_offset(b, i, h, s),
                                kv = attention_kv_offset(b, 0, attention_kv_head(h, s), s);
                const attention_span keys = attention_keys(b, i, s, m);
                fused_row_state st;
                std::fill(acc.begin(), acc.end(), 0.0f);
                for (long long j0 = keys.first / fused_key_tile * fused_key_tile; j0 <= keys.last;
                     j0 += fused_key_tile) {
                    const int n = s.time - j0 < fused_key_tile ? int(s.time - j0) : fused_key_tile;
                    for (int t = 0; t < n; ++t)
                        score[t] = attention_dot(&qr[std::size_t(at)], &kr[std::size_t(kv + (j0 + t) * ldk)], D);
                    const float rescale = fused_softmax_step(st, p, score, j0, n, keys.first, keys.last, scale);
                    std::fill(pv.begin(), pv.end(), 0.0f);
                    for (int t = 0; t < n; ++t)
                        for (int c = 0; c < D; ++c)
                            pv[std::size_t(c)] += p[t] * vr[std::size_t(kv + (j0 + t) * ldk + c)];
                    for (int c = 0; c < D; ++c)
                        acc[std::size_t(c)] = fused_accumulate(acc[std::size_t(c)], rescale, pv[std::size_t(c)]);
                }
                for (int c = 0; c < D; ++c)
                    out[at + c] = fused_output(acc[std::size_t(c)], st);
                lse[attention_lse_offset(b, h, i, s)] = fused_lse(st);
            }
}

// dq, dk, dv assigned; delta (B, Hq, T) is scratch, filled first (attention_delta_rows, f32 as the other paths).
inline void attention_fused_backward_rows(float* dq, float* dk, float* dv, float* delta, const float* dout,
                                          const float* q, const float* k, const float* v, const float* out,
                                          const float* lse, const attention_masks& m, const attention_dims& s) {
    const int D = s.head_dim, group = s.q_heads / s.kv_heads;
    const float scale = attention_scale(D);
    const long long ldk = (long long)s.kv_heads * D, nq = s.batch * s.time * s.q_heads * D;
    attention_delta_rows(delta, dout, out, s);
    const std::vector<float> qr = detail::bf16_copy(q, nq), dor = detail::bf16_copy(dout, nq),
                             kr = detail::bf16_copy(k, s.batch * s.time * ldk),
                             vr = detail::bf16_copy(v, s.batch * s.time * ldk);
    // The pair (b, h, i) x j: p and ds, both rounded.
    const auto pair = [&](long long b, int h, long long i, long long j, const attention_span& keys) {
        const long long at = attention_q_offset(b, i, h, s), kv = attention_kv_offset(b, j, attention_kv_head(h, s), s);
        const long long l = attention_lse_offset(b, h, i, s);
        return fused_pair_grad(attention_dot(&qr[std::size_t(at)], &kr[std::size_t(kv)], D),
                               attention_dot(&dor[std::size_t(at)], &vr[std::size_t(kv)], D), j, keys.first, keys.last,
                               lse[l], delta[l], scale);
    };
    for (long long b = 0; b < s.batch; ++b)
        for (int h = 0; h < s.q_heads; ++h)
            for (long long i = 0; i < s.time; ++i) {
                const long long at = attention_q_offset(b, i, h, s);
                const attention_span keys = attention_keys(b, i, s, m);
                for (int c = 0; c < D; ++c)
                    dq[at + c] = 0;
                for (long long j = keys.first; j <= keys.last; ++j) {
                    const float ds = pair(b, h, i, j, keys).ds;
                    const long long kv = attention_kv_offset(b, j, attention_kv_head(h, s), s);
                    for (int c = 0; c < D; ++c)
                        dq[at + c] += ds * kr[std::size_t(kv + c)];
                }
            }
    std::vector<attention_span> spans(std::size_t(s.time));
    for (long long b = 0; b < s.batch; ++b) {
        for (long long i = 0; i < s.time; ++i)
            spans[std::size_t(i)] = attention_keys(b, i, s, m);
        for (long long j = 0; j < s.time; ++j)
            for (int hk = 0; hk < s.kv_heads; ++hk) {
                const long long kv = attention_kv_offset(b, j, hk, s);
                for (int c = 0; c < D; ++c)
                    dk[kv + c] = dv[kv + c] = 0;
                for (int h = hk * group; h < (hk + 1) * group; ++h)
                    for (long long i = 0; i < s.time; ++i) {
                        const attention_span& keys = spans[std::size_t(i)];
                        if (j < keys.first || j > keys.last) continue;
                        const fused_pair g = pair(b, h, i, j, keys);
                        const long long at = attention_q_offset(b, i, h, s);
                        for (int c = 0; c < D; ++c) {
                            dk[kv + c] += g.ds * qr[std::size_t(at + c)];
                            dv[kv + c] += g.p * dor[std::size_t(at + c)];
                        }
                    }
            }
    }
}

} // namespace tl::gpu
