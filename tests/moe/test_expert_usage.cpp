// Expert-usage statistics of a mixture-of-experts run (train/run_logger.hpp, expert_usage()): usage relative
// to uniform per layer and expert, the JSONL line with the raw counts, the report's summary over the run, and
// a resumed run that still sums the whole run. The counts come from decoder::expert_counts (checked against
// transformers in tests/model, fixture mixtral_moe).
#include <tinylm/train/run_logger.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

struct temp_dir {
    fs::path path;
    explicit temp_dir(const std::string& name)
        : path(fs::temp_directory_path() / ("tinylm_test_expert_usage_" + name + "_" + std::to_string(::getpid()))) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() { fs::remove_all(path); }
};

std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The log's lines that hold `key`.
std::vector<nlohmann::json> lines_with(const fs::path& log, const std::string& key) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        if (j.contains(key)) lines.push_back(j);
    }
    return lines;
}
std::vector<nlohmann::json> usage_lines(const fs::path& log) { return lines_with(log, "expert_counts"); }

using counts_t = std::vector<std::vector<std::int64_t>>;
// Layer 0 unbalanced (usage 0.5, 1.5, 1, 1), layer 1 uniform; the second step mirrors layer 0.
const counts_t step1{{10, 30, 20, 20}, {20, 20, 20, 20}};
const counts_t step2{{30, 10, 20, 20}, {20, 20, 20, 20}};

bool contains(const std::string& text, const std::string& what) {
    const bool found = text.find(what) != std::string::npos;
    if (!found) BOOST_TEST_MESSAGE("not found: " << what);
    return found;
}

} // namespace

BOOST_AUTO_TEST_SUITE(expert_usage)

BOOST_AUTO_TEST_CASE(usage_relative_to_uniform_in_log_and_report) {
    temp_dir dir("log");
    {
        tl::run_logger logger(dir.path, "moe run", 2, 0);
        logger.expert_usage(1, step1);
        logger.expert_usage(2, step2);
        logger.finish();
    }
    const auto lines = usage_lines(dir.path / "log.jsonl");
    BOOST_REQUIRE(lines.size() == 2u);
    BOOST_TEST(lines[0].at("step").get<int>() == 1);
    BOOST_TEST((lines[0].at("expert_counts").get<counts_t>() == step1));
    BOOST_TEST(lines[0].at("max_usage").get<double>() == 1.5);
    BOOST_TEST(lines[0].at("min_usage").get<double>() == 0.5);
    // Summed over the run, layer 0 received 40 tokens per expert: balanced.
    const std::string report = read_text(dir.path / "report.md");
    BOOST_TEST(contains(report, "max 1.00, min 1.00 of uniform (tokens summed over 2 steps); "
                                "single steps: max 1.50, min 0.50"));
    BOOST_TEST(contains(report, "expert usage, layer 0"));
    BOOST_TEST(contains(report, "expert usage, layer 1"));
    BOOST_TEST(fs::exists(dir.path / "tensorboard"));
}

BOOST_AUTO_TEST_CASE(a_resumed_run_reports_the_whole_run) {
    temp_dir dir("resume");
    {
        tl::run_logger logger(dir.path, "moe run", 3, 0);
        logger.expert_usage(1, step1);
        logger.expert_usage(2, step2); // lost: the run resumes from step 1
        logger.finish();
    }
    {
        tl::run_logger logger(dir.path, "moe run", 3, 1);
        logger.expert_usage(2, step1);
        logger.finish();
    }
    const auto lines = usage_lines(dir.path / "log.jsonl");
    BOOST_REQUIRE(lines.size() == 2u);
    BOOST_TEST((lines[1].at("expert_counts").get<counts_t>() == step1));
    // Steps 1 and 2 both had layer 0 at 20, 60, 40, 40 tokens in total: usage 0.5 .. 1.5.
    const std::string report = read_text(dir.path / "report.md");
    BOOST_TEST(contains(report, "max 1.50, min 0.50 of uniform (tokens summed over 2 steps)"));
}

BOOST_AUTO_TEST_CASE(a_dense_run_reports_no_usage) {
    temp_dir dir("dense");
    {
        tl::run_logger logger(dir.path, "dense run", 1, 0);
        logger.finish();
    }
    BOOST_TEST(read_text(dir.path / "report.md").find("expert usage") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

// The run logger's samples after training (samples(-1, ...)) sit at the last step trained in log.jsonl, not at
// step 0 (which reads as "before training"); a resumed run that trains no further step uses the resumed step.
BOOST_AUTO_TEST_SUITE(run_logger_samples)

BOOST_AUTO_TEST_CASE(samples_after_training_are_logged_at_the_last_step) {
    temp_dir dir("samples");
    {
        tl::run_logger logger(dir.path, "run", 3, 0);
        for (long long s = 1; s <= 3; ++s) {
            tl::step_report r;
            r.step = s, r.max_steps = 3, r.loss = 2.0;
            logger.step(r);
        }
        logger.samples(2, {{"Жили-были", " дед"}});
        logger.samples(-1, {{"Жили-были", " дед да баба"}});
        logger.finish();
    }
    auto lines = lines_with(dir.path / "log.jsonl", "sample");
    BOOST_REQUIRE(lines.size() == 2u);
    BOOST_TEST(lines[0].at("step").get<long long>() == 2);
    BOOST_TEST(lines[1].at("step").get<long long>() == 3);
    {
        tl::run_logger logger(dir.path, "run", 3, 3); // resumed after the last step: nothing left to train
        logger.samples(-1, {{"Жили-были", " дед да баба"}});
        logger.finish();
    }
    lines = lines_with(dir.path / "log.jsonl", "sample");
    BOOST_REQUIRE(!lines.empty());
    BOOST_TEST(lines.back().at("step").get<long long>() == 3);
}

BOOST_AUTO_TEST_SUITE_END()
