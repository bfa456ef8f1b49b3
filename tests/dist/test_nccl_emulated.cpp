// NCCL in the host emulation (src/cuda/emulation/nccl.cpp, docs/gpu.md "NCCL in the host emulation"), run by ctest
// under `mpirun -np 2` and `-np 3` (labels mpi;emulated): each process is one emulated GPU, and NCCL's collectives
// run over MPI between them, so that gpu::nccl_communicator and the trainer's multi-GPU path execute without a GPU.
// - The communicator's collectives on device memory (sum f32 and f64, average, broadcast from every root, all-gather,
//   reduce-scatter; a sum over two of the emulation's pieces): each equals the sum in rank order computed here from
//   every rank's inputs, bit for bit, on every rank (inputs of mixed magnitudes, for which the reverse order gives
//   other bits from 3 ranks on: two addends commute); a host buffer is refused on every rank, and so is one rank's,
//   naming it.
// - NCCL's calls themselves: all-gather and reduce-scatter in place, broadcast with another send buffer (none off the
//   root), and what is refused with NCCL's result codes: overlapping buffers, ranks calling different counts, an
//   operation the emulation lacks, a rank given another unique id.
// - gpu::device_decoder<gpu::gpu_ops> on the emulation, trained by tl::trainer with an nccl_communicator as its
//   device communicator, against one process over the whole batch, then stopped and resumed: the mirror of
//   test_dist's data_parallel/device_decoder_matches_one_process_and_resumes (which runs cpu_ops over MPI).
// Run alone (no mpirun), every case runs as one rank.
#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/cuda/gpu_ops.hpp>
#include <tinylm/cuda/nccl_communicator.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/dist/data_parallel.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/train/trainer.hpp>

#include "data_parallel_checks.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <optional>

// The emulation's NCCL and CUDA runtime (src/cuda/emulation/include), last: it defines CUDA's keywords as macros.
#include <nccl.h>

using namespace tl;

namespace {

// Device memory of n elements (cudaMalloc), filled from and read back to the host.
template <class T>
class device_vector {
public:
    explicit device_vector(std::size_t n) : n_(n) {
        void* p = nullptr;
        BOOST_REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
        p_ = static_cast<T*>(p);
    }
    explicit device_vector(const std::vector<T>& v) : device_vector(v.size()) { set(v); }
    ~device_vector() { (void)cudaFree(p_); }
    device_vector(const device_vector&) = delete;
    device_vector& operator=(const device_vector&) = delete;
    void set(const std::vector<T>& v) {
        BOOST_REQUIRE(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    }
    std::vector<T> get() const {
        std::vector<T> v(n_);
        BOOST_REQUIRE(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
        return v;
    }
    T* data() const { return p_; }
    std::span<T> span() const { return {p_, n_}; }

private:
    T* p_ = nullptr;
    std::size_t n_ = 0;
};

// Rank r's input: normal values times powers of ten from 1e-4 to 1e4, so that the order of the additions shows.
template <class T>
std::vector<T> contribution(int rank, std::size_t n, std::uint64_t seed) {
    counter_rng rng(seed * 1000 + std::uint64_t(rank));
    std::vector<T> v(n);
    for (T& x : v)
        x = T(rng.normal() * std::pow(10.0, double(rng.below(9)) - 4.0));
    return v;
}

// The sum over the ranks' inputs in rank order (reverse: the other way round), then divided by the rank count when
// `average`: what every rank must get, bit for bit.
template <class T>
std::vector<T> rank_order_sum(int ranks, std::size_t n, std::uint64_t seed, bool average = false,
                              bool reverse = false) {
    std::vector<std::vector<T>> parts;
    for (int r = 0; r < ranks; ++r)
        parts.push_back(contribution<T>(r, n, seed));
    std::vector<T> sum(n);
    for (std::size_t i = 0; i < n; ++i) {
        T s = parts[reverse ? std::size_t(ranks - 1) : 0][i];
        for (int k = 1; k < ranks; ++k)
            s += parts[std::size_t(reverse ? ranks - 1 - k : k)][i];
        sum[i] = average ? s / T(ranks) : s;
    }
    return sum;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
std::size_t differing(const std::vector<T>& a, const std::vector<T>& b) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
    return n;
}

// Every rank holds rank 0's bits of `v`.
template <class T>
void expect_same_on_every_rank(dist::communicator& world, const std::vector<T>& v, const char* what) {
    std::uint64_t mine = dist::fingerprint(std::as_bytes(std::span<const T>(v))), root = mine;
    world.broadcast_values(std::span<std::uint64_t>(&root, 1), 0);
    BOOST_TEST(root == mine, what << ": rank " << world.rank() << " differs from rank 0");
}

bool message_has(const std::exception& e, const std::string& text) {
    const bool found = std::string(e.what()).find(text) != std::string::npos;
    if (!found) BOOST_TEST_MESSAGE("the message was: " << e.what());
    return found;
}

} // namespace

BOOST_AUTO_TEST_SUITE(nccl_emulated)

BOOST_AUTO_TEST_CASE(communicator_collectives_are_rank_order_sums_on_every_rank) {
    dist::communicator& world = dist::world();
    gpu::nccl_communicator gpus(world);
    const int n = world.size(), me = world.rank();
    BOOST_TEST(gpus.size() == n);
    BOOST_TEST(gpus.rank() == me);
    BOOST_TEST(gpus.device() == gpus.local_rank()); // one emulated GPU per process of this host
    BOOST_TEST_MESSAGE("rank " << me << " of " << n << " on emulated device " << gpus.device());

    // Sums: over one piece (1000) and over two of the emulation's 4 MiB pieces (f32).
    for (const std::size_t count : {std::size_t(1000), (std::size_t(1) << 20) + 37}) {
        BOOST_TEST_CONTEXT("f32 sum of " << count) {
            device_vector<float> x(contribution<float>(me, count, 1));
            gpus.all_reduce_sum(x.span()).wait();
            const auto sum = x.get();
            BOOST_TEST(same_bits(sum, rank_order_sum<float>(n, count, 1)));
            if (n > 2) // the test can tell the orders apart (two addends commute)
                BOOST_REQUIRE(
                    differing(rank_order_sum<float>(n, count, 1), rank_order_sum<float>(n, count, 1, false, true)) > 0);
            expect_same_on_every_rank(world, sum, "f32 sum");
        }
    }
    {
        device_vector<float> x(contribution<float>(me, 999, 2));
        gpus.all_reduce_average(x.span()).wait();
        BOOST_TEST(same_bits(x.get(), rank_order_sum<float>(n, 999, 2, true)));
        expect_same_on_every_rank(world, x.get(), "f32 average");
    }
    {
        device_vector<double> x(contribution<double>(me, 777, 3));
        gpus.all_reduce_sum(x.span()).wait();
        BOOST_TEST(same_bits(x.get(), rank_order_sum<double>(n, 777, 3)));
        if (n > 2)
            BOOST_REQUIRE(differing(rank_order_sum<double>(n, 777, 3), rank_order_sum<double>(n, 777, 3, false, true)) >
                          0);
        expect_same_on_every_rank(world, x.get(), "f64 sum");
    }
    for (int root = 0; root < n; ++root) {
        device_vector<float> x(contribution<float>(me, 333, 4));
        gpus.broadcast(std::as_writable_bytes(x.span()), root);
        BOOST_TEST(same_bits(x.get(), contribution<float>(root, 333, 4)), "broadcast from rank " << root);
    }
    {
        const std::size_t part = 101;
        device_vector<float> mine(contribution<float>(me, part, 5)), all(part * std::size_t(n));
        gpus.all_gather(mine.span(), all.span());
        std::vector<float> expected;
        for (int r = 0; r < n; ++r)
            for (float v : contribution<float>(r, part, 5))
                expected.push_back(v);
        BOOST_TEST(same_bits(all.get(), expected));
    }
    {
        // Rank r's input is N blocks; rank b gets the rank-order sum of everyone's block b.
        const std::size_t part = 211;
        device_vector<float> all(contribution<float>(me, part * std::size_t(n), 6)), mine(part);
        gpus.reduce_scatter_sum(all.span(), mine.span());
        const auto sums = rank_order_sum<float>(n, part * std::size_t(n), 6);
        const std::vector<float> block(sums.begin() + std::ptrdiff_t(part) * me,
                                       sums.begin() + std::ptrdiff_t(part) * (me + 1));
        BOOST_TEST(same_bits(mine.get(), block));
    }

    // Host memory is refused on every rank, as a GPU refuses it; one rank's host buffer fails every rank's call.
    std::vector<float> host(64, 1.0f);
    BOOST_CHECK_EXCEPTION(gpus.all_reduce_sum(std::span<float>(host)).wait(), tl::error, [](const tl::error& e) {
        return message_has(e, "invalid argument") && message_has(e, "not inside one device allocation");
    });
    if (n > 1) {
        device_vector<float> on_device(host);
        const std::span<float> buffer = me == 1 ? std::span<float>(host) : on_device.span();
        BOOST_CHECK_EXCEPTION(gpus.all_reduce_sum(buffer).wait(), tl::error, [&](const tl::error& e) {
            return me == 1 ? message_has(e, "not inside one device allocation")
                           : message_has(e, "rank 1 refused its arguments");
        });
    }
    gpus.barrier();
}

BOOST_AUTO_TEST_CASE(nccl_calls_in_place_and_refusals) {
    dist::communicator& world = dist::world();
    const int n = world.size(), me = world.rank();
    gpu::nccl_communicator picks_the_device(world); // cudaSetDevice(local rank), as a program does first
    ncclUniqueId id{};
    if (me == 0) BOOST_REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
    world.broadcast(std::as_writable_bytes(std::span<ncclUniqueId>(&id, 1)), 0);
    ncclComm_t comm = nullptr;
    BOOST_REQUIRE(ncclCommInitRank(&comm, n, id, me) == ncclSuccess);
    const std::size_t part = 57, whole = part * std::size_t(n);

    // All-gather in place: this rank's part already at its place in the whole buffer.
    std::vector<float> expected;
    for (int r = 0; r < n; ++r)
        for (float v : contribution<float>(r, part, 7))
            expected.push_back(v);
    {
        std::vector<float> start(whole, -1.0f);
        std::copy_n(expected.begin() + std::ptrdiff_t(part) * me, part, start.begin() + std::ptrdiff_t(part) * me);
        device_vector<float> all(start);
        BOOST_TEST(ncclAllGather(all.data() + part * std::size_t(me), all.data(), part, ncclFloat32, comm, nullptr) ==
                   ncclSuccess);
        BOOST_TEST(same_bits(all.get(), expected));
    }
    // Reduce-scatter in place: the result lands on this rank's block of the input.
    {
        device_vector<float> all(contribution<float>(me, whole, 8));
        BOOST_TEST(ncclReduceScatter(all.data(), all.data() + part * std::size_t(me), part, ncclFloat32, ncclSum, comm,
                                     nullptr) == ncclSuccess);
        const auto sums = rank_order_sum<float>(n, whole, 8);
        const auto got = all.get();
        BOOST_TEST(same_bits(
            std::vector<float>(got.begin() + std::ptrdiff_t(part) * me, got.begin() + std::ptrdiff_t(part) * (me + 1)),
            std::vector<float>(sums.begin() + std::ptrdiff_t(part) * me,
                               sums.begin() + std::ptrdiff_t(part) * (me + 1))));
    }
    // Broadcast into another buffer; the send buffer is read on the root only (null elsewhere).
    {
        const int root = n - 1;
        device_vector<double> send(contribution<double>(root, part, 9)), receive(part);
        BOOST_TEST(ncclBroadcast(me == root ? send.data() : nullptr, receive.data(), part, ncclFloat64, root, comm,
                                 nullptr) == ncclSuccess);
        BOOST_TEST(same_bits(receive.get(), contribution<double>(root, part, 9)));
    }
    // Refused, with NCCL's codes and the reason in ncclGetLastError, on every rank alike.
    {
        device_vector<float> x(contribution<float>(me, part + 1, 10));
        BOOST_TEST(ncclAllReduce(x.data(), x.data() + 1, part, ncclFloat32, ncclSum, comm, nullptr) ==
                   ncclInvalidArgument);
        BOOST_TEST(std::string(ncclGetLastError(comm)).find("overlap") != std::string::npos);
        device_vector<float> all(whole + 1);
        // In place on rank 1 only (its part at recvbuff + 1): the others refuse the overlap, and rank 1 hears of it.
        // One rank: the send buffer lies just past the receive buffer, no overlap.
        const ncclResult_t gathered = ncclAllGather(all.data() + 1, all.data(), 1, ncclFloat32, comm, nullptr);
        BOOST_TEST(gathered == (n == 1 ? ncclSuccess : me == 1 ? ncclRemoteError : ncclInvalidArgument));
        BOOST_TEST(ncclReduceScatter(all.data(), all.data() + 1, 2, ncclFloat32, ncclSum, comm, nullptr) ==
                   ncclInvalidArgument);
        BOOST_TEST(std::string(ncclGetLastError(comm)).find("other than in place") != std::string::npos);
        BOOST_TEST(ncclAllReduce(x.data(), x.data(), part, ncclFloat32, ncclMax, comm, nullptr) == ncclInvalidArgument);
        BOOST_TEST(std::string(ncclGetLastError(comm)).find("ncclSum and ncclAvg only") != std::string::npos);
        if (n > 1) {
            const std::size_t count = me == 0 ? part : part + 1;
            BOOST_TEST(ncclAllReduce(x.data(), x.data(), count, ncclFloat32, ncclSum, comm, nullptr) ==
                       ncclInvalidUsage);
            BOOST_TEST(std::string(ncclGetLastError(comm)).find("call different collectives") != std::string::npos);
        }
        // Still usable after refusals: nothing was exchanged half-way.
        device_vector<float> y(contribution<float>(me, part, 11));
        BOOST_TEST(ncclAllReduce(y.data(), y.data(), part, ncclFloat32, ncclSum, comm, nullptr) == ncclSuccess);
        BOOST_TEST(same_bits(y.get(), rank_order_sum<float>(n, part, 11)));
    }
    BOOST_TEST(ncclCommDestroy(comm) == ncclSuccess);

    // A rank given another unique id: no communicator on any rank.
    if (n > 1) {
        ncclUniqueId other = id;
        if (me == 1) other.internal[0] = char(other.internal[0] ^ 1);
        ncclComm_t wrong = nullptr;
        BOOST_TEST(ncclCommInitRank(&wrong, n, other, me) == ncclInvalidUsage);
        BOOST_TEST(wrong == nullptr);
        BOOST_TEST(std::string(ncclGetLastError(nullptr)).find("another ncclUniqueId") != std::string::npos);
    }
}

// ---- the device decoder on the emulation, its gradients through NCCL ----

// tests/dist/data_parallel_checks.hpp's run of the small device decoder, the mirror of test_dist's
// data_parallel/device_decoder_matches_one_process_and_resumes (which runs cpu_ops over MPI): gpu_ops on the
// emulation, the gradients and the parameters' broadcast through an nccl_communicator made before any model (it picks
// the rank's GPU). Against one process: losses, gradient norms before clipping (clipping and Adam hide a wrong scale
// of the summed gradients from the losses), validation losses and every tensor within 1e-6; replicas bit-identical;
// stopped and resumed, bit-identical to the straight run.
BOOST_AUTO_TEST_CASE(device_decoder_through_nccl_matches_one_process_and_resumes) {
    dist::communicator& world = dist::world();
    std::optional<gpu::nccl_communicator> gpus;
    if (world.size() > 1) gpus.emplace(world);
    test::check_device_data_parallel<gpu::gpu_ops>(world, gpus ? &*gpus : nullptr, "nccl_emulated");
}

BOOST_AUTO_TEST_SUITE_END()
