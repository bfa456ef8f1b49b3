// tinylm/train/checkpoint_checksums.hpp: the size and CRC-32C of every tensor file of a training checkpoint
// (model.safetensors, optimizer.safetensors, adapter_model.safetensors, ...), stored in its trainer_state.json
// and verified before a resume reads any tensor.
//
//   "checksums": {"model.safetensors": {"bytes": 501744, "crc32c": "9a3c04e1"}, ...}
//
// Why CRC-32C: tinylm already has it (core/crc32c.hpp, checked against the standard's test vectors in
// test_logging), it detects every burst error up to 32 bits and so any flipped byte, and it runs at 1-2 GB/s
// on one core: a 600 MB checkpoint costs well under a second on save and on resume. It guards against damage
// (a bad disk, a truncated copy), not against someone who edits the file and the checksum together.
// A checkpoint written before the checksums existed has none and resumes with a one-line note.
#pragma once

#include <tinylm/core/crc32c.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/core/json_field.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace tl {

namespace fs = std::filesystem;

// The CRC-32C of a whole file, read in 1 MiB pieces.
inline std::uint32_t file_crc32c(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    check(bool(in), [&] { return "checkpoint: cannot read " + path.string(); });
    std::vector<char> buf(std::size_t(1) << 20);
    std::uint32_t crc = 0;
    while (in) {
        in.read(buf.data(), std::streamsize(buf.size()));
        crc = crc32c_extend(crc, buf.data(), std::size_t(in.gcount()));
    }
    check(in.eof(), [&] { return "checkpoint: reading " + path.string() + " failed"; });
    return crc;
}

inline std::string crc32c_hex(std::uint32_t crc) {
    char buf[9];
    std::snprintf(buf, sizeof buf, "%08x", crc);
    return buf;
}

// {"<file>.safetensors": {"bytes": N, "crc32c": "xxxxxxxx"}} for every tensor file directly in `dir`.
inline nlohmann::json tensor_file_checksums(const fs::path& dir) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    nlohmann::json sums = nlohmann::json::object();
    for (const fs::path& f : files)
        sums[f.filename().string()] = {{"bytes", fs::file_size(f)}, {"crc32c", crc32c_hex(file_crc32c(f))}};
    return sums;
}

// Checks the files listed under "checksums" in `state` (trainer_state.json of `dir`, named `state_file` in
// messages). Returns false when the checkpoint has no checksums (an older one).
inline bool verify_tensor_file_checksums(const fs::path& dir, const nlohmann::json& state,
                                         const std::string& state_file) {
    if (!state.contains("checksums")) return false;
    const nlohmann::json& sums = state["checksums"];
    check(sums.is_object(), [&] { return state_file + ": checksums must be an object"; });
    const std::string damaged = ": checksum mismatch; the checkpoint is damaged, delete it or restore a copy";
    for (auto it = sums.begin(); it != sums.end(); ++it) { // no structured binding: lambdas capture the name
        const std::string name = it.key();
        const nlohmann::json& entry = it.value();
        const fs::path file = dir / name;
        check(name.find('/') == std::string::npos && name.find("..") == std::string::npos,
              [&] { return state_file + ": checksums names a file outside the checkpoint: " + name; });
        const std::string entry_file = state_file + ": checksums." + name;
        const auto bytes = json_field<std::uint64_t>(entry, "bytes", entry_file);
        const auto crc = json_field<std::string>(entry, "crc32c", entry_file);
        check(fs::is_regular_file(file), [&] { return "checkpoint: " + file.string() + " is missing" + damaged; });
        check(fs::file_size(file) == bytes, [&] {
            return "checkpoint: " + file.string() + " has " + std::to_string(fs::file_size(file)) + " bytes, not " +
                   std::to_string(bytes) + damaged;
        });
        check(crc32c_hex(file_crc32c(file)) == crc, [&] { return "checkpoint: " + file.string() + damaged; });
    }
    return true;
}

} // namespace tl
