// src/cuda/ranking.cu: a sentence encoder's contrastive step on the device (tinylm/cuda/device.hpp): pooling,
// row normalisation and the multiple-negatives ranking loss's rows, over the functions of
// tinylm/cuda/ranking_row.hpp. The (B, M) score product and the gradients' products go through cuBLASLt
// (cuda/ranking_step.hpp). One thread per output element (pooling, scores' gradient) or per row (norms,
// log-sum-exps), each a loop in the CPU op's order: no atomics, the same bits on every run. The rows are few (the
// texts of one batch), so a thread per row is no bottleneck beside the encoder.
#include "check.cuh"

#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/ranking_row.hpp>

#include <string>

namespace tl::gpu {
namespace {

constexpr int block = 256;

unsigned blocks_for(long long n) {
    const long long b = (n + block - 1) / block;
    return unsigned(b < 65535 * 256 ? (b > 0 ? b : 1) : 65535 * 256);
}

__global__ void pool_forward_kernel(pool_kind mode, float* pooled, std::int32_t* arg, const float* hidden,
                                    const std::int64_t* starts, const std::int64_t* lengths, long long n, int d) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long b = i / d;
        const int j = int(i % d);
        pooled[i] =
            pool_element(mode, hidden + starts[b] * d, lengths[b], d, j, mode == pool_kind::max ? arg + i : nullptr);
    }
}

__global__ void pool_backward_kernel(pool_kind mode, float* dhidden, const float* dpooled, const std::int32_t* arg,
                                     const std::int32_t* owner, const std::int64_t* starts, const std::int64_t* lengths,
                                     long long tokens, int d) {
    const long long total = tokens * d;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x)
        dhidden[i] = pool_grad_token(mode, dpooled, arg, owner, starts, lengths, i / d, d, int(i % d));
}

__global__ void normalize_rows_kernel(float* y, double* norms, const float* x, long long n, int d, bool float_norm) {
    const long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (r < n) norms[r] = unit_row(y + r * d, x + r * d, d, float_norm);
}

__global__ void normalize_rows_backward_kernel(float* g, const float* y, const double* norms, long long n, int d) {
    const long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (r < n) unit_row_backward(g + r * d, y + r * d, norms[r], d);
}

// Thread i < b: row i's log-sum-exp and term; thread b + j: column j's (symmetric).
__global__ void ranking_lse_kernel(double* row_lse, double* col_lse, double* terms, const float* scores, long long b,
                                   long long m, bool symmetric) {
    const long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (k < b) {
        row_lse[k] = scores_lse(scores + k * m, m, 1);
        terms[k] = row_lse[k] - double(scores[k * m + k]);
    } else if (k < 2 * b) {
        const long long j = k - b;
        col_lse[j] = symmetric ? scores_lse(scores + j, b, m) : 0.0;
        terms[k] = symmetric ? col_lse[j] - double(scores[j * m + j]) : 0.0;
    }
}

__global__ void ranking_dscores_kernel(float* scores, const double* row_lse, const double* col_lse, long long b,
                                       long long m, double w, bool symmetric) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < b * m;
         e += (long long)gridDim.x * blockDim.x) {
        const long long i = e / m, j = e % m;
        scores[e] = ranking_dscore(scores[e], i, j, b, row_lse[i], j < b ? col_lse[j] : 0.0, w, symmetric);
    }
}

} // namespace

void pool_forward(pool_kind mode, float* pooled, std::int32_t* arg, const float* hidden, const std::int64_t* starts,
                  const std::int64_t* lengths, long long n, int d, void* stream) {
    if (n == 0) return;
    check(mode != pool_kind::max || arg != nullptr, "gpu::pool_forward: max pooling needs arg");
    TINYLM_LAUNCH(pool_forward_kernel, blocks_for(n * d), block, detail::as_stream(stream), mode, pooled, arg, hidden,
                  starts, lengths, n, d);
    detail::launch_check("pool_forward");
}

void pool_backward(pool_kind mode, float* dhidden, const float* dpooled, const std::int32_t* arg,
                   const std::int32_t* owner, const std::int64_t* starts, const std::int64_t* lengths, long long tokens,
                   int d, void* stream) {
    if (tokens == 0) return;
    TINYLM_LAUNCH(pool_backward_kernel, blocks_for(tokens * d), block, detail::as_stream(stream), mode, dhidden,
                  dpooled, arg, owner, starts, lengths, tokens, d);
    detail::launch_check("pool_backward");
}

void normalize_rows(float* y, double* norms, const float* x, long long n, int d, bool float_norm, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(normalize_rows_kernel, blocks_for(n), block, detail::as_stream(stream), y, norms, x, n, d,
                  float_norm);
    detail::launch_check("normalize_rows");
}

void normalize_rows_backward(float* g, const float* y, const double* norms, long long n, int d, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(normalize_rows_backward_kernel, blocks_for(n), block, detail::as_stream(stream), g, y, norms, n, d);
    detail::launch_check("normalize_rows_backward");
}

void ranking_lse(double* row_lse, double* col_lse, double* terms, const float* scores, long long b, long long m,
                 bool symmetric, void* stream) {
    if (b == 0) return;
    TINYLM_LAUNCH(ranking_lse_kernel, blocks_for(2 * b), block, detail::as_stream(stream), row_lse, col_lse, terms,
                  scores, b, m, symmetric);
    detail::launch_check("ranking_lse");
}

void ranking_dscores(float* scores, const double* row_lse, const double* col_lse, long long b, long long m, double w,
                     bool symmetric, void* stream) {
    if (b == 0) return;
    TINYLM_LAUNCH(ranking_dscores_kernel, blocks_for(b * m), block, detail::as_stream(stream), scores, row_lse, col_lse,
                  b, m, w, symmetric);
    detail::launch_check("ranking_dscores");
}

} // namespace tl::gpu
