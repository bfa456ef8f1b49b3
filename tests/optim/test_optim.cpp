// optim/: AdamW and SGD against their formulas written out by hand, schedules, clipping; freezing entries at
// run time, row masks, and optimizers that own their state.
#include <tinylm/model/decoder.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/optim/sgd.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <map>

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
std::vector<std::vector<float>> values(const std::vector<parameter_entry>& entries) {
    std::vector<std::vector<float>> out;
    for (const parameter_entry& e : entries)
        out.emplace_back(e.value.begin(), e.value.end());
    return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <class Opt>
std::map<std::string, std::vector<float>> state_of(const Opt& opt) {
    std::map<std::string, std::vector<float>> out;
    opt.visit_state([&](const std::string& name, cview<float> t) { out[name].assign(t.begin(), t.end()); });
    return out;
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

// The model flips `trainable` between steps (here a copy of its entries stands in for the model's own vector):
// the optimizer reads it at every step, frozen entries stay bit-identical, the rest move, and an entry frozen
// from the start has no state until it first trains.
BOOST_AUTO_TEST_CASE(freezing_at_run_time) {
    model_t m(3);
    std::vector<parameter_entry> entries = m.parameter_entries();
    BOOST_TEST_REQUIRE(entries.size() > 4u);
    entries[0].trainable = false; // the embedding: frozen from the start
    adamw opt(entries, {.lr = 0.05, .weight_decay = 0.1});
    fill_grads(m, 0.3f);
    opt.step();
    BOOST_TEST(!state_of(opt).contains("exp_avg." + entries[0].name));
    BOOST_TEST(state_of(opt).contains("exp_avg_sq." + entries[2].name));

    entries[2].trainable = false; // frozen between steps
    entries[3].trainable = false;
    const auto before = values(entries);
    const auto moments = state_of(opt);
    fill_grads(m, 0.7f);
    // Frozen entries' gradients do not count in the norm.
    double sq = 0;
    for (std::size_t i = 0; i < entries.size(); ++i)
        if (entries[i].trainable)
            for (float g : entries[i].grad)
                sq += double(g) * g;
    BOOST_TEST(grad_norm(entries) == std::sqrt(sq), boost::test_tools::tolerance(1e-12));
    const std::vector<float> frozen_grad(entries[2].grad.begin(), entries[2].grad.end());
    clip_grad_norm(entries, 1e-3);
    BOOST_TEST(same_bits(std::vector<float>(entries[2].grad.begin(), entries[2].grad.end()), frozen_grad));
    opt.step();
    const auto after = values(entries);
    for (std::size_t i : {std::size_t(0), std::size_t(2), std::size_t(3)})
        BOOST_TEST(same_bits(after[i], before[i]), entries[i].name << " moved while frozen");
    BOOST_TEST(same_bits(state_of(opt).at("exp_avg." + entries[2].name), moments.at("exp_avg." + entries[2].name)));
    for (std::size_t i = 1; i < entries.size(); ++i)
        if (entries[i].trainable) BOOST_TEST(!same_bits(after[i], before[i]), entries[i].name << " did not move");

    entries[0].trainable = true; // unfrozen: it trains from zero moments
    fill_grads(m, 0.9f);
    opt.step();
    BOOST_TEST(!same_bits(values(entries)[0], after[0]));
    BOOST_TEST(state_of(opt).contains("exp_avg." + entries[0].name));
    BOOST_TEST(opt.steps() == 3);
}

// Rows whose mask is 0 (embedding rows of tokens that should not change) keep their values and zero moments,
// get no weight decay, and do not count in the gradient norm; the other rows train.
BOOST_AUTO_TEST_CASE(row_mask_trains_chosen_rows_only) {
    for (int which = 0; which < 2; ++which) {
        model_t m(4);
        std::vector<parameter_entry> entries = m.parameter_entries();
        parameter_entry& embed = entries[0];
        BOOST_TEST_REQUIRE(embed.value.dim(0) == micro::value.vocab_size);
        const index_t d = embed.value.dim(1);
        const std::vector<std::uint8_t> mask = {1, 0, 0, 1, 0, 1, 1, 0};
        embed.row_mask = &mask;
        fill_grads(m, 0.45f);
        double sq = 0;
        for (std::size_t i = 0; i < entries.size(); ++i)
            for (index_t j = 0; j < entries[i].grad.numel(); ++j)
                if (i != 0 || mask[std::size_t(j / d)]) sq += double(entries[i].grad[j]) * entries[i].grad[j];
        BOOST_TEST(grad_norm(entries) == std::sqrt(sq), boost::test_tools::tolerance(1e-12));

        const std::vector<float> before(embed.value.begin(), embed.value.end());
        if (which == 0) {
            adamw opt(entries, {.lr = 0.05, .weight_decay = 0.5});
            opt.step();
            fill_grads(m, 0.55f);
            opt.step();
            const auto st = state_of(opt);
            for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
                const auto& moment = st.at(kind + embed.name);
                for (index_t r = 0; r < micro::value.vocab_size; ++r)
                    for (index_t c = 0; c < d; ++c)
                        BOOST_TEST_REQUIRE((moment[std::size_t(r * d + c)] == 0.0f) == (mask[std::size_t(r)] == 0),
                                           kind << " row " << r);
            }
        } else {
            sgd opt(entries, {.lr = 0.05, .weight_decay = 0.5});
            opt.step();
            opt.step();
        }
        for (index_t r = 0; r < micro::value.vocab_size; ++r) {
            const bool same = std::memcmp(embed.value.data + r * d, before.data() + r * d, std::size_t(d) * 4) == 0;
            BOOST_TEST(same == (mask[std::size_t(r)] == 0), (which ? "sgd" : "adamw") << " row " << r);
        }
    }
}

// Each optimizer owns its state: two on one model do not share moments (the second one's first step sees
// zero moments, exactly as the first one's did).
BOOST_AUTO_TEST_CASE(optimizers_own_their_state) {
    model_t m(5);
    adamw a(m, {.lr = 0.01}), b(m, {.lr = 0.01});
    sgd c(m);
    fill_grads(m, 0.25f);
    a.step();
    const auto first = state_of(a);
    b.step();
    BOOST_TEST((state_of(b) == first)); // same gradients, fresh moments: same state
    a.step();
    BOOST_TEST((state_of(a) != first));
    BOOST_TEST((state_of(b) == first)); // a's step did not touch b's state
    c.step();
    BOOST_TEST(state_of(c).size() == m.parameter_entries().size());
    BOOST_TEST(state_of(c).begin()->first.rfind("momentum_buffer.", 0) == 0);
    BOOST_TEST(first.size() == 2 * m.parameter_entries().size());
}

// The checkpoint view of the state: names "exp_avg.<name>" / "exp_avg_sq.<name>" for entries that trained;
// reset_state allocates exactly what a checkpoint holds, and visit_state fills it.
BOOST_AUTO_TEST_CASE(state_round_trip_through_names) {
    model_t m(6), n(6);
    std::vector<parameter_entry> entries = m.parameter_entries();
    entries[1].trainable = false;
    adamw a(entries);
    fill_grads(m, 0.35f);
    a.step();
    const auto saved = state_of(a);
    BOOST_TEST(saved.size() == 2 * (entries.size() - 1));
    BOOST_TEST(!saved.contains("exp_avg." + entries[1].name));
    BOOST_TEST(saved.contains("exp_avg." + entries[2].name));

    adamw b(n);
    fill_grads(n, 0.1f);
    b.step(); // state for every entry, to be replaced
    b.reset_state([&](const std::string& name) { return saved.contains(name); });
    b.visit_state([&](const std::string& name, tensor_view<float> t) {
        std::copy(saved.at(name).begin(), saved.at(name).end(), t.begin());
    });
    BOOST_TEST((state_of(b) == saved));
}

BOOST_AUTO_TEST_SUITE_END()
