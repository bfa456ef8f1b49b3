// The Hugging Face parity fixtures (tests/reference/fixtures, written by tests/reference/make_fixtures.py): where
// they are (TINYLM_FIXTURE_DIR overrides the committed folder: the `torch` label regenerates them elsewhere), and a
// fixture's batch as tinylm trains on it: targets are the labels shifted left as transformers shifts them, the last
// position of each row ignored.
#pragma once

#include <tinylm/core/token.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/ops/common.hpp> // ignore_index

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace tl_test {

inline std::filesystem::path fixture_path(const std::string& name) {
    const char* dir = std::getenv("TINYLM_FIXTURE_DIR");
    return (dir ? std::filesystem::path(dir)
                : std::filesystem::path(TINYLM_SOURCE_DIR) / "tests" / "reference" / "fixtures") /
           (name + ".safetensors");
}

struct fixture_batch {
    tl::shape shape; // (rows, time)
    std::vector<tl::token_t> ids, targets;
};
inline fixture_batch read_fixture_batch(const tl::safetensors_reader& fx) {
    fixture_batch b;
    const auto ids64 = fx.read_all<std::int64_t>("input_ids", &b.shape);
    const auto labels64 = fx.read_all<std::int64_t>("labels");
    const std::size_t rows = std::size_t(b.shape[0]), time = std::size_t(b.shape[1]);
    b.ids.resize(ids64.size()), b.targets.assign(ids64.size(), tl::ignore_index);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t t = 0; t < time; ++t) {
            b.ids[r * time + t] = tl::token_t(ids64[r * time + t]);
            if (t + 1 < time) b.targets[r * time + t] = tl::token_t(labels64[r * time + t + 1]);
        }
    return b;
}

} // namespace tl_test
