// tl::trainer over a gpu::device_decoder<Ex>: an interrupted run resumed by a fresh model from its checkpoint, and a
// run with gradient checkpointing, give the bits of an uninterrupted run without it. One check for both executors:
// test_cuda_kernels runs it on the GPU (gpu_ops), test_trainer on the CPU executor (cpu_ops, in the default run, so
// the check itself is exercised where there is no GPU). The shape is test_trainer's
// device_decoder_resumes_bit_identically (stop at step 2 of 4, a model with other weights resumes); the weights are
// drawn here, without a tl::decoder, so the GPU test's translation unit instantiates the trainer and the device model
// only.
#pragma once

#include <tinylm/core/rng.hpp>
#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/train/batches.hpp>
#include <tinylm/train/trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tl::test {

// Text-like bytes: a few repeating words, so that the model has something to learn.
inline std::vector<token_t> byte_tokens(std::size_t n, std::uint64_t seed) {
    const char* words[] = {"мир ", "война ", "и ", "дух ", "сила ", "мысль "};
    counter_rng rng(seed);
    std::vector<token_t> t;
    while (t.size() < n)
        for (const char* c = words[rng.below(6)]; *c; ++c)
            t.push_back(static_cast<unsigned char>(*c));
    t.resize(n);
    return t;
}

// A device model of `c` for the trainer's batch and context, its weights drawn from `seed` (normal, scale 0.05;
// norms at one) and uploaded.
template <class Ex>
std::unique_ptr<gpu::device_decoder<Ex>> seeded_device_decoder(const model_config& c, const trainer_options& o,
                                                               std::uint64_t seed, bool checkpointing,
                                                               bool bf16 = false) {
    gpu::device_decoder_options d;
    d.batch = o.batch_size, d.time = o.seq_len, d.logits_rows = 48; // the LM head in chunks, as test_trainer's
    d.checkpointing = checkpointing, d.bf16 = bf16;
    auto m = std::make_unique<gpu::device_decoder<Ex>>(c, d);
    counter_rng rng(seed, 0x5eed);
    for (const parameter_entry& e : m->parameter_entries())
        for (float& v : e.value)
            v = e.kind == param_kind::norm ? 1.0f : float(0.05 * rng.normal());
    m->upload_parameters();
    return m;
}

// The names of the parameters whose bits differ between two device models (their host mirrors downloaded).
template <class Ex>
std::vector<std::string> differing_parameters(gpu::device_decoder<Ex>& a, gpu::device_decoder<Ex>& b) {
    a.download_parameters();
    b.download_parameters();
    std::vector<std::string> differ;
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        const auto &x = a.parameter_entries()[i].value, &y = b.parameter_entries()[i].value;
        if (std::memcmp(x.data, y.data, std::size_t(x.numel()) * sizeof(float)) != 0)
            differ.push_back(a.parameter_entries()[i].name);
    }
    return differ;
}

// One tl::trainer run of `options` over a fresh model from `seed`, on token_windows(train, data_seed): the trained
// model, and the outcome. `checkpointing` is the model's and the trainer's gradient checkpointing; `bf16` its
// products'; `forward_first`: a validation forward of the fresh weights before the trainer restores a checkpoint.
template <class Ex>
struct device_training_run {
    std::unique_ptr<gpu::device_decoder<Ex>> model;
    train_outcome outcome = train_outcome::finished;
    long long restored_from = 0; // the step the trainer resumed from (0: a fresh run)
    std::vector<double> losses;  // every step's training loss
};
template <class Ex>
device_training_run<Ex> train_device_decoder(const model_config& c, trainer_options options,
                                             const std::vector<token_t>& train, const std::vector<token_t>& validation,
                                             std::uint64_t seed, bool checkpointing, std::uint64_t data_seed = 7,
                                             bool bf16 = false, bool forward_first = false) {
    options.gradient_checkpointing = checkpointing;
    device_training_run<Ex> r;
    r.model = seeded_device_decoder<Ex>(c, options, seed, checkpointing, bf16);
    if (forward_first) { // one validation forward of the seeded weights, before the trainer restores a checkpoint
        const std::size_t n = std::size_t(options.batch_size * options.seq_len);
        const index_t rows = options.batch_size, time = options.seq_len;
        BOOST_TEST_REQUIRE(validation.size() > n);
        r.model->eval_loss(cview<token_t>{validation.data(), {rows, time}},
                           cview<token_t>{validation.data() + 1, {rows, time}});
    }
    token_windows source(train, data_seed);
    trainer t(*r.model, source, validation, options);
    r.restored_from = t.restore();
    t.on_step = [&](const step_report& s) { r.losses.push_back(s.loss); };
    r.outcome = t.run();
    return r;
}

// The models the check trains: presets::tiny with a sliding window of 24 on its first layer, and presets::tiny with 4
// experts of width 96, top 2, the balancing loss per layer at 0.05 (full attention: checkpoints of experts with a
// per-layer window have no Hugging Face architecture, hf_checkpoint refuses them).
inline std::vector<std::pair<std::string, model_config>> device_training_models() {
    model_config windowed = presets::tiny::value;
    windowed.sliding_window = 24;
    windowed.full_attention_every = 2;
    model_config experts = presets::tiny::value;
    experts.d_ff = 96;
    experts.moe = {.n_experts = 4, .top_k = 2, .aux_loss_weight = 0.05, .balance_per_layer = true};
    return {{"dense, windowed", windowed}, {"experts", experts}};
}

// On `c` (dense or with experts): batch 4 x 32, grad_accum 2, warmup 2, clipping at 1, validation every 2 steps on 6
// windows (the second batch padded). A run stopped after step 2 and resumed to step 4 by a fresh model with other
// weights (model, AdamW's moments and the step from the checkpoint in `dir`) has every parameter and the last two
// steps' losses bit for bit as 4 steps in one go; a run with gradient checkpointing the bits and losses of one without.
// `bf16`: the device's products in bf16 (--device cuda's setting in the recipes); the model that resumes first runs a
// validation forward of its own weights, so that their bf16 copies exist and the restore must replace them.
template <class Ex>
void check_device_training_is_bit_identical(const model_config& c, const std::filesystem::path& dir,
                                            bool bf16 = false) {
    const auto train = byte_tokens(20000, 31), validation = byte_tokens(4000, 32);
    trainer_options o{.batch_size = 4,
                      .seq_len = 32,
                      .grad_accum = 2,
                      .max_steps = 4,
                      .peak_lr = 3e-3,
                      .min_lr = 3e-4,
                      .warmup_steps = 2,
                      .clip = 1.0,
                      .eval_every = 2,
                      .eval_windows = 6,
                      .checkpoint_every = 0};
    const auto whole = train_device_decoder<Ex>(c, o, train, validation, 41, false, 7, bf16);
    BOOST_TEST((whole.outcome == train_outcome::finished));
    std::filesystem::remove_all(dir);
    o.out_dir = dir;
    auto staged = o;
    staged.stop_at = 2;
    BOOST_TEST(
        (train_device_decoder<Ex>(c, staged, train, validation, 41, false, 7, bf16).outcome == train_outcome::paused));
    const auto resumed = train_device_decoder<Ex>(c, o, train, validation, 42, false, 7, bf16, bf16);
    BOOST_TEST(resumed.restored_from == 2);
    BOOST_TEST((resumed.outcome == train_outcome::finished));
    for (const std::string& name : differing_parameters(*whole.model, *resumed.model))
        BOOST_ERROR("resumed: " << name << " differs from the uninterrupted run's");
    BOOST_TEST_REQUIRE(whole.losses.size() == 4u);
    BOOST_TEST_REQUIRE(resumed.losses.size() == 2u);
    BOOST_TEST(std::memcmp(resumed.losses.data(), whole.losses.data() + 2, 2 * sizeof(double)) == 0);
    std::filesystem::remove_all(dir);
    o.out_dir.clear();
    const auto checkpointed = train_device_decoder<Ex>(c, o, train, validation, 41, true, 7, bf16);
    for (const std::string& name : differing_parameters(*whole.model, *checkpointed.model))
        BOOST_ERROR("gradient checkpointing: " << name << " differs from the run without");
    BOOST_TEST((checkpointed.losses == whole.losses));
}

} // namespace tl::test
