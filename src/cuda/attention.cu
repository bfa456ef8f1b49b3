// src/cuda/attention.cu: attention (causal, or bidirectional), forward and backward (tinylm/cuda/device.hpp), over the
// row functions of tinylm/cuda/attention_row.hpp.
//
// attention_forward / attention_backward: the correctness baseline, not yet the fast kernel: one thread per query row
// (forward, dq) or key row (dk, dv), its accumulators in a fixed local array. Threads of a warp take consecutive rows
// of one head, so they read the same keys (or queries) at the same time and the loads are shared. A tiled kernel on
// tensor cores (or cuDNN's fused attention) replaces these once the GPU tests have pinned down the arithmetic
// (docs/gpu.md).
#include "check.cuh"
#include "reduce.cuh"

#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/device.hpp>

#include <string>

namespace tl::gpu {
namespace {

constexpr int threads = 128;

// The row (b, h, i) of one head's sequence that this thread owns: query heads (heads = q_heads) or key/value heads
// (kv_heads); false for the threads past the last row.
struct head_row {
    long long b, i;
    int h;
};
__device__ bool thread_row(head_row& row, const attention_dims& s, int heads) {
    const long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (r >= s.batch * heads * s.time) return false;
    const long long bh = r / s.time;
    row = {bh / heads, r % s.time, int(bh % heads)};
    return true;
}

__global__ void attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v,
                                         attention_masks m, attention_dims s, float scale) {
    head_row row;
    if (!thread_row(row, s, s.q_heads)) return;
    const auto [b, i, h] = row;
    float acc[attention_max_head_dim];
    const long long at = attention_q_offset(b, i, h, s), kv = attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    const attention_span keys = attention_keys(b, i, s, m);
    lse[attention_lse_offset(b, h, i, s)] =
        attention_row_forward(out + at, acc, q + at, k + kv, v + kv, (long long)s.kv_heads * s.head_dim, keys.first,
                              keys.last, s.head_dim, scale);
}

__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, attention_dims s) {
    head_row row;
    if (!thread_row(row, s, s.q_heads)) return;
    const auto [b, i, h] = row;
    const long long at = attention_q_offset(b, i, h, s);
    delta[attention_lse_offset(b, h, i, s)] = attention_dot(dout + at, out + at, s.head_dim);
}

__global__ void attention_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                    const float* lse, const float* delta, attention_masks m, attention_dims s,
                                    float scale) {
    head_row row;
    if (!thread_row(row, s, s.q_heads)) return;
    const auto [b, i, h] = row;
    float acc[attention_max_head_dim];
    const long long at = attention_q_offset(b, i, h, s), kv = attention_kv_offset(b, 0, attention_kv_head(h, s), s);
    const long long l = attention_lse_offset(b, h, i, s);
    const attention_span keys = attention_keys(b, i, s, m);
    attention_row_dq(acc, q + at, dout + at, k + kv, v + kv, (long long)s.kv_heads * s.head_dim, keys.first, keys.last,
                     s.head_dim, scale, lse[l], delta[l]);
    for (int c = 0; c < s.head_dim; ++c)
        dq[at + c] = acc[c];
}

__global__ void attention_dkdv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                      const float* v, const float* lse, const float* delta, attention_masks m,
                                      attention_dims s, float scale) {
    head_row row;
    if (!thread_row(row, s, s.kv_heads)) return;
    const auto [b, j, hk] = row;
    float dk_acc[attention_max_head_dim], dv_acc[attention_max_head_dim];
    attention_key_dkdv(dk_acc, dv_acc, q, dout, k, v, lse, delta, m, b, j, hk, s, scale);
    const long long at = attention_kv_offset(b, j, hk, s);
    for (int c = 0; c < s.head_dim; ++c) {
        dk[at + c] = dk_acc[c];
        dv[at + c] = dv_acc[c];
    }
}

// ---- the products path: row steps between cuBLASLt's batched products ----
constexpr int row_threads = 256; // one block per scores row (a power of two: block_softmax's tree)

__global__ void attention_softmax_kernel(float* scores, float* lse, attention_masks m, attention_dims s, long long b0,
                                         long long query_block) {
    __shared__ float shared_max[row_threads];
    __shared__ float shared_sum[row_threads];
    const long long r = blockIdx.x;
    const attention_score_row q = attention_row_of(r, b0, s);
    const attention_span keys = attention_keys(q.b, q.i, s, m);
    const attention_span computed = attention_computed_keys(q.i, s, m.key_lengths != nullptr, query_block);
    float* row = scores + r * s.time;
    softmax_state st;
    for (long long j = keys.first + threadIdx.x; j <= keys.last; j += row_threads)
        st = softmax_push(st, row[j]);
    const float l = softmax_lse(detail::block_softmax<row_threads>(st, shared_max, shared_sum));
    if (threadIdx.x == 0) lse[attention_lse_offset(q.b, q.h, q.i, s)] = l;
    for (long long j = computed.first + threadIdx.x; j <= computed.last; j += row_threads)
        row[j] = attention_probability(row[j], j, keys.first, keys.last, l);
}

__global__ void attention_probabilities_kernel(float* scores, const float* lse, attention_masks m, attention_dims s,
                                               long long b0, long long query_block) {
    const long long r = blockIdx.x;
    const attention_score_row q = attention_row_of(r, b0, s);
    const attention_span keys = attention_keys(q.b, q.i, s, m);
    const attention_span computed = attention_computed_keys(q.i, s, m.key_lengths != nullptr, query_block);
    const float l = lse[attention_lse_offset(q.b, q.h, q.i, s)];
    float* row = scores + r * s.time;
    for (long long j = computed.first + threadIdx.x; j <= computed.last; j += row_threads)
        row[j] = attention_probability(row[j], j, keys.first, keys.last, l);
}

__global__ void attention_dscores_kernel(float* dscores, const float* p, const float* delta, attention_masks m,
                                         attention_dims s, long long b0, long long query_block, float scale) {
    const long long r = blockIdx.x;
    const attention_score_row q = attention_row_of(r, b0, s);
    const attention_span computed = attention_computed_keys(q.i, s, m.key_lengths != nullptr, query_block);
    const float d = delta[attention_lse_offset(q.b, q.h, q.i, s)];
    for (long long j = computed.first + threadIdx.x; j <= computed.last; j += row_threads)
        dscores[r * s.time + j] = attention_dscore(p[r * s.time + j], dscores[r * s.time + j], d, scale);
}

void check_dims(const attention_dims& s, const char* what) {
    check(s.q_heads > 0 && s.kv_heads > 0 && s.q_heads % s.kv_heads == 0 && s.head_dim > 0 &&
              s.head_dim <= attention_max_head_dim && s.window >= 0 && (s.causal || s.window == 0),
          [&] {
              return std::string(what) + ": unsupported shape (" + attention_shape_text(s) +
                     "): query heads must be a multiple of key/value heads, the head width at most " +
                     std::to_string(attention_max_head_dim) + ", a window only with causal attention";
          });
}

unsigned blocks_for(long long rows, const char* what) {
    const long long blocks = (rows + threads - 1) / threads;
    check(blocks <= 0x7fffffffLL, [&] {
        std::string m = what;
        m += ": more rows than one grid holds";
        return m;
    });
    return unsigned(blocks);
}

} // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const attention_masks& masks, const attention_dims& s, void* stream) {
    check_dims(s, "gpu::attention_forward");
    const long long rows = s.batch * s.q_heads * s.time;
    if (rows == 0) return;
    TINYLM_LAUNCH(attention_forward_kernel, blocks_for(rows, "gpu::attention_forward"), threads,
                  detail::as_stream(stream), out, lse, q, k, v, masks, s, attention_scale(s.head_dim));
    detail::launch_check("attention_forward");
}

void attention_backward(float* dq, float* dk, float* dv, float* delta, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const attention_masks& masks, const attention_dims& s, void* stream) {
    check_dims(s, "gpu::attention_backward");
    const long long q_rows = s.batch * s.q_heads * s.time, kv_rows = s.batch * s.kv_heads * s.time;
    if (q_rows == 0) return;
    const float scale = attention_scale(s.head_dim);
    const cudaStream_t st = detail::as_stream(stream);
    const unsigned qb = blocks_for(q_rows, "gpu::attention_backward");
    TINYLM_LAUNCH(attention_delta_kernel, qb, threads, st, delta, dout, out, s);
    detail::launch_check("attention_backward (delta)");
    TINYLM_LAUNCH(attention_dq_kernel, qb, threads, st, dq, dout, q, k, v, lse, delta, masks, s, scale);
    detail::launch_check("attention_backward (dq)");
    TINYLM_LAUNCH(attention_dkdv_kernel, blocks_for(kv_rows, "gpu::attention_backward"), threads, st, dk, dv, dout, q,
                  k, v, lse, delta, masks, s, scale);
    detail::launch_check("attention_backward (dk, dv)");
}

namespace {
unsigned score_rows(const attention_dims& s, long long b0, long long nb, const char* what) {
    check(b0 >= 0 && nb >= 0 && b0 + nb <= s.batch, [&] {
        std::string m = what;
        m += ": sequences ";
        m += std::to_string(b0);
        m += " .. ";
        m += std::to_string(b0 + nb);
        m += " outside the batch of ";
        m += std::to_string(s.batch);
        return m;
    });
    const long long rows = nb * s.q_heads * s.time;
    check(rows <= 0x7fffffffLL, [&] {
        std::string m = what;
        m += ": more score rows than one grid holds (use fewer sequences per chunk)";
        return m;
    });
    return unsigned(rows);
}
} // namespace

void attention_softmax(float* scores, float* lse, const attention_masks& masks, const attention_dims& s, long long b0,
                       long long nb, long long query_block, void* stream) {
    check_dims(s, "gpu::attention_softmax");
    const unsigned rows = score_rows(s, b0, nb, "gpu::attention_softmax");
    if (rows == 0) return;
    TINYLM_LAUNCH(attention_softmax_kernel, rows, row_threads, detail::as_stream(stream), scores, lse, masks, s, b0,
                  query_block);
    detail::launch_check("attention_softmax");
}

void attention_probabilities(float* scores, const float* lse, const attention_masks& masks, const attention_dims& s,
                             long long b0, long long nb, long long query_block, void* stream) {
    check_dims(s, "gpu::attention_probabilities");
    const unsigned rows = score_rows(s, b0, nb, "gpu::attention_probabilities");
    if (rows == 0) return;
    TINYLM_LAUNCH(attention_probabilities_kernel, rows, row_threads, detail::as_stream(stream), scores, lse, masks, s,
                  b0, query_block);
    detail::launch_check("attention_probabilities");
}

void attention_dscores(float* dscores, const float* p, const float* delta, const attention_masks& masks,
                       const attention_dims& s, long long b0, long long nb, long long query_block, void* stream) {
    check_dims(s, "gpu::attention_dscores");
    const unsigned rows = score_rows(s, b0, nb, "gpu::attention_dscores");
    if (rows == 0) return;
    TINYLM_LAUNCH(attention_dscores_kernel, rows, row_threads, detail::as_stream(stream), dscores, p, delta, masks, s,
                  b0, query_block, attention_scale(s.head_dim));
    detail::launch_check("attention_dscores");
}

void attention_delta(float* delta, const float* dout, const float* out, const attention_dims& s, void* stream) {
    check_dims(s, "gpu::attention_delta");
    const long long rows = s.batch * s.q_heads * s.time;
    if (rows == 0) return;
    TINYLM_LAUNCH(attention_delta_kernel, blocks_for(rows, "gpu::attention_delta"), threads, detail::as_stream(stream),
                  delta, dout, out, s);
    detail::launch_check("attention_delta");
}

} // namespace tl::gpu
