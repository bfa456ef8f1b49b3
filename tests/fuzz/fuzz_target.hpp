// tests/fuzz/fuzz_target.hpp: the fuzz targets' registry and the rule every target obeys (issue 21).
//
// A target feeds bytes to one parser of untrusted input. The rule: valid input is accepted; anything else raises
// tl::error whose message names the input (every target hands its parser a file or label containing
// "fuzz-input"); no other exception escapes, no sanitizer report, bounded time and memory. One target is one file
// in targets/; the same file is built two ways:
//   - with clang's libFuzzer (TINYLM_FUZZ=ON): fuzz_<name>, one executable per target (libfuzzer_entry.cpp);
//   - always, into fuzz_replay (replay_main.cpp), which runs every seed and regression input of a target in the
//     default ctest run, with whatever compiler builds the tests.
#pragma once

#include <tinylm/core/error.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl_fuzz {

using input = std::span<const std::uint8_t>;
using target_fn = void (*)(input);

struct target {
    const char* name;
    target_fn run;
};

inline std::vector<target>& targets() {
    static std::vector<target> all;
    return all;
}

struct registrar {
    registrar(const char* name, target_fn run) { targets().push_back({name, run}); }
};

// Every error message must contain this, so a user can tell which file was wrong.
inline constexpr std::string_view input_marker = "fuzz-input";

inline std::string_view text(input in) { return {reinterpret_cast<const char*>(in.data()), in.size()}; }

// A property of valid input that does not hold: a bug, reported as a crash so libFuzzer keeps the input.
[[noreturn]] inline void violated(const std::string& what) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
    std::abort();
}
inline void require(bool ok, const std::string& what) {
    if (!ok) violated(what);
}

// Runs one of several readers a target tries on the same bytes: a tl::error is a fine answer if it names the
// input; other exceptions escape to run_one.
template <class F>
void attempt(F&& read) {
    try {
        read();
    } catch (const tl::error& e) {
        if (std::string_view(e.what()).find(input_marker) == std::string_view::npos)
            violated(std::string("a tl::error that does not name the input: ") + e.what());
    }
}

// One folder per process for targets whose parser reads files: /tmp/tinylm-fuzz-input-<pid>/.
class scratch {
public:
    static scratch& get() {
        static scratch s;
        return s;
    }
    const std::filesystem::path& dir() const { return dir_; }
    std::filesystem::path write(const std::string& name, input bytes) const { return write(name, text(bytes)); }
    std::filesystem::path write(const std::string& name, std::string_view bytes) const {
        const auto path = dir_ / name;
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), std::streamsize(bytes.size()));
        out.close();
        if (!out) violated("cannot write the scratch file " + path.string());
        return path;
    }
    ~scratch() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

private:
    scratch() {
        dir_ = std::filesystem::temp_directory_path() /
               (std::string("tinylm-") + std::string(input_marker) + "-" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
    }
    std::filesystem::path dir_;
};

// A target whose fixtures (the real tokenizers of ../shared/data) are absent sets this; fuzz_replay then reports
// the test skipped (exit 77) instead of passing without having run.
inline std::string& unavailable() {
    static std::string why;
    return why;
}

// Runs one input under the rule. Returns false (after printing why) when it is broken by an exception; sanitizer
// reports and property violations abort. `refusal` receives the tl::error's message, empty when the input loaded.
inline bool run_one(const target& t, input in, std::string* refusal = nullptr) {
    try {
        t.run(in);
    } catch (const tl::error& e) {
        if (std::string_view(e.what()).find(input_marker) == std::string_view::npos) {
            std::fprintf(stderr, "fuzz %s: a tl::error that does not name the input: %s\n", t.name, e.what());
            return false;
        }
        if (refusal) *refusal = e.what();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fuzz %s: an exception other than tl::error escaped: %s\n", t.name, e.what());
        return false;
    } catch (...) {
        std::fprintf(stderr, "fuzz %s: a non-standard exception escaped\n", t.name);
        return false;
    }
    return true;
}

} // namespace tl_fuzz

// Defines and registers a target: TINYLM_FUZZ_TARGET(safetensors) { ...use `in`... }
#define TINYLM_FUZZ_TARGET(name)                                                                                       \
    static void tinylm_fuzz_##name(tl_fuzz::input in);                                                                 \
    static const tl_fuzz::registrar tinylm_fuzz_registrar_##name{#name, tinylm_fuzz_##name};                           \
    static void tinylm_fuzz_##name(tl_fuzz::input in)
