// The host emulation's warp-level calls (src/cuda/emulation: tinylm_cuda_emulation.hpp's __shfl*_sync and
// __syncwarp, runtime.cpp's warp_exchange): the values each lane reads, as the CUDA C++ Programming Guide describes
// them (butterflies, shifts and broadcasts, in segments of `width` lanes, the caller's own value past a segment), with
// partial masks, a partial last warp, blocks of two and three dimensions, beside __syncthreads, and the faults
// (a lane of the mask that ends while the others wait, a source lane outside the mask or past the block, lanes of one
// mask at different calls, the caller's lane missing from its mask). Each test kernel is checked against the lanes'
// values computed here lane by lane. Linked with tinylm_cuda_emulated only (label `emulated`, well under a second),
// and run in the three orders of the emulation (tests/cuda/CMakeLists.txt): the result may not depend on which lane
// reaches an exchange first.
#include "../../src/cuda/emulation/include/cuda_runtime.h"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace emulation = tl::gpu::emulation;

namespace {

constexpr unsigned full = 0xffffffffU;

int flat_thread() { return int(threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y); }
int lane_id() { return flat_thread() % warpSize; }
int global_thread() { return int(blockIdx.x) * int(blockDim.x * blockDim.y * blockDim.z) + flat_thread(); }

// Launches `kernel` and expects it to run without a fault.
template <class... Params, class... Args>
void run(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
    emulation::launch_named("warp test kernel", kernel, grid, block, nullptr, std::forward<Args>(args)...);
    const cudaError_t e = cudaGetLastError();
    const std::string what = cudaGetErrorString(e);
    emulation::forget_fault(); // so that a failure here leaves the next cases a clean runtime
    BOOST_TEST_REQUIRE(e == cudaSuccess, what);
}
// Launches `kernel`, which must fault with a message holding every one of `words`; then the fault is forgotten.
template <class... Params, class... Args>
void expect_fault(const std::vector<std::string>& words, void (*kernel)(Params...), dim3 block, Args&&... args) {
    emulation::launch_named("faulty warp kernel", kernel, dim3(1), block, nullptr, std::forward<Args>(args)...);
    const cudaError_t e = cudaGetLastError();
    BOOST_TEST(e == cudaErrorLaunchFailure);
    const std::string what = cudaGetErrorString(e);
    BOOST_TEST_MESSAGE(what);
    for (const std::string& word : words)
        BOOST_TEST(what.find(word) != std::string::npos, "'" << word << "' in: " << what);
    emulation::forget_fault();
}

// ---- the kernels ----
// A butterfly over the whole warp: every lane ends with the sum of the 32 lanes' values (ints: exact).
__global__ void xor_butterfly(int* out) {
    int v = global_thread() * 7 + 1;
    for (int distance = 16; distance >= 1; distance /= 2)
        v += __shfl_xor_sync(full, v, distance);
    out[global_thread()] = v;
}
// The down-shift reduction: lane 0 ends with the sum; a lane whose source is past the warp adds its own value.
__global__ void down_shifts(double* out) {
    double v = 0.5 * global_thread();
    for (unsigned delta = 16; delta >= 1; delta /= 2)
        v += __shfl_down_sync(full, v, delta);
    out[global_thread()] = v;
}
// Broadcasts: from lane 3 of the warp, and from lane 11 % 8 of each segment of 8; the up-shift by 1 in segments of 8;
// the butterfly of distance 8 in segments of 8 (its source is in another segment: earlier read, later own).
__global__ void broadcasts_and_segments(int* out) {
    const int t = global_thread(), v = 100 * t;
    out[4 * t] = __shfl_sync(full, v, 3);
    out[4 * t + 1] = __shfl_sync(full, v, 11, 8);
    out[4 * t + 2] = __shfl_up_sync(full, v, 1, 8);
    out[4 * t + 3] = __shfl_xor_sync(full, v, 8, 8);
}
// Two halves of a warp at different calls at once, each with its own mask.
__global__ void split_masks(float* out) {
    const int lane = lane_id();
    float v = float(lane) + 0.25f;
    if (lane < 16)
        v = __shfl_xor_sync(0x0000ffffU, v, 1);
    else
        v = __shfl_down_sync(0xffff0000U, v, 2, 16);
    out[flat_thread()] = v;
}
// The first warp skips the exchange (in the forward order, the block's first thread ends without waiting anywhere).
__global__ void skipped_by_first_warp(int* out) {
    int v = flat_thread();
    if (flat_thread() >= warpSize) v = __shfl_xor_sync(full, v, 1);
    out[flat_thread()] = v;
}
// Per-warp sums in shared memory after a barrier, then the first warp adds them: warp exchanges between barriers.
__global__ void with_barriers(int* out) {
    __shared__ int warp_sums[32];
    int v = flat_thread() + 1;
    for (int distance = 16; distance >= 1; distance /= 2)
        v += __shfl_xor_sync(full, v, distance);
    if (lane_id() == 0) warp_sums[flat_thread() / warpSize] = v;
    __syncthreads();
    const int warps = int(blockDim.x * blockDim.y * blockDim.z + warpSize - 1) / warpSize;
    if (flat_thread() < warpSize) {
        int w = lane_id() < warps ? warp_sums[lane_id()] : 0;
        for (int distance = 16; distance >= 1; distance /= 2)
            w += __shfl_xor_sync(full, w, distance);
        if (flat_thread() == 0) out[0] = w;
    }
    __syncthreads();
    out[1 + flat_thread()] = __shfl_sync(full, v, 0);
}
// __syncwarp orders the lanes' writes to shared memory before their reads of their neighbours'.
__global__ void syncwarp_orders(int* out) {
    __shared__ int slots[64];
    slots[flat_thread()] = 3 * flat_thread();
    __syncwarp();
    out[flat_thread()] = slots[flat_thread() / warpSize * warpSize + (lane_id() + 1) % warpSize];
}
// A partial last warp (the block's size is not a multiple of 32): the full mask names lanes that do not exist.
__global__ void partial_warp(int* out) {
    int v = flat_thread();
    for (int distance = 4; distance >= 1; distance /= 2)
        v += __shfl_xor_sync(full, v, distance);
    out[flat_thread()] = v;
}

// The faults.
__global__ void a_lane_leaves(int* out) {
    if (lane_id() == 5) return;
    out[flat_thread()] = __shfl_xor_sync(full, flat_thread(), 1);
}
__global__ void source_outside_the_mask(int* out) {
    if (lane_id() < 16) out[flat_thread()] = __shfl_sync(0x0000ffffU, flat_thread(), 20);
}
__global__ void source_past_the_block(int* out) { out[flat_thread()] = __shfl_xor_sync(full, flat_thread(), 8); }
__global__ void different_calls(int* out) {
    out[flat_thread()] =
        lane_id() % 2 == 0 ? __shfl_xor_sync(full, flat_thread(), 2) : __shfl_down_sync(full, flat_thread(), 2);
}
__global__ void own_lane_not_in_mask(int* out) { out[flat_thread()] = __shfl_sync(1U, flat_thread(), 0); }
__global__ void one_lane_at_a_barrier(int* out) {
    if (lane_id() == 9)
        __syncthreads();
    else
        out[flat_thread()] = __shfl_xor_sync(full, flat_thread(), 1);
}
// The first thread ends without a barrier the others reach (a divergent barrier, as before warp calls existed).
__global__ void first_thread_skips_a_barrier(int* out) {
    if (flat_thread() == 0) return;
    __syncthreads();
    out[flat_thread()] = 1;
}

// ---- the lanes' values, computed here ----
// Lane l's source in a segment of `width` lanes for each call, or l itself where the call returns var unchanged.
int up_source(int l, int delta, int width) { return l % width >= delta ? l - delta : l; }
int down_source(int l, int delta, int width) { return l % width + delta < width ? l + delta : l; }
int xor_source(int l, int mask, int width) { return (l ^ mask) < l / width * width + width ? l ^ mask : l; }

// The order the emulation runs things in (test only: the plain increments are a race on a GPU, not here, where one
// thread runs at a time): each block's first thread to start notes the block, and every thread notes itself in its
// block's list for the first barrier's round and again for the second's.
struct run_log {
    int* blocks;  // grid: block indices in the order they ran
    int* threads; // per block, 2 x block size: thread indices, round 1 then round 2
    int* counts;  // [0]: blocks begun; then per block, the threads seen in round 1 and in round 2
};
__global__ void record_order(run_log log) {
    const int n = int(blockDim.x), b = int(blockIdx.x);
    int* seen = log.counts + 1 + 2 * b;
    if (seen[0] == 0) log.blocks[log.counts[0]++] = b;
    log.threads[2 * n * b + seen[0]++] = flat_thread();
    __syncthreads();
    log.threads[2 * n * b + n + seen[1]++] = flat_thread();
}

} // namespace

BOOST_AUTO_TEST_SUITE(cuda_warp_shuffle_emulated)

BOOST_AUTO_TEST_CASE(xor_butterflies_give_every_lane_the_warps_sum) {
    const int blocks = 2, threads = 64;
    std::vector<int> out(blocks * threads, -1);
    run(xor_butterfly, dim3(blocks), dim3(threads), out.data());
    for (int t = 0; t < blocks * threads; ++t) {
        int sum = 0;
        for (int u = t / 32 * 32; u < t / 32 * 32 + 32; ++u)
            sum += u * 7 + 1;
        BOOST_TEST(out[std::size_t(t)] == sum, "thread " << t);
    }
}

BOOST_AUTO_TEST_CASE(down_shifts_reduce_to_lane_zero_and_keep_their_own_value_past_the_warp) {
    const int threads = 64;
    std::vector<double> out(threads, -1);
    run(down_shifts, dim3(1), dim3(threads), out.data());
    for (int w = 0; w < threads / 32; ++w) {
        std::vector<double> v(32);
        for (int l = 0; l < 32; ++l)
            v[std::size_t(l)] = 0.5 * (32 * w + l);
        for (int delta = 16; delta >= 1; delta /= 2) {
            const std::vector<double> before = v;
            for (int l = 0; l < 32; ++l)
                v[std::size_t(l)] += before[std::size_t(down_source(l, delta, 32))];
        }
        for (int l = 0; l < 32; ++l)
            BOOST_TEST(out[std::size_t(32 * w + l)] == v[std::size_t(l)], "warp " << w << " lane " << l);
        BOOST_TEST(v[0] == 0.5 * (32 * w * 32 + 31 * 32 / 2)); // the warp's sum in lane 0
    }
}

BOOST_AUTO_TEST_CASE(broadcasts_up_shifts_and_butterflies_within_segments) {
    const int threads = 32;
    std::vector<int> out(4 * threads, -1);
    run(broadcasts_and_segments, dim3(1), dim3(threads), out.data());
    for (int l = 0; l < threads; ++l) {
        BOOST_TEST(out[std::size_t(4 * l)] == 300, "lane " << l);
        BOOST_TEST(out[std::size_t(4 * l + 1)] == 100 * (l / 8 * 8 + 3), "lane " << l);
        BOOST_TEST(out[std::size_t(4 * l + 2)] == 100 * up_source(l, 1, 8), "lane " << l);
        BOOST_TEST(out[std::size_t(4 * l + 3)] == 100 * xor_source(l, 8, 8), "lane " << l);
    }
    // the rules themselves: a segment's first lane keeps its value going up; lane 0 ^ 8 is in a later segment, 8 ^ 8
    // in an earlier one
    BOOST_TEST(up_source(8, 1, 8) == 8);
    BOOST_TEST(xor_source(0, 8, 8) == 0);
    BOOST_TEST(xor_source(8, 8, 8) == 0);
}

BOOST_AUTO_TEST_CASE(disjoint_masks_of_one_warp_exchange_apart) {
    std::vector<float> out(32, -1);
    run(split_masks, dim3(1), dim3(32), out.data());
    for (int l = 0; l < 32; ++l) {
        const int source = l < 16 ? l ^ 1 : 16 + down_source(l - 16, 2, 16);
        BOOST_TEST(out[std::size_t(l)] == float(source) + 0.25f, "lane " << l);
    }
}

BOOST_AUTO_TEST_CASE(an_exchange_that_the_first_threads_skip) {
    std::vector<int> out(64, -1);
    run(skipped_by_first_warp, dim3(1), dim3(64), out.data());
    for (int t = 0; t < 64; ++t)
        BOOST_TEST(out[std::size_t(t)] == (t < 32 ? t : t ^ 1), "thread " << t);
}

BOOST_AUTO_TEST_CASE(exchanges_between_barriers_in_a_block_of_three_dimensions) {
    const dim3 block(8, 4, 3); // 96 threads, 3 warps; lanes follow threadIdx.x + 8 threadIdx.y + 32 threadIdx.z
    const int threads = 96;
    std::vector<int> out(1 + threads, -1);
    run(with_barriers, dim3(1), block, out.data());
    BOOST_TEST(out[0] == threads * (threads + 1) / 2);
    for (int t = 0; t < threads; ++t)
        BOOST_TEST(out[std::size_t(1 + t)] == (t / 32 * 32 + 1 + t / 32 * 32 + 32) * 16, "thread " << t);
}

BOOST_AUTO_TEST_CASE(syncwarp_waits_for_every_lane) {
    std::vector<int> out(64, -1);
    run(syncwarp_orders, dim3(1), dim3(64), out.data());
    for (int t = 0; t < 64; ++t)
        BOOST_TEST(out[std::size_t(t)] == 3 * (t / 32 * 32 + (t % 32 + 1) % 32), "thread " << t);
}

BOOST_AUTO_TEST_CASE(a_partial_last_warp_exchanges_among_the_lanes_it_has) {
    for (const dim3 block : {dim3(40), dim3(8, 3)}) { // warps of 32 and 8 lanes; one of 24
        const int threads = int(block.x * block.y);
        std::vector<int> out(std::size_t(threads), -1);
        run(partial_warp, dim3(1), block, out.data());
        for (int t = 0; t < threads; ++t) {
            int sum = 0;
            for (int u = t / 8 * 8; u < t / 8 * 8 + 8; ++u)
                sum += u;
            BOOST_TEST(out[std::size_t(t)] == sum, "thread " << t);
        }
    }
}

BOOST_AUTO_TEST_CASE(faults_name_the_call_and_the_lane) {
    std::vector<int> out(64, -1);
    expect_fault({"__shfl_xor_sync", "waits for lane 5", "has ended"}, a_lane_leaves, dim3(32), out.data());
    expect_fault({"__shfl_sync", "reads lane 20", "not in the mask"}, source_outside_the_mask, dim3(32), out.data());
    // lanes 0 .. 7 of the second warp of a 40-thread block read lanes 8 .. 15, which it lacks
    expect_fault({"__shfl_xor_sync", "warp 1", "reads lane 8", "past the block's last thread"}, source_past_the_block,
                 dim3(40), out.data());
    expect_fault({"__shfl_down_sync", "__shfl_xor_sync", "the same call"}, different_calls, dim3(32), out.data());
    expect_fault({"__shfl_sync", "0x00000001", "lacks its own lane"}, own_lane_not_in_mask, dim3(32), out.data());
    expect_fault({"waits for lane 9", "__syncthreads"}, one_lane_at_a_barrier, dim3(32), out.data());
    expect_fault({"__syncthreads", "thread (0, 0, 0) has ended"}, first_thread_skips_a_barrier, dim3(32), out.data());
    // after the faults are forgotten, a good kernel runs again
    run(xor_butterfly, dim3(1), dim3(32), out.data());
    BOOST_TEST(out[0] == 32 * 31 / 2 * 7 + 32);
}

// TINYLM_CUDA_EMULATION_ORDER, as ctest sets it (unset: forward): blocks and threads in index order, in the opposite
// order, or shuffled: every block and both rounds a permutation, neither of those two orders, and the second round's
// drawn anew. If the shuffle ran in index order, the default run's races would hide again.
BOOST_AUTO_TEST_CASE(blocks_and_threads_run_in_the_order_asked_for) {
    constexpr int blocks = 64, n = 64;
    std::vector<int> block_order(blocks, -1), thread_order(std::size_t(2 * n * blocks), -1),
        counts(std::size_t(1 + 2 * blocks), 0);
    run(record_order, dim3(blocks), dim3(n), run_log{block_order.data(), thread_order.data(), counts.data()});
    const char* env = std::getenv("TINYLM_CUDA_EMULATION_ORDER");
    const std::string order = env ? env : "forward";
    BOOST_TEST_MESSAGE("order " << order);
    std::vector<int> forward(n), reverse(n), forward_blocks(blocks), reverse_blocks(blocks);
    for (int i = 0; i < n; ++i)
        forward[std::size_t(i)] = i, reverse[std::size_t(i)] = n - 1 - i;
    for (int i = 0; i < blocks; ++i)
        forward_blocks[std::size_t(i)] = i, reverse_blocks[std::size_t(i)] = blocks - 1 - i;
    const auto sorted = [](std::vector<int> v) {
        std::sort(v.begin(), v.end());
        return v;
    };
    BOOST_TEST(sorted(block_order) == forward_blocks, "every block ran once");
    int first_rounds_shuffled = 0, rounds_redrawn = 0;
    for (int b = 0; b < blocks; ++b) {
        const auto at = thread_order.begin() + 2 * n * b;
        const std::vector<int> round1(at, at + n), round2(at + n, at + 2 * n);
        BOOST_TEST(sorted(round1) == forward, "block " << b << ": every thread ran round 1 once");
        BOOST_TEST(sorted(round2) == forward, "block " << b << ": every thread ran round 2 once");
        if (order == "shuffle") {
            first_rounds_shuffled += round1 != forward && round1 != reverse;
            rounds_redrawn += round2 != round1;
        } else {
            const std::vector<int>& expected = order == "reverse" ? reverse : forward;
            BOOST_TEST((round1 == expected && round2 == expected), "block " << b);
        }
    }
    if (order == "shuffle") {
        BOOST_TEST(first_rounds_shuffled == blocks);
        BOOST_TEST(rounds_redrawn == blocks);
        BOOST_TEST((block_order != forward_blocks && block_order != reverse_blocks));
    } else {
        BOOST_TEST((block_order == (order == "reverse" ? reverse_blocks : forward_blocks)));
    }
}

BOOST_AUTO_TEST_SUITE_END()
