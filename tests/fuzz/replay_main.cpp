// fuzz_replay TARGET [--accept|--refuse|--any] PATH...: runs every file under each PATH (seed corpora, regression
// inputs, a crash file) through one target under the rule of fuzz_target.hpp. After --accept the inputs must load
// (the seeds are valid files), after --refuse they must raise tl::error (each regression input is a broken file);
// --any (the default) takes either. Exit 0 when every input keeps the rule, 1 otherwise; sanitizer reports and
// property violations abort. `fuzz_replay --list` prints the targets; -v prints each input's outcome.
#include "fuzz_target.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {
std::vector<fs::path> files_under(const fs::path& p) {
    std::vector<fs::path> out;
    if (fs::is_directory(p)) {
        for (const auto& e : fs::recursive_directory_iterator(p))
            if (e.is_regular_file()) out.push_back(e.path());
    } else if (fs::is_regular_file(p)) {
        out.push_back(p);
    }
    std::sort(out.begin(), out.end());
    return out;
}
} // namespace

int main(int argc, char** argv) {
    const auto& all = tl_fuzz::targets();
    if (argc == 2 && std::string(argv[1]) == "--list") {
        for (const auto& t : all)
            std::printf("%s\n", t.name);
        return 0;
    }
    if (argc < 3) {
        std::fprintf(stderr, "usage: fuzz_replay TARGET PATH... | fuzz_replay --list\n");
        return 2;
    }
    const auto t = std::find_if(all.begin(), all.end(), [&](const auto& x) { return x.name == std::string(argv[1]); });
    if (t == all.end()) {
        std::fprintf(stderr, "fuzz_replay: no target '%s' (--list shows them)\n", argv[1]);
        return 2;
    }
    enum class expect { any, accept, refuse } mode = expect::any;
    bool verbose = false;
    int inputs = 0, accepted = 0, broken = 0;
    for (int a = 2; a < argc; ++a) {
        const std::string arg = argv[a];
        if (arg == "--accept" || arg == "--refuse" || arg == "--any" || arg == "-v") {
            if (arg == "-v")
                verbose = true;
            else
                mode = arg == "--accept" ? expect::accept : arg == "--refuse" ? expect::refuse : expect::any;
            continue;
        }
        if (!fs::exists(argv[a])) {
            std::fprintf(stderr, "fuzz_replay: %s does not exist\n", argv[a]);
            return 2;
        }
        for (const auto& f : files_under(argv[a])) {
            std::ifstream in(f, std::ios::binary);
            const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
            ++inputs;
            std::string refusal;
            bool kept = tl_fuzz::run_one(*t, bytes, &refusal);
            if (kept && mode == expect::accept && !refusal.empty()) {
                std::fprintf(stderr, "fuzz %s: a valid seed was refused: %s\n", t->name, refusal.c_str());
                kept = false;
            } else if (kept && mode == expect::refuse && refusal.empty()) {
                std::fprintf(stderr, "fuzz %s: a broken input was accepted\n", t->name);
                kept = false;
            }
            if (!kept) {
                std::fprintf(stderr, "  input: %s\n", f.c_str());
                ++broken;
            } else {
                accepted += refusal.empty();
            }
            if (verbose) std::printf("%s: %s\n", f.c_str(), refusal.empty() ? "accepted" : refusal.c_str());
        }
    }
    if (!tl_fuzz::unavailable().empty()) {
        std::printf("SKIPPED fuzz_replay %s: %s\n", t->name, tl_fuzz::unavailable().c_str());
        return 77;
    }
    std::printf("fuzz_replay %s: %d inputs, %d accepted, %d refused with tl::error, %d broke the rule\n", t->name,
                inputs, accepted, inputs - accepted - broken, broken);
    return inputs == 0 || broken ? 1 : 0;
}
