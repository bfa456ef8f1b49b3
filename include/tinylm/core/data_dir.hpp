// tinylm/core/data_dir.hpp: where the real corpora are (docs/data.md). In order: the --data-dir flag, the
// environment variable TINYLM_DATA_DIR, then ../shared/data one, two or three levels up from the working
// directory (the project machines keep the data beside the repository). Empty when none is found.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string_view>

namespace tl {

inline std::filesystem::path find_data_dir(std::string_view flag = {}) {
    if (!flag.empty()) return flag;
    if (const char* env = std::getenv("TINYLM_DATA_DIR"); env && *env) return env;
    for (const char* p : {"../shared/data", "../../shared/data", "../../../shared/data"})
        if (std::filesystem::is_directory(p)) return p;
    return {};
}

} // namespace tl
