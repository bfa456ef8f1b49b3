// src/cuda/kernels.cu: the element-wise and per-row kernels (tinylm/cuda/device.hpp): RMSNorm and its fusion with
// the residual, LayerNorm (and its fusion with the residual), embedding (and BERT's sum of three), SwiGLU, GELU, RoPE,
// bf16 conversion, the fused softmax cross-entropy, the gradient norm and AdamW.
//
// Only the distribution of work is here; the arithmetic is tinylm/cuda/row_math.hpp's, shared with the CPU test.
// Every reduction is a fixed tree in one block (no atomics), so results are the same from run to run.
#include "check.cuh"
#include "reduce.cuh"

#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/dropout_row.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/row_math.hpp>

namespace tl::gpu {
namespace {

constexpr int block = 256; // threads per block of the row kernels (a power of two: the tree reduction)

__device__ float block_sum(float value, float* shared) { return detail::block_sum<block>(value, shared); }

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

// dx assigned, or accumulated (`add`: the residual stream's gradient).
__global__ void rmsnorm_dx_kernel(float* dx, const float* dy, const float* x, const float* w, const float* rstd, int d,
                                  bool add) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    float dot = 0;
    for (int j = threadIdx.x; j < d; j += block)
        dot += rmsnorm_dot_term(dy[r * d + j], w[j], x[r * d + j]);
    dot = block_sum(dot, shared);
    for (int j = threadIdx.x; j < d; j += block) {
        const float g = rmsnorm_dx(dy[r * d + j], w[j], x[r * d + j], rstd[r], dot, d);
        dx[r * d + j] = add ? dx[r * d + j] + g : g;
    }
}

__global__ void residual_rmsnorm_forward_kernel(float* resid, float* y, float* rstd, const float* x, const float* a,
                                                const float* w, int d, float eps) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    float ss = 0;
    for (int j = threadIdx.x; j < d; j += block) {
        const float h = residual_add(x[r * d + j], a[r * d + j]);
        resid[r * d + j] = h; // each thread reads back only what it wrote
        ss += h * h;
    }
    const float s = rmsnorm_rstd(block_sum(ss, shared), d, eps);
    if (threadIdx.x == 0) rstd[r] = s;
    for (int j = threadIdx.x; j < d; j += block)
        y[r * d + j] = rmsnorm_y(resid[r * d + j], s, w[j]);
}

__global__ void embedding_forward_kernel(float* out, const std::int32_t* ids, const float* weight, long long n, int d) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / d;
        out[i] = weight[(long long)ids[r] * d + (i - r * d)];
    }
}

// One block per token: its row of dweight gets the sum of its positions' rows, in position order.
__global__ void embedding_backward_kernel(float* dweight, const std::int32_t* tokens, const std::int32_t* offsets,
                                          const std::int32_t* positions, const float* dout, int d) {
    const long long g = blockIdx.x;
    float* dst = dweight + (long long)tokens[g] * d;
    for (int j = threadIdx.x; j < d; j += block) {
        float s = 0;
        for (std::int32_t p = offsets[g]; p < offsets[g + 1]; ++p)
            s += dout[(long long)positions[p] * d + j];
        dst[j] += s;
    }
}

__global__ void gelu_forward_kernel(float* y, const float* x, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = gelu_y(x[i]);
}
__global__ void gelu_backward_kernel(float* dx, const float* dy, const float* x, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] = gelu_dx(dy[i], x[i]);
}

__global__ void layernorm_forward_kernel(float* y, float* mean, float* rstd, const float* x, const float* w,
                                         const float* b, int d, float eps) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    const float* xr = x + r * d;
    float sum = 0;
    for (int j = threadIdx.x; j < d; j += block)
        sum += xr[j];
    const float mu = block_sum(sum, shared) / float(d);
    float dev = 0;
    for (int j = threadIdx.x; j < d; j += block)
        dev += (xr[j] - mu) * (xr[j] - mu);
    const float s = layernorm_rstd(block_sum(dev, shared), d, eps);
    if (threadIdx.x == 0) mean[r] = mu, rstd[r] = s;
    for (int j = threadIdx.x; j < d; j += block)
        y[r * d + j] = layernorm_y(xr[j], mu, s, w[j], b[j]);
}

// resid = x + a, then LayerNorm of resid (a post-norm block); each thread reads back only what it wrote.
__global__ void residual_layernorm_forward_kernel(float* resid, float* y, float* mean, float* rstd, const float* x,
                                                  const float* a, const float* w, const float* b, int d, float eps) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    float* hr = resid + r * d;
    float sum = 0;
    for (int j = threadIdx.x; j < d; j += block) {
        hr[j] = residual_add(x[r * d + j], a[r * d + j]);
        sum += hr[j];
    }
    const float mu = block_sum(sum, shared) / float(d);
    float dev = 0;
    for (int j = threadIdx.x; j < d; j += block)
        dev += (hr[j] - mu) * (hr[j] - mu);
    const float s = layernorm_rstd(block_sum(dev, shared), d, eps);
    if (threadIdx.x == 0) mean[r] = mu, rstd[r] = s;
    for (int j = threadIdx.x; j < d; j += block)
        y[r * d + j] = layernorm_y(hr[j], mu, s, w[j], b[j]);
}

__global__ void embedding_sum_kernel(float* out, const std::int32_t* ids, const float* word,
                                     const std::int32_t* positions, const float* position, const std::int32_t* types,
                                     const float* type, long long n, int d) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / d, j = i - r * d;
        out[i] = embedding_sum(word[(long long)ids[r] * d + j], position[(long long)positions[r] * d + j],
                               type ? type[(long long)types[r] * d + j] : 0.0f);
    }
}

__global__ void layernorm_dx_kernel(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                                    const float* rstd, int d) {
    __shared__ float shared[block];
    const long long r = blockIdx.x;
    float sum_g = 0, sum_gx = 0;
    for (int j = threadIdx.x; j < d; j += block) {
        const float g = dy[r * d + j] * w[j];
        sum_g += g;
        sum_gx += g * ((x[r * d + j] - mean[r]) * rstd[r]);
    }
    sum_g = block_sum(sum_g, shared);
    sum_gx = block_sum(sum_gx, shared);
    for (int j = threadIdx.x; j < d; j += block)
        dx[r * d + j] = layernorm_dx(dy[r * d + j], w[j], x[r * d + j], mean[r], rstd[r], sum_g, sum_gx, d);
}

// ---- column sums (the gradients of norm weights and biases), deterministic ----
// A block takes 32 columns with 32 lanes of rows: lane y sums rows y, y + 32, ... in order (the 32 threads of a
// warp read 32 neighbouring columns of one row: coalesced), then a fixed tree over the lanes. The sums are added to
// out0 (and out1). Terms: the per-element term(s) of row r, column j.
constexpr int column_width = 32, column_lanes = 32;
struct rmsnorm_dw_terms {
    const float *dy, *x, *rstd;
    int d;
    __device__ void operator()(long long r, int j, float* t) const {
        t[0] = rmsnorm_dw_term(dy[r * d + j], x[r * d + j], rstd[r]);
    }
};
struct layernorm_dwdb_terms {
    const float *dy, *x, *mean, *rstd;
    int d;
    __device__ void operator()(long long r, int j, float* t) const {
        t[0] = layernorm_dw_term(dy[r * d + j], x[r * d + j], mean[r], rstd[r]);
        t[1] = dy[r * d + j];
    }
};
struct bias_terms {
    const float* dy;
    int d;
    __device__ void operator()(long long r, int j, float* t) const { t[0] = dy[r * d + j]; }
};
template <int Outputs, class Terms>
__global__ void column_sums_kernel(float* out0, float* out1, long long n, int d, Terms terms) {
    __shared__ float shared[Outputs][column_lanes][column_width + 1];
    const int x = threadIdx.x, y = threadIdx.y, j = blockIdx.x * column_width + x;
    float s[Outputs] = {};
    if (j < d)
        for (long long r = y; r < n; r += column_lanes) {
            float t[Outputs];
            terms(r, j, t);
            for (int o = 0; o < Outputs; ++o)
                s[o] += t[o];
        }
    for (int o = 0; o < Outputs; ++o)
        shared[o][y][x] = s[o];
    __syncthreads();
    for (int k = column_lanes / 2; k > 0; k /= 2) {
        if (y < k)
            for (int o = 0; o < Outputs; ++o)
                shared[o][y][x] += shared[o][y + k][x];
        __syncthreads();
    }
    if (y != 0 || j >= d) return;
    out0[j] += shared[0][0][x];
    if constexpr (Outputs > 1) out1[j] += shared[1][0][x];
}
template <int Outputs, class Terms>
void column_sums(float* out0, float* out1, long long n, int d, Terms terms, void* stream, const char* what) {
    auto* const kernel = &column_sums_kernel<Outputs, Terms>; // a name without a comma, for TINYLM_LAUNCH
    TINYLM_LAUNCH(kernel, unsigned((d + column_width - 1) / column_width), dim3(column_width, column_lanes),
                  detail::as_stream(stream), out0, out1, n, d, terms);
    detail::launch_check(what);
}

// A dequantised weight in f32 (out32) or as bf16 bits (out16), whichever is given.
__global__ void nf4_dequantize_kernel(float* out32, std::uint16_t* out16, nf4_weight q, nf4_tables t) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < q.n;
         i += (long long)gridDim.x * blockDim.x) {
        const float w = nf4_element(q, i, t);
        if (out32) out32[i] = w;
        if (out16) out16[i] = bf16_bits(w);
    }
}

__global__ void bias_add_kernel(float* y, const float* b, long long n, int d) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n * d;
         i += (long long)gridDim.x * blockDim.x)
        y[i] += b[i % d];
}

__global__ void swiglu_forward_kernel(float* h, const float* g, const float* u, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        h[i] = swiglu_h(g[i], u[i]);
}
__global__ void swiglu_backward_kernel(float* dg, float* du, const float* dh, const float* g, const float* u,
                                       long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        swiglu_grad(dg[i], du[i], dh[i], g[i], u[i]);
}

// One thread per rotated pair (i, i + D/2) of every (token, head).
__global__ void rope_kernel(float* x, const float* cos, const float* sin, const std::int64_t* positions, long long time,
                            int heads, int half, long long pairs, double direction) {
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pairs;
         p += (long long)gridDim.x * blockDim.x) {
        const long long row_head = p / half, bt = row_head / heads;
        const int i = int(p - row_head * half);
        const long long row = positions ? positions[bt] : bt % time;
        float* v = x + row_head * 2 * half;
        rope_rotate_pair(v[i], v[i + half], cos[row * half + i], sin[row * half + i], direction);
    }
}

__global__ void to_bf16_kernel(std::uint16_t* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = bf16_bits(src[i]);
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
    s = detail::block_softmax<block>(s, shared_max, shared_sum);
    if (threadIdx.x == 0) {
        const float l = softmax_lse(s);
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

// grad_norm_blocks blocks: thread t of the grid sums elements t, t + grid, ... in double; a tree per block.
__global__ void sum_of_squares_kernel(double* partials, const float* x, long long n) {
    __shared__ double shared[block];
    double s = 0;
    for (long long i = blockIdx.x * (long long)block + threadIdx.x; i < n; i += (long long)grad_norm_blocks * block)
        s += square(x[i]);
    shared[threadIdx.x] = s;
    __syncthreads();
    for (int k = block / 2; k > 0; k /= 2) {
        if (int(threadIdx.x) < k) shared[threadIdx.x] += shared[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}
// One block of grad_norm_blocks threads: the tree over the partial sums.
__global__ void sum_partials_kernel(double* total, const double* partials) {
    __shared__ double shared[grad_norm_blocks];
    shared[threadIdx.x] = partials[threadIdx.x];
    __syncthreads();
    for (int k = grad_norm_blocks / 2; k > 0; k /= 2) {
        if (int(threadIdx.x) < k) shared[threadIdx.x] += shared[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) *total = shared[0];
}

__global__ void scale_kernel(float* x, float scale, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        x[i] *= scale;
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
    TINYLM_LAUNCH(rmsnorm_forward_kernel, unsigned(n), block, detail::as_stream(stream), y, rstd, x, w, d, eps);
    detail::launch_check("rmsnorm_forward");
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      long long n, int d, void* stream) {
    if (n == 0) return;
    check_rows(n, "rmsnorm_backward");
    TINYLM_LAUNCH(rmsnorm_dx_kernel, unsigned(n), block, detail::as_stream(stream), dx, dy, x, w, rstd, d, false);
    detail::launch_check("rmsnorm_backward (dx)");
    if (!dw) return;
    column_sums<1>(dw, nullptr, n, d, rmsnorm_dw_terms{dy, x, rstd, d}, stream, "rmsnorm_backward (dw)");
}

void residual_rmsnorm_forward(float* resid, float* y, float* rstd, const float* x, const float* a, const float* w,
                              long long n, int d, float eps, void* stream) {
    if (n == 0) return;
    check_rows(n, "residual_rmsnorm_forward");
    TINYLM_LAUNCH(residual_rmsnorm_forward_kernel, unsigned(n), block, detail::as_stream(stream), resid, y, rstd, x, a,
                  w, d, eps);
    detail::launch_check("residual_rmsnorm_forward");
}

void residual_rmsnorm_backward(float* dresid, float* dw, const float* dy, const float* resid, const float* w,
                               const float* rstd, long long n, int d, void* stream) {
    if (n == 0) return;
    check_rows(n, "residual_rmsnorm_backward");
    TINYLM_LAUNCH(rmsnorm_dx_kernel, unsigned(n), block, detail::as_stream(stream), dresid, dy, resid, w, rstd, d,
                  true);
    detail::launch_check("residual_rmsnorm_backward (dx)");
    if (!dw) return;
    column_sums<1>(dw, nullptr, n, d, rmsnorm_dw_terms{dy, resid, rstd, d}, stream, "residual_rmsnorm_backward (dw)");
}

void embedding_forward(float* out, const std::int32_t* ids, const float* weight, long long n, int d, void* stream) {
    if (n == 0 || d == 0) return;
    TINYLM_LAUNCH(embedding_forward_kernel, grid_for(n * d), block, detail::as_stream(stream), out, ids, weight, n, d);
    detail::launch_check("embedding_forward");
}

void embedding_backward(float* dweight, const std::int32_t* tokens, const std::int32_t* offsets,
                        const std::int32_t* positions, long long groups, const float* dout, int d, void* stream) {
    if (groups == 0) return;
    check_rows(groups, "embedding_backward");
    TINYLM_LAUNCH(embedding_backward_kernel, unsigned(groups), block, detail::as_stream(stream), dweight, tokens,
                  offsets, positions, dout, d);
    detail::launch_check("embedding_backward");
}

void gelu_forward(float* y, const float* x, long long n, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(gelu_forward_kernel, grid_for(n), block, detail::as_stream(stream), y, x, n);
    detail::launch_check("gelu_forward");
}

void gelu_backward(float* dx, const float* dy, const float* x, long long n, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(gelu_backward_kernel, grid_for(n), block, detail::as_stream(stream), dx, dy, x, n);
    detail::launch_check("gelu_backward");
}

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, long long n,
                       int d, float eps, void* stream) {
    if (n == 0) return;
    check_rows(n, "layernorm_forward");
    TINYLM_LAUNCH(layernorm_forward_kernel, unsigned(n), block, detail::as_stream(stream), y, mean, rstd, x, w, b, d,
                  eps);
    detail::launch_check("layernorm_forward");
}

void residual_layernorm_forward(float* resid, float* y, float* mean, float* rstd, const float* x, const float* a,
                                const float* w, const float* b, long long n, int d, float eps, void* stream) {
    if (n == 0) return;
    check_rows(n, "residual_layernorm_forward");
    TINYLM_LAUNCH(residual_layernorm_forward_kernel, unsigned(n), block, detail::as_stream(stream), resid, y, mean,
                  rstd, x, a, w, b, d, eps);
    detail::launch_check("residual_layernorm_forward");
}

void embedding_sum_forward(float* out, const std::int32_t* ids, const float* word, const std::int32_t* positions,
                           const float* position, const std::int32_t* types, const float* type, long long n, int d,
                           void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(embedding_sum_kernel, grid_for(n * d), block, detail::as_stream(stream), out, ids, word, positions,
                  position, types, type, n, d);
    detail::launch_check("embedding_sum_forward");
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, long long n, int d, void* stream) {
    if (n == 0) return;
    check_rows(n, "layernorm_backward");
    TINYLM_LAUNCH(layernorm_dx_kernel, unsigned(n), block, detail::as_stream(stream), dx, dy, x, w, mean, rstd, d);
    detail::launch_check("layernorm_backward (dx)");
    if (!dw) return;
    column_sums<2>(dw, db, n, d, layernorm_dwdb_terms{dy, x, mean, rstd, d}, stream, "layernorm_backward (dw, db)");
}

void nf4_dequantize(float* out, std::uint16_t* out_bf16, const nf4_weight& q, const nf4_tables& tables, void* stream) {
    check(out || out_bf16, "gpu::nf4_dequantize: no output given");
    if (q.n == 0) return;
    TINYLM_LAUNCH(nf4_dequantize_kernel, grid_for(q.n), block, detail::as_stream(stream), out, out_bf16, q, tables);
    detail::launch_check("nf4_dequantize");
}

void bias_add(float* y, const float* b, long long n, int d, void* stream) {
    if (n == 0 || d == 0) return;
    TINYLM_LAUNCH(bias_add_kernel, grid_for(n * d), block, detail::as_stream(stream), y, b, n, d);
    detail::launch_check("bias_add");
}

void bias_backward(float* db, const float* dy, long long n, int d, void* stream) {
    if (d == 0) return;
    column_sums<1>(db, nullptr, n, d, bias_terms{dy, d}, stream, "bias_backward");
}

void swiglu_forward(float* h, const float* g, const float* u, long long n, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(swiglu_forward_kernel, grid_for(n), block, detail::as_stream(stream), h, g, u, n);
    detail::launch_check("swiglu_forward");
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, long long n, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(swiglu_backward_kernel, grid_for(n), block, detail::as_stream(stream), dg, du, dh, g, u, n);
    detail::launch_check("swiglu_backward");
}

void rope(float* x, const float* cos, const float* sin, const std::int64_t* positions, long long batch, long long time,
          int heads, int head_dim, double direction, void* stream) {
    check(head_dim % 2 == 0, "gpu::rope: the head width must be even");
    const long long pairs = batch * time * heads * (head_dim / 2);
    if (pairs == 0) return;
    TINYLM_LAUNCH(rope_kernel, grid_for(pairs), block, detail::as_stream(stream), x, cos, sin, positions, time, heads,
                  head_dim / 2, pairs, direction);
    detail::launch_check("rope");
}

void to_bf16(std::uint16_t* dst, const float* src, long long n, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(to_bf16_kernel, grid_for(n), block, detail::as_stream(stream), dst, src, n);
    detail::launch_check("to_bf16");
}

void softmax_xent_forward(float* loss, float* lse, const float* logits, const std::int32_t* targets, long long n,
                          long long v, void* stream) {
    if (n == 0) return;
    check_rows(n, "softmax_xent_forward");
    TINYLM_LAUNCH(xent_forward_kernel, unsigned(n), block, detail::as_stream(stream), loss, lse, logits, targets, v);
    detail::launch_check("softmax_xent_forward");
}

void softmax_xent_backward(float* logits, const float* lse, const std::int32_t* targets, long long n, long long v,
                           float scale, void* stream) {
    if (n == 0 || v == 0) return;
    TINYLM_LAUNCH(xent_backward_kernel, grid_for(n * v), block, detail::as_stream(stream), logits, lse, targets, n, v,
                  scale);
    detail::launch_check("softmax_xent_backward");
}

void sum_of_squares(double* total, double* partials, const float* x, long long n, void* stream) {
    TINYLM_LAUNCH(sum_of_squares_kernel, grad_norm_blocks, block, detail::as_stream(stream), partials, x, n);
    detail::launch_check("sum_of_squares (partials)");
    TINYLM_LAUNCH(sum_partials_kernel, 1, grad_norm_blocks, detail::as_stream(stream), total, partials);
    detail::launch_check("sum_of_squares (total)");
}

void scale_elements(float* x, float scale, long long n, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(scale_kernel, grid_for(n), block, detail::as_stream(stream), x, scale, n);
    detail::launch_check("scale_elements");
}

void adamw_step(float* p, const float* g, float* m, float* v, long long n, const adamw_coeffs& c, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(adamw_kernel, grid_for(n), block, detail::as_stream(stream), p, g, m, v, n, c);
    detail::launch_check("adamw_step");
}

// ---- LoRA dropout: the masks of dropout_row.hpp, one element per thread (grid-stride) ----
namespace {

__global__ void dropout_forward_kernel(float* out, const float* x, long long n, dropout_mask m) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = dropout_value(m, x[i], i);
}
__global__ void dropout_backward_kernel(float* dx, const float* g, long long n, dropout_mask m) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] = dropout_gradient_add(m, dx[i], g[i], i);
}

} // namespace

void dropout_forward(float* out, const float* x, long long n, const dropout_mask& m, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(dropout_forward_kernel, grid_for(n), block, detail::as_stream(stream), out, x, n, m);
    detail::launch_check("dropout_forward");
}

void dropout_backward(float* dx, const float* g, long long n, const dropout_mask& m, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(dropout_backward_kernel, grid_for(n), block, detail::as_stream(stream), dx, g, n, m);
    detail::launch_check("dropout_backward");
}

} // namespace tl::gpu
