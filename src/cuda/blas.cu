// src/cuda/blas.cu: row-major products through cuBLASLt (tinylm/cuda/blas.hpp).
//
// cuBLASLt is column-major. A row-major (r, c) matrix with row stride ld is, read column-major, its transpose
// (c, r) with leading dimension ld, so c = op(a) op(b) is computed as c^T = op(b)^T op(a)^T: the operands swap
// places, each keeps its own transposition flag, and m and n swap.
#include "check.cuh"

#include <tinylm/cuda/blas.hpp>

#include <cublasLt.h>

#include <string>

namespace tl::gpu {
namespace {

void blas_check(cublasStatus_t s, const char* what) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    std::string m = "cublasLt: ";
    m += what;
    m += " failed with status ";
    m += std::to_string(int(s));
    fail(m);
}

// Descriptors freed on every path (a failed call throws).
struct lt_descriptors {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulPreference_t preference = nullptr;
    ~lt_descriptors() {
        if (preference) cublasLtMatmulPreferenceDestroy(preference);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

} // namespace

blas::blas(void* workspace, std::size_t workspace_bytes) : workspace_(workspace), workspace_bytes_(workspace_bytes) {
    cublasLtHandle_t h = nullptr;
    blas_check(cublasLtCreate(&h), "cublasLtCreate");
    handle_ = h;
}

blas::~blas() {
    if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

void blas::matmul(const matmul_args& g, void* stream) const {
    if (g.m == 0 || g.n == 0) return;
    check(g.k > 0 && g.a && g.b && g.c, "gpu::blas::matmul: k must be positive and a, b, c given");
    const cudaDataType_t in = g.input == matmul_input::bf16 ? CUDA_R_16BF : CUDA_R_32F;
    lt_descriptors d;
    blas_check(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    // Column-major: first operand b (op flag trans_b), second a (trans_a); the result c^T is (n, m).
    const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    blas_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first),
               "set TRANSA");
    blas_check(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof op_second),
               "set TRANSB");
    // Stored shapes, column-major: b^T is (n, k) untransposed or (k, n) transposed; a^T is (k, m) or (m, k).
    const long long b_rows = g.trans_b ? g.k : g.n, b_cols = g.trans_b ? g.n : g.k;
    const long long a_rows = g.trans_a ? g.m : g.k, a_cols = g.trans_a ? g.k : g.m;
    blas_check(cublasLtMatrixLayoutCreate(&d.a, in, std::uint64_t(b_rows), std::uint64_t(b_cols), g.ldb),
               "layout of b");
    blas_check(cublasLtMatrixLayoutCreate(&d.b, in, std::uint64_t(a_rows), std::uint64_t(a_cols), g.lda),
               "layout of a");
    blas_check(cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32F, std::uint64_t(g.n), std::uint64_t(g.m), g.ldc),
               "layout of c");
    blas_check(cublasLtMatmulPreferenceCreate(&d.preference), "cublasLtMatmulPreferenceCreate");
    const std::size_t ws = workspace_bytes_;
    blas_check(
        cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
        "set the workspace size");
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    const auto lt = static_cast<cublasLtHandle_t>(handle_);
    blas_check(cublasLtMatmulAlgoGetHeuristic(lt, d.op, d.a, d.b, d.c, d.c, d.preference, 1, &heuristic, &found),
               "cublasLtMatmulAlgoGetHeuristic");
    check(found > 0, [&] {
        std::string m = "gpu::blas::matmul: cuBLASLt has no algorithm for m ";
        m += std::to_string(g.m);
        m += ", n ";
        m += std::to_string(g.n);
        m += ", k ";
        m += std::to_string(g.k);
        m += g.input == matmul_input::bf16 ? " (bf16)" : " (f32)";
        return m;
    });
    blas_check(cublasLtMatmul(lt, d.op, &g.alpha, g.b, d.a, g.a, d.b, &g.beta, g.c, d.c, g.c, d.c, &heuristic.algo,
                              workspace_, workspace_bytes_, detail::as_stream(stream)),
               "cublasLtMatmul");
}

} // namespace tl::gpu
