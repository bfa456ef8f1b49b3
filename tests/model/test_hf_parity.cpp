// The decoder against Hugging Face transformers on the same weights (fixtures written by
// tests/reference/make_fixtures.py in float64): logits, loss, every parameter gradient, and the parameters
// after one AdamW step. Prints the worst relative error per named tensor.
//
// TINYLM_FIXTURE_DIR overrides the fixture folder (the `torch` ctest label regenerates fixtures into a
// temporary folder and points this test at it).
#include "../support/parity_fixture.hpp"
#include "../support/random.hpp"
#include "fixture_configs.hpp"

#include <tinylm/io/hf_config.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/optim/adamw.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <sstream>

using namespace tl;
using namespace tl::test;

namespace {

// fp32 against the fp64 oracle: the issue asks for <= 1e-4; fp32 itself is at ~1e-6 here.
constexpr double tolerance = 1e-4;

template <class Config, class B>
void check_fixture(const std::string& name) {
    const safetensors_reader fx(tl_test::fixture_path(name));
    decoder<Config, B> model(0);
    for (const parameter_entry& e : model.parameter_entries())
        fx.read("param." + e.name, e.value);
    // Every tensor of the Hugging Face model is accounted for, and nothing else.
    std::size_t fixture_params = 0;
    for (const auto& [n, t] : fx.tensors())
        fixture_params += n.starts_with("param.");
    BOOST_TEST(fixture_params == model.parameter_entries().size());

    const tl_test::fixture_batch batch = tl_test::read_fixture_batch(fx); // HF's labels, shifted
    const index_t B_ = batch.shape[0], T = batch.shape[1];
    const cview<token_t> ids{batch.ids.data(), batch.shape}, targets{batch.targets.data(), batch.shape};

    const std::string tag = name + " [" + std::string(B::name) + "]";
    owned<float> logits({B_, T, Config::value.vocab_size});
    model.logits(ids, logits);
    const double logits_err = rel_error(logits.data, fx.read_all<float>("logits"));
    BOOST_TEST_MESSAGE(tag << " logits: " << logits_err);
    BOOST_TEST(logits_err < tolerance, tag << " logits");

    const float loss = model.loss(ids, targets);
    const float expected_loss = fx.read_all<float>("loss")[0];
    const double loss_err = std::abs(double(loss) - expected_loss) / expected_loss;
    BOOST_TEST_MESSAGE(tag << " loss: " << loss << " vs " << expected_loss << " (" << loss_err << ")");
    BOOST_TEST(loss_err < tolerance, tag << " loss");
    if constexpr (Config::value.moe.n_experts > 0) {
        // The loss above includes aux_loss_weight * aux; the load-balancing loss on its own:
        const double aux = model.aux_loss(), expected_aux = fx.read_all<float>("aux_loss")[0];
        const double aux_err = std::abs(aux - expected_aux) / expected_aux;
        BOOST_TEST_MESSAGE(tag << " aux loss: " << aux << " vs " << expected_aux << " (" << aux_err << ")");
        BOOST_TEST(aux_err < tolerance, tag << " aux loss");
        index_t routed = 0;
        for (index_t l = 0; l < Config::value.n_layers; ++l) {
            std::ostringstream usage;
            for (const index_t c : model.expert_counts(l))
                usage << ' ' << c, routed += c;
            BOOST_TEST_MESSAGE(tag << " layer " << l << " tokens per expert:" << usage.str());
        }
        BOOST_TEST(routed == Config::value.n_layers * B_ * T * Config::value.moe.top_k);
    }

    model.backward();
    double worst_grad = 0;
    std::string worst_name;
    for (const parameter_entry& e : model.parameter_entries()) {
        const std::vector<float> got(e.grad.begin(), e.grad.end());
        const double err = rel_error(got, fx.read_all<float>("grad." + e.name));
        BOOST_TEST_MESSAGE(tag << " grad " << e.name << ": " << err);
        BOOST_TEST(err < tolerance, tag << " grad " << e.name);
        if (err > worst_grad) worst_grad = err, worst_name = e.name;
    }

    const auto hp = nlohmann::json::parse(fx.metadata().at("adamw"));
    adamw opt(model, {.lr = hp.at("lr"),
                      .beta1 = hp.at("beta1"),
                      .beta2 = hp.at("beta2"),
                      .eps = hp.at("eps"),
                      .weight_decay = hp.at("weight_decay")});
    opt.step();
    // The first AdamW step moves each weight by about lr * sign(g): compare in units of lr.
    const double lr = hp.at("lr");
    double worst_step = 0;
    for (const parameter_entry& e : model.parameter_entries()) {
        const auto expected = fx.read_all<float>("adamw." + e.name);
        double diff = 0;
        for (index_t i = 0; i < e.value.numel(); ++i)
            diff = std::max(diff, double(std::abs(e.value[i] - expected[i])));
        worst_step = std::max(worst_step, diff / lr);
        BOOST_TEST(diff / lr < 1e-2, tag << " adamw " << e.name << ": " << diff / lr << " lr");
    }
    BOOST_TEST_MESSAGE(tag << " worst gradient error " << worst_grad << " (" << worst_name
                           << "), worst AdamW step error " << worst_step << " lr");
}

#ifdef TINYLM_HAS_ONEDNN
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu, onednn_cpu>;
#else
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu>;
#endif

} // namespace

BOOST_AUTO_TEST_SUITE(hf_parity)

BOOST_AUTO_TEST_CASE_TEMPLATE(llama_gqa_matches_transformers, B, all_backends) {
    check_fixture<test::llama_gqa, B>("llama_gqa");
}
BOOST_AUTO_TEST_CASE_TEMPLATE(llama_mha_matches_transformers, B, all_backends) {
    check_fixture<test::llama_mha, B>("llama_mha");
}
BOOST_AUTO_TEST_CASE_TEMPLATE(mistral_window_matches_transformers, B, all_backends) {
    check_fixture<test::mistral_window, B>("mistral_window");
}
BOOST_AUTO_TEST_CASE_TEMPLATE(qwen2_tied_matches_transformers, B, all_backends) {
    check_fixture<test::qwen2_tied, B>("qwen2_tied");
}
BOOST_AUTO_TEST_CASE_TEMPLATE(qwen3_qknorm_matches_transformers, B, all_backends) {
    check_fixture<test::qwen3_qknorm, B>("qwen3_qknorm");
}
BOOST_AUTO_TEST_CASE_TEMPLATE(mixtral_moe_matches_transformers, B, all_backends) {
    check_fixture<test::mixtral_moe, B>("mixtral_moe");
}
BOOST_AUTO_TEST_CASE_TEMPLATE(ministral_layers_matches_transformers, B, all_backends) {
    check_fixture<test::ministral_layers, B>("ministral_layers"); // sliding window in layers 0 and 2 only
}

BOOST_AUTO_TEST_CASE(fixture_config_matches_the_cpp_config) {
    // Guards against the Python and C++ sides drifting apart.
    const auto qwen3 =
        nlohmann::json::parse(safetensors_reader(tl_test::fixture_path("qwen3_qknorm")).metadata().at("config"));
    model_config read = read_hf_config(qwen3, "qwen3_qknorm");
    read.init_std = test::qwen3_qknorm::value.init_std;
    BOOST_TEST((read == test::qwen3_qknorm::value)); // QK-norm and the head width 16 come from config.json
    const auto cfg =
        nlohmann::json::parse(safetensors_reader(tl_test::fixture_path("qwen2_tied")).metadata().at("config"));
    BOOST_TEST(cfg.at("hidden_size").get<int>() == test::qwen2_tied::value.d_model);
    BOOST_TEST(cfg.at("num_key_value_heads").get<int>() == test::qwen2_tied::value.n_kv_heads);
    BOOST_TEST(cfg.at("tie_word_embeddings").get<bool>() == test::qwen2_tied::value.tied_embeddings);
    const auto mistral =
        nlohmann::json::parse(safetensors_reader(tl_test::fixture_path("mistral_window")).metadata().at("config"));
    BOOST_TEST(mistral.at("sliding_window").get<int>() == test::mistral_window::value.sliding_window);
    const auto mixtral =
        nlohmann::json::parse(safetensors_reader(tl_test::fixture_path("mixtral_moe")).metadata().at("config"));
    BOOST_TEST(mixtral.at("num_local_experts").get<int>() == test::mixtral_moe::value.moe.n_experts);
    BOOST_TEST(mixtral.at("num_experts_per_tok").get<int>() == test::mixtral_moe::value.moe.top_k);
    BOOST_TEST(mixtral.at("router_aux_loss_coef").get<double>() == test::mixtral_moe::value.moe.aux_loss_weight);
    BOOST_TEST(mixtral.at("output_router_logits").get<bool>());
}

BOOST_AUTO_TEST_SUITE_END()
