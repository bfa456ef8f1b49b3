// tinylm/ops/attention.hpp: scaled dot-product attention, causal or bidirectional, with MHA, GQA, MQA, a
// sliding window, packed documents and right padding.
//
//   q (B, T, Hq, D), k and v (B, T, Hkv, D), out (B, T, Hq, D); Hq is a multiple of Hkv and query head h
//   reads key/value head h / (Hq / Hkv) (MHA: Hkv = Hq; MQA: Hkv = 1; GQA in between), without copies.
//   Query i sees key j when j <= i and, with a window W > 0, i - j < W (Mistral's rule: W keys including
//   itself). Saves lse (B, Hq, T), the log-sum-exp of each query's scores.
//
// Bidirectional (causal = false, an encoder such as BERT): query i sees every key j < Tk; a window is then an
// error. key_lengths (B), optional in either form: the keys of row b at positions >= key_lengths[b] are
// padding and never attended (right padding: a Hugging Face attention_mask of ones then zeros), 1 <=
// key_lengths[b] <= Tk. Queries at padded positions still attend to the valid keys they see, and a padded
// query that would see none (its window or its document lies in the padding) sees all valid keys 0 ..
// key_lengths[b] - 1; their outputs are finite and their gradients flow as any other's. Padded keys get
// dk = dv = 0. Masked keys are skipped, not masked, as for documents below.
//
// Forward keeps a running maximum and sum (online softmax), so no T x T matrix is ever stored; backward
// recomputes each probability from lse, and uses Dq = dout . out (FlashAttention-2's trick) so it needs
// one pass over the keys and no scratch memory:
//   p = exp(s - lse), dp = dout . v, ds = p (dp - Dq), dq += ds k / sqrt(D), dk += ds q / sqrt(D), dv += p dout
// dq, dk and dv are assigned (zeroed here, then accumulated over the keys and queries).
//
// attention_forward / attention_backward work on tiles of 64 queries x 64 keys (FlashAttention-2): a tile's
// scores, dp, and its products with v, dout, q and k are small register-blocked matrix products; tiles
// outside the causal mask, the window or the documents are never visited, partial tiles are masked. Forward
// runs one task per (batch, query head, query block); backward one per (batch, key/value head), which owns
// dk and dv of that head and dq of its query heads (no races). Scratch: a few tiles on the stack.
// attention_forward_reference / attention_backward_reference are the straightforward kernels (one query row
// at a time), kept as the tests' oracle.
//
// Inference with a KV cache uses the same forward: k and v are then the cache (B, capacity, Hkv, D), the
// queries sit at positions q_start .. q_start + T - 1, and lse may be left empty.
//
// Documents (packed SFT rows): doc_start (B, T), for each query the index in its row of the first token of
// its document; query i then sees only keys j >= doc_start[b, i], so no token attends across a document
// boundary. Empty (the default): one document per row, at no cost. The keys before doc_start are skipped,
// not masked, in forward and backward alike. Bidirectional, query i sees its own document in both
// directions: keys doc_start[b, i] up to the key before the next document's first token (the first query
// t > i with another doc_start, at position q_start + t), or to the last key Tk - 1 for the row's last
// document.
#pragma once

#include <tinylm/core/simd.hpp>
#include <tinylm/ops/attention_tiles.hpp>
#include <tinylm/ops/common.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tl {

struct attention_shape {
    index_t batch, time, q_heads, kv_heads, head_dim;
    index_t window = 0;   // 0: full causal attention
    index_t key_time = 0; // time extent of k and v (the cache capacity at inference; = time in training)
    bool causal = true;   // false: bidirectional (every query sees every key, but for documents and padding)

    index_t first_visible_key(index_t i) const { return window > 0 ? std::max<index_t>(0, i - window + 1) : 0; }
};

// Throws unless doc_start (B, T) describes documents that tile each row: doc_start[b, 0] = 0 and each
// later token either continues the previous token's document or starts one (doc_start[b, t] = t).
inline void check_document_starts(cview<index_t> doc_start, std::string_view where) {
    check(doc_start.shape.rank == 2,
          [&] { return std::string(where) + ": doc_start must be (B, T), got " + doc_start.shape.str(); });
    const index_t rows = doc_start.dim(0), time = doc_start.dim(1);
    for (index_t b = 0; b < rows; ++b)
        for (index_t t = 0; t < time; ++t) {
            const index_t s = doc_start[b * time + t];
            const bool ok = t == 0 ? s == 0 : (s == t || s == doc_start[b * time + t - 1]);
            check(ok, [&] {
                return std::string(where) + ": doc_start[" + std::to_string(b) + ", " + std::to_string(t) +
                       "] = " + std::to_string(s) +
                       " does not tile the row (expected the previous token's document start or " + std::to_string(t) +
                       ")";
            });
        }
}

namespace detail {
inline attention_shape attention_shape_of(const shape& q, const shape& k, index_t window, index_t q_start = 0,
                                          bool causal = true) {
    check(q.rank == 4 && k.rank == 4,
          [&] { return "attention: q and k must be (B, T, H, D), got q " + q.str() + " and k " + k.str(); });
    attention_shape s{q[0], q[1], q[2], k[2], q[3], window, k[1], causal};
    check(k[0] == s.batch && k[1] >= q_start + s.time && k[3] == s.head_dim && s.kv_heads > 0 &&
              s.q_heads % s.kv_heads == 0,
          [&] {
              return "attention: k has shape " + k.str() + ", incompatible with q " + q.str() + " at position " +
                     std::to_string(q_start) +
                     " (same B and D, keys up to the last query, query heads a multiple of "
                     "key/value heads)";
          });
    return s;
}
// doc_start, when given, is (B, T) and names for each query a key at or before it.
inline void check_doc_start_view(cview<index_t> doc_start, const attention_shape& s, index_t q_start,
                                 std::string_view op) {
    if (!doc_start.data) return;
    expect_shape(op, "doc_start", doc_start, {s.batch, s.time});
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t i = 0; i < s.time; ++i) {
            const index_t first = doc_start[b * s.time + i];
            check(first >= 0 && first <= q_start + i, [&] {
                return std::string(op) + ": doc_start[" + std::to_string(b) + ", " + std::to_string(i) +
                       "] = " + std::to_string(first) + " is not a key position at or before the query";
            });
        }
}
// A window needs causal attention; key_lengths, when given, is (B) with 1 <= key_lengths[b] <= Tk.
inline void check_attention_masks(const attention_shape& s, cview<index_t> key_lengths, std::string_view op) {
    check(s.causal || s.window == 0, [&] {
        return std::string(op) + ": a sliding window (window = " + std::to_string(s.window) +
               ") needs causal attention; bidirectional attention (causal = false) takes window = 0";
    });
    if (!key_lengths.data) return;
    expect_shape(op, "key_lengths", key_lengths, {s.batch});
    for (index_t b = 0; b < s.batch; ++b)
        check(key_lengths[b] >= 1 && key_lengths[b] <= s.key_time, [&] {
            return std::string(op) + ": key_lengths[" + std::to_string(b) + "] = " + std::to_string(key_lengths[b]) +
                   " is not in 1 .. " + std::to_string(s.key_time) + " (the keys of a row)";
        });
}
// First key of query i's document (0 without documents).
inline index_t doc_first_key(cview<index_t> doc_start, index_t b, index_t i, index_t time) {
    return doc_start.data ? doc_start[b * time + i] : 0;
}
// The keys query i of row b (at position q_start + i) sees: first .. last, one query at a time (the
// reference kernels' rule, written out; visible_keys below is the same rule for a block of queries).
struct key_span {
    index_t first, last;
};
inline key_span query_keys(const attention_shape& s, cview<index_t> doc_start, cview<index_t> key_lengths, index_t b,
                           index_t i, index_t q_start) {
    const index_t pos = q_start + i;
    key_span span{std::max(s.first_visible_key(pos), doc_first_key(doc_start, b, i, s.time)), pos};
    if (!s.causal) {
        span.last = s.key_time - 1; // the last document runs to the end of the keys
        if (doc_start.data)
            for (index_t t = i + 1; t < s.time; ++t)
                if (doc_start[b * s.time + t] != doc_start[b * s.time + i]) {
                    span.last = q_start + t - 1; // the key before the next document's first token
                    break;
                }
    }
    if (key_lengths.data) {
        const index_t valid = key_lengths[b];
        span.last = std::min(span.last, valid - 1);
        if (span.first > span.last) span = {0, valid - 1}; // a padded query whose own keys are all padding
    }
    return span;
}
// Accumulates in T: f32 in training (vectorised), f64 in the gradient checks.
template <class T, class TB = T>
inline T dot(const T* a, const TB* b, index_t n) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (index_t c = 0; c < n; ++c)
        sum += a[c] * widen<T>(b[c]);
    return sum;
}
} // namespace detail

// The straightforward kernels (one query row at a time): the oracle of the tiled ones below.
template <class T>
void attention_forward_reference(tensor_view<T> out, tensor_view<T> lse, cview<T> q, cview<T> k, cview<T> v,
                                 index_t window = 0, index_t q_start = 0, cview<index_t> doc_start = {},
                                 bool causal = true, cview<index_t> key_lengths = {}) {
    const attention_shape s = detail::attention_shape_of(q.shape, k.shape, window, q_start, causal);
    detail::check_attention_masks(s, key_lengths, "attention_reference");
    detail::check_doc_start_view(doc_start, s, q_start, "attention_reference");
    expect_same_shape("attention_reference", "v", v, k);
    expect_same_shape("attention_reference", "out", out, q);
    if (lse.data) expect_shape("attention_reference", "lse", lse, {s.batch, s.q_heads, s.time});
    const index_t D = s.head_dim, group = s.q_heads / s.kv_heads;
    const T scale = T(1.0 / std::sqrt(double(D)));
    auto at = [&](auto& t, index_t b, index_t i, index_t h, index_t heads) {
        return t.data + ((b * s.time + i) * heads + h) * D;
    };
    auto at_key = [&](auto& t, index_t b, index_t j, index_t h) {
        return t.data + ((b * s.key_time + j) * s.kv_heads + h) * D;
    };
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t h = 0; h < s.q_heads; ++h)
            for (index_t i = 0; i < s.time; ++i) {
                const index_t hk = h / group;
                const T* qi = at(q, b, i, h, s.q_heads);
                T* oi = at(out, b, i, h, s.q_heads);
                std::fill_n(oi, D, T(0));
                T running_max = -std::numeric_limits<T>::infinity(), running_sum = 0;
                const detail::key_span span = detail::query_keys(s, doc_start, key_lengths, b, i, q_start);
                for (index_t j = span.first; j <= span.last; ++j) {
                    const T* kj = at_key(k, b, j, hk);
                    const T* vj = at_key(v, b, j, hk);
                    const T score = detail::dot(qi, kj, D) * scale;
                    if (score > running_max) { // rescale what has been summed so far
                        const T r = std::exp(running_max - score);
                        running_sum *= r;
#pragma omp simd
                        for (index_t c = 0; c < D; ++c)
                            oi[c] *= r;
                        running_max = score;
                    }
                    const T p = std::exp(score - running_max);
                    running_sum += p;
#pragma omp simd
                    for (index_t c = 0; c < D; ++c)
                        oi[c] += p * vj[c];
                }
                const T inv_sum = T(1) / running_sum;
#pragma omp simd
                for (index_t c = 0; c < D; ++c)
                    oi[c] *= inv_sum;
                if (lse.data) lse[(b * s.q_heads + h) * s.time + i] = T(running_max + std::log(running_sum));
            }
}

template <class T>
void attention_backward_reference(tensor_view<T> dq, tensor_view<T> dk, tensor_view<T> dv, cview<T> dout, cview<T> q,
                                  cview<T> k, cview<T> v, cview<T> out, cview<T> lse, index_t window = 0,
                                  cview<index_t> doc_start = {}, bool causal = true, cview<index_t> key_lengths = {}) {
    const attention_shape s = detail::attention_shape_of(q.shape, k.shape, window, 0, causal);
    detail::check_attention_masks(s, key_lengths, "attention_backward_reference");
    detail::check_doc_start_view(doc_start, s, 0, "attention_backward_reference");
    check(s.key_time == s.time, "attention_backward_reference: keys and queries must span the same positions");
    expect_same_shape("attention_backward_reference", "dq", dq, q);
    expect_same_shape("attention_backward_reference", "dk", dk, k);
    expect_same_shape("attention_backward_reference", "dv", dv, v);
    expect_same_shape("attention_backward_reference", "dout", dout, q);
    const index_t D = s.head_dim, group = s.q_heads / s.kv_heads;
    const T scale = T(1.0 / std::sqrt(double(D)));
    auto at = [&](auto& t, index_t b, index_t i, index_t h, index_t heads) {
        return t.data + ((b * s.time + i) * heads + h) * D;
    };
    // One task per (batch, key/value head): it owns dk and dv of that head and dq of its query heads,
    // so no two threads write the same element.
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t hk = 0; hk < s.kv_heads; ++hk) {
            for (index_t j = 0; j < s.time; ++j) {
                std::fill_n(at(dk, b, j, hk, s.kv_heads), D, T(0));
                std::fill_n(at(dv, b, j, hk, s.kv_heads), D, T(0));
            }
            for (index_t h = hk * group; h < (hk + 1) * group; ++h)
                for (index_t i = 0; i < s.time; ++i) {
                    const T* qi = at(q, b, i, h, s.q_heads);
                    const T* doi = at(dout, b, i, h, s.q_heads);
                    const T* oi = at(out, b, i, h, s.q_heads);
                    T* dqi = at(dq, b, i, h, s.q_heads);
                    std::fill_n(dqi, D, T(0));
                    const T d_i = detail::dot(doi, oi, D);
                    const T lse_i = lse[(b * s.q_heads + h) * s.time + i];
                    const detail::key_span span = detail::query_keys(s, doc_start, key_lengths, b, i, 0);
                    for (index_t j = span.first; j <= span.last; ++j) {
                        const T* kj = at(k, b, j, hk, s.kv_heads);
                        const T* vj = at(v, b, j, hk, s.kv_heads);
                        T* dkj = at(dk, b, j, hk, s.kv_heads);
                        T* dvj = at(dv, b, j, hk, s.kv_heads);
                        const T p = std::exp(detail::dot(qi, kj, D) * scale - lse_i);
                        const T ds = p * (detail::dot(doi, vj, D) - d_i) * scale;
#pragma omp simd
                        for (index_t c = 0; c < D; ++c) {
                            dqi[c] += ds * kj[c];
                            dkj[c] += ds * qi[c];
                            dvj[c] += p * doi[c];
                        }
                    }
                }
        }
}

// ---- tiled kernels ------------------------------------------------------------------------------------
// Flash-style: blocks of queries x blocks of keys. A tile's scores are a small matrix product (tile_nt),
// its probabilities times values another (tile_nn): ops/attention_tiles.hpp. The only memory besides the outputs
// is a few tiles on the stack.
namespace detail {
// The keys a block of queries sees: lo[r] .. hi[r] for its row r (causal, window, document and padding
// rules; query_keys one row at a time). The block visits the keys min lo .. max hi and no tile outside. In
// the causal and bidirectional forms alike both bounds grow with r, so that range is lo[0] .. hi[rows - 1]
// and every key in it is visible to some row (no tile in it is masked whole); only a padded query whose own
// keys are all padding, which falls back to all valid keys 0 .. key_lengths[b] - 1, breaks the order.
template <class Shape>
inline void visible_keys(index_t* lo, index_t* hi, const Shape& s, cview<index_t> doc_start, cview<index_t> key_lengths,
                         index_t b, index_t i0, index_t rows, index_t q_start) {
    for (index_t r = 0; r < rows; ++r) {
        const index_t pos = q_start + i0 + r;
        lo[r] = std::max(s.first_visible_key(pos), doc_first_key(doc_start, b, i0 + r, s.time));
        hi[r] = pos;
    }
    if (!s.causal) {
        // Each row sees up to the end of its document: the key before the next document's first token, or
        // the last key. Found for the block's last row by a scan, then carried up the rows.
        index_t end = s.key_time; // one past the last key of row r's document
        if (doc_start.data) {
            const index_t* ds = doc_start.data + b * s.time;
            index_t t = i0 + rows;
            while (t < s.time && ds[t] == ds[i0 + rows - 1])
                ++t;
            if (t < s.time) end = q_start + t;
        }
        for (index_t r = rows - 1; r >= 0; --r) {
            if (doc_start.data && r + 1 < rows && doc_start[b * s.time + i0 + r] != doc_start[b * s.time + i0 + r + 1])
                end = q_start + i0 + r + 1;
            hi[r] = end - 1;
        }
    }
    if (key_lengths.data) {
        const index_t valid = key_lengths[b];
        for (index_t r = 0; r < rows; ++r) {
            hi[r] = std::min(hi[r], valid - 1);
            if (lo[r] > hi[r]) lo[r] = 0, hi[r] = valid - 1; // a padded query whose own keys are all padding
        }
    }
}
// The key range a block visits: min lo .. max hi (lo[0] .. hi[rows - 1] but for padded fallbacks).
inline void block_keys(index_t& first, index_t& last, const index_t* lo, const index_t* hi, index_t rows) {
    first = *std::min_element(lo, lo + rows);
    last = *std::max_element(hi, hi + rows);
}
// One query (a decoding step, or the last row of a block) of one head over its keys first .. last: the scores are
// dot products along the head (no key tile to transpose for a single row, which cost as much as the product), then
// the same online softmax as the tiles, a tile of keys at a time; o (zeroed) receives the output row.
template <class T, class KV>
void attention_forward_row(T* o, tensor_view<T> lse, const T* q, const KV* kb, const KV* vb, index_t ldk, index_t D,
                           T scale, index_t first, index_t last, const attention_shape& s, index_t b, index_t h,
                           index_t i) {
    constexpr index_t BK = attention_block, lanes = 64 / index_t(sizeof(T)); // an AVX-512 register of T
    T row_max = -std::numeric_limits<T>::infinity(), row_sum = 0, S[BK];
    for (index_t j0 = first; j0 <= last; j0 += BK) {
        const index_t cols = std::min(BK, last + 1 - j0);
        T tile_max = row_max;
        index_t j = 0;
        if (D % lanes == 0) // four keys at a time, in fixed-width partial sums the compiler keeps in registers
            for (; j + 4 <= cols; j += 4) {
                T acc[4][lanes] = {};
                for (index_t c0 = 0; c0 < D; c0 += lanes)
                    for (index_t r = 0; r < 4; ++r) {
                        const KV* kr = kb + (j0 + j + r) * ldk + c0;
                        // Ask for the key 16 rows on and the value 4 rows on: rows lie ldk apart, a stride the
                        // hardware prefetchers followed too late (1.6x this loop from memory, AMD Zen 3).
                        if (j0 + j + r + 16 <= last) __builtin_prefetch(kr + 16 * ldk);
                        if (j0 + j + r + 4 <= last) __builtin_prefetch(vb + (j0 + j + r + 4) * ldk + c0);
#pragma omp simd
                        for (index_t l = 0; l < lanes; ++l)
                            acc[r][l] += q[c0 + l] * widen<T>(kr[l]);
                    }
                for (index_t r = 0; r < 4; ++r) {
                    for (index_t w = lanes / 2; w > 0; w /= 2) // pairwise: halves added, as a register's sum
                        for (index_t l = 0; l < w; ++l)
                            acc[r][l] += acc[r][l + w];
                    S[j + r] = acc[r][0] * scale;
                }
            }
        for (; j < cols; ++j)
            S[j] = dot(q, kb + (j0 + j) * ldk, D) * scale;
        for (j = 0; j < cols; ++j)
            tile_max = std::max(tile_max, S[j]);
        if (tile_max > row_max) { // rescale what has been summed so far
            const T factor = std::exp(row_max - tile_max);
            row_sum *= factor;
#pragma omp simd
            for (index_t c = 0; c < D; ++c)
                o[c] *= factor;
            row_max = tile_max;
        }
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (index_t j = 0; j < cols; ++j) {
            const T p = fast_exp(S[j] - row_max);
            S[j] = p;
            sum += p;
        }
        row_sum += sum;
        index_t c0 = 0;
        if (D % lanes == 0) // a register's width of o at a time, summed over the keys in registers
            for (; c0 < D; c0 += lanes) {
                T acc[lanes];
                std::copy_n(o + c0, lanes, acc);
                for (j = 0; j < cols; ++j) {
                    const T p = S[j];
                    const KV* vj = vb + (j0 + j) * ldk + c0;
#pragma omp simd
                    for (index_t l = 0; l < lanes; ++l)
                        acc[l] += p * widen<T>(vj[l]);
                }
                std::copy_n(acc, lanes, o + c0);
            }
        for (j = 0; c0 < D && j < cols; ++j) {
            const T p = S[j];
            const KV* vj = vb + (j0 + j) * ldk;
#pragma omp simd
            for (index_t c = 0; c < D; ++c)
                o[c] += p * widen<T>(vj[c]);
        }
    }
    const T inv_sum = T(1) / row_sum;
#pragma omp simd
    for (index_t c = 0; c < D; ++c)
        o[c] *= inv_sum;
    if (lse.data) lse[(b * s.q_heads + h) * s.time + i] = T(row_max + std::log(row_sum));
}

// Rows of queries q0 (`ldq` apart) over the key tiles first .. last of one key/value head (kb, vb: `ldk` apart;
// T, or bf16: widen), row r seeing keys lo[r] .. hi[r]; o0 (`ldo` apart, zeroed) receives the outputs, lse_row(r)
// (null: none) each row's log-sum-exp. rows <= attention_block.
template <class T, index_t NR, class KV, class LseRow>
void attend_tiles(T* o0, index_t ldo, const T* q0, index_t ldq, const KV* kb, const KV* vb, index_t ldk, index_t D,
                  T scale, index_t rows, const index_t* lo, const index_t* hi, index_t first, index_t last,
                  LseRow&& lse_row) {
    constexpr index_t BQ = attention_block, BK = attention_block;
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    T row_max[BQ], row_sum[BQ], S[BQ * BK];
    for (index_t r = 0; r < rows; ++r)
        row_max[r] = neg_inf, row_sum[r] = 0;
    for (index_t j0 = first; j0 <= last; j0 += BK) {
        const index_t cols = std::min(BK, last + 1 - j0);
        tile_nt<NR>(S, BK, q0, ldq, kb + j0 * ldk, ldk, rows, cols, D, scale);
        for (index_t r = 0; r < rows; ++r) {
            T* sr = S + r * BK;
            // Row r sees the columns ja .. jz of this tile (a contiguous range, maybe empty).
            const index_t ja = std::max<index_t>(lo[r] - j0, 0), jz = std::min(hi[r] - j0, cols - 1);
            if (ja > jz) { // nothing visible here: this row adds nothing
                std::fill_n(sr, cols, T(0));
                continue;
            }
            T tile_max = neg_inf;
            for (index_t j = ja; j <= jz; ++j)
                tile_max = std::max(tile_max, sr[j]);
            const T new_max = std::max(row_max[r], tile_max);
            std::fill_n(sr, ja, T(0));
            std::fill(sr + jz + 1, sr + cols, T(0));
            T sum = 0;
#pragma omp simd reduction(+ : sum)
            for (index_t j = ja; j <= jz; ++j) {
                const T p = fast_exp(sr[j] - new_max);
                sr[j] = p;
                sum += p;
            }
            if (new_max > row_max[r]) { // rescale what has been summed so far
                const T factor = std::exp(row_max[r] - new_max);
                row_sum[r] *= factor;
                T* orow = o0 + r * ldo;
#pragma omp simd
                for (index_t c = 0; c < D; ++c)
                    orow[c] *= factor;
                row_max[r] = new_max;
            }
            row_sum[r] += sum;
        }
        tile_nn<NR>(o0, ldo, S, BK, index_t(1), vb + j0 * ldk, ldk, rows, D, cols);
    }
    for (index_t r = 0; r < rows; ++r) {
        const T inv_sum = T(1) / row_sum[r];
        T* orow = o0 + r * ldo;
#pragma omp simd
        for (index_t c = 0; c < D; ++c)
            orow[c] *= inv_sum;
        if (T* l = lse_row(r)) *l = T(row_max[r] + std::log(row_sum[r]));
    }
}

// One query block of one head: rows i0 .. i0 + rows - 1 of out (and lse), over the key tiles it sees. Keys and
// values are T, or bf16 (a bf16 KV cache: widen).
template <class T, index_t NR, class KV>
void attention_forward_block(tensor_view<T> out, tensor_view<T> lse, cview<T> q, cview<KV> k, cview<KV> v,
                             const attention_shape& s, index_t q_start, cview<index_t> doc_start,
                             cview<index_t> key_lengths, index_t b, index_t h, index_t qb) {
    constexpr index_t BQ = attention_block;
    const index_t D = s.head_dim, hk = h / (s.q_heads / s.kv_heads), ldq = s.q_heads * D, ldk = s.kv_heads * D;
    const index_t i0 = qb * BQ, rows = std::min(BQ, s.time - i0);
    const T scale = T(1.0 / std::sqrt(double(D)));
    const T* q0 = q.data + (b * s.time + i0) * ldq + h * D;
    T* o0 = out.data + (b * s.time + i0) * ldq + h * D;
    const KV* kb = k.data + b * s.key_time * ldk + hk * D;
    const KV* vb = v.data + b * s.key_time * ldk + hk * D;
    index_t lo[BQ] = {}, hi[BQ] = {};
    visible_keys(lo, hi, s, doc_start, key_lengths, b, i0, rows, q_start);
    index_t first = 0, last = 0;
    block_keys(first, last, lo, hi, rows);
    for (index_t r = 0; r < rows; ++r)
        std::fill_n(o0 + r * ldq, D, T(0));
    if (rows == 1) return attention_forward_row(o0, lse, q0, kb, vb, ldk, D, scale, first, last, s, b, h, i0);
    attend_tiles<T, NR>(o0, ldq, q0, ldq, kb, vb, ldk, D, scale, rows, lo, hi, first, last, [&](index_t r) {
        return lse.data ? lse.data + (b * s.q_heads + h) * s.time + i0 + r : nullptr;
    });
}

// Decoding (one query a sequence, time 1) under grouped-query attention: the query heads of key/value head hk are
// the rows of one tile product, so each key and value row is read once for the group rather than once a head (7
// times for Qwen2.5-0.5B's 14 heads over 2: at a 4,000-token context the heads re-reading the cache from L3 cost
// more than the weights' products; docs/performance.md, "Long contexts"). Every head of the group sees the same keys.
template <class T, index_t NR, class KV>
void attention_forward_group(tensor_view<T> out, tensor_view<T> lse, cview<T> q, cview<KV> k, cview<KV> v,
                             const attention_shape& s, index_t q_start, cview<index_t> doc_start,
                             cview<index_t> key_lengths, index_t b, index_t hk) {
    const index_t D = s.head_dim, group = s.q_heads / s.kv_heads, ldq = s.q_heads * D, ldk = s.kv_heads * D;
    const T scale = T(1.0 / std::sqrt(double(D)));
    const T* q0 = q.data + b * ldq + hk * group * D;
    T* o0 = out.data + b * ldq + hk * group * D;
    const KV* kb = k.data + b * s.key_time * ldk + hk * D;
    const KV* vb = v.data + b * s.key_time * ldk + hk * D;
    index_t lo[attention_block] = {}, hi[attention_block] = {};
    visible_keys(lo, hi, s, doc_start, key_lengths, b, 0, 1, q_start);
    std::fill_n(lo + 1, group - 1, lo[0]);
    std::fill_n(hi + 1, group - 1, hi[0]);
    std::fill_n(o0, group * D, T(0));
    attend_tiles<T, NR>(o0, D, q0, D, kb, vb, ldk, D, scale, group, lo, hi, lo[0], hi[0], [&](index_t r) {
        return lse.data ? lse.data + (b * s.q_heads + hk * group + r) * s.time : nullptr;
    });
}

// One (batch, key/value head): dk and dv of that head, dq of its query heads.
template <class T, index_t NR>
void attention_backward_group(tensor_view<T> dq, tensor_view<T> dk, tensor_view<T> dv, cview<T> dout, cview<T> q,
                              cview<T> k, cview<T> v, cview<T> out, cview<T> lse, const attention_shape& s,
                              cview<index_t> doc_start, cview<index_t> key_lengths, index_t b, index_t hk) {
    constexpr index_t BQ = attention_block, BK = attention_block;
    const index_t D = s.head_dim, group = s.q_heads / s.kv_heads, blocks = (s.time + BQ - 1) / BQ;
    const index_t ldq = s.q_heads * D, ldk = s.kv_heads * D;
    const T scale = T(1.0 / std::sqrt(double(D)));
    const T* kb = k.data + b * s.time * ldk + hk * D;
    const T* vb = v.data + b * s.time * ldk + hk * D;
    T* dkb = dk.data + b * s.time * ldk + hk * D;
    T* dvb = dv.data + b * s.time * ldk + hk * D;
    for (index_t j = 0; j < s.time; ++j) {
        std::fill_n(dkb + j * ldk, D, T(0));
        std::fill_n(dvb + j * ldk, D, T(0));
    }
    for (index_t h = hk * group; h < (hk + 1) * group; ++h)
        for (index_t qb = 0; qb < blocks; ++qb) {
            const index_t i0 = qb * BQ, rows = std::min(BQ, s.time - i0);
            const index_t at = (b * s.time + i0) * ldq + h * D;
            const T *q0 = q.data + at, *do0 = dout.data + at, *o0 = out.data + at;
            T* dq0 = dq.data + at;
            index_t lo[BQ] = {}, hi[BQ] = {};
            T d_row[BQ], lse_row[BQ], P[BQ * BK], dS[BQ * BK];
            visible_keys(lo, hi, s, doc_start, key_lengths, b, i0, rows, 0);
            index_t first = 0, last = 0;
            block_keys(first, last, lo, hi, rows);
            for (index_t r = 0; r < rows; ++r) {
                std::fill_n(dq0 + r * ldq, D, T(0));
                d_row[r] = dot(do0 + r * ldq, o0 + r * ldq, D);
                lse_row[r] = lse[(b * s.q_heads + h) * s.time + i0 + r];
            }
            for (index_t j0 = first; j0 <= last; j0 += BK) {
                const index_t cols = std::min(BK, last + 1 - j0);
                tile_nt<NR>(P, BK, q0, ldq, kb + j0 * ldk, ldk, rows, cols, D, scale);
                tile_nt<NR>(dS, BK, do0, ldq, vb + j0 * ldk, ldk, rows, cols, D, T(1));
                for (index_t r = 0; r < rows; ++r) {
                    T *pr = P + r * BK, *dsr = dS + r * BK;
                    const index_t ja = std::max<index_t>(lo[r] - j0, 0), jz = std::min(hi[r] - j0, cols - 1);
                    const T l = lse_row[r], d = d_row[r];
                    for (index_t j = 0; j < cols; ++j) // invisible columns: p = ds = 0
                        if (j < ja || j > jz) pr[j] = dsr[j] = T(0);
#pragma omp simd
                    for (index_t j = ja; j <= jz; ++j) {
                        const T p = fast_exp(pr[j] - l);
                        pr[j] = p;
                        dsr[j] = p * (dsr[j] - d) * scale;
                    }
                }
                // dv += P^T dout, dk += dS^T q, dq += dS k
                tile_nn<NR>(dvb + j0 * ldk, ldk, P, index_t(1), BK, do0, ldq, cols, D, rows);
                tile_nn<NR>(dkb + j0 * ldk, ldk, dS, index_t(1), BK, q0, ldq, cols, D, rows);
                tile_nn<NR>(dq0, ldq, dS, BK, index_t(1), kb + j0 * ldk, ldk, rows, D, cols);
            }
        }
}

// The default build targets the baseline x86-64 (SSE2). On GCC, the blocks are compiled a second time for
// AVX2 + FMA (the whole block inlined into one function with that target) and chosen at run time when the
// CPU has them (bench_ops: bm_attention_* against bm_attention_*_baseline), the same results to float rounding.
// Tests turn detail::allow_avx2_clones off to check the baseline kernels on a machine that has AVX2 (simd.hpp),
// and allow_avx512_clones off to check the AVX2 ones on a machine that has AVX-512.
// The kernels compiled in each copy: a query block of one head, a group's heads decoding, a backward group.
struct forward_block_kernel {
    template <class T, index_t NR, class... Args>
    static void run(Args... args) {
        attention_forward_block<T, NR>(args...);
    }
};
struct forward_group_kernel {
    template <class T, index_t NR, class... Args>
    static void run(Args... args) {
        attention_forward_group<T, NR>(args...);
    }
};
struct backward_group_kernel {
    template <class T, index_t NR, class... Args>
    static void run(Args... args) {
        attention_backward_group<T, NR>(args...);
    }
};
#ifdef TINYLM_AVX2_CLONES
template <class T, class Kernel, class... Args>
__attribute__((target("avx2,fma"), flatten)) void attention_avx2(Args... args) {
    Kernel::template run<T, register_columns<T, 32>>(args...);
}
#endif
// And for AVX-512 (simd.hpp: allow_avx512_clones): twice the columns per register, so a tile row's 64 columns
// are two registers. 512-bit vectors asked for explicitly, as some -mtune settings prefer 256.
#ifdef TINYLM_AVX512_CLONES
template <class T, class Kernel, class... Args>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512"), flatten)) void
attention_avx512(Args... args) {
    Kernel::template run<T, register_columns<T, 64>>(args...);
}
#endif
// The best copy the CPU and the switches allow.
template <class T, class Kernel, class... Args>
void attention_best(bool avx512, bool avx2, Args... args) {
#ifdef TINYLM_AVX512_CLONES
    if (avx512) return attention_avx512<T, Kernel>(args...);
#endif
#ifdef TINYLM_AVX2_CLONES
    if (avx2) return attention_avx2<T, Kernel>(args...);
#endif
    (void)avx512, (void)avx2;
    Kernel::template run<T, register_columns<T>>(args...);
}
} // namespace detail

namespace detail {
// Decoding (one query a sequence): a key/value head's group of query heads runs as one tile product
// (attention_forward_group: each key and value read once for the group) rather than a head at a time (the row
// kernel: each head reads them again) for groups of min_decoding_group heads or more, and for groups of
// min_long_context_group or more over min_group_keys keys or more: below that, a tile's transposition for so few rows
// costs more than the reads it saves. Groups of 2 stay with the row kernel, which asks for its rows ahead: 1.06-1.9x
// the tile product in whole models on a Zen 5 (docs/performance.md, "Groups of 2 on an AVX-512 CPU"). Variables so
// that bench_generate --min-group and bench_ops compare the two paths in one program (the same sums, in another order).
inline index_t min_decoding_group = 4, min_long_context_group = 3, min_group_keys = 512;
inline bool decodes_by_group(const attention_shape& s, index_t q_start) {
    const index_t group = s.q_heads / s.kv_heads;
    if (s.time != 1 || group < 2 || group > attention_block) return false;
    const index_t keys = s.causal ? std::min(q_start + 1, s.key_time) : s.key_time;
    return group >= min_decoding_group ||
           (group >= min_long_context_group && (s.window > 0 ? std::min(keys, s.window) : keys) >= min_group_keys);
}
} // namespace detail

// KV: the keys' and values' element type, T or bf16 (a bf16 KV cache; the sums stay T).
template <class T, class KV = T>
void attention_forward(tensor_view<T> out, tensor_view<T> lse, cview<T> q, cview<std::type_identity_t<KV>> k,
                       cview<std::type_identity_t<KV>> v, index_t window = 0, index_t q_start = 0,
                       cview<index_t> doc_start = {}, bool causal = true, cview<index_t> key_lengths = {}) {
    const attention_shape s = detail::attention_shape_of(q.shape, k.shape, window, q_start, causal);
    detail::check_attention_masks(s, key_lengths, "attention");
    detail::check_doc_start_view(doc_start, s, q_start, "attention");
    expect_same_shape("attention", "v", v, k);
    expect_same_shape("attention", "out", out, q);
    if (lse.data) expect_shape("attention", "lse", lse, {s.batch, s.q_heads, s.time});
    const index_t blocks = (s.time + detail::attention_block - 1) / detail::attention_block;
    const bool avx512 = detail::avx512_clones_active(), avx2 = detail::avx2_clones_active();
    // Multiply-adds (q k and p v): one decoded token over a short cache stays on the calling thread (simd.hpp,
    // min_parallel_work; 8 times the threshold, as each multiply-add also reads a key or value element).
    const index_t keys = std::min(s.causal ? q_start + s.time : s.key_time, s.key_time);
    const index_t work =
        2 * s.batch * s.q_heads * s.time * (s.window > 0 ? std::min(keys, s.window) : keys) * s.head_dim;
    if (detail::decodes_by_group(s, q_start)) { // one task per (batch, key/value head)
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work >= 8 * detail::min_parallel_work)
        for (index_t b = 0; b < s.batch; ++b)
            for (index_t hk = 0; hk < s.kv_heads; ++hk)
                detail::attention_best<T, detail::forward_group_kernel>(avx512, avx2, out, lse, q, k, v, s, q_start,
                                                                        doc_start, key_lengths, b, hk);
        return;
    }
    // One task per (batch, query head, query block); later blocks see more keys, hence dynamic.
#pragma omp parallel for collapse(3) schedule(dynamic, 1) if (work >= 8 * detail::min_parallel_work)
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t h = 0; h < s.q_heads; ++h)
            for (index_t qb = 0; qb < blocks; ++qb)
                detail::attention_best<T, detail::forward_block_kernel>(avx512, avx2, out, lse, q, k, v, s, q_start,
                                                                        doc_start, key_lengths, b, h, qb);
}

// One query for each of several sequences, each over its own cached keys and values (sequences decoded together,
// kv_cache::append_each): q and out (R, 1, H, D); k[r] and v[r] (1, capacity_r, Hkv, D), the query of row r at
// position q_start[r]. One parallel region for every (row, head); row r gets what attention_forward gives it alone.
template <class T, class KV = T>
void attention_forward_rows(tensor_view<T> out, cview<T> q, std::span<const tensor_view<std::type_identity_t<KV>>> k,
                            std::span<const tensor_view<std::type_identity_t<KV>>> v, std::span<const index_t> q_start,
                            index_t window = 0, bool causal = true) {
    check(q.shape.rank == 4 && q.dim(1) == 1 && index_t(k.size()) == q.dim(0) && v.size() == k.size() &&
              q_start.size() == k.size(),
          [&] {
              return "attention_forward_rows: q must be (R, 1, H, D) with R caches and starts, got " + q.shape.str();
          });
    expect_same_shape("attention_forward_rows", "out", out, q);
    const index_t rows = q.dim(0), heads = q.dim(2), width = heads * q.dim(3);
    const shape one{1, 1, heads, q.dim(3)};
    // Each row's shape, checked here (the parallel loop makes them again: no allocation in a decoding step).
    auto shape_of = [&](std::size_t i) {
        return detail::attention_shape_of(one, k[i].shape, window, q_start[i], causal);
    };
    index_t work = 0;
    for (index_t r = 0; r < rows; ++r) {
        const std::size_t i = std::size_t(r);
        expect_same_shape("attention_forward_rows", "v", v[i], k[i]);
        (void)shape_of(i); // throws on a cache that does not fit
        const index_t keys = std::min(q_start[i] + 1, k[i].dim(1));
        work += 2 * heads * (window > 0 ? std::min(keys, window) : keys) * q.dim(3);
    }
    const bool avx512 = detail::avx512_clones_active(), avx2 = detail::avx2_clones_active();
    // As attention_forward: a task per (row, key/value head) where the group's heads go together (decided by the
    // longest row: either path gives each row its attention), else per head.
    std::size_t longest = 0;
    for (std::size_t i = 1; i < k.size(); ++i)
        if (q_start[i] > q_start[longest]) longest = i;
    const bool by_group = rows > 0 && detail::decodes_by_group(shape_of(longest), q_start[longest]);
    const index_t tasks = by_group ? shape_of(0).kv_heads : heads;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work >= 8 * detail::min_parallel_work)
    for (index_t r = 0; r < rows; ++r)
        for (index_t h = 0; h < tasks; ++h) {
            const std::size_t i = std::size_t(r);
            const attention_shape s = shape_of(i);
            const tensor_view<T> out_r{out.data + r * width, one};
            const cview<T> q_r{q.data + r * width, one};
            if (by_group)
                detail::attention_best<T, detail::forward_group_kernel>(
                    avx512, avx2, out_r, tensor_view<T>{}, q_r, cview<KV>(k[i]), cview<KV>(v[i]), s, q_start[i],
                    cview<index_t>{}, cview<index_t>{}, index_t(0), h);
            else
                detail::attention_best<T, detail::forward_block_kernel>(
                    avx512, avx2, out_r, tensor_view<T>{}, q_r, cview<KV>(k[i]), cview<KV>(v[i]), s, q_start[i],
                    cview<index_t>{}, cview<index_t>{}, index_t(0), h, index_t(0));
        }
}

template <class T>
void attention_backward(tensor_view<T> dq, tensor_view<T> dk, tensor_view<T> dv, cview<T> dout, cview<T> q, cview<T> k,
                        cview<T> v, cview<T> out, cview<T> lse, index_t window = 0, cview<index_t> doc_start = {},
                        bool causal = true, cview<index_t> key_lengths = {}) {
    const attention_shape s = detail::attention_shape_of(q.shape, k.shape, window, 0, causal);
    detail::check_attention_masks(s, key_lengths, "attention_backward");
    detail::check_doc_start_view(doc_start, s, 0, "attention_backward");
    check(s.key_time == s.time, "attention_backward: keys and queries must span the same positions");
    expect_same_shape("attention_backward", "dq", dq, q);
    expect_same_shape("attention_backward", "dk", dk, k);
    expect_same_shape("attention_backward", "dv", dv, v);
    expect_same_shape("attention_backward", "dout", dout, q);
    const bool avx512 = detail::avx512_clones_active(), avx2 = detail::avx2_clones_active();
    // One task per (batch, key/value head): it owns dk and dv of that head and dq of its query heads, so no
    // two threads write the same element; the query heads of the group share its K and V tiles.
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (index_t b = 0; b < s.batch; ++b)
        for (index_t hk = 0; hk < s.kv_heads; ++hk)
            detail::attention_best<T, detail::backward_group_kernel>(avx512, avx2, dq, dk, dv, dout, q, k, v, out, lse,
                                                                     s, doc_start, key_lengths, b, hk);
}

} // namespace tl
