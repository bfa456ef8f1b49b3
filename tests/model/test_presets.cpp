// Every preset instantiates, validates, and has the parameter count its documentation states.
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/presets.hpp>

#include <boost/test/unit_test.hpp>

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

BOOST_AUTO_TEST_SUITE_END()
