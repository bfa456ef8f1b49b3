// Hugging Face model folders (io/hf_folder.hpp, io/hf_checkpoint.hpp) written by transformers itself
// (tests/reference/hf_folder/make_hf_folders.py; TINYLM_HF_FOLDERS overrides the fixture directory):
//  - Qwen2 in float16 with tied embeddings and q/k/v biases, and Llama in bfloat16 cut into shards, load and
//    give transformers' logits (float64 oracle on the stored weights), in f32 and as QLoRA;
//  - tokenizer.json ids, tokenizer_config.json special tokens, the chat template (chat_template.jinja)
//    rendering as apply_chat_template, generation_config.json into hf_generation_config;
//  - errors: a preset that does not fit lists every mismatching field; a shard missing from the index.
#include "../support/random.hpp"

#include <tinylm/io/hf_folder.hpp>
#include <tinylm/model/decoder.hpp>

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
