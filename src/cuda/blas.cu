// src/cuda/blas.cu: row-major products through cuBLASLt (tinylm/cuda/blas.hpp).
//
// cuBLASLt is column-major. A row-major (r, c) matrix with row stride ld is, read column-major, its transpose
// (c, r) with leading dimension ld, so c = op(a) op(b) is computed as c^T = op(b)^T op(a)^T: the operands swap
// places, each keeps its own transposition flag, and m and n swap.
#include "check.cuh"

#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/plan_cache.hpp>

#include <cublasLt.h>

#include <compare>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

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
    lt_descriptors() = default;
    lt_descriptors(const lt_descriptors&) = delete;
    lt_descriptors& operator=(const lt_descriptors&) = delete;
    ~lt_descriptors() {
        if (preference) cublasLtMatmulPreferenceDestroy(preference);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

// The largest power of two up to 256 that divides the address of every matrix of the operand (cuBLASLt assumes
// 256-byte aligned operands unless told otherwise, and a per-head slice of q or a bf16 weight in the flat block
// is often less aligned than that).
std::uint32_t alignment_of(const void* p, long long batch, long long stride, std::size_t element_bytes) {
    std::uintptr_t bits = reinterpret_cast<std::uintptr_t>(p);
    if (batch > 1) bits |= std::uintptr_t(stride) * element_bytes;
    std::uint32_t a = 256;
    while (a > 1 && bits % a != 0)
        a /= 2;
    return a;
}

void set_batch(cublasLtMatrixLayout_t layout, long long batch, long long stride, const char* what) {
    if (batch == 1) return;
    const std::int32_t count = std::int32_t(batch);
    const std::int64_t offset = stride;
    blas_check(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
               what);
    blas_check(
        cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset, sizeof offset),
        what);
}

} // namespace

// One planned product: its descriptors and cuBLASLt's algorithm, by everything the choice depends on; at most
// blas_plan_capacity of them, the least recently used forgotten first (plan_cache.hpp: the experts' row counts change
// with the routing, so their products' shapes would otherwise grow the cache without bound).
struct blas::plans {
    struct key {
        bool trans_a, trans_b;
        long long m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
        int input;
        std::uint32_t align_a, align_b, align_c;
        auto operator<=>(const key&) const = default;
    };
    struct plan {
        lt_descriptors d;
        cublasLtMatmulAlgo_t algo{};
    };
    lru_cache<key, plan> by_key{blas_plan_capacity};
};

blas::blas(void* workspace, std::size_t workspace_bytes)
    : workspace_(workspace), workspace_bytes_(workspace_bytes), plans_(new plans) {
    cublasLtHandle_t h = nullptr;
    blas_check(cublasLtCreate(&h), "cublasLtCreate");
    handle_ = h;
}

blas::~blas() {
    delete plans_; // the descriptors before the handle
    if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

std::size_t blas::cached_plans() const { return plans_->by_key.size(); }

void blas::matmul(const matmul_args& g, void* stream) const {
    if (g.m == 0 || g.n == 0 || g.batch == 0) return;
    check(g.k > 0 && g.a && g.b && g.c && g.batch > 0 && g.batch <= 0x7fffffffLL,
          "gpu::blas::matmul: k must be positive, a, b, c given and batch in 1 .. 2^31 - 1");
    const bool bf16 = g.input == matmul_input::bf16;
    const std::size_t in_bytes = bf16 ? 2 : 4;
    const plans::key key{g.trans_a,
                         g.trans_b,
                         g.m,
                         g.n,
                         g.k,
                         g.lda,
                         g.ldb,
                         g.ldc,
                         g.batch,
                         g.batch > 1 ? g.stride_a : 0,
                         g.batch > 1 ? g.stride_b : 0,
                         g.batch > 1 ? g.stride_c : 0,
                         int(g.input),
                         alignment_of(g.a, g.batch, g.stride_a, in_bytes),
                         alignment_of(g.b, g.batch, g.stride_b, in_bytes),
                         alignment_of(g.c, g.batch, g.stride_c, sizeof(float))};
    const auto lt = static_cast<cublasLtHandle_t>(handle_);
    const plans::plan& plan = plans_->by_key.get(key, [&] {
        auto p = std::make_unique<plans::plan>();
        lt_descriptors& d = p->d;
        const cudaDataType_t in = bf16 ? CUDA_R_16BF : CUDA_R_32F;
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
        set_batch(d.a, g.batch, g.stride_b, "batch of b");
        set_batch(d.b, g.batch, g.stride_a, "batch of a");
        set_batch(d.c, g.batch, g.stride_c, "batch of c");
        blas_check(cublasLtMatmulPreferenceCreate(&d.preference), "cublasLtMatmulPreferenceCreate");
        const std::size_t ws = workspace_bytes_;
        blas_check(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                        sizeof ws),
                   "set the workspace size");
        // cuBLASLt's "A" is our b, its "B" our a; C and D are both c.
        const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
            {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
        for (const auto& [attribute, bytes] : alignments)
            blas_check(cublasLtMatmulPreferenceSetAttribute(d.preference, attribute, &bytes, sizeof bytes),
                       "set an operand's alignment");
        cublasLtMatmulHeuristicResult_t heuristic{};
        int found = 0;
        blas_check(cublasLtMatmulAlgoGetHeuristic(lt, d.op, d.a, d.b, d.c, d.c, d.preference, 1, &heuristic, &found),
                   "cublasLtMatmulAlgoGetHeuristic");
        check(found > 0, [&] {
            std::string m = "gpu::blas::matmul: cuBLASLt has no algorithm for m ";
            m += std::to_string(g.m);
            m += ", n ";
            m += std::to_string(g.n);
            m += ", k ";
            m += std::to_string(g.k);
            m += ", batch ";
            m += std::to_string(g.batch);
            m += bf16 ? " (bf16)" : " (f32)";
            return m;
        });
        p->algo = heuristic.algo;
        return p;
    });
    const lt_descriptors& d = plan.d;
    blas_check(cublasLtMatmul(lt, d.op, &g.alpha, g.b, d.a, g.a, d.b, &g.beta, g.c, d.c, g.c, d.c, &plan.algo,
                              workspace_, workspace_bytes_, detail::as_stream(stream)),
               "cublasLtMatmul");
}

} // namespace tl::gpu
