// A run's log.jsonl, read back when training resumes (run_logger keeps the lines up to the resumed step and
// replays them into the report).
#include "../fuzz_target.hpp"

#include <tinylm/train/run_logger.hpp>

TINYLM_FUZZ_TARGET(run_log) {
    auto& scratch = tl_fuzz::scratch::get();
    std::filesystem::create_directories(scratch.dir() / "run");
    scratch.write("run/log.jsonl", in);
    tl::run_logger log(scratch.dir() / "run", "fuzz", 100, 50);
}
