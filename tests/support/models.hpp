// Pretrained models for the tests that need them (docs/testing.md), fetched by scripts/fetch-models.sh.
//
// Where: $TINYLM_MODELS_DIR, else $HOME/.cache/tinylm/models. A test case that needs one declares it:
//
//     BOOST_AUTO_TEST_CASE(minilm_loads, tl_test::needs_model("all-MiniLM-L6-v2")) {
//         const auto dir = tl_test::model_path("all-MiniLM-L6-v2");   // exists here
//
// Like needs_data (support/data.hpp), a missing model skips the case with a message and the executable exits
// with 77 (ctest: skipped); the case carries the label `shared_data`, so tinylm_add_test(... SHARED_DATA) runs
// it as its own ctest entry.
#pragma once

#include "data.hpp"

namespace tl_test {

inline std::filesystem::path models_dir() {
    if (const char* env = std::getenv("TINYLM_MODELS_DIR"); env && *env) return env;
    if (const char* home = std::getenv("HOME"); home && *home)
        return std::filesystem::path(home) / ".cache" / "tinylm" / "models";
    return {};
}

// The folder of a model under the models dir, or empty when it is missing.
inline std::filesystem::path model_path(const std::string& name) {
    const auto d = models_dir();
    if (d.empty() || !std::filesystem::exists(d / name)) return {};
    return d / name;
}

struct model_precondition {
    std::string name;
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id id) const {
        boost::test_tools::assertion_result ok(!model_path(name).empty());
        if (!ok) {
            ++data_skips();
            ok.message() << "model not found: " << name;
            std::printf("SKIPPED %s: model %s not found in %s (run scripts/fetch-models.sh or set TINYLM_MODELS_DIR)\n",
                        boost::unit_test::framework::get(id, boost::unit_test::TUT_ANY).full_name().c_str(),
                        name.c_str(), models_dir().string().c_str());
            std::fflush(stdout);
        }
        return ok;
    }
};

// The decorator of a test case that needs a pretrained model of the models dir.
inline boost::unit_test::decorator::collector_t& needs_model(const std::string& name) {
    return *boost::unit_test::label("shared_data") * boost::unit_test::precondition(model_precondition{name});
}

} // namespace tl_test
