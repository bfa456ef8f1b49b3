// src/cuda/flash_attention.cu: fused attention on tensor cores (tinylm/cuda/device.hpp's attention_fused_forward and
// attention_fused_backward; decoder_step's attention_path::fused): FlashAttention-2's loop over tiles, the scores
// never leaving shared memory. The per-element arithmetic (masks, online softmax, rescaling, p and ds) is
// tinylm/cuda/attention_fused.hpp's, which gpu::cpu_ops runs on the host; the products are wmma's 16 x 16 x 16 bf16
// tiles with f32 accumulators.
//
// A block of 4 warps takes 32 queries (forward, dq) or 32 keys (dk, dv) of one head of one sequence. q, k, v and
// dout tiles are read from f32 global memory and rounded to bf16 into shared memory; each warp computes one 16 x 16
// tile of a 32 x 32 score tile (S = Q K^T, dP = dO V^T) and a quarter of a 32 x D output tile (D / 32 tiles of 16 x
// 16). The forward keeps O in shared f32 (a row's rescaling needs the element's row, and an accumulator fragment's
// layout is opaque): each key tile's P V is staged in a buffer of its own and plain threads add it, rescaled, to O.
// Its online softmax runs 4 threads per query row, every thread of the block (fused_row_threads; each takes 8 keys
// of the tile; the 4 lanes of a row are a segment of one warp, which gather each other's maxima and sums by
// __shfl_sync and combine the 4 in a fixed order, attention_fused.hpp's, which the CPU driver repeats). The backward
// accumulates dQ, dK and dV in fragments across the loop (no rescaling). Key tiles that no query of the tile sees, and
// query tiles that see none of a key tile, are skipped. No atomics: dk, dv walk the query heads of their group and the
// query tiles in ascending order, so the result is deterministic.
//
// Head widths 64 and 128: the kernels are templates on D, one instance each, chosen once at the entry points. Both
// fit in static shared memory (48 KB, no opt-in to more): a buffer whose contents are dead is reused for the f32
// staging of a product's output (the forward's P V in the K and V tiles once the product has read V; the backward's
// dQ, dK and dV at the end in the operand tiles). Dynamic shared memory above 48 KB would need an opt-in per kernel
// (cudaFuncSetAttribute) and would leave fewer blocks per SM; staging in dead buffers costs one barrier per key tile.
// Shared memory and registers per block (ptxas, nvcc 13.0 --resource-usage for sm_90; no spills), D = 64 / 128:
// forward 27520 / 48000 bytes, 56 / 76 registers; dq 27392 / 43776 bytes, 64 / 72 registers; dk and dv 29440 /
// 45824 bytes, 70 / 130 registers.
#include "check.cuh"

#include <tinylm/cuda/attention_fused.hpp>
#include <tinylm/cuda/device.hpp>

#include <cuda_bf16.h>
#include <mma.h>

#include <string>

namespace tl::gpu {
namespace {

namespace wmma = nvcuda::wmma;
using bf16_t = __nv_bfloat16;
constexpr int BQ = fused_query_tile, BK = fused_key_tile, W = 16; // W: wmma's tile
constexpr int threads = fused_threads, R = fused_row_threads, LK = fused_lane_keys;
static_assert(threads == 128 && BQ == 2 * W && BK == 2 * W,
              "each of the 4 warps takes one 16 x 16 tile of a score tile and a quarter of an output tile");
static_assert(R * BQ == threads && R * LK == BK, "the forward's softmax: R threads per query row, LK keys each");
static_assert(32 % R == 0, "the forward's softmax: a row's R lanes are a segment of one warp, for __shfl_sync");
constexpr unsigned all_lanes = 0xffffffffU; // every thread of the block is a lane of a row

using accumulator = wmma::fragment<wmma::accumulator, W, W, W, float>;
template <class Layout>
using operand_a = wmma::fragment<wmma::matrix_a, W, W, W, bf16_t, Layout>;
template <class Layout>
using operand_b = wmma::fragment<wmma::matrix_b, W, W, W, bf16_t, Layout>;

// The shared buffers of a kernel for head width D, carved from one array of bytes where two reuse the same storage
// (the f32 staging of a product's output in bf16 operand tiles no longer read): each starts 256-bit aligned, as wmma
// requires of its pointers.
constexpr unsigned aligned(unsigned bytes) { return (bytes + 31) / 32 * 32; }
template <int D>
struct tiles {
    static_assert(D % (2 * W) == 0, "a 32 x D output tile: D / 16 column tiles, half of them per warp of a row tile");
    static constexpr int out_tiles = D / (2 * W); // the 16 x 16 output tiles of each warp
    static constexpr unsigned operand = aligned(unsigned(BQ * D * sizeof(bf16_t))); // a 32 x D bf16 tile (BQ == BK)
    static constexpr unsigned output = aligned(unsigned(BQ * D * sizeof(float)));   // a 32 x D f32 tile
    static constexpr unsigned scores = aligned(unsigned(BQ * BK * sizeof(float)));  // a 32 x 32 f32 tile
    static constexpr unsigned pair = aligned(unsigned(BQ * BK * sizeof(bf16_t)));   // a 32 x 32 bf16 tile
    static_assert(2 * operand >= output, "an f32 output tile is staged in two bf16 operand tiles");
};

// acc += A B over an inner dimension of `steps` x 16: A's 16 x 16 blocks at a, a + a_step, ...; B's at b, b + b_step.
template <class LayoutA, class LayoutB>
__device__ void warp_product(accumulator& acc, const bf16_t* a, unsigned lda, int a_step, const bf16_t* b, unsigned ldb,
                             int b_step, int steps) {
    operand_a<LayoutA> fa;
    operand_b<LayoutB> fb;
    for (int s = 0; s < steps; ++s) {
        wmma::load_matrix_sync(fa, a + s * a_step, lda);
        wmma::load_matrix_sync(fb, b + s * b_step, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}
// The 16 x 16 tile (row tile, column tile) of a 32 x 32 score tile: rows of A (row-major, ld D) times rows of B
// (read as B^T: col-major, ld D) over the head width; warp w takes tile (w / 2, w % 2) into `to` (ld BK).
template <int D>
__device__ void warp_scores(float* to, const bf16_t* a, const bf16_t* b, int warp) {
    const int rt = warp / 2, ct = warp % 2;
    accumulator acc;
    wmma::fill_fragment(acc, 0.0f);
    warp_product<wmma::row_major, wmma::col_major>(acc, a + rt * W * D, D, W, b + ct * W * D, D, W, D / W);
    wmma::store_matrix_sync(to + rt * W * BK + ct * W, acc, BK, wmma::mem_row_major);
}
// The output tiles of warp w in a 32 x D tile: row tile w / 2, column tiles (w % 2) n .. (w % 2) n + n - 1 (n = D /
// 32).
__device__ int out_row_tile(int warp) { return warp / 2; }
template <int D>
__device__ int out_col_tile(int warp, int t) {
    return (warp % 2) * tiles<D>::out_tiles + t;
}
// A warp's output fragments staged into a 32 x D f32 tile (ld D).
template <int D>
__device__ void stage_outputs(float* to, const accumulator* acc, int warp) {
    for (int t = 0; t < tiles<D>::out_tiles; ++t)
        wmma::store_matrix_sync(to + out_row_tile(warp) * W * D + out_col_tile<D>(warp, t) * W, acc[t], D,
                                wmma::mem_row_major);
}

// rows row0 .. row0 + n - 1 of a head (its row 0 at `from`, rows `stride` floats apart), D floats each, rounded to
// bf16 into `to` (n x D); rows at or past `time` are zeros.
template <int D>
__device__ void load_tile(bf16_t* to, const float* from, long long row0, long long time, int n, long long stride) {
    for (int e = threadIdx.x; e < n * D; e += threads) {
        const int r = e / D, c = e % D;
        to[e] = __float2bfloat16(row0 + r < time ? from[(row0 + r) * stride + c] : 0.0f);
    }
}
// An accumulator tile set (32 x D, staged in `stage`, ld D) written to rows row0 .. of a head below `time`.
template <int D>
__device__ void write_tile(float* to, const float* stage, long long row0, long long time, long long stride) {
    for (int e = threadIdx.x; e < BQ * D; e += threads) {
        const int r = e / D, c = e % D;
        if (row0 + r < time) to[(row0 + r) * stride + c] = stage[e];
    }
}

template <int D>
__global__ void fused_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v,
                                     attention_masks m, attention_dims s, float scale) {
    using z = tiles<D>;
    // Q; K and V, where each key tile's P V is staged once the product has read V; P; S; O.
    alignas(32) __shared__ unsigned char shared[3 * z::operand + z::pair + z::scores + z::output];
    bf16_t* qs = reinterpret_cast<bf16_t*>(shared);
    bf16_t* ks = reinterpret_cast<bf16_t*>(shared + z::operand);
    bf16_t* vs = reinterpret_cast<bf16_t*>(shared + 2 * z::operand);
    float* pv = reinterpret_cast<float*>(shared + z::operand);
    bf16_t* ps = reinterpret_cast<bf16_t*>(shared + 3 * z::operand);
    float* scores = reinterpret_cast<float*>(shared + 3 * z::operand + z::pair);
    float* o = reinterpret_cast<float*>(shared + 3 * z::operand + z::pair + z::scores);
    __shared__ long long first[BQ], last[BQ];
    __shared__ float row_max[BQ], row_sum[BQ], rescale[BQ];
    const long long b = blockIdx.z, i0 = (long long)blockIdx.x * BQ;
    const int h = blockIdx.y, warp = threadIdx.x / 32;
    const long long ldq = (long long)s.q_heads * D, ldkv = (long long)s.kv_heads * D;
    const float* qh = q + attention_q_offset(b, 0, h, s);
    const float* kh = k + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    const float* vh = v + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    load_tile<D>(qs, qh, i0, s.time, BQ, ldq);
    for (int e = threadIdx.x; e < BQ * D; e += threads)
        o[e] = 0;
    if (threadIdx.x < BQ) {
        const attention_span keys = fused_row_keys(b, i0 + threadIdx.x, s, m);
        first[threadIdx.x] = keys.first, last[threadIdx.x] = keys.last;
        const fused_row_state st;
        row_max[threadIdx.x] = st.max, row_sum[threadIdx.x] = st.sum;
    }
    __syncthreads();
    const attention_span tile = fused_tile_keys(first, last, BQ);
    // The online softmax's thread: row r, its lane (keys lane LK .. lane LK + LK - 1 of the tile); a warp holds 8 rows,
    // each a segment of R lanes, which read each other's maxima and sums by __shfl_sync in lane order (every lane of
    // the row gathers all R, then combines them as fused_rescale and fused_add_lane_sums do, so every lane holds the
    // row's state, the CPU driver's bits).
    const int r = threadIdx.x / R, lane = threadIdx.x % R;
    fused_row_state st;
    for (long long j0 = tile.first / BK * BK; j0 <= tile.last; j0 += BK) {
        load_tile<D>(ks, kh, j0, s.time, BK, ldkv);
        load_tile<D>(vs, vh, j0, s.time, BK, ldkv);
        __syncthreads();
        warp_scores<D>(scores, qs, ks, warp);
        __syncthreads();
        const int n = s.time - j0 < BK ? int(s.time - j0) : BK;
        const float lane_max = fused_lane_max(scores + r * BK, j0, n, lane, first[r], last[r], scale);
        float row_lanes[R]; // the R lanes' maxima, then their sums
        for (int l = 0; l < R; ++l)
            row_lanes[l] = __shfl_sync(all_lanes, lane_max, l, R);
        const float row_rescale = fused_rescale(st, row_lanes); // every lane of the row alike
        float p[LK];
        const float lane_sum = fused_lane_exp(p, scores + r * BK, j0, n, lane, first[r], last[r], scale, st.max);
        for (int u = 0; u < LK; ++u)
            ps[r * BK + lane * LK + u] = __float2bfloat16(p[u]);
        for (int l = 0; l < R; ++l)
            row_lanes[l] = __shfl_sync(all_lanes, lane_sum, l, R);
        fused_add_lane_sums(st, row_lanes);
        if (lane == 0) row_max[r] = st.max, row_sum[r] = st.sum, rescale[r] = row_rescale;
        // P is whole before the product: a warp's rows of P are written by two warps' lanes.
        __syncthreads();
        accumulator acc[z::out_tiles]; // P V, staged over K and V once every warp has read them
        for (int t = 0; t < z::out_tiles; ++t) {
            wmma::fill_fragment(acc[t], 0.0f);
            warp_product<wmma::row_major, wmma::row_major>(acc[t], ps + out_row_tile(warp) * W * BK, BK, W,
                                                           vs + out_col_tile<D>(warp, t) * W, D, W * D, BK / W);
        }
        __syncthreads();
        stage_outputs<D>(pv, acc, warp);
        __syncthreads();
        for (int e = threadIdx.x; e < BQ * D; e += threads)
            o[e] = fused_accumulate(o[e], rescale[e / D], pv[e]);
        __syncthreads();
    }
    for (int e = threadIdx.x; e < BQ * D; e += threads) {
        const int row = e / D;
        if (i0 + row < s.time)
            out[attention_q_offset(b, i0 + row, h, s) + e % D] = fused_output(o[e], {row_max[row], row_sum[row]});
    }
    if (threadIdx.x < BQ && i0 + threadIdx.x < s.time)
        lse[attention_lse_offset(b, h, i0 + threadIdx.x, s)] = fused_lse({row_max[threadIdx.x], row_sum[threadIdx.x]});
}

// The spans, lse and delta of a query tile's rows (threads 0 .. BQ - 1); rows past the sequence see nothing.
__device__ void load_row_state(long long* first, long long* last, float* row_lse, float* row_delta, const float* lse,
                               const float* delta, long long b, int h, long long i0, const attention_masks& m,
                               const attention_dims& s) {
    if (threadIdx.x >= BQ) return;
    const long long i = i0 + threadIdx.x;
    const attention_span keys = fused_row_keys(b, i, s, m);
    first[threadIdx.x] = keys.first, last[threadIdx.x] = keys.last;
    row_lse[threadIdx.x] = i < s.time ? lse[attention_lse_offset(b, h, i, s)] : 0.0f;
    row_delta[threadIdx.x] = i < s.time ? delta[attention_lse_offset(b, h, i, s)] : 0.0f;
}
// p and ds of a 32 x 32 tile (queries i0 .., keys j0 ..) from S and dP (scores, scores + BQ BK), rounded to bf16.
__device__ void pair_grads(bf16_t* ps, bf16_t* dss, const float* scores, long long j0, const long long* first,
                           const long long* last, const float* row_lse, const float* row_delta, float scale) {
    for (int e = threadIdx.x; e < BQ * BK; e += threads) {
        const int r = e / BK;
        const fused_pair g = fused_pair_grad(scores[e], scores[BQ * BK + e], j0 + e % BK, first[r], last[r], row_lse[r],
                                             row_delta[r], scale);
        if (ps) ps[e] = __float2bfloat16(g.p);
        dss[e] = __float2bfloat16(g.ds);
    }
}

template <int D>
__global__ void fused_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                const float* lse, const float* delta, attention_masks m, attention_dims s,
                                float scale) {
    using z = tiles<D>;
    // Q, dO, K, V (at the end dQ's staging); dS; S and dP.
    alignas(32) __shared__ unsigned char shared[4 * z::operand + z::pair + 2 * z::scores];
    bf16_t* qs = reinterpret_cast<bf16_t*>(shared);
    bf16_t* dos = reinterpret_cast<bf16_t*>(shared + z::operand);
    bf16_t* ks = reinterpret_cast<bf16_t*>(shared + 2 * z::operand);
    bf16_t* vs = reinterpret_cast<bf16_t*>(shared + 3 * z::operand);
    float* stage = reinterpret_cast<float*>(shared);
    bf16_t* dss = reinterpret_cast<bf16_t*>(shared + 4 * z::operand);
    float* scores = reinterpret_cast<float*>(shared + 4 * z::operand + z::pair);
    __shared__ long long first[BQ], last[BQ];
    __shared__ float row_lse[BQ], row_delta[BQ];
    const long long b = blockIdx.z, i0 = (long long)blockIdx.x * BQ;
    const int h = blockIdx.y, warp = threadIdx.x / 32;
    const long long ldq = (long long)s.q_heads * D, ldkv = (long long)s.kv_heads * D;
    const float* kh = k + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    const float* vh = v + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    load_tile<D>(qs, q + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
    load_tile<D>(dos, dout + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
    load_row_state(first, last, row_lse, row_delta, lse, delta, b, h, i0, m, s);
    accumulator acc[z::out_tiles];
    for (int t = 0; t < z::out_tiles; ++t)
        wmma::fill_fragment(acc[t], 0.0f);
    __syncthreads();
    const attention_span tile = fused_tile_keys(first, last, BQ);
    for (long long j0 = tile.first / BK * BK; j0 <= tile.last; j0 += BK) {
        load_tile<D>(ks, kh, j0, s.time, BK, ldkv);
        load_tile<D>(vs, vh, j0, s.time, BK, ldkv);
        __syncthreads();
        warp_scores<D>(scores, qs, ks, warp);
        warp_scores<D>(scores + BQ * BK, dos, vs, warp);
        __syncthreads();
        pair_grads(nullptr, dss, scores, j0, first, last, row_lse, row_delta, scale);
        __syncthreads();
        for (int t = 0; t < z::out_tiles; ++t) // dQ += dS K
            warp_product<wmma::row_major, wmma::row_major>(acc[t], dss + out_row_tile(warp) * W * BK, BK, W,
                                                           ks + out_col_tile<D>(warp, t) * W, D, W * D, BK / W);
        __syncthreads();
    }
    stage_outputs<D>(stage, acc, warp);
    __syncthreads();
    write_tile<D>(dq + attention_q_offset(b, 0, h, s), stage, i0, s.time, ldq);
}

template <int D>
__global__ void fused_dkdv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                  const float* v, const float* lse, const float* delta, attention_masks m,
                                  attention_dims s, float scale) {
    using z = tiles<D>;
    // K, V, Q, dO (at the end dK's, then dV's staging); P; dS; S and dP.
    alignas(32) __shared__ unsigned char shared[4 * z::operand + 2 * z::pair + 2 * z::scores];
    bf16_t* ks = reinterpret_cast<bf16_t*>(shared);
    bf16_t* vs = reinterpret_cast<bf16_t*>(shared + z::operand);
    bf16_t* qs = reinterpret_cast<bf16_t*>(shared + 2 * z::operand);
    bf16_t* dos = reinterpret_cast<bf16_t*>(shared + 3 * z::operand);
    float* stage = reinterpret_cast<float*>(shared);
    bf16_t* ps = reinterpret_cast<bf16_t*>(shared + 4 * z::operand);
    bf16_t* dss = reinterpret_cast<bf16_t*>(shared + 4 * z::operand + z::pair);
    float* scores = reinterpret_cast<float*>(shared + 4 * z::operand + 2 * z::pair);
    __shared__ long long first[BQ], last[BQ];
    __shared__ float row_lse[BQ], row_delta[BQ];
    const long long b = blockIdx.z, j0 = (long long)blockIdx.x * BK;
    const int hk = blockIdx.y, warp = threadIdx.x / 32, group = s.q_heads / s.kv_heads;
    const long long ldq = (long long)s.q_heads * D, ldkv = (long long)s.kv_heads * D;
    const long long key_last = (j0 + BK < s.time ? j0 + BK : s.time) - 1;
    load_tile<D>(ks, k + attention_kv_offset(b, 0, hk, s), j0, s.time, BK, ldkv);
    load_tile<D>(vs, v + attention_kv_offset(b, 0, hk, s), j0, s.time, BK, ldkv);
    accumulator dk_acc[z::out_tiles], dv_acc[z::out_tiles];
    for (int t = 0; t < z::out_tiles; ++t) {
        wmma::fill_fragment(dk_acc[t], 0.0f);
        wmma::fill_fragment(dv_acc[t], 0.0f);
    }
    // Causal: no query before the key tile sees it (a padded query sees keys before itself too).
    const long long q_begin = s.causal ? j0 / BQ * BQ : 0;
    for (int h = hk * group; h < (hk + 1) * group; ++h)
        for (long long i0 = q_begin; i0 < s.time; i0 += BQ) {
            __syncthreads(); // the previous tile's products have read qs, dos, ps, dss; its rows' state
            load_row_state(first, last, row_lse, row_delta, lse, delta, b, h, i0, m, s);
            __syncthreads();
            if (!fused_tile_sees(first, last, BQ, j0, key_last)) continue; // the same for every thread
            load_tile<D>(qs, q + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
            load_tile<D>(dos, dout + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
            __syncthreads();
            warp_scores<D>(scores, qs, ks, warp);
            warp_scores<D>(scores + BQ * BK, dos, vs, warp);
            __syncthreads();
            pair_grads(ps, dss, scores, j0, first, last, row_lse, row_delta, scale);
            __syncthreads();
            for (int t = 0; t < z::out_tiles; ++t) { // dV += P^T dO, dK += dS^T Q: P^T, dS^T read col-major from P, dS
                const int rt = out_row_tile(warp), ct = out_col_tile<D>(warp, t);
                warp_product<wmma::col_major, wmma::row_major>(dv_acc[t], ps + rt * W, BK, W * BK, dos + ct * W, D,
                                                               W * D, BQ / W);
                warp_product<wmma::col_major, wmma::row_major>(dk_acc[t], dss + rt * W, BK, W * BK, qs + ct * W, D,
                                                               W * D, BQ / W);
            }
        }
    __syncthreads();
    stage_outputs<D>(stage, dk_acc, warp);
    __syncthreads();
    write_tile<D>(dk + attention_kv_offset(b, 0, hk, s), stage, j0, s.time, ldkv);
    __syncthreads();
    stage_outputs<D>(stage, dv_acc, warp);
    __syncthreads();
    write_tile<D>(dv + attention_kv_offset(b, 0, hk, s), stage, j0, s.time, ldkv);
}

void check_fused(const attention_dims& s, const char* what) {
    check(s.q_heads > 0 && s.kv_heads > 0 && s.q_heads % s.kv_heads == 0 && fused_head_dim_supported(s.head_dim) &&
              s.window >= 0 && (s.causal || s.window == 0) && s.q_heads <= 65535 && s.batch <= 65535 &&
              (s.time + BQ - 1) / BQ <= 0x7fffffffLL,
          [&] {
              return std::string(what) + ": unsupported shape (" + attention_shape_text(s) +
                     "): the fused kernels take a head width of " + fused_head_dims_text +
                     " only (use attention_path::products or rows for others), query heads a multiple of key/value "
                     "heads, at most 65535 heads and sequences, a window only with causal attention";
          });
}

// The kernels' instances for the head width (fused_head_dim_supported, checked first).
template <int D>
void fused_forward(float* out, float* lse, const float* q, const float* k, const float* v, const attention_masks& m,
                   const attention_dims& s, cudaStream_t stream) {
    const dim3 grid(unsigned((s.time + BQ - 1) / BQ), unsigned(s.q_heads), unsigned(s.batch));
    const auto kernel = fused_forward_kernel<D>;
    TINYLM_LAUNCH(kernel, grid, threads, stream, out, lse, q, k, v, m, s, attention_scale(s.head_dim));
    detail::launch_check("attention_fused_forward");
}
template <int D>
void fused_backward(float* dq, float* dk, float* dv, const float* delta, const float* dout, const float* q,
                    const float* k, const float* v, const float* lse, const attention_masks& m, const attention_dims& s,
                    cudaStream_t stream) {
    const float scale = attention_scale(s.head_dim);
    const dim3 q_grid(unsigned((s.time + BQ - 1) / BQ), unsigned(s.q_heads), unsigned(s.batch));
    const auto dq_kernel = fused_dq_kernel<D>;
    TINYLM_LAUNCH(dq_kernel, q_grid, threads, stream, dq, dout, q, k, v, lse, delta, m, s, scale);
    detail::launch_check("attention_fused_backward (dq)");
    const dim3 kv_grid(unsigned((s.time + BK - 1) / BK), unsigned(s.kv_heads), unsigned(s.batch));
    const auto dkdv_kernel = fused_dkdv_kernel<D>;
    TINYLM_LAUNCH(dkdv_kernel, kv_grid, threads, stream, dk, dv, dout, q, k, v, lse, delta, m, s, scale);
    detail::launch_check("attention_fused_backward (dk, dv)");
}

} // namespace

void attention_fused_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const attention_masks& masks, const attention_dims& s, void* stream) {
    check_fused(s, "gpu::attention_fused_forward");
    if (s.batch == 0 || s.time == 0) return;
    const cudaStream_t st = detail::as_stream(stream);
    if (s.head_dim == 64)
        fused_forward<64>(out, lse, q, k, v, masks, s, st);
    else
        fused_forward<128>(out, lse, q, k, v, masks, s, st);
}

void attention_fused_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                              const float* k, const float* v, const float* out, const float* lse,
                              const attention_masks& masks, const attention_dims& s, void* stream) {
    check_fused(s, "gpu::attention_fused_backward");
    if (s.batch == 0 || s.time == 0) return;
    attention_delta(delta, dout, out, s, stream);
    const cudaStream_t st = detail::as_stream(stream);
    if (s.head_dim == 64)
        fused_backward<64>(dq, dk, dv, delta, dout, q, k, v, lse, masks, s, st);
    else
        fused_backward<128>(dq, dk, dv, delta, dout, q, k, v, lse, masks, s, st);
}

} // namespace tl::gpu
