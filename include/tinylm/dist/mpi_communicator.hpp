// tinylm/dist/mpi_communicator.hpp: the communicator (dist/communicator.hpp) over MPI; with tinylm::mpi only.
//
// One per process: world() makes it on first use. It initialises MPI (thread level FUNNELED: only the thread
// that calls the trainer talks to MPI, OpenMP threads never do) unless the program did, and finalises what it
// initialised at exit. It works on a duplicate of MPI_COMM_WORLD, so tinylm's collectives never match a
// program's own. Errors: MPI's default handler, which ends the whole job when a peer dies or a link breaks
// (mpirun then reports the failed rank); communicator::abort ends it for an error on one rank.
//
// Sums are bit-identical on every rank: MPI's reductions of a commutative operation give every rank the same
// result for the predefined ones in Open MPI and MPICH (tests/dist checks the replicas by checksum).
#pragma once

// The C API only: the deprecated C++ bindings warn under -Wextra and are not needed.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>

namespace tl::dist {

// True when a launcher (Open MPI's mpirun, MPICH's hydra, Slurm's PMI/PMIx) started this process: only then is
// MPI initialised; a program run by hand stays a world of one without touching MPI.
inline bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
        if (std::getenv(v)) return true;
    return false;
}

class mpi_communicator final : public communicator {
public:
    mpi_communicator() {
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (!initialized) {
            int provided = 0;
            MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
            owns_mpi_ = true;
        }
        MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
    }
    ~mpi_communicator() override {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (finalized) return;
        MPI_Comm_free(&comm_);
        if (owns_mpi_) MPI_Finalize();
    }
    mpi_communicator(const mpi_communicator&) = delete;
    mpi_communicator& operator=(const mpi_communicator&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string backend() const override { return "mpi"; }

    void broadcast(std::span<std::byte> data, int root) override {
        MPI_Bcast(data.data(), count_of(data.size(), "broadcast"), MPI_BYTE, root, comm_);
    }
    pending all_reduce_sum(std::span<float> data) override { return iallreduce(data.data(), data.size(), MPI_FLOAT); }
    pending all_reduce_sum(std::span<double> data) override { return iallreduce(data.data(), data.size(), MPI_DOUBLE); }
    void all_gather(std::span<const float> mine, std::span<float> all) override {
        check(all.size() == mine.size() * std::size_t(size_),
              "mpi_communicator::all_gather: `all` must hold size() parts");
        const int n = count_of(mine.size(), "all_gather");
        MPI_Allgather(mine.data(), n, MPI_FLOAT, all.data(), n, MPI_FLOAT, comm_);
    }
    void reduce_scatter_sum(std::span<const float> all, std::span<float> mine) override {
        check(all.size() == mine.size() * std::size_t(size_),
              "mpi_communicator::reduce_scatter_sum: `all` must hold size() parts");
        MPI_Reduce_scatter_block(all.data(), mine.data(), count_of(mine.size(), "reduce_scatter_sum"), MPI_FLOAT,
                                 MPI_SUM, comm_);
    }
    void barrier() override { MPI_Barrier(comm_); }
    [[noreturn]] void abort(const std::string& why) override {
        std::fprintf(stderr, "tinylm: rank %d of %d ends the job: %s\n", rank_, size_, why.c_str());
        std::fflush(stderr);
        MPI_Abort(comm_, 1);
        std::_Exit(1); // MPI_Abort does not return; this keeps [[noreturn]] honest if it ever did
    }

private:
    static int count_of(std::size_t n, const char* what) {
        check(n <= std::size_t(std::numeric_limits<int>::max()), [&] {
            return std::string("mpi_communicator::") + what + ": " + std::to_string(n) +
                   " elements exceed MPI's int count; split the buffer";
        });
        return int(n);
    }
    pending iallreduce(void* data, std::size_t n, MPI_Datatype type) {
        if (n == 0) return {};
        MPI_Request request = MPI_REQUEST_NULL;
        MPI_Iallreduce(MPI_IN_PLACE, data, count_of(n, "all_reduce_sum"), type, MPI_SUM, comm_, &request);
        return pending([request](bool block) mutable {
            if (block) {
                MPI_Wait(&request, MPI_STATUS_IGNORE);
                return true;
            }
            int done = 0;
            MPI_Test(&request, &done, MPI_STATUS_IGNORE); // also advances it (MPI progresses inside its calls)
            return done != 0;
        });
    }

    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0, size_ = 1;
    bool owns_mpi_ = false;
};

} // namespace tl::dist
