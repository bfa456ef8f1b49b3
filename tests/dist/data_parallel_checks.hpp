// What test_dist (tests/dist/test_data_parallel.cpp, MPI) and test_nccl_emulated (NCCL in the host emulation) check the
// same way: N ranks of one global batch against one process over the whole batch (expect_same_training), and the
// device-resident decoder's data-parallel run, stopped and resumed (check_device_data_parallel), whichever executor
// (gpu::cpu_ops with MPI as its device communicator, gpu::gpu_ops with an nccl_communicator) and communicator carry it.
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/dist/data_parallel.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/train/batches.hpp>
#include <tinylm/train/trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace tl::test {

// A few repeating words as bytes, so the loss falls and the gradients are not noise.
inline std::vector<token_t> text_tokens(std::size_t n, std::uint64_t seed) {
    const char* words[] = {"peace ", "war ", "and ", "spirit ", "force ", "thought "};
    counter_rng rng(seed);
    std::vector<token_t> t;
    while (t.size() < n)
        for (const char* c = words[rng.below(6)]; *c; ++c)
            t.push_back(static_cast<unsigned char>(*c));
    t.resize(n);
    return t;
}

// What a run leaves: rank 0's losses and gradient norms (the trainer's hooks run there only), the validation losses,
// every tensor, the parameters' fingerprint, and the last step's gradient buckets (tl::decoder's runs).
struct outcome {
    std::vector<double> losses, grad_norms, val_losses;
    std::vector<std::vector<float>> params;
    std::vector<std::string> names;
    std::uint64_t fingerprint = 0;
    std::size_t buckets = 0, started_during_backward = 0;
};

inline double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// `dp` (N ranks) against `one` (one process): losses and, where both runs kept them, gradient norms before clipping
// (rank 0 has them; clipping and Adam hide a wrong gradient scale from the losses), validation losses and every tensor
// within the bars (tensor norm of the difference over the tensor's norm); the replicas bit-identical.
// `parameter_bar`: LoRA's B starts at zero, and Adam's normalised steps on its near-zero gradients amplify the
// rounding of the ranks' different summation order in the small adapter tensors (1e-5 there, 4e-7 elsewhere).
// `loose`: the one tensor (by name) held to 1e-4 instead, a tensor whose gradient nearly cancels (its rounding is
// large relative to it), as the last LayerNorm's bias of a sentence encoder (ranking_case_matches_one_process).
inline void expect_same_training(const outcome& dp, const outcome& one, dist::communicator& comm,
                                 double parameter_bar = 1e-5, const std::string& loose = {}, double loss_bar = 1e-5) {
    BOOST_TEST_MESSAGE("rank " << comm.rank() << " of " << comm.size());
    if (comm.is_root()) {
        BOOST_REQUIRE_EQUAL(dp.losses.size(), one.losses.size());
        for (std::size_t i = 0; i < one.losses.size(); ++i)
            BOOST_TEST(relative(dp.losses[i], one.losses[i]) < loss_bar,
                       "step " << i + 1 << ": loss " << dp.losses[i] << " vs one process " << one.losses[i]);
        if (!dp.grad_norms.empty() && !one.grad_norms.empty()) {
            BOOST_REQUIRE_EQUAL(dp.grad_norms.size(), one.grad_norms.size());
            for (std::size_t i = 0; i < one.grad_norms.size(); ++i)
                BOOST_TEST(relative(dp.grad_norms[i], one.grad_norms[i]) < loss_bar,
                           "step " << i + 1 << ": gradient norm " << dp.grad_norms[i] << " vs one process "
                                   << one.grad_norms[i]);
        }
        BOOST_TEST(one.losses.back() < one.losses.front()); // it learned: the comparison is not of noise
    } else {
        BOOST_TEST(dp.losses.empty()); // hooks run on rank 0 only
    }
    BOOST_REQUIRE_EQUAL(dp.val_losses.size(), one.val_losses.size());
    for (std::size_t i = 0; i < one.val_losses.size(); ++i)
        BOOST_TEST(relative(dp.val_losses[i], one.val_losses[i]) < loss_bar);
    double worst = 0, loose_worst = 0;
    std::string where;
    for (std::size_t k = 0; k < one.params.size(); ++k) {
        double diff = 0, norm = 0;
        for (std::size_t j = 0; j < one.params[k].size(); ++j) {
            diff += std::pow(double(dp.params[k][j]) - double(one.params[k][j]), 2);
            norm += std::pow(double(one.params[k][j]), 2);
        }
        const double difference = std::sqrt(diff / std::max(norm, 1e-30));
        if (!loose.empty() && one.names[k] == loose) {
            loose_worst = difference;
        } else if (difference > worst) {
            worst = difference;
            where = one.names.empty() ? std::string() : one.names[k];
        }
    }
    BOOST_TEST_MESSAGE("largest relative parameter difference to one process: " << worst << " (" << where << ")");
    BOOST_TEST(worst < parameter_bar);
    if (!loose.empty()) {
        BOOST_TEST_MESSAGE("relative difference of " << loose << ": " << loose_worst);
        BOOST_TEST(loose_worst < 1e-4);
    }
    BOOST_TEST_MESSAGE("bit-identical to one process: " << (dp.fingerprint == one.fingerprint ? "yes" : "no"));
    std::uint64_t root = dp.fingerprint;
    comm.broadcast_values(std::span<std::uint64_t>(&root, 1), 0);
    BOOST_TEST(root == dp.fingerprint, "rank " << comm.rank() << "'s parameters differ from rank 0's");
}

// ---- the device-resident decoder (gpu::device_decoder) on several ranks ----

// One layer of width 32 over bytes: the executors' products stay quick.
inline model_config small_device_config() {
    model_config c = presets::tiny::value;
    c.d_model = 32, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.d_ff = 64;
    return c;
}

// The device models' runs: 3 steps of 2 micro-batches of 5 windows of 16 tokens (rows 3 + 2 on 2 ranks, 2 + 2 + 1 on
// 3, so the ranks' shares of the targets differ), clipped at 0.5 (low enough to clip: the global norm must be one
// process's), validation only at the end (7 windows, in calls of batch_size / ranks windows: the device model's
// smallest share).
inline trainer_options device_steps(dist::communicator& comm) {
    trainer_options o;
    o.batch_size = 5, o.seq_len = 16, o.grad_accum = 2, o.max_steps = 3;
    o.peak_lr = 3e-3, o.min_lr = 3e-4, o.warmup_steps = 1, o.clip = 0.5;
    o.eval_every = 0, o.eval_windows = 7, o.checkpoint_every = 0;
    o.communicator = &comm;
    return o;
}

// device_steps' run of device_decoder<Ex> on `comm`'s ranks, its gradients and parameter broadcast through
// `device_comm` (nullptr: `comm` itself, which serves cpu_ops's host memory). Every rank starts from other random
// weights (seed 7 + rank): the trainer broadcasts rank 0's. `out`, `stop_at`: a checkpointed run stopped there, or
// resumed from `out`.
template <class Ex>
outcome device_training(dist::communicator& comm, dist::communicator* device_comm = nullptr,
                        const std::filesystem::path& out = {}, long long stop_at = 0) {
    using model_t = gpu::device_decoder<Ex>;
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    trainer_options o = device_steps(comm);
    o.device_communicator = device_comm;
    o.out_dir = out;
    o.stop_at = stop_at;
    gpu::device_decoder_options d;
    d.batch = index_t(dist::part_of(std::size_t(o.batch_size), comm.rank(), comm.size()).count());
    d.time = o.seq_len, d.logits_rows = 24; // head chunks of 24 tokens, the last partial
    model_t model(small_device_config(), d);
    counter_rng rng(7 + std::uint64_t(comm.rank()));
    for (const parameter_entry& e : model.parameter_entries())
        for (float& x : e.value)
            x = e.kind == param_kind::norm ? 1.0f : float(0.05 * rng.normal());
    model.upload_parameters();
    token_windows source(tokens, 11);
    trainer<model_t, token_windows> t(model, source, val, o);
    outcome r;
    t.on_step = [&](const step_report& s) { r.losses.push_back(s.loss), r.grad_norms.push_back(s.grad_norm); };
    t.run();
    for (const auto& v : t.state().history["val_loss"])
        r.val_losses.push_back(v[1].template get<double>());
    model.download_parameters();
    for (const parameter_entry& e : model.parameter_entries())
        r.params.emplace_back(e.value.begin(), e.value.end()), r.names.push_back(e.name);
    r.fingerprint = dist::parameter_fingerprint(model.parameter_entries());
    return r;
}

// device_training on the world's ranks against one process over the whole batch: losses, gradient norms, validation
// losses and every tensor within 1e-6 relative (the ranks' partial sums round otherwise), replicas bit-identical; then
// stopped after step 1 and resumed from rank 0's checkpoint (its parameters broadcast through `device_comm`), it ends
// bit-identical to the run that never stopped.
template <class Ex>
void check_device_data_parallel(dist::communicator& world, dist::communicator* device_comm, const std::string& tag) {
    dist::local_communicator alone;
    const outcome one = device_training<Ex>(alone), dp = device_training<Ex>(world, device_comm);
    expect_same_training(dp, one, world, 1e-6, {}, 1e-6);
    std::uint64_t job = std::uint64_t(::getpid());
    world.broadcast_values(std::span<std::uint64_t>(&job, 1), 0);
    const auto dir = std::filesystem::temp_directory_path() / ("tinylm_" + tag + "_resume_" + std::to_string(job));
    device_training<Ex>(world, device_comm, dir, 1);
    const outcome resumed = device_training<Ex>(world, device_comm, dir);
    if (world.is_root()) BOOST_TEST(resumed.losses.size() == 2u);
    BOOST_TEST(resumed.fingerprint == dp.fingerprint,
               "rank " << world.rank() << ": the resumed " << tag << " run differs from the straight one");
    world.barrier();
    if (world.is_root()) std::filesystem::remove_all(dir);
}

} // namespace tl::test
