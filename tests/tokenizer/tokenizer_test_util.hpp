// Shared helpers of the tokenizer tests: where the data and the committed references are, and JSON loading.
#pragma once

#include "../support/data.hpp"

#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tl::test {

inline std::string reference_dir() { return TINYLM_SOURCE_DIR "/tests/reference/tokenizer"; }

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    BOOST_REQUIRE_MESSAGE(in, "cannot open " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

struct test_text {
    std::string name, text;
};
inline std::vector<test_text> test_texts() {
    std::vector<test_text> out;
    for (const auto& t : read_json(reference_dir() + "/texts.json"))
        out.push_back({t["name"], t["text"]});
    return out;
}

// Path of a real tokenizer of the data dir (qwen3, llama2); the test case declares it with
// tl_test::needs_data(real_tokenizer_file(name)).
inline std::string real_tokenizer_file(const std::string& name) { return "tokenizers/" + name + "/tokenizer.json"; }
inline std::string real_tokenizer(const std::string& name) {
    const auto path = tl_test::data_path(real_tokenizer_file(name));
    BOOST_REQUIRE_MESSAGE(!path.empty(), real_tokenizer_file(name) << " is not in the data dir");
    return path.string();
}

} // namespace tl::test
