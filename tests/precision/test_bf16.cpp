// bf16 mixed precision on the CPU (backend/onednn_bf16.hpp, docs/precision.md): the products of a linear layer's
// forward and backward against f64 within the bound bf16 rounding allows, the refusal where the CPU cannot run
// them fast, and a short training run in bf16 that tracks the f32 run's loss.
#include "../support/data.hpp"
#include "../support/random.hpp"
#include "../support/tiny_bert.hpp"

#include <tinylm/backend/onednn.hpp>
#include <tinylm/backend/reference.hpp>
#include <tinylm/eval/encoder_classifier.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/encoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/train/trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

using namespace tl;

namespace {

// Skips (exit code 77 via tests/test_main.cpp) on a CPU where bf16 products are refused.
struct bf16_precondition {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        const std::string why = detail::bf16_support();
        boost::test_tools::assertion_result ok(why.empty());
        if (!why.empty()) {
            ++tl_test::data_skips();
            ok.message() << why;
            std::printf("SKIPPED: %s\n", why.c_str());
        }
        return ok;
    }
};

// C = alpha op(A) op(B) + beta C in f64 from the same f32 inputs, and the sum of |products| per element: bf16
// rounds each operand by at most 2^-9 relative, so a product is off by at most about 2^-8 of |a||b|; the bound
// below allows 2^-7 of sum |a||b| (plus f32 accumulation, far smaller).
struct f64_product {
    std::vector<double> c, abs_sum;
};
f64_product reference_gemm(const gemm_args<float>& g, const std::vector<float>& c0) {
    f64_product r{std::vector<double>(std::size_t(g.m * g.n)), std::vector<double>(std::size_t(g.m * g.n))};
    for (index_t i = 0; i < g.m; ++i)
        for (index_t j = 0; j < g.n; ++j) {
            double s = 0, a_s = 0;
            for (index_t p = 0; p < g.k; ++p) {
                const double a = g.trans_a ? g.a[p * g.lda + i] : g.a[i * g.lda + p];
                const double b = g.trans_b ? g.b[j * g.ldb + p] : g.b[p * g.ldb + j];
                s += a * b;
                a_s += std::abs(a * b);
            }
            r.c[std::size_t(i * g.n + j)] = double(g.alpha) * s + double(g.beta) * c0[std::size_t(i * g.ldc + j)];
            r.abs_sum[std::size_t(i * g.n + j)] = std::abs(double(g.alpha)) * a_s;
        }
    return r;
}

struct product_errors {
    double worst_ratio = 0; // max |c - c64| / bound: <= 1 passes
    double max_abs = 0;     // max |c - c64|
};
product_errors check_product(gemm_args<float> g, std::vector<float> c) {
    const std::vector<float> c0 = c;
    g.c = c.data();
    onednn_cpu::gemm(g);
    const f64_product ref = reference_gemm(g, c0);
    product_errors e;
    for (index_t i = 0; i < g.m; ++i)
        for (index_t j = 0; j < g.n; ++j) {
            const std::size_t at = std::size_t(i * g.n + j);
            const double err = std::abs(double(c[std::size_t(i * g.ldc + j)]) - ref.c[at]);
            const double bound = 0x1p-7 * ref.abs_sum[at] + 1e-6 * std::abs(ref.c[at]) + 1e-30;
            e.worst_ratio = std::max(e.worst_ratio, err / bound);
            e.max_abs = std::max(e.max_abs, err);
        }
    return e;
}

} // namespace

BOOST_AUTO_TEST_SUITE(bf16_precision)

// The three products of a linear layer y = x W^T: forward (x W^T), input gradient (dy W) and weight gradient
// (dW += dy^T x, beta = 1), plus a scaled product (alpha, as LoRA's), each within the bf16 bound of f64, and
// visibly less exact than the same product in f32 (so the bf16 path did run).
BOOST_AUTO_TEST_CASE(linear_products_within_bf16_bounds_of_f64, *boost::unit_test::precondition(bf16_precondition{})) {
    const index_t N = 96, in = 80, out = 72;
    const auto x = tl::test::random_tensor<float>({N, in}, 1);
    const auto w = tl::test::random_tensor<float>({out, in}, 2, 0.1);
    const auto dy = tl::test::random_tensor<float>({N, out}, 3);
    const auto dw0 = tl::test::random_tensor<float>({out, in}, 4, 0.5);
    auto product = [](bool ta, bool tb, index_t m, index_t n, index_t k, const float* a, index_t lda, const float* b,
                      index_t ldb, float beta, index_t ldc) {
        gemm_args<float> g;
        g.trans_a = ta;
        g.trans_b = tb;
        g.m = m;
        g.n = n;
        g.k = k;
        g.a = a;
        g.lda = lda;
        g.b = b;
        g.ldb = ldb;
        g.beta = beta;
        g.ldc = ldc;
        return g;
    };
    const gemm_args<float> fwd = product(false, true, N, out, in, x.data.data(), in, w.data.data(), in, 0, out);
    const gemm_args<float> dx = product(false, false, N, in, out, dy.data.data(), out, w.data.data(), in, 0, in);
    const gemm_args<float> dwg = product(true, false, out, in, N, dy.data.data(), out, x.data.data(), in, 1, in);
    gemm_args<float> scaled = fwd;
    scaled.alpha = 0.25f;
    const std::vector<float> zeros_out(std::size_t(N * out), 7.0f), zeros_in(std::size_t(N * in), 7.0f);
    struct named {
        const char* name;
        gemm_args<float> g;
        std::vector<float> c;
    } cases[] = {{"forward x W^T", fwd, zeros_out},
                 {"input gradient dy W", dx, zeros_in},
                 {"weight gradient dW += dy^T x", dwg, dw0.data},
                 {"scaled forward 0.25 x W^T", scaled, zeros_out}};
    for (const auto& c : cases) {
        const product_errors f32 = check_product(c.g, c.c); // onednn_cpu in f32
        product_errors bf16;
        {
            scoped_cpu_precision p(precision::bf16);
            bf16 = check_product(c.g, c.c);
        }
        BOOST_TEST_MESSAGE(c.name << ": bf16 max error " << bf16.max_abs << " (" << bf16.worst_ratio
                                  << " of the bound), f32 " << f32.max_abs);
        BOOST_TEST(bf16.worst_ratio <= 1.0, c.name);
        BOOST_TEST(bf16.max_abs > 10 * f32.max_abs, c.name << ": the product does not look rounded to bf16");
    }
    BOOST_TEST((cpu_precision() == precision::f32)); // the scope restored it
}

BOOST_AUTO_TEST_CASE(conversion_rounds_to_nearest_even) {
    BOOST_TEST(detail::to_bf16(1.0f) == 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1); 1 + 3 * 2^-8 goes up.
    BOOST_TEST(detail::to_bf16(1.0f + 0x1p-8f) == 0x3f80);
    BOOST_TEST(detail::to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);
    BOOST_TEST(detail::from_bf16(detail::to_bf16(-2.5f)) == -2.5f);
    BOOST_TEST(std::isnan(detail::from_bf16(detail::to_bf16(std::nanf("")))));
    BOOST_TEST(std::isinf(detail::from_bf16(detail::to_bf16(INFINITY))));
}

// Where bf16 is not fast (no AVX-512 BF16 / AMX, e.g. with ONEDNN_MAX_CPU_ISA=AVX512_CORE; ctest runs this case
// so too), set_cpu_precision refuses with the reason and leaves f32 in place.
BOOST_AUTO_TEST_CASE(refuses_with_a_reason_where_bf16_is_not_fast) {
    const std::string why = detail::bf16_support();
    if (why.empty()) {
        set_cpu_precision(precision::bf16);
        BOOST_TEST((cpu_precision() == precision::bf16));
        set_cpu_precision(precision::f32);
        return;
    }
    BOOST_TEST(why.find("AVX-512 BF16") != std::string::npos, why);
    try {
        set_cpu_precision(precision::bf16);
        BOOST_FAIL("set_cpu_precision(bf16) accepted a CPU without AVX-512 BF16");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find("set_cpu_precision(bf16)") != std::string::npos, e.what());
    }
    BOOST_TEST((cpu_precision() == precision::f32));
}

// The tiny model trained 120 steps on the same batches in f32 and in bf16 from the same initial weights: the bf16
// losses stay within 2% + 0.02 of the f32 ones at every step, and both learn (the loss falls below a third of
// the start).
BOOST_AUTO_TEST_CASE(training_in_bf16_tracks_f32, *boost::unit_test::precondition(bf16_precondition{})) {
    const std::string text = "Мороз и солнце; день чудесный! Ещё ты дремлешь, друг прелестный, пора, красавица, "
                             "проснись: открой сомкнуты негой взоры навстречу северной Авроры, звездою севера "
                             "явись! Вечор, ты помнишь, вьюга злилась, на мутном небе мгла носилась; луна, как "
                             "бледное пятно, сквозь тучи мрачные желтела.";
    const index_t B = 8, T = presets::tiny::value.max_seq_len;
    const int steps = 120;
    auto run = [&](precision p) {
        scoped_cpu_precision scope(p);
        decoder<presets::tiny> model(11);
        adamw opt(model, {.weight_decay = 0.0});
        std::vector<token_t> ids(std::size_t(B * T)), targets(std::size_t(B * T));
        counter_rng rng(5);
        std::vector<float> losses;
        for (int step = 0; step < steps; ++step) {
            for (index_t b = 0; b < B; ++b) {
                const index_t start = index_t(rng.below(text.size() - std::size_t(T) - 1));
                for (index_t t = 0; t < T; ++t) {
                    ids[std::size_t(b * T + t)] = static_cast<unsigned char>(text[std::size_t(start + t)]);
                    targets[std::size_t(b * T + t)] = static_cast<unsigned char>(text[std::size_t(start + t + 1)]);
                }
            }
            model.zero_grad();
            losses.push_back(model.loss(cview<token_t>{ids.data(), {B, T}}, cview<token_t>{targets.data(), {B, T}}));
            model.backward();
            clip_grad_norm(model.parameter_entries(), 1.0);
            opt.step(2e-3);
        }
        return losses;
    };
    const std::vector<float> f32 = run(precision::f32), bf16 = run(precision::bf16);
    double worst = 0;
    int worst_step = 0;
    for (int s = 0; s < steps; ++s) {
        const double excess =
            std::abs(double(bf16[std::size_t(s)]) - f32[std::size_t(s)]) / (0.02 * f32[std::size_t(s)] + 0.02);
        if (excess > worst) worst = excess, worst_step = s;
    }
    BOOST_TEST_MESSAGE("f32 loss " << f32.front() << " -> " << f32.back() << ", bf16 " << bf16.front() << " -> "
                                   << bf16.back() << "; largest gap " << worst << " of the bound at step "
                                   << worst_step);
    BOOST_TEST(worst <= 1.0);
    BOOST_TEST(f32.back() < f32.front() / 3);
    BOOST_TEST(bf16.back() < bf16.front() / 3);
    BOOST_TEST(bf16 != f32); // the bf16 run did round
}

// trainer_options::matmul_precision: the run computes in bf16 (its losses differ from an f32 run's, within the
// bound above) and the process is back in f32 when run() returns.
BOOST_AUTO_TEST_CASE(trainer_runs_in_bf16_and_restores_f32, *boost::unit_test::precondition(bf16_precondition{})) {
    std::vector<token_t> tokens;
    for (int i = 0; i < 3000; ++i)
        tokens.push_back(token_t((i * 7 + i / 13) % 97));
    auto run = [&](precision p) {
        decoder<presets::tiny> model(3);
        token_windows src(tokens, 1);
        trainer_options o;
        o.batch_size = 4;
        o.seq_len = 32;
        o.max_steps = 8;
        o.warmup_steps = 2;
        o.eval_every = 0;
        o.eval_windows = 2;
        o.checkpoint_every = 0;
        o.matmul_precision = p;
        trainer t(model, src, tokens, o);
        std::vector<double> losses;
        t.on_step = [&](const step_report& r) { losses.push_back(r.loss); };
        t.run();
        BOOST_TEST((cpu_precision() == precision::f32));
        return losses;
    };
    const std::vector<double> f32 = run(precision::f32), bf16 = run(precision::bf16);
    BOOST_TEST_REQUIRE(f32.size() == 8u);
    BOOST_TEST_REQUIRE(bf16.size() == 8u);
    BOOST_TEST(bf16 != f32);
    for (std::size_t s = 0; s < f32.size(); ++s)
        BOOST_TEST(std::abs(bf16[s] - f32[s]) <= 0.02 * f32[s] + 0.02, "step " << s + 1);
}

// scoped_matmul_precision, the trainer's scope that a training loop of its own (09_retrieval) holds too: bf16
// while it lives, f32 after; refused for a model that does not compute with oneDNN, whatever the CPU. The
// fine-tuned classifier (11_topic_classifier) names its encoder's backend, so the trainer finds it.
BOOST_AUTO_TEST_CASE(scoped_matmul_precision_refuses_other_backends) {
    using reference_decoder = decoder<presets::tiny, reference_cpu>;
    BOOST_CHECK_THROW(scoped_matmul_precision<reference_decoder>(precision::bf16), std::runtime_error);
    BOOST_CHECK_NO_THROW(scoped_matmul_precision<reference_decoder>(precision::f32));
    using tl_test::tiny_bert_config;
    static_assert(std::same_as<eval::encoder_classifier<encoder<tiny_bert_config>>::backend, onednn_cpu>);
    static_assert(
        std::same_as<eval::encoder_classifier<encoder<tiny_bert_config, reference_cpu>>::backend, reference_cpu>);
}

BOOST_AUTO_TEST_CASE(scoped_matmul_precision_lives_with_its_scope,
                     *boost::unit_test::precondition(bf16_precondition{})) {
    BOOST_TEST_REQUIRE((cpu_precision() == precision::f32));
    {
        const auto products = scoped_matmul_precision<decoder<presets::tiny>>(precision::bf16);
        BOOST_TEST((cpu_precision() == precision::bf16));
    }
    BOOST_TEST((cpu_precision() == precision::f32));
    {
        const auto products = scoped_matmul_precision<decoder<presets::tiny>>(precision::f32);
        BOOST_TEST((cpu_precision() == precision::f32));
    }
}

BOOST_AUTO_TEST_SUITE_END()
