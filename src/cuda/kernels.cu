// src/cuda/kernels.cu: RMSNorm, the fused softmax cross-entropy and AdamW (tinylm/cuda/device.hpp).
//
// Only the distribution of work is here; the arithmetic is tinylm/cuda/row_math.hpp's, shared with the CPU test.
// Every reduction is a fixed tree in one block (no atomics), so results are the same from run to run.
#include "check.cuh"

#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/row_math.hpp>

namespace tl::gpu {
namespace {

constexpr int block = 256; // threads per block of the row kernels (a power of two: the tree reduction)

// Sum of `value` over the block, in a fixed order; every thread gets the result.
__device__ float block_sum(float value, float* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int s = block / 2; s > 0; s /= 2) {
        if (int(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads(); // shared is reused by the caller's next reduction
    return total;
}

__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w, int d, float eps) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    const float* xr = x + r * d;
    float ss = 0;
    for (int j = threadIdx.x; j < d; j += block)
        ss += xr[j] * xr[j];
    const float s = rmsnorm_rstd(block_sum(ss, shared), d, eps);
    if (threadIdx.x == 0) rstd[r] = s;
    for (int j = threadIdx.x; j < d; j += block)
        y[r * d + j] = rmsnorm_y(xr[j], s, w[j]);
}

__global__ void rmsnorm_dx_kernel(float* dx, const float* dy, const float* x, const float* w, const float* rstd,
                                  int d) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    float dot = 0;
    for (int j = threadIdx.x; j < d; j += block)
        dot += rmsnorm_dot_term(dy[r * d + j], w[j], x[r * d + j]);
    dot = block_sum(dot, shared);
    for (int j = threadIdx.x; j < d; j += block)
        dx[r * d + j] = rmsnorm_dx(dy[r * d + j], w[j], x[r * d + j], rstd[r], dot, d);
}

// One thread per column, rows in order: deterministic, and reads coalesce across the threads of a warp.
__global__ void rmsnorm_dw_kernel(float* dw, const float* dy, const float* x, const float* rstd, long long n, int d) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float s = 0;
    for (long long r = 0; r < n; ++r)
        s += rmsnorm_dw_term(dy[r * d + j], x[r * d + j], rstd[r]);
    dw[j] += s;
}

__global__ void xent_forward_kernel(float* loss, float* lse, const float* logits, const std::int32_t* targets,
                                    long long v) {
    __shared__ float shared_max[block];
    __shared__ float shared_sum[block];
    const long long r = blockIdx.x;
    const float* row = logits + r * v;
    softmax_state s;
    for (long long j = threadIdx.x; j < v; j += block)
        s = softmax_push(s, row[j]);
    shared_max[threadIdx.x] = s.max;
    shared_sum[threadIdx.x] = s.sum;
    __syncthreads();
    for (int k = block / 2; k > 0; k /= 2) {
        if (int(threadIdx.x) < k) {
            const softmax_state m = softmax_merge({shared_max[threadIdx.x], shared_sum[threadIdx.x]},
                                                  {shared_max[threadIdx.x + k], shared_sum[threadIdx.x + k]});
            shared_max[threadIdx.x] = m.max;
            shared_sum[threadIdx.x] = m.sum;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const float l = softmax_lse({shared_max[0], shared_sum[0]});
        lse[r] = l;
        const std::int32_t t = targets[r];
        loss[r] = t >= 0 ? xent_row_loss(l, row[t]) : 0.0f;
    }
}

__global__ void xent_backward_kernel(float* logits, const float* lse, const std::int32_t* targets, long long n,
                                     long long v, float scale) {
    const long long total = n * v;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / v, j = i - r * v;
        const std::int32_t t = targets[r];
        logits[i] = xent_dlogit(logits[i], lse[r], j == t, t >= 0 ? scale : 0.0f);
    }
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, long long n, adamw_coeffs c) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        adamw_element(p[i], g[i], m[i], v[i], c);
}

// Blocks for a grid-stride loop over n elements: enough to fill the device, no more than the work needs.
unsigned grid_for(long long n) {
    const long long blocks = (n + block - 1) / block;
    return unsigned(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

void check_rows(long long n, const char* what) {
    if (n > 0x7fffffffLL) {
        std::string m = what;
        m += ": more rows than one grid holds (2^31 - 1)";
        fail(m);
    }
}

} // namespace

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, long long n, int d, float eps,
                     void* stream) {
    if (n == 0) return;
    check_rows(n, "rmsnorm_forward");
    rmsnorm_forward_kernel<<<unsigned(n), block, 0, detail::as_stream(stream)>>>(y, rstd, x, w, d, eps);
    detail::launch_check("rmsnorm_forward");
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      long long n, int d, void* stream) {
    if (n == 0) return;
    check_rows(n, "rmsnorm_backward");
    rmsnorm_dx_kernel<<<unsigned(n), block, 0, detail::as_stream(stream)>>>(dx, dy, x, w, rstd, d);
    detail::launch_check("rmsnorm_backward (dx)");
    if (!dw) return;
    rmsnorm_dw_kernel<<<unsigned((d + block - 1) / block), block, 0, detail::as_stream(stream)>>>(dw, dy, x, rstd, n,
                                                                                                    d);
    detail::launch_check("rmsnorm_backward (dw)");
}

void softmax_xent_forward(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                          long long v, void* stream) {
    if (n == 0) return;
    check_rows(n, "softmax_xent_forward");
    xent_forward_kernel<<<unsigned(n), block, 0, detail::as_stream(stream)>>>(loss, lse, logits, targets, v);
    detail::launch_check("softmax_xent_forward");
}

void softmax_xent_backward(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                           float scale, void* stream) {
    if (n == 0 || v == 0) return;
    xent_backward_kernel<<<grid_for(n * v), block, 0, detail::as_stream(stream)>>>(logits, lse, targets, n, v,
                                                                                   scale);
    detail::launch_check("softmax_xent_backward");
}

void adamw_step(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c, void* stream) {
    if (n == 0) return;
    adamw_kernel<<<grid_for(n), block, 0, detail::as_stream(stream)>>>(p, g, m, v, n, c);
    detail::launch_check("adamw_step");
}

} // namespace tl::gpu
