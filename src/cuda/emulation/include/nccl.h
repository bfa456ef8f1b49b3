// src/cuda/emulation/include/nccl.h: the part of NCCL's API that src/cuda/nccl_communicator.cpp uses, for the host
// emulation (docs/gpu.md, "NCCL in the host emulation"); on this include path only when the emulated library is built
// with MPI. Declared from NCCL's documentation (the names, the values of the enumerations, the signatures); the
// collectives run over MPI between the processes of mpirun (src/cuda/emulation/nccl.cpp).
#pragma once

#include "cuda_runtime.h"

#include <cstddef>

constexpr std::size_t NCCL_UNIQUE_ID_BYTES = 128;

// Rank 0 makes one (ncclGetUniqueId) and hands it to the others out of band (here: MPI's broadcast).
struct ncclUniqueId {
    char internal[NCCL_UNIQUE_ID_BYTES];
};

using ncclComm_t = struct ncclComm*;

enum ncclResult_t {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
};

enum ncclDataType_t {
    ncclInt8 = 0,
    ncclChar = 0,
    ncclUint8 = 1,
    ncclInt32 = 2,
    ncclInt = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6,
    ncclHalf = 6,
    ncclFloat32 = 7,
    ncclFloat = 7,
    ncclFloat64 = 8,
    ncclDouble = 8,
    ncclBfloat16 = 9,
};

enum ncclRedOp_t {
    ncclSum = 0,
    ncclProd = 1,
    ncclMax = 2,
    ncclMin = 3,
    ncclAvg = 4,
};

const char* ncclGetErrorString(ncclResult_t result);
// The text of the last error this process met (the emulation keeps one for all communicators).
const char* ncclGetLastError(ncclComm_t comm);

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);

// Device buffers only; in place when NCCL allows it: recvbuff == sendbuff (all-reduce, broadcast), sendbuff ==
// recvbuff + rank * sendcount (all-gather), recvbuff == sendbuff + rank * recvcount (reduce-scatter).
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, std::size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, std::size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
