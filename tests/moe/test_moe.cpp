// The mixture-of-experts op (ops/moe.hpp): forward against a direct per-token formula, finite-difference
// gradient checks in double on the reference backend (inputs, router, every expert weight; with and without
// the aux loss; one and two layers sharing the aux loss), fast backends against the reference in f32, and
// the gradient rule. Then the decoder with experts: the KV-cache path against the full forward, the router's
// gradient with pooled and per-layer balance (finite differences), and Hugging Face checkpoints (MixtralForCausalLM
// names and config.json). Parity with transformers is in tests/model/test_hf_parity.cpp (fixture mixtral_moe).
// Last, the CUDA backend's training step with experts (cuda/decoder_step.hpp) on the CPU executor against the
// decoder (here because this TU already builds the MoE decoders it is compared with).
#include "../model/fixture_configs.hpp"
#include "../support/gradcheck.hpp"
#include "../support/kv_cache.hpp"
#include "../support/step_optimizer.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/ops/moe.hpp>
#include <tinylm/train/batches.hpp>
#include <tinylm/train/trainer.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <numeric>

using namespace tl;
using namespace tl::test;
using ref = reference_cpu;

#ifdef TINYLM_HAS_ONEDNN
using fast_backends = boost::mpl::list<eigen_cpu, onednn_cpu>;
#else
using fast_backends = boost::mpl::list<eigen_cpu>;
#endif

namespace {

constexpr double tolerance = 1e-6;
constexpr double f32_tolerance = 2e-5;

// One MoE layer's parameters, gradients and buffers, in T.
template <class T>
struct moe_case {
    index_t n, d, f, e, k;
    owned<T> x, router, gate_up, down;
    owned<T> y, dx, drouter, dgate_up, ddown;
    arena mem;
    moe_cache<T> cache;
    moe_workspace<T> ws;
    moe_balance balance;

    moe_case(index_t n_, index_t d_, index_t f_, index_t e_, index_t k_, std::uint64_t seed)
        : n(n_), d(d_), f(f_), e(e_), k(k_), x(random_tensor<T>({n_, d_}, seed)),
          router(random_tensor<T>({e_, d_}, seed + 1)), gate_up(random_tensor<T>({e_, 2 * f_, d_}, seed + 2, 0.5)),
          down(random_tensor<T>({e_, d_, f_}, seed + 3, 0.5)), y({n_, d_}), dx({n_, d_}), drouter({e_, d_}),
          dgate_up({e_, 2 * f_, d_}), ddown({e_, d_, f_}), mem(1 << 20) {
        cache = moe_cache<T>::allocate(mem, n, f, e, k);
        ws = moe_workspace<T>::allocate(mem, n, d, f, e, k);
        balance = moe_balance::allocate(mem, e);
        balance.clear();
    }
    template <class B = ref>
    void forward(cview<T> input, moe_balance* bal) {
        moe_forward<B, T>(y, cache, ws, input, router, gate_up, down, bal);
    }
    template <class B = ref>
    void backward(cview<T> dy, cview<T> input, const moe_balance* bal, double daux,
                  grad_write mode = grad_write::assign) {
        moe_backward<B, T>(dx, drouter, dgate_up, ddown, dy, input, router, gate_up, down, cache, ws, bal, daux, mode);
    }
};

// Smallest gap between the k-th and (k+1)-th router probability over the rows (top-k must not flip under
// the finite-difference step).
template <class T>
double topk_margin(const moe_cache<T>& c) {
    double margin = std::numeric_limits<double>::infinity();
    if (c.top_k() == c.n_experts()) return margin;
    for (index_t t = 0; t < c.rows(); ++t) {
        std::vector<double> p(c.probs.row(t), c.probs.row(t) + c.n_experts());
        std::sort(p.rbegin(), p.rend());
        margin = std::min(margin, p[c.top_k() - 1] - p[c.top_k()]);
    }
    return margin;
}

void report(const std::string& what, const std::string& input, double err) {
    BOOST_TEST_MESSAGE("gradcheck " << what << " d" << input << ": " << err);
}

double silu(double g) { return g / (1.0 + std::exp(-g)); }

} // namespace

BOOST_AUTO_TEST_SUITE(moe)

BOOST_AUTO_TEST_CASE(forward_matches_the_direct_formula_and_counts_usage) {
    moe_case<double> m(9, 5, 6, 4, 2, 100);
    m.forward(m.x, &m.balance);
    // Per token: softmax, top-2, renormalise, sum of the weighted SwiGLU experts.
    std::vector<double> counts(4), prob_sum(4);
    double worst = 0;
    for (index_t t = 0; t < m.n; ++t) {
        std::vector<double> z(4), p(4);
        for (index_t e = 0; e < 4; ++e)
            for (index_t i = 0; i < m.d; ++i)
                z[e] += m.x.data[t * m.d + i] * m.router.data[e * m.d + i];
        const double mx = *std::max_element(z.begin(), z.end());
        double s = 0;
        for (index_t e = 0; e < 4; ++e)
            s += std::exp(z[e] - mx);
        for (index_t e = 0; e < 4; ++e)
            p[e] = std::exp(z[e] - mx) / s, prob_sum[e] += p[e];
        std::vector<index_t> order(4);
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](index_t a, index_t b) { return p[a] > p[b]; });
        const double kept = p[order[0]] + p[order[1]];
        for (index_t i = 0; i < m.d; ++i) {
            double yi = 0;
            for (int j = 0; j < 2; ++j) {
                const index_t e = order[j];
                double o = 0;
                for (index_t h = 0; h < m.f; ++h) {
                    double g = 0, u = 0;
                    for (index_t c = 0; c < m.d; ++c) {
                        g += m.gate_up.data[(e * 2 * m.f + h) * m.d + c] * m.x.data[t * m.d + c];
                        u += m.gate_up.data[(e * 2 * m.f + m.f + h) * m.d + c] * m.x.data[t * m.d + c];
                    }
                    o += silu(g) * u * m.down.data[(e * m.d + i) * m.f + h];
                }
                yi += p[e] / kept * o;
            }
            worst = std::max(worst, std::abs(yi - m.y.data[t * m.d + i]));
        }
        counts[order[0]] += 1, counts[order[1]] += 1;
    }
    BOOST_TEST(worst < 1e-12);
    double aux = 0;
    for (index_t e = 0; e < 4; ++e) {
        BOOST_TEST(double(m.cache.tokens_of(e)) == counts[e]);
        aux += counts[e] / 9 * prob_sum[e] / 9;
    }
    BOOST_TEST(m.cache.offsets[4] == 18);
    BOOST_TEST(std::abs(m.balance.loss() - 4 * aux) < 1e-12);
    BOOST_TEST_MESSAGE("moe usage (tokens per expert, 9 tokens, top-2): " << counts[0] << " " << counts[1] << " "
                                                                          << counts[2] << " " << counts[3]);
}

BOOST_AUTO_TEST_CASE(gradcheck_one_layer) {
    struct variant {
        const char* name;
        index_t n, d, f, e, k;
        double aux_weight;
        std::uint64_t seed;
        double output_weight = 1.0; // 0: the aux loss alone
    };
    for (const variant& v :
         {variant{"top2of4", 7, 5, 6, 4, 2, 0.0, 10}, variant{"top2of4+aux", 7, 5, 6, 4, 2, 0.3, 10},
          variant{"top1of3+aux", 6, 4, 3, 3, 1, 0.5, 20}, variant{"top3of3+aux", 5, 4, 3, 3, 3, 0.5, 30},
          variant{"top3of5+aux", 8, 3, 5, 5, 3, 0.2, 40}, variant{"aux only, top2of4", 7, 5, 6, 4, 2, 1.0, 10, 0.0}}) {
        moe_case<double> m(v.n, v.d, v.f, v.e, v.k, v.seed);
        auto r = random_tensor<double>({v.n, v.d}, v.seed + 9, v.output_weight);
        auto loss = [&] {
            m.balance.clear();
            m.forward(m.x, &m.balance);
            return weighted_sum(m.y.data, r.data) + v.aux_weight * m.balance.loss();
        };
        loss();
        const double margin = topk_margin(m.cache);
        BOOST_TEST_MESSAGE("moe " << v.name << ": smallest top-k probability margin " << margin);
        BOOST_REQUIRE_MESSAGE(margin > 1e-3, v.name << ": near-tie in the top-k, pick another seed");
        m.backward(r, m.x, &m.balance, v.aux_weight);
        const double err = gradcheck(loss,
                                     {{"x", &m.x.data, &m.dx.data},
                                      {"router", &m.router.data, &m.drouter.data},
                                      {"gate_up", &m.gate_up.data, &m.dgate_up.data},
                                      {"down", &m.down.data, &m.ddown.data}},
                                     [&](const std::string& n, double e) { report(v.name, n, e); });
        BOOST_TEST(err < tolerance, v.name);
    }
}

// Two layers share one aux loss (transformers pools the statistics of all layers before multiplying).
BOOST_AUTO_TEST_CASE(gradcheck_two_layers_sharing_the_aux_loss) {
    const index_t n = 6, d = 4, f = 5, e = 4, k = 2;
    moe_case<double> a(n, d, f, e, k, 50), b(n, d, f, e, k, 60);
    auto r = random_tensor<double>({n, d}, 70);
    const double w = 0.4;
    moe_balance& shared = a.balance;
    auto loss = [&] {
        shared.clear();
        a.forward(a.x, &shared);
        b.forward(a.y, &shared);
        return weighted_sum(b.y.data, r.data) + w * shared.loss();
    };
    loss();
    BOOST_REQUIRE(topk_margin(a.cache) > 1e-3);
    BOOST_REQUIRE(topk_margin(b.cache) > 1e-3);
    b.backward(r, a.y, &shared, w);
    a.backward(b.dx, a.x, &shared, w);
    const double err = gradcheck(loss,
                                 {{"x", &a.x.data, &a.dx.data},
                                  {"router1", &a.router.data, &a.drouter.data},
                                  {"gate_up1", &a.gate_up.data, &a.dgate_up.data},
                                  {"down1", &a.down.data, &a.ddown.data},
                                  {"router2", &b.router.data, &b.drouter.data},
                                  {"gate_up2", &b.gate_up.data, &b.dgate_up.data},
                                  {"down2", &b.down.data, &b.ddown.data}},
                                 [&](const std::string& nm, double er) { report("two layers+aux", nm, er); });
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(gradient_rule) {
    moe_case<double> m(7, 5, 6, 4, 2, 10);
    auto r = random_tensor<double>({7, 5}, 19);
    m.forward(m.x, &m.balance);
    m.backward(r, m.x, &m.balance, 0.3);
    const auto dx1 = m.dx.data, dr1 = m.drouter.data, dgu1 = m.dgate_up.data, dd1 = m.ddown.data;
    m.backward(r, m.x, &m.balance, 0.3); // parameters accumulate, dx is assigned
    BOOST_TEST(rel_error(m.dx.data, dx1) < 1e-15);
    for (std::size_t i = 0; i < dr1.size(); ++i)
        BOOST_TEST(std::abs(m.drouter.data[i] - 2 * dr1[i]) < 1e-12);
    for (std::size_t i = 0; i < dgu1.size(); ++i)
        BOOST_TEST(std::abs(m.dgate_up.data[i] - 2 * dgu1[i]) < 1e-12);
    for (std::size_t i = 0; i < dd1.size(); ++i)
        BOOST_TEST(std::abs(m.ddown.data[i] - 2 * dd1[i]) < 1e-12);
    m.backward(r, m.x, &m.balance, 0.3, grad_write::add); // dx adds when asked
    for (std::size_t i = 0; i < dx1.size(); ++i)
        BOOST_TEST(std::abs(m.dx.data[i] - 2 * dx1[i]) < 1e-12);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(fast_backends_match_reference_f32, B, fast_backends) {
    // Enough rows that every expert gets several, and widths that are not multiples of a SIMD width.
    const index_t n = 37, d = 24, f = 20, e = 5, k = 2;
    moe_case<float> want(n, d, f, e, k, 80), got(n, d, f, e, k, 80);
    auto dy = random_tensor<float>({n, d}, 90);
    want.forward<ref>(want.x, &want.balance);
    got.forward<B>(got.x, &got.balance);
    BOOST_TEST(rel_error(got.y.data, want.y.data) < f32_tolerance);
    BOOST_TEST(std::abs(got.balance.loss() - want.balance.loss()) < 1e-5 * want.balance.loss());
    for (index_t x = 0; x < e; ++x)
        BOOST_TEST(got.cache.tokens_of(x) == want.cache.tokens_of(x));
    want.backward<ref>(dy, want.x, &want.balance, 0.1);
    got.backward<B>(dy, got.x, &got.balance, 0.1);
    BOOST_TEST(rel_error(got.dx.data, want.dx.data) < f32_tolerance);
    BOOST_TEST(rel_error(got.drouter.data, want.drouter.data) < f32_tolerance);
    BOOST_TEST(rel_error(got.dgate_up.data, want.dgate_up.data) < f32_tolerance);
    BOOST_TEST(rel_error(got.ddown.data, want.ddown.data) < f32_tolerance);
    // f32 against the f64 run of the same op
    moe_case<double> exact(n, d, f, e, k, 80);
    exact.forward(exact.x, &exact.balance);
    exact.backward(cast<double>(dy), exact.x, &exact.balance, 0.1);
    BOOST_TEST(rel_error(got.y.data, exact.y.data) < f32_tolerance);
    BOOST_TEST(rel_error(got.drouter.data, exact.drouter.data) < f32_tolerance);
    BOOST_TEST(rel_error(got.dgate_up.data, exact.dgate_up.data) < f32_tolerance);
}

BOOST_AUTO_TEST_CASE(errors_name_the_shapes) {
    moe_case<double> m(4, 5, 6, 3, 2, 1);
    owned<double> bad_router({3, 4});
    try {
        moe_forward<ref, double>(m.y, m.cache, m.ws, m.x, bad_router, m.gate_up, m.down);
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find("router has shape [3, 4]") != std::string::npos, e.what());
    }
    arena a(1 << 16);
    auto too_many = moe_cache<double>::allocate(a, 4, 6, 3, 4); // top_k 4 of 3 experts
    try {
        moe_forward<ref, double>(m.y, too_many, m.ws, m.x, m.router, m.gate_up, m.down);
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find("top_k 4 must be in [1, n_experts = 3]") != std::string::npos, e.what());
    }
}

// ---- the decoder with experts ---------------------------------------------------------------------------

namespace {
template <class Model>
void load_fixture(Model& model, const std::string& name) {
    const safetensors_reader fx(std::filesystem::path(TINYLM_SOURCE_DIR) / "tests/reference/fixtures" /
                                (name + ".safetensors"));
    for (const parameter_entry& e : model.parameter_entries())
        fx.read("param." + e.name, e.value);
}
} // namespace

BOOST_AUTO_TEST_CASE(decoder_kv_cache_matches_full_forward) {
    decoder<test::mixtral_moe, reference_cpu> model(0);
    load_fixture(model, "mixtral_moe");
    const index_t B = 2, T = 11, V = test::mixtral_moe::value.vocab_size;
    owned<token_t> ids({B, T});
    counter_rng rng(5);
    for (auto& id : ids.data)
        id = token_t(rng.below(std::uint64_t(V)));
    auto cache = model.make_cache(B, 16, /*chunk=*/3);
    // chunks of 3 and 2 rows per sequence, single tokens, then 3 + 1
    const double worst = cached_vs_full_logits(model, cache, ids, {5, 1, 1, 4});
    BOOST_TEST_MESSAGE("mixtral_moe: cached vs full logits " << worst);
    BOOST_TEST(worst < 1e-5);
}

namespace {
template <bool PerLayer>
struct heavy_aux { // the fixture's shape with a heavy aux loss, pooled (transformers) or per layer
    static constexpr model_config value = [] {
        model_config c = test::mixtral_moe::value;
        c.moe.aux_loss_weight = 1.0;
        c.moe.balance_per_layer = PerLayer;
        return c;
    }();
};

// A central difference of loss() along a random direction of each layer's router against the gradient
// backward() accumulated. Router weights are scaled up so that top-2 choices have margins wider than the
// step (a flipped choice is a jump, not a slope); the expert counts at both ends are checked to be unchanged.
template <class Config>
void check_router_gradient(const char* label) {
    decoder<Config, ref> model(21);
    const index_t B = 2, T = 9, V = Config::value.vocab_size;
    owned<token_t> ids({B, T}), targets({B, T});
    counter_rng rng(8);
    for (index_t i = 0; i < B * T; ++i) {
        ids.data[i] = token_t(rng.below(std::uint64_t(V)));
        targets.data[i] = token_t(rng.below(std::uint64_t(V)));
    }
    std::vector<tensor_view<float>> routers, grads;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.name.ends_with("mlp.gate.weight")) {
            for (index_t i = 0; i < e.value.numel(); ++i)
                e.value[i] *= 40.0f;
            routers.push_back(e.value);
            grads.push_back(e.grad);
        }
    BOOST_TEST_REQUIRE(routers.size() == 2u);
    model.loss(ids, targets);
    BOOST_TEST(model.aux_loss() > 2.0); // top-2: uniform routing gives exactly 2
    model.backward();
    auto counts = [&] { return std::vector{model.expert_counts(0), model.expert_counts(1)}; };
    const auto base_counts = counts();
    for (std::size_t l = 0; l < routers.size(); ++l) {
        std::vector<float> dir(std::size_t(routers[l].numel()));
        double slope = 0;
        for (std::size_t i = 0; i < dir.size(); ++i) {
            dir[i] = rng.uniform() < 0.5 ? -1.0f : 1.0f;
            slope += double(grads[l][index_t(i)]) * dir[i];
        }
        const float eps = 1e-3f;
        auto loss_at = [&](float t) {
            for (std::size_t i = 0; i < dir.size(); ++i)
                routers[l][index_t(i)] += t * dir[i];
            const double v = model.eval_loss(ids, targets);
            BOOST_TEST_REQUIRE((counts() == base_counts), label << ": a top-2 choice flipped; use a smaller step");
            for (std::size_t i = 0; i < dir.size(); ++i)
                routers[l][index_t(i)] -= t * dir[i];
            return v;
        };
        const double numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
        const double err = std::abs(numeric - slope) / std::max(1.0, std::abs(slope));
        BOOST_TEST_MESSAGE(label << " layer " << l << ": directional derivative " << numeric << " vs " << slope);
        BOOST_TEST(err < 5e-3, label << " layer " << l << ": " << numeric << " vs " << slope);
    }
}
} // namespace

// The aux loss is part of loss() and eval_loss(); its router gradient matches a finite difference both when
// the layers pool their statistics (transformers) and when each layer has its own balance term (the mean).
BOOST_AUTO_TEST_CASE(decoder_router_gradient_pooled_and_per_layer_balance) {
    check_router_gradient<heavy_aux<false>>("pooled");
    check_router_gradient<heavy_aux<true>>("per layer");
    // Same weights, same batch: the two definitions differ, and a 1-layer model cannot tell them apart.
    decoder<heavy_aux<false>, ref> pooled(21);
    decoder<heavy_aux<true>, ref> per_layer(21);
    owned<token_t> ids({1, 7}, token_t(3)), targets({1, 7}, token_t(5));
    for (index_t i = 0; i < 7; ++i)
        ids.data[i] = token_t(i * 5 % 64);
    pooled.loss(ids, targets);
    per_layer.loss(ids, targets);
    BOOST_TEST(std::isfinite(per_layer.aux_loss()));
    BOOST_TEST(pooled.aux_loss() != per_layer.aux_loss());
}

BOOST_AUTO_TEST_CASE(decoder_counts_parameters_and_flops_with_experts) {
    using C = test::mixtral_moe;
    decoder<C, reference_cpu> model(1);
    std::int64_t n = 0;
    for (const parameter_entry& e : model.parameter_entries())
        n += e.value.numel();
    BOOST_TEST(n == parameter_count(C::value));
    // Against the dense model of the same shape: 4 experts and a router instead of one MLP; top-2 flops.
    model_config dense = C::value;
    dense.moe = {};
    BOOST_TEST(parameter_count(C::value) - parameter_count(dense) == 2 * (3 * (3 * 32 * 48) + 4 * 32));
    BOOST_TEST(flops_per_token(C::value, 12) - flops_per_token(dense, 12) == 6.0 * 2 * (3 * 32 * 48 + 4 * 32));
}

BOOST_AUTO_TEST_CASE(decoder_hf_checkpoint_uses_mixtral_names_and_config) {
    const auto dir = std::filesystem::temp_directory_path() / ("tinylm_moe_" + std::to_string(::getpid()));
    decoder<test::mixtral_moe, eigen_cpu> a(11), b(12);
    save_pretrained(a, dir / "ckpt");
    const auto config = nlohmann::json::parse(std::ifstream(dir / "ckpt/config.json"));
    BOOST_TEST(config.at("architectures")[0].get<std::string>() == "MixtralForCausalLM");
    BOOST_TEST(config.at("model_type").get<std::string>() == "mixtral");
    BOOST_TEST(config.at("num_local_experts").get<int>() == 4);
    BOOST_TEST(config.at("num_experts_per_tok").get<int>() == 2);
    BOOST_TEST(config.at("router_aux_loss_coef").get<double>() == 0.02);
    BOOST_TEST(config.at("output_router_logits").get<bool>());
    const safetensors_reader st(dir / "ckpt/model.safetensors");
    for (const char* name : {"model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.gate_up_proj",
                             "model.layers.1.mlp.experts.down_proj"})
        BOOST_TEST(st.contains(name), name);
    BOOST_TEST(!st.contains("model.layers.0.mlp.up_proj.weight"));
    load_pretrained(b, dir / "ckpt");
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        const auto& x = a.parameter_entries()[i].value;
        BOOST_TEST_REQUIRE(std::memcmp(x.data, b.parameter_entries()[i].value.data, std::size_t(x.numel()) * 4) == 0);
    }
    decoder<test::llama_gqa, eigen_cpu> dense(1);
    try {
        load_pretrained(dense, dir / "ckpt");
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find("num_local_experts: 4 in the file") != std::string::npos, e.what());
    }
    std::filesystem::remove_all(dir);
}

namespace {
// The device-step cases' tokens: random ids and targets, every seventh target ignored (-100).
std::pair<std::vector<token_t>, std::vector<token_t>> random_step_tokens(const model_config& c, long long n) {
    std::vector<token_t> ids(static_cast<std::size_t>(n)), targets(ids.size());
    counter_rng rng(11);
    for (std::size_t i = 0; i < ids.size(); ++i) {
        ids[i] = token_t(rng.below(std::uint64_t(c.vocab_size)));
        targets[i] = i % 7 == 5 ? -100 : token_t(rng.below(std::uint64_t(c.vocab_size)));
    }
    return {ids, targets};
}
} // namespace

// The GPU's training step with experts (cuda/decoder_step.hpp: the dispatch, the per-expert products, the combine and
// their backward, the balancing loss) in the order of its kernels and over the buffers of its arena plan, executed by
// the CPU drivers of the same arithmetic (gpu::cpu_ops), against tl::decoder on the same weights: the fixture's shape
// with the pooled balancing loss (transformers', weight 0.02) and with a heavy per-layer one (weight 1). The loss,
// the aux loss, every expert's count, every gradient; gradient checkpointing bit for bit; then the optimizer.
template <class Config>
void check_decoder_step_with_experts(const char* label) {
    decoder<Config, ref> model(42);
    const model_config& c = Config::value;
    const long long B = 2, T = 16;
    const auto tokens = random_step_tokens(c, B * T);
    const std::vector<token_t>&ids = tokens.first, &targets = tokens.second;
    model.zero_grad();
    const float loss = model.loss(cview<token_t>{ids.data(), {B, T}}, cview<token_t>{targets.data(), {B, T}});
    model.backward();

    struct on_cpu {
        on_cpu(const model_config& c, bool checkpointing, bool bf16)
            : o(options(checkpointing, bf16)), plan(gpu::plan_decoder_step(c, o)), memory(plan.bytes()),
              step(c, o, plan, memory.data(), ex) {}
        static gpu::decoder_plan_options options(bool checkpointing, bool bf16) {
            gpu::decoder_plan_options o;
            o.batch = 2, o.time = 16, o.logits_rows = 20, o.bf16_weights = bf16, o.checkpointing = checkpointing;
            return o;
        }
        const gpu::decoder_plan_options o;
        const gpu::arena_plan plan;
        std::vector<std::byte> memory;
        gpu::cpu_ops ex;
        gpu::decoder_step<gpu::cpu_ops> step; // last: it keeps references to the members above
    };
    on_cpu plain(c, false, false), checkpointed(c, true, false), bf16(c, false, true);
    BOOST_TEST(checkpointed.plan.bytes() < plain.plan.bytes());
    // The grouped buffers hold every slot (N K rows: any routing fits), in place of the dense MLP's.
    const std::size_t slots = std::size_t(B * T * c.moe.top_k), f = std::size_t(c.d_ff);
    BOOST_TEST(plain.plan.at("layer.1.moe.gate_up").bytes == slots * 2 * f * sizeof(float));
    BOOST_TEST(plain.plan.at("moe.rows").bytes == slots * std::size_t(c.d_model) * sizeof(float));
    BOOST_CHECK_THROW(plain.plan.at("layer.0.gate"), tl::error);
    double step_loss[3];
    on_cpu* runs[] = {&plain, &checkpointed, &bf16};
    for (int i = 0; i < 3; ++i) {
        gpu::decoder_step<gpu::cpu_ops>& step = runs[i]->step;
        tl_test::load_parameters_into_step(model, step);
        step.zero_gradients();
        step_loss[i] = step.forward_backward(ids.data(), targets.data());
    }
    gpu::decoder_step<gpu::cpu_ops>& step = plain.step;
    BOOST_TEST_MESSAGE(label << ": decoder loss " << loss << " (aux " << model.aux_loss() << "), decoder_step "
                             << step_loss[0] << " (aux " << step.aux_loss() << "), with bf16 products "
                             << step_loss[2]);
    BOOST_TEST(std::abs(step_loss[0] - double(loss)) < 1e-5 * double(loss), label);
    BOOST_TEST(std::abs(step.aux_loss() - model.aux_loss()) <= 1e-6 * model.aux_loss(), label);
    BOOST_TEST(std::abs(step_loss[2] - step_loss[0]) < 2e-2 * step_loss[0], label << ": bf16 products");
    for (int l = 0; l < c.n_layers; ++l) {
        const std::vector<index_t> want = model.expert_counts(l);
        const std::vector<long long> got = step.expert_counts(l);
        BOOST_TEST_REQUIRE(got.size() == want.size());
        for (std::size_t e = 0; e < want.size(); ++e)
            BOOST_TEST(got[e] == want[e], label << ": layer " << l << ", expert " << e);
    }
    const double worst = tl_test::expect_gradients_match(model, step, 1e-4, std::string(label) + ", ");
    for (const parameter_entry& e : model.parameter_entries())
        BOOST_TEST(std::memcmp(step.gradient(e.name), checkpointed.step.gradient(e.name),
                               std::size_t(e.grad.numel()) * sizeof(float)) == 0,
                   label << ", " << e.name << ": checkpointing");
    BOOST_TEST(step_loss[1] == step_loss[0], label << ": checkpointing");
    BOOST_TEST_MESSAGE(label << ": largest gradient difference " << worst << " of its tensor's scale");
    tl_test::expect_step_optimizer_matches(model, step);
}

BOOST_AUTO_TEST_CASE(cuda_decoder_step_on_the_cpu_matches_the_decoder) {
    check_decoder_step_with_experts<test::mixtral_moe>("pooled balance, weight 0.02");
    check_decoder_step_with_experts<heavy_aux<true>>("per-layer balance, weight 1");
}

// The device-resident model with experts (gpu::device_decoder, what tl::trainer trains on the device) on the CPU
// executor: its host mirror has tl::decoder's names and shapes (the experts stacked, (E, 2f, d) and (E, d, f)), its
// loss that of the decoder it was loaded from (also for a validation batch padded with ignored rows), and
// save_pretrained of it gives Mixtral's files, which a tl::decoder loads bit for bit.
BOOST_AUTO_TEST_CASE(cuda_device_decoder_with_experts_mirrors_the_decoder) {
    decoder<test::mixtral_moe, eigen_cpu> a(11), b(12);
    gpu::device_decoder<gpu::cpu_ops> device(test::mixtral_moe::value, {.batch = 2, .time = 8, .logits_rows = 16});
    device.load_from(a);
    BOOST_TEST_REQUIRE(device.parameter_entries().size() == a.parameter_entries().size());
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        BOOST_TEST(device.parameter_entries()[i].name == a.parameter_entries()[i].name);
        BOOST_TEST((device.parameter_entries()[i].value.shape == a.parameter_entries()[i].value.shape),
                   a.parameter_entries()[i].name);
    }
    owned<token_t> ids({2, 8}), targets({2, 8});
    for (index_t i = 0; i < 16; ++i)
        ids.data[i] = token_t(i * 7 % 64), targets.data[i] = token_t((i * 11 + 3) % 64);
    // Each layer's expert counts of the last forward are the decoder's (the slots of the rows it saw).
    const auto same_counts = [&](const char* when, long long slots) {
        for (index_t l = 0; l < test::mixtral_moe::value.n_layers; ++l) {
            const std::vector<index_t> want_counts = a.expert_counts(l);
            const std::vector<long long> got_counts = device.expert_counts(l);
            BOOST_TEST(std::vector<long long>(want_counts.begin(), want_counts.end()) == got_counts,
                       when << ", layer " << l);
            long long sum = 0;
            for (const long long c : got_counts)
                sum += c;
            BOOST_TEST(sum == slots, when << ", layer " << l);
        }
    };
    const long long top_k = test::mixtral_moe::value.moe.top_k;
    const double want = a.loss(ids, targets), got = device.loss_and_backward(ids, targets, 1.0);
    BOOST_TEST(std::abs(got - want) < 1e-5 * want, got << " against " << want);
    same_counts("training batch", 16 * top_k);
    // A validation batch of one row, padded to two on the device: the padding's routing stays out of the balancing
    // loss and of the expert counts, as the decoder on one row has them.
    const cview<token_t> one_ids{ids.data.data(), {1, 8}}, one_targets{targets.data.data(), {1, 8}};
    const double want_one = a.eval_loss(one_ids, one_targets), got_one = device.eval_loss(one_ids, one_targets);
    BOOST_TEST(std::abs(got_one - want_one) < 1e-6 * want_one, "padded: " << got_one << " against " << want_one);
    same_counts("padded validation", 8 * top_k);
    const auto dir = std::filesystem::temp_directory_path() / ("tinylm_moe_device_" + std::to_string(::getpid()));
    device.download_parameters();
    save_pretrained(device, dir);
    load_pretrained(b, dir);
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        const auto& x = a.parameter_entries()[i].value;
        BOOST_TEST(std::memcmp(x.data, b.parameter_entries()[i].value.data, std::size_t(x.numel()) * 4) == 0,
                   a.parameter_entries()[i].name);
    }
    std::filesystem::remove_all(dir);
}

// LoRA with experts on the device, what tl::decoder allows (validate_adapter_for): adapters on attention (q, k, v,
// o), the router and the experts frozen. Two adapters: rank 4 on all four attention projections, and rank 2 on q and
// v with dropout 0.25 (the device draws tl::decoder's masks).
namespace {
struct moe_lora_attention {
    static constexpr lora_config value{.rank = 4, .alpha = 8, .targets = lora_attention};
};
struct moe_lora_qv_dropout {
    static constexpr lora_config value{.rank = 2, .alpha = 4, .dropout = 0.25f, .targets = lora_q | lora_v};
};
} // namespace

// The plan takes LoRA on attention with experts, its gradients and AdamW's moments the adapter's only (no buffers for
// the frozen router and experts), and refuses what tl::decoder refuses, naming it: an adapter on gate, up or down
// (the experts have none) and QLoRA (tl::decoder's NF4 base is for dense MLPs).
BOOST_AUTO_TEST_CASE(cuda_decoder_plan_takes_lora_on_attention_with_experts) {
    const model_config& c = test::mixtral_moe::value;
    gpu::decoder_plan_options o;
    o.lora = moe_lora_attention::value;
    const gpu::arena_plan plan = gpu::plan_decoder_step(c, o);
    std::size_t adapter = 0;
    for (const gpu::parameter_slice& s : gpu::adapter_layout(c, o.lora)) {
        BOOST_TEST(s.name.find(".self_attn.") != std::string::npos, s.name);
        adapter += s.size();
    }
    // Per layer r (in + out) of q, k, v and o: r (4 d + 2 q + 2 kv).
    BOOST_TEST(adapter == std::size_t(c.n_layers * 4 * (4 * c.d_model + 2 * c.q_width() + 2 * c.kv_width())));
    for (const char* block : {"adapter", "gradients", "adam.m", "adam.v"})
        BOOST_TEST(plan.at(block).bytes == adapter * sizeof(float), block);
    const auto refused = [&](const lora_config& lora, const std::string& named) {
        gpu::decoder_plan_options r;
        r.lora = lora;
        try {
            (void)gpu::plan_decoder_step(c, r);
            BOOST_ERROR("expected an error naming " << named);
        } catch (const tl::error& e) {
            BOOST_TEST(std::string(e.what()).find(named) != std::string::npos, e.what());
        }
    };
    for (const std::uint32_t mlp :
         {std::uint32_t(lora_gate), std::uint32_t(lora_up), std::uint32_t(lora_down), std::uint32_t(lora_all)})
        refused({.rank = 4, .alpha = 8, .targets = mlp}, "LoRA with experts targets attention only");
    refused({.rank = 4, .alpha = 8, .targets = lora_attention, .quantized_base = true},
            "QLoRA (quantized_base) with experts");
}

// The GPU's training step with experts and LoRA on attention on the CPU executor against tl::decoder with the same
// adapter (B random: every adapter gradient from the start), over two consecutive steps (with dropout the second
// draws new masks on both sides): the loss and the aux loss within 1e-5, every expert's count, every adapter
// gradient within 1e-4 of its tensor's scale (the balancing loss's gradient reaches the adapters through the
// router's input gradient: the heavy aux weight makes it count); gradient checkpointing bit for bit; then tl's
// gradients through two AdamW steps bit for bit as tl::adamw, the frozen base (router and experts included) unchanged.
template <class Config, class Adapter>
void check_decoder_step_with_experts_and_lora(const char* label) {
    decoder<Config, ref, Adapter> model(42);
    counter_rng init(5, 1);
    for (const parameter_entry& e : model.trainable_entries())
        for (float& w : e.value)
            w = float(0.2 * init.normal());
    const model_config& c = Config::value;
    const long long B = 2, T = 16;
    const auto tokens = random_step_tokens(c, B * T);
    const std::vector<token_t>&ids = tokens.first, &targets = tokens.second;
    const cview<token_t> ids_view{ids.data(), {B, T}}, targets_view{targets.data(), {B, T}};

    struct on_cpu {
        on_cpu(const model_config& c, bool checkpointing)
            : o(options(checkpointing)), plan(gpu::plan_decoder_step(c, o)), memory(plan.bytes()),
              step(c, o, plan, memory.data(), ex) {}
        static gpu::decoder_plan_options options(bool checkpointing) {
            gpu::decoder_plan_options o;
            o.batch = 2, o.time = 16, o.logits_rows = 20, o.bf16_weights = false, o.checkpointing = checkpointing;
            o.lora = Adapter::value;
            return o;
        }
        const float* block(const char* name) const {
            return reinterpret_cast<const float*>(memory.data() + plan.at(name).offset);
        }
        std::vector<float> copy(const char* name) const {
            return {block(name), block(name) + plan.at(name).bytes / sizeof(float)};
        }
        const gpu::decoder_plan_options o;
        const gpu::arena_plan plan;
        std::vector<std::byte> memory;
        gpu::cpu_ops ex;
        gpu::decoder_step<gpu::cpu_ops> step; // last: it keeps references to the members above
    };
    on_cpu plain(c, false), checkpointed(c, true);
    for (on_cpu* run : {&plain, &checkpointed}) {
        for (const parameter_entry& e : model.parameter_entries())
            std::copy_n(e.value.data, e.value.numel(), run->step.parameter(e.name));
        run->step.parameters_changed();
        run->step.set_dropout_seed(model.dropout_seed());
        run->step.set_dropout_calls(model.dropout_calls());
    }
    gpu::decoder_step<gpu::cpu_ops>& step = plain.step;
    BOOST_TEST_REQUIRE(step.adapter_layout().size() == model.trainable_entries().size());
    BOOST_CHECK_THROW(step.gradient("model.layers.0.mlp.gate.weight"), tl::error); // frozen: no gradient
    BOOST_CHECK_THROW(step.gradient("model.layers.1.mlp.experts.down_proj"), tl::error);
    const std::vector<float> base = plain.copy("parameters");
    for (int k = 0; k < 2; ++k) {
        model.zero_grad();
        const float loss = model.loss(ids_view, targets_view);
        model.backward();
        step.zero_gradients();
        checkpointed.step.zero_gradients();
        const double step_loss = step.forward_backward(ids.data(), targets.data());
        const double checkpointed_loss = checkpointed.step.forward_backward(ids.data(), targets.data());
        BOOST_TEST_MESSAGE(label << ", step " << k << ": decoder loss " << loss << " (aux " << model.aux_loss()
                                 << "), decoder_step " << step_loss << " (aux " << step.aux_loss() << ")");
        BOOST_TEST(std::abs(step_loss - double(loss)) < 1e-5 * double(loss), label << ", step " << k);
        BOOST_TEST(std::abs(step.aux_loss() - model.aux_loss()) <= 1e-5 * model.aux_loss(), label << ", step " << k);
        BOOST_TEST(step.dropout_calls() == model.dropout_calls(), label);
        for (int l = 0; l < c.n_layers; ++l) {
            const std::vector<index_t> want = model.expert_counts(l);
            const std::vector<long long> got = step.expert_counts(l);
            BOOST_TEST((std::vector<long long>(want.begin(), want.end()) == got), label << ": layer " << l);
        }
        double worst = 0;
        for (const parameter_entry& e : model.trainable_entries()) {
            const float* g = step.gradient(e.name);
            double err = 0, scale = 0;
            for (index_t i = 0; i < e.grad.numel(); ++i) {
                err = std::max(err, std::abs(double(g[i]) - double(e.grad[i])));
                scale = std::max(scale, std::abs(double(e.grad[i])));
            }
            BOOST_TEST(scale > 0.0, label << ", " << e.name);
            BOOST_TEST(err <= 1e-4 * scale,
                       label << ", step " << k << ", " << e.name << ": " << err << " of " << scale);
            worst = std::max(worst, err / scale);
        }
        BOOST_TEST_MESSAGE(label << ", step " << k << ": largest adapter gradient difference " << worst
                                 << " of its tensor's scale");
        BOOST_TEST(checkpointed_loss == step_loss, label << ": checkpointing");
        BOOST_TEST((checkpointed.copy("gradients") == plain.copy("gradients")), label << ": checkpointing");
    }
    // The optimizer: tl's gradients on both sides, two AdamW steps.
    for (const parameter_entry& e : model.trainable_entries())
        std::copy_n(e.grad.data, e.grad.numel(), step.gradient(e.name));
    const adamw_options options{.weight_decay = 0.1};
    adamw opt(model, options);
    for (const double lr : {1e-3, 2e-3}) {
        opt.step(lr);
        step.adamw_step(lr, options);
        for (const parameter_entry& e : model.trainable_entries())
            BOOST_TEST(std::memcmp(step.parameter(e.name), e.value.data, std::size_t(e.value.numel()) * 4) == 0,
                       label << ", " << e.name << " after the step at lr " << lr);
    }
    BOOST_TEST((plain.copy("parameters") == base), label << ": the frozen base changed");
}

BOOST_AUTO_TEST_CASE(cuda_decoder_step_with_lora_on_attention_matches_the_decoder) {
    check_decoder_step_with_experts_and_lora<test::mixtral_moe, moe_lora_attention>("pooled balance, weight 0.02");
    check_decoder_step_with_experts_and_lora<heavy_aux<true>, moe_lora_qv_dropout>(
        "per-layer balance, weight 1, dropout 0.25 on q and v");
}

// tl::trainer over the device-resident model with experts and LoRA (gpu::device_decoder<cpu_ops, A>, what 05/07/08
// --device train) against tl::trainer over tl::decoder with the same adapter (rank 2 on q and v, dropout 0.25; the
// per-layer balancing loss at weight 1; B random): 3 steps of 2 x 16 tokens, 2 micro-batches each, clipping at 1, a
// validation; every step's loss and gradient norm and the validation within 1e-5, the dropout count, the experts'
// counts of the last forward, the adapters after the run within 1e-4 of each tensor's largest element.
BOOST_AUTO_TEST_CASE(cuda_device_decoder_with_experts_and_lora_trains_as_the_decoder) {
    using config = heavy_aux<true>;
    using adapter = moe_lora_qv_dropout;
    decoder<config, ref, adapter> host(3);
    counter_rng init(9, 2);
    for (const parameter_entry& e : host.trainable_entries())
        for (float& w : e.value)
            w = float(0.1 * init.normal());
    gpu::device_decoder<gpu::cpu_ops, adapter> device(config::value, {.batch = 2, .time = 16, .logits_rows = 20});
    device.load_from(host);
    counter_rng rng(13);
    std::vector<token_t> tokens(4000), validation(400);
    for (token_t& t : tokens)
        t = token_t(rng.below(64));
    for (token_t& t : validation)
        t = token_t(rng.below(64));
    const trainer_options options{.batch_size = 2,
                                  .seq_len = 16,
                                  .grad_accum = 2,
                                  .max_steps = 3,
                                  .peak_lr = 1e-2,
                                  .min_lr = 1e-3,
                                  .warmup_steps = 1,
                                  .clip = 1.0,
                                  .eval_every = 3,
                                  .eval_windows = 3,
                                  .checkpoint_every = 0};
    struct record {
        std::vector<double> loss, norm, val;
    };
    const auto train = [&](auto& model, record& r) {
        token_windows source(tokens, 6);
        trainer t(model, source, validation, options);
        t.on_step = [&r](const step_report& s) {
            r.loss.push_back(s.loss);
            r.norm.push_back(s.grad_norm);
        };
        t.on_eval = [&r](long long, double v) { r.val.push_back(v); };
        BOOST_TEST((t.run() == train_outcome::finished));
    };
    record on_host, on_device;
    train(host, on_host);
    train(device, on_device);
    BOOST_TEST_REQUIRE(on_host.loss.size() == 3u);
    BOOST_TEST_REQUIRE(on_device.loss.size() == 3u);
    BOOST_TEST_REQUIRE(on_device.val.size() == on_host.val.size());
    for (std::size_t i = 0; i < 3; ++i) {
        BOOST_TEST_MESSAGE("step " << i + 1 << ": loss decoder " << on_host.loss[i] << ", device " << on_device.loss[i]
                                   << "; gradient norm " << on_host.norm[i] << ", " << on_device.norm[i]);
        BOOST_TEST(std::abs(on_device.loss[i] - on_host.loss[i]) <= 1e-5 * on_host.loss[i], "step " << i + 1);
        BOOST_TEST(std::abs(on_device.norm[i] - on_host.norm[i]) <= 1e-5 * on_host.norm[i], "step " << i + 1);
    }
    BOOST_TEST(std::abs(on_device.val.back() - on_host.val.back()) <= 1e-5 * on_host.val.back());
    BOOST_TEST(device.dropout_calls() == host.dropout_calls());
    BOOST_TEST(host.dropout_calls() == 6u);
    for (index_t l = 0; l < config::value.n_layers; ++l) { // the last forward's: the validation's padded batch
        const std::vector<index_t> want = host.expert_counts(l);
        BOOST_TEST((std::vector<long long>(want.begin(), want.end()) == device.expert_counts(l)), "layer " << l);
    }
    device.download_parameters();
    double worst = 0;
    for (std::size_t i = 0; i < host.parameter_entries().size(); ++i) {
        const parameter_entry &h = host.parameter_entries()[i], &d = device.parameter_entries()[i];
        BOOST_TEST_REQUIRE(h.name == d.name);
        if (h.kind != param_kind::adapter) continue;
        double err = 0, scale = 0;
        for (index_t j = 0; j < h.value.numel(); ++j) {
            err = std::max(err, std::abs(double(d.value[j]) - double(h.value[j])));
            scale = std::max(scale, std::abs(double(h.value[j])));
        }
        BOOST_TEST(err <= 1e-4 * scale, h.name << ": " << err << " of " << scale);
        worst = std::max(worst, err / scale);
    }
    BOOST_TEST_MESSAGE("adapters after 3 steps: largest difference " << worst << " of its tensor's scale");
}

BOOST_AUTO_TEST_SUITE_END()
