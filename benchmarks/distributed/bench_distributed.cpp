// bench_distributed: data-parallel training tokens/s and all-reduce bandwidth, under mpirun (docs/distributed.md).
//
//   OMP_NUM_THREADS=1 mpirun -np 2 build/benchmarks/distributed/bench_distributed --config a   # 2 ranks x 1 thread
//   OMP_NUM_THREADS=2 build/benchmarks/distributed/bench_distributed --config a                # 1 rank x 2 threads
//   mpirun -np 2 build/benchmarks/distributed/bench_distributed --allreduce                    # bandwidth only
//   OMP_NUM_THREADS=1 mpirun -np 2 build/benchmarks/distributed/bench_distributed --overlap both --bucket-mib 4
//
// --overlap: the gradient all-reduce started inside backward as buckets complete (on), after backward (off), or
// both runs one after the other (both); each prints the buckets, how many were started before backward ended and
// the median time the step then still waited for the all-reduce (the communication backward did not hide).
//
// Training: the trainer (train/trainer.hpp) on uniform random tokens, global batch --batch x the config's context,
// --steps optimizer steps; tokens/s is the global batch over the median step after the first (warm-up). The
// all-reduce: f32 sums of 1 to 64 MiB, median of --reps; algorithm bandwidth = bytes / time, bus bandwidth =
// 2 (N - 1) / N x bytes / time (what each link carries in a ring, comparable across N). Rank 0 prints JSON lines.
#include "bench_configs.hpp"

#include <tinylm/dist/communicator.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/train/trainer.hpp>

#include <CLI/CLI.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

template <class Config>
void train_throughput(tl::dist::communicator& comm, int batch, int steps, bool overlap, double bucket_mib) {
    using model_t = tl::decoder<Config>;
    const tl::index_t T = Config::value.max_seq_len;
    auto model = std::make_unique<model_t>(1);
    std::vector<tl::token_t> tokens(std::size_t(T) * 4096);
    tl::counter_rng rng(5);
    for (auto& t : tokens)
        t = tl::token_t(rng.below(std::uint64_t(Config::value.vocab_size)));
    tl::token_windows source(std::move(tokens), 7);
    tl::trainer_options o;
    o.batch_size = batch;
    o.seq_len = T;
    o.max_steps = steps;
    o.warmup_steps = 1;
    o.eval_every = 0;
    o.eval_windows = 0;
    o.checkpoint_every = 0;
    o.communicator = &comm;
    o.overlap_reduce = overlap;
    o.bucket_bytes = std::size_t(bucket_mib * double(1 << 20));
    tl::trainer<model_t, tl::token_windows> t(*model, source, std::vector<tl::token_t>{}, o);
    std::vector<double> step_seconds, wait_seconds;
    t.on_step = [&](const tl::step_report& r) {
        if (r.step == 1) return; // warm-up
        step_seconds.push_back(double(batch * T) / r.tokens_per_second);
        wait_seconds.push_back(t.gradient_buckets().finish_seconds());
    };
    t.run();
    const auto& buckets = t.gradient_buckets();
    if (comm.is_root())
        std::printf("{\"what\": \"train\", \"ranks\": %d, \"threads_per_rank\": %d, \"batch\": %d, \"seq_len\": %d, "
                    "\"overlap\": %s, \"buckets\": %zu, \"started_during_backward\": %zu, "
                    "\"median_wait_after_backward_s\": %.4f, \"median_step_s\": %.4f, \"tokens_per_s\": %.0f}\n",
                    comm.size(), omp_get_max_threads(), batch, int(T), overlap ? "true" : "false",
                    buckets.bucket_count(), buckets.started_during_backward(), median(wait_seconds),
                    median(step_seconds), double(batch * T) / median(step_seconds));
}

void allreduce_bandwidth(tl::dist::communicator& comm, int reps) {
    for (std::size_t mib : {1, 4, 16, 64}) {
        std::vector<float> buffer(mib * (std::size_t(1) << 20) / sizeof(float), 1.0f);
        std::vector<double> seconds;
        for (int r = 0; r < reps + 1; ++r) {
            comm.barrier();
            const auto t0 = std::chrono::steady_clock::now();
            comm.all_reduce_sum(std::span<float>(buffer)).wait();
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (r > 0) seconds.push_back(s); // the first is warm-up
        }
        const double t = median(seconds), bytes = double(buffer.size() * sizeof(float)), n = comm.size();
        if (comm.is_root())
            std::printf("{\"what\": \"allreduce\", \"ranks\": %d, \"mib\": %zu, \"median_s\": %.5f, "
                        "\"algorithm_gbyte_s\": %.3f, \"bus_gbyte_s\": %.3f}\n",
                        comm.size(), mib, t, bytes / t / 1e9, 2 * (n - 1) / n * bytes / t / 1e9);
    }
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_distributed: data-parallel tokens/s and all-reduce bandwidth (run under mpirun)"};
    std::string config = "a";
    int batch = 16, steps = 6, reps = 10;
    bool allreduce_only = false;
    std::string overlap = "on";
    double bucket_mib = 25;
    app.add_option("--config", config, "a (4.7M parameters, context 256) or tiny")->check(CLI::IsMember({"a", "tiny"}));
    app.add_option("--batch", batch, "global batch (sequences)");
    app.add_option("--steps", steps, "optimizer steps (the first is not timed)");
    app.add_option("--reps", reps, "all-reduce repetitions per size");
    app.add_flag("--allreduce", allreduce_only, "measure the all-reduce only");
    app.add_option("--overlap", overlap, "all-reduce during backward (on), after it (off), or both runs (both)")
        ->check(CLI::IsMember({"on", "off", "both"}));
    app.add_option("--bucket-mib", bucket_mib, "gradient bucket size in MiB")->check(CLI::PositiveNumber);
    CLI11_PARSE(app, argc, argv);
    try {
        tl::dist::communicator& comm = tl::dist::world();
        if (!allreduce_only)
            for (const bool on : {false, true}) {
                if ((on && overlap == "off") || (!on && overlap == "on")) continue;
                if (config == "a")
                    train_throughput<bench::config_a>(comm, batch, steps, on, bucket_mib);
                else
                    train_throughput<tl::presets::tiny>(comm, batch, steps, on, bucket_mib);
            }
        if (comm.size() > 1 || allreduce_only) allreduce_bandwidth(comm, reps);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
