// Shared helpers of the tokenizer tests: where the data and the committed references are, and JSON loading.
#pragma once

#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tl::test {

inline std::string data_dir() {
    if (const char* d = std::getenv("TINYLM_DATA_DIR")) return d;
    return TINYLM_SOURCE_DIR "/../shared/data";
}
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

// Path of a real tokenizer (qwen3, llama2) or "" with a message when the data directory lacks it.
inline std::string real_tokenizer(const std::string& name) {
    const std::string path = data_dir() + "/tokenizers/" + name + "/tokenizer.json";
    if (!std::filesystem::exists(path)) {
        BOOST_TEST_MESSAGE("SKIPPED: " + path + " not found (set TINYLM_DATA_DIR to the shared data directory)");
        return "";
    }
    return path;
}

} // namespace tl::test
