// optim/: AdamW and SGD against their formulas written out by hand, schedules, clipping.
#include <tinylm/model/decoder.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/optim/sgd.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>

using namespace tl;

namespace {
struct micro {
    static constexpr model_config value{.vocab_size = 8,
                                        .d_model = 4,
                                        .n_layers = 1,
                                        .n_heads = 2,
                                        .n_kv_heads = 1,
                                        .d_ff = 6,
                                        .max_seq_len = 4,
                                        .qkv_bias = true,
                                        .init_std = 0.5};
};
using model_t = decoder<micro, reference_cpu>;

void fill_grads(model_t& m, float base) {
    float x = base;
    for (const parameter_entry& e : m.parameter_entries())
        for (float& g : e.grad)
            g = (x = std::fmod(x * 1.37f + 0.11f, 2.0f) - 1.0f);
}
} // namespace

BOOST_AUTO_TEST_SUITE(optim)

BOOST_AUTO_TEST_CASE(adamw_two_steps_by_hand) {
    model_t m(3);
    const adamw_options o{
        .lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1, .decay_embeddings = false};
    // Expected values, element by element, from the formula in optim/adamw.hpp.
    std::vector<std::vector<double>> p, mom, vel;
    for (const parameter_entry& e : m.parameter_entries()) {
        p.emplace_back(e.value.begin(), e.value.end());
        mom.emplace_back(e.value.numel(), 0.0);
        vel.emplace_back(e.value.numel(), 0.0);
    }
    adamw opt(m, o);
    for (int t = 1; t <= 2; ++t) {
        fill_grads(m, 0.3f * float(t));
        for (std::size_t i = 0; i < p.size(); ++i) {
            const parameter_entry& e = m.parameter_entries()[i];
            const bool decay = e.kind == param_kind::weight;
            for (std::size_t j = 0; j < p[i].size(); ++j) {
                const double g = e.grad[index_t(j)];
                if (decay) p[i][j] *= 1 - o.lr * o.weight_decay;
                mom[i][j] = o.beta1 * mom[i][j] + (1 - o.beta1) * g;
                vel[i][j] = o.beta2 * vel[i][j] + (1 - o.beta2) * g * g;
                const double mhat = mom[i][j] / (1 - std::pow(o.beta1, t)),
                             vhat = vel[i][j] / (1 - std::pow(o.beta2, t));
                p[i][j] -= o.lr * mhat / (std::sqrt(vhat) + o.eps);
            }
        }
        opt.step();
    }
    for (std::size_t i = 0; i < p.size(); ++i) {
        const parameter_entry& e = m.parameter_entries()[i];
        for (std::size_t j = 0; j < p[i].size(); ++j)
            BOOST_TEST_REQUIRE(std::abs(e.value[index_t(j)] - p[i][j]) < 1e-6, e.name << "[" << j << "]");
    }
    BOOST_TEST(opt.steps() == 2);
}

BOOST_AUTO_TEST_CASE(weight_decay_groups) {
    model_t m(3);
    adamw opt(m, {.lr = 0.1, .weight_decay = 0.5, .decay_embeddings = false});
    std::vector<std::vector<float>> before;
    for (const parameter_entry& e : m.parameter_entries())
        before.emplace_back(e.value.begin(), e.value.end());
    m.zero_grad(); // zero gradients: only weight decay moves parameters
    opt.step();
    for (std::size_t i = 0; i < before.size(); ++i) {
        const parameter_entry& e = m.parameter_entries()[i];
        const double factor = e.kind == param_kind::weight ? 1 - 0.1 * 0.5 : 1.0;
        for (std::size_t j = 0; j < before[i].size(); ++j)
            BOOST_TEST_REQUIRE(std::abs(e.value[index_t(j)] - before[i][j] * factor) < 1e-7, e.name);
    }
}

BOOST_AUTO_TEST_CASE(sgd_momentum_by_hand) {
    model_t m(4);
    sgd opt(m, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
    const parameter_entry& e = m.parameter_entries()[1]; // a norm weight: no decay
    const parameter_entry& w = m.parameter_entries()[2]; // q_proj.weight: decays
    double p = e.value[0], buf = 0, pw = w.value[0], bufw = 0;
    for (int t = 0; t < 3; ++t) {
        fill_grads(m, 0.2f + float(t));
        const double g = e.grad[0], gw = double(w.grad[0]) + 0.01 * pw;
        buf = t == 0 ? g : 0.9 * buf + g;
        bufw = t == 0 ? gw : 0.9 * bufw + gw;
        p -= 0.1 * buf;
        pw -= 0.1 * bufw;
        opt.step();
    }
    BOOST_TEST(std::abs(e.value[0] - p) < 1e-6);
    BOOST_TEST(std::abs(w.value[0] - pw) < 1e-6);
}

BOOST_AUTO_TEST_CASE(schedules) {
    const lr_schedule cos{.peak_lr = 1.0, .min_lr = 0.1, .warmup_steps = 10, .total_steps = 110};
    BOOST_TEST(cos.lr_at(0) == 0.1, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(cos.lr_at(9) == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(cos.lr_at(10) == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(cos.lr_at(60) == 0.55, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(cos.lr_at(110) == 0.1, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(cos.lr_at(500) == 0.1, boost::test_tools::tolerance(1e-12));
    const lr_schedule lin{
        .peak_lr = 1.0, .min_lr = 0.0, .warmup_steps = 0, .total_steps = 100, .decay = decay_kind::linear};
    BOOST_TEST(lin.lr_at(25) == 0.75, boost::test_tools::tolerance(1e-12));
    const lr_schedule constant{.peak_lr = 0.3, .warmup_steps = 2, .total_steps = 100, .decay = decay_kind::constant};
    BOOST_TEST(constant.lr_at(1) == 0.3, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(constant.lr_at(99) == 0.3, boost::test_tools::tolerance(1e-12));
    const lr_schedule bad{.warmup_steps = 5, .total_steps = 2};
    BOOST_CHECK_THROW(bad.lr_at(0), tl::error);
}

BOOST_AUTO_TEST_CASE(clipping_scales_to_the_global_norm) {
    model_t m(5);
    fill_grads(m, 0.4f);
    double sq = 0;
    for (const parameter_entry& e : m.parameter_entries())
        for (float g : e.grad)
            sq += double(g) * g;
    const double norm = clip_grad_norm(m.parameter_entries(), 0.5);
    BOOST_TEST(norm == std::sqrt(sq), boost::test_tools::tolerance(1e-9));
    BOOST_TEST(grad_norm(m.parameter_entries()) == 0.5, boost::test_tools::tolerance(1e-5));
    // Below the threshold nothing changes.
    BOOST_TEST(clip_grad_norm(m.parameter_entries(), 10.0) == 0.5, boost::test_tools::tolerance(1e-5));
    BOOST_TEST(grad_norm(m.parameter_entries()) == 0.5, boost::test_tools::tolerance(1e-5));
}

BOOST_AUTO_TEST_SUITE_END()
