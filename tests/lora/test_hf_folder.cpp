// Hugging Face model folders (io/hf_folder.hpp, io/hf_checkpoint.hpp) written by transformers itself
// (tests/reference/hf_folder/make_hf_folders.py; TINYLM_HF_FOLDERS overrides the fixture directory):
//  - Qwen2 in float16 with tied embeddings and q/k/v biases, and Llama in bfloat16 cut into shards, load and
//    give transformers' logits (float64 oracle on the stored weights), in f32 and as QLoRA;
//  - tokenizer.json ids, tokenizer_config.json special tokens, the chat template (chat_template.jinja)
//    rendering as apply_chat_template, generation_config.json into hf_generation_config;
//  - errors: a preset that does not fit lists every mismatching field; a shard missing from the index;
//  - config.json into a model_config (io/hf_config.hpp): these folders, the configs of every parity fixture
//    (tests/reference/fixtures), the presets and other shapes written by hf_config_json and read back, and errors.
#include "../model/fixture_configs.hpp"
#include "../support/random.hpp"

#include <tinylm/io/hf_config.hpp>
#include <tinylm/io/hf_folder.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/registry.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <unistd.h>

using namespace tl;
using namespace tl::test;

namespace {

namespace fs = std::filesystem;

// The configurations make_hf_folders.py writes.
struct qwen2_folder {
    static constexpr model_config value{.vocab_size = 320,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .rope_theta = 1000000.0,
                                        .qkv_bias = true,
                                        .norm_eps = 1e-6,
                                        .tied_embeddings = true};
};
struct llama_folder {
    static constexpr model_config value{
        .vocab_size = 64, .d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 48, .max_seq_len = 64};
};
struct qlora_r4 {
    static constexpr lora_config value{
        .rank = 4, .alpha = 8, .dropout = 0, .targets = lora_all, .quantized_base = true};
};

struct wrong { // three fields off: layers, KV heads, rope theta
    static constexpr model_config value{.vocab_size = 320,
                                        .d_model = 32,
                                        .n_layers = 3,
                                        .n_heads = 4,
                                        .n_kv_heads = 4,
                                        .d_ff = 48,
                                        .max_seq_len = 64,
                                        .qkv_bias = true,
                                        .norm_eps = 1e-6,
                                        .tied_embeddings = true};
};

fs::path fixtures() {
    if (const char* d = std::getenv("TINYLM_HF_FOLDERS")) return d;
    return fs::path(TINYLM_SOURCE_DIR) / "tests" / "reference" / "hf_folder" / "fixtures";
}

const safetensors_reader& expected_tensors() {
    static const safetensors_reader r(fixtures() / "expected.safetensors");
    return r;
}
const nlohmann::json& expected_json() {
    static const nlohmann::json j = nlohmann::json::parse(std::ifstream(fixtures() / "expected.json"));
    return j;
}

template <class Model>
double logits_error(Model& model, const std::string& name) {
    shape s;
    const auto ids64 = expected_tensors().read_all<std::int64_t>(name + ".input_ids", &s);
    owned<token_t> ids(s);
    std::transform(ids64.begin(), ids64.end(), ids.data.begin(), [](std::int64_t v) { return token_t(v); });
    owned<float> out({s[0], s[1], model.config().vocab_size});
    model.logits(ids, out);
    return rel_error(out.data, expected_tensors().read_all<float>(name + ".logits"));
}

fs::path temp_copy(const fs::path& src, const std::string& name) {
    const fs::path p = fs::temp_directory_path() / ("tinylm_hf_folder_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::copy(src, p, fs::copy_options::recursive);
    return p;
}

} // namespace

BOOST_AUTO_TEST_SUITE(hf_folder_loading)

BOOST_AUTO_TEST_CASE(qwen2_f16_tied_with_biases) {
    decoder<qwen2_folder, eigen_cpu> model(1);
    const hf_folder f = load_hf_folder(model, fixtures() / "qwen2_f16");
    const double err = logits_error(model, "qwen2_f16");
    BOOST_TEST_MESSAGE("qwen2_f16 (float16, tied, q/k/v biases) vs transformers (float64): logits " << err);
    BOOST_TEST(err < 1e-5);
    // The biases were read (they are random in the file, so not all zero).
    double bias_norm = 0;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind == param_kind::bias)
            for (float b : e.value)
                bias_norm += std::abs(b);
    BOOST_TEST(bias_norm > 0);

    const auto& ex = expected_json().at("qwen2_f16");
    BOOST_TEST_REQUIRE(f.tokenizer.has_value());
    const auto ids = f.tokenizer->encode(ex.at("text").get<std::string>());
    BOOST_TEST((std::vector<token_t>(ids.begin(), ids.end()) == ex.at("ids").get<std::vector<token_t>>()));
    BOOST_TEST(f.special.eos == "<|im_end|>");
    BOOST_TEST(f.special.eos_id == ex.at("eos_token_id").get<token_t>());
    BOOST_TEST(f.special.pad == "<|endoftext|>");
    BOOST_TEST(f.special.pad_id == ex.at("pad_token_id").get<token_t>());
    BOOST_TEST(f.special.bos_id == -1);

    BOOST_TEST_REQUIRE(f.chat.has_value());
    const auto messages = nlohmann::ordered_json::parse(ex.at("messages").dump());
    BOOST_TEST(f.chat->render(messages) == ex.at("chat").get<std::string>());
    BOOST_TEST(f.chat->render(messages, {.add_generation_prompt = true}) ==
               ex.at("chat_generation_prompt").get<std::string>());

    const hf_generation_config& g = f.generation;
    BOOST_TEST((g.eos_token_ids ==
                std::vector<token_t>{ex.at("eos_token_id").get<token_t>(), ex.at("pad_token_id").get<token_t>()}));
    BOOST_TEST(g.do_sample);
    BOOST_TEST(g.temperature == 0.7);
    BOOST_TEST(g.top_k == 20);
    BOOST_TEST(g.top_p == 0.8);
    BOOST_TEST(g.repetition_penalty == 1.05);
    BOOST_TEST(g.max_new_tokens == 32);
    const generation_options o = g.options();
    BOOST_TEST(o.max_new_tokens == 32);
    BOOST_TEST(o.sampling.temperature == 0.7);
    BOOST_TEST((o.stop_tokens == g.eos_token_ids));

    // Generation from the loaded folder stops at an eos id or after max_new_tokens.
    const auto prompt = f.tokenizer->encode(f.chat->render(messages, {.add_generation_prompt = true}));
    const std::vector<token_t> p(prompt.end() - 20, prompt.end());
    const auto out = generate(model, p, g.options(8, 1));
    BOOST_TEST(out.size() <= 8u);
    for (token_t t : out)
        BOOST_TEST((t >= 0 && t < qwen2_folder::value.vocab_size && t != g.eos_token_ids[0]));
}

BOOST_AUTO_TEST_CASE(llama_bf16_sharded_untied) {
    decoder<llama_folder, eigen_cpu> model(1);
    const hf_folder f = load_hf_folder(model, fixtures() / "llama_bf16_sharded");
    const double err = logits_error(model, "llama_bf16_sharded");
    BOOST_TEST_MESSAGE("llama_bf16_sharded (bfloat16, " << expected_json().at("llama_bf16_sharded").at("shards").size()
                                                        << " shards, untied) vs transformers (float64): logits "
                                                        << err);
    BOOST_TEST(err < 1e-5);
    BOOST_TEST(!f.tokenizer.has_value());
    BOOST_TEST(!f.chat.has_value());
    BOOST_TEST((f.generation.eos_token_ids == std::vector<token_t>{2}));
    BOOST_TEST(f.generation.bos_token_id == 1);
    BOOST_TEST(!f.generation.do_sample);
    BOOST_TEST(f.generation.sampling().temperature == 0.0); // greedy
}

// QLoRA loads the same folders, quantising each projection as it is read: it computes exactly what the f32
// model computes after its projections are replaced by dequantize(quantize_nf4(w)). The 4-bit rounding's
// effect on the logits (against transformers on the unquantised weights) is reported.
template <class Config>
void qlora_loads(const std::string& name) {
    decoder<Config, eigen_cpu, qlora_r4> q(1);
    load_hf_folder(q, fixtures() / name);
    decoder<Config, eigen_cpu> f(2);
    load_hf_folder(f, fixtures() / name);
    for (const parameter_entry& e : f.parameter_entries())
        if (e.name.ends_with("_proj.weight")) {
            const nf4_tensor w = quantize_nf4(e.value, true);
            dequantize(w, e.value);
        }
    shape s;
    const auto ids64 = expected_tensors().read_all<std::int64_t>(name + ".input_ids", &s);
    owned<token_t> ids(s);
    std::transform(ids64.begin(), ids64.end(), ids.data.begin(), [](std::int64_t v) { return token_t(v); });
    owned<float> lq({s[0], s[1], Config::value.vocab_size}), lf({s[0], s[1], Config::value.vocab_size});
    q.logits(ids, lq);
    f.logits(ids, lf);
    const double vs_f32 = rel_error(lq.data, lf.data), vs_hf = logits_error(q, name);
    BOOST_TEST_MESSAGE("QLoRA " << name << ": logits vs the f32 model on dequantised NF4 weights " << vs_f32
                                << "; vs transformers on the unquantised weights (4-bit rounding) " << vs_hf);
    BOOST_TEST(vs_f32 < 1e-6);
    BOOST_TEST(vs_hf > 1e-3); // the rounding is there
}

BOOST_AUTO_TEST_CASE(qlora_loads_folders) {
    qlora_loads<qwen2_folder>("qwen2_f16");
    qlora_loads<llama_folder>("llama_bf16_sharded");
}

BOOST_AUTO_TEST_CASE(config_mismatch_lists_every_field) {
    decoder<wrong, eigen_cpu> model(1);
    try {
        load_hf_folder(model, fixtures() / "qwen2_f16");
        BOOST_FAIL("a mismatching preset loaded");
    } catch (const tl::error& e) {
        const std::string msg = e.what();
        BOOST_TEST_MESSAGE(msg);
        BOOST_TEST(msg.find("config.json") != std::string::npos);
        BOOST_TEST(msg.find("num_hidden_layers: 2 in the file, 3 in the model") != std::string::npos);
        BOOST_TEST(msg.find("num_key_value_heads: 2 in the file, 4 in the model") != std::string::npos);
        BOOST_TEST(msg.find("rope_theta") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(broken_folders_name_the_problem) {
    const fs::path dir = temp_copy(fixtures() / "llama_bf16_sharded", "broken");
    decoder<llama_folder, eigen_cpu> model(1);
    // A shard that the index names is missing.
    const auto index = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
    const std::string shard = index.at("weight_map").at("lm_head.weight").get<std::string>();
    fs::remove(dir / shard);
    try {
        load_pretrained(model, dir);
        BOOST_FAIL("loaded without " + shard);
    } catch (const tl::error& e) {
        BOOST_TEST_MESSAGE(e.what());
        BOOST_TEST(std::string(e.what()).find(shard) != std::string::npos);
    }
    // A malformed generation_config.json.
    std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": "two"})";
    BOOST_CHECK_THROW(read_hf_folder(dir), tl::error);
    fs::remove_all(dir);
}

// Every one of the 65,536 half-precision values converts exactly: zeros, subnormals, normals, infinities, NaN.
BOOST_AUTO_TEST_CASE(f16_conversion_is_exact) {
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const int sign = h >> 15 ? -1 : 1, exp = int(h >> 10) & 0x1f, mant = int(h & 0x3ff);
        const float got = half_to_float(std::uint16_t(h));
        if (exp == 31) {
            BOOST_TEST_REQUIRE((mant == 0 ? std::isinf(got) && (got < 0) == (sign < 0) : std::isnan(got)), h);
            continue;
        }
        const double want =
            sign * (exp == 0 ? std::ldexp(double(mant), -24) : std::ldexp(1.0 + mant / 1024.0, exp - 15));
        BOOST_TEST_REQUIRE(double(got) == want, h);
        BOOST_TEST_REQUIRE(std::signbit(got) == (sign < 0), h);
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- config.json into a model_config (io/hf_config.hpp) -----------------------------------------------------

namespace {

// What config.json carries of c: c with the fields it does not carry at their defaults, in canonical form.
model_config carried(model_config c) {
    c.moe.balance_per_layer = false;
    if (c.d_head == c.d_model / c.n_heads && c.d_model % c.n_heads == 0) c.d_head = 0;
    return c;
}

std::string read_error(const nlohmann::json& j) {
    try {
        read_hf_config(j, "test/config.json");
    } catch (const tl::error& e) {
        return e.what();
    }
    return "(no error)";
}

bool contains(const std::string& s, const std::string& part) {
    if (s.find(part) != std::string::npos) return true;
    BOOST_TEST_MESSAGE("expected \"" << part << "\" in: " << s);
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(hf_config_reading)

// Folders transformers wrote: the configuration the loading tests above use.
BOOST_AUTO_TEST_CASE(reads_the_folders_transformers_wrote) {
    const auto read = [](const std::string& name) {
        const fs::path p = fixtures() / name / "config.json";
        return read_hf_config(nlohmann::json::parse(std::ifstream(p)), p.string());
    };
    BOOST_TEST((read("qwen2_f16") == qwen2_folder::value));
    BOOST_TEST((read("llama_bf16_sharded") == llama_folder::value));
}

// The config of every parity fixture (transformers' own config.json, without "architectures": model_type).
BOOST_AUTO_TEST_CASE(reads_every_parity_fixture_config) {
    const fs::path dir = fs::path(TINYLM_SOURCE_DIR) / "tests" / "reference" / "fixtures";
    const auto read = [&](const std::string& name) {
        const auto j = nlohmann::json::parse(safetensors_reader(dir / (name + ".safetensors")).metadata().at("config"));
        return read_hf_config(j, name);
    };
    BOOST_TEST((read("llama_gqa") == test::llama_gqa::value));
    BOOST_TEST((read("llama_mha") == test::llama_mha::value));
    BOOST_TEST((read("mistral_window") == test::mistral_window::value));
    BOOST_TEST((read("qwen2_tied") == test::qwen2_tied::value));
    BOOST_TEST((read("mixtral_moe") == test::mixtral_moe::value));
    BOOST_TEST((read("ministral_layers") == test::ministral_layers::value)); // layer_types S F S: every 2nd full
}

// read_hf_config(hf_config_json(c)) gives back every field config.json carries.
BOOST_AUTO_TEST_CASE(round_trip) {
    std::vector<std::pair<std::string, model_config>> configs;
    for (const std::string_view name : presets::names())
        configs.emplace_back(std::string(name), presets::visit(name, []<class P>() { return P::value; }));
    model_config c = presets::tiny::value;
    c.moe = {.n_experts = 8, .top_k = 2, .aux_loss_weight = 0.02}; // Mixtral
    configs.emplace_back("mixtral", c);
    c.moe.aux_loss_weight = 0; // output_router_logits false
    c.sliding_window = 16;     // Mixtral with a window in every layer
    configs.emplace_back("mixtral_window", c);
    c = presets::tiny::value;
    c.sliding_window = 8; // Mistral
    configs.emplace_back("mistral", c);
    c.n_layers = 6;
    c.full_attention_every = 3; // Ministral: S S F S S F
    configs.emplace_back("ministral_every_3", c);
    c.full_attention_every = 2;
    configs.emplace_back("ministral_every_2", c);
    c = presets::tinyllama_1_1b::value; // Llama 3.x-style rope scaling
    c.rope_theta = 500000;
    c.rope_scaling = {.factor = 32, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position = 8192};
    configs.emplace_back("llama3_rope_scaling", c);
    c = presets::tiny::value;
    c.d_head = 32; // head width other than hidden / heads
    c.init_std = 0.01;
    c.norm_eps = 1e-6;
    c.tied_embeddings = true;
    configs.emplace_back("wide_heads_tied", c);
    c = presets::qwen2_5_0_5b::value;
    c.n_kv_heads = c.n_heads; // MHA with biases
    configs.emplace_back("qwen2_mha", c);
    for (const auto& [name, config] : configs) {
        const nlohmann::json j = hf_config_json(config, {.bos = 1, .eos = 2});
        const model_config back = read_hf_config(nlohmann::json::parse(j.dump()), name); // through the text
        BOOST_TEST((back == carried(config)), name << " (" << j["architectures"][0] << ")");
    }
    BOOST_TEST(presets::tatar_moe::value.moe.balance_per_layer); // the one field config.json leaves out
    const model_config moe = read_hf_config(hf_config_json(presets::tatar_moe::value), "x");
    BOOST_TEST(!(moe == presets::tatar_moe::value));
    // The preset a config.json describes: find compares what the file carries.
    BOOST_TEST(!presets::find(moe).has_value());
    BOOST_TEST(presets::find(moe, hf_visible).value_or("none") == "tatar_moe");
    BOOST_TEST(presets::find(read_hf_config(hf_config_json(presets::tatar_sliding::value), "x"), hf_visible)
                   .value_or("none") == "tatar_sliding");
}

// check_hf_config compares Llama 3 rope scaling with the model's.
BOOST_AUTO_TEST_CASE(check_compares_rope_scaling) {
    model_config c = presets::tiny::value;
    c.rope_scaling = {.factor = 8, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position = 32};
    const nlohmann::json j = hf_config_json(c);
    BOOST_CHECK_NO_THROW(check_hf_config(j, c, "config.json"));
    BOOST_CHECK_EXCEPTION(check_hf_config(j, presets::tiny::value, "config.json"), tl::error,
                          [](const tl::error& e) { return contains(e.what(), "the model has plain RoPE"); });
    model_config other = c;
    other.rope_scaling.factor = 16;
    BOOST_CHECK_EXCEPTION(check_hf_config(j, other, "config.json"), tl::error,
                          [](const tl::error& e) { return contains(e.what(), "\"factor\":16.0"); });
    BOOST_CHECK_EXCEPTION(check_hf_config(hf_config_json(presets::tiny::value), c, "config.json"), tl::error,
                          [](const tl::error& e) { return contains(e.what(), "plain RoPE in the file"); });
    // transformers 5 writes the scaling into rope_parameters, with rope_theta.
    nlohmann::json v5 = j;
    v5.erase("rope_scaling");
    v5.erase("rope_theta");
    v5["rope_parameters"] = j["rope_scaling"];
    v5["rope_parameters"]["rope_theta"] = c.rope_theta;
    BOOST_CHECK_NO_THROW(check_hf_config(v5, c, "config.json"));
    BOOST_TEST((read_hf_config(v5, "v5") == c));
}

BOOST_AUTO_TEST_CASE(defaults_of_absent_fields) {
    nlohmann::json j = hf_config_json(presets::tiny::value);
    for (const char* k : {"head_dim", "rope_theta", "tie_word_embeddings", "num_key_value_heads", "hidden_act",
                          "initializer_range", "architectures"})
        j.erase(k); // model_type "llama" names the architecture
    const model_config c = read_hf_config(j, "config.json");
    BOOST_TEST(c.rope_theta == 10000.0);
    BOOST_TEST(!c.tied_embeddings);
    BOOST_TEST(c.n_kv_heads == c.n_heads); // MHA
    BOOST_TEST(c.d_head == 0);
    BOOST_TEST(c.init_std == 0.02);
    // A Qwen2 file whose layer_types list full attention and whose sliding window is off.
    nlohmann::json q = hf_config_json(presets::qwen2_5_0_5b::value);
    q["layer_types"] = std::vector<std::string>(24, "full_attention");
    q["sliding_window"] = 4096;
    BOOST_TEST((read_hf_config(q, "config.json") == presets::qwen2_5_0_5b::value));
}

BOOST_AUTO_TEST_CASE(errors_name_the_file_and_the_problem) {
    const nlohmann::json good = hf_config_json(presets::tiny::value);
    BOOST_TEST(read_error(good) == "(no error)");
    nlohmann::json j = good;
    j.erase("hidden_size");
    BOOST_TEST(contains(read_error(j), "test/config.json: missing field \"hidden_size\""));
    j = good;
    j.erase("rms_norm_eps");
    BOOST_TEST(contains(read_error(j), "missing field \"rms_norm_eps\""));
    j = good;
    j["num_hidden_layers"] = "two";
    BOOST_TEST(contains(read_error(j), "num_hidden_layers must be an integer"));
    j = good;
    j["architectures"] = {"GPT2LMHeadModel"};
    const std::string arch = read_error(j);
    BOOST_TEST(contains(arch, "test/config.json: architecture GPT2LMHeadModel is not supported"));
    BOOST_TEST(contains(arch, "LlamaForCausalLM, MistralForCausalLM, MinistralForCausalLM, Qwen2ForCausalLM, "
                              "Qwen3ForCausalLM, MixtralForCausalLM"));
    j.erase("architectures");
    j["model_type"] = "gemma2";
    BOOST_TEST(contains(read_error(j), "test/config.json: model_type \"gemma2\" is not supported"));
    j.erase("model_type");
    BOOST_TEST(contains(read_error(j), "no architectures (nor model_type) is not supported"));
    j = good;
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", "big"}};
    BOOST_TEST(contains(read_error(j), "rope_parameters.rope_theta must be a number"));
    j = good;
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    BOOST_TEST(contains(read_error(j), "rope type \"yarn\" is not supported"));
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    BOOST_TEST(contains(read_error(j), "rope type \"linear\" is not supported"));
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
    BOOST_TEST(contains(read_error(j), "lacks low_freq_factor, high_freq_factor, original_max_position_embeddings"));
    j = good;
    j["hidden_act"] = "gelu";
    BOOST_TEST(contains(read_error(j), "hidden_act \"gelu\" is not supported"));
    j = good;
    j["attention_bias"] = true;
    BOOST_TEST(contains(read_error(j), "attention_bias true is not supported"));
    j = good;
    j["mlp_bias"] = true;
    BOOST_TEST(contains(read_error(j), "mlp_bias true"));
    j = hf_config_json(presets::qwen2_5_0_5b::value);
    j["use_sliding_window"] = true;
    j["sliding_window"] = 4096;
    BOOST_TEST(contains(read_error(j), "use_sliding_window true is not supported"));
    j = good;
    j["num_key_value_heads"] = 3;
    BOOST_TEST(contains(read_error(j), "must be a multiple of num_key_value_heads (3)"));
    // Ministral layer patterns that are not "every k-th layer full".
    model_config m = presets::tiny::value;
    m.n_layers = 5;
    m.sliding_window = 8;
    m.full_attention_every = 2;
    j = hf_config_json(m);
    j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "sliding_attention",
                        "sliding_attention"};
    BOOST_TEST(contains(read_error(j), "layers 0, 3, 4 slide and layers 1, 2 attend fully"));
    j["layer_types"] = {"full_attention", "sliding_attention"};
    BOOST_TEST(contains(read_error(j), "layer_types must be a list of num_hidden_layers (5) entries"));
    j = hf_config_json(test::mixtral_moe::value);
    j["num_experts_per_tok"] = 5;
    BOOST_TEST(contains(read_error(j), "num_experts_per_tok (5) must be in [1, num_local_experts (4)]"));
    j.erase("num_local_experts");
    BOOST_TEST(contains(read_error(j), "missing field \"num_local_experts\" (MixtralForCausalLM)"));
}

BOOST_AUTO_TEST_SUITE_END()
