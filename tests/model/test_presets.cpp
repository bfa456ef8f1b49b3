// Every preset instantiates, validates, and has the parameter count its documentation states.
#include "../support/random.hpp"

#include <tinylm/core/rng.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/model/registry.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

using namespace tl;

BOOST_AUTO_TEST_SUITE(model_presets)

BOOST_AUTO_TEST_CASE(parameter_counts) {
    BOOST_TEST_MESSAGE("russian_novels_150m: " << parameter_count(presets::russian_novels_150m::value)
                                               << " parameters");
    BOOST_TEST_MESSAGE("qwen2_5_0_5b:        " << parameter_count(presets::qwen2_5_0_5b::value) << " parameters");
    BOOST_TEST_MESSAGE("tinyllama_1_1b:      " << parameter_count(presets::tinyllama_1_1b::value) << " parameters");
    BOOST_TEST(parameter_count(presets::russian_novels_150m::value) == 132'006'912);
    BOOST_TEST(parameter_count(presets::qwen2_5_0_5b::value) == 494'032'768);
    BOOST_TEST(parameter_count(presets::tinyllama_1_1b::value) == 1'100'048'384);
}

BOOST_AUTO_TEST_CASE(decoder_allocates_what_parameter_count_says) {
    decoder<presets::tiny, eigen_cpu> model(1);
    std::int64_t total = 0;
    for (const parameter_entry& e : model.parameter_entries())
        total += e.value.numel();
    BOOST_TEST(total == parameter_count(presets::tiny::value));
    BOOST_TEST(model.parameter_entries().front().name == "model.embed_tokens.weight");
    BOOST_TEST(model.parameter_entries().back().name == "lm_head.weight");
}

// Initialisation is its definition, stream i for the i-th tensor of the base walk: weight j = init_std x normal
// number j of counter_rng(seed, i), norms 1. The embedding (64,000 weights) is drawn in blocks, on every thread.
BOOST_AUTO_TEST_CASE(decoder_initialises_by_its_definition) {
    model_config c = presets::tiny::value;
    c.vocab_size = 1000;
    const decoder<families::llama, eigen_cpu> model(c, 3);
    std::uint64_t stream = 0;
    for (const parameter_entry& e : model.parameter_entries()) {
        counter_rng rng(3, stream++);
        const bool norm = e.name.find("norm") != std::string::npos;
        bool same = true;
        for (const float w : e.value)
            same = same && w == (norm ? 1.0f : float(rng.normal() * c.init_std));
        BOOST_TEST(same, e.name);
    }
}

namespace {
struct small_lora {
    static constexpr lora_config value{.rank = 2, .alpha = 4, .dropout = 0.1f, .targets = lora_all};
};
} // namespace

// A model made for a loader (weights_to_load) has its base at zero and its adapter as the same seed makes it.
BOOST_AUTO_TEST_CASE(a_model_to_load_has_a_zero_base_and_a_seeded_adapter) {
    const decoder<presets::tiny, eigen_cpu, small_lora> seeded(11);
    const decoder<presets::tiny, eigen_cpu, small_lora> to_load(presets::tiny::value, weights_to_load, 11);
    const auto& a = seeded.parameter_entries();
    const auto& b = to_load.parameter_entries();
    BOOST_TEST_REQUIRE(a.size() == b.size());
    int adapters = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const bool adapter = a[i].group == param_group::adapter;
        adapters += adapter;
        bool expected = true;
        for (index_t j = 0; j < a[i].value.numel(); ++j)
            expected = expected && b[i].value.data[j] == (adapter ? a[i].value.data[j] : 0.0f);
        BOOST_TEST(expected, a[i].name);
    }
    BOOST_TEST(adapters == 2 * 7 * 2); // A and B of 7 projections in 2 layers
}

// weights_to_load_for_inference: no gradient memory, the same logits from the same weights, backward refused.
BOOST_AUTO_TEST_CASE(a_model_for_inference_has_no_gradients_and_refuses_backward) {
    decoder<presets::tiny, eigen_cpu> trained(5);
    decoder<presets::tiny, eigen_cpu> inference(presets::tiny::value, weights_to_load_for_inference);
    const auto& from = trained.parameter_entries();
    const auto& to = inference.parameter_entries();
    BOOST_TEST_REQUIRE(from.size() == to.size());
    for (std::size_t i = 0; i < from.size(); ++i) {
        BOOST_TEST(!to[i].grad.data, to[i].name);
        BOOST_TEST(!to[i].trainable, to[i].name);
        std::copy(from[i].value.begin(), from[i].value.end(), to[i].value.begin());
    }
    BOOST_TEST(inference.parameter_arena_bytes() < trained.parameter_arena_bytes() * 6 / 10);
    const std::vector<token_t> ids{1, 7, 3, 9, 4, 2}, targets{7, 3, 9, 4, 2, 8};
    const cview<token_t> x{ids.data(), {1, 6}}, y{targets.data(), {1, 6}};
    test::owned<float> a({1, 6, presets::tiny::value.vocab_size}), b({1, 6, presets::tiny::value.vocab_size});
    trained.plan(1, 6);
    inference.plan(1, 6);
    trained.logits(x, a);
    inference.logits(x, b);
    BOOST_TEST(a.data == b.data);
    BOOST_TEST(inference.loss(x, y) == trained.loss(x, y));
    BOOST_CHECK_EXCEPTION(inference.backward(), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("no gradient memory") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(flops_per_token_counts_matmuls_and_attention) {
    constexpr model_config c = presets::russian_novels_150m::value;
    // Non-embedding matmul weights plus the head, 6 FLOPs each, plus attention at T = 512.
    const double weights =
        double(parameter_count(c)) - double(c.vocab_size) * c.d_model - (2 * c.n_layers + 1) * c.d_model;
    const double attention = 6.0 * 2 * c.n_layers * c.q_width() * (512 + 1) / 2.0;
    BOOST_TEST(flops_per_token(c, 512) == 6 * weights + attention, boost::test_tools::tolerance(1e-12));
    BOOST_TEST_MESSAGE("russian_novels_150m: " << flops_per_token(c, 512) / 1e9 << " GFLOP per trained token at T=512");
}

BOOST_AUTO_TEST_CASE(plan_rejects_contexts_beyond_the_model) {
    decoder<presets::tiny, eigen_cpu> model(1);
    BOOST_CHECK_THROW(model.plan(1, presets::tiny::value.max_seq_len + 1), tl::error);
    model.plan(2, 16);
    const auto bytes = model.activation_bytes();
    model.plan(1, 8); // smaller: reuses the arena
    BOOST_TEST(model.activation_bytes() == bytes);
}

// The registry (model/registry.hpp): names to types, over all presets or a subset, with aliases.
BOOST_AUTO_TEST_CASE(registry_visits_by_name) {
    const std::vector<std::string_view> all = presets::names();
    BOOST_TEST((all == std::vector<std::string_view>{"tiny", "russian_novels_150m", "russian_novels_cpu", "tatar_dense",
                                                     "tatar_moe", "tatar_sliding", "qwen2_5_0_5b", "qwen3_0_6b",
                                                     "tinyllama_1_1b"}));
    // Every name reaches the preset of that name, through either calling convention.
    for (const std::string_view name : all) {
        const model_config c = presets::visit(name, []<class P>() { return P::value; });
        const model_config d =
            presets::visit(name, [](auto type) { return decltype(type)::type::value; }); // std::type_identity<P>
        BOOST_TEST((c == d));
        BOOST_TEST(presets::find(c).value_or("none") == name);
    }
    BOOST_TEST(presets::visit("qwen2_5_0_5b", []<class P>() { return std::is_same_v<P, presets::qwen2_5_0_5b>; }));
    BOOST_TEST(presets::name_of<presets::tatar_moe>() == "tatar_moe");
    BOOST_TEST(parameter_count(presets::visit("tinyllama_1_1b", []<class P>() { return P::value; })) == 1'100'048'384);
}

BOOST_AUTO_TEST_CASE(registry_subsets_and_aliases) {
    using presets::named;
    // A subset: only the listed presets are instantiated; the others are unknown names.
    const auto vocab = [](std::string_view name) {
        return presets::visit<presets::tiny, presets::russian_novels_cpu>(
            name, []<class P>() { return P::value.vocab_size; });
    };
    BOOST_TEST(vocab("tiny") == 256);
    BOOST_TEST(vocab("russian_novels_cpu") == 3000);
    BOOST_CHECK_EXCEPTION(vocab("qwen2_5_0_5b"), tl::error, [](const tl::error& e) {
        const std::string m = e.what();
        return m.find("'qwen2_5_0_5b'") != std::string::npos &&
               m.find("valid: tiny, russian_novels_cpu") != std::string::npos;
    });
    // Aliases: a program's own names for presets and its own configurations.
    using choices = std::tuple<named<"cpu", presets::russian_novels_cpu>, named<"150m", presets::russian_novels_150m>>;
    BOOST_TEST((presets::names<std::tuple_element_t<0, choices>, std::tuple_element_t<1, choices>>() ==
                std::vector<std::string_view>{"cpu", "150m"}));
    int layers = 0;
    presets::visit<named<"cpu", presets::russian_novels_cpu>, named<"150m", presets::russian_novels_150m>>(
        "150m", [&](auto type) { layers = decltype(type)::type::value.n_layers; });
    BOOST_TEST(layers == 16);
    BOOST_CHECK_THROW(
        (presets::visit<named<"cpu", presets::russian_novels_cpu>>("russian_novels_cpu", []<class P>() {})), tl::error);
    BOOST_CHECK_THROW(presets::visit("", []<class P>() {}), tl::error);
    // A list kept in a std::tuple.
    BOOST_TEST((presets::names<choices>() == std::vector<std::string_view>{"cpu", "150m"}));
    BOOST_TEST(presets::visit<choices>("cpu", []<class P>() { return P::value.d_model; }) == 256);
    BOOST_TEST(presets::find<choices>(presets::russian_novels_150m::value).value_or("none") == "150m");
    BOOST_TEST(presets::names<presets::all>().size() == presets::names().size());
}

BOOST_AUTO_TEST_CASE(registry_find_compares_every_field) {
    model_config c = presets::tatar_moe::value;
    BOOST_TEST(presets::find(c).value_or("none") == "tatar_moe");
    c.moe.balance_per_layer = false; // one field of a nested struct
    BOOST_TEST(!presets::find(c).has_value());
    c = presets::tiny::value;
    c.init_std = 0.02;
    BOOST_TEST(!presets::find(c).has_value());
    c = presets::russian_novels_cpu::value;
    c.rope_scaling.factor = 8;
    BOOST_TEST(!presets::find(c).has_value());
    // A subset finds only its own, under the names it gives.
    BOOST_TEST(!presets::find<presets::tiny>(presets::tatar_dense::value).has_value());
    using dense = presets::named<"dense", presets::tatar_dense>;
    BOOST_TEST(presets::find<dense>(presets::tatar_dense::value).value_or("none") == "dense");
}

BOOST_AUTO_TEST_SUITE_END()
