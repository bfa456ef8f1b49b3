// src/cuda/moe.cu: the mixture-of-experts kernels (tinylm/cuda/moe_kernels.hpp): routing, the deterministic
// dispatch (a stable counting sort of the (token, choice) slots by expert), gathering rows, the experts' SwiGLU on
// the fused gate_up layout, the weighted combine and the backward of each.
//
// Only the distribution of work is here; the arithmetic is tinylm/cuda/moe_row.hpp's, shared with the CPU executor.
// The dispatch runs one block per expert, which walks the slots in order in tiles of `block` and ranks its own slots
// with a prefix sum over the tile: the same permutation as the CPU's counting sort, no atomics.
#include "check.cuh"

#include <tinylm/cuda/moe_kernels.hpp>
#include <tinylm/cuda/moe_row.hpp>

#include <string>

namespace tl::gpu {
namespace {

constexpr int block = 256; // threads per block (a power of two: the tree reductions and the scan)

unsigned grid_for(long long n) {
    const long long blocks = (n + block - 1) / block;
    return unsigned(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

// The sum over the block in a fixed tree (every thread gets it).
template <class T>
__device__ T block_total(T value, T* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int s = block / 2; s > 0; s /= 2) {
        if (int(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    const T total = shared[0];
    __syncthreads();
    return total;
}

// The inclusive prefix sum of flag over the block (Hillis-Steele in shared memory); integers, so exact.
__device__ int block_inclusive_scan(int flag, int* shared) {
    shared[threadIdx.x] = flag;
    __syncthreads();
    for (int s = 1; s < block; s *= 2) {
        const int add = int(threadIdx.x) >= s ? shared[threadIdx.x - s] : 0;
        __syncthreads();
        shared[threadIdx.x] += add;
        __syncthreads();
    }
    const int v = shared[threadIdx.x];
    __syncthreads();
    return v;
}

__global__ void route_kernel(float* probs, std::int32_t* expert, float* weight, long long n, int n_experts, int top_k) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n; t += (long long)gridDim.x * blockDim.x)
        moe_route_row(probs + t * n_experts, expert + t * top_k, weight + t * top_k, n_experts, top_k);
}

// counts[e] = the slots of expert e (one block per expert).
__global__ void count_kernel(std::int32_t* counts, const std::int32_t* expert, long long slots) {
    __shared__ int shared[block];
    const int e = int(blockIdx.x);
    int c = 0;
    for (long long i = threadIdx.x; i < slots; i += block)
        c += expert[i] == e;
    const int total = block_total(c, shared);
    if (threadIdx.x == 0) counts[e] = total;
}

// Expert e's rows start after the counts of the experts before it; its slots take them in slot order.
__global__ void scatter_kernel(std::int32_t* offsets, std::int32_t* slot_row, std::int32_t* row_token,
                               const std::int32_t* counts, const std::int32_t* expert, long long slots, int top_k,
                               int n_experts) {
    __shared__ int shared[block];
    const int e = int(blockIdx.x);
    int start = 0;
    for (int i = 0; i < e; ++i)
        start += counts[i];
    if (threadIdx.x == 0) {
        offsets[e] = start;
        if (e == n_experts - 1) offsets[n_experts] = start + counts[e];
    }
    int taken = 0; // rows of expert e handed out by the tiles before
    for (long long base = 0; base < slots; base += block) {
        const long long i = base + threadIdx.x;
        const int mine = i < slots && expert[i] == e;
        const int rank = block_inclusive_scan(mine, shared); // this slot's place among the tile's, 1-based
        if (mine) {
            const int r = start + taken + rank - 1;
            slot_row[i] = r;
            row_token[r] = std::int32_t(i / top_k);
        }
        shared[threadIdx.x] = rank; // the last thread's rank: the tile's count
        __syncthreads();
        taken += shared[block - 1];
        __syncthreads();
    }
}

__global__ void gather_kernel(float* out, const std::int32_t* row_token, const float* in, long long rows, int d) {
    const long long total = rows * d;
    for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
         x += (long long)gridDim.x * blockDim.x) {
        const long long r = x / d, i = x - r * d;
        out[x] = in[(long long)row_token[r] * d + i];
    }
}

__global__ void swiglu_forward_kernel(float* hidden, const float* gate_up, long long rows, int f) {
    const long long total = rows * f;
    for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
         x += (long long)gridDim.x * blockDim.x) {
        const long long r = x / f, i = x - r * f;
        hidden[x] = moe_swiglu_h(gate_up[r * 2 * f + i], gate_up[r * 2 * f + f + i]);
    }
}

__global__ void swiglu_backward_kernel(float* dgate_up, const float* dhidden, const float* gate_up, long long rows,
                                       int f) {
    const long long total = rows * f;
    for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
         x += (long long)gridDim.x * blockDim.x) {
        const long long r = x / f, i = x - r * f;
        moe_swiglu_grad(dgate_up[r * 2 * f + i], dgate_up[r * 2 * f + f + i], dhidden[x], gate_up[r * 2 * f + i],
                        gate_up[r * 2 * f + f + i]);
    }
}

__global__ void combine_kernel(float* y, const float* rows, const std::int32_t* slot_row, const float* weight,
                               long long n, int top_k, int d) {
    const long long total = n * d;
    for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
         x += (long long)gridDim.x * blockDim.x) {
        const long long t = x / d;
        y[x] = moe_combine_element(rows, slot_row + t * top_k, weight + t * top_k, top_k, d, int(x - t * d));
    }
}

__global__ void combine_backward_kernel(float* dx, const float* rows, const std::int32_t* slot_row, long long n,
                                        int top_k, int d) {
    const long long total = n * d;
    for (long long x = blockIdx.x * (long long)blockDim.x + threadIdx.x; x < total;
         x += (long long)gridDim.x * blockDim.x) {
        const long long t = x / d;
        dx[x] = moe_combine_backward_element(dx[x], rows, slot_row + t * top_k, top_k, d, int(x - t * d));
    }
}

// One block per slot: the dot product in a fixed tree, then the scaling of the slot's own rows (no other slot
// touches them: each grouped row belongs to one slot).
__global__ void weight_gradient_kernel(double* dweight, float* dhidden, float* dy, const float* hidden,
                                       const std::int32_t* slot_row, const float* weight, int f, int d) {
    __shared__ double shared[block];
    const long long i = blockIdx.x, r = slot_row[i];
    const double w = double(weight[i]);
    double g = 0;
    for (int c = threadIdx.x; c < f; c += block)
        g += double(dhidden[r * f + c]) * double(hidden[r * f + c]);
    g = block_total(g, shared); // every thread has read its dhidden before any is scaled
    if (threadIdx.x == 0) dweight[i] = g;
    for (int c = threadIdx.x; c < f; c += block)
        dhidden[r * f + c] = float(double(dhidden[r * f + c]) * w);
    for (int c = threadIdx.x; c < d; c += block)
        dy[r * d + c] = float(double(dy[r * d + c]) * w);
}

__global__ void router_backward_kernel(float* dlogits, const float* probs, const std::int32_t* expert,
                                       const float* weight, const double* dweight, const double* aux, long long n,
                                       int n_experts, int top_k) {
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < n; t += (long long)gridDim.x * blockDim.x)
        moe_router_backward_row(dlogits + t * n_experts, probs + t * n_experts, expert + t * top_k, weight + t * top_k,
                                dweight + t * top_k, aux, n_experts, top_k);
}

// One block per expert: its column of probabilities summed in a fixed tree, then added.
__global__ void probability_sums_kernel(double* sums, const float* probs, long long n, int n_experts) {
    __shared__ double shared[block];
    const int e = int(blockIdx.x);
    double s = 0;
    for (long long t = threadIdx.x; t < n; t += block)
        s += double(probs[t * n_experts + e]);
    s = block_total(s, shared);
    if (threadIdx.x == 0) sums[e] += s;
}

void check_slots(long long slots, const char* what) {
    if (slots > 0x7fffffffLL) {
        std::string m = "gpu::";
        m += what;
        m += ": ";
        m += std::to_string(slots);
        m += " slots or rows exceed the int32 row indices";
        fail(m);
    }
}

} // namespace

void moe_route(float* probs, std::int32_t* expert, float* weight, long long n, int n_experts, int top_k, void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(route_kernel, grid_for(n), block, detail::as_stream(stream), probs, expert, weight, n, n_experts,
                  top_k);
    detail::launch_check("moe_route");
}

void moe_dispatch(std::int32_t* offsets, std::int32_t* slot_row, std::int32_t* row_token, std::int32_t* counts,
                  const std::int32_t* expert, long long slots, int top_k, int n_experts, void* stream) {
    check_slots(slots, "moe_dispatch");
    if (n_experts == 0) return;
    TINYLM_LAUNCH(count_kernel, unsigned(n_experts), block, detail::as_stream(stream), counts, expert, slots);
    detail::launch_check("moe_dispatch (count)");
    TINYLM_LAUNCH(scatter_kernel, unsigned(n_experts), block, detail::as_stream(stream), offsets, slot_row, row_token,
                  counts, expert, slots, top_k, n_experts);
    detail::launch_check("moe_dispatch (scatter)");
}

void moe_gather(float* out, const std::int32_t* row_token, const float* in, long long rows, int d, void* stream) {
    if (rows == 0 || d == 0) return;
    TINYLM_LAUNCH(gather_kernel, grid_for(rows * d), block, detail::as_stream(stream), out, row_token, in, rows, d);
    detail::launch_check("moe_gather");
}

void moe_swiglu_forward(float* hidden, const float* gate_up, long long rows, int f, void* stream) {
    if (rows == 0 || f == 0) return;
    TINYLM_LAUNCH(swiglu_forward_kernel, grid_for(rows * f), block, detail::as_stream(stream), hidden, gate_up, rows,
                  f);
    detail::launch_check("moe_swiglu_forward");
}

void moe_swiglu_backward(float* dgate_up, const float* dhidden, const float* gate_up, long long rows, int f,
                         void* stream) {
    if (rows == 0 || f == 0) return;
    TINYLM_LAUNCH(swiglu_backward_kernel, grid_for(rows * f), block, detail::as_stream(stream), dgate_up, dhidden,
                  gate_up, rows, f);
    detail::launch_check("moe_swiglu_backward");
}

void moe_combine(float* y, const float* rows, const std::int32_t* slot_row, const float* weight, long long n, int top_k,
                 int d, void* stream) {
    if (n == 0 || d == 0) return;
    TINYLM_LAUNCH(combine_kernel, grid_for(n * d), block, detail::as_stream(stream), y, rows, slot_row, weight, n,
                  top_k, d);
    detail::launch_check("moe_combine");
}

void moe_combine_backward(float* dx, const float* rows, const std::int32_t* slot_row, long long n, int top_k, int d,
                          void* stream) {
    if (n == 0 || d == 0) return;
    TINYLM_LAUNCH(combine_backward_kernel, grid_for(n * d), block, detail::as_stream(stream), dx, rows, slot_row, n,
                  top_k, d);
    detail::launch_check("moe_combine_backward");
}

void moe_weight_gradient(double* dweight, float* dhidden, float* dy, const float* hidden, const std::int32_t* slot_row,
                         const float* weight, long long slots, int f, int d, void* stream) {
    check_slots(slots, "moe_weight_gradient");
    if (slots == 0) return;
    TINYLM_LAUNCH(weight_gradient_kernel, unsigned(slots), block, detail::as_stream(stream), dweight, dhidden, dy,
                  hidden, slot_row, weight, f, d);
    detail::launch_check("moe_weight_gradient");
}

void moe_router_backward(float* dlogits, const float* probs, const std::int32_t* expert, const float* weight,
                         const double* dweight, const double* aux, long long n, int n_experts, int top_k,
                         void* stream) {
    if (n == 0) return;
    TINYLM_LAUNCH(router_backward_kernel, grid_for(n), block, detail::as_stream(stream), dlogits, probs, expert, weight,
                  dweight, aux, n, n_experts, top_k);
    detail::launch_check("moe_router_backward");
}

void moe_probability_sums(double* sums, const float* probs, long long n, int n_experts, void* stream) {
    if (n_experts == 0) return;
    TINYLM_LAUNCH(probability_sums_kernel, unsigned(n_experts), block, detail::as_stream(stream), sums, probs, n,
                  n_experts);
    detail::launch_check("moe_probability_sums");
}

} // namespace tl::gpu
