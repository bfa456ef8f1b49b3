// src/cuda/emulation/nccl.cpp: NCCL's collectives (include/nccl.h) for the host emulation, over MPI between the
// processes of mpirun (docs/gpu.md, "NCCL in the host emulation"), so that gpu::nccl_communicator and the trainer's
// multi-GPU path run without a GPU. Each process is one emulated GPU; device memory is host memory, and every launch
// and copy has finished when it returns, so a collective runs at once, in its stream's order, and returns when done.
//
// What it keeps of NCCL, checked on every call:
// - buffers inside emulated device allocations (cudaMalloc's, runtime.cpp), as a GPU refuses a host pointer; counts
//   and types as NCCL documents them; in place only where NCCL allows it (the same buffer for all-reduce and
//   broadcast, the rank's part of the larger buffer for all-gather and reduce-scatter), no other overlap;
// - every rank gets the same bits. NCCL's rings and trees reduce each element once and copy the result; the MPI
//   standard does not require an all-reduce to give every rank the same bits (an implementation may reduce each
//   part on another rank, in another order; tinylm's host communicator relies on Open MPI's and MPICH's doing so). So
//   the emulation gathers every rank's contribution to every rank and adds them in rank order there: the same additions
//   in the same order on every rank, whatever MPI's algorithm (tests/dist/test_nccl_emulated.cpp checks it against that
//   sum computed by hand);
// - ncclAvg: NCCL documents it as the average over the ranks; here the rank-order sum divided by the rank count
//   (NCCL may round differently, e.g. scaling each contribution first: the emulation promises its own bits on every
//   rank, not NCCL's).
// What it adds: before the data, the ranks exchange what each calls (collective, count, type, operation, root) and
// whether its arguments were refused, so that a wrong call fails on every rank (ncclInvalidUsage when they disagree,
// ncclRemoteError on the ranks whose own arguments were fine) where NCCL would hang or read garbage.
// A communicator of one rank needs no MPI (test_cuda_kernels_emulated runs it without a launcher); several ranks
// must be all of MPI_COMM_WORLD (what tinylm's trainer makes), anything else is refused with the reason.
#include "nccl.h"

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

struct ncclComm {
    MPI_Comm comm = MPI_COMM_NULL; // MPI_COMM_WORLD's processes ordered by NCCL rank; null for one rank
    int rank = 0, size = 1;
    std::vector<std::byte> scratch, packed; // every rank's piece, and this rank's parts to send (reduce-scatter)
};

namespace {

std::string& last_error() {
    static std::string text;
    return text;
}
ncclResult_t failure(ncclResult_t r, std::string text) {
    last_error() = std::move(text);
    return r;
}

std::size_t element_bytes(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8:
        return 1;
    case ncclFloat16:
    case ncclBfloat16:
        return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
        return 8;
    }
    return 0;
}

// The collectives move at most this many bytes of each rank at a time: the scratch buffers stay a few MiB per rank,
// and every MPI count fits its int.
constexpr std::size_t piece_bytes = std::size_t(4) << 20;

// ---- what a rank calls: exchanged before the data, so that every rank fails alike ----
enum class collective : std::int64_t { all_reduce, broadcast, all_gather, reduce_scatter };

const char* name_of(collective c) {
    switch (c) {
    case collective::all_reduce:
        return "ncclAllReduce";
    case collective::broadcast:
        return "ncclBroadcast";
    case collective::all_gather:
        return "ncclAllGather";
    case collective::reduce_scatter:
        return "ncclReduceScatter";
    }
    return "?";
}

struct call {
    collective what{};
    std::int64_t count = 0, datatype = 0, op = 0, root = 0;
    std::int64_t refused = 0; // this rank's own arguments are wrong (its last error says why)

    bool same_as(const call& o) const {
        return what == o.what && count == o.count && datatype == o.datatype && op == o.op && root == o.root;
    }
    std::string text() const {
        std::string t = std::string(name_of(what)) + " of " + std::to_string(count) + " elements of type " +
                        std::to_string(datatype);
        if (what == collective::all_reduce || what == collective::reduce_scatter) t += ", op " + std::to_string(op);
        if (what == collective::broadcast) t += ", root " + std::to_string(root);
        return t;
    }
};

// Every rank's call, compared: ncclSuccess when all agree and none was refused.
ncclResult_t agree(ncclComm& c, const call& mine, ncclResult_t own) {
    std::vector<call> all(std::size_t(c.size), mine);
    if (c.size > 1) MPI_Allgather(&mine, int(sizeof(call)), MPI_BYTE, all.data(), int(sizeof(call)), MPI_BYTE, c.comm);
    if (own != ncclSuccess) return own;
    for (int r = 0; r < c.size; ++r)
        if (all[std::size_t(r)].refused)
            return failure(ncclRemoteError, std::string(name_of(mine.what)) + ": rank " + std::to_string(r) +
                                                " refused its arguments (its error says why)");
    for (int r = 1; r < c.size; ++r)
        if (!all[std::size_t(r)].same_as(all[0]))
            return failure(ncclInvalidUsage, "the ranks call different collectives: rank 0 " + all[0].text() +
                                                 ", rank " + std::to_string(r) + " " + all[std::size_t(r)].text());
    return ncclSuccess;
}

// ---- the checks of one rank's arguments ----
bool overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
    const auto x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
    return x < y + b_bytes && y < x + a_bytes;
}

// `bytes` = count * element_bytes(t) * parts, or an error when the type is unknown or the product overflows.
ncclResult_t extent(const char* what, std::size_t count, ncclDataType_t t, std::size_t parts, std::size_t& bytes) {
    const std::size_t e = element_bytes(t);
    if (e == 0)
        return failure(ncclInvalidArgument, std::string(what) + ": unknown data type " + std::to_string(int(t)));
    if (count > std::numeric_limits<std::size_t>::max() / e / parts)
        return failure(ncclInvalidArgument, std::string(what) + ": count " + std::to_string(count) + " overflows");
    bytes = count * e * parts;
    return ncclSuccess;
}

ncclResult_t device_buffer(const char* what, const char* which, const void* p, std::size_t bytes) {
    if (bytes == 0 || tl::gpu::emulation::is_device_memory(p, bytes)) return ncclSuccess;
    return failure(ncclInvalidArgument, std::string(what) + ": " + which + " (" + std::to_string(bytes) +
                                            " bytes) is not inside one device allocation (cudaMalloc's): NCCL " +
                                            "takes device memory only");
}

// The emulation reduces what tinylm sums: float32 and float64, by sum or average.
ncclResult_t reduction(const char* what, ncclDataType_t t, ncclRedOp_t op) {
    if (t != ncclFloat32 && t != ncclFloat64)
        return failure(ncclInvalidArgument, std::string(what) + ": the emulation reduces ncclFloat32 and ncclFloat64 " +
                                                "only, not type " + std::to_string(int(t)));
    if (op != ncclSum && op != ncclAvg)
        return failure(ncclInvalidArgument, std::string(what) + ": the emulation implements ncclSum and ncclAvg " +
                                                "only, not op " + std::to_string(int(op)));
    return ncclSuccess;
}

// Every launch before it on the stream has finished; a fault it left is reported as NCCL reports CUDA's errors.
ncclResult_t stream_ready(const char* what, cudaStream_t stream) {
    const cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) return ncclSuccess;
    return failure(ncclUnhandledCudaError,
                   std::string(what) + ": the stream holds a CUDA error: " + cudaGetErrorString(e));
}

// ---- the data ----
// Every rank's `bytes` at `mine`, in rank order, into c.scratch.
void gather_piece(ncclComm& c, const std::byte* mine, std::size_t bytes) {
    c.scratch.resize(bytes * std::size_t(c.size));
    if (c.size == 1)
        std::memcpy(c.scratch.data(), mine, bytes);
    else
        MPI_Allgather(mine, int(bytes), MPI_BYTE, c.scratch.data(), int(bytes), MPI_BYTE, c.comm);
}

// out[i] = parts[0][i] + parts[1][i] + ... in rank order (then / ranks for the average): the same operations on
// every rank. The elements go through memcpy: scratch holds bytes, and `out` may be any aligned device pointer.
template <class T>
void add_in_rank_order(const std::byte* parts, int ranks, std::size_t n, bool average, std::byte* out) {
    for (std::size_t i = 0; i < n; ++i) {
        T sum;
        std::memcpy(&sum, parts + i * sizeof(T), sizeof(T));
        for (int r = 1; r < ranks; ++r) {
            T x;
            std::memcpy(&x, parts + (std::size_t(r) * n + i) * sizeof(T), sizeof(T));
            sum += x;
        }
        if (average) sum /= T(ranks);
        std::memcpy(out + i * sizeof(T), &sum, sizeof(T));
    }
}

void reduce_scratch(const ncclComm& c, ncclDataType_t t, ncclRedOp_t op, std::size_t n, std::byte* out) {
    if (t == ncclFloat32)
        add_in_rank_order<float>(c.scratch.data(), c.size, n, op == ncclAvg, out);
    else
        add_in_rank_order<double>(c.scratch.data(), c.size, n, op == ncclAvg, out);
}

} // namespace

const char* ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error";
    case ncclSystemError:
        return "unhandled system error";
    case ncclInternalError:
        return "internal error";
    case ncclInvalidArgument:
        return "invalid argument";
    case ncclInvalidUsage:
        return "invalid usage";
    case ncclRemoteError:
        return "remote process failed";
    case ncclInProgress:
        return "operation in progress";
    }
    return "unknown result";
}

const char* ncclGetLastError(ncclComm_t) { return last_error().c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
    if (!uniqueId) return failure(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is null");
    // Distinct per call and process: the ranks check that they were given the same one.
    static std::atomic<std::uint64_t> calls{0};
    std::random_device entropy;
    const std::uint64_t words[] = {0x746c6e63636c656dULL, std::uint64_t(::getpid()), calls.fetch_add(1),
                                   std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()),
                                   (std::uint64_t(entropy()) << 32) | entropy()};
    *uniqueId = {};
    std::memcpy(uniqueId->internal, words, sizeof words);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
    if (!comm) return failure(ncclInvalidArgument, "ncclCommInitRank: comm is null");
    *comm = nullptr;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return failure(ncclInvalidArgument,
                       "ncclCommInitRank: rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " ranks");
    if (nranks == 1) {
        *comm = new ncclComm{};
        return ncclSuccess;
    }
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
        return failure(ncclInvalidUsage, "ncclCommInitRank: the emulation's ranks are MPI's processes: run under "
                                         "mpirun, with MPI initialised (tl::dist::world())");
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != nranks)
        return failure(ncclInvalidUsage, "ncclCommInitRank: the emulation forms a communicator over all of "
                                         "MPI_COMM_WORLD only: nranks " +
                                             std::to_string(nranks) + ", and mpirun started " + std::to_string(world) +
                                             " processes");
    MPI_Comm ordered = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &ordered); // ordered by NCCL rank

    // Who each rank is: the id it was given, its rank, its host and its device (NCCL refuses two ranks on one GPU).
    struct member {
        ncclUniqueId id;
        int rank, device;
        char host[256];
    };
    member me{};
    me.id = commId, me.rank = rank;
    if (cudaGetDevice(&me.device) != cudaSuccess) me.device = -1;
    (void)gethostname(me.host, sizeof me.host - 1);
    std::vector<member> all(static_cast<std::size_t>(nranks));
    MPI_Allgather(&me, int(sizeof me), MPI_BYTE, all.data(), int(sizeof me), MPI_BYTE, ordered);
    std::string problem;
    for (int r = 0; r < nranks && problem.empty(); ++r) {
        const member& m = all[std::size_t(r)];
        if (std::memcmp(m.id.internal, all[0].id.internal, NCCL_UNIQUE_ID_BYTES) != 0)
            problem = "rank " + std::to_string(m.rank) + " was given another ncclUniqueId than rank " +
                      std::to_string(all[0].rank) + "'s";
        else if (m.rank != r)
            problem = "two processes claim rank " + std::to_string(m.rank);
        for (int q = 0; q < r && problem.empty(); ++q)
            if (all[std::size_t(q)].device == m.device && std::strcmp(all[std::size_t(q)].host, m.host) == 0)
                problem = "ranks " + std::to_string(q) + " and " + std::to_string(r) + " are both on CUDA device " +
                          std::to_string(m.device) + " of host " + m.host + " (one GPU per rank)";
    }
    if (!problem.empty()) {
        MPI_Comm_free(&ordered);
        return failure(ncclInvalidUsage, "ncclCommInitRank: " + problem);
    }
    *comm = new ncclComm{ordered, rank, nranks, {}, {}};
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm->comm != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm->comm);
    delete comm;
    return ncclSuccess;
}

// No MPI call: the other ranks may be gone or stuck, and the caller ends the job next (MPI_Abort).
ncclResult_t ncclCommAbort(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    constexpr const char* what = "ncclAllReduce";
    if (!comm) return failure(ncclInvalidArgument, std::string(what) + ": comm is null");
    std::size_t bytes = 0;
    ncclResult_t own = reduction(what, datatype, op);
    if (own == ncclSuccess) own = extent(what, count, datatype, 1, bytes);
    if (own == ncclSuccess) own = device_buffer(what, "sendbuff", sendbuff, bytes);
    if (own == ncclSuccess) own = device_buffer(what, "recvbuff", recvbuff, bytes);
    if (own == ncclSuccess && sendbuff != recvbuff && overlap(sendbuff, bytes, recvbuff, bytes))
        own = failure(ncclInvalidArgument, std::string(what) + ": sendbuff and recvbuff overlap without being equal");
    if (own == ncclSuccess) own = stream_ready(what, stream);
    const call mine{collective::all_reduce, std::int64_t(count), datatype, op, 0, own != ncclSuccess};
    if (const ncclResult_t r = agree(*comm, mine, own); r != ncclSuccess) return r;

    const std::size_t e = element_bytes(datatype), per_piece = piece_bytes / e;
    const auto* in = static_cast<const std::byte*>(sendbuff);
    auto* out = static_cast<std::byte*>(recvbuff);
    for (std::size_t first = 0; first < count; first += per_piece) {
        const std::size_t n = std::min(per_piece, count - first);
        gather_piece(*comm, in + first * e, n * e); // before `out` changes: in place reads its piece first
        reduce_scratch(*comm, datatype, op, n, out + first * e);
    }
    return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
    constexpr const char* what = "ncclBroadcast";
    if (!comm) return failure(ncclInvalidArgument, std::string(what) + ": comm is null");
    std::size_t bytes = 0;
    ncclResult_t own = ncclSuccess;
    if (root < 0 || root >= comm->size)
        own = failure(ncclInvalidArgument, std::string(what) + ": root " + std::to_string(root) + " of " +
                                               std::to_string(comm->size) + " ranks");
    if (own == ncclSuccess) own = extent(what, count, datatype, 1, bytes);
    const bool is_root = comm->rank == root;
    if (own == ncclSuccess && is_root) own = device_buffer(what, "sendbuff", sendbuff, bytes); // read on root only
    if (own == ncclSuccess) own = device_buffer(what, "recvbuff", recvbuff, bytes);
    if (own == ncclSuccess && is_root && sendbuff != recvbuff && overlap(sendbuff, bytes, recvbuff, bytes))
        own = failure(ncclInvalidArgument, std::string(what) + ": sendbuff and recvbuff overlap without being equal");
    if (own == ncclSuccess) own = stream_ready(what, stream);
    const call mine{collective::broadcast, std::int64_t(count), datatype, 0, root, own != ncclSuccess};
    if (const ncclResult_t r = agree(*comm, mine, own); r != ncclSuccess) return r;

    auto* out = static_cast<std::byte*>(recvbuff);
    if (is_root && sendbuff != recvbuff && bytes > 0) std::memcpy(out, sendbuff, bytes);
    if (comm->size > 1)
        for (std::size_t first = 0; first < bytes; first += piece_bytes)
            MPI_Bcast(out + first, int(std::min(piece_bytes, bytes - first)), MPI_BYTE, root, comm->comm);
    return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, std::size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
    constexpr const char* what = "ncclAllGather";
    if (!comm) return failure(ncclInvalidArgument, std::string(what) + ": comm is null");
    std::size_t bytes = 0, all_bytes = 0;
    ncclResult_t own = extent(what, sendcount, datatype, 1, bytes);
    if (own == ncclSuccess) own = extent(what, sendcount, datatype, std::size_t(comm->size), all_bytes);
    if (own == ncclSuccess) own = device_buffer(what, "sendbuff", sendbuff, bytes);
    if (own == ncclSuccess) own = device_buffer(what, "recvbuff (nranks * sendcount)", recvbuff, all_bytes);
    auto* out = static_cast<std::byte*>(recvbuff);
    const bool in_place = sendbuff == out + std::size_t(comm->rank) * bytes;
    if (own == ncclSuccess && !in_place && overlap(sendbuff, bytes, recvbuff, all_bytes))
        own = failure(ncclInvalidArgument, std::string(what) + ": sendbuff overlaps recvbuff other than in place " +
                                               "(sendbuff == recvbuff + rank * sendcount)");
    if (own == ncclSuccess) own = stream_ready(what, stream);
    const call mine{collective::all_gather, std::int64_t(sendcount), datatype, 0, 0, own != ncclSuccess};
    if (const ncclResult_t r = agree(*comm, mine, own); r != ncclSuccess) return r;

    const auto* in = static_cast<const std::byte*>(sendbuff);
    for (std::size_t first = 0; first < bytes; first += piece_bytes) {
        const std::size_t n = std::min(piece_bytes, bytes - first);
        gather_piece(*comm, in + first, n);
        for (int r = 0; r < comm->size; ++r)
            std::memcpy(out + std::size_t(r) * bytes + first, comm->scratch.data() + std::size_t(r) * n, n);
    }
    return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, std::size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    constexpr const char* what = "ncclReduceScatter";
    if (!comm) return failure(ncclInvalidArgument, std::string(what) + ": comm is null");
    std::size_t bytes = 0, all_bytes = 0;
    ncclResult_t own = reduction(what, datatype, op);
    if (own == ncclSuccess) own = extent(what, recvcount, datatype, 1, bytes);
    if (own == ncclSuccess) own = extent(what, recvcount, datatype, std::size_t(comm->size), all_bytes);
    if (own == ncclSuccess) own = device_buffer(what, "sendbuff (nranks * recvcount)", sendbuff, all_bytes);
    if (own == ncclSuccess) own = device_buffer(what, "recvbuff", recvbuff, bytes);
    const auto* in = static_cast<const std::byte*>(sendbuff);
    const bool in_place = recvbuff == in + std::size_t(comm->rank) * bytes;
    if (own == ncclSuccess && !in_place && overlap(sendbuff, all_bytes, recvbuff, bytes))
        own = failure(ncclInvalidArgument, std::string(what) + ": recvbuff overlaps sendbuff other than in place " +
                                               "(recvbuff == sendbuff + rank * recvcount)");
    if (own == ncclSuccess) own = stream_ready(what, stream);
    const call mine{collective::reduce_scatter, std::int64_t(recvcount), datatype, op, 0, own != ncclSuccess};
    if (const ncclResult_t r = agree(*comm, mine, own); r != ncclSuccess) return r;

    // Piece by piece: this rank's parts of every rank's block go to that rank (MPI_Alltoall), then each rank adds the
    // parts of its own block in rank order. In place, a piece of this rank's block is read before it is written.
    const std::size_t e = element_bytes(datatype), per_piece = piece_bytes / e;
    auto* out = static_cast<std::byte*>(recvbuff);
    const std::size_t ranks = std::size_t(comm->size);
    for (std::size_t first = 0; first < recvcount; first += per_piece) {
        const std::size_t n = std::min(per_piece, recvcount - first);
        comm->packed.resize(ranks * n * e);
        for (std::size_t b = 0; b < ranks; ++b)
            std::memcpy(comm->packed.data() + b * n * e, in + (b * recvcount + first) * e, n * e);
        comm->scratch.resize(ranks * n * e);
        if (ranks == 1)
            std::memcpy(comm->scratch.data(), comm->packed.data(), n * e);
        else
            MPI_Alltoall(comm->packed.data(), int(n * e), MPI_BYTE, comm->scratch.data(), int(n * e), MPI_BYTE,
                         comm->comm);
        reduce_scratch(*comm, datatype, op, n, out + first * e);
    }
    return ncclSuccess;
}
