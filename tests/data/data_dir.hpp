// Where the tests find the real corpora: $TINYLM_DATA_DIR, else <source>/../shared/data. Empty when absent.
#pragma once

#include <cstdlib>
#include <filesystem>

namespace tl_test {

inline std::filesystem::path data_dir() {
    if (const char* env = std::getenv("TINYLM_DATA_DIR"); env && *env) return env;
    const std::filesystem::path p = std::filesystem::path(TINYLM_SOURCE_DIR "/../shared/data");
    return std::filesystem::exists(p) ? std::filesystem::weakly_canonical(p) : std::filesystem::path();
}

// The path of a file or folder under the data dir, or empty (the caller skips) when it is missing.
inline std::filesystem::path data_path(const std::filesystem::path& rel) {
    const auto d = data_dir();
    if (d.empty() || !std::filesystem::exists(d / rel)) return {};
    return d / rel;
}

} // namespace tl_test
