// src/cuda/flash_attention.cu: fused attention on tensor cores (tinylm/cuda/device.hpp's attention_fused_forward and
// attention_fused_backward; decoder_step's attention_path::fused): FlashAttention-2's loop over tiles, the scores
// never leaving shared memory. The per-element arithmetic (masks, online softmax, rescaling, p and ds) is
// tinylm/cuda/attention_fused.hpp's, which gpu::cpu_ops runs on the host; the products are wmma's 16 x 16 x 16 bf16
// tiles with f32 accumulators.
//
// A block of 4 warps takes 32 queries (forward, dq) or 32 keys (dk, dv) of one head of one sequence. q, k, v and
// dout tiles are read from f32 global memory and rounded to bf16 into shared memory; each warp computes one 16 x 16
// tile of a 32 x 32 score tile (S = Q K^T, dP = dO V^T) and two of a 32 x 64 output tile. The forward keeps O in
// shared f32 (a row's rescaling needs the element's row, and an accumulator fragment's layout is opaque): each key
// tile's P V goes to a buffer of its own and plain threads add it, rescaled, to O. The backward accumulates dQ, dK
// and dV in fragments across the loop (no rescaling). Key tiles that no query of the tile sees, and query tiles that
// see none of a key tile, are skipped. No atomics: dk, dv walk the query heads of their group and the query tiles in
// ascending order, so the result is deterministic.
//
// Shared memory per block (head width 64, static, under 48 KB; ptxas's figures, nvcc 13.0 --resource-usage for
// sm_90): forward 35712 bytes (Q, K, V bf16 4 KB each, P bf16 2 KB, S f32 4 KB, O and P V f32 8 KB each, the rows'
// state), dq 27392, dk and dv 29440.
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
constexpr int BQ = fused_query_tile, BK = fused_key_tile, D = fused_head_dim, W = 16; // W: wmma's tile
constexpr int threads = fused_threads;
static_assert(threads == 128 && BQ == 2 * W && BK == 2 * W && D == 4 * W,
              "each of the 4 warps takes one 16 x 16 tile of a score tile and two of an output tile");
static_assert(BQ * D == 2 * BQ * BK, "the backward stages its 32 x 64 outputs in the two score tiles' buffer");

using accumulator = wmma::fragment<wmma::accumulator, W, W, W, float>;
template <class Layout>
using operand_a = wmma::fragment<wmma::matrix_a, W, W, W, bf16_t, Layout>;
template <class Layout>
using operand_b = wmma::fragment<wmma::matrix_b, W, W, W, bf16_t, Layout>;

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
__device__ void warp_scores(float* to, const bf16_t* a, const bf16_t* b, int warp) {
    const int rt = warp / 2, ct = warp % 2;
    accumulator acc;
    wmma::fill_fragment(acc, 0.0f);
    warp_product<wmma::row_major, wmma::col_major>(acc, a + rt * W * D, D, W, b + ct * W * D, D, W, D / W);
    wmma::store_matrix_sync(to + rt * W * BK + ct * W, acc, BK, wmma::mem_row_major);
}
// The output tiles of warp w in a 32 x 64 tile: row tile w / 2, column tiles 2 (w % 2) and 2 (w % 2) + 1.
__device__ int out_row_tile(int warp) { return warp / 2; }
__device__ int out_col_tile(int warp, int t) { return (warp % 2) * 2 + t; }

// rows row0 .. row0 + n - 1 of a head (its row 0 at `from`, rows `stride` floats apart), D floats each, rounded to
// bf16 into `to` (n x D); rows at or past `time` are zeros.
__device__ void load_tile(bf16_t* to, const float* from, long long row0, long long time, int n, long long stride) {
    for (int e = threadIdx.x; e < n * D; e += threads) {
        const int r = e / D, c = e % D;
        to[e] = __float2bfloat16(row0 + r < time ? from[(row0 + r) * stride + c] : 0.0f);
    }
}
// An accumulator tile set (32 x 64, staged in `stage`, ld D) written to rows row0 .. of a head below `time`.
__device__ void write_tile(float* to, const float* stage, long long row0, long long time, long long stride) {
    for (int e = threadIdx.x; e < BQ * D; e += threads) {
        const int r = e / D, c = e % D;
        if (row0 + r < time) to[(row0 + r) * stride + c] = stage[e];
    }
}

__global__ void fused_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v,
                                     attention_masks m, attention_dims s, float scale) {
    alignas(32) __shared__ bf16_t qs[BQ * D];
    alignas(32) __shared__ bf16_t ks[BK * D];
    alignas(32) __shared__ bf16_t vs[BK * D];
    alignas(32) __shared__ bf16_t ps[BQ * BK];
    alignas(32) __shared__ float scores[BQ * BK];
    alignas(32) __shared__ float o[BQ * D];
    alignas(32) __shared__ float pv[BQ * D];
    __shared__ long long first[BQ], last[BQ];
    __shared__ float row_max[BQ], row_sum[BQ], rescale[BQ];
    const long long b = blockIdx.z, i0 = (long long)blockIdx.x * BQ;
    const int h = blockIdx.y, warp = threadIdx.x / 32;
    const long long ldq = (long long)s.q_heads * D, ldkv = (long long)s.kv_heads * D;
    const float* qh = q + attention_q_offset(b, 0, h, s);
    const float* kh = k + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    const float* vh = v + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    load_tile(qs, qh, i0, s.time, BQ, ldq);
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
    for (long long j0 = tile.first / BK * BK; j0 <= tile.last; j0 += BK) {
        load_tile(ks, kh, j0, s.time, BK, ldkv);
        load_tile(vs, vh, j0, s.time, BK, ldkv);
        __syncthreads();
        warp_scores(scores, qs, ks, warp);
        __syncthreads();
        if (threadIdx.x < BQ) { // the online softmax, one thread per query row
            const int r = threadIdx.x;
            const int n = s.time - j0 < BK ? int(s.time - j0) : BK;
            fused_row_state st{row_max[r], row_sum[r]};
            float p[BK];
            rescale[r] = fused_softmax_step(st, p, scores + r * BK, j0, n, first[r], last[r], scale);
            for (int t = 0; t < BK; ++t)
                ps[r * BK + t] = __float2bfloat16(t < n ? p[t] : 0.0f);
            row_max[r] = st.max, row_sum[r] = st.sum;
        }
        __syncthreads();
        for (int t = 0; t < 2; ++t) { // P V into its own buffer
            const int rt = out_row_tile(warp), ct = out_col_tile(warp, t);
            accumulator acc;
            wmma::fill_fragment(acc, 0.0f);
            warp_product<wmma::row_major, wmma::row_major>(acc, ps + rt * W * BK, BK, W, vs + ct * W, D, W * D, BK / W);
            wmma::store_matrix_sync(pv + rt * W * D + ct * W, acc, D, wmma::mem_row_major);
        }
        __syncthreads();
        for (int e = threadIdx.x; e < BQ * D; e += threads)
            o[e] = fused_accumulate(o[e], rescale[e / D], pv[e]);
        __syncthreads();
    }
    for (int e = threadIdx.x; e < BQ * D; e += threads) {
        const int r = e / D;
        if (i0 + r < s.time)
            out[attention_q_offset(b, i0 + r, h, s) + e % D] = fused_output(o[e], {row_max[r], row_sum[r]});
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

__global__ void fused_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                const float* lse, const float* delta, attention_masks m, attention_dims s,
                                float scale) {
    alignas(32) __shared__ bf16_t qs[BQ * D];
    alignas(32) __shared__ bf16_t dos[BQ * D];
    alignas(32) __shared__ bf16_t ks[BK * D];
    alignas(32) __shared__ bf16_t vs[BK * D];
    alignas(32) __shared__ bf16_t dss[BQ * BK];
    alignas(32) __shared__ float scores[2 * BQ * BK]; // S, dP; at the end dQ's staging
    __shared__ long long first[BQ], last[BQ];
    __shared__ float row_lse[BQ], row_delta[BQ];
    const long long b = blockIdx.z, i0 = (long long)blockIdx.x * BQ;
    const int h = blockIdx.y, warp = threadIdx.x / 32;
    const long long ldq = (long long)s.q_heads * D, ldkv = (long long)s.kv_heads * D;
    const float* kh = k + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    const float* vh = v + attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    load_tile(qs, q + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
    load_tile(dos, dout + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
    load_row_state(first, last, row_lse, row_delta, lse, delta, b, h, i0, m, s);
    accumulator acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    __syncthreads();
    const attention_span tile = fused_tile_keys(first, last, BQ);
    for (long long j0 = tile.first / BK * BK; j0 <= tile.last; j0 += BK) {
        load_tile(ks, kh, j0, s.time, BK, ldkv);
        load_tile(vs, vh, j0, s.time, BK, ldkv);
        __syncthreads();
        warp_scores(scores, qs, ks, warp);
        warp_scores(scores + BQ * BK, dos, vs, warp);
        __syncthreads();
        pair_grads(nullptr, dss, scores, j0, first, last, row_lse, row_delta, scale);
        __syncthreads();
        for (int t = 0; t < 2; ++t) { // dQ += dS K
            const int rt = out_row_tile(warp), ct = out_col_tile(warp, t);
            warp_product<wmma::row_major, wmma::row_major>(acc[t], dss + rt * W * BK, BK, W, ks + ct * W, D, W * D,
                                                           BK / W);
        }
        __syncthreads();
    }
    for (int t = 0; t < 2; ++t)
        wmma::store_matrix_sync(scores + out_row_tile(warp) * W * D + out_col_tile(warp, t) * W, acc[t], D,
                                wmma::mem_row_major);
    __syncthreads();
    write_tile(dq + attention_q_offset(b, 0, h, s), scores, i0, s.time, ldq);
}

__global__ void fused_dkdv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                  const float* v, const float* lse, const float* delta, attention_masks m,
                                  attention_dims s, float scale) {
    alignas(32) __shared__ bf16_t ks[BK * D];
    alignas(32) __shared__ bf16_t vs[BK * D];
    alignas(32) __shared__ bf16_t qs[BQ * D];
    alignas(32) __shared__ bf16_t dos[BQ * D];
    alignas(32) __shared__ bf16_t ps[BQ * BK];
    alignas(32) __shared__ bf16_t dss[BQ * BK];
    alignas(32) __shared__ float scores[2 * BQ * BK]; // S, dP; at the end dK's and dV's staging
    __shared__ long long first[BQ], last[BQ];
    __shared__ float row_lse[BQ], row_delta[BQ];
    const long long b = blockIdx.z, j0 = (long long)blockIdx.x * BK;
    const int hk = blockIdx.y, warp = threadIdx.x / 32, group = s.q_heads / s.kv_heads;
    const long long ldq = (long long)s.q_heads * D, ldkv = (long long)s.kv_heads * D;
    const long long key_last = (j0 + BK < s.time ? j0 + BK : s.time) - 1;
    load_tile(ks, k + attention_kv_offset(b, 0, hk, s), j0, s.time, BK, ldkv);
    load_tile(vs, v + attention_kv_offset(b, 0, hk, s), j0, s.time, BK, ldkv);
    accumulator dk_acc[2], dv_acc[2];
    for (int t = 0; t < 2; ++t) {
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
            load_tile(qs, q + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
            load_tile(dos, dout + attention_q_offset(b, 0, h, s), i0, s.time, BQ, ldq);
            __syncthreads();
            warp_scores(scores, qs, ks, warp);
            warp_scores(scores + BQ * BK, dos, vs, warp);
            __syncthreads();
            pair_grads(ps, dss, scores, j0, first, last, row_lse, row_delta, scale);
            __syncthreads();
            for (int t = 0; t < 2; ++t) { // dV += P^T dO, dK += dS^T Q: P^T, dS^T read col-major from P, dS
                const int rt = out_row_tile(warp), ct = out_col_tile(warp, t);
                warp_product<wmma::col_major, wmma::row_major>(dv_acc[t], ps + rt * W, BK, W * BK, dos + ct * W, D,
                                                               W * D, BQ / W);
                warp_product<wmma::col_major, wmma::row_major>(dk_acc[t], dss + rt * W, BK, W * BK, qs + ct * W, D,
                                                               W * D, BQ / W);
            }
        }
    __syncthreads();
    for (int t = 0; t < 2; ++t)
        wmma::store_matrix_sync(scores + out_row_tile(warp) * W * D + out_col_tile(warp, t) * W, dk_acc[t], D,
                                wmma::mem_row_major);
    __syncthreads();
    write_tile(dk + attention_kv_offset(b, 0, hk, s), scores, j0, s.time, ldkv);
    __syncthreads();
    for (int t = 0; t < 2; ++t)
        wmma::store_matrix_sync(scores + out_row_tile(warp) * W * D + out_col_tile(warp, t) * W, dv_acc[t], D,
                                wmma::mem_row_major);
    __syncthreads();
    write_tile(dv + attention_kv_offset(b, 0, hk, s), scores, j0, s.time, ldkv);
}

void check_fused(const attention_dims& s, const char* what) {
    check(s.q_heads > 0 && s.kv_heads > 0 && s.q_heads % s.kv_heads == 0 && s.head_dim == fused_head_dim &&
              s.window >= 0 && (s.causal || s.window == 0) && s.q_heads <= 65535 && s.batch <= 65535 &&
              (s.time + BQ - 1) / BQ <= 0x7fffffffLL,
          [&] {
              std::string m = what;
              m += ": unsupported shape (query heads ";
              m += std::to_string(s.q_heads);
              m += ", key/value heads ";
              m += std::to_string(s.kv_heads);
              m += ", head width ";
              m += std::to_string(s.head_dim);
              m += ", window ";
              m += std::to_string(s.window);
              m += ", batch ";
              m += std::to_string(s.batch);
              m += "): the fused kernels take a head width of ";
              m += std::to_string(fused_head_dim);
              m += " only (use attention_path::products or rows for others), query heads a multiple of key/value "
                   "heads, at most 65535 heads and sequences, a window only with causal attention";
              return m;
          });
}

} // namespace

void attention_fused_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const attention_masks& masks, const attention_dims& s, void* stream) {
    check_fused(s, "gpu::attention_fused_forward");
    if (s.batch == 0 || s.time == 0) return;
    const dim3 grid(unsigned((s.time + BQ - 1) / BQ), unsigned(s.q_heads), unsigned(s.batch));
    TINYLM_LAUNCH(fused_forward_kernel, grid, threads, detail::as_stream(stream), out, lse, q, k, v, masks, s,
                  attention_scale(s.head_dim));
    detail::launch_check("attention_fused_forward");
}

void attention_fused_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                              const float* k, const float* v, const float* out, const float* lse,
                              const attention_masks& masks, const attention_dims& s, void* stream) {
    check_fused(s, "gpu::attention_fused_backward");
    if (s.batch == 0 || s.time == 0) return;
    const float scale = attention_scale(s.head_dim);
    const cudaStream_t st = detail::as_stream(stream);
    attention_delta(delta, dout, out, s, stream);
    const dim3 q_grid(unsigned((s.time + BQ - 1) / BQ), unsigned(s.q_heads), unsigned(s.batch));
    TINYLM_LAUNCH(fused_dq_kernel, q_grid, threads, st, dq, dout, q, k, v, lse, delta, masks, s, scale);
    detail::launch_check("attention_fused_backward (dq)");
    const dim3 kv_grid(unsigned((s.time + BK - 1) / BK), unsigned(s.kv_heads), unsigned(s.batch));
    TINYLM_LAUNCH(fused_dkdv_kernel, kv_grid, threads, st, dk, dv, dout, q, k, v, lse, delta, masks, s, scale);
    detail::launch_check("attention_fused_backward (dk, dv)");
}

} // namespace tl::gpu
