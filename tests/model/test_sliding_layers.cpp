// Sliding window per layer (model_config::full_attention_every): which layers slide, that a sliding and a
// full layer differ exactly at the positions the window cuts, that generation with the KV cache follows the
// same per-layer windows, the FLOPs formula, and config.json's layer_types (Hugging Face's MinistralForCausalLM).
// The parity with transformers on the same weights is in test_hf_parity.cpp (fixture ministral_layers).
#include "../support/kv_cache.hpp"
#include "../support/random.hpp"
#include "fixture_configs.hpp"

#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/model/decoder.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

using namespace tl;
using namespace tl::test;

namespace {

constexpr int window = 4;

// Two layers: `every` = 2 makes layer 0 sliding and layer 1 full; (0, w) slides both; (0, 0) slides none.
template <int Every, int Window>
struct probe {
    static constexpr model_config value{.vocab_size = 40,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 48,
                                        .max_seq_len = 32,
                                        .sliding_window = Window,
                                        .full_attention_every = Every,
                                        .init_std = 0.3};
};
using mixed = probe<2, window>;       // sliding, full
using all_sliding = probe<0, window>; // sliding, sliding
using all_full = probe<0, 0>;         // full, full

template <class To, class From>
void copy_weights(To& to, const From& from) {
    const auto &a = from.parameter_entries(), &b = to.parameter_entries();
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        BOOST_REQUIRE(a[i].name == b[i].name);
        std::copy(a[i].value.begin(), a[i].value.end(), b[i].value.begin());
    }
}

owned<token_t> random_ids(index_t B, index_t T, index_t vocab, std::uint64_t seed) {
    owned<token_t> ids({B, T});
    counter_rng rng(seed);
    for (auto& id : ids.data)
        id = token_t(rng.below(std::uint64_t(vocab)));
    return ids;
}

// max |a - b| over the logits of position t of every sequence.
double position_diff(const owned<float>& a, const owned<float>& b, index_t t) {
    const index_t B = a.shape[0], T = a.shape[1], V = a.shape[2];
    double diff = 0;
    for (index_t s = 0; s < B; ++s)
        for (index_t v = 0; v < V; ++v)
            diff = std::max(diff, double(std::abs(a.data[(s * T + t) * V + v] - b.data[(s * T + t) * V + v])));
    return diff;
}

bool error_names(const tl::error& e, const std::string& what) {
    const bool found = std::string(e.what()).find(what) != std::string::npos;
    if (!found) BOOST_TEST_MESSAGE("unexpected message: " << e.what());
    return found;
}

} // namespace

BOOST_AUTO_TEST_SUITE(sliding_layers)

BOOST_AUTO_TEST_CASE(full_attention_every_picks_the_full_layers) {
    constexpr model_config every2{.n_layers = 5, .sliding_window = 8, .full_attention_every = 2};
    constexpr model_config every3{.n_layers = 5, .sliding_window = 8, .full_attention_every = 3};
    constexpr model_config all{.n_layers = 5, .sliding_window = 8};
    constexpr model_config none{.n_layers = 5};
    const std::vector<int> want2{8, 0, 8, 0, 8}, want3{8, 8, 0, 8, 8};
    for (int l = 0; l < 5; ++l) {
        BOOST_TEST(every2.layer_window(l) == want2[std::size_t(l)], "every 2, layer " << l);
        BOOST_TEST(every3.layer_window(l) == want3[std::size_t(l)], "every 3, layer " << l);
        BOOST_TEST(all.layer_window(l) == 8);
        BOOST_TEST(none.layer_window(l) == 0);
    }
}

BOOST_AUTO_TEST_CASE(flops_count_each_layer_with_its_own_window) {
    // Two layers, one sliding and one full: the attention term is the mean of the all-sliding and all-full
    // models' (the matrix products are the same in all three).
    for (int seq : {2, window, 64, 256}) {
        const double m = flops_per_token(mixed::value, seq), s = flops_per_token(all_sliding::value, seq),
                     f = flops_per_token(all_full::value, seq);
        BOOST_TEST(std::abs(m - (s + f) / 2) <= 1e-12 * f, "seq " << seq);
        if (seq > window) {
            BOOST_TEST(s < m);
            BOOST_TEST(m < f);
        } else {
            BOOST_TEST(s == f); // the window cuts nothing
        }
    }
}

BOOST_AUTO_TEST_CASE(sliding_and_full_layers_differ_exactly_where_the_window_cuts) {
    decoder<mixed, reference_cpu> m(7);
    decoder<all_sliding, reference_cpu> s(0);
    decoder<all_full, reference_cpu> f(0);
    copy_weights(s, m);
    copy_weights(f, m);
    const index_t B = 2, T = 12, V = mixed::value.vocab_size;
    const auto ids = random_ids(B, T, V, 11);
    owned<float> lm({B, T, V}), ls({B, T, V}), lf({B, T, V});
    m.logits(ids, lm);
    s.logits(ids, ls);
    f.logits(ids, lf);
    // Query t sees keys t-3..t in a sliding layer and 0..t in a full one: the same keys while t < window.
    // From t = window on, layer 0 of `mixed` differs from `all_full` and its layer 1 from `all_sliding`.
    for (index_t t = 0; t < T; ++t) {
        const double to_sliding = position_diff(lm, ls, t), to_full = position_diff(lm, lf, t);
        BOOST_TEST_MESSAGE("position " << t << ": |mixed - all sliding| " << to_sliding << ", |mixed - all full| "
                                       << to_full);
        if (t < window) {
            BOOST_TEST(to_sliding == 0.0, "position " << t);
            BOOST_TEST(to_full == 0.0, "position " << t);
        } else {
            BOOST_TEST(to_sliding > 1e-3, "position " << t);
            BOOST_TEST(to_full > 1e-3, "position " << t);
        }
    }
    // The loss and its gradients follow the same per-layer windows: with targets only where the window cuts
    // nothing, the three models agree on the loss and on every gradient.
    owned<token_t> targets({B, T}, ignore_index);
    for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < window; ++t)
            targets.data[b * T + t] = ids.data[b * T + (t + 1) % T];
    const float loss_m = m.loss(ids, targets), loss_f = f.loss(ids, targets);
    BOOST_TEST(std::abs(loss_m - loss_f) <= 1e-6f * loss_f);
    m.backward();
    f.backward();
    for (std::size_t i = 0; i < m.parameter_entries().size(); ++i) {
        const auto &gm = m.parameter_entries()[i].grad, &gf = f.parameter_entries()[i].grad;
        const double err =
            rel_error(std::vector<float>(gm.begin(), gm.end()), std::vector<float>(gf.begin(), gf.end()));
        BOOST_TEST(err < 1e-6, m.parameter_entries()[i].name << ": " << err);
    }
    // With a target where the window cuts (the last position), the layer-0 gradients do differ.
    targets.data[T - 1] = ids.data[0];
    m.zero_grad();
    f.zero_grad();
    m.loss(ids, targets);
    f.loss(ids, targets);
    m.backward();
    f.backward();
    auto grad_of = [](const auto& model, const std::string& name) {
        for (const parameter_entry& e : model.parameter_entries())
            if (e.name == name) return e.grad;
        throw error("no parameter " + name);
    };
    const auto qm = grad_of(m, "model.layers.0.self_attn.q_proj.weight"),
               qf = grad_of(f, "model.layers.0.self_attn.q_proj.weight");
    BOOST_TEST(rel_error(std::vector<float>(qm.begin(), qm.end()), std::vector<float>(qf.begin(), qf.end())) > 1e-3);
}

BOOST_AUTO_TEST_CASE(kv_cache_uses_each_layers_window) {
    decoder<mixed, reference_cpu> model(3);
    const index_t B = 2, T = 13, V = mixed::value.vocab_size;
    const auto ids = random_ids(B, T, V, 5);
    auto cache = model.make_cache(B, 16, /*chunk=*/3);
    // a chunked prefill, single tokens, and a chunk across the window
    const double worst = cached_vs_full_logits(model, cache, ids, {5, 1, 1, 6});
    BOOST_TEST_MESSAGE("KV cache against the full forward, worst relative error " << worst);
    BOOST_TEST(worst < 1e-5);
}

BOOST_AUTO_TEST_CASE(config_json_writes_and_checks_layer_types) {
    constexpr model_config c = ministral_layers::value; // three layers: sliding, full, sliding
    const nlohmann::json j = hf_config_json(c);
    BOOST_TEST(j.at("architectures").at(0).get<std::string>() == "MinistralForCausalLM");
    BOOST_TEST(j.at("model_type").get<std::string>() == "ministral");
    BOOST_TEST(j.at("sliding_window").get<int>() == c.sliding_window);
    BOOST_TEST(
        (j.at("layer_types") == nlohmann::json::array({"sliding_attention", "full_attention", "sliding_attention"})));
    BOOST_CHECK_NO_THROW(check_hf_config(j, c, "config.json"));

    nlohmann::json other = j;
    other["layer_types"][1] = "sliding_attention";
    BOOST_CHECK_EXCEPTION(check_hf_config(other, c, "config.json"), tl::error, [](const tl::error& e) {
        return error_names(e, "layer_types (S sliding, F full): SSS in the file, SFS in the model");
    });
    nlohmann::json mistral = j; // no layer_types: every layer slides (Mistral)
    mistral.erase("layer_types");
    BOOST_CHECK_EXCEPTION(check_hf_config(mistral, c, "config.json"), tl::error,
                          [](const tl::error& e) { return error_names(e, "SSS in the file, SFS in the model"); });
    nlohmann::json short_list = j;
    short_list["layer_types"].erase(2);
    BOOST_CHECK_EXCEPTION(check_hf_config(short_list, c, "config.json"), tl::error,
                          [](const tl::error& e) { return error_names(e, "num_hidden_layers entries"); });

    // A window in every layer stays MistralForCausalLM, without layer_types.
    const nlohmann::json all = hf_config_json(all_sliding::value);
    BOOST_TEST(all.at("architectures").at(0).get<std::string>() == "MistralForCausalLM");
    BOOST_TEST(!all.contains("layer_types"));
    BOOST_CHECK_NO_THROW(check_hf_config(all, all_sliding::value, "config.json"));
    BOOST_CHECK_EXCEPTION(check_hf_config(all, mixed::value, "config.json"), tl::error,
                          [](const tl::error& e) { return error_names(e, "SS in the file, SF in the model"); });
}

BOOST_AUTO_TEST_CASE(transformers_config_of_the_fixture_matches) {
    // The config.json that transformers itself wrote for the parity fixture (MinistralConfig.to_json_string).
    const std::filesystem::path fx =
        std::filesystem::path(TINYLM_SOURCE_DIR) / "tests" / "reference" / "fixtures" / "ministral_layers.safetensors";
    BOOST_REQUIRE_MESSAGE(std::filesystem::exists(fx), fx << " is missing: run tests/reference/make_fixtures.py");
    const auto cfg = nlohmann::json::parse(safetensors_reader(fx).metadata().at("config"));
    BOOST_TEST(cfg.at("model_type").get<std::string>() == "ministral");
    BOOST_CHECK_NO_THROW(check_hf_config(cfg, ministral_layers::value, fx.string()));
}

BOOST_AUTO_TEST_SUITE_END()
