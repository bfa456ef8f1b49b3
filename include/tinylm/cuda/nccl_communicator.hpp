// tinylm/cuda/nccl_communicator.hpp: the communicator (dist/communicator.hpp) over NCCL, whose collectives take
// device memory: data parallel training on GPUs, one GPU per rank (docs/gpu.md, "Data parallel on GPUs").
//
//   tl::dist::communicator& world = tl::dist::world();       // MPI: the ranks of mpirun -np N
//   tl::gpu::nccl_communicator gpus(world);                   // first: it selects this rank's GPU
//   tl::gpu::device_decoder<tl::gpu::gpu_ops> model(config, {.batch = rows of this rank, ...});
//   options.communicator = &world;                            // host memory: settings, losses, checkpoints
//   options.device_communicator = &gpus;                      // device memory: parameters, gradients
//
// It is made from a host communicator over the same ranks (MPI's): rank 0's ncclUniqueId goes to every rank through
// it, and each rank takes the GPU of its local rank (the ranks before it on the same host, found through the host
// communicator) with cudaSetDevice, or options.device. The collectives run on options.stream (nullptr: the default
// stream, gpu_ops's), in order with the kernels there; a pending's wait() synchronises the stream. barrier() is the
// host communicator's after the stream's work; abort() aborts the NCCL communicator, then the job through the host.
// Every rank gets the same sum bit for bit (NCCL's rings and trees reduce each element once, then copy it).
//
// Built into tinylm::cuda when NCCL was found (TINYLM_HAS_NCCL); a plain C++ header (no NCCL or CUDA header).
#pragma once

#include <tinylm/dist/communicator.hpp>

#include <memory>
#include <span>
#include <string>

namespace tl::gpu {

struct nccl_options {
    int device = -1;        // the CUDA device of this rank; -1: its local rank on its host
    void* stream = nullptr; // a cudaStream_t; nullptr: the default stream
};

class nccl_communicator final : public dist::communicator {
public:
    // A collective over `host`'s ranks: every rank of it must make one, in the same order.
    explicit nccl_communicator(dist::communicator& host, nccl_options options = {});
    ~nccl_communicator() override;
    nccl_communicator(const nccl_communicator&) = delete;
    nccl_communicator& operator=(const nccl_communicator&) = delete;

    int rank() const override;
    int size() const override;
    std::string backend() const override { return "nccl"; }
    bool takes_device_memory() const override { return true; }
    // The CUDA device this rank computes on (set current by the constructor).
    int device() const;
    // This rank's index among the ranks on its host (the device, unless options.device chose another).
    int local_rank() const;

    // Device memory, in place.
    void broadcast(std::span<std::byte> data, int root) override;
    dist::pending all_reduce_sum(std::span<float> data) override;
    dist::pending all_reduce_sum(std::span<double> data) override;
    // The mean over the ranks (ncclAvg), in place.
    dist::pending all_reduce_average(std::span<float> data);
    void all_gather(std::span<const float> mine, std::span<float> all) override;
    void reduce_scatter_sum(std::span<const float> all, std::span<float> mine) override;
    void barrier() override;
    [[noreturn]] void abort(const std::string& why) override;

private:
    struct state;
    std::unique_ptr<state> s_;
};

} // namespace tl::gpu
