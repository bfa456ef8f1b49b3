// src/cuda/reduce.cuh: reductions over the threads of one block in a fixed order (a tree), so that a kernel
// gives the same bits on every run; every thread gets the result. Threads: the block size, a power of two.
#pragma once

#include <tinylm/cuda/row_math.hpp>

namespace tl::gpu::detail {

template <int Threads>
__device__ float block_sum(float value, float* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int s = Threads / 2; s > 0; s /= 2) {
        if (int(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads(); // shared is reused by the caller's next reduction
    return total;
}

// The online softmax's (max, sum) of the whole block, merged pairwise (softmax_merge).
template <int Threads>
__device__ softmax_state block_softmax(softmax_state s, float* shared_max, float* shared_sum) {
    shared_max[threadIdx.x] = s.max;
    shared_sum[threadIdx.x] = s.sum;
    __syncthreads();
    for (int k = Threads / 2; k > 0; k /= 2) {
        if (int(threadIdx.x) < k) {
            const softmax_state m = softmax_merge({shared_max[threadIdx.x], shared_sum[threadIdx.x]},
                                                  {shared_max[threadIdx.x + k], shared_sum[threadIdx.x + k]});
            shared_max[threadIdx.x] = m.max;
            shared_sum[threadIdx.x] = m.sum;
        }
        __syncthreads();
    }
    const softmax_state total{shared_max[0], shared_sum[0]};
    __syncthreads();
    return total;
}

} // namespace tl::gpu::detail
