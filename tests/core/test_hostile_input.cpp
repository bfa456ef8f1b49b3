// Hostile input found by fuzzing (issue 21): each case once crashed, terminated with a nlohmann exception or
// converted a float to an integer out of range. Now each is a tl::error naming the file and the field. The
// minimised inputs live in tests/regressions/; the smaller ones are built here.
#include <tinylm/core/json_field.hpp>
#include <tinylm/core/shape.hpp>
#include <tinylm/data/sft_formats.hpp>
#include <tinylm/eval/multiple_choice.hpp>
#include <tinylm/io/hf_config.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/train/run_logger.hpp>

#include "../support/errors.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace fs = std::filesystem;
using namespace tl;

BOOST_AUTO_TEST_SUITE(hostile_input)

namespace {

using tl_test::error_of;
const fs::path regressions = fs::path(TINYLM_SOURCE_DIR) / "tests/regressions";

struct temp_dir {
    fs::path path = fs::temp_directory_path() / ("tinylm_hostile_" + std::to_string(::getpid()));
    temp_dir() { fs::create_directories(path); }
    ~temp_dir() { fs::remove_all(path); }
    fs::path write(const std::string& name, const std::string& text) const {
        std::ofstream(path / name, std::ios::binary) << text;
        return path / name;
    }
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
} // namespace

BOOST_AUTO_TEST_CASE(json_field_checks_type_and_range) {
    const auto j = nlohmann::json::parse(R"({"big":1e22,"neg":-1,"whole":2048.0,"half":0.5,"list":[1,"x"],"s":"a"})");
    BOOST_TEST(json_field<int>(j, "whole", "f.json") == 2048);
    BOOST_TEST(has(error_of([&] { json_field<int>(j, "big", "f.json"); }), "f.json: big must be an integer"));
    BOOST_TEST(has(error_of([&] { json_field<std::uint64_t>(j, "neg", "f.json"); }), "f.json: neg must be"));
    BOOST_TEST(has(error_of([&] { json_field<int>(j, "half", "f.json"); }), "half must be an integer"));
    BOOST_TEST(has(error_of([&] { json_field<std::vector<int>>(j, "list", "f.json"); }), "list[1] must be"));
    BOOST_TEST(has(error_of([&] { json_field<double>(j, "s", "f.json"); }), "s must be a number, not \"a\""));
    BOOST_TEST(has(error_of([&] { json_field<int>(j, "missing", "f.json"); }), "\"missing\" is missing"));
    BOOST_TEST(json_field_or(j, "missing", 7, "f.json") == 7);
    BOOST_TEST(has(error_of([&] { json_field<float>(nlohmann::json{{"x", 1e300}}, "x", "f.json"); }), "out of range"));
    BOOST_TEST(has(error_of([] { parse_json_text("[1e3087]", "g.json"); }), "g.json: invalid JSON"));
}

BOOST_AUTO_TEST_CASE(shape_numel_is_checked) {
    const shape s{index_t(1) << 32, index_t(1) << 32};
    BOOST_TEST(has(error_of([&] { (void)s.numel(); }), "over 2^63 elements"));
    BOOST_TEST((shape{3, 4}.numel()) == 12);
}

BOOST_AUTO_TEST_CASE(safetensors_regressions) {
    int n = 0;
    for (const auto& e : fs::directory_iterator(regressions / "safetensors")) {
        const std::string m = error_of([&] { safetensors_reader r(e.path()); });
        BOOST_TEST(has(m, e.path().string()), e.path().filename() << ": " << m);
        BOOST_TEST(has(m, "'w'"), e.path().filename() << ": " << m);
        ++n;
    }
    BOOST_TEST(n >= 5);
    const std::string wrap =
        error_of([] { safetensors_reader r(regressions / "safetensors/shape_2p62_wraps.safetensors"); });
    BOOST_TEST(has(wrap, "more bytes than the 0-byte data section"), wrap);
    const std::string e22 = error_of([] { safetensors_reader r(regressions / "safetensors/shape_1e22.safetensors"); });
    BOOST_TEST(has(e22, "shape[0] must be an integer"), e22);
}

BOOST_AUTO_TEST_CASE(config_json_fields_of_the_wrong_type) {
    const model_config c = presets::tiny::value;
    nlohmann::json good = hf_config_json(c);
    auto with = [&](const char* key, nlohmann::json v) {
        nlohmann::json j = good;
        j[key] = std::move(v);
        return j;
    };
    const auto check_msg = [&](const nlohmann::json& j) {
        return error_of([&] { check_hf_config(j, c, "config.json"); });
    };
    const auto read_msg = [&](const nlohmann::json& j) { return error_of([&] { read_hf_config(j, "config.json"); }); };
    BOOST_TEST(check_msg(good) == tl_test::no_error);
    BOOST_TEST(has(check_msg(with("rope_scaling", 3)), "rope_scaling"));
    BOOST_TEST(has(read_msg(with("rope_scaling", 3)), "rope_scaling"));
    BOOST_TEST(has(check_msg(with("vocab_size", "many")), "config.json: vocab_size must be an integer"));
    BOOST_TEST(has(check_msg(with("model_type", 5)), "config.json: model_type must be a string"));
    BOOST_TEST(has(check_msg(with("attention_bias", "yes")), "attention_bias must be true or false"));
    BOOST_TEST(has(check_msg(with("num_local_experts", 1e22)), "num_local_experts must be an integer"));
    BOOST_TEST(has(read_msg(with("hidden_size", 1e22)), "config.json: hidden_size must be an integer"));
    BOOST_TEST(has(read_msg(with("hidden_size", std::int64_t(1) << 40)), "hidden_size must be an integer"));
    nlohmann::json llama3 = with("rope_scaling", {{"rope_type", "llama3"},
                                                  {"factor", 8.0},
                                                  {"low_freq_factor", 1.0},
                                                  {"high_freq_factor", 4.0},
                                                  {"original_max_position_embeddings", 1e22}});
    BOOST_TEST(has(read_msg(llama3), "rope_scaling.original_max_position_embeddings must be an integer"));
    BOOST_TEST(has(check_msg(nlohmann::json::array()), "not a JSON object"));
}

BOOST_AUTO_TEST_CASE(adapter_config_fields_of_the_wrong_type) {
    const lora_config c{};
    nlohmann::json good = peft_adapter_config(c, "");
    auto msg = [&](const char* key, nlohmann::json v) {
        nlohmann::json j = good;
        j[key] = std::move(v);
        return error_of([&] { check_adapter_config(j, c, "adapter_config.json"); });
    };
    BOOST_TEST(error_of([&] { check_adapter_config(good, c, "adapter_config.json"); }) == tl_test::no_error);
    BOOST_TEST(has(msg("r", 1e22), "adapter_config.json: r must be an integer"));
    BOOST_TEST(has(msg("peft_type", 3), "adapter_config.json: peft_type must be a string"));
    BOOST_TEST(has(msg("target_modules", nlohmann::json::array({1})), "target_modules[0] must be a string"));
    BOOST_TEST(has(msg("lora_alpha", "16"), "lora_alpha must be a number"));
}

BOOST_AUTO_TEST_CASE(task_and_sft_files) {
    temp_dir dir;
    const auto mc = dir.write("task.jsonl", R"({"question":"q","choices":["a","b"],"answer":1e22})"
                                            "\n");
    BOOST_TEST(has(error_of([&] { eval::load_mc_jsonl(mc); }), mc.string() + ":1: answer must be an integer"));
    const auto mc2 = dir.write("task2.jsonl", R"({"question":3,"choices":["a","b"],"answer":0})"
                                              "\n");
    BOOST_TEST(has(error_of([&] { eval::load_mc_jsonl(mc2); }), "question must be a string"));
    const auto big = dir.write("big.jsonl", R"({"instruction":"a","output":1e3087})"
                                            "\n");
    BOOST_TEST(has(error_of([&] { data::read_alpaca(big); }), big.string() + ":1: invalid JSON"));
    const auto big_array = dir.write("big.json", R"([{"instruction":"a","output":1e3087}])");
    BOOST_TEST(has(error_of([&] { data::read_alpaca(big_array); }), "invalid JSON"));
}

BOOST_AUTO_TEST_CASE(run_log_fields_of_the_wrong_type) {
    temp_dir dir;
    dir.write("log.jsonl", R"({"step":"one","loss":1.0})"
                           "\n");
    const std::string m = error_of([&] { run_logger log(dir.path, "t", 10, 5); });
    BOOST_TEST(has(m, "log.jsonl: step must be an integer"), m);
}

BOOST_AUTO_TEST_SUITE_END()
