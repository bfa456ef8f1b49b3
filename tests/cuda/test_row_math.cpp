// The arithmetic of the CUDA kernels (tinylm/cuda/row_math.hpp), run on the CPU: RMSNorm forward and backward
// against tinylm's op in f64, the fused softmax cross-entropy against f64 (and its online log-sum-exp in any
// split), and AdamW bit for bit against tl::adamw. The same functions run in src/cuda; test_cuda_kernels then
// compares the GPU with these CPU drivers.
#include "../support/random.hpp"

#include <tinylm/cuda/row_math.hpp>
#include <tinylm/ops/rmsnorm.hpp>
#include <tinylm/optim/adamw.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <vector>

using namespace tl;
using tl::test::random_tensor;

namespace {

std::vector<double> to_f64(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// max |a - b| / max |b|: the error relative to the tensor's scale (a sum that cancels to near zero has an
// f32 error of the size of its terms, not of its result).
double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::abs(double(a[i]) - b[i]));
        scale = std::max(scale, std::abs(b[i]));
    }
    return err / scale;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cuda_row_math)

BOOST_AUTO_TEST_CASE(rmsnorm_forward_and_backward_match_the_op_in_f64) {
    const index_t n = 7, d = 300; // d not a multiple of the kernels' 256 threads
    const float eps = 1e-5f;
    const auto x = random_tensor<float>({n, d}, 1), w = random_tensor<float>({d}, 2, 0.5, 1.0);
    const auto dy = random_tensor<float>({n, d}, 3);
    std::vector<float> y(std::size_t(n * d)), rstd(static_cast<std::size_t>(n)), dx(std::size_t(n * d)),
        dw(static_cast<std::size_t>(d), 0.25f);
    gpu::rmsnorm_rows(y.data(), rstd.data(), x.data.data(), w.data.data(), n, int(d), eps);
    gpu::rmsnorm_backward_rows(dx.data(), dw.data(), dy.data.data(), x.data.data(), w.data.data(), rstd.data(), n,
                               int(d));

    std::vector<double> x64 = to_f64(x.data), w64 = to_f64(w.data), dy64 = to_f64(dy.data);
    std::vector<double> y64(x64.size()), rstd64(static_cast<std::size_t>(n)), dx64(x64.size()),
        dw64(static_cast<std::size_t>(d), 0.25);
    rmsnorm_forward<double>({y64.data(), {n, d}}, {rstd64.data(), {n}}, {x64.data(), {n, d}}, {w64.data(), {d}}, eps);
    rmsnorm_backward<double>({dx64.data(), {n, d}}, {dw64.data(), {d}}, {dy64.data(), {n, d}}, {x64.data(), {n, d}},
                             {w64.data(), {d}}, {rstd64.data(), {n}});
    BOOST_TEST(max_rel(y, y64) < 1e-5);
    BOOST_TEST(max_rel(rstd, rstd64) < 1e-5);
    BOOST_TEST(max_rel(dx, dx64) < 1e-5);
    BOOST_TEST(max_rel(dw, dw64) < 1e-5);
}

BOOST_AUTO_TEST_CASE(online_log_sum_exp_is_the_same_in_any_split) {
    const auto row = random_tensor<float>({1000}, 4, 3.0);
    double m = -INFINITY;
    for (float v : row.data)
        m = std::max(m, double(v));
    double s = 0;
    for (float v : row.data)
        s += std::exp(double(v) - m);
    const double lse64 = m + std::log(s);
    for (int parts : {1, 2, 7, 256}) { // as the kernel's threads: element j goes to part j % parts, then a tree
        std::vector<gpu::softmax_state> st(static_cast<std::size_t>(parts));
        for (std::size_t j = 0; j < row.data.size(); ++j)
            st[j % std::size_t(parts)] = gpu::softmax_push(st[j % std::size_t(parts)], row.data[j]);
        gpu::softmax_state all;
        for (const auto& p : st)
            all = gpu::softmax_merge(all, p);
        BOOST_TEST(std::abs(gpu::softmax_lse(all) - lse64) < 1e-5 * std::abs(lse64), "parts " << parts);
    }
    // a part that saw no element (fewer elements than threads) merges as nothing
    gpu::softmax_state one = gpu::softmax_push({}, 2.0f);
    BOOST_TEST(gpu::softmax_lse(gpu::softmax_merge(one, {})) == 2.0f);
    BOOST_TEST(gpu::softmax_lse(gpu::softmax_merge({}, one)) == 2.0f);
}

BOOST_AUTO_TEST_CASE(softmax_cross_entropy_forward_and_backward_match_f64) {
    const index_t n = 5, v = 777;
    const auto logits = random_tensor<float>({n, v}, 5, 4.0);
    const std::vector<std::int32_t> targets = {3, -100, 776, 0, 400};
    std::vector<float> loss(static_cast<std::size_t>(n)), lse(static_cast<std::size_t>(n)), grad = logits.data;
    const long long count = gpu::xent_rows(loss.data(), lse.data(), logits.data.data(), targets.data(), n, v);
    BOOST_TEST(count == 4);
    const float scale = 1.0f / float(count); // the mean over counted rows
    gpu::xent_backward_rows(grad.data(), lse.data(), targets.data(), n, v, scale);

    std::vector<double> loss64(static_cast<std::size_t>(n)), grad64(std::size_t(n * v));
    for (index_t r = 0; r < n; ++r) {
        const float* row = logits.data.data() + r * v;
        double m = -INFINITY, s = 0;
        for (index_t j = 0; j < v; ++j)
            m = std::max(m, double(row[j]));
        for (index_t j = 0; j < v; ++j)
            s += std::exp(double(row[j]) - m);
        const double l = m + std::log(s);
        const bool counted = targets[std::size_t(r)] >= 0;
        loss64[std::size_t(r)] = counted ? l - row[targets[std::size_t(r)]] : 0.0;
        for (index_t j = 0; j < v; ++j)
            grad64[std::size_t(r * v + j)] =
                counted ? (std::exp(double(row[j]) - l) - (j == targets[std::size_t(r)])) / double(count) : 0.0;
    }
    BOOST_TEST(max_rel(loss, loss64) < 1e-5);
    BOOST_TEST(loss[1] == 0.0f);
    double worst = 0; // gradients: absolute against the largest (1 / count), as most are tiny probabilities
    for (std::size_t i = 0; i < grad.size(); ++i)
        worst = std::max(worst, std::abs(double(grad[i]) - grad64[i]));
    BOOST_TEST(worst < 1e-6);
    for (index_t j = 0; j < v; ++j) // the ignored row gets no gradient
        BOOST_TEST_REQUIRE(grad[std::size_t(v + j)] == 0.0f);
}

// Three steps of gpu::adamw_element against tl::adamw on the same parameters: the same bits (the kernel compiles
// the same double expression without contraction, so the GPU gives these bits too).
BOOST_AUTO_TEST_CASE(adamw_element_is_tl_adamw_bit_for_bit) {
    const index_t n = 1000;
    auto p = random_tensor<float>({n}, 6, 0.1);
    auto g = random_tensor<float>({n}, 7, 0.01);
    std::vector<float> p_gpu = p.data, m(static_cast<std::size_t>(n)), v(static_cast<std::size_t>(n));
    std::vector<parameter_entry> entries;
    entries.push_back({"w", p.view(), g.view(), param_kind::weight});
    const adamw_options o{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    adamw opt(entries, o);
    for (long long t = 1; t <= 3; ++t) {
        const double lr = 1e-3 * double(t);
        opt.step(lr);
        gpu::adamw_elements(p_gpu.data(), g.data.data(), m.data(), v.data(), n,
                            gpu::adamw_step_coeffs(lr, o.beta1, o.beta2, o.eps, o.weight_decay, t, true));
        BOOST_TEST_REQUIRE(std::memcmp(p_gpu.data(), p.data.data(), sizeof(float) * std::size_t(n)) == 0, "step " << t);
        for (std::size_t i = 0; i < g.data.size(); ++i) // a new gradient each step
            g.data[i] = -0.5f * g.data[i] + 1e-3f;
    }
}

BOOST_AUTO_TEST_SUITE_END()
