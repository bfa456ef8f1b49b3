// libFuzzer's entry point for one target (the executable links exactly one targets/*.cpp). A broken rule aborts,
// so libFuzzer saves the input as a crash.
#include "fuzz_target.hpp"

#include <cstdlib>

// One empty input before the campaign: targets that load fixtures once (bpe_roundtrip reads Qwen3's 7 MB
// tokenizer.json, over 10 s under ASan on a busy machine) do it here, outside libFuzzer's per-input timeout.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const auto& all = tl_fuzz::targets();
    if (all.size() == 1) (void)tl_fuzz::run_one(all.front(), {});
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto& all = tl_fuzz::targets();
    if (all.size() != 1) tl_fuzz::violated("a libFuzzer executable must link exactly one target");
    if (!tl_fuzz::run_one(all.front(), {data, size})) std::abort();
    return 0;
}
