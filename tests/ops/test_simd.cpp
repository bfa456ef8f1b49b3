// The kernels that run on simd.hpp (fast_exp, parallel_ranges with an AVX2 copy): SwiGLU and the head's
// cross-entropy in f32, with the AVX2 copy and with the baseline copy, against the same ops in f64 (std::exp),
// over sizes that span several parallel blocks and a partial one, and gate values far into exp's tails.
#include "../support/random.hpp"

#include <tinylm/backend/reference.hpp>
#include <tinylm/core/arena.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/core/simd.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>

using namespace tl;
using namespace tl::test;

namespace {
// Runs f with the AVX2 copies on and off (off only matters where the CPU has AVX2 and the build is baseline).
template <class F>
void for_both_copies(F&& f) {
    for (bool clones : {true, false}) {
        detail::allow_avx2_clones = clones;
        f(clones ? "avx2 copy (where available)" : "baseline copy");
    }
    detail::allow_avx2_clones = true;
}
} // namespace

BOOST_AUTO_TEST_SUITE(simd)

BOOST_AUTO_TEST_CASE(parallel_ranges_covers_every_index_once) {
    for (index_t n : {index_t(0), index_t(1), index_t(16383), index_t(16384), index_t(50001)}) {
        std::vector<int> hits(std::size_t(n), 0);
        detail::parallel_ranges(n, 16384, [&](index_t begin, index_t end) {
            for (index_t i = begin; i < end; ++i)
                ++hits[std::size_t(i)];
        });
        BOOST_TEST(std::count(hits.begin(), hits.end(), 1) == n, "n = " << n);
    }
}

BOOST_AUTO_TEST_CASE(swiglu_f32_matches_f64) {
    const index_t rows = 7, cols = 5003; // 35,021 elements: two full blocks and a partial one
    auto g = random_tensor<double>({rows, cols}, 31, 6.0), u = random_tensor<double>({rows, cols}, 32);
    auto dh = random_tensor<double>({rows, cols}, 33);
    g.data[0] = -95.0; // exp(95) is beyond float: silu must come out ~0, not NaN
    g.data[1] = 95.0;
    g.data[2] = 0.0;
    owned<double> h(g.shape), dg(g.shape), du(g.shape);
    swiglu_forward<double>(h, g, u);
    swiglu_backward<double>(dg, du, dh, g, u);
    const auto gf = cast<float>(g), uf = cast<float>(u), dhf = cast<float>(dh);
    for_both_copies([&](const char* copy) {
        owned<float> hf(g.shape), dgf(g.shape), duf(g.shape);
        swiglu_forward<float>(hf, gf, uf);
        swiglu_backward<float>(dgf, duf, dhf, gf, uf);
        BOOST_TEST(rel_error(hf.data, h.data) < 1e-6, copy);
        BOOST_TEST(rel_error(dgf.data, dg.data) < 1e-6, copy);
        BOOST_TEST(rel_error(duf.data, du.data) < 1e-6, copy);
        BOOST_TEST((std::isfinite(hf.data[0]) && std::abs(hf.data[0]) < 1e-30f), copy << ": " << hf.data[0]);
        BOOST_TEST(std::abs(hf.data[1] - float(95.0 * u.data[1])) <= 1e-5f * std::abs(hf.data[1]), copy);
    });
}

BOOST_AUTO_TEST_CASE(head_cross_entropy_f32_matches_f64) {
    const index_t N = 37, d = 16, V = 300, chunk = 128; // rows over three blocks; a partial vocabulary chunk
    auto h = random_tensor<double>({N, d}, 41, 2.0), w = random_tensor<double>({V, d}, 42);
    owned<token_t> targets({N});
    counter_rng rng(43);
    for (auto& t : targets.data)
        t = token_t(rng.below(V));
    targets.data[5] = ignore_index;
    arena a(1 << 22);
    const auto ws = cross_entropy_workspace<double>::allocate(a, N, chunk);
    owned<double> lse({N}), dh({N, d}), dw({V, d});
    const double loss = head_cross_entropy_forward<reference_cpu, double>(lse, ws, h, w, targets).loss;
    head_cross_entropy_backward<reference_cpu, double>(dh, dw, ws, h, w, targets, lse);
    const auto hf = cast<float>(h), wf = cast<float>(w);
    for_both_copies([&](const char* copy) {
        const auto wsf = cross_entropy_workspace<float>::allocate(a, N, chunk);
        owned<float> lsef({N}), dhf({N, d}), dwf({V, d});
        const double lossf = head_cross_entropy_forward<reference_cpu, float>(lsef, wsf, hf, wf, targets).loss;
        head_cross_entropy_backward<reference_cpu, float>(dhf, dwf, wsf, hf, wf, targets, lsef);
        BOOST_TEST(std::abs(lossf - loss) / loss < 1e-6, copy << ": " << lossf << " vs " << loss);
        BOOST_TEST(rel_error(lsef.data, lse.data) < 1e-6, copy);
        BOOST_TEST(rel_error(dhf.data, dh.data) < 1e-5, copy);
        BOOST_TEST(rel_error(dwf.data, dw.data) < 1e-5, copy);
    });
}

BOOST_AUTO_TEST_SUITE_END()
