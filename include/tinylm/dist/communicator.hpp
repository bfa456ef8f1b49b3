// tinylm/dist/communicator.hpp: the processes of a distributed job, as the trainer sees them.
//
// A communicator is a fixed group of `size()` processes (ranks) that call the same collectives in the same
// order. The interface is what data parallelism and ZeRO need and no more, so that another transport (NCCL,
// gpu::nccl_communicator: device memory) fits behind it:
//   rank(), size()                      this process and the group's size
//   broadcast(bytes, root)              root's bytes to everyone (initial weights, settings)
//   all_reduce_sum(f32 | f64)           in place, non-blocking: returns a `pending` to wait() on (gradient
//                                       buckets start while backward still computes the others)
//   all_gather(mine, all)               every rank's equal-sized part, in rank order
//   reduce_scatter_sum(all, mine)       the sum of everyone's `all`, of which this rank keeps part rank()
//   barrier()
// Every rank must get the same sum bit for bit, so that replicas stay identical: the MPI backend
// (dist/mpi_communicator.hpp) and any other must reduce in an order that does not depend on the rank.
//
// world() is the job this process belongs to: with tinylm::mpi (TINYLM_HAS_MPI) and started by mpirun/srun, the
// MPI world; otherwise a world of one (local_communicator), whose collectives return at once and change nothing.
#pragma once

#include <tinylm/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace tl::dist {

// A collective under way. wait() blocks until it completed (once; later calls return at once); test() returns
// whether it completed without blocking, and lets the transport advance it (MPI progresses a non-blocking
// collective only inside MPI calls, so a caller that computes between the start and the wait calls test() now and
// then). Destroying an unfinished pending waits too: the buffer it works on must not be freed under it.
class pending {
public:
    // poll(true) blocks until the collective completed; poll(false) returns whether it has. Both return true once
    // it completed.
    using poll_fn = std::function<bool(bool block)>;

    pending() = default; // already complete
    explicit pending(poll_fn poll) : poll_(std::move(poll)) {}
    pending(pending&& o) noexcept : poll_(std::exchange(o.poll_, nullptr)) {}
    pending& operator=(pending&& o) noexcept {
        if (this != &o) {
            wait();
            poll_ = std::exchange(o.poll_, nullptr);
        }
        return *this;
    }
    pending(const pending&) = delete;
    pending& operator=(const pending&) = delete;
    ~pending() { wait(); }
    void wait() {
        if (auto p = std::exchange(poll_, nullptr)) p(true);
    }
    bool test() {
        if (poll_ && poll_(false)) poll_ = nullptr;
        return !poll_;
    }
    bool done() const { return !poll_; }

private:
    poll_fn poll_;
};

class communicator {
public:
    virtual ~communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::string backend() const = 0; // "local", "mpi", "nccl", ...
    // Whether the buffers of the collectives are device (GPU) memory: gpu::nccl_communicator's (cuda/
    // nccl_communicator.hpp) are; every other communicator's are host memory.
    virtual bool takes_device_memory() const { return false; }

    virtual void broadcast(std::span<std::byte> data, int root) = 0;
    virtual pending all_reduce_sum(std::span<float> data) = 0;
    virtual pending all_reduce_sum(std::span<double> data) = 0;
    // all.size() == size() * mine.size(); rank r's part lands at all[r * mine.size()].
    virtual void all_gather(std::span<const float> mine, std::span<float> all) = 0;
    // all.size() == size() * mine.size(); mine = the sum over ranks of all[rank() * mine.size(), + mine.size()).
    virtual void reduce_scatter_sum(std::span<const float> all, std::span<float> mine) = 0;
    virtual void barrier() = 0;
    // Ends every process of the job with `why` on standard error: for a failure on one rank, which the others
    // would otherwise wait for forever inside their next collective.
    [[noreturn]] virtual void abort(const std::string& why) = 0;

    // Conveniences over the above.
    template <class T>
    void broadcast_values(std::span<T> values, int root) {
        broadcast(std::as_writable_bytes(values), root);
    }
    double sum(double value) {
        all_reduce_sum(std::span<double>(&value, 1)).wait();
        return value;
    }
    bool is_root() const { return rank() == 0; }
};

// A world of one process: collectives are identities.
class local_communicator final : public communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    std::string backend() const override { return "local"; }
    void broadcast(std::span<std::byte>, int root) override { check_root(root); }
    pending all_reduce_sum(std::span<float>) override { return {}; }
    pending all_reduce_sum(std::span<double>) override { return {}; }
    void all_gather(std::span<const float> mine, std::span<float> all) override {
        check(all.size() == mine.size(), "local_communicator::all_gather: `all` must hold one part");
        std::copy(mine.begin(), mine.end(), all.begin());
    }
    void reduce_scatter_sum(std::span<const float> all, std::span<float> mine) override {
        check(all.size() == mine.size(), "local_communicator::reduce_scatter_sum: `all` must hold one part");
        std::copy(all.begin(), all.end(), mine.begin());
    }
    void barrier() override {}
    [[noreturn]] void abort(const std::string& why) override { fail(why); }

private:
    static void check_root(int root) {
        check(root == 0, [&] { return "local_communicator: root " + std::to_string(root) + " in a world of one"; });
    }
};

// The part [begin, end) of n items that rank r of `size` owns: contiguous, in rank order, sizes differing by at
// most one (the first n % size ranks take one more).
struct part {
    std::size_t begin = 0, end = 0;
    std::size_t count() const { return end - begin; }
};
inline part part_of(std::size_t n, int rank, int size) {
    const std::size_t r = std::size_t(rank), s = std::size_t(size), base = n / s, extra = n % s;
    const std::size_t begin = r * base + std::min(r, extra);
    return {begin, begin + base + (r < extra ? 1 : 0)};
}

// FNV-1a over bytes: a cheap fingerprint to compare settings or parameters across ranks.
inline std::uint64_t fingerprint(std::span<const std::byte> bytes, std::uint64_t h = 0xcbf29ce484222325ull) {
    for (std::byte b : bytes)
        h = (h ^ std::uint64_t(b)) * 0x100000001b3ull;
    return h;
}
inline std::uint64_t fingerprint(std::string_view text, std::uint64_t h = 0xcbf29ce484222325ull) {
    return fingerprint(std::as_bytes(std::span<const char>(text.data(), text.size())), h);
}

// A failure every rank raises together (the same check on the same values), so each can unwind normally; any
// other error on one rank ends the job (communicator::abort).
class collective_error : public error {
public:
    using error::error;
};

// Fails on every rank, with `what` and the first rank that differs, unless every rank passed the same value.
inline void check_same_on_all_ranks(communicator& comm, std::uint64_t value, const std::string& what) {
    if (comm.size() == 1) return;
    std::uint64_t root_value = value;
    comm.broadcast_values(std::span<std::uint64_t>(&root_value, 1), 0);
    // The lowest differing rank, as a sum of one-hot flags (exact in double for any realistic world).
    const double differs = comm.sum(root_value != value ? 1.0 : 0.0);
    const double lowest = comm.sum(root_value != value ? std::ldexp(1.0, -std::min(comm.rank(), 1000)) : 0.0);
    if (differs == 0) return;
    std::string message = "tinylm: distributed: ";
    message += what;
    message += " differs between ranks (" + std::to_string(int(differs)) + " of " + std::to_string(comm.size());
    message += " ranks disagree with rank 0, the first is rank " + std::to_string(int(std::ceil(-std::log2(lowest))));
    message += "); start every rank with the same settings and data";
    throw collective_error(message);
}

} // namespace tl::dist

#if defined(TINYLM_HAS_MPI) && TINYLM_HAS_MPI
#include <tinylm/dist/mpi_communicator.hpp>
#endif

namespace tl::dist {

// The job this process belongs to (see the top of this file). The MPI world is set up on first use.
inline communicator& world() {
#if defined(TINYLM_HAS_MPI) && TINYLM_HAS_MPI
    if (launched_by_mpi()) {
        static mpi_communicator mpi_world;
        return mpi_world;
    }
#endif
    static local_communicator local_world;
    return local_world;
}

} // namespace tl::dist
