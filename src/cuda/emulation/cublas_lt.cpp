// src/cuda/emulation/cublas_lt.cpp: the cuBLASLt subset of include/cublasLt.h on the host, from cuBLASLt's
// documentation: D = alpha op(A) op(B) + beta C, column-major, element (i, j) of a matrix at i + j ld, batch b at
// b * its strided batch offset; op(A) is m x k and op(B) k x n for the m x n D; C is not read when beta is 0. Sums
// in f32 over k in order (cuBLASLt's order is its own: results agree with it to f32 rounding). -ffp-contract=off
// (tests/cuda/CMakeLists.txt) keeps x * b + row a multiply and an add, as the CPU reference's.
#include "cublasLt.h"

#include <algorithm>
#include <cstring>
#include <vector>

struct cublasLtContext {
    int alive = 1;
};
struct cublasLtMatmulDescOpaque {
    cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque {
    cudaDataType_t type = CUDA_R_32F;
    std::uint64_t rows = 0, cols = 0;
    std::int64_t ld = 0;
    std::int32_t batch = 1;
    std::int64_t stride = 0;
};
struct cublasLtMatmulPreferenceOpaque {
    std::uint64_t workspace = 0;
    std::uint32_t alignment[4] = {256, 256, 256, 256}; // A, B, C, D: cuBLASLt assumes 256 unless told
};

namespace {

template <class T>
cublasStatus_t read_value(T& out, const void* value, std::size_t bytes) {
    if (!value || bytes != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&out, value, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

std::size_t element_bytes(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

float element(const void* base, cudaDataType_t t, std::int64_t i) {
    if (t == CUDA_R_32F) return static_cast<const float*>(base)[i];
    const std::uint32_t bits = std::uint32_t(static_cast<const std::uint16_t*>(base)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// The stored shape of an operand that op() turns into rows x cols.
bool stored_as(const cublasLtMatrixLayoutOpaque& l, cublasOperation_t op, std::uint64_t rows, std::uint64_t cols) {
    return op == CUBLAS_OP_N ? l.rows == rows && l.cols == cols : l.rows == cols && l.cols == rows;
}

bool aligned(const void* p, const cublasLtMatrixLayoutOpaque& l, std::uint32_t alignment) {
    std::uintptr_t bits = reinterpret_cast<std::uintptr_t>(p);
    if (l.batch > 1) bits |= std::uintptr_t(l.stride) * element_bytes(l.type);
    return bits % alignment == 0;
}

} // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new cublasLtContext;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
    if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *desc = new cublasLtMatmulDescOpaque;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                                              const void* value, std::size_t bytes) {
    if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
    std::int32_t op = 0; // cuBLASLt: an int32_t holding a cublasOperation_t
    if (const cublasStatus_t s = read_value(op, value, bytes); s != CUBLAS_STATUS_SUCCESS) return s;
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attribute) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
        desc->trans_a = cublasOperation_t(op);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_TRANSB:
        desc->trans_b = cublasOperation_t(op);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, std::uint64_t rows,
                                          std::uint64_t cols, std::int64_t ld) {
    if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
    if (type != CUDA_R_32F && type != CUDA_R_16BF) return CUBLAS_STATUS_NOT_SUPPORTED;
    // Column-major: a column of `rows` elements must fit in the leading dimension.
    if (ld < 1 || (rows > 0 && std::uint64_t(ld) < rows)) return CUBLAS_STATUS_INVALID_VALUE;
    *layout = new cublasLtMatrixLayoutOpaque{type, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attribute, const void* value,
                                                std::size_t bytes) {
    if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attribute) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: {
        std::int32_t count = 0;
        if (const cublasStatus_t s = read_value(count, value, bytes); s != CUBLAS_STATUS_SUCCESS) return s;
        if (count < 1) return CUBLAS_STATUS_INVALID_VALUE;
        layout->batch = count;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
        return read_value(layout->stride, value, bytes);
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* preference) {
    if (!preference) return CUBLAS_STATUS_INVALID_VALUE;
    *preference = new cublasLtMatmulPreferenceOpaque;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
    delete preference;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference,
                                                    cublasLtMatmulPreferenceAttributes_t attribute, const void* value,
                                                    std::size_t bytes) {
    if (!preference) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attribute) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        return read_value(preference->workspace, value, bytes);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
        std::uint32_t a = 0;
        if (const cublasStatus_t s = read_value(a, value, bytes); s != CUBLAS_STATUS_SUCCESS) return s;
        if (a == 0 || (a & (a - 1)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
        preference->alignment[attribute - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = a;
        return CUBLAS_STATUS_SUCCESS;
    }
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

namespace {

// Whether the four layouts describe one product under desc: op(A) m x k, op(B) k x n, C and D m x n, one batch
// count, A and B of one input type, C and D f32.
bool consistent(const cublasLtMatmulDescOpaque& op, const cublasLtMatrixLayoutOpaque& a,
                const cublasLtMatrixLayoutOpaque& b, const cublasLtMatrixLayoutOpaque& c,
                const cublasLtMatrixLayoutOpaque& d) {
    const std::uint64_t m = d.rows, n = d.cols, k = op.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
    return stored_as(a, op.trans_a, m, k) && stored_as(b, op.trans_b, k, n) && c.rows == m && c.cols == n &&
           c.ld == d.ld && a.type == b.type && c.type == CUDA_R_32F && d.type == CUDA_R_32F && a.batch == d.batch &&
           b.batch == d.batch && c.batch == d.batch && (d.batch == 1 || c.stride == d.stride);
}

} // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t preference, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* found) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!desc || !a || !b || !c || !d || !preference || requested < 1 || !results || !found)
        return CUBLAS_STATUS_INVALID_VALUE;
    *found = 0;
    if (!consistent(*desc, *a, *b, *c, *d)) return CUBLAS_STATUS_INVALID_VALUE;
    results[0] = {};
    // The "algorithm" remembers the alignment it was chosen for: cublasLtMatmul refuses operands aligned less.
    for (int i = 0; i < 4; ++i)
        results[0].algo.data[i] = preference->alignment[i];
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* a,
                              cublasLtMatrixLayout_t a_layout, const void* b, cublasLtMatrixLayout_t b_layout,
                              const void* beta, const void* c, cublasLtMatrixLayout_t c_layout, void* d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t* algo, void*, std::size_t,
                              cudaStream_t) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!desc || !alpha || !beta || !a_layout || !b_layout || !c_layout || !d_layout || !algo)
        return CUBLAS_STATUS_INVALID_VALUE;
    const cublasLtMatrixLayoutOpaque &la = *a_layout, &lb = *b_layout, &lc = *c_layout, &ld = *d_layout;
    if (!consistent(*desc, la, lb, lc, ld)) return CUBLAS_STATUS_INVALID_VALUE;
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    const std::uint64_t m = ld.rows, n = ld.cols, k = desc->trans_a == CUBLAS_OP_N ? la.cols : la.rows;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (!a || !b || !d || (be != 0 && !c)) return CUBLAS_STATUS_INVALID_VALUE;
    if (!aligned(a, la, std::uint32_t(algo->data[0])) || !aligned(b, lb, std::uint32_t(algo->data[1])) ||
        (be != 0 && !aligned(c, lc, std::uint32_t(algo->data[2]))) || !aligned(d, ld, std::uint32_t(algo->data[3])))
        return CUBLAS_STATUS_INVALID_VALUE; // operands less aligned than the algorithm was chosen for
    const bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
    // op(A) packed row-major (m x k) and op(B) row-major (k x n), then each row of D as a sum of rows of op(B): the
    // inner loop runs along a row, so the compiler vectorises it and every element still sums over k in order.
    std::vector<float> pa(static_cast<std::size_t>(m * k)), pb(static_cast<std::size_t>(k * n)),
        row(static_cast<std::size_t>(n));
    for (std::int64_t batch = 0; batch < ld.batch; ++batch) {
        const std::int64_t oa = batch * la.stride, ob = batch * lb.stride, oc = batch * lc.stride,
                           od = batch * ld.stride;
        for (std::uint64_t i = 0; i < m; ++i)
            for (std::uint64_t p = 0; p < k; ++p)
                pa[i * k + p] = element(a, la.type, oa + std::int64_t(ta ? p + i * la.ld : i + p * la.ld));
        for (std::uint64_t p = 0; p < k; ++p)
            for (std::uint64_t j = 0; j < n; ++j)
                pb[p * n + j] = element(b, lb.type, ob + std::int64_t(tb ? j + p * lb.ld : p + j * lb.ld));
        for (std::uint64_t i = 0; i < m; ++i) {
            std::fill(row.begin(), row.end(), 0.0f);
            for (std::uint64_t p = 0; p < k; ++p) {
                const float x = pa[i * k + p];
                const float* bp = pb.data() + p * n;
                for (std::uint64_t j = 0; j < n; ++j)
                    row[j] += x * bp[j];
            }
            for (std::uint64_t j = 0; j < n; ++j) {
                float* out = static_cast<float*>(d) + od + std::int64_t(i + j * ld.ld);
                const float old = be != 0 ? static_cast<const float*>(c)[oc + std::int64_t(i + j * lc.ld)] : 0.0f;
                *out = be != 0 ? al * row[j] + be * old : al * row[j];
            }
        }
    }
    // A product that wrote past its output's buffer (a leading dimension or a stride too large) into the guard gap
    // after it: a sticky fault, reported by the next launch check or synchronisation as a GPU's would be.
    tl::gpu::emulation::check_gaps("cublasLtMatmul");
    return CUBLAS_STATUS_SUCCESS;
}
