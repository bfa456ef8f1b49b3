// bench_configs.hpp: the configurations the speed benchmarks measure (issue 6), and small helpers they share
// (peak memory, a clock, median). Included by train_throughput, generation and ops.
#pragma once

#include <tinylm/model/config.hpp>
#include <tinylm/model/presets.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace bench {

// Config A: a small Llama-style model (4.7M parameters), batch 16 x 256.
struct config_a {
    static constexpr tl::model_config value{.vocab_size = 3000,
                                            .d_model = 256,
                                            .n_layers = 4,
                                            .n_heads = 4,
                                            .n_kv_heads = 2,
                                            .d_ff = 768,
                                            .max_seq_len = 256};
};
// Config B: the reference configuration (33.4M parameters), batch 8 x 512.
struct config_b {
    static constexpr tl::model_config value{.vocab_size = 8000,
                                            .d_model = 512,
                                            .n_layers = 8,
                                            .n_heads = 8,
                                            .n_kv_heads = 4,
                                            .d_ff = 1536,
                                            .max_seq_len = 512};
};
static_assert(tl::validate_config<config_a>() && tl::validate_config<config_b>());

// Peak resident memory of this process (VmHWM) in MiB, from /proc/self/status; -1 when unavailable.
inline double peak_rss_mib() {
    std::FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double kib = -1;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "VmHWM:", 6) == 0) kib = std::atof(line + 6);
    std::fclose(f);
    return kib < 0 ? -1 : kib / 1024.0;
}

inline double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

inline std::string json_array(const std::vector<double>& v) {
    std::string s = "[";
    char buf[32];
    for (std::size_t i = 0; i < v.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%s%.6g", i ? ", " : "", v[i]);
        s += buf;
    }
    return s + "]";
}

} // namespace bench
