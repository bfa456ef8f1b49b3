// The kernels of tinylm::cuda on the GPU against their CPU drivers (tinylm/cuda/row_math.hpp), which
// test_row_math checks against tinylm's ops and f64. Every case needs a CUDA device and is skipped without one
// (the executable then exits with 77, which ctest reports as skipped). Label `cuda`; scripts/gpu-check.sh runs it.
#include "../support/data.hpp"
#include "../support/random.hpp"

#include <tinylm/cuda/device.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

using namespace tl;
using tl::test::random_tensor;

namespace {

// (A member, so that GCC 12 does not warn that boost::function copies an empty functor "uninitialized".)
struct device_precondition {
    const char* needs = "a CUDA device";
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id id) const {
        const bool ok = gpu::device_count() > 0;
        boost::test_tools::assertion_result r(ok);
        if (!ok) {
            ++tl_test::data_skips();
            r.message() << "needs " << needs;
            std::printf("SKIPPED %s: no CUDA device (cudaGetDeviceCount)\n",
                        boost::unit_test::framework::get(id, boost::unit_test::TUT_ANY).full_name().c_str());
            std::fflush(stdout);
        }
        return r;
    }
};
boost::unit_test::decorator::collector_t& needs_device() {
    return *boost::unit_test::precondition(device_precondition{});
}

// Host vectors in and out of planned buffers of one device arena.
struct device_buffers {
    gpu::arena_plan plan;
    std::vector<std::size_t> offsets;
    std::vector<std::size_t> sizes;
    template <class T>
    int add(std::size_t count) {
        offsets.push_back(plan.add_array<T>("buffer " + std::to_string(offsets.size()), count));
        sizes.push_back(count * sizeof(T));
        return int(offsets.size() - 1);
    }
};

template <class T>
void upload(const gpu::device_arena& a, std::size_t offset, const std::vector<T>& v) {
    gpu::copy_to_device(a.at<T>(offset), v.data(), v.size() * sizeof(T));
}
template <class T>
std::vector<T> download(const gpu::device_arena& a, std::size_t offset, std::size_t count) {
    std::vector<T> v(count);
    gpu::copy_to_host(v.data(), a.at<T>(offset), count * sizeof(T));
    return v;
}

// max |a - b| / max |b| (see test_row_math.cpp)
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
    }
    return err / scale;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cuda_kernels)

BOOST_AUTO_TEST_CASE(rmsnorm_matches_the_cpu, needs_device()) {
    const long long n = 300;
    const int d = 1000; // several strides of 256 threads, not a multiple of it
    const auto x = random_tensor<float>({n, d}, 1), w = random_tensor<float>({d}, 2, 0.5, 1.0);
    const auto dy = random_tensor<float>({n, d}, 3);
    device_buffers b;
    const int bx = b.add<float>(std::size_t(n * d)), bw = b.add<float>(std::size_t(d)),
              by = b.add<float>(x.data.size());
    const int brs = b.add<float>(std::size_t(n)), bdy = b.add<float>(x.data.size()), bdx = b.add<float>(x.data.size());
    const int bdw = b.add<float>(std::size_t(d));
    gpu::device_arena a(b.plan);
    BOOST_TEST(a.bytes() == b.plan.bytes());
    upload(a, b.offsets[bx], x.data);
    upload(a, b.offsets[bw], w.data);
    upload(a, b.offsets[bdy], dy.data);
    upload(a, b.offsets[bdw], std::vector<float>(std::size_t(d), 0.25f));
    gpu::rmsnorm_forward(a.at<float>(b.offsets[by]), a.at<float>(b.offsets[brs]), a.at<float>(b.offsets[bx]),
                         a.at<float>(b.offsets[bw]), n, d, 1e-5f);
    gpu::rmsnorm_backward(a.at<float>(b.offsets[bdx]), a.at<float>(b.offsets[bdw]), a.at<float>(b.offsets[bdy]),
                          a.at<float>(b.offsets[bx]), a.at<float>(b.offsets[bw]), a.at<float>(b.offsets[brs]), n, d);
    gpu::synchronize();

    std::vector<float> y(x.data.size()), rstd(static_cast<std::size_t>(n)), dx(x.data.size()),
        dw(static_cast<std::size_t>(d), 0.25f);
    gpu::rmsnorm_rows(y.data(), rstd.data(), x.data.data(), w.data.data(), n, d, 1e-5f);
    gpu::rmsnorm_backward_rows(dx.data(), dw.data(), dy.data.data(), x.data.data(), w.data.data(), rstd.data(), n, d);
    BOOST_TEST(max_rel(download<float>(a, b.offsets[by], y.size()), y) < 1e-5);
    BOOST_TEST(max_rel(download<float>(a, b.offsets[brs], rstd.size()), rstd) < 1e-5);
    BOOST_TEST(max_rel(download<float>(a, b.offsets[bdx], dx.size()), dx) < 1e-5);
    BOOST_TEST(max_rel(download<float>(a, b.offsets[bdw], dw.size()), dw) < 1e-5);
}

BOOST_AUTO_TEST_CASE(softmax_cross_entropy_matches_the_cpu, needs_device()) {
    const long long n = 64, v = 8000;
    const auto logits = random_tensor<float>({n, v}, 4, 4.0);
    std::vector<std::int32_t> targets(static_cast<std::size_t>(n));
    for (long long r = 0; r < n; ++r)
        targets[std::size_t(r)] = r % 9 == 4 ? -100 : std::int32_t((r * 997) % v);
    device_buffers b;
    const int bl = b.add<float>(logits.data.size()), bt = b.add<std::int32_t>(targets.size());
    const int bloss = b.add<float>(std::size_t(n)), blse = b.add<float>(std::size_t(n));
    gpu::device_arena a(b.plan);
    upload(a, b.offsets[bl], logits.data);
    upload(a, b.offsets[bt], targets);
    gpu::softmax_xent_forward(a.at<float>(b.offsets[bloss]), a.at<float>(b.offsets[blse]), a.at<float>(b.offsets[bl]),
                              a.at<std::int32_t>(b.offsets[bt]), n, v);
    std::vector<float> loss(static_cast<std::size_t>(n)), lse(static_cast<std::size_t>(n)), grad = logits.data;
    const long long count = gpu::xent_rows(loss.data(), lse.data(), logits.data.data(), targets.data(), n, v);
    const float scale = 1.0f / float(count);
    // backward from the GPU's lse, so the comparison isolates the backward kernel
    const std::vector<float> lse_gpu = download<float>(a, b.offsets[blse], lse.size());
    gpu::softmax_xent_backward(a.at<float>(b.offsets[bl]), a.at<float>(b.offsets[blse]),
                               a.at<std::int32_t>(b.offsets[bt]), n, v, scale);
    gpu::synchronize();
    gpu::xent_backward_rows(grad.data(), lse_gpu.data(), targets.data(), n, v, scale);
    BOOST_TEST(max_rel(download<float>(a, b.offsets[bloss], loss.size()), loss) < 1e-5);
    BOOST_TEST(max_rel(lse_gpu, lse) < 1e-5);
    const std::vector<float> g = download<float>(a, b.offsets[bl], grad.size());
    double worst = 0; // device expf differs from the host's by an ulp or two
    for (std::size_t i = 0; i < g.size(); ++i)
        worst = std::max(worst, std::abs(double(g[i]) - double(grad[i])));
    BOOST_TEST(worst < 1e-7);
}

// The same double expression on both sides, compiled without fused multiply-adds: the same bits.
BOOST_AUTO_TEST_CASE(adamw_is_the_cpu_bit_for_bit, needs_device()) {
    const long long n = 100'003;
    auto p = random_tensor<float>({n}, 6, 0.1);
    const auto g = random_tensor<float>({n}, 7, 0.01);
    std::vector<float> m(static_cast<std::size_t>(n)), v(static_cast<std::size_t>(n));
    device_buffers b;
    const int bp = b.add<float>(p.data.size()), bg = b.add<float>(g.data.size()), bm = b.add<float>(m.size()),
              bv = b.add<float>(v.size());
    gpu::device_arena a(b.plan);
    upload(a, b.offsets[bp], p.data);
    upload(a, b.offsets[bg], g.data);
    upload(a, b.offsets[bm], m);
    upload(a, b.offsets[bv], v);
    for (long long t = 1; t <= 3; ++t) {
        const auto c = gpu::adamw_step_coeffs(1e-3, 0.9, 0.95, 1e-8, 0.1, t, true);
        gpu::adamw_step(a.at<float>(b.offsets[bp]), a.at<float>(b.offsets[bg]), a.at<float>(b.offsets[bm]),
                        a.at<float>(b.offsets[bv]), n, c);
        gpu::adamw_elements(p.data.data(), g.data.data(), m.data(), v.data(), n, c);
    }
    gpu::synchronize();
    const std::vector<float> p_gpu = download<float>(a, b.offsets[bp], p.data.size());
    BOOST_TEST(std::memcmp(p_gpu.data(), p.data.data(), p_gpu.size() * sizeof(float)) == 0);
}

BOOST_AUTO_TEST_CASE(errors_name_the_call, needs_device()) {
    gpu::arena_plan plan;
    plan.add("too much", std::size_t(1) << 62);
    BOOST_CHECK_EXCEPTION(gpu::device_arena{plan}, tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("cudaMalloc of the device arena") != std::string::npos;
    });
}

BOOST_AUTO_TEST_SUITE_END()
