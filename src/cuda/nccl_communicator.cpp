// src/cuda/nccl_communicator.cpp: the communicator over NCCL (tinylm/cuda/nccl_communicator.hpp). Host code only
// (NCCL's and CUDA's runtime calls), compiled by the C++ compiler into tinylm::cuda when NCCL was found.
#include "check.cuh"

#include <tinylm/cuda/nccl_communicator.hpp>

#include <nccl.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace tl::gpu {

namespace {

void nccl_check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess) return;
    std::string m = "nccl: ";
    m += what;
    m += " failed: ";
    m += ncclGetErrorString(r);
    const char* last = ncclGetLastError(nullptr);
    if (last && *last) {
        m += " (";
        m += last;
        m += ')';
    }
    fail(m);
}

// The host's name as a number below 2^48: exact in the double sums of the host communicator.
double host_key() {
    char name[HOST_NAME_MAX + 1] = {};
    if (gethostname(name, sizeof name - 1) != 0) return 0;
    return double(dist::fingerprint(std::string_view(name)) >> 16);
}

} // namespace

struct nccl_communicator::state {
    dist::communicator& host;
    cudaStream_t stream = nullptr;
    ncclComm_t comm = nullptr;
    int rank = 0, size = 1, device = 0, local_rank = 0;

    // A pending that waits for the stream (the collective and everything queued before it).
    dist::pending on_stream() const {
        cudaStream_t s = stream;
        return dist::pending([s](bool block) {
            if (block) {
                detail::cuda_check(cudaStreamSynchronize(s), "cudaStreamSynchronize after an NCCL collective");
                return true;
            }
            const cudaError_t e = cudaStreamQuery(s);
            if (e == cudaErrorNotReady) return false;
            detail::cuda_check(e, "cudaStreamQuery after an NCCL collective");
            return true;
        });
    }
};

nccl_communicator::nccl_communicator(dist::communicator& host, nccl_options options)
    : s_(std::make_unique<state>(state{host, static_cast<cudaStream_t>(options.stream)})) {
    s_->rank = host.rank();
    s_->size = host.size();
    // The local rank: the ranks before this one on the same host.
    std::vector<double> hosts(std::size_t(s_->size), 0.0);
    hosts[std::size_t(s_->rank)] = host_key();
    host.all_reduce_sum(std::span<double>(hosts)).wait();
    for (int r = 0; r < s_->rank; ++r)
        s_->local_rank += hosts[std::size_t(r)] == hosts[std::size_t(s_->rank)];
    s_->device = options.device >= 0 ? options.device : s_->local_rank;

    // Every rank checks its device before any waits inside NCCL's initialisation for a rank that failed.
    std::string problem;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) {
        (void)cudaGetLastError();
        devices = 0;
    }
    if (devices == 0) {
        problem = "gpu::nccl_communicator: rank " + std::to_string(s_->rank) +
                  " sees no CUDA device (cudaGetDeviceCount: no GPU or no driver); train on the CPU";
    } else if (s_->device >= devices) {
        problem = "gpu::nccl_communicator: rank " + std::to_string(s_->rank) + " (local rank " +
                  std::to_string(s_->local_rank) + " on its host) wants CUDA device " + std::to_string(s_->device) +
                  ", and its host has " + std::to_string(devices) +
                  " visible: start at most one rank per GPU (mpirun -np N, N <= GPUs per host)";
    } else if (const cudaError_t e = cudaSetDevice(s_->device); e != cudaSuccess) {
        problem = "gpu::nccl_communicator: cudaSetDevice(" + std::to_string(s_->device) + ") on rank " +
                  std::to_string(s_->rank) + " failed: " + cudaGetErrorString(e);
    }
    const double failed = host.sum(problem.empty() ? 0.0 : 1.0);
    if (failed > 0) {
        if (problem.empty())
            problem =
                "gpu::nccl_communicator: " + std::to_string(int(failed)) + " other rank(s) found no GPU of their own";
        throw dist::collective_error(problem);
    }

    ncclUniqueId id{};
    if (s_->rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host.broadcast(std::as_writable_bytes(std::span<ncclUniqueId>(&id, 1)), 0);
    nccl_check(ncclCommInitRank(&s_->comm, s_->size, id, s_->rank), "ncclCommInitRank");
}

nccl_communicator::~nccl_communicator() {
    if (!s_->comm) return;
    (void)cudaStreamSynchronize(s_->stream);
    (void)ncclCommDestroy(s_->comm);
}

int nccl_communicator::rank() const { return s_->rank; }
int nccl_communicator::size() const { return s_->size; }
int nccl_communicator::device() const { return s_->device; }
int nccl_communicator::local_rank() const { return s_->local_rank; }

void nccl_communicator::broadcast(std::span<std::byte> data, int root) {
    if (data.empty()) return;
    nccl_check(ncclBroadcast(data.data(), data.data(), data.size(), ncclUint8, root, s_->comm, s_->stream),
               "ncclBroadcast");
    s_->on_stream().wait(); // the caller reads or frees the buffer next
}

dist::pending nccl_communicator::all_reduce_sum(std::span<float> data) {
    if (data.empty()) return {};
    nccl_check(ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat32, ncclSum, s_->comm, s_->stream),
               "ncclAllReduce (f32, sum)");
    return s_->on_stream();
}

dist::pending nccl_communicator::all_reduce_sum(std::span<double> data) {
    if (data.empty()) return {};
    nccl_check(ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat64, ncclSum, s_->comm, s_->stream),
               "ncclAllReduce (f64, sum)");
    return s_->on_stream();
}

dist::pending nccl_communicator::all_reduce_average(std::span<float> data) {
    if (data.empty()) return {};
    nccl_check(ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat32, ncclAvg, s_->comm, s_->stream),
               "ncclAllReduce (f32, average)");
    return s_->on_stream();
}

void nccl_communicator::all_gather(std::span<const float> mine, std::span<float> all) {
    check(all.size() == mine.size() * std::size_t(s_->size),
          "gpu::nccl_communicator::all_gather: `all` must hold size() parts");
    if (mine.empty()) return;
    nccl_check(ncclAllGather(mine.data(), all.data(), mine.size(), ncclFloat32, s_->comm, s_->stream), "ncclAllGather");
    s_->on_stream().wait();
}

void nccl_communicator::reduce_scatter_sum(std::span<const float> all, std::span<float> mine) {
    check(all.size() == mine.size() * std::size_t(s_->size),
          "gpu::nccl_communicator::reduce_scatter_sum: `all` must hold size() parts");
    if (mine.empty()) return;
    nccl_check(ncclReduceScatter(all.data(), mine.data(), mine.size(), ncclFloat32, ncclSum, s_->comm, s_->stream),
               "ncclReduceScatter");
    s_->on_stream().wait();
}

void nccl_communicator::barrier() {
    s_->on_stream().wait();
    s_->host.barrier();
}

void nccl_communicator::abort(const std::string& why) {
    if (s_->comm) (void)ncclCommAbort(s_->comm);
    s_->comm = nullptr;
    s_->host.abort(why);
    std::_Exit(1); // the host's abort does not return; this keeps [[noreturn]] honest if it ever did
}

} // namespace tl::gpu
