// libFuzzer's entry point for one target (the executable links exactly one targets/*.cpp). A broken rule aborts,
// so libFuzzer saves the input as a crash.
#include "fuzz_target.hpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto& all = tl_fuzz::targets();
    if (all.size() != 1) tl_fuzz::violated("a libFuzzer executable must link exactly one target");
    if (!tl_fuzz::run_one(all.front(), {data, size})) std::abort();
    return 0;
}
