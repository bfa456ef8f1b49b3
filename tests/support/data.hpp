// The real corpora and tokenizers of the data dir, for the tests that need them (docs/testing.md).
//
// Where: $TINYLM_DATA_DIR, else <source>/../shared/data. A test case that needs files from there declares them:
//
//     BOOST_AUTO_TEST_CASE(reads_the_novels, tl_test::needs_data("russian_novels/corpus")) {
//         const auto dir = tl_test::data_path("russian_novels/corpus");   // exists here
//
// needs_data labels the case `shared_data` and skips it, with a message, when a file is missing. The test
// executable then exits with tl_test::skip_exit_code (77) instead of 0, which ctest reports as skipped
// (SKIP_RETURN_CODE, set by tinylm_add_test; executables that mix both kinds of case run as two ctest
// entries, `--run_test=!@shared_data` and `--run_test=@shared_data`). A failure still fails.
#pragma once

#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace tl_test {

inline constexpr int skip_exit_code = 77;

inline std::filesystem::path data_dir() {
    if (const char* env = std::getenv("TINYLM_DATA_DIR"); env && *env) return env;
    const std::filesystem::path p = std::filesystem::path(TINYLM_SOURCE_DIR "/../shared/data");
    return std::filesystem::exists(p) ? std::filesystem::weakly_canonical(p) : std::filesystem::path();
}

// The path of a file or folder under the data dir, or empty when it is missing.
inline std::filesystem::path data_path(const std::filesystem::path& rel) {
    const auto d = data_dir();
    if (d.empty() || !std::filesystem::exists(d / rel)) return {};
    return d / rel;
}

// How many test cases this process skipped for missing data (read by the main of tests/test_main.cpp).
inline int& data_skips() {
    static int n = 0;
    return n;
}

struct data_precondition {
    std::vector<std::string> rels;
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id id) const {
        std::string missing;
        for (const auto& r : rels)
            if (data_path(r).empty()) missing += (missing.empty() ? "" : ", ") + r;
        boost::test_tools::assertion_result ok(missing.empty());
        if (!missing.empty()) {
            ++data_skips();
            const auto dir = data_dir();
            ok.message() << "not in the data dir: " << missing;
            std::printf("SKIPPED %s: %s not found in the data dir %s (set TINYLM_DATA_DIR)\n",
                        boost::unit_test::framework::get(id, boost::unit_test::TUT_ANY).full_name().c_str(),
                        missing.c_str(), dir.empty() ? "(none)" : dir.string().c_str());
            std::fflush(stdout);
        }
        return ok;
    }
};

// The decorator of a test case that needs the given files or folders of the data dir.
template <class... Rel>
boost::unit_test::decorator::collector_t& needs_data(const Rel&... rel) {
    return *boost::unit_test::label("shared_data") *
           boost::unit_test::precondition(data_precondition{{std::string(rel)...}});
}

} // namespace tl_test
