// The host emulation's guard gaps (src/cuda/emulation/runtime.cpp, tinylm_cuda_emulation.hpp's guard_gap): a
// device_arena's planned buffers are each followed by a gap (arena_plan.hpp); a kernel, a cuBLASLt product, a copy
// or a memset that reaches past its buffer into the gap is a sticky fault, cudaErrorIllegalAddress, whose message
// names the call and the buffer. Linked with tinylm_cuda_emulated only (label `emulated`, in the default run, well
// under a second): on a GPU nothing checks the gaps. Each case makes its bad access with an existing entry point
// given a length one too long, then forgets the fault (emulation::forget_fault, as a new process would start clean).
#include "../../src/cuda/emulation/include/tinylm_cuda_emulation.hpp"

#include <tinylm/core/dtype.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/device.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

using namespace tl;

namespace {

// Under AddressSanitizer the gaps are poisoned too, so a kernel's access past its buffer is reported (and the
// process ends) before the canary is checked: the cases of kernels and products are left out there. Copies and memsets
// are checked against the gaps before they touch them, so they run under it too.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool under_asan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool under_asan = true;
#else
constexpr bool under_asan = false;
#endif
#else
constexpr bool under_asan = false;
#endif

// Runs `bad`, which must throw tl::error naming every one of `names`; then the fault is forgotten.
template <class F>
void expect_fault(F&& bad, const std::vector<std::string>& names) {
    bool thrown = false;
    try {
        bad();
    } catch (const tl::error& e) {
        thrown = true;
        const std::string what = e.what();
        BOOST_TEST_MESSAGE(what);
        BOOST_TEST(what.find("illegal memory access") != std::string::npos, what);
        for (const std::string& name : names)
            BOOST_TEST(what.find(name) != std::string::npos, "'" << name << "' in: " << what);
    }
    BOOST_TEST(thrown);
    gpu::emulation::forget_fault();
}

// Buffers of n floats, "first" and "second", a bf16 one, "halves", and "source", n + 1 floats 1, 2, ..., n + 1.
struct two_buffers {
    static constexpr long long n = 100;
    gpu::arena_plan plan;
    std::size_t first = plan.add_array<float>("first", n), second = plan.add_array<float>("second", n);
    std::size_t halves = plan.add_array<std::uint16_t>("halves", n), source = plan.add_array<float>("source", n + 1);
    gpu::device_arena arena{plan};
    two_buffers() {
        std::vector<float> values(n + 1);
        for (long long i = 0; i <= n; ++i)
            values[std::size_t(i)] = float(i + 1);
        gpu::copy_to_device(arena.at<float>(source), values.data(), sizeof(float) * (n + 1));
        gpu::copy_to_device(arena.at<float>(first), values.data(), sizeof(float) * n);
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(cuda_arena_guard)

BOOST_AUTO_TEST_CASE(a_kernel_writing_one_element_past_its_buffer_is_a_fault_naming_it,
                     *boost::unit_test::enable_if<!under_asan>()) {
    two_buffers b;
    // to_bf16 writes the n elements its caller asks for: one more than "halves" holds
    expect_fault([&] { gpu::to_bf16(b.arena.at<std::uint16_t>(b.halves), b.arena.at<float>(b.source), b.n + 1); },
                 {"to_bf16", "'halves'"});
    // scale_elements reads and writes x[n]: the last element of "first" is fine, one more is not
    expect_fault([&] { gpu::scale_elements(b.arena.at<float>(b.first), 2.0f, b.n + 1); }, {"scale", "'first'"});
    // the right lengths run, and the results are there
    gpu::to_bf16(b.arena.at<std::uint16_t>(b.halves), b.arena.at<float>(b.source), b.n);
    gpu::synchronize();
    std::vector<std::uint16_t> got(std::size_t(b.n));
    gpu::copy_to_host(got.data(), b.arena.at<std::uint16_t>(b.halves), got.size() * sizeof(std::uint16_t));
    BOOST_TEST(got.back() == bf16(float(b.n)).bits);
}

BOOST_AUTO_TEST_CASE(a_fault_stays_until_forgotten, *boost::unit_test::enable_if<!under_asan>()) {
    two_buffers b;
    BOOST_CHECK_THROW(gpu::scale_elements(b.arena.at<float>(b.second), 2.0f, b.n + 1), tl::error);
    // sticky, as a GPU's: the next call that is fine by itself fails with it
    expect_fault([&] { gpu::synchronize(); }, {"scale", "'second'"});
    BOOST_CHECK_NO_THROW(gpu::synchronize());
}

BOOST_AUTO_TEST_CASE(copies_and_memsets_past_a_buffer_are_faults_naming_it) {
    two_buffers b;
    const std::vector<float> host(std::size_t(b.n) + 1, 3.0f);
    expect_fault([&] { gpu::copy_to_device(b.arena.at<float>(b.second), host.data(), host.size() * sizeof(float)); },
                 {"cudaMemcpy", "writing", "'second'"});
    // a read past a buffer too: a copy's source range is checked, not only the canary
    std::vector<float> back(host.size());
    expect_fault([&] { gpu::copy_to_host(back.data(), b.arena.at<float>(b.first), back.size() * sizeof(float)); },
                 {"cudaMemcpy", "reading", "'first'"});
    expect_fault([&] { gpu::fill_zero(b.arena.at<float>(b.first), sizeof(float) * b.n + 1); },
                 {"cudaMemsetAsync", "'first'"});
    // a refused copy wrote nothing: "second" still holds cudaMalloc's NaN bytes
    gpu::copy_to_host(back.data(), b.arena.at<float>(b.second), sizeof(float) * b.n);
    BOOST_TEST(std::isnan(back.front()));
    // exactly the buffer: fine
    gpu::fill_zero(b.arena.at<float>(b.first), sizeof(float) * b.n);
    gpu::copy_to_host(back.data(), b.arena.at<float>(b.first), sizeof(float) * b.n);
    BOOST_TEST(back.front() == 0.0f);
    BOOST_TEST(back[std::size_t(b.n) - 1] == 0.0f);
}

BOOST_AUTO_TEST_CASE(a_product_writing_past_its_output_is_a_fault_naming_it,
                     *boost::unit_test::enable_if<!under_asan>()) {
    // c (m, n) = a (m, k) b (k, n), with c's buffer one row short: cublasLtMatmul writes its last row into the gap
    const long long m = 5, n = 30, k = 3;
    gpu::arena_plan plan;
    const std::size_t a = plan.add_array<float>("a", m * k), bm = plan.add_array<float>("b", k * n);
    const std::size_t c = plan.add_array<float>("short c", (m - 1) * n);
    const std::size_t workspace = plan.add("workspace", gpu::blas_workspace_bytes);
    gpu::device_arena arena(plan);
    const std::vector<float> ones(std::size_t(k * n), 1.0f);
    gpu::copy_to_device(arena.at<float>(a), ones.data(), sizeof(float) * std::size_t(m * k));
    gpu::copy_to_device(arena.at<float>(bm), ones.data(), sizeof(float) * std::size_t(k * n));
    gpu::blas lt(arena.at<std::byte>(workspace), gpu::blas_workspace_bytes);
    gpu::matmul_args g;
    g.m = m - 1, g.n = n, g.k = k, g.a = arena.at<float>(a), g.lda = k, g.b = arena.at<float>(bm), g.ldb = n;
    g.c = arena.at<float>(c), g.ldc = n;
    lt.matmul(g); // fits
    BOOST_CHECK_NO_THROW(gpu::synchronize());
    g.m = m;
    // as on a GPU, the product's fault shows at the next synchronisation (or launch check)
    expect_fault(
        [&] {
            lt.matmul(g);
            gpu::synchronize();
        },
        {"cublasLtMatmul", "'short c'"});
}

BOOST_AUTO_TEST_CASE(a_freed_arena_takes_its_gaps_with_it) {
    // Arenas of the same size, one after the other (the allocator often hands back the same address): the second's
    // single buffer covers where the first's gaps were, and is written whole by a memset and a kernel without a fault.
    std::size_t total = 0;
    for (int round = 0; round < 3; ++round) {
        {
            two_buffers b;
            total = b.plan.bytes();
        }
        gpu::arena_plan whole;
        const std::size_t at = whole.add("whole", total - gpu::guard_bytes);
        BOOST_TEST_REQUIRE(whole.bytes() == total);
        gpu::device_arena arena(whole);
        BOOST_CHECK_NO_THROW(gpu::fill_zero(arena.at<std::byte>(at), total - gpu::guard_bytes));
        BOOST_CHECK_NO_THROW(
            gpu::scale_elements(arena.at<float>(at), 2.0f, (long long)((total - gpu::guard_bytes) / sizeof(float))));
        BOOST_CHECK_NO_THROW(gpu::synchronize());
    }
}

BOOST_AUTO_TEST_SUITE_END()
