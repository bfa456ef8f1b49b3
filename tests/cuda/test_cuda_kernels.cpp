// The kernels of tinylm::cuda on the GPU against their CPU drivers (tinylm/cuda/row_math.hpp), which
// test_row_math checks against tinylm's ops and f64. Every case needs a CUDA device and is skipped without one
// (the executable then exits with 77, which ctest reports as skipped). Label `cuda`; scripts/gpu-check.sh runs it.
#include "../support/cuda_device.hpp"
#include "../support/data.hpp"
#include "../support/device_training.hpp"
#include "../support/random.hpp"
#include "../support/tiny_bert.hpp"

#include <tinylm/backend/reference.hpp>
#include <tinylm/core/dtype.hpp>
#include <tinylm/cuda/attention_fused.hpp>
#include <tinylm/cuda/attention_products.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/cuda/device.hpp>
#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/cuda/encoder_step.hpp>
#include <tinylm/cuda/gpu_ops.hpp>
#if defined(TINYLM_HAS_NCCL) && TINYLM_HAS_NCCL
#include <tinylm/cuda/nccl_communicator.hpp>
#endif
#include <tinylm/cuda/moe_kernels.hpp>
#include <tinylm/cuda/moe_row.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/ranking_step.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/ops/nf4.hpp>
#include <tinylm/ops/rope.hpp>
#include <tinylm/train/trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace tl;
using tl::test::random_tensor;

namespace {

using tl_test::needs_device;

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

// Every input uploaded to its own planned buffer: device pointers by index, results downloaded by index.
// An input's values are copied when it is added (a test may pass a temporary), and uploaded by allocate().
struct device_run {
    device_buffers b;
    std::vector<std::vector<std::byte>> host; // empty for an output
    std::unique_ptr<gpu::device_arena> arena;
    template <class T>
    int input(const std::vector<T>& v) {
        const auto* bytes = reinterpret_cast<const std::byte*>(v.data());
        host.emplace_back(bytes, bytes + v.size() * sizeof(T));
        return b.add<T>(v.size());
    }
    template <class T>
    int output(std::size_t count) {
        host.emplace_back();
        return b.add<T>(count);
    }
    void allocate() {
        arena = std::make_unique<gpu::device_arena>(b.plan);
        for (std::size_t i = 0; i < host.size(); ++i)
            if (!host[i].empty())
                gpu::copy_to_device(arena->at<std::byte>(b.offsets[i]), host[i].data(), host[i].size());
    }
    template <class T>
    T* at(int i) const {
        return arena->at<T>(b.offsets[std::size_t(i)]);
    }
    template <class T>
    std::vector<T> get(int i) const {
        gpu::synchronize();
        return download<T>(*arena, b.offsets[std::size_t(i)], b.sizes[std::size_t(i)] / sizeof(T));
    }
};

// v rounded to bf16 in place; returns the bits (a product's bf16 operand whose values the CPU then reads).
std::vector<std::uint16_t> round_to_bf16(std::vector<float>& v) {
    std::vector<std::uint16_t> bits(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
        bits[i] = bf16(v[i]).bits, v[i] = float(bf16(v[i]));
    return bits;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The device model with LoRA through tl::trainer (cuda/device_decoder.hpp): dropout on every projection, and QLoRA.
struct trained_lora {
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0.1f, .targets = lora_all};
};
struct trained_qlora {
    static constexpr lora_config value{
        .rank = 2, .alpha = 4, .dropout = 0.05f, .targets = lora_q | lora_v, .quantized_base = true};
};

// The CPU executor, counting the attention entry points a step calls: which path it dispatched (the steps are
// templates over their executor; the GPU executor takes the same branches).
struct counting_cpu_ops : gpu::cpu_ops {
    int fused_forward = 0, fused_backward = 0, others = 0; // others: the rows' and the products' row steps
    template <class... A>
    void attention_fused_forward(A&&... a) {
        ++fused_forward;
        gpu::cpu_ops::attention_fused_forward(std::forward<A>(a)...);
    }
    template <class... A>
    void attention_fused_backward(A&&... a) {
        ++fused_backward;
        gpu::cpu_ops::attention_fused_backward(std::forward<A>(a)...);
    }
    template <class... A>
    void attention_forward(A&&... a) {
        ++others;
        gpu::cpu_ops::attention_forward(std::forward<A>(a)...);
    }
    template <class... A>
    void attention_backward(A&&... a) {
        ++others;
        gpu::cpu_ops::attention_backward(std::forward<A>(a)...);
    }
    template <class... A>
    void attention_softmax(A&&... a) {
        ++others;
        gpu::cpu_ops::attention_softmax(std::forward<A>(a)...);
    }
};

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

BOOST_AUTO_TEST_CASE(residual_rmsnorm_matches_the_cpu, needs_device()) {
    const long long n = 200;
    const int d = 700;
    const auto x = random_tensor<float>({n, d}, 30), a = random_tensor<float>({n, d}, 31);
    const auto w = random_tensor<float>({d}, 32, 0.5, 1.0), dy = random_tensor<float>({n, d}, 33);
    const auto dresid0 = random_tensor<float>({n, d}, 34);
    device_run r;
    const int bx = r.input(x.data), ba = r.input(a.data), bw = r.input(w.data), bdy = r.input(dy.data);
    const int bdr = r.input(dresid0.data), bdw = r.input(std::vector<float>(std::size_t(d), 0.0f));
    const int bres = r.output<float>(x.data.size()), by = r.output<float>(x.data.size()),
              brs = r.output<float>(std::size_t(n));
    r.allocate();
    gpu::residual_rmsnorm_forward(r.at<float>(bres), r.at<float>(by), r.at<float>(brs), r.at<float>(bx),
                                  r.at<float>(ba), r.at<float>(bw), n, d, 1e-6f);
    gpu::residual_rmsnorm_backward(r.at<float>(bdr), r.at<float>(bdw), r.at<float>(bdy), r.at<float>(bres),
                                   r.at<float>(bw), r.at<float>(brs), n, d);
    std::vector<float> resid(x.data.size()), y(x.data.size()), rstd(static_cast<std::size_t>(n));
    std::vector<float> dresid = dresid0.data, dw(static_cast<std::size_t>(d), 0.0f);
    gpu::residual_rmsnorm_rows(resid.data(), y.data(), rstd.data(), x.data.data(), a.data.data(), w.data.data(), n, d,
                               1e-6f);
    gpu::residual_rmsnorm_backward_rows(dresid.data(), dw.data(), dy.data.data(), resid.data(), w.data.data(),
                                        rstd.data(), n, d);
    BOOST_TEST(same_bits(r.get<float>(bres), resid)); // one addition: the same bits
    BOOST_TEST(max_rel(r.get<float>(by), y) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(brs), rstd) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdr), dresid) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdw), dw) < 1e-5);
}

BOOST_AUTO_TEST_CASE(gelu_and_layernorm_match_the_cpu, needs_device()) {
    const long long n = 200;
    const int d = 700;
    const auto x = random_tensor<float>({n, d}, 60, 2.0, 0.5), dy = random_tensor<float>({n, d}, 61);
    const auto w = random_tensor<float>({d}, 62, 0.5, 1.0), b = random_tensor<float>({d}, 63, 0.1);
    device_run r;
    const int bx = r.input(x.data), bdy = r.input(dy.data), bw = r.input(w.data), bb = r.input(b.data);
    const int bdw = r.input(std::vector<float>(std::size_t(d), 0.5f)),
              bdb = r.input(std::vector<float>(std::size_t(d)));
    const int bgy = r.output<float>(x.data.size()), bgdx = r.output<float>(x.data.size());
    const int by = r.output<float>(x.data.size()), bm = r.output<float>(std::size_t(n)),
              bs = r.output<float>(std::size_t(n)), bdx = r.output<float>(x.data.size());
    r.allocate();
    gpu::gelu_forward(r.at<float>(bgy), r.at<float>(bx), n * d);
    gpu::gelu_backward(r.at<float>(bgdx), r.at<float>(bdy), r.at<float>(bx), n * d);
    gpu::layernorm_forward(r.at<float>(by), r.at<float>(bm), r.at<float>(bs), r.at<float>(bx), r.at<float>(bw),
                           r.at<float>(bb), n, d, 1e-5f);
    gpu::layernorm_backward(r.at<float>(bdx), r.at<float>(bdw), r.at<float>(bdb), r.at<float>(bdy), r.at<float>(bx),
                            r.at<float>(bw), r.at<float>(bm), r.at<float>(bs), n, d);
    std::vector<float> gy(x.data.size()), gdx(x.data.size()), y(x.data.size()), mean(static_cast<std::size_t>(n)),
        rstd(static_cast<std::size_t>(n)), dx(x.data.size()), dw(static_cast<std::size_t>(d), 0.5f),
        db(static_cast<std::size_t>(d), 0.0f);
    gpu::gelu_rows(gy.data(), x.data.data(), n * d);
    gpu::gelu_backward_rows(gdx.data(), dy.data.data(), x.data.data(), n * d);
    gpu::layernorm_rows(y.data(), mean.data(), rstd.data(), x.data.data(), w.data.data(), b.data.data(), n, d, 1e-5f);
    gpu::layernorm_backward_rows(dx.data(), dw.data(), db.data(), dy.data.data(), x.data.data(), w.data.data(),
                                 mean.data(), rstd.data(), n, d);
    BOOST_TEST(max_rel(r.get<float>(bgy), gy) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bgdx), gdx) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(by), y) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bm), mean) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bs), rstd) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdx), dx) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdw), dw) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdb), db) < 1e-5);
}

// The post-norm block's fused residual + LayerNorm and BERT's embedding sum against their CPU drivers: the sum and
// the gather bit for bit, the norm within f32 rounding (a tree in a block against a loop).
BOOST_AUTO_TEST_CASE(residual_layernorm_and_embedding_sum_match_the_cpu, needs_device()) {
    const long long n = 200;
    const int d = 700;
    const auto x = random_tensor<float>({n, d}, 64), a = random_tensor<float>({n, d}, 65);
    const auto w = random_tensor<float>({d}, 66, 0.5, 1.0), b = random_tensor<float>({d}, 67, 0.1);
    const long long vocab = 50, positions = 40, types = 2;
    const auto word = random_tensor<float>({vocab, d}, 68), position = random_tensor<float>({positions, d}, 69);
    const auto type = random_tensor<float>({types, d}, 70);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n)), pos(ids.size()), typ(ids.size());
    for (long long i = 0; i < n; ++i) {
        ids[std::size_t(i)] = std::int32_t((i * 13) % vocab);
        pos[std::size_t(i)] = std::int32_t(i % positions);
        typ[std::size_t(i)] = std::int32_t(i % 3 == 1);
    }
    device_run r;
    const int bx = r.input(x.data), ba = r.input(a.data), bw = r.input(w.data), bb = r.input(b.data);
    const int bword = r.input(word.data), bpos = r.input(position.data), btype = r.input(type.data);
    const int bids = r.input(ids), bp = r.input(pos), bt = r.input(typ);
    const int bresid = r.output<float>(x.data.size()), by = r.output<float>(x.data.size()),
              bm = r.output<float>(std::size_t(n)), bs = r.output<float>(std::size_t(n)),
              bsum = r.output<float>(x.data.size());
    r.allocate();
    gpu::residual_layernorm_forward(r.at<float>(bresid), r.at<float>(by), r.at<float>(bm), r.at<float>(bs),
                                    r.at<float>(bx), r.at<float>(ba), r.at<float>(bw), r.at<float>(bb), n, d, 1e-12f);
    gpu::embedding_sum_forward(r.at<float>(bsum), r.at<std::int32_t>(bids), r.at<float>(bword), r.at<std::int32_t>(bp),
                               r.at<float>(bpos), r.at<std::int32_t>(bt), r.at<float>(btype), n, d);
    std::vector<float> resid(x.data.size()), y(x.data.size()), mean(static_cast<std::size_t>(n)),
        rstd(static_cast<std::size_t>(n)), sum(x.data.size());
    gpu::residual_layernorm_rows(resid.data(), y.data(), mean.data(), rstd.data(), x.data.data(), a.data.data(),
                                 w.data.data(), b.data.data(), n, d, 1e-12f);
    gpu::embedding_sum_rows(sum.data(), ids.data(), word.data.data(), pos.data(), position.data.data(), typ.data(),
                            type.data.data(), n, d);
    BOOST_TEST(same_bits(r.get<float>(bresid), resid));
    BOOST_TEST(max_rel(r.get<float>(by), y) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bm), mean) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bs), rstd) < 1e-5);
    BOOST_TEST(same_bits(r.get<float>(bsum), sum));
}

BOOST_AUTO_TEST_CASE(embedding_matches_the_cpu_and_its_scatter_is_deterministic, needs_device()) {
    const long long vocab = 1000, n = 4096;
    const int d = 300;
    const auto weight = random_tensor<float>({vocab, d}, 35), dout = random_tensor<float>({n, d}, 36);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    for (long long i = 0; i < n; ++i) // frequent tokens (0 .. 9) and rare ones, as in text
        ids[std::size_t(i)] = i % 3 == 0 ? std::int32_t(i % 10) : std::int32_t((i * 7919) % vocab);
    const gpu::token_groups g = gpu::group_positions_by_token(ids.data(), n, vocab);
    const std::vector<float> dw0(std::size_t(vocab * d), 0.25f);
    device_run r;
    const int bw = r.input(weight.data), bids = r.input(ids), bdo = r.input(dout.data), bdw = r.input(dw0);
    const int bt = r.input(g.tokens), bo = r.input(g.offsets), bp = r.input(g.positions);
    const int bout = r.output<float>(std::size_t(n * d));
    r.allocate();
    gpu::embedding_forward(r.at<float>(bout), r.at<std::int32_t>(bids), r.at<float>(bw), n, d);
    gpu::embedding_backward(r.at<float>(bdw), r.at<std::int32_t>(bt), r.at<std::int32_t>(bo), r.at<std::int32_t>(bp),
                            (long long)g.tokens.size(), r.at<float>(bdo), d);
    std::vector<float> out(std::size_t(n * d)), dw = dw0;
    gpu::embedding_gather_rows(out.data(), ids.data(), weight.data.data(), n, d);
    gpu::embedding_scatter_add_rows(dw.data(), g, dout.data.data(), d);
    BOOST_TEST(same_bits(r.get<float>(bout), out));
    BOOST_TEST(same_bits(r.get<float>(bdw), dw)); // the same sums in the same order
}

BOOST_AUTO_TEST_CASE(swiglu_matches_the_cpu, needs_device()) {
    const long long n = 300'001;
    const auto g = random_tensor<float>({n}, 37, 4.0), u = random_tensor<float>({n}, 38),
               dh = random_tensor<float>({n}, 39);
    device_run r;
    const int bg = r.input(g.data), bu = r.input(u.data), bdh = r.input(dh.data);
    const int bh = r.output<float>(g.data.size()), bdg = r.output<float>(g.data.size()),
              bdu = r.output<float>(g.data.size());
    r.allocate();
    gpu::swiglu_forward(r.at<float>(bh), r.at<float>(bg), r.at<float>(bu), n);
    gpu::swiglu_backward(r.at<float>(bdg), r.at<float>(bdu), r.at<float>(bdh), r.at<float>(bg), r.at<float>(bu), n);
    std::vector<float> h(g.data.size()), dg(h.size()), du(h.size());
    gpu::swiglu_rows(h.data(), g.data.data(), u.data.data(), n);
    gpu::swiglu_backward_rows(dg.data(), du.data(), dh.data.data(), g.data.data(), u.data.data(), n);
    BOOST_TEST(max_rel(r.get<float>(bh), h) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdg), dg) < 1e-5);
    BOOST_TEST(max_rel(r.get<float>(bdu), du) < 1e-5);
}

// Biases: the add bit for bit; the gradient (column sums over 1000 rows in 32 lanes, 70 columns: a partial block
// of columns) within 1e-5 of its scale, added to what the gradient held.
BOOST_AUTO_TEST_CASE(bias_matches_the_cpu, needs_device()) {
    const long long n = 1000;
    const int d = 70;
    const auto y = random_tensor<float>({n, d}, 56), b = random_tensor<float>({d}, 57),
               db0 = random_tensor<float>({d}, 58);
    device_run r;
    const int by = r.input(y.data), bb = r.input(b.data), bdb = r.input(db0.data);
    r.allocate();
    gpu::bias_backward(r.at<float>(bdb), r.at<float>(by), n, d); // dy = y, before the add
    gpu::bias_add(r.at<float>(by), r.at<float>(bb), n, d);
    std::vector<float> added = y.data, db = db0.data;
    gpu::bias_backward_rows(db.data(), y.data.data(), n, d);
    gpu::bias_add_rows(added.data(), b.data.data(), n, d);
    BOOST_TEST(same_bits(r.get<float>(by), added));
    BOOST_TEST(max_rel(r.get<float>(bdb), db) < 1e-5);
}

// Double arithmetic without fused multiply-adds on both sides: the bits of the CPU op.
BOOST_AUTO_TEST_CASE(rope_is_the_cpu_bit_for_bit, needs_device()) {
    const long long batch = 3, time = 100, table = 300;
    const int heads = 5, D = 64, half = D / 2;
    test::owned<float> cos({table, half}), sin({table, half});
    rope_table<float>(cos, sin, 500000.0);
    const auto x = random_tensor<float>({batch, time, heads, D}, 40);
    std::vector<std::int64_t> positions(std::size_t(batch * time));
    for (long long i = 0; i < batch * time; ++i)
        positions[std::size_t(i)] = (i * 37) % table;
    for (const bool with_positions : {false, true}) {
        device_run r;
        const int bx = r.input(x.data), bc = r.input(cos.data), bs = r.input(sin.data), bp = r.input(positions);
        r.allocate();
        const std::int64_t* pos_gpu = with_positions ? r.at<std::int64_t>(bp) : nullptr;
        gpu::rope(r.at<float>(bx), r.at<float>(bc), r.at<float>(bs), pos_gpu, batch, time, heads, D, 1.0);
        std::vector<float> expected = x.data;
        gpu::rope_rows(expected.data(), cos.data.data(), sin.data.data(), with_positions ? positions.data() : nullptr,
                       batch, time, heads, D, 1.0);
        BOOST_TEST(same_bits(r.get<float>(bx), expected), "positions " << with_positions);
        gpu::rope(r.at<float>(bx), r.at<float>(bc), r.at<float>(bs), pos_gpu, batch, time, heads, D, -1.0);
        gpu::rope_rows(expected.data(), cos.data.data(), sin.data.data(), with_positions ? positions.data() : nullptr,
                       batch, time, heads, D, -1.0);
        BOOST_TEST(same_bits(r.get<float>(bx), expected), "backward, positions " << with_positions);
    }
}

BOOST_AUTO_TEST_CASE(to_bf16_is_tl_bf16_bit_for_bit, needs_device()) {
    auto x = random_tensor<float>({100'000}, 41, 1000.0);
    x.data[0] = std::numeric_limits<float>::quiet_NaN();
    x.data[1] = std::numeric_limits<float>::infinity();
    x.data[2] = 1.00390625f; // a tie: rounds to even (1.0)
    device_run r;
    const int bx = r.input(x.data), bo = r.output<std::uint16_t>(x.data.size());
    r.allocate();
    gpu::to_bf16(r.at<std::uint16_t>(bo), r.at<float>(bx), (long long)x.data.size());
    const std::vector<std::uint16_t> got = r.get<std::uint16_t>(bo);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
        differ += got[i] != bf16(x.data[i]).bits;
    BOOST_TEST(differ == 0u);
}

// GPU attention against the CPU drivers (which test_row_math checks against the reference in f64): GQA, a head
// width of 64, 300 positions (ten key tiles), with and without a window, packed documents and right padding, and
// bidirectional (an encoder's) with documents and padding.
BOOST_AUTO_TEST_CASE(attention_matches_the_cpu, needs_device()) {
    const long long B = 2, T = 300;
    const int Hq = 8, Hkv = 2, D = 64;
    const auto q = random_tensor<float>({B, T, Hq, D}, 42), k = random_tensor<float>({B, T, Hkv, D}, 43);
    const auto v = random_tensor<float>({B, T, Hkv, D}, 44), dout = random_tensor<float>({B, T, Hq, D}, 45);
    std::vector<std::int64_t> docs(std::size_t(B * T));
    for (long long b = 0; b < B; ++b)
        for (long long t = 0; t < T; ++t)
            docs[std::size_t(b * T + t)] = b == 0 ? (t >= 170 ? 170 : t >= 50 ? 50 : 0) : (t >= 99 ? 99 : 0);
    const std::vector<std::int64_t> lengths = {300, 140}; // row 1: its second document (99 ..) ends at 139
    struct variant {
        int window;
        bool documents, padding, causal = true;
    };
    for (const variant c : {variant{0, false, false}, variant{64, false, false}, variant{40, true, false},
                            variant{40, true, true}, variant{0, true, true, false}}) {
        const gpu::attention_dims s{B, T, Hq, Hkv, D, c.window, c.causal};
        const std::size_t rows = std::size_t(B * Hq * T);
        device_run r;
        const int bq = r.input(q.data), bk = r.input(k.data), bv = r.input(v.data), bdo = r.input(dout.data),
                  bd = r.input(docs), blen = r.input(lengths);
        const int bo = r.output<float>(q.data.size()), bl = r.output<float>(rows), bdl = r.output<float>(rows);
        const int bdq = r.output<float>(q.data.size()), bdk = r.output<float>(k.data.size()),
                  bdv = r.output<float>(v.data.size());
        r.allocate();
        const gpu::attention_masks ds_gpu(c.documents ? r.at<std::int64_t>(bd) : nullptr,
                                          c.padding ? r.at<std::int64_t>(blen) : nullptr);
        gpu::attention_forward(r.at<float>(bo), r.at<float>(bl), r.at<float>(bq), r.at<float>(bk), r.at<float>(bv),
                               ds_gpu, s);
        gpu::attention_backward(r.at<float>(bdq), r.at<float>(bdk), r.at<float>(bdv), r.at<float>(bdl),
                                r.at<float>(bdo), r.at<float>(bq), r.at<float>(bk), r.at<float>(bv), r.at<float>(bo),
                                r.at<float>(bl), ds_gpu, s);
        std::vector<float> out(q.data.size()), lse(rows), delta(rows), dq(q.data.size()), dk(k.data.size()),
            dv(v.data.size());
        const gpu::attention_masks ds(c.documents ? docs.data() : nullptr, c.padding ? lengths.data() : nullptr);
        gpu::attention_forward_rows(out.data(), lse.data(), q.data.data(), k.data.data(), v.data.data(), ds, s);
        gpu::attention_backward_rows(dq.data(), dk.data(), dv.data(), delta.data(), dout.data.data(), q.data.data(),
                                     k.data.data(), v.data.data(), out.data(), lse.data(), ds, s);
        std::string what = "window " + std::to_string(c.window);
        what += c.documents ? ", documents" : "";
        what += c.padding ? ", padding" : "";
        what += c.causal ? "" : ", bidirectional";
        BOOST_TEST(max_rel(r.get<float>(bo), out) < 1e-5, what);
        BOOST_TEST(max_rel(r.get<float>(bl), lse) < 1e-5, what);
        BOOST_TEST(max_rel(r.get<float>(bdq), dq) < 1e-5, what);
        BOOST_TEST(max_rel(r.get<float>(bdk), dk) < 1e-5, what);
        BOOST_TEST(max_rel(r.get<float>(bdv), dv) < 1e-5, what);

        // Through products (attention_products.hpp: cuBLASLt's batched products and the row kernels) against the
        // same on the CPU executor, in chunks of one sequence and of both: f32 within 1e-5; bf16 within 1e-3 (the
        // same operands rounded the same way, sums in other orders; a p that rounds to the neighbouring bf16
        // moves an output by 2^-8 of its term). Whole products (query block 0) and query blocks of 64 and the
        // default 128 (300 is a multiple of neither; windows 64 and 40 start k0 past 0), over scores' scratch
        // that starts as NaN on both sides: the skipped tiles must never be read.
        for (const bool bf : {false, true})
            for (const long long chunk : {1LL, B})
                for (const long long query_block : {0LL, 64LL, gpu::attention_default_query_block}) {
                    const std::size_t scores = std::size_t(chunk * Hq * T * T);
                    const std::vector<float> stale(scores, std::numeric_limits<float>::quiet_NaN());
                    device_run pr;
                    const int pq = pr.input(q.data), pk = pr.input(k.data), pv = pr.input(v.data),
                              pdo = pr.input(dout.data), pd = pr.input(docs), plen = pr.input(lengths);
                    const int po = pr.output<float>(q.data.size()), pl = pr.output<float>(rows),
                              pdl = pr.output<float>(rows);
                    const int pdq = pr.output<float>(q.data.size()), pdk = pr.output<float>(k.data.size()),
                              pdv = pr.output<float>(v.data.size());
                    const int ps = pr.input(stale), pds = pr.input(stale);
                    const int p16[5] = {pr.output<std::uint16_t>(q.data.size()),
                                        pr.output<std::uint16_t>(k.data.size()),
                                        pr.output<std::uint16_t>(v.data.size()),
                                        pr.output<std::uint16_t>(q.data.size()), pr.output<std::uint16_t>(scores)};
                    const int pws = pr.output<std::byte>(gpu::blas_workspace_bytes);
                    pr.allocate();
                    gpu::blas lt(pr.at<std::byte>(pws), gpu::blas_workspace_bytes);
                    gpu::gpu_ops dev{&lt, nullptr};
                    gpu::attention_scratch xg;
                    xg.scores = pr.at<float>(ps), xg.dscores = pr.at<float>(pds), xg.chunk = chunk;
                    xg.query_block = query_block;
                    if (bf)
                        xg.q = pr.at<std::uint16_t>(p16[0]), xg.k = pr.at<std::uint16_t>(p16[1]),
                        xg.v = pr.at<std::uint16_t>(p16[2]), xg.dout = pr.at<std::uint16_t>(p16[3]),
                        xg.p = pr.at<std::uint16_t>(p16[4]);
                    gpu::attention_products<gpu::gpu_ops> on_gpu(dev, xg);
                    const gpu::attention_masks mg(c.documents ? pr.at<std::int64_t>(pd) : nullptr,
                                                  c.padding ? pr.at<std::int64_t>(plen) : nullptr);
                    on_gpu.forward(pr.at<float>(po), pr.at<float>(pl), pr.at<float>(pq), pr.at<float>(pk),
                                   pr.at<float>(pv), mg, s);
                    on_gpu.backward(pr.at<float>(pdq), pr.at<float>(pdk), pr.at<float>(pdv), pr.at<float>(pdl),
                                    pr.at<float>(pdo), pr.at<float>(pq), pr.at<float>(pk), pr.at<float>(pv),
                                    pr.at<float>(po), pr.at<float>(pl), mg, s);

                    std::vector<float> hs = stale, hds = stale;
                    std::vector<std::uint16_t> hq(q.data.size()), hk(k.data.size()), hv(v.data.size()),
                        hdo(q.data.size()), hp(scores);
                    gpu::attention_scratch xc;
                    xc.scores = hs.data(), xc.dscores = hds.data(), xc.chunk = chunk, xc.query_block = query_block;
                    if (bf)
                        xc.q = hq.data(), xc.k = hk.data(), xc.v = hv.data(), xc.dout = hdo.data(), xc.p = hp.data();
                    gpu::cpu_ops host;
                    gpu::attention_products<gpu::cpu_ops> on_cpu(host, xc);
                    on_cpu.forward(out.data(), lse.data(), q.data.data(), k.data.data(), v.data.data(), ds, s);
                    on_cpu.backward(dq.data(), dk.data(), dv.data(), delta.data(), dout.data.data(), q.data.data(),
                                    k.data.data(), v.data.data(), out.data(), lse.data(), ds, s);
                    const double bound = bf ? 1e-3 : 1e-5;
                    const std::string how = what + (bf ? ", products in bf16" : ", products") + ", chunks of " +
                                            std::to_string(chunk) + ", query block " + std::to_string(query_block);
                    BOOST_TEST(max_rel(pr.get<float>(po), out) < bound, how);
                    BOOST_TEST(max_rel(pr.get<float>(pl), lse) < bound, how);
                    BOOST_TEST(max_rel(pr.get<float>(pdq), dq) < bound, how);
                    BOOST_TEST(max_rel(pr.get<float>(pdk), dk) < bound, how);
                    BOOST_TEST(max_rel(pr.get<float>(pdv), dv) < bound, how);
                }
    }
}

// cuBLASLt against the reference CPU gemm (double accumulation): every transposition, f32 and bf16 inputs (the
// bf16 case against the reference on the same rounded inputs: only the f32 accumulation differs), beta 0 and 1,
// strides wider than the matrices (multiples of 8 elements: rows 16-byte aligned, as the decoder's will be).
BOOST_AUTO_TEST_CASE(blas_matmul_matches_the_cpu_gemm, needs_device()) {
    const long long m = 130, n = 70, k = 300;
    const auto stride = [](long long cols) { return (cols + 8) / 8 * 8; }; // at least one column more
    for (const bool bf : {false, true})
        for (const bool ta : {false, true})
            for (const bool tb : {false, true})
                for (const float beta : {0.0f, 1.0f}) {
                    const long long a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
                    const long long lda = stride(a_cols), ldb = stride(b_cols), ldc = stride(n);
                    auto a = random_tensor<float>({a_rows, lda}, 46);
                    auto b = random_tensor<float>({b_rows, ldb}, 47);
                    const auto c0 = random_tensor<float>({m, ldc}, 48);
                    // bf16: the CPU sees the rounded values the GPU reads
                    const std::vector<std::uint16_t> a16 = bf ? round_to_bf16(a.data) : std::vector<std::uint16_t>{};
                    const std::vector<std::uint16_t> b16 = bf ? round_to_bf16(b.data) : std::vector<std::uint16_t>{};
                    device_run r;
                    const int ba = bf ? r.input(a16) : r.input(a.data), bb = bf ? r.input(b16) : r.input(b.data);
                    const int bc = r.input(c0.data), bws = r.output<std::byte>(gpu::blas_workspace_bytes);
                    r.allocate();
                    gpu::blas lt(r.at<std::byte>(bws), gpu::blas_workspace_bytes);
                    gpu::matmul_args g;
                    g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = k, g.alpha = 0.5f, g.beta = beta;
                    g.a = r.at<std::byte>(ba), g.lda = lda, g.b = r.at<std::byte>(bb), g.ldb = ldb;
                    g.c = r.at<float>(bc), g.ldc = ldc;
                    g.input = bf ? gpu::matmul_input::bf16 : gpu::matmul_input::f32;
                    lt.matmul(g);
                    std::vector<float> c = c0.data;
                    gemm_args<float> cpu;
                    cpu.trans_a = ta, cpu.trans_b = tb, cpu.m = m, cpu.n = n, cpu.k = k, cpu.alpha = 0.5f;
                    cpu.a = a.data.data(), cpu.lda = lda, cpu.b = b.data.data(), cpu.ldb = ldb;
                    cpu.beta = beta, cpu.c = c.data(), cpu.ldc = ldc;
                    reference_cpu::gemm(cpu);
                    const std::vector<float> got = r.get<float>(bc);
                    BOOST_TEST(max_rel(got, c) < 1e-5,
                               (bf ? "bf16" : "f32") << " trans_a " << ta << " trans_b " << tb << " beta " << beta);
                    bool pad_kept = true; // columns n .. ldc - 1 are not c's: untouched
                    for (long long i = 0; i < m; ++i)
                        for (long long j = n; j < ldc; ++j)
                            pad_kept &= got[std::size_t(i * ldc + j)] == c0.data[std::size_t(i * ldc + j)];
                    BOOST_TEST(pad_kept);
                }
}

// Batched products (the attention's: one per head, over the sequences) from operands that start 8 elements past a
// 256-byte boundary (16 bytes in bf16: a head's slice or a bf16 weight in the flat block is often less aligned
// than cuBLASLt's default assumption), f32 and bf16, against the reference gemm matrix by matrix. A second call
// of the same product reuses its plan.
BOOST_AUTO_TEST_CASE(blas_batched_matmul_from_unaligned_operands, needs_device()) {
    const long long m = 64, n = 48, k = 40, batch = 3, lda = 72, ldb = 56, ldc = 64;
    const long long sa = m * lda + 16, sb = n * ldb + 24, sc = m * ldc + 8, skip = 8; // strides, elements
    for (const bool bf : {false, true}) {
        auto a = random_tensor<float>({skip + batch * sa}, 51), b = random_tensor<float>({skip + batch * sb}, 52);
        const auto c0 = random_tensor<float>({skip + batch * sc}, 53);
        const std::vector<std::uint16_t> a16 = bf ? round_to_bf16(a.data) : std::vector<std::uint16_t>{};
        const std::vector<std::uint16_t> b16 = bf ? round_to_bf16(b.data) : std::vector<std::uint16_t>{};
        device_run r;
        const int ba = bf ? r.input(a16) : r.input(a.data), bb = bf ? r.input(b16) : r.input(b.data);
        const int bc = r.input(c0.data), bws = r.output<std::byte>(gpu::blas_workspace_bytes);
        r.allocate();
        gpu::blas lt(r.at<std::byte>(bws), gpu::blas_workspace_bytes);
        const std::size_t element = bf ? 2 : 4;
        gpu::matmul_args g;
        g.trans_b = true, g.m = m, g.n = n, g.k = k, g.alpha = 0.25f, g.batch = batch;
        g.a = r.at<std::byte>(ba) + skip * element, g.lda = lda, g.stride_a = sa;
        g.b = r.at<std::byte>(bb) + skip * element, g.ldb = ldb, g.stride_b = sb;
        g.c = r.at<float>(bc) + skip, g.ldc = ldc, g.stride_c = sc;
        g.input = bf ? gpu::matmul_input::bf16 : gpu::matmul_input::f32;
        lt.matmul(g);
        BOOST_TEST(lt.cached_plans() == 1u);
        std::vector<float> c = c0.data;
        for (long long i = 0; i < batch; ++i) {
            gemm_args<float> cpu;
            cpu.trans_b = true, cpu.m = m, cpu.n = n, cpu.k = k, cpu.alpha = 0.25f;
            cpu.a = a.data.data() + skip + i * sa, cpu.lda = lda, cpu.b = b.data.data() + skip + i * sb, cpu.ldb = ldb;
            cpu.c = c.data() + skip + i * sc, cpu.ldc = ldc;
            reference_cpu::gemm(cpu);
        }
        const std::vector<float> got = r.get<float>(bc);
        BOOST_TEST(max_rel(got, c) < 1e-5, (bf ? "bf16" : "f32"));
        lt.matmul(g); // the same product again (beta 0: the same result), from the cached plan
        BOOST_TEST(lt.cached_plans() == 1u);
        BOOST_TEST(same_bits(r.get<float>(bc), got));
    }
}

// The tiny preset with a sliding window on its first layer (layer 1 attends fully).
model_config windowed_tiny() {
    model_config c = presets::tiny::value;
    c.sliding_window = 24;
    c.full_attention_every = 2;
    return c;
}

// NF4 dequantisation on the GPU (QLoRA's base): f32 and bf16 outputs against the CPU driver (itself tl::dequantize
// bit for bit in test_cuda_math), bit for bit, with and without double quantisation; 300 x 70 weights.
BOOST_AUTO_TEST_CASE(nf4_dequantization_is_the_cpu_bit_for_bit, needs_device()) {
    const auto w = random_tensor<float>({300, 70}, 55, 0.2);
    for (const bool double_quant : {false, true}) {
        const nf4_tensor q = quantize_nf4(w.cv(), double_quant);
        std::vector<float> expected(w.data.size());
        gpu::nf4_dequantize_elements(expected.data(), gpu::nf4_weight_of(q));
        device_run r;
        const int codes = r.input(q.codes);
        const int scales = double_quant ? r.input(q.qabsmax) : r.input(q.absmax);
        const int scales2 = double_quant ? r.input(q.absmax2) : -1;
        const int out = r.output<float>(w.data.size()), out16 = r.output<std::uint16_t>(w.data.size());
        r.allocate();
        gpu::nf4_weight d;
        d.codes = r.at<std::uint8_t>(codes), d.n = q.numel(), d.offset = q.offset;
        if (double_quant)
            d.qabsmax = r.at<std::uint8_t>(scales), d.absmax2 = r.at<float>(scales2);
        else
            d.absmax = r.at<float>(scales);
        gpu::nf4_dequantize(r.at<float>(out), r.at<std::uint16_t>(out16), d, gpu::make_nf4_tables());
        BOOST_TEST(same_bits(r.get<float>(out), expected), "double quantisation " << double_quant);
        const std::vector<std::uint16_t> got16 = r.get<std::uint16_t>(out16);
        std::size_t off = 0;
        for (std::size_t i = 0; i < expected.size(); ++i)
            off += got16[i] != gpu::bf16_bits(expected[i]);
        BOOST_TEST(off == 0u, "double quantisation " << double_quant);
    }
}

// The inputs of the step tests: a model (windowed_tiny by default), random weights (norms near one; with LoRA the
// adapter's too, B not zero), ids and targets (some ignored) for o.batch x o.time tokens in packed documents (row r:
// a document every 13 + r tokens).
struct step_inputs {
    model_config c;
    std::vector<float> weights, adapter;
    std::vector<std::int32_t> ids, targets;
    std::vector<std::int64_t> docs;
    explicit step_inputs(const gpu::decoder_plan_options& o, const model_config& config = windowed_tiny()) : c(config) {
        weights = random_tensor<float>({index_t(parameter_count(c))}, 50, 0.05).data;
        std::size_t adapter_size = 0;
        for (const gpu::parameter_slice& s : gpu::adapter_layout(c, o.lora))
            adapter_size += s.size();
        if (adapter_size > 0) adapter = random_tensor<float>({index_t(adapter_size)}, 54, 0.1).data;
        for (const gpu::parameter_slice& s : gpu::decoder_parameter_layout(c))
            if (s.name.find("norm") != std::string::npos)
                for (std::size_t i = 0; i < s.size(); ++i)
                    weights[s.offset + i] += 1.0f;
        ids.resize(std::size_t(o.batch * o.time)), targets.resize(ids.size()), docs.resize(ids.size());
        for (std::size_t i = 0; i < ids.size(); ++i) {
            ids[i] = std::int32_t((i * 37 + 11) % std::size_t(c.vocab_size));
            targets[i] = i % 9 == 4 ? -100 : std::int32_t((i * 53 + 5) % std::size_t(c.vocab_size));
        }
        for (long long r = 0; r < o.batch; ++r)
            for (long long t = 0; t < o.time; ++t)
                docs[std::size_t(r * o.time + t)] = t - t % (13 + r);
    }
};

// Writes step_inputs' weights into a step by name, with write(destination, source, count): the base (QLoRA: its
// projection weights quantised to NF4 as tl::decoder quantises them) and the adapter.
template <class Step, class Write>
void load_inputs(Step& step, const step_inputs& in, const gpu::decoder_plan_options& o, Write write) {
    const bool nf4 = o.lora.rank > 0 && o.lora.quantized_base;
    for (const gpu::parameter_slice& s : gpu::decoder_parameter_layout(in.c)) {
        const float* w = in.weights.data() + s.offset;
        if (nf4 && s.name.ends_with("_proj.weight"))
            step.set_quantized_weight(s.name, quantize_nf4(cview<float>{w, {index_t(s.rows), index_t(s.cols)}}, true));
        else
            write(step.parameter(s.name), w, s.size());
    }
    for (const gpu::parameter_slice& s : gpu::adapter_layout(in.c, o.lora))
        write(step.parameter(s.name), in.adapter.data() + s.offset, s.size());
    step.parameters_changed();
}

// Every slice's gradients on the GPU within `relative` of the largest of the CPU executor's in that slice (each must
// be non-zero); `context` names the case in a failure.
void expect_gradients_close(const std::vector<float>& gpu_grads, const float* cpu_grads,
                            const std::vector<gpu::parameter_slice>& layout, double relative,
                            const std::string& context = "") {
    for (const gpu::parameter_slice& s : layout) {
        double err = 0, scale = 0;
        for (std::size_t i = s.offset; i < s.offset + s.size(); ++i) {
            err = std::max(err, std::abs(double(gpu_grads[i]) - double(cpu_grads[i])));
            scale = std::max(scale, std::abs(double(cpu_grads[i])));
        }
        BOOST_TEST(scale > 0.0, context << s.name);
        BOOST_TEST(err <= relative * scale, context << s.name << ": " << err << " against a scale of " << scale);
    }
}

// bf16 products: both executors round the same operands, but a product's f32 result that differs in its last bits
// (sums in other orders: block trees here, loops on the CPU) can round to the neighbouring bf16 where it is the next
// product's operand, and such flips add up through the layers; no multiple of the f32 bound is principled. So a
// tensor on the GPU must be as close to the CPU executor's with bf16 products as that is to the CPU executor's with
// f32 products on the same inputs (bf16's own error on that tensor, which must be non-zero):
// max|gpu - cpu_bf16| <= max|cpu_bf16 - cpu_f32|, or `factor` times that (the ranking steps: below). Returns the
// ratio of the two.
double expect_bf16_close(std::span<const float> gpu_values, std::span<const float> cpu_bf16,
                         std::span<const float> cpu_f32, const std::string& what, double factor = 1) {
    double err = 0, own = 0;
    for (std::size_t i = 0; i < gpu_values.size(); ++i) {
        err = std::max(err, std::abs(double(gpu_values[i]) - double(cpu_bf16[i])));
        own = std::max(own, std::abs(double(cpu_bf16[i]) - double(cpu_f32[i])));
    }
    BOOST_TEST(own > 0.0, what << ": bf16 products gave the f32 values");
    BOOST_TEST(err <= factor * own,
               what << ": " << err << " from the CPU executor's bf16, which is " << own << " from its f32");
    return own > 0 ? err / own : 0.0;
}

// The ranking steps' bf16 bound: twice bf16's own error. The in-batch softmax couples every text's gradient to every
// other text's, so a flipped rounding spreads further than in a language model's loss: measured on the host
// emulation up to 0.99 (ranking_step) and 1.24 (ranking_step_with_lora, dropout and packed texts, its second step).
constexpr double ranking_bf16_factor = 2;

// expect_bf16_close on every slice's gradients (cpu_f32_grads: the CPU executor's with f32 products); logs the
// largest ratio. `context` names the case in a failure.
void expect_bf16_gradients_close(const std::vector<float>& gpu_grads, const float* cpu_bf16_grads,
                                 const float* cpu_f32_grads, const std::vector<gpu::parameter_slice>& layout,
                                 const std::string& context = "") {
    double worst = 0;
    for (const gpu::parameter_slice& s : layout)
        worst = std::max(worst, expect_bf16_close({gpu_grads.data() + s.offset, s.size()},
                                                  {cpu_bf16_grads + s.offset, s.size()},
                                                  {cpu_f32_grads + s.offset, s.size()}, context + s.name));
    BOOST_TEST_MESSAGE(context << "bf16 gradients: |GPU - CPU bf16| at most " << worst << " of |CPU bf16 - CPU f32|");
}

// decoder_step on the GPU over its own arena, the inputs' weights uploaded.
struct gpu_step {
    gpu::arena_plan plan;
    gpu::device_arena arena;
    gpu::blas products;
    gpu::gpu_ops ex;
    gpu::decoder_step<gpu::gpu_ops> step;
    gpu_step(const step_inputs& in, const gpu::decoder_plan_options& o)
        : plan(gpu::plan_decoder_step(in.c, o)), arena(plan),
          products(arena.at<std::byte>(plan.at("blas.workspace").offset), gpu::blas_workspace_bytes), ex{&products,
                                                                                                         nullptr},
          step(in.c, o, plan, arena.at<std::byte>(0), ex) {
        load_inputs(step, in, o, [](float* to, const float* from, std::size_t n) {
            gpu::copy_to_device(to, from, n * sizeof(float));
        });
    }
    float* block(const char* name) const { return arena.at<float>(plan.at(name).offset); }
    std::vector<float> download(const char* name) const {
        std::vector<float> v(plan.at(name).bytes / sizeof(float));
        gpu::synchronize();
        gpu::copy_to_host(v.data(), block(name), v.size() * sizeof(float));
        return v;
    }
    double run(const step_inputs& in) {
        step.zero_gradients();
        return step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
    }
};

// After a LoRA step on both executors: the adapter's gradients within 1e-4 of each tensor's scale (bf16 products:
// expect_bf16_gradients_close against cpu_f32_grads, the CPU executor's with f32 products); then the CPU's gradients
// on both, clipping (the same norm) and one AdamW step: the adapters bit for bit, and the frozen base (`base`, the
// GPU's parameters before the step) unchanged.
template <class HostBlock>
void expect_lora_update_matches(gpu_step& g, gpu::decoder_step<gpu::cpu_ops>& cpu_step, HostBlock&& host_block,
                                const step_inputs& in, const gpu::decoder_plan_options& o,
                                const std::vector<float>& base, const std::vector<float>& cpu_f32_grads) {
    const std::vector<float> grads = g.download("gradients");
    const float* cpu_grads = host_block("gradients");
    if (o.bf16_weights)
        expect_bf16_gradients_close(grads, cpu_grads, cpu_f32_grads.data(), gpu::adapter_layout(in.c, o.lora));
    else
        expect_gradients_close(grads, cpu_grads, gpu::adapter_layout(in.c, o.lora), 1e-4);
    const std::size_t count = grads.size();
    gpu::copy_to_device(g.block("gradients"), cpu_grads, count * sizeof(float));
    const double cpu_norm = cpu_step.clip_gradients(0.01), gpu_norm = g.step.clip_gradients(0.01);
    BOOST_TEST(std::abs(gpu_norm - cpu_norm) <= 1e-12 * cpu_norm);
    gpu::copy_to_device(g.block("gradients"), cpu_grads, count * sizeof(float)); // the clipped ones
    const adamw_options options{.weight_decay = 0.1};
    cpu_step.adamw_step(1e-3, options);
    g.step.adamw_step(1e-3, options);
    BOOST_TEST(std::memcmp(g.download("adapter").data(), host_block("adapter"), in.adapter.size() * 4) == 0);
    BOOST_TEST(same_bits(g.download("parameters"), base));
}

// The whole training step on the GPU (kernels and cuBLASLt) against the same step on the CPU executor, which
// test_model checks against tl::decoder: step_inputs' model and tokens, 3 x 40 tokens, logits in chunks of 50
// rows; f32 products, then bf16 ones (in test_model the CPU executor's bf16 gradients are within 7.2e-6 of
// tl::decoder's bf16 ones); attention by the row kernels and through products (in chunks of 2 sequences in query
// blocks of 16 rows that skip the masked tiles, and whole). Loss within 1e-5 (ten times that in bf16), every gradient
// within 1e-4 of its tensor's scale (reductions in other orders through two layers); in bf16 as close to the CPU
// executor's bf16 gradients as those are to its f32 ones (expect_bf16_gradients_close).
BOOST_AUTO_TEST_CASE(decoder_step_matches_the_cpu_executor, needs_device()) {
    for (const long long attention : {-1LL, 2LL, 0LL}) { // rows; products in chunks of 2 sequences, of all 3
        std::vector<float> cpu_f32_grads;                // the f32 iteration's, on the same inputs
        for (const bool bf16 : {false, true}) {
            BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products")
                               << (attention < 0 ? ", attention by rows" : ", attention through products, chunks of ")
                               << (attention < 0 ? "" : std::to_string(attention))) {
                gpu::decoder_plan_options o;
                o.batch = 3, o.time = 40, o.logits_rows = 50, o.bf16_weights = bf16;
                o.attention = attention < 0 ? gpu::attention_path::rows : gpu::attention_path::products;
                o.attention_sequences = std::max(attention, 0LL);
                o.attention_query_block = attention == 2 ? 16 : 0;
                const step_inputs in(o);
                const std::size_t p = in.weights.size();

                const gpu::arena_plan plan = gpu::plan_decoder_step(in.c, o);
                std::vector<std::byte> host(plan.bytes());
                gpu::cpu_ops cpu;
                gpu::decoder_step<gpu::cpu_ops> cpu_step(in.c, o, plan, host.data(), cpu);
                float* cpu_parameters = reinterpret_cast<float*>(host.data() + plan.at("parameters").offset);
                float* cpu_grads = reinterpret_cast<float*>(host.data() + plan.at("gradients").offset);
                std::copy(in.weights.begin(), in.weights.end(), cpu_parameters);
                cpu_step.zero_gradients();
                const double cpu_loss = cpu_step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
                if (!bf16) cpu_f32_grads.assign(cpu_grads, cpu_grads + p);

                gpu_step g(in, o);
                const double gpu_loss = g.run(in);
                BOOST_TEST_MESSAGE("loss: CPU executor " << cpu_loss << ", GPU " << gpu_loss);
                // bf16: a product's f32 result that differs in its last bits can round to the neighbouring bf16
                // on one executor and not the other; ten times the f32 bound on the loss.
                const double bound = bf16 ? 10 : 1;
                BOOST_TEST(std::abs(gpu_loss - cpu_loss) < bound * 1e-5 * cpu_loss);

                // Deterministic (issue 20: bit-identical resume on the same GPU): the same step again, the same
                // bits, from the products planned the first time.
                const std::vector<float> grads = g.download("gradients");
                const std::size_t planned = g.products.cached_plans();
                BOOST_TEST(g.run(in) == gpu_loss);
                BOOST_TEST(g.products.cached_plans() == planned);
                BOOST_TEST(same_bits(g.download("gradients"), grads));
                if (bf16)
                    expect_bf16_gradients_close(grads, cpu_grads, cpu_f32_grads.data(),
                                                gpu::decoder_parameter_layout(in.c));
                else
                    expect_gradients_close(grads, cpu_grads, gpu::decoder_parameter_layout(in.c), 1e-4);

                // The optimizer from the CPU executor's gradients on both sides: the norm (sums of squares in
                // double, in other orders), then clipping and two AdamW steps, whose element-wise arithmetic gives
                // the same bits.
                gpu::copy_to_device(g.block("gradients"), cpu_grads, p * sizeof(float));
                const double cpu_norm = cpu_step.clip_gradients(0.01), gpu_norm = g.step.clip_gradients(0.01);
                BOOST_TEST(std::abs(gpu_norm - cpu_norm) <= 1e-12 * cpu_norm);
                BOOST_TEST_REQUIRE(cpu_norm > 0.01); // clipping happened
                gpu::copy_to_device(g.block("gradients"), cpu_grads, p * sizeof(float));
                const adamw_options options{.weight_decay = 0.1};
                for (const double lr : {1e-3, 2e-3}) {
                    cpu_step.adamw_step(lr, options);
                    g.step.adamw_step(lr, options);
                }
                BOOST_TEST(std::memcmp(g.download("parameters").data(), cpu_parameters, p * sizeof(float)) == 0);
            }
        }
    }
}

// Fused attention (flash_attention.cu: tensor cores, bf16 operands) on the GPU against the CPU executor's fused
// (attention_fused.hpp: the same operands rounded the same way, f32 sums in other orders) and against the products in
// bf16 on the GPU: 2 x 45 tokens (a partial second tile of 32), GQA 4 on 2; head width 64: causal, a window of 20,
// documents with a window of 12, with padding too, and bidirectional with documents and padding; head width 128 (its
// own kernels): the last two. Bounds calibrated as expect_bf16_close: |GPU fused - CPU fused| at most
// |CPU fused - CPU f32 rows| (bf16's own error on each tensor), and |GPU fused - CPU f32 rows| at most twice
// |GPU products in bf16 - CPU f32 rows| (another bf16 computation of the same thing; both ratios are logged). Under
// the host emulation (whose wmma sums in the order of k, as the CPU driver's loops do) the same bits as the CPU
// executor. Deterministic: the backward again gives the same bits. Outputs start as NaN (cudaMalloc's promise is
// none): every element is written. Head widths other than 64 and 128 are refused.
BOOST_AUTO_TEST_CASE(fused_attention_matches_the_cpu_executor_and_the_products, needs_device()) {
    const long long B = 2, T = 45;
    const int Hq = 4, Hkv = 2;
    const bool emulated = gpu::device_name().starts_with("tinylm CUDA emulation");
    std::vector<std::int64_t> docs(std::size_t(B * T));
    for (long long b = 0; b < B; ++b) // row 0: documents at 0, 17, 33; row 1: at 0 and 28
        for (long long t = 0; t < T; ++t)
            docs[std::size_t(b * T + t)] = b == 0 ? (t >= 33 ? 33 : t >= 17 ? 17 : 0) : (t >= 28 ? 28 : 0);
    const std::vector<std::int64_t> lengths = {45, 30}; // row 1: its second document ends in padding
    struct variant {
        int D, window;
        bool documents, padding, causal = true;
    };
    double worst_cpu = 0, worst_products = 0;
    for (const variant c : {variant{64, 0, false, false}, variant{64, 20, false, false}, variant{64, 12, true, false},
                            variant{64, 12, true, true}, variant{64, 0, true, true, false},
                            variant{128, 12, true, true}, variant{128, 0, true, true, false}}) {
        const int D = c.D;
        const auto q = random_tensor<float>({B, T, Hq, D}, 60), k = random_tensor<float>({B, T, Hkv, D}, 61);
        const auto v = random_tensor<float>({B, T, Hkv, D}, 62), dout = random_tensor<float>({B, T, Hq, D}, 63);
        const gpu::attention_dims s{B, T, Hq, Hkv, D, c.window, c.causal};
        const std::size_t rows = std::size_t(B * Hq * T), scores = std::size_t(B * Hq * T * T);
        std::string what = "head width " + std::to_string(D) + ", window " + std::to_string(c.window);
        what += c.documents ? ", documents" : "";
        what += c.padding ? ", padding" : "";
        what += c.causal ? "" : ", bidirectional";
        device_run r;
        const int bq = r.input(q.data), bk = r.input(k.data), bv = r.input(v.data), bdo = r.input(dout.data),
                  bd = r.input(docs), blen = r.input(lengths);
        const int bo = r.output<float>(q.data.size()), bl = r.output<float>(rows), bdl = r.output<float>(rows);
        const int bdq = r.output<float>(q.data.size()), bdk = r.output<float>(k.data.size()),
                  bdv = r.output<float>(v.data.size());
        // The products in bf16 beside: their outputs, scores and bf16 operands, cuBLASLt's workspace.
        const int po = r.output<float>(q.data.size()), pl = r.output<float>(rows);
        const int pdq = r.output<float>(q.data.size()), pdk = r.output<float>(k.data.size()),
                  pdv = r.output<float>(v.data.size());
        const int ps = r.output<float>(scores), pds = r.output<float>(scores);
        const int p16[5] = {r.output<std::uint16_t>(q.data.size()), r.output<std::uint16_t>(k.data.size()),
                            r.output<std::uint16_t>(v.data.size()), r.output<std::uint16_t>(q.data.size()),
                            r.output<std::uint16_t>(scores)};
        const int pws = r.output<std::byte>(gpu::blas_workspace_bytes);
        r.allocate();
        const gpu::attention_masks mg(c.documents ? r.at<std::int64_t>(bd) : nullptr,
                                      c.padding ? r.at<std::int64_t>(blen) : nullptr);
        gpu::blas lt(r.at<std::byte>(pws), gpu::blas_workspace_bytes);
        gpu::gpu_ops dev{&lt, nullptr};
        dev.attention_fused_forward(r.at<float>(bo), r.at<float>(bl), r.at<float>(bq), r.at<float>(bk), r.at<float>(bv),
                                    mg, s);
        dev.attention_fused_backward(r.at<float>(bdq), r.at<float>(bdk), r.at<float>(bdv), r.at<float>(bdl),
                                     r.at<float>(bdo), r.at<float>(bq), r.at<float>(bk), r.at<float>(bv),
                                     r.at<float>(bo), r.at<float>(bl), mg, s);
        const std::vector<float> g_out = r.get<float>(bo), g_lse = r.get<float>(bl), g_dq = r.get<float>(bdq),
                                 g_dk = r.get<float>(bdk), g_dv = r.get<float>(bdv);
        dev.attention_fused_backward(r.at<float>(bdq), r.at<float>(bdk), r.at<float>(bdv), r.at<float>(bdl),
                                     r.at<float>(bdo), r.at<float>(bq), r.at<float>(bk), r.at<float>(bv),
                                     r.at<float>(bo), r.at<float>(bl), mg, s);
        BOOST_TEST((same_bits(r.get<float>(bdq), g_dq) && same_bits(r.get<float>(bdk), g_dk) &&
                    same_bits(r.get<float>(bdv), g_dv)),
                   what << ": the backward again, other bits");
        gpu::attention_scratch xg;
        xg.scores = r.at<float>(ps), xg.dscores = r.at<float>(pds), xg.chunk = B;
        xg.q = r.at<std::uint16_t>(p16[0]), xg.k = r.at<std::uint16_t>(p16[1]), xg.v = r.at<std::uint16_t>(p16[2]),
        xg.dout = r.at<std::uint16_t>(p16[3]), xg.p = r.at<std::uint16_t>(p16[4]);
        gpu::attention_products<gpu::gpu_ops> products(dev, xg);
        products.forward(r.at<float>(po), r.at<float>(pl), r.at<float>(bq), r.at<float>(bk), r.at<float>(bv), mg, s);
        products.backward(r.at<float>(pdq), r.at<float>(pdk), r.at<float>(pdv), r.at<float>(bdl), r.at<float>(bdo),
                          r.at<float>(bq), r.at<float>(bk), r.at<float>(bv), r.at<float>(po), r.at<float>(pl), mg, s);

        const gpu::attention_masks mc(c.documents ? docs.data() : nullptr, c.padding ? lengths.data() : nullptr);
        gpu::cpu_ops host;
        std::vector<float> out(q.data.size()), lse(rows), delta(rows), dq(q.data.size()), dk(k.data.size()),
            dv(v.data.size());
        host.attention_fused_forward(out.data(), lse.data(), q.data.data(), k.data.data(), v.data.data(), mc, s);
        host.attention_fused_backward(dq.data(), dk.data(), dv.data(), delta.data(), dout.data.data(), q.data.data(),
                                      k.data.data(), v.data.data(), out.data(), lse.data(), mc, s);
        std::vector<float> out32(q.data.size()), lse32(rows), dq32(q.data.size()), dk32(k.data.size()),
            dv32(v.data.size());
        host.attention_forward(out32.data(), lse32.data(), q.data.data(), k.data.data(), v.data.data(), mc, s);
        host.attention_backward(dq32.data(), dk32.data(), dv32.data(), delta.data(), dout.data.data(), q.data.data(),
                                k.data.data(), v.data.data(), out32.data(), lse32.data(), mc, s);
        const std::vector<float> p_out = r.get<float>(po), p_lse = r.get<float>(pl), p_dq = r.get<float>(pdq),
                                 p_dk = r.get<float>(pdk), p_dv = r.get<float>(pdv);
        for (const auto& [name, gpu_fused, cpu_fused, cpu_f32, gpu_products] :
             {std::tuple{"out", &g_out, &out, &out32, &p_out}, std::tuple{"lse", &g_lse, &lse, &lse32, &p_lse},
              std::tuple{"dq", &g_dq, &dq, &dq32, &p_dq}, std::tuple{"dk", &g_dk, &dk, &dk32, &p_dk},
              std::tuple{"dv", &g_dv, &dv, &dv32, &p_dv}}) {
            worst_cpu = std::max(worst_cpu, expect_bf16_close(*gpu_fused, *cpu_fused, *cpu_f32, what + ": " + name));
            if (emulated)
                BOOST_TEST(same_bits(*gpu_fused, *cpu_fused), what << ": " << name << ": emulated, other bits");
            double fused_err = 0, products_err = 0;
            for (std::size_t i = 0; i < gpu_fused->size(); ++i) {
                fused_err = std::max(fused_err, std::abs(double((*gpu_fused)[i]) - double((*cpu_f32)[i])));
                products_err = std::max(products_err, std::abs(double((*gpu_products)[i]) - double((*cpu_f32)[i])));
            }
            BOOST_TEST(fused_err <= 2 * products_err, what << ": " << name << ": " << fused_err << " from f32, the "
                                                           << "products in bf16 " << products_err);
            worst_products = std::max(worst_products, products_err > 0 ? fused_err / products_err : INFINITY);
        }
    }
    BOOST_TEST_MESSAGE("fused attention: |GPU - CPU fused| at most " << worst_cpu << " of |CPU fused - CPU f32|; "
                                                                     << "its error from f32 at most " << worst_products
                                                                     << " of the bf16 products'");
    for (const int refused : {32, 96, 256}) {
        const gpu::attention_dims other{1, 8, 2, 1, refused, 0, true};
        BOOST_CHECK_EXCEPTION(gpu::attention_fused_forward(nullptr, nullptr, nullptr, nullptr, nullptr, {}, other),
                              tl::error, [&](const tl::error& e) {
                                  const std::string what = e.what();
                                  return what.find("head width " + std::to_string(refused) + ",") !=
                                             std::string::npos &&
                                         what.find("64 or 128") != std::string::npos;
                              });
    }
}

// decoder_step with attention_path::fused (bf16; windowed_tiny widened to a model width of 128: 2 query heads of 64
// on 1 key/value head, and 1 head of 128, the other instance of the kernels; 3 x 40 tokens in packed documents, the
// first layer windowed) on the GPU against the CPU executor's
// fused step (which calls the fused kernels' entry points once per layer each way, and no other attention): the loss
// within 1e-4 relative (the bf16 bound of decoder_step_matches_the_cpu_executor), every gradient
// as close to the CPU's fused ones as those are to the CPU executor's f32 step with attention by rows
// (expect_bf16_gradients_close); the same step again gives the same bits. Against the products: the GPU's fused
// gradients within twice the GPU's bf16 products' distance from that f32 step, per tensor. f32 weights are refused,
// and head widths other than 64 and 128.
BOOST_AUTO_TEST_CASE(decoder_step_with_fused_attention_matches_the_cpu_executor, needs_device()) {
    gpu::decoder_plan_options o;
    for (const int heads : {2, 1}) {
        model_config c = windowed_tiny();
        c.d_model = 128, c.n_heads = heads, c.n_kv_heads = 1;
        BOOST_TEST_REQUIRE(c.head_dim() == 128 / heads);
        BOOST_TEST_CONTEXT("head width " << c.head_dim()) {
            o = {};
            o.batch = 3, o.time = 40, o.logits_rows = 50;
            const step_inputs in(o, c);
            const std::size_t p = in.weights.size();
            // The CPU executor: f32 with rows (bf16's reference), then bf16 fused.
            const auto cpu_run = [&](bool bf16, gpu::attention_path path, std::vector<float>& grads) {
                gpu::decoder_plan_options oo = o;
                oo.bf16_weights = bf16, oo.attention = path;
                const gpu::arena_plan plan = gpu::plan_decoder_step(in.c, oo);
                std::vector<std::byte> host(plan.bytes());
                counting_cpu_ops cpu;
                gpu::decoder_step<counting_cpu_ops> step(in.c, oo, plan, host.data(), cpu);
                load_inputs(step, in, oo,
                            [](float* to, const float* from, std::size_t n) { std::copy(from, from + n, to); });
                step.zero_gradients();
                const double loss = step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
                if (path == gpu::attention_path::fused) // one fused forward and backward per layer, nothing else
                    BOOST_TEST(
                        (cpu.fused_forward == in.c.n_layers && cpu.fused_backward == in.c.n_layers && cpu.others == 0));
                const float* g = reinterpret_cast<const float*>(host.data() + plan.at("gradients").offset);
                grads.assign(g, g + p);
                return loss;
            };
            std::vector<float> f32_grads, cpu_grads;
            cpu_run(false, gpu::attention_path::rows, f32_grads);
            const double cpu_loss = cpu_run(true, gpu::attention_path::fused, cpu_grads);

            o.bf16_weights = true, o.attention = gpu::attention_path::fused;
            gpu_step g(in, o);
            const double gpu_loss = g.run(in);
            BOOST_TEST_MESSAGE("fused: loss CPU executor " << cpu_loss << ", GPU " << gpu_loss);
            BOOST_TEST(std::abs(gpu_loss - cpu_loss) < 1e-4 * cpu_loss);
            const std::vector<float> grads = g.download("gradients");
            BOOST_TEST(g.run(in) == gpu_loss);
            BOOST_TEST(same_bits(g.download("gradients"), grads));
            expect_bf16_gradients_close(grads, cpu_grads.data(), f32_grads.data(), gpu::decoder_parameter_layout(in.c),
                                        "fused: ");

            o.attention = gpu::attention_path::products;
            gpu_step products(in, o);
            products.run(in);
            const std::vector<float> product_grads = products.download("gradients");
            double worst = 0;
            for (const gpu::parameter_slice& sl : gpu::decoder_parameter_layout(in.c)) {
                double fused_err = 0, products_err = 0;
                for (std::size_t i = sl.offset; i < sl.offset + sl.size(); ++i) {
                    fused_err = std::max(fused_err, std::abs(double(grads[i]) - double(f32_grads[i])));
                    products_err = std::max(products_err, std::abs(double(product_grads[i]) - double(f32_grads[i])));
                }
                BOOST_TEST(fused_err <= 2 * products_err,
                           sl.name << ": fused " << fused_err << " from f32, products " << products_err);
                worst = std::max(worst, products_err > 0 ? fused_err / products_err : INFINITY);
            }
            BOOST_TEST_MESSAGE("fused: gradients' distance from the f32 step at most " << worst << " of the products'");
        }
    }
    model_config c = windowed_tiny();
    c.d_model = 128, c.n_heads = 2, c.n_kv_heads = 1;
    o = {};
    o.batch = 3, o.time = 40, o.logits_rows = 50;
    o.bf16_weights = false, o.attention = gpu::attention_path::fused; // refused: f32, head widths other than 64, 128
    BOOST_CHECK_THROW(gpu::plan_decoder_step(c, o), tl::error);
    o.bf16_weights = true;
    BOOST_CHECK_THROW(gpu::plan_decoder_step(windowed_tiny(), o), tl::error);
    model_config wide = windowed_tiny();
    wide.d_model = 256, wide.n_heads = 1, wide.n_kv_heads = 1; // head width 256
    BOOST_CHECK_THROW(gpu::plan_decoder_step(wide, o), tl::error);
}

// LoRA (rank 4 on all seven projections) on a Qwen2-shaped model (q, k, v biases, tied embeddings) on the GPU
// against the CPU executor (which test_lora checks against peft; with QLoRA, test_qlora against tl::decoder): the
// loss (1e-5 relative, ten times that in bf16), every adapter gradient (1e-4 of its tensor's scale in f32; in bf16 as
// close to the CPU executor's bf16 ones as those are to its f32 ones), then the same gradients
// through clipping and an AdamW step on both sides: the adapter bit for bit, the frozen base unchanged; LoRA and
// QLoRA (the projections in NF4, dequantised before each product).
BOOST_AUTO_TEST_CASE(lora_step_matches_the_cpu_executor, needs_device()) {
    model_config qwen_like = windowed_tiny();
    qwen_like.qkv_bias = true, qwen_like.tied_embeddings = true;
    for (const bool quantized : {false, true}) {
        std::vector<float> cpu_f32_grads; // the f32 iteration's, on the same inputs
        for (const bool bf16 : {false, true}) {
            BOOST_TEST_CONTEXT((quantized ? "QLoRA, " : "LoRA, ") << (bf16 ? "bf16 products" : "f32 products")) {
                gpu::decoder_plan_options o;
                o.batch = 3, o.time = 40, o.logits_rows = 50, o.bf16_weights = bf16;
                o.lora = {.rank = 4, .alpha = 8, .targets = lora_all, .quantized_base = quantized};
                const step_inputs in(o, qwen_like);
                const gpu::arena_plan plan = gpu::plan_decoder_step(in.c, o);
                std::vector<std::byte> host(plan.bytes());
                gpu::cpu_ops cpu;
                gpu::decoder_step<gpu::cpu_ops> cpu_step(in.c, o, plan, host.data(), cpu);
                auto host_block = [&](const char* name) {
                    return reinterpret_cast<float*>(host.data() + plan.at(name).offset);
                };
                load_inputs(cpu_step, in, o,
                            [](float* to, const float* from, std::size_t n) { std::copy_n(from, n, to); });
                cpu_step.zero_gradients();
                const double cpu_loss = cpu_step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
                if (!bf16)
                    cpu_f32_grads.assign(host_block("gradients"),
                                         host_block("gradients") + plan.at("gradients").bytes / sizeof(float));

                gpu_step g(in, o);
                const std::vector<float> base = g.download("parameters");
                const double gpu_loss = g.run(in);
                const double bound = bf16 ? 10 : 1;
                BOOST_TEST_MESSAGE((quantized ? "QLoRA" : "LoRA")
                                   << " loss: CPU executor " << cpu_loss << ", GPU " << gpu_loss);
                BOOST_TEST(std::abs(gpu_loss - cpu_loss) < bound * 1e-5 * cpu_loss);
                expect_lora_update_matches(g, cpu_step, host_block, in, o, base, cpu_f32_grads);
            }
        }
    }
}

// LoRA dropout's kernels (dropout_row.hpp) against the CPU drivers, bit for bit: the mask of a projection's input
// with a row offset (a data-parallel rank's rows), forward (the kept elements scaled, the others 0) and backward
// (the scaled gradient added where kept), at p = 0.1 and 0.5; and at p = 0.1 with each row's place in another
// layout (token_positions in device memory: the device ranking step's rows against sentence_encoder's).
BOOST_AUTO_TEST_CASE(lora_dropout_is_the_cpu_bit_for_bit, needs_device()) {
    for (const auto& [p, mapped] : {std::pair{0.1f, false}, {0.5f, false}, {0.1f, true}}) {
        const long long rows = 3 * 40 + 1, in = 176, n = mapped ? rows * in : 3 * 40 * 176 + 5; // not a block multiple
        gpu::dropout_mask m = gpu::make_dropout_mask(0x5eed, gpu::lora_dropout_stream(4, 2, 1, 6, 7), p, 80 * 176);
        std::vector<std::int64_t> positions(static_cast<std::size_t>(rows));
        for (long long t = 0; t < rows; ++t)
            positions[std::size_t(t)] = (t * 53 + 7) % rows;
        const std::vector<float> x = random_tensor<float>({index_t(n)}, 71).data;
        const std::vector<float> g = random_tensor<float>({index_t(n)}, 72).data;
        const std::vector<float> dx0 = random_tensor<float>({index_t(n)}, 73).data;
        std::vector<float> out(x.size()), dx = dx0;
        if (mapped) m.token_positions = positions.data(), m.width = std::uint64_t(in);
        gpu::dropout_rows(out.data(), x.data(), n, m);
        gpu::dropout_backward_rows(dx.data(), g.data(), n, m);
        device_run r;
        const int ix = r.input(x), ig = r.input(g), idx = r.input(dx0), iout = r.output<float>(x.size());
        const int ipos = r.input(positions);
        r.allocate();
        if (mapped) m.token_positions = r.at<std::int64_t>(ipos);
        gpu::dropout_forward(r.at<float>(iout), r.at<float>(ix), n, m);
        gpu::dropout_backward(r.at<float>(idx), r.at<float>(ig), n, m);
        BOOST_TEST(same_bits(r.get<float>(iout), out), "forward, p " << p << (mapped ? ", token positions" : ""));
        BOOST_TEST(same_bits(r.get<float>(idx), dx), "backward, p " << p << (mapped ? ", token positions" : ""));
    }
}

// The LoRA step with dropout 0.1 on the GPU against the CPU executor (which test_lora checks against tl::decoder's
// masks and gradients): two consecutive steps (new masks each, the count advancing alike), the loss and every adapter
// gradient as in lora_step_matches_the_cpu_executor, f32 and bf16 products (the same masks in both).
BOOST_AUTO_TEST_CASE(lora_dropout_step_matches_the_cpu_executor, needs_device()) {
    std::vector<std::vector<float>> cpu_f32_grads; // each step's in the f32 iteration, on the same inputs
    for (const bool bf16 : {false, true}) {
        BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products")) {
            gpu::decoder_plan_options o;
            o.batch = 3, o.time = 40, o.logits_rows = 50, o.bf16_weights = bf16;
            o.lora = {.rank = 4, .alpha = 8, .dropout = 0.1f, .targets = lora_all};
            const step_inputs in(o);
            const gpu::arena_plan plan = gpu::plan_decoder_step(in.c, o);
            std::vector<std::byte> host(plan.bytes());
            gpu::cpu_ops cpu;
            gpu::decoder_step<gpu::cpu_ops> cpu_step(in.c, o, plan, host.data(), cpu);
            load_inputs(cpu_step, in, o, [](float* to, const float* from, std::size_t n) { std::copy_n(from, n, to); });
            gpu_step g(in, o);
            const double bound = bf16 ? 10 : 1;
            for (int k = 0; k < 2; ++k) {
                const double cpu_loss = [&] {
                    cpu_step.zero_gradients();
                    return cpu_step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
                }();
                const double gpu_loss = g.run(in);
                BOOST_TEST(g.step.dropout_calls() == cpu_step.dropout_calls());
                BOOST_TEST(std::abs(gpu_loss - cpu_loss) < bound * 1e-5 * cpu_loss, "step " << k);
                const std::vector<float> grads = g.download("gradients");
                const float* cpu_grads = reinterpret_cast<const float*>(host.data() + plan.at("gradients").offset);
                const std::string step = "step " + std::to_string(k) + ", ";
                if (bf16) {
                    expect_bf16_gradients_close(grads, cpu_grads, cpu_f32_grads[std::size_t(k)].data(),
                                                gpu::adapter_layout(in.c, o.lora), step);
                } else {
                    expect_gradients_close(grads, cpu_grads, gpu::adapter_layout(in.c, o.lora), 1e-4, step);
                    cpu_f32_grads.emplace_back(cpu_grads, cpu_grads + grads.size());
                }
            }
        }
    }
}

// Gradient checkpointing on the GPU: each layer's forward recomputed in the backward gives the loss and the
// gradients bit for bit as without (the same kernels and products on the same inputs), for both attention paths
// in bf16 and by rows in f32.
BOOST_AUTO_TEST_CASE(checkpointing_is_bit_identical_on_the_gpu, needs_device()) {
    for (const auto& [path, bf16] :
         {std::pair{gpu::attention_path::products, true}, std::pair{gpu::attention_path::rows, true},
          std::pair{gpu::attention_path::rows, false}}) {
        gpu::decoder_plan_options o;
        o.batch = 3, o.time = 40, o.logits_rows = 50, o.bf16_weights = bf16, o.attention = path;
        const step_inputs in(o);
        gpu_step plain(in, o);
        o.checkpointing = true;
        gpu_step checkpointed(in, o);
        const std::string what =
            std::string(bf16 ? "bf16" : "f32") + (path == gpu::attention_path::rows ? ", rows" : ", products");
        BOOST_TEST(plain.run(in) == checkpointed.run(in), what);
        BOOST_TEST(same_bits(plain.download("gradients"), checkpointed.download("gradients")), what);
    }
}

// The encoder step (cuda/encoder_step.hpp) on the GPU against the same step on the CPU executor, which test_encoder
// checks against tl::encoder: a BERT of width 64 (2 layers of 4 heads, feed-forward 128, two token types), 3 x 40
// tokens right-padded to 40, 23 and 7 real ones, a random d hidden; f32 and bf16 products, attention by rows and
// through products. Hidden states within 1e-5 of their scale, every gradient within 1e-4 of its tensor's, ten times
// that in bf16; the same step twice gives the same bits; clipping and two AdamW steps bit for bit.
BOOST_AUTO_TEST_CASE(encoder_step_matches_the_cpu_executor, needs_device()) {
    model_config c = tl_test::tiny_bert(61, 48);
    c.d_model = 64, c.d_ff = 128, c.init_std = 0.05;
    const long long B = 3, T = 40;
    const std::vector<std::int64_t> lengths = {40, 23, 7};
    std::vector<std::int32_t> ids(std::size_t(B * T)), types(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
        ids[i] = std::int32_t((i * 37 + 11) % std::size_t(c.vocab_size));
        types[i] = std::int32_t(i % 40 >= 20);
    }
    const auto dhidden = random_tensor<float>({B * T, c.d_model}, 71).data;
    for (const long long attention : {-1LL, 2LL, 0LL}) // rows; products in chunks of 2 sequences, of all 3
        for (const bool bf16 : {false, true}) {
            BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products")
                               << (attention < 0 ? ", attention by rows" : ", attention through products, chunks of ")
                               << (attention < 0 ? "" : std::to_string(attention))) {
                gpu::encoder_plan_options o;
                o.batch = B, o.time = T, o.bf16_weights = bf16;
                o.attention = attention < 0 ? gpu::attention_path::rows : gpu::attention_path::products;
                o.attention_sequences = std::max(attention, 0LL);
                const gpu::arena_plan plan = gpu::plan_encoder_step(c, o);
                const std::size_t p = plan.at("parameters").bytes / sizeof(float);
                std::vector<float> weights = random_tensor<float>({index_t(p)}, 72, 0.05).data;
                for (const gpu::parameter_slice& s : gpu::encoder_parameter_layout(c))
                    if (s.name.find("LayerNorm.weight") != std::string::npos)
                        for (std::size_t i = 0; i < s.size(); ++i)
                            weights[s.offset + i] += 1.0f;

                std::vector<std::byte> host(plan.bytes());
                gpu::cpu_ops cpu;
                gpu::encoder_step<gpu::cpu_ops> cpu_step(c, o, plan, host.data(), cpu);
                auto host_block = [&](const char* name) {
                    return reinterpret_cast<float*>(host.data() + plan.at(name).offset);
                };
                std::copy(weights.begin(), weights.end(), host_block("parameters"));
                const float* cpu_h = cpu_step.forward(ids.data(), lengths.data(), types.data());
                const std::vector<float> cpu_hidden(cpu_h, cpu_h + B * T * c.d_model);
                cpu_step.backward(dhidden.data());
                const float* cpu_grads = host_block("gradients");

                gpu::device_arena arena(plan);
                gpu::blas products(arena.at<std::byte>(plan.at("blas.workspace").offset), gpu::blas_workspace_bytes);
                gpu::gpu_ops ex{&products, nullptr};
                gpu::encoder_step<gpu::gpu_ops> step(c, o, plan, arena.at<std::byte>(0), ex);
                auto block = [&](const char* name) { return arena.at<float>(plan.at(name).offset); };
                auto download = [&](const char* name) {
                    std::vector<float> v(plan.at(name).bytes / sizeof(float));
                    gpu::synchronize();
                    gpu::copy_to_host(v.data(), block(name), v.size() * sizeof(float));
                    return v;
                };
                gpu::copy_to_device(block("parameters"), weights.data(), p * sizeof(float));
                step.parameters_changed();
                auto run = [&] {
                    step.zero_gradients();
                    step.forward(ids.data(), lengths.data(), types.data());
                    gpu::copy_to_device(step.dhidden_buffer(), dhidden.data(), dhidden.size() * sizeof(float));
                    step.backward(step.dhidden_buffer());
                };
                run();
                const std::vector<float> hidden = download("hidden"), grads = download("gradients");
                const double bound = bf16 ? 10 : 1;
                BOOST_TEST(max_rel(hidden, cpu_hidden) < bound * 1e-5);
                const std::vector<gpu::parameter_slice> layout = gpu::encoder_parameter_layout(c);
                auto scale_of = [&](const std::string& name) {
                    double scale = 0;
                    for (const gpu::parameter_slice& s : layout)
                        if (s.name == name)
                            for (std::size_t i = s.offset; i < s.offset + s.size(); ++i)
                                scale = std::max(scale, std::abs(double(cpu_grads[i])));
                    return scale;
                };
                for (const gpu::parameter_slice& s : layout) {
                    if (s.name.starts_with("pooler.")) continue; // frozen: 0 on both sides
                    double err = 0;
                    for (std::size_t i = s.offset; i < s.offset + s.size(); ++i)
                        err = std::max(err, std::abs(double(grads[i]) - double(cpu_grads[i])));
                    // A key bias's gradient is 0 but for rounding (the softmax ignores a constant per query row):
                    // measured against the query bias's of its layer, as in test_encoder.
                    const std::size_t key = s.name.find("self.key.bias");
                    const double scale =
                        scale_of(key == std::string::npos ? s.name : s.name.substr(0, key) + "self.query.bias");
                    BOOST_TEST(scale > 0.0, s.name);
                    BOOST_TEST(err <= bound * 1e-4 * scale, s.name << ": " << err << " against a scale of " << scale);
                }
                // Deterministic: the same step again, the same bits.
                run();
                BOOST_TEST(same_bits(download("hidden"), hidden));
                BOOST_TEST(same_bits(download("gradients"), grads));

                // The optimizer from the CPU executor's gradients on both sides: clipping, two AdamW steps.
                gpu::copy_to_device(block("gradients"), cpu_grads, p * sizeof(float));
                const double cpu_norm = cpu_step.clip_gradients(0.01), gpu_norm = step.clip_gradients(0.01);
                BOOST_TEST(std::abs(gpu_norm - cpu_norm) <= 1e-12 * cpu_norm);
                BOOST_TEST_REQUIRE(cpu_norm > 0.01); // clipping happened
                gpu::copy_to_device(block("gradients"), cpu_grads, p * sizeof(float));
                const adamw_options options{.weight_decay = 0.1};
                for (const double lr : {1e-3, 2e-3}) {
                    cpu_step.adamw_step(lr, options);
                    step.adamw_step(lr, options);
                }
                BOOST_TEST(std::memcmp(download("parameters").data(), host_block("parameters"), p * sizeof(float)) ==
                           0);
            }
        }
}

// The encoder step with attention_path::fused (bf16; a BERT of width 128 in 2 heads of 64, and in 1 of 128 (the
// other instance of the kernels), 2 layers, 3 x 40 tokens
// right-padded to 40, 23 and 7 real ones: bidirectional attention with padding) on the GPU against the CPU executor's
// fused step (the fused entry points once per layer each way, no other attention): the hidden states and every gradient
// as close to the CPU's as those are to the CPU executor's f32 step with attention by rows (expect_bf16_close; the key
// biases' gradients, 0 but for rounding, and the last LayerNorm's bias, untouched by bf16, left out); the same step
// twice gives the same bits. f32 is refused.
BOOST_AUTO_TEST_CASE(encoder_step_with_fused_attention_matches_the_cpu_executor, needs_device()) {
    for (const int heads : {2, 1}) {
        model_config c = tl_test::tiny_bert(61, 48);
        c.d_model = 128, c.n_heads = c.n_kv_heads = heads, c.d_ff = 128, c.init_std = 0.05;
        BOOST_TEST_REQUIRE(c.head_dim() == 128 / heads);
        BOOST_TEST_CONTEXT("head width " << c.head_dim()) {
            const long long B = 3, T = 40;
            const std::vector<std::int64_t> lengths = {40, 23, 7};
            std::vector<std::int32_t> ids(std::size_t(B * T)), types(ids.size());
            for (std::size_t i = 0; i < ids.size(); ++i) {
                ids[i] = std::int32_t((i * 37 + 11) % std::size_t(c.vocab_size));
                types[i] = std::int32_t(i % 40 >= 20);
            }
            const auto dhidden = random_tensor<float>({B * T, c.d_model}, 73).data;
            const auto options = [&](bool bf16, gpu::attention_path path) {
                gpu::encoder_plan_options o;
                o.batch = B, o.time = T, o.bf16_weights = bf16, o.attention = path;
                return o;
            };
            const std::size_t p =
                gpu::plan_encoder_step(c, options(true, gpu::attention_path::fused)).at("parameters").bytes /
                sizeof(float);
            std::vector<float> weights = random_tensor<float>({index_t(p)}, 74, 0.05).data;
            for (const gpu::parameter_slice& s : gpu::encoder_parameter_layout(c))
                if (s.name.find("LayerNorm.weight") != std::string::npos)
                    for (std::size_t i = 0; i < s.size(); ++i)
                        weights[s.offset + i] += 1.0f;
            // The CPU executor: hidden states and gradients.
            const auto cpu_run = [&](bool bf16, gpu::attention_path path) {
                const gpu::encoder_plan_options o = options(bf16, path);
                const gpu::arena_plan plan = gpu::plan_encoder_step(c, o);
                std::vector<std::byte> host(plan.bytes());
                counting_cpu_ops cpu;
                gpu::encoder_step<counting_cpu_ops> step(c, o, plan, host.data(), cpu);
                std::copy(weights.begin(), weights.end(),
                          reinterpret_cast<float*>(host.data() + plan.at("parameters").offset));
                const float* h = step.forward(ids.data(), lengths.data(), types.data());
                std::pair<std::vector<float>, std::vector<float>> r{{h, h + B * T * c.d_model}, {}};
                step.backward(dhidden.data());
                if (path == gpu::attention_path::fused) // one fused forward and backward per layer, nothing else
                    BOOST_TEST(
                        (cpu.fused_forward == c.n_layers && cpu.fused_backward == c.n_layers && cpu.others == 0));
                const float* g = reinterpret_cast<const float*>(host.data() + plan.at("gradients").offset);
                r.second.assign(g, g + p);
                return r;
            };
            const auto [hidden32, grads32] = cpu_run(false, gpu::attention_path::rows);
            const auto [cpu_hidden, cpu_grads] = cpu_run(true, gpu::attention_path::fused);

            const gpu::encoder_plan_options o = options(true, gpu::attention_path::fused);
            const gpu::arena_plan plan = gpu::plan_encoder_step(c, o);
            gpu::device_arena arena(plan);
            gpu::blas products(arena.at<std::byte>(plan.at("blas.workspace").offset), gpu::blas_workspace_bytes);
            gpu::gpu_ops ex{&products, nullptr};
            gpu::encoder_step<gpu::gpu_ops> step(c, o, plan, arena.at<std::byte>(0), ex);
            auto download = [&](const char* name) {
                std::vector<float> v(plan.at(name).bytes / sizeof(float));
                gpu::synchronize();
                gpu::copy_to_host(v.data(), arena.at<float>(plan.at(name).offset), v.size() * sizeof(float));
                return v;
            };
            gpu::copy_to_device(arena.at<float>(plan.at("parameters").offset), weights.data(), p * sizeof(float));
            step.parameters_changed();
            auto run = [&] {
                step.zero_gradients();
                step.forward(ids.data(), lengths.data(), types.data());
                gpu::copy_to_device(step.dhidden_buffer(), dhidden.data(), dhidden.size() * sizeof(float));
                step.backward(step.dhidden_buffer());
            };
            run();
            const std::vector<float> hidden = download("hidden"), grads = download("gradients");
            double worst = expect_bf16_close(hidden, cpu_hidden, hidden32, "hidden states");
            for (const gpu::parameter_slice& s : gpu::encoder_parameter_layout(c)) {
                // Left out: the pooler (frozen), the key biases, and the last LayerNorm's bias, whose gradient is the
                // sum of dhidden: no bf16 in it (encoder_step_matches_the_cpu_executor checks it in f32).
                if (s.name.starts_with("pooler.") || s.name.find("self.key.bias") != std::string::npos ||
                    s.name == "encoder.layer.1.output.LayerNorm.bias")
                    continue;
                worst = std::max(worst, expect_bf16_close({grads.data() + s.offset, s.size()},
                                                          {cpu_grads.data() + s.offset, s.size()},
                                                          {grads32.data() + s.offset, s.size()}, s.name));
            }
            BOOST_TEST_MESSAGE("encoder, fused: |GPU - CPU bf16| at most " << worst << " of |CPU bf16 - CPU f32|");
            run();
            BOOST_TEST(same_bits(download("hidden"), hidden));
            BOOST_TEST(same_bits(download("gradients"), grads));
            BOOST_CHECK_THROW(gpu::plan_encoder_step(c, options(false, gpu::attention_path::fused)), tl::error);
        }
    }
}

// A sentence encoder's contrastive step (src/cuda/ranking.cu against ranking_row.hpp's CPU drivers): pooling forward
// and backward in the three modes, both normalisations and their backward bit for bit (the same f32 sums and IEEE
// double arithmetic in the same order); the ranking loss's log-sum-exps within 1e-12 and its score gradient within
// 1e-6 (the device's exp and log in double may differ from the host's in the last bit), symmetric or not.
BOOST_AUTO_TEST_CASE(pooling_and_ranking_rows_match_the_cpu, needs_device()) {
    const long long n = 12, time = 30;
    const int d = 96;
    std::vector<std::int64_t> lengths(static_cast<std::size_t>(n));
    for (long long b = 0; b < n; ++b)
        lengths[std::size_t(b)] = 1 + (b * 7) % time;
    // Each text in a row of its own, then packed end to end (gpu::pack_texts): the pooling's segments.
    for (const bool packed : {false, true}) {
        const gpu::text_packing layout = gpu::pack_texts(lengths.data(), n, time, packed);
        const long long tokens = layout.tokens();
        std::vector<std::int64_t> starts(static_cast<std::size_t>(n));
        std::vector<std::int32_t> owner(static_cast<std::size_t>(tokens), -1);
        for (long long b = 0; b < n; ++b) {
            starts[std::size_t(b)] = layout.row[std::size_t(b)] * time + layout.offset[std::size_t(b)];
            std::fill_n(owner.begin() + starts[std::size_t(b)], lengths[std::size_t(b)], std::int32_t(b));
        }
        const auto hidden = random_tensor<float>({tokens, d}, 81), dpooled = random_tensor<float>({n, d}, 82);
        for (const gpu::pool_kind mode : {gpu::pool_kind::mean, gpu::pool_kind::cls, gpu::pool_kind::max}) {
            device_run r;
            const int bh = r.input(hidden.data), bs = r.input(starts), bl = r.input(lengths), bo = r.input(owner);
            const int bd = r.input(dpooled.data);
            const int bp = r.output<float>(std::size_t(n * d)), ba = r.output<std::int32_t>(std::size_t(n * d));
            const int bdh = r.output<float>(std::size_t(tokens * d));
            r.allocate();
            gpu::pool_forward(mode, r.at<float>(bp), r.at<std::int32_t>(ba), r.at<float>(bh), r.at<std::int64_t>(bs),
                              r.at<std::int64_t>(bl), n, d);
            gpu::pool_backward(mode, r.at<float>(bdh), r.at<float>(bd), r.at<std::int32_t>(ba), r.at<std::int32_t>(bo),
                               r.at<std::int64_t>(bs), r.at<std::int64_t>(bl), tokens, d);
            std::vector<float> pooled(std::size_t(n * d)), dh(std::size_t(tokens * d));
            std::vector<std::int32_t> arg(std::size_t(n * d));
            gpu::pool_segments(mode, pooled.data(), arg.data(), hidden.data.data(), starts.data(), lengths.data(), n,
                               d);
            gpu::pool_backward_segments(mode, dh.data(), dpooled.data.data(), arg.data(), owner.data(), starts.data(),
                                        lengths.data(), tokens, d);
            BOOST_TEST(same_bits(r.get<float>(bp), pooled), "mode " << int(mode) << (packed ? ", packed" : ""));
            BOOST_TEST(same_bits(r.get<float>(bdh), dh), "mode " << int(mode) << (packed ? ", packed" : ""));
            if (mode == gpu::pool_kind::max) BOOST_TEST(r.get<std::int32_t>(ba) == arg);
        }
    }
    {
        std::vector<float> x = random_tensor<float>({n, d}, 83).data;
        std::fill_n(x.begin() + 2 * d, d, 0.0f); // a zero row: the clamp
        const auto g = random_tensor<float>({n, d}, 84).data;
        for (const bool float_norm : {false, true}) {
            device_run r;
            const int bx = r.input(x), bg = r.input(g), by = r.output<float>(x.size());
            const int bn = r.output<double>(std::size_t(n));
            r.allocate();
            gpu::normalize_rows(r.at<float>(by), r.at<double>(bn), r.at<float>(bx), n, d, float_norm);
            gpu::normalize_rows_backward(r.at<float>(bg), r.at<float>(by), r.at<double>(bn), n, d);
            std::vector<float> y(x.size()), dx = g;
            std::vector<double> norms(static_cast<std::size_t>(n));
            gpu::unit_rows(y.data(), norms.data(), x.data(), n, d, float_norm);
            gpu::unit_rows_backward(dx.data(), y.data(), norms.data(), n, d);
            BOOST_TEST(same_bits(r.get<float>(by), y));
            BOOST_TEST(r.get<double>(bn) == norms);
            BOOST_TEST(same_bits(r.get<float>(bg), dx));
        }
    }
    const long long b = 9, m = 27; // 9 anchors, 9 positives and 18 negatives
    const auto scores = random_tensor<float>({b, m}, 85, 8.0).data;
    for (const bool symmetric : {false, true}) {
        device_run r;
        const int bs = r.input(scores), brow = r.output<double>(std::size_t(b)),
                  bcol = r.output<double>(std::size_t(b));
        const int bt = r.output<double>(std::size_t(2 * b));
        r.allocate();
        const double w = 1.0 / double(b) * (symmetric ? 0.5 : 1.0);
        gpu::ranking_lse(r.at<double>(brow), r.at<double>(bcol), r.at<double>(bt), r.at<float>(bs), b, m, symmetric);
        gpu::ranking_dscores(r.at<float>(bs), r.at<double>(brow), r.at<double>(bcol), b, m, w, symmetric);
        std::vector<double> row(static_cast<std::size_t>(b)), col(row.size()), terms(2 * row.size());
        std::vector<float> ds = scores;
        gpu::ranking_lse_rows(row.data(), col.data(), terms.data(), ds.data(), b, m, symmetric);
        gpu::ranking_dscores_rows(ds.data(), row.data(), col.data(), b, m, w, symmetric);
        auto close = [](const std::vector<double>& a, const std::vector<double>& e) {
            double err = 0;
            for (std::size_t i = 0; i < a.size(); ++i)
                err = std::max(err, std::abs(a[i] - e[i]) / std::max(1.0, std::abs(e[i])));
            return err;
        };
        BOOST_TEST(close(r.get<double>(brow), row) < 1e-12, "symmetric " << symmetric);
        BOOST_TEST(close(r.get<double>(bcol), col) < 1e-12, "symmetric " << symmetric);
        BOOST_TEST(close(r.get<double>(bt), terms) < 1e-12, "symmetric " << symmetric);
        BOOST_TEST(max_rel(r.get<float>(bs), ds) < 1e-6, "symmetric " << symmetric);
    }
}

// The ranking steps' cases: a BERT of width 64, 3 pairs with one hard negative each (texts of 3 to 40 tokens), mean
// pooling, normalised, a symmetric loss, 09's AdamW.
struct ranking_case {
    model_config c = bert();
    index_t pairs = 3, negatives = 1;
    embed::token_batch tokens = batch(c.vocab_size, pairs*(2 + negatives), 40);
    embed::sentence_config sc{.pooling = pooling_mode::mean, .normalize = true, .max_length = 48};
    embed::ranking_loss_options loss{.scale = 20, .symmetric = true};
    adamw_options options{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01};

    static model_config bert() {
        model_config c = tl_test::tiny_bert(61, 48);
        c.d_model = 64, c.d_ff = 128, c.init_std = 0.05;
        return c;
    }
    static embed::token_batch batch(index_t vocab, index_t n, index_t time) {
        embed::token_batch tokens;
        tokens.batch = n, tokens.time = time;
        for (index_t r = 0; r < n; ++r)
            tokens.lengths.push_back(3 + (r * 11) % (time - 2));
        for (index_t i = 0; i < n * time; ++i) {
            const bool real = i % time < tokens.lengths[std::size_t(i / time)];
            tokens.ids.push_back(real ? token_t((i * 37 + 11) % vocab) : 0);
            tokens.type_ids.push_back(0);
        }
        return tokens;
    }
};

// gpu::ranking_step (cuda/ranking_step.hpp) on the GPU against the same step on the CPU executor (itself checked
// against tl's sentence encoder and ranking loss in test_encoder): a BERT of width 64, 3 pairs of a plan of 4 with
// one hard negative each (texts of 3 to 40 tokens, padded to 48, or packed end to end into rows of 48), mean
// pooling, normalised, symmetric; f32 and bf16 products: the loss within 1e-5 relative (bf16 1e-4), every gradient
// within 1e-4 of its tensor's scale; the same step again gives the same bits; after clipping and one AdamW step the
// parameters within 1e-2 lr. In bf16 the gradients and the parameters after the step as close to the CPU executor's
// bf16 ones as those are to its f32 ones (expect_bf16_close: the f32 variant just before runs the same inputs).
BOOST_AUTO_TEST_CASE(ranking_step_matches_the_cpu_executor, needs_device()) {
    const ranking_case r;
    const model_config& c = r.c;
    std::map<std::string, std::vector<float>> f32_gradients, f32_parameters; // the f32 variant's CPU executor's
    for (const int variant : {0, 1, 2, 3}) {
        const bool bf16 = (variant & 1) != 0, packed = variant >= 2;
        BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products") << (packed ? ", packed texts" : "")) {
            const gpu::ranking_step_shape shape{.pairs = 4, .negatives = r.negatives, .bf16 = bf16, .packed = packed};
            gpu::ranking_step<gpu::cpu_ops> cpu(c, r.sc, shape);
            gpu::ranking_step<gpu::gpu_ops> gpu_step(c, r.sc, shape);
            std::vector<float> weights =
                random_tensor<float>(
                    {index_t(cpu.encoder().layout().back().offset + cpu.encoder().layout().back().size())}, 72, 0.05)
                    .data;
            for (const gpu::parameter_slice& s : cpu.encoder().layout()) {
                if (s.name.find("LayerNorm.weight") != std::string::npos)
                    for (std::size_t i = 0; i < s.size(); ++i)
                        weights[s.offset + i] += 1.0f;
                std::copy_n(weights.data() + s.offset, s.size(), cpu.parameter(s.name));
                gpu::copy_to_device(gpu_step.parameter(s.name), weights.data() + s.offset, s.size() * sizeof(float));
            }
            cpu.encoder().parameters_changed();
            gpu_step.encoder().parameters_changed();
            cpu.zero_gradients();
            const double cpu_loss = cpu.forward_backward(r.tokens, r.pairs, r.loss);
            auto run = [&] {
                gpu_step.zero_gradients();
                return gpu_step.forward_backward(r.tokens, r.pairs, r.loss);
            };
            const double gpu_loss = run();
            auto gradients = [&] {
                std::vector<float> all;
                for (const gpu::parameter_slice& s : gpu_step.encoder().layout()) {
                    std::vector<float> g(s.size());
                    gpu::synchronize();
                    gpu::copy_to_host(g.data(), gpu_step.gradient(s.name), s.size() * sizeof(float));
                    all.insert(all.end(), g.begin(), g.end());
                }
                return all;
            };
            const std::vector<float> grads = gradients();
            BOOST_TEST(std::abs(gpu_loss - cpu_loss) <= (bf16 ? 1e-4 : 1e-5) * std::abs(cpu_loss));
            double worst = 0;
            for (const gpu::parameter_slice& s : cpu.encoder().layout()) {
                if (s.name.starts_with("pooler.")) continue;
                const std::span<const float> cpu_gradient{cpu.gradient(s.name), s.size()};
                if (bf16) {
                    worst = std::max(worst, expect_bf16_close({grads.data() + s.offset, s.size()}, cpu_gradient,
                                                              f32_gradients.at(s.name), s.name, ranking_bf16_factor));
                    continue;
                }
                f32_gradients[s.name].assign(cpu_gradient.begin(), cpu_gradient.end());
                const std::size_t key = s.name.find("self.key.bias");
                const float* scale_of =
                    cpu.gradient(key == std::string::npos ? s.name : s.name.substr(0, key) + "self.query.bias");
                double err = 0, scale = 0;
                for (std::size_t i = 0; i < s.size(); ++i) {
                    err = std::max(err, std::abs(double(grads[s.offset + i]) - double(cpu.gradient(s.name)[i])));
                    scale = std::max(scale, std::abs(double(scale_of[i])));
                }
                BOOST_TEST(err <= 1e-4 * scale, s.name << ": " << err << " against " << scale);
            }
            if (bf16)
                BOOST_TEST_MESSAGE("bf16 gradients: |GPU - CPU bf16| at most " << worst << " of |CPU bf16 - CPU f32|");
            BOOST_TEST(run() == gpu_loss); // deterministic
            BOOST_TEST(same_bits(gradients(), grads));
            cpu.clip_gradients(1.0), gpu_step.clip_gradients(1.0);
            cpu.adamw_step(1e-3, r.options), gpu_step.adamw_step(1e-3, r.options);
            // The parameters after the step, over all tensors at once (one AdamW step moves each by about lr, its
            // sign the gradient's: a gradient near 0 whose sign differs moves it 2 lr apart).
            std::vector<float> moved_gpu, moved_cpu, moved_f32;
            for (const gpu::parameter_slice& s : cpu.encoder().layout()) {
                if (s.name.find("self.key.bias") != std::string::npos) continue; // noise-driven: see test_encoder
                std::vector<float> p(s.size());
                gpu::synchronize();
                gpu::copy_to_host(p.data(), gpu_step.parameter(s.name), s.size() * sizeof(float));
                moved_gpu.insert(moved_gpu.end(), p.begin(), p.end());
                moved_cpu.insert(moved_cpu.end(), cpu.parameter(s.name), cpu.parameter(s.name) + s.size());
                if (bf16)
                    moved_f32.insert(moved_f32.end(), f32_parameters.at(s.name).begin(),
                                     f32_parameters.at(s.name).end());
                else
                    f32_parameters[s.name].assign(cpu.parameter(s.name), cpu.parameter(s.name) + s.size());
            }
            if (bf16) {
                const double ratio = expect_bf16_close(moved_gpu, moved_cpu, moved_f32, "parameters after the step",
                                                       ranking_bf16_factor);
                BOOST_TEST_MESSAGE("bf16 parameters: |GPU - CPU bf16| at most " << ratio << " of |CPU bf16 - CPU f32|");
            } else {
                double moved = 0;
                for (std::size_t i = 0; i < moved_gpu.size(); ++i)
                    moved = std::max(moved, std::abs(double(moved_gpu[i]) - double(moved_cpu[i])));
                BOOST_TEST(moved <= 1e-2 * 1e-3);
            }
        }
    }
}

// The same with LoRA on the encoder (ranking_step_shape::lora: rank 4, alpha 8, every projection, as 09_retrieval's
// adapter; the LoRA path is checked against tl::encoder with that adapter in test_encoder): random base and adapter
// (B not zero, so every adapter gradient is non-zero); the loss within 1e-5 relative (bf16 1e-4), every adapter
// gradient within 1e-4 of its tensor's scale, the same bits again; then the CPU's gradients on both sides through
// clipping and AdamW, so that both start the next step from the same adapters: after two steps the adapters bit for
// bit and the frozen base bit for bit as loaded. In bf16 each step's adapter gradients, all tensors at once (a LoRA
// tensor's few elements make its own maximum a noisy measure), as close to the CPU executor's bf16 ones as those are
// to its f32 ones (expect_bf16_close: the f32 variant just before runs the same inputs, masks and steps). QLoRA too
// (lora.quantized_base: the projection weights random, quantised to NF4 on the host and set on both steps; the QLoRA
// path is checked against tl::encoder in test_encoder), with its NF4 bytes on the device unchanged after the steps. And
// with LoRA dropout 0.1 (texts packed, so that the masks follow sentence_encoder's token places: encoder_step's
// dropout_positions; test_encoder checks those masks against tl::encoder's): the same bounds over two steps with new
// masks, the training-forward counts equal, the determinism rerun at the same count.
BOOST_AUTO_TEST_CASE(ranking_step_with_lora_matches_the_cpu_executor, needs_device()) {
    const ranking_case r;
    const model_config& c = r.c;
    std::vector<float> f32_gradients[2]; // the f32 variant's CPU executor's adapter gradients, each step's
    for (const int variant : {0, 1, 2, 3, 4, 5, 6, 7}) {
        const bool bf16 = (variant & 1) != 0, quantized = (variant & 2) != 0, dropout = variant >= 4;
        const lora_config lora{.rank = 4,
                               .alpha = 8,
                               .dropout = dropout ? 0.1f : 0.0f,
                               .targets = lora_attention | lora_up | lora_down,
                               .quantized_base = quantized};
        BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products")
                           << (quantized ? ", QLoRA" : "") << (dropout ? ", dropout 0.1, packed" : "")) {
            const gpu::ranking_step_shape shape{
                .pairs = 4, .negatives = r.negatives, .bf16 = bf16, .lora = lora, .packed = dropout};
            gpu::ranking_step<gpu::cpu_ops> cpu(c, r.sc, shape);
            gpu::ranking_step<gpu::gpu_ops> gpu_step(c, r.sc, shape);
            std::uint64_t seed = 72;
            std::vector<std::vector<float>> base;
            for (const auto* layout : {&cpu.encoder().layout(), &cpu.encoder().adapter_layout()})
                for (const gpu::parameter_slice& s : *layout) {
                    std::vector<float> w = random_tensor<float>({index_t(s.size())}, seed++, 0.05).data;
                    if (s.name.find("LayerNorm.weight") != std::string::npos)
                        for (float& v : w)
                            v += 1.0f;
                    std::copy_n(w.data(), s.size(), cpu.parameter(s.name));
                    gpu::copy_to_device(gpu_step.parameter(s.name), w.data(), s.size() * sizeof(float));
                    if (layout == &cpu.encoder().layout()) base.push_back(std::move(w));
                }
            std::vector<nf4_tensor> nf4; // QLoRA: the projection weights, quantised on the host
            for (const gpu::nf4_slice& s : cpu.encoder().quantized_layout()) {
                const std::vector<float> w = random_tensor<float>({index_t(s.n)}, seed++, 0.05).data;
                // one row: the blocks run over the flat weight, whatever its shape
                nf4.push_back(quantize_nf4(cview<float>{w.data(), {1, index_t(s.n)}}, true));
                cpu.encoder().set_quantized_weight(s.name, nf4.back());
                gpu_step.encoder().set_quantized_weight(s.name, nf4.back());
            }
            BOOST_TEST(nf4.size() == (quantized ? 6u * std::size_t(c.n_layers) : 0u));
            cpu.encoder().parameters_changed();
            gpu_step.encoder().parameters_changed();
            const auto& adapter = cpu.encoder().adapter_layout();
            auto download = [](const float* device, std::size_t count) {
                std::vector<float> host(count);
                gpu::synchronize();
                gpu::copy_to_host(host.data(), device, count * sizeof(float));
                return host;
            };
            auto gradients = [&] {
                std::vector<float> all;
                for (const gpu::parameter_slice& s : adapter) {
                    const std::vector<float> g = download(gpu_step.gradient(s.name), s.size());
                    all.insert(all.end(), g.begin(), g.end());
                }
                return all;
            };
            auto run = [&] {
                gpu_step.zero_gradients();
                return gpu_step.forward_backward(r.tokens, r.pairs, r.loss);
            };
            for (int k = 0; k < 2; ++k) {
                cpu.zero_gradients();
                const double cpu_loss = cpu.forward_backward(r.tokens, r.pairs, r.loss);
                const std::uint64_t calls = gpu_step.encoder().dropout_calls();
                const double gpu_loss = run();
                BOOST_TEST(gpu_step.encoder().dropout_calls() == cpu.encoder().dropout_calls());
                BOOST_TEST(cpu.encoder().dropout_calls() == (dropout ? std::uint64_t(k + 1) : 0u));
                const std::vector<float> grads = gradients();
                BOOST_TEST(std::abs(gpu_loss - cpu_loss) <= (bf16 ? 1e-4 : 1e-5) * std::abs(cpu_loss), "step " << k);
                std::vector<float> cpu_grads;
                std::size_t at = 0;
                for (const gpu::parameter_slice& s : adapter) {
                    const float* cpu_gradient = cpu.gradient(s.name);
                    cpu_grads.insert(cpu_grads.end(), cpu_gradient, cpu_gradient + s.size());
                    double err = 0, scale = 0;
                    for (std::size_t i = 0; i < s.size(); ++i) {
                        err = std::max(err, std::abs(double(grads[at + i]) - double(cpu_gradient[i])));
                        scale = std::max(scale, std::abs(double(cpu_gradient[i])));
                    }
                    at += s.size();
                    if (!bf16) BOOST_TEST(err <= 1e-4 * scale, "step " << k << ", " << s.name << ": " << err);
                }
                if (bf16) {
                    const double ratio =
                        expect_bf16_close(grads, cpu_grads, f32_gradients[k],
                                          "step " + std::to_string(k) + ", adapter gradients", ranking_bf16_factor);
                    BOOST_TEST_MESSAGE("step " << k << ", bf16 adapter gradients: |GPU - CPU bf16| at most " << ratio
                                               << " of |CPU bf16 - CPU f32|");
                } else {
                    f32_gradients[k] = cpu_grads;
                }
                gpu_step.encoder().set_dropout_calls(calls); // the same masks again
                BOOST_TEST(run() == gpu_loss);               // deterministic
                BOOST_TEST(same_bits(gradients(), grads));
                // The optimizer from the CPU executor's gradients on both sides (each side's own would let a gradient
                // near 0 of the other sign move an element 2 lr apart): the norm, then the clipped gradients.
                auto upload_cpu_gradients = [&] {
                    for (const gpu::parameter_slice& s : adapter)
                        gpu::copy_to_device(gpu_step.gradient(s.name), cpu.gradient(s.name), s.size() * sizeof(float));
                };
                upload_cpu_gradients();
                const double cpu_norm = cpu.clip_gradients(1.0), gpu_norm = gpu_step.clip_gradients(1.0);
                BOOST_TEST(std::abs(gpu_norm - cpu_norm) <= 1e-12 * cpu_norm, "step " << k);
                upload_cpu_gradients();
                cpu.adamw_step(1e-3, r.options), gpu_step.adamw_step(1e-3, r.options);
            }
            std::size_t adapters_differ = 0;
            for (const gpu::parameter_slice& s : adapter)
                adapters_differ +=
                    !same_bits(download(gpu_step.parameter(s.name), s.size()),
                               std::vector<float>(cpu.parameter(s.name), cpu.parameter(s.name) + s.size()));
            BOOST_TEST(adapters_differ == 0u);
            std::size_t i = 0, base_changed = 0;
            for (const gpu::parameter_slice& s : cpu.encoder().layout())
                base_changed += !same_bits(download(gpu_step.parameter(s.name), s.size()), base[i++]);
            BOOST_TEST(base_changed == 0u);
            std::size_t nf4_changed = 0;
            i = 0;
            for (const gpu::nf4_slice& s : gpu_step.encoder().quantized_layout()) {
                const gpu::nf4_weight d = gpu_step.encoder().quantized_weight(s.name);
                const nf4_tensor& q = nf4[i++];
                std::vector<std::uint8_t> codes(q.codes.size()), scales(q.qabsmax.size());
                std::vector<float> scales2(q.absmax2.size());
                gpu::synchronize();
                gpu::copy_to_host(codes.data(), d.codes, codes.size());
                gpu::copy_to_host(scales.data(), d.qabsmax, scales.size());
                gpu::copy_to_host(scales2.data(), d.absmax2, scales2.size() * sizeof(float));
                nf4_changed += !std::equal(codes.begin(), codes.end(), q.codes.begin()) ||
                               !std::equal(scales.begin(), scales.end(), q.qabsmax.begin()) ||
                               !same_bits(scales2, std::vector<float>(q.absmax2.begin(), q.absmax2.end())) ||
                               d.offset != q.offset;
            }
            BOOST_TEST(nf4_changed == 0u);
        }
    }
}

// ---- mixture of experts (moe.cu against moe_row.hpp's CPU drivers, which test_moe checks inside the decoder step
// against tl::decoder) ----

// Every MoE kernel on 300 tokens, 8 experts, top 3, d 200, f 96 (several strides of 256 threads for none of them):
// routing (the same experts, probabilities and weights within 1e-6: double exp on both sides), the dispatch's
// permutation and offsets exactly (a stable sort: one answer), gather, combine and its backward bit for bit (the
// same double sums in the same order), SwiGLU forward and backward within 1e-6, the slot weights' gradient (a tree
// against a loop, 1e-12) and its scaling bit for bit, the router's backward with and without the aux coefficients,
// the probability sums (1e-12).
BOOST_AUTO_TEST_CASE(moe_kernels_match_the_cpu, needs_device()) {
    const long long n = 300;
    const int e = 8, k = 3, d = 200, f = 96;
    const long long slots = n * k;
    std::vector<float> logits = random_tensor<float>({n, e}, 60, 2.0).data;
    logits[5 * e + 2] = logits[5 * e + 6]; // a tie: the lower expert goes first on both
    const std::vector<float> x = random_tensor<float>({n, d}, 61).data, dy = random_tensor<float>({n, d}, 62).data;
    const std::vector<float> gate_up = random_tensor<float>({slots, 2 * f}, 63, 3.0).data;
    const std::vector<float> dh = random_tensor<float>({slots, f}, 64).data;
    const std::vector<float> rows = random_tensor<float>({slots, d}, 65).data;
    std::vector<double> aux(static_cast<std::size_t>(e));
    for (int i = 0; i < e; ++i)
        aux[std::size_t(i)] = 0.01 * (i + 1);

    // CPU
    std::vector<float> probs = logits, weight(static_cast<std::size_t>(slots));
    std::vector<std::int32_t> expert(static_cast<std::size_t>(slots)), offsets(static_cast<std::size_t>(e) + 1),
        slot_row(static_cast<std::size_t>(slots)), row_token(static_cast<std::size_t>(slots));
    gpu::moe_route_rows(probs.data(), expert.data(), weight.data(), n, e, k);
    gpu::moe_dispatch_rows(offsets.data(), slot_row.data(), row_token.data(), expert.data(), slots, k, e);
    std::vector<float> gathered(static_cast<std::size_t>(slots * d)), hidden(static_cast<std::size_t>(slots * f)),
        dgu(gate_up.size()), y(x.size()), dx = dy, dhs = dh, rows_scaled = rows, dlogits(probs.size()),
                                          dlogits_aux(probs.size());
    const std::vector<double> sums_before(static_cast<std::size_t>(e), 0.5); // the kernel adds to what is there
    std::vector<double> dweight(static_cast<std::size_t>(slots)), sums = sums_before;
    gpu::moe_gather_rows(gathered.data(), row_token.data(), x.data(), slots, d);
    gpu::moe_swiglu_rows(hidden.data(), gate_up.data(), slots, f);
    gpu::moe_swiglu_backward_rows(dgu.data(), dh.data(), gate_up.data(), slots, f);
    gpu::moe_combine_rows(y.data(), rows.data(), slot_row.data(), weight.data(), n, k, d);
    gpu::moe_combine_backward_rows(dx.data(), rows.data(), slot_row.data(), n, k, d);
    gpu::moe_weight_gradient_rows(dweight.data(), dhs.data(), rows_scaled.data(), hidden.data(), slot_row.data(),
                                  weight.data(), slots, f, d);
    gpu::moe_router_backward_rows(dlogits.data(), probs.data(), expert.data(), weight.data(), dweight.data(), nullptr,
                                  n, e, k);
    gpu::moe_router_backward_rows(dlogits_aux.data(), probs.data(), expert.data(), weight.data(), dweight.data(),
                                  aux.data(), n, e, k);
    gpu::moe_probability_sums_rows(sums.data(), probs.data(), n, e);

    // GPU: each kernel from the CPU's inputs to it, so that every comparison isolates one kernel
    device_run g;
    const int b_probs = g.input(logits), b_expert = g.output<std::int32_t>(expert.size()),
              b_weight = g.output<float>(weight.size()), b_offsets = g.output<std::int32_t>(offsets.size()),
              b_slot_row = g.output<std::int32_t>(slot_row.size()),
              b_row_token = g.output<std::int32_t>(row_token.size()), b_counts = g.output<std::int32_t>(std::size_t(e));
    const int b_cpu_expert = g.input(expert), b_cpu_weight = g.input(weight), b_cpu_slot_row = g.input(slot_row),
              b_cpu_row_token = g.input(row_token), b_cpu_probs = g.input(probs);
    const int b_x = g.input(x), b_gathered = g.output<float>(gathered.size()), b_gate_up = g.input(gate_up),
              b_hidden = g.output<float>(hidden.size()), b_dh = g.input(dh), b_dgu = g.output<float>(dgu.size());
    const int b_rows = g.input(rows), b_y = g.output<float>(y.size()), b_dx = g.input(dy);
    const int b_cpu_hidden = g.input(hidden), b_dhs = g.input(dh), b_rows_scaled = g.input(rows),
              b_dweight = g.output<double>(dweight.size()), b_cpu_dweight = g.input(dweight);
    const int b_dlogits = g.output<float>(dlogits.size()), b_dlogits_aux = g.output<float>(dlogits.size()),
              b_aux = g.input(aux), b_sums = g.input(sums_before);
    g.allocate();
    gpu::moe_route(g.at<float>(b_probs), g.at<std::int32_t>(b_expert), g.at<float>(b_weight), n, e, k);
    gpu::moe_dispatch(g.at<std::int32_t>(b_offsets), g.at<std::int32_t>(b_slot_row), g.at<std::int32_t>(b_row_token),
                      g.at<std::int32_t>(b_counts), g.at<std::int32_t>(b_cpu_expert), slots, k, e);
    gpu::moe_gather(g.at<float>(b_gathered), g.at<std::int32_t>(b_cpu_row_token), g.at<float>(b_x), slots, d);
    gpu::moe_swiglu_forward(g.at<float>(b_hidden), g.at<float>(b_gate_up), slots, f);
    gpu::moe_swiglu_backward(g.at<float>(b_dgu), g.at<float>(b_dh), g.at<float>(b_gate_up), slots, f);
    gpu::moe_combine(g.at<float>(b_y), g.at<float>(b_rows), g.at<std::int32_t>(b_cpu_slot_row),
                     g.at<float>(b_cpu_weight), n, k, d);
    gpu::moe_combine_backward(g.at<float>(b_dx), g.at<float>(b_rows), g.at<std::int32_t>(b_cpu_slot_row), n, k, d);
    gpu::moe_weight_gradient(g.at<double>(b_dweight), g.at<float>(b_dhs), g.at<float>(b_rows_scaled),
                             g.at<float>(b_cpu_hidden), g.at<std::int32_t>(b_cpu_slot_row), g.at<float>(b_cpu_weight),
                             slots, f, d);
    gpu::moe_router_backward(g.at<float>(b_dlogits), g.at<float>(b_cpu_probs), g.at<std::int32_t>(b_cpu_expert),
                             g.at<float>(b_cpu_weight), g.at<double>(b_cpu_dweight), nullptr, n, e, k);
    gpu::moe_router_backward(g.at<float>(b_dlogits_aux), g.at<float>(b_cpu_probs), g.at<std::int32_t>(b_cpu_expert),
                             g.at<float>(b_cpu_weight), g.at<double>(b_cpu_dweight), g.at<double>(b_aux), n, e, k);
    gpu::moe_probability_sums(g.at<double>(b_sums), g.at<float>(b_cpu_probs), n, e);

    BOOST_TEST((g.get<std::int32_t>(b_expert) == expert));
    BOOST_TEST(max_rel(g.get<float>(b_probs), probs) < 1e-6);
    BOOST_TEST(max_rel(g.get<float>(b_weight), weight) < 1e-6);
    BOOST_TEST((g.get<std::int32_t>(b_offsets) == offsets));
    BOOST_TEST((g.get<std::int32_t>(b_slot_row) == slot_row));
    BOOST_TEST((g.get<std::int32_t>(b_row_token) == row_token));
    BOOST_TEST(same_bits(g.get<float>(b_gathered), gathered));
    BOOST_TEST(max_rel(g.get<float>(b_hidden), hidden) < 1e-6);
    BOOST_TEST(max_rel(g.get<float>(b_dgu), dgu) < 1e-6);
    BOOST_TEST(same_bits(g.get<float>(b_y), y));
    BOOST_TEST(same_bits(g.get<float>(b_dx), dx));
    BOOST_TEST(same_bits(g.get<float>(b_dhs), dhs));
    BOOST_TEST(same_bits(g.get<float>(b_rows_scaled), rows_scaled));
    const std::vector<double> gw = g.get<double>(b_dweight), gs = g.get<double>(b_sums);
    for (std::size_t i = 0; i < dweight.size(); ++i)
        BOOST_TEST(std::abs(gw[i] - dweight[i]) <= 1e-12 * std::max(1.0, std::abs(dweight[i])), "slot " << i);
    for (std::size_t i = 0; i < sums.size(); ++i)
        BOOST_TEST(std::abs(gs[i] - sums[i]) <= 1e-12 * sums[i], "expert " << i);
    BOOST_TEST(max_rel(g.get<float>(b_dlogits), dlogits) < 1e-6);
    BOOST_TEST(max_rel(g.get<float>(b_dlogits_aux), dlogits_aux) < 1e-6);
    BOOST_TEST(!same_bits(dlogits, dlogits_aux)); // the aux coefficients count
}

// The training step with experts (windowed_tiny's shape, 4 experts of width 96, top 2, the pooled balancing loss at
// weight 0.1, and per layer) on the GPU against the CPU executor, which test_moe checks against tl::decoder: 3 x 40
// tokens in packed documents, f32 and bf16 products. The same expert counts, the loss (and the aux loss) within 1e-5
// (ten times that in bf16), every gradient within 1e-4 of its tensor's scale (in bf16 as close to the CPU executor's
// bf16 ones as those are to its f32 ones); the same step twice gives the same bits (the dispatch and the combine have
// no atomics); gradient checkpointing bit for bit.
BOOST_AUTO_TEST_CASE(moe_decoder_step_matches_the_cpu_executor, needs_device()) {
    for (const bool per_layer : {false, true}) {
        std::vector<float> cpu_f32_grads; // the f32 iteration's, on the same inputs
        for (const bool bf16 : {false, true}) {
            BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products")
                               << (per_layer ? ", balance per layer" : ", pooled balance")) {
                model_config c = windowed_tiny();
                c.d_ff = 96;
                c.moe = {.n_experts = 4, .top_k = 2, .aux_loss_weight = 0.1, .balance_per_layer = per_layer};
                gpu::decoder_plan_options o;
                o.batch = 3, o.time = 40, o.logits_rows = 50, o.bf16_weights = bf16;
                const step_inputs in(o, c);
                const gpu::arena_plan plan = gpu::plan_decoder_step(in.c, o);
                std::vector<std::byte> host(plan.bytes());
                gpu::cpu_ops cpu;
                gpu::decoder_step<gpu::cpu_ops> cpu_step(in.c, o, plan, host.data(), cpu);
                load_inputs(cpu_step, in, o,
                            [](float* to, const float* from, std::size_t n) { std::copy_n(from, n, to); });
                cpu_step.zero_gradients();
                const double cpu_loss = cpu_step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
                const float* cpu_grads = reinterpret_cast<float*>(host.data() + plan.at("gradients").offset);
                if (!bf16) cpu_f32_grads.assign(cpu_grads, cpu_grads + in.weights.size());

                gpu_step g(in, o);
                const double gpu_loss = g.run(in);
                BOOST_TEST_MESSAGE("loss: CPU executor " << cpu_loss << " (aux " << cpu_step.aux_loss() << "), GPU "
                                                         << gpu_loss << " (aux " << g.step.aux_loss() << ")");
                for (int l = 0; l < c.n_layers; ++l)
                    BOOST_TEST((g.step.expert_counts(l) == cpu_step.expert_counts(l)), "layer " << l);
                const double bound = bf16 ? 10 : 1;
                BOOST_TEST(std::abs(gpu_loss - cpu_loss) < bound * 1e-5 * cpu_loss);
                BOOST_TEST(std::abs(g.step.aux_loss() - cpu_step.aux_loss()) < bound * 1e-5 * cpu_step.aux_loss());
                const std::vector<float> grads = g.download("gradients");
                BOOST_TEST(g.run(in) == gpu_loss);
                BOOST_TEST(same_bits(g.download("gradients"), grads));
                if (bf16)
                    expect_bf16_gradients_close(grads, cpu_grads, cpu_f32_grads.data(),
                                                gpu::decoder_parameter_layout(in.c));
                else
                    expect_gradients_close(grads, cpu_grads, gpu::decoder_parameter_layout(in.c), 1e-4);
                o.checkpointing = true;
                gpu_step checkpointed(in, o);
                BOOST_TEST(checkpointed.run(in) == gpu_loss);
                BOOST_TEST(same_bits(checkpointed.download("gradients"), grads));
            }
        }
    }
}

// LoRA on attention with experts (what tl::decoder allows with them: the router and the experts frozen) on the GPU
// against the CPU executor, which test_moe checks against tl::decoder: windowed_tiny's shape with 4 experts of width
// 96, top 2, the pooled balancing loss at weight 0.1; rank 4 on q, k, v and o with dropout 0.1 (the GPU draws the
// CPU's masks), f32 and bf16 products. The same expert counts, the loss within 1e-5 (ten times that in bf16), every
// adapter gradient within 1e-4 of its tensor's scale (in bf16 as close to the CPU executor's bf16 ones as those are
// to its f32 ones); then the CPU's gradients through clipping and an AdamW step on
// both sides: the adapter bit for bit, the frozen base unchanged. Written without a GPU: not yet run.
BOOST_AUTO_TEST_CASE(moe_lora_step_matches_the_cpu_executor, needs_device()) {
    std::vector<float> cpu_f32_grads; // the f32 iteration's, on the same inputs
    for (const bool bf16 : {false, true}) {
        BOOST_TEST_CONTEXT((bf16 ? "bf16 products" : "f32 products")) {
            model_config c = windowed_tiny();
            c.d_ff = 96;
            c.moe = {.n_experts = 4, .top_k = 2, .aux_loss_weight = 0.1};
            gpu::decoder_plan_options o;
            o.batch = 3, o.time = 40, o.logits_rows = 50, o.bf16_weights = bf16;
            o.lora = {.rank = 4, .alpha = 8, .dropout = 0.1f, .targets = lora_attention};
            const step_inputs in(o, c);
            const gpu::arena_plan plan = gpu::plan_decoder_step(in.c, o);
            std::vector<std::byte> host(plan.bytes());
            gpu::cpu_ops cpu;
            gpu::decoder_step<gpu::cpu_ops> cpu_step(in.c, o, plan, host.data(), cpu);
            auto host_block = [&](const char* name) {
                return reinterpret_cast<float*>(host.data() + plan.at(name).offset);
            };
            load_inputs(cpu_step, in, o, [](float* to, const float* from, std::size_t n) { std::copy_n(from, n, to); });
            cpu_step.zero_gradients();
            const double cpu_loss = cpu_step.forward_backward(in.ids.data(), in.targets.data(), in.docs.data());
            if (!bf16)
                cpu_f32_grads.assign(host_block("gradients"),
                                     host_block("gradients") + plan.at("gradients").bytes / sizeof(float));

            gpu_step g(in, o);
            const std::vector<float> base = g.download("parameters");
            const double gpu_loss = g.run(in);
            BOOST_TEST_MESSAGE("LoRA with experts, loss: CPU executor " << cpu_loss << " (aux " << cpu_step.aux_loss()
                                                                        << "), GPU " << gpu_loss << " (aux "
                                                                        << g.step.aux_loss() << ")");
            for (int l = 0; l < c.n_layers; ++l)
                BOOST_TEST((g.step.expert_counts(l) == cpu_step.expert_counts(l)), "layer " << l);
            const double bound = bf16 ? 10 : 1;
            BOOST_TEST(std::abs(gpu_loss - cpu_loss) < bound * 1e-5 * cpu_loss);
            BOOST_TEST(std::abs(g.step.aux_loss() - cpu_step.aux_loss()) < bound * 1e-5 * cpu_step.aux_loss());
            expect_lora_update_matches(g, cpu_step, host_block, in, o, base, cpu_f32_grads);
        }
    }
}

// tl::trainer over device_decoder<gpu_ops> with LoRA (dropout 0.1 on every projection) and with QLoRA, against the same
// trainer over device_decoder<cpu_ops> (which test_trainer's device_lora suite checks against tl::decoder): 3 steps of
// 4 x 32 tokens, 2 micro-batches each, clipping, a validation; every step's loss and gradient norm, the dropout count,
// and the adapters after the run. f32 products. Bounds as the step's (lora_step_matches_the_cpu_executor) for the
// loss, 1e-4 for the norm, 1e-3 of each tensor's largest element for the adapters (AdamW's first steps magnify f32
// rounding); written without a GPU: not yet run.
BOOST_AUTO_TEST_CASE(device_decoder_with_lora_trains_as_the_cpu_executor, needs_device()) {
    const auto check_adapter = [&]<class Adapter>(const char* what) {
        BOOST_TEST_CONTEXT(what) {
            using host_t = decoder<presets::tiny, default_backend, Adapter>;
            host_t init(3);
            counter_rng rng(5, 3);
            for (const parameter_entry& e : init.parameter_entries())
                if (e.kind ==
                    param_kind::adapter) // an adapter that has trained (B != 0): every gradient from the start
                    for (float& v : e.value)
                        v = float(0.05 * rng.normal());
            std::vector<token_t> tokens(20000), val_tokens(2000);
            for (token_t& t : tokens)
                t = token_t(rng.below(64) + 32);
            for (token_t& t : val_tokens)
                t = token_t(rng.below(64) + 32);
            const trainer_options options{.batch_size = 4,
                                          .seq_len = 32,
                                          .grad_accum = 2,
                                          .max_steps = 3,
                                          .peak_lr = 1e-2,
                                          .min_lr = 1e-3,
                                          .warmup_steps = 1,
                                          .clip = 1.0,
                                          .eval_every = 3,
                                          .eval_windows = 4,
                                          .checkpoint_every = 0};
            const gpu::device_decoder_options d{.batch = 4, .time = 32, .logits_rows = 48};
            struct record {
                std::vector<double> loss, norm, val;
            };
            auto train = [&](auto& model, record& r) {
                model.load_from(init);
                token_windows src(tokens, 6);
                trainer t(model, src, val_tokens, options);
                t.on_step = [&r](const step_report& s) {
                    r.loss.push_back(s.loss);
                    r.norm.push_back(s.grad_norm);
                };
                t.on_eval = [&r](long long, double v) { r.val.push_back(v); };
                BOOST_TEST((t.run() == train_outcome::finished));
                model.download_parameters();
            };
            gpu::device_decoder<gpu::cpu_ops, Adapter> cpu(presets::tiny::value, d);
            gpu::device_decoder<gpu::gpu_ops, Adapter> gpu(presets::tiny::value, d);
            record rc, rg;
            train(cpu, rc);
            train(gpu, rg);
            BOOST_TEST_REQUIRE(rg.loss.size() == rc.loss.size());
            BOOST_TEST_REQUIRE(rg.val.size() == rc.val.size());
            for (std::size_t i = 0; i < rc.loss.size(); ++i) {
                BOOST_TEST_MESSAGE("step " << i + 1 << ": loss CPU executor " << rc.loss[i] << ", GPU " << rg.loss[i]
                                           << "; gradient norm " << rc.norm[i] << ", " << rg.norm[i]);
                BOOST_TEST(std::abs(rg.loss[i] - rc.loss[i]) < 1e-5 * rc.loss[i], "step " << i + 1);
                BOOST_TEST(std::abs(rg.norm[i] - rc.norm[i]) < 1e-4 * rc.norm[i], "step " << i + 1);
            }
            BOOST_TEST(std::abs(rg.val.back() - rc.val.back()) < 1e-5 * rc.val.back());
            BOOST_TEST(gpu.dropout_calls() == cpu.dropout_calls());
            BOOST_TEST(cpu.dropout_calls() == 6u);
            for (std::size_t i = 0; i < cpu.parameter_entries().size(); ++i) {
                const parameter_entry &c = cpu.parameter_entries()[i], &g = gpu.parameter_entries()[i];
                if (c.kind != param_kind::adapter) continue;
                const std::vector<float> a(g.value.data, g.value.data + g.value.numel()),
                    b(c.value.data, c.value.data + c.value.numel());
                BOOST_TEST(max_rel(a, b) < 1e-3, c.name);
            }
        }
    };
    check_adapter.template operator()<trained_lora>("LoRA, dropout 0.1");
    check_adapter.template operator()<trained_qlora>("QLoRA, dropout 0.05");
}

BOOST_AUTO_TEST_CASE(errors_name_the_call, needs_device()) {
    gpu::arena_plan plan;
    plan.add("too much", std::size_t(1) << 62);
    BOOST_CHECK_EXCEPTION(gpu::device_arena{plan}, tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("cudaMalloc of the device arena") != std::string::npos;
    });
    // The refusal is reported once: the next kernel does not find it as CUDA's last error (found by the host
    // emulation: a launch_check after a refused allocation used to fail with "out of memory").
    const std::vector<float> x = {1.0f, -2.0f, 3.5f};
    device_run r;
    const int ix = r.input(x), iy = r.output<std::uint16_t>(x.size());
    r.allocate();
    BOOST_CHECK_NO_THROW(gpu::to_bf16(r.at<std::uint16_t>(iy), r.at<float>(ix), 3));
    BOOST_TEST(r.get<std::uint16_t>(iy)[1] == bf16(-2.0f).bits);
}

// tl::trainer over device_decoder<gpu_ops> (tests/support/device_training.hpp; test_trainer runs the same check on
// the CPU executor), on the tiny preset windowed, and with 4 experts: a run stopped after step 2 and resumed to
// 4 by a fresh device model with other weights from its checkpoint gives every parameter and loss bit for bit as 4
// steps in one go, and gradient checkpointing the bits of a run without.
BOOST_AUTO_TEST_CASE(trainer_on_the_device_resumes_and_checkpoints_bit_identically, needs_device()) {
    const fs::path dir = fs::temp_directory_path() / ("tinylm_gpu_resume_" + std::to_string(::getpid()));
    for (const auto& [name, config] : test::device_training_models())
        BOOST_TEST_CONTEXT(name) { test::check_device_training_is_bit_identical<gpu::gpu_ops>(config, dir); }
}

// The same with bf16 products, as the recipes' --device cuda trains (05's continuation resumes from a checkpoint).
BOOST_AUTO_TEST_CASE(trainer_on_the_device_resumes_bit_identically_with_bf16_products, needs_device()) {
    const fs::path dir = fs::temp_directory_path() / ("tinylm_gpu_resume_bf16_" + std::to_string(::getpid()));
    // The dense model only: the case runs in the default run under the host emulation, where each model costs ~10 s.
    const auto models = test::device_training_models(); // named: front() of the temporary would dangle
    const auto& [name, config] = models.front();
    BOOST_TEST_CONTEXT(name) { test::check_device_training_is_bit_identical<gpu::gpu_ops>(config, dir, true); }
}

BOOST_AUTO_TEST_SUITE_END()

#if defined(TINYLM_HAS_NCCL) && TINYLM_HAS_NCCL
// NCCL (gpu::nccl_communicator: data parallel on GPUs, docs/gpu.md) with one rank on one GPU: every collective runs
// through NCCL on device memory, on the default stream (gpu_ops's); one rank's sum, mean, broadcast, gather and
// scatter are its own values bit for bit. Several GPUs: the trainer over them, as docs/gpu.md says.
BOOST_AUTO_TEST_SUITE(cuda_nccl)

BOOST_AUTO_TEST_CASE(one_rank_collectives_on_device_memory, needs_device()) {
    dist::local_communicator host;
    gpu::nccl_communicator nccl(host);
    BOOST_TEST(nccl.rank() == 0);
    BOOST_TEST(nccl.size() == 1);
    BOOST_TEST(nccl.backend() == "nccl");
    BOOST_TEST(nccl.takes_device_memory());
    BOOST_TEST(nccl.local_rank() == 0);
    BOOST_TEST(nccl.device() == 0);
    counter_rng rng(31);
    std::vector<float> values(1000);
    for (float& x : values)
        x = float(rng.normal());
    std::vector<double> wide(77);
    for (double& x : wide)
        x = rng.normal();
    device_run r;
    const int f = r.input(values), d = r.input(wide), out = r.output<float>(values.size());
    r.allocate();
    const std::span<float> on_device(r.at<float>(f), values.size());
    const std::span<float> other(r.at<float>(out), values.size());
    nccl.all_reduce_sum(on_device).wait();
    BOOST_TEST(same_bits(r.get<float>(f), values));
    nccl.all_reduce_average(on_device).wait();
    BOOST_TEST(same_bits(r.get<float>(f), values));
    nccl.all_reduce_sum(std::span<double>(r.at<double>(d), wide.size())).wait();
    BOOST_TEST((r.get<double>(d) == wide));
    nccl.broadcast(std::as_writable_bytes(on_device), 0);
    BOOST_TEST(same_bits(r.get<float>(f), values));
    nccl.all_gather(on_device, other);
    BOOST_TEST(same_bits(r.get<float>(out), values));
    gpu::fill_zero(other.data(), other.size_bytes());
    nccl.reduce_scatter_sum(on_device, other);
    BOOST_TEST(same_bits(r.get<float>(out), values));
    nccl.barrier();

    // A GPU the host lacks is refused (on every rank, before NCCL waits for any), naming it.
    gpu::nccl_options beyond;
    beyond.device = gpu::device_count();
    BOOST_CHECK_EXCEPTION(gpu::nccl_communicator(host, beyond), dist::collective_error,
                          [](const dist::collective_error& e) {
                              return std::string(e.what()).find("wants CUDA device") != std::string::npos;
                          });
}

BOOST_AUTO_TEST_SUITE_END()
#endif
