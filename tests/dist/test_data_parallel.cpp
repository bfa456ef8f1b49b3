// Data-parallel training (issue 19), run by ctest under `mpirun -np 2` and `-np 3` (label mpi). Every rank
// trains the tiny preset 10 steps as one of N ranks (dist::world(), its rows of each global batch) and, in the
// same process, as one process on the whole batch (a local_communicator) from the same initial weights and
// batches. Losses, validation losses and parameters agree within 1e-5 relative, and every rank's parameters
// are bit-identical (fingerprints compared across ranks): token windows, gradient accumulation, and packed
// documents with label masks whose target counts differ between rows (the loss is normalised by the global
// count, not averaged over ranks), and ZeRO-1, whose checkpoint one process resumes; resuming with the same N is
// bit-identical. A run whose ranks disagree on settings refuses to start on every rank. The gradient all-reduce
// started inside backward (small buckets, most started before backward ends) gives the same results; the decoder's
// backward hook reports each gradient when it is final. Experts: the balancing loss is the global batch's. ZeRO with
// row masks (vocabulary growth) whose rows the shard boundaries cut. The ranking loss of a tiny sentence encoder
// (embed/data_parallel_ranking.hpp, examples/09_retrieval): in-batch negatives over the global batch. A device-resident
// decoder (gpu::device_decoder on the CPU executor, whose memory is the host's, so MPI serves as its device
// communicator) against one process, and resumed (issue 20; on GPUs the same path runs through NCCL); with experts,
// its balancing statistics summed over the ranks, against one process and against tl::decoder on the same ranks.
#include <tinylm/backend/reference.hpp>
#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/dist/communicator.hpp>
#include <tinylm/dist/data_parallel.hpp>
#include <tinylm/dist/zero.hpp>
#include <tinylm/embed/data_parallel_ranking.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/encoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/optim/sgd.hpp>
#include <tinylm/train/trainer.hpp>

#include "../support/tiny_bert.hpp"
#include "data_parallel_checks.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <unistd.h>

using namespace tl;
using namespace tl::test;
using model_t = decoder<presets::tiny>;

namespace {

trainer_options ten_steps(int grad_accum, dist::communicator& comm) {
    trainer_options o;
    o.batch_size = 6;
    o.seq_len = 16;
    o.grad_accum = grad_accum;
    o.max_steps = 10;
    o.peak_lr = 3e-3;
    o.min_lr = 3e-4;
    o.warmup_steps = 2;
    o.clip = 0.5; // low enough to clip: the global norm must be the one-process norm
    o.eval_every = 5;
    o.eval_windows = 13; // more windows than one global batch, not a multiple of it
    o.checkpoint_every = 0;
    o.communicator = &comm;
    return o;
}

template <class Source, class Model = model_t, class MakeTrainer>
outcome train(MakeTrainer&& make) {
    Model model(7);
    outcome out;
    auto t = make(model);
    t.on_step = [&](const step_report& r) { out.losses.push_back(r.loss); };
    t.run();
    for (const auto& v : t.state().history["val_loss"])
        out.val_losses.push_back(v[1].template get<double>());
    for (const parameter_entry& e : model.parameter_entries())
        out.params.emplace_back(e.value.begin(), e.value.end()), out.names.push_back(e.name);
    out.fingerprint = dist::parameter_fingerprint(model.parameter_entries());
    out.buckets = t.gradient_buckets().bucket_count();
    out.started_during_backward = t.gradient_buckets().started_during_backward();
    return out;
}

struct reduction {
    bool overlap = true;
    std::size_t bucket_bytes = dist::gradient_buckets::default_bucket_bytes;
};

outcome token_windows_case(int grad_accum, bool zero = false, reduction r = {}) {
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    auto run_on = [&](dist::communicator& comm) {
        token_windows source(tokens, 11);
        return train<token_windows>([&](model_t& m) {
            auto o = ten_steps(grad_accum, comm);
            o.zero = zero;
            o.overlap_reduce = r.overlap;
            o.bucket_bytes = r.bucket_bytes;
            return trainer<model_t, token_windows>(m, source, val, o);
        });
    };
    const outcome one = run_on(alone), dp = run_on(world);
    expect_same_training(dp, one, world);
    return dp;
}

// Vocabulary growth's first stage: only the odd rows of the embedding train (a row mask), and the final norm; the
// rest is frozen. 16,448 trained floats, so the ZeRO parts cut rows: 128.5 rows per rank on 2 ranks, 85.7 on 3.
std::vector<std::uint8_t> odd_rows() {
    std::vector<std::uint8_t> mask(256);
    for (std::size_t r = 0; r < mask.size(); ++r)
        mask[r] = r % 2;
    return mask;
}
void train_odd_embedding_rows(model_t& m) {
    m.set_trainable([](const parameter_entry& e) { return e.group != param_group::embedding; }, false);
    m.set_trainable("model.norm.", true);
    m.set_row_mask(param_group::embedding, odd_rows());
}

// ---- the ranking loss of a sentence encoder ---------------------------------------------------------------------

using tl_test::tiny_bert_config;
using tiny_encoder = encoder<tiny_bert_config, reference_cpu>;

// Characters as tokens: [CLS] = 1, 3 + byte % 20, [SEP] = 2, right-padded with 0, cut at max_length.
embed::token_batch char_tokens(std::span<const std::string> texts, index_t max_length) {
    embed::token_batch t;
    t.batch = index_t(texts.size());
    for (const std::string& text : texts)
        t.time = std::max(t.time, std::min(index_t(text.size()) + 2, max_length));
    t.ids.assign(std::size_t(t.batch * t.time), 0);
    t.type_ids.assign(t.ids.size(), 0);
    for (index_t b = 0; b < t.batch; ++b) {
        const std::string& text = texts[std::size_t(b)];
        const index_t n = std::min(index_t(text.size()), max_length - 2);
        t.truncated += n < index_t(text.size());
        token_t* row = t.ids.data() + b * t.time;
        row[0] = 1;
        for (index_t i = 0; i < n; ++i)
            row[i + 1] = 3 + token_t(static_cast<unsigned char>(text[std::size_t(i)]) % 20);
        row[n + 1] = 2;
        t.lengths.push_back(n + 2);
    }
    return t;
}

std::vector<std::string> phrases(const std::string& tag, int n, int offset) {
    static const char* words[] = {"red", "cat", "sits", "on",  "mat", "blue",
                                  "sky", "fox", "runs", "far", "old", "tree"};
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
        std::string text = tag;
        for (int w = 0; w < 1 + (i + offset) % 3; ++w) {
            text += ' ';
            text += words[(i * 5 + w * 7 + offset) % 12];
        }
        out.push_back(text);
    }
    return out;
}

struct ranking_case {
    index_t mini_batch = 0; // 0: the plain step
    index_t negatives = 0;  // hard negatives per pair
    bool symmetric = false; // the loss both ways
    bool overlap = true;    // buckets started inside the encoder's backward
    std::size_t bucket_bytes = dist::gradient_buckets::default_bucket_bytes;
    bool sgd = false;
};

// 8 steps of the ranking loss on a global batch of 7 pairs (4 + 3 rows on 2 ranks, 3 + 2 + 2 on 3): AdamW, clipping
// at 0.5 on the summed gradients. Losses on rank 0 only (as the trainer's hooks), so expect_same_training applies.
outcome ranking_training(dist::communicator& comm, const ranking_case& c) {
    const index_t b = 7;
    const auto anchors = phrases("q", int(b), 0), positives = phrases("d", int(b), 1),
               negatives = phrases("n", int(b * c.negatives), 2);
    tiny_encoder model(11);
    // A key bias adds q.b to every score of a query, which the softmax ignores: its gradient is zero but for
    // rounding, which Adam's normalised steps turn into full-size steps in a direction each summation order picks.
    model.set_trainable("attention.self.key.bias", false);
    embed::sentence_encoder<tiny_encoder> se(model, char_tokens, {.max_length = 12});
    adamw adam(model.parameter_entries(),
               {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01});
    sgd plain(model.parameter_entries(), {.lr = 0.2, .momentum = 0.9});
    embed::data_parallel_ranking<reference_cpu> dp(comm, c.bucket_bytes, c.overlap);
    dp.join(model, "ranking test");
    const embed::ranking_step_options options{.loss = {.scale = 20, .symmetric = c.symmetric},
                                              .mini_batch_size = c.mini_batch};
    outcome out;
    for (int step = 0; step < 8; ++step) {
        const double loss = dp.gradients(se, {anchors, positives, negatives}, options);
        clip_grad_norm(model.trainable_entries(), 0.5);
        if (c.sgd)
            plain.step(0.2);
        else
            adam.step(3e-3);
        if (comm.is_root()) out.losses.push_back(loss);
    }
    for (const parameter_entry& e : model.parameter_entries())
        out.params.emplace_back(e.value.begin(), e.value.end()), out.names.push_back(e.name);
    out.fingerprint = dist::parameter_fingerprint(model.parameter_entries());
    out.buckets = dp.gradient_buckets().bucket_count();
    out.started_during_backward = dp.gradient_buckets().started_during_backward();
    return out;
}

outcome ranking_case_matches_one_process(const ranking_case& c) {
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    const outcome one = ranking_training(alone, c), dp = ranking_training(world, c);
    // The last LayerNorm's bias adds one vector to every embedding: a shift that the similarities nearly ignore, so
    // its gradient is a sum of terms that nearly cancel, and the ranks' other summation order differs from one
    // process's by 1e-5 to 3e-5 of it after 8 steps (SGD or AdamW alike); every other tensor within 1e-5.
    expect_same_training(dp, one, world, 1e-5, "encoder.layer.1.output.LayerNorm.bias");
    return dp;
}

} // namespace

// ---- a device-resident decoder (gpu::device_decoder over gpu::cpu_ops) ------------------------------------------

using device_t = gpu::device_decoder<gpu::cpu_ops>;

// The tiny preset with 4 experts of half width, top-2, and a balancing loss weighted 0.5 (50 times the usual 0.01),
// so that a balancing loss computed per rank instead of over the global batch shows far above the 1e-5 bar.
struct tiny_moe {
    static constexpr model_config value = [] {
        model_config c = presets::tiny::value;
        c.d_ff = presets::tiny::value.d_ff / 2;
        c.moe = {.n_experts = 4, .top_k = 2, .aux_loss_weight = 0.5, .balance_per_layer = true};
        return c;
    }();
};

// The small device model (one layer of width 32) with tiny_moe's experts, 2 layers, and the balancing statistics per
// layer or pooled over the layers (per_layer): rows N per balance, or N L in one.
template <bool per_layer>
struct small_device_moe {
    static constexpr model_config value = [] {
        model_config c = presets::tiny::value;
        c.d_model = 32, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 1, c.d_ff = 32;
        c.moe = tiny_moe::value.moe;
        c.moe.balance_per_layer = per_layer;
        return c;
    }();
};

// device_training's run (3 steps of 2 micro-batches of 5 x 16 tokens, the ranks' shares of the targets unequal)
// with experts, by the device model (on_device) or by tl::decoder, from tl::decoder(7)'s weights. The validation
// losses are left out: each eval_loss call's balancing loss is its own windows' (not summed over the ranks, on the
// CPU as on the device), and the device model's calls hold batch_size / ranks windows, the CPU's batch_size.
template <class Config>
outcome experts_training(dist::communicator& comm, bool on_device) {
    using moe_t = decoder<Config>;
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    auto o = device_steps(comm);
    token_windows source(tokens, 11);
    outcome r;
    if (!on_device) {
        r = train<token_windows, moe_t>([&](moe_t& m) { return trainer<moe_t, token_windows>(m, source, val, o); });
    } else {
        gpu::device_decoder_options d;
        d.batch = index_t(dist::part_of(std::size_t(o.batch_size), comm.rank(), comm.size()).count());
        d.time = o.seq_len, d.logits_rows = 24;
        device_t model(Config::value, d);
        model.load_from(moe_t(7));
        trainer<device_t, token_windows> t(model, source, val, o);
        t.on_step = [&](const step_report& s) { r.losses.push_back(s.loss); };
        t.run();
        model.download_parameters();
        for (const parameter_entry& e : model.parameter_entries())
            r.params.emplace_back(e.value.begin(), e.value.end()), r.names.push_back(e.name);
        r.fingerprint = dist::parameter_fingerprint(model.parameter_entries());
    }
    r.val_losses.clear();
    return r;
}

// A device model with experts that cannot sum its balancing statistics over the ranks (no set_global_balance):
// the trainer must still refuse it on several ranks.
struct device_without_global_balance : device_t {
    using device_t::device_t;
    void set_global_balance(std::function<void(std::span<double>)>, double) = delete;
};

// LoRA with dropout on every projection: the masks of a rank's rows must be those one process draws for them.
struct lora_with_dropout {
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0.2f, .targets = lora_all};
};

BOOST_AUTO_TEST_SUITE(data_parallel)

BOOST_AUTO_TEST_CASE(split_rows_in_rank_order) {
    // 10 rows over 3 ranks: 4, 3, 3, contiguous and covering all.
    BOOST_TEST(dist::part_of(10, 0, 3).begin == 0u);
    BOOST_TEST(dist::part_of(10, 0, 3).end == 4u);
    BOOST_TEST(dist::part_of(10, 1, 3).end == 7u);
    BOOST_TEST(dist::part_of(10, 2, 3).end == 10u);
    BOOST_TEST(dist::part_of(2, 2, 3).count() == 0u);
}

BOOST_AUTO_TEST_CASE(sums_and_gathers_over_the_world) {
    dist::communicator& comm = dist::world();
    const int n = comm.size(), r = comm.rank();
    std::vector<float> f{float(r + 1), 0.5f};
    std::vector<double> d{double(r) * 0.25};
    dist::pending a = comm.all_reduce_sum(std::span<float>(f)), b = comm.all_reduce_sum(std::span<double>(d));
    b.wait();
    a.wait();
    BOOST_TEST(f[0] == float(n * (n + 1) / 2));
    BOOST_TEST(f[1] == 0.5f * float(n));
    BOOST_TEST(d[0] == 0.25 * n * (n - 1) / 2);
    std::vector<float> all(std::size_t(2 * n)), mine{float(r), float(10 * r)};
    comm.all_gather(mine, all);
    for (int k = 0; k < n; ++k) {
        BOOST_TEST(all[std::size_t(2 * k)] == float(k));
        BOOST_TEST(all[std::size_t(2 * k + 1)] == float(10 * k));
    }
    std::vector<float> everything(std::size_t(2 * n), 1.0f), part(2);
    comm.reduce_scatter_sum(everything, part);
    BOOST_TEST(part[0] == float(n));
    comm.barrier();
}

BOOST_AUTO_TEST_CASE(token_windows_match_one_process) { token_windows_case(1); }

BOOST_AUTO_TEST_CASE(gradient_accumulation_matches_one_process) { token_windows_case(3); }

BOOST_AUTO_TEST_CASE(zero_matches_one_process) { token_windows_case(2, true); }

// Buckets of 16 KiB (the tiny model's 0.5 MB of gradients in about 30): all but the embedding's start inside the
// last backward, as the blocks above finish; the sums, and so the training, are the same as one process's, and
// as the reduction after backward.
BOOST_AUTO_TEST_CASE(all_reduce_overlapping_backward_matches_one_process) {
    for (const int grad_accum : {1, 3}) {
        const outcome dp = token_windows_case(grad_accum, false, {.overlap = true, .bucket_bytes = 16 << 10});
        BOOST_TEST_MESSAGE(dp.started_during_backward << " of " << dp.buckets << " buckets started during backward");
        BOOST_TEST(dp.buckets > 4u);
        BOOST_TEST(dp.started_during_backward > 0u);
        BOOST_TEST(dp.started_during_backward < dp.buckets); // the embedding's is final only at the end
    }
    const outcome after = token_windows_case(1, false, {.overlap = false, .bucket_bytes = 16 << 10});
    BOOST_TEST(after.started_during_backward == 0u);
}

// Experts: the ranks sum the balancing loss's statistics (expert counts, router probabilities, rows), so its value
// and gradient are those of one process routing the whole batch; per-rank balancing losses would differ.
BOOST_AUTO_TEST_CASE(experts_balance_over_the_global_batch) {
    using moe_t = decoder<tiny_moe>;
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    for (const int grad_accum : {1, 2}) {
        auto run_on = [&](dist::communicator& comm) {
            token_windows source(tokens, 11);
            return train<token_windows, moe_t>(
                [&](moe_t& m) { return trainer<moe_t, token_windows>(m, source, val, ten_steps(grad_accum, comm)); });
        };
        const outcome one = run_on(alone), dp = run_on(world);
        expect_same_training(dp, one, world);
    }
}

// LoRA dropout (the fine-tuning recipes 07, 08): each rank draws the masks of its rows of the global batch, so N
// ranks drop exactly what one process drops: the losses agree within 1e-5 (other masks change them far more), the
// adapter within 1e-4 (see expect_same_training).
BOOST_AUTO_TEST_CASE(lora_dropout_masks_are_the_global_batchs) {
    using lora_t = decoder<presets::tiny, default_backend, lora_with_dropout>;
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    auto run_on = [&](dist::communicator& comm) {
        token_windows source(tokens, 11);
        return train<token_windows, lora_t>([&](lora_t& m) {
            auto o = ten_steps(1, comm);
            o.peak_lr = 2e-2; // the adapter alone trains: a rate that moves the loss in 10 steps
            return trainer<lora_t, token_windows>(m, source, val, o);
        });
    };
    const outcome one = run_on(alone), dp = run_on(world);
    expect_same_training(dp, one, world, 1e-4);
}

// The decoder's backward hook: stages n_layers, n_layers - 1, ..., 0 in that order, and when the hook is called
// with stage s, every gradient whose backward_stage is >= s already has its final value (the all-reduce may start);
// the rest (the embedding, stage -1) is final when backward returns.
BOOST_AUTO_TEST_CASE(backward_hook_reports_final_gradients) {
    model_t model(7);
    const tl::index_t B = 2, T = 16, L = model.config().n_layers;
    const auto tokens = text_tokens(std::size_t(B * (T + 1)), 5);
    std::vector<token_t> ids, targets;
    for (tl::index_t b = 0; b < B; ++b)
        for (tl::index_t t = 0; t < T; ++t) {
            ids.push_back(tokens[std::size_t(b * (T + 1) + t)]);
            targets.push_back(tokens[std::size_t(b * (T + 1) + t + 1)]);
        }
    model.plan(B, T);
    model.zero_grad();
    model.loss({ids.data(), {B, T}}, {targets.data(), {B, T}});
    const auto& entries = model.parameter_entries();
    std::vector<std::vector<float>> at_hook(entries.size());
    std::vector<bool> seen(entries.size(), false);
    std::vector<tl::index_t> stages;
    const auto snapshot = [&](tl::index_t stage) {
        for (std::size_t i = 0; i < entries.size(); ++i)
            if (trains(entries[i]) && !seen[i] && model.backward_stage(entries[i].name) >= stage) {
                seen[i] = true;
                at_hook[i].assign(entries[i].grad.begin(), entries[i].grad.end());
            }
    };
    model.backward(1.0, [&](tl::index_t stage) {
        stages.push_back(stage);
        snapshot(stage);
    });
    snapshot(-1); // what is final when backward returns
    std::vector<tl::index_t> expected{L};
    for (tl::index_t l = L - 1; l >= 0; --l)
        expected.push_back(l);
    BOOST_TEST(stages == expected, boost::test_tools::per_element());
    std::size_t early = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        if (!trains(entries[i])) continue;
        BOOST_TEST_REQUIRE(seen[i], entries[i].name << " was never reported final");
        const std::vector<float> final_grad(entries[i].grad.begin(), entries[i].grad.end());
        BOOST_TEST(at_hook[i] == final_grad, entries[i].name << " changed after the hook reported it final");
        early += model.backward_stage(entries[i].name) >= 0;
    }
    BOOST_TEST(early + 1 >= entries.size()); // all but the embedding before the end
    BOOST_TEST(model.backward_stage("model.layers.1.mlp.up_proj.weight") == 1);
    BOOST_TEST(model.backward_stage("model.norm.weight") == L);
    BOOST_TEST(model.backward_stage("model.embed_tokens.weight") == -1);
    BOOST_TEST(model.backward_stage("model.layers.99.mlp.up_proj.weight") == -1); // no such layer: at the end
}

BOOST_AUTO_TEST_CASE(zero_shards_the_parameters_evenly) {
    dist::communicator& world = dist::world();
    model_t model(7);
    const dist::zero_partition p(world, model.parameter_entries());
    const std::size_t n = std::size_t(world.size()), most = (p.total() + n - 1) / n;
    BOOST_TEST(p.owned() <= most);
    BOOST_TEST(p.owned() + n > most); // every rank holds its share (up to rounding), so AdamW's moments fall as 1/N
    BOOST_TEST(world.sum(double(p.owned())) == double(p.total()));
}

// A ZeRO run's checkpoint holds the full moments: one process resumes it and ends where one process that never
// stopped ends (resuming with another N re-splits the state).
BOOST_AUTO_TEST_CASE(zero_checkpoint_resumes_with_another_world_size) {
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    std::uint64_t job = std::uint64_t(::getpid());
    world.broadcast_values(std::span<std::uint64_t>(&job, 1), 0);
    const fs::path dir = fs::temp_directory_path() / ("tinylm_zero_" + std::to_string(job));
    const fs::path mine = dir.string() + "_rank" + std::to_string(world.rank());
    {
        model_t model(7);
        token_windows source(tokens, 11);
        auto o = ten_steps(1, world);
        o.zero = true;
        o.stop_at = 5;
        o.out_dir = dir;
        trainer<model_t, token_windows> t(model, source, val, o);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    world.barrier();
    fs::remove_all(mine);
    fs::create_directories(mine);
    fs::copy(dir / "checkpoint", mine / "checkpoint", fs::copy_options::recursive);
    auto one_process = [&](const fs::path& out) {
        token_windows source(tokens, 11);
        return train<token_windows>([&](model_t& m) {
            auto o = ten_steps(1, alone);
            o.out_dir = out;
            o.checkpoint_every = 0;
            return trainer<model_t, token_windows>(m, source, val, o);
        });
    };
    const outcome resumed = one_process(mine), straight = one_process({});
    BOOST_REQUIRE_EQUAL(resumed.losses.size(), 5u);
    for (std::size_t i = 0; i < 5; ++i)
        BOOST_TEST(relative(resumed.losses[i], straight.losses[5 + i]) < 1e-5);
    double worst = 0;
    for (std::size_t k = 0; k < straight.params.size(); ++k) {
        double diff = 0, norm = 0;
        for (std::size_t j = 0; j < straight.params[k].size(); ++j) {
            diff += std::pow(double(resumed.params[k][j]) - double(straight.params[k][j]), 2);
            norm += std::pow(double(straight.params[k][j]), 2);
        }
        worst = std::max(worst, std::sqrt(diff / std::max(norm, 1e-30)));
    }
    BOOST_TEST_MESSAGE("resumed from a ZeRO checkpoint: largest relative parameter difference " << worst);
    BOOST_TEST(worst < 1e-5);
    fs::remove_all(mine);
    world.barrier();
    if (world.is_root()) fs::remove_all(dir);
}

// Stopping at step 5 and resuming from the checkpoint with the same N ends bit-identical to a run that never
// stopped, with and without ZeRO (the moments gathered into the checkpoint and split again on load).
// `prepare` (optional): what the model trains, set before each trainer is made.
void resume_case(bool zero, const std::function<void(model_t&)>& prepare = {}) {
    dist::communicator& world = dist::world();
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    std::uint64_t job = std::uint64_t(::getpid());
    world.broadcast_values(std::span<std::uint64_t>(&job, 1), 0);
    const fs::path dir = fs::temp_directory_path() / ("tinylm_resume_" + std::to_string(job));
    auto run_to = [&](long long stop_at, const fs::path& out) {
        model_t model(7);
        if (prepare) prepare(model);
        token_windows source(tokens, 11);
        auto o = ten_steps(1, world);
        o.zero = zero;
        o.stop_at = stop_at;
        o.out_dir = out;
        o.checkpoint_every = 0;
        trainer<model_t, token_windows> t(model, source, val, o);
        t.run();
        return dist::parameter_fingerprint(model.parameter_entries());
    };
    const std::uint64_t straight = run_to(10, {});
    run_to(5, dir);
    const std::uint64_t resumed = run_to(10, dir);
    BOOST_TEST(resumed == straight, "rank " << world.rank() << ": the resumed run differs from the straight one");
    world.barrier();
    if (world.is_root()) fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(resume_with_the_same_world_is_bit_identical) { resume_case(false); }

BOOST_AUTO_TEST_CASE(zero_resume_with_the_same_world_is_bit_identical) { resume_case(true); }

// The same with the row mask whose rows the shards cut: the pieces' moments go into the checkpoint under the entry's
// name and come back into the same pieces.
BOOST_AUTO_TEST_CASE(zero_resume_with_cut_rows_is_bit_identical) { resume_case(true, train_odd_embedding_rows); }

BOOST_AUTO_TEST_CASE(masked_documents_use_the_global_target_count) {
    // Packed rows of two documents each, with the first k targets of every row masked (k varies by row), so the
    // ranks' target counts differ and a mean of per-rank means would not be the one-process loss.
    const index_t T = 16, rows = 40;
    const auto text = text_tokens(std::size_t(rows * (T + 1)), 5);
    std::vector<token_t> ids, targets;
    std::vector<index_t> doc_start;
    for (index_t r = 0; r < rows; ++r)
        for (index_t t = 0; t < T; ++t) {
            const index_t split = 5 + r % 7;
            ids.push_back(text[std::size_t(r * (T + 1) + t)]);
            targets.push_back(t < 2 * (r % 5) ? ignore_index : text[std::size_t(r * (T + 1) + t + 1)]);
            doc_start.push_back(t < split ? 0 : split);
        }
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    const auto val = text_tokens(4000, 6);
    auto run_on = [&](dist::communicator& comm) {
        packed_rows source(ids, targets, doc_start, T, 13);
        return train<packed_rows>([&](model_t& m) {
            auto o = ten_steps(2, comm);
            o.batch_size = 4; // 2 + 1 + 1 rows over three ranks
            return trainer<model_t, packed_rows>(m, source, val, o);
        });
    };
    const outcome one = run_on(alone), dp = run_on(world);
    expect_same_training(dp, one, world);
}

BOOST_AUTO_TEST_CASE(ranks_with_different_settings_refuse_to_start) {
    dist::communicator& world = dist::world();
    if (world.size() == 1) return; // nothing to disagree with
    const auto tokens = text_tokens(20000, 3), val = text_tokens(4000, 4);
    model_t model(7);
    token_windows source(tokens, 11);
    auto o = ten_steps(1, world);
    if (world.rank() == world.size() - 1) o.peak_lr *= 2;
    trainer<model_t, token_windows> t(model, source, val, o);
    BOOST_CHECK_EXCEPTION(t.run(), dist::collective_error, [&](const dist::collective_error& e) {
        const std::string what = e.what();
        BOOST_TEST_MESSAGE(what);
        return what.find("training settings") != std::string::npos &&
               what.find("rank " + std::to_string(world.size() - 1)) != std::string::npos;
    });
    BOOST_TEST(t.state().step == 0);
}

// Run by kill_one_rank.sh (ctest test_dist_kill_one_rank): with TINYLM_DIST_KILL_RANK set, that rank kills itself
// with SIGKILL as it draws the batch of step 7 (checkpoints every 2 steps), and the script checks that the whole
// job ended non-zero within 60 s naming the failure; run again without it, the job resumes from the last complete
// checkpoint and finishes. Without TINYLM_DIST_KILL_DIR the case does nothing.
BOOST_AUTO_TEST_CASE(resume_after_a_rank_died) {
    const char* dir = std::getenv("TINYLM_DIST_KILL_DIR");
    if (!dir) return;
    const char* kill_rank = std::getenv("TINYLM_DIST_KILL_RANK");
    dist::communicator& world = dist::world();
    struct killing_source {
        token_windows inner;
        bool die = false;
        void next(tensor_view<token_t> ids, tensor_view<token_t> targets) {
            if (die && inner.position() == 6) std::raise(SIGKILL);
            inner.next(ids, targets);
        }
        std::uint64_t position() const { return inner.position(); }
        void seek(std::uint64_t p) { inner.seek(p); }
    };
    killing_source source{token_windows(text_tokens(20000, 3), 11),
                          kill_rank != nullptr && std::atoi(kill_rank) == world.rank()};
    model_t model(7);
    auto o = ten_steps(1, world);
    o.checkpoint_every = 2;
    o.out_dir = dir;
    trainer<model_t, killing_source> t(model, source, text_tokens(4000, 4), o);
    const long long resumed_at = t.restore();
    BOOST_TEST_MESSAGE("rank " << world.rank() << " starts at step " << resumed_at);
    BOOST_TEST((t.run() == train_outcome::finished));
    BOOST_TEST(t.state().step == 10);
    if (!kill_rank) BOOST_TEST((resumed_at >= 4 && resumed_at % 2 == 0), "resumed at step " << resumed_at);
}

// Vocabulary growth's first stage under ZeRO: only some rows of the embedding train (a row mask) and the shard
// boundaries cut rows (the embedding and the final norm train: 16,448 floats, 8,224 per rank on 2 ranks = 128.5
// rows, 5,483 on 3). Against one process without ZeRO: within 1e-5, replicas bit-identical, and every masked row
// bit-identical to its initial value (its gradients are not zero: random bytes in the text use every row).
BOOST_AUTO_TEST_CASE(zero_trains_only_the_masked_rows) {
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    auto tokens = text_tokens(20000, 3);
    counter_rng rng(5);
    for (std::size_t i = 0; i < tokens.size(); i += 4)
        tokens[i] = token_t(rng.below(256));
    const auto val = text_tokens(4000, 4);
    const std::vector<std::uint8_t> mask = odd_rows();
    auto grow = [&](model_t& m) { train_odd_embedding_rows(m); };
    std::size_t cut_rows = 0; // pieces of less than a row, over all ranks: the case must cut rows
    auto run_on = [&](dist::communicator& comm, bool zero) {
        token_windows source(tokens, 11);
        return train<token_windows>([&](model_t& m) {
            grow(m);
            auto o = ten_steps(1, comm);
            o.zero = zero;
            if (zero) {
                const dist::zero_partition p(comm, m.parameter_entries());
                for (const parameter_entry& e : p.shard_entries())
                    cut_rows += e.group == param_group::embedding && e.value.dim(0) == 1 && e.value.numel() < 64;
            }
            return trainer<model_t, token_windows>(m, source, val, o);
        });
    };
    const outcome one = run_on(alone, false), dp = run_on(world, true);
    expect_same_training(dp, one, world);
    BOOST_TEST(world.sum(double(cut_rows)) >= 2.0);
    model_t initial(7);
    const auto& entries = initial.parameter_entries();
    for (std::size_t k = 0; k < entries.size(); ++k) {
        if (entries[k].group != param_group::embedding) continue;
        const std::size_t cols = std::size_t(entries[k].value.numel() / entries[k].value.dim(0));
        std::size_t changed_frozen = 0, changed_trained = 0;
        for (std::size_t j = 0; j < dp.params[k].size(); ++j) {
            const bool changed = dp.params[k][j] != entries[k].value.data[j];
            (mask[j / cols] ? changed_trained : changed_frozen) += changed;
        }
        BOOST_TEST(changed_frozen == 0u, entries[k].name << ": " << changed_frozen << " masked elements changed");
        BOOST_TEST(changed_trained > 0u);
    }
}

// The ranking loss with in-batch negatives (examples/09_retrieval): N ranks embed their pairs, gather the
// embeddings and back-propagate their rows of the global loss; the summed gradients are one process's. Plain
// and cached (gradient cache with mini-batches of 3 texts), with hard negatives and the symmetric loss.
BOOST_AUTO_TEST_CASE(ranking_loss_over_the_global_batch_matches_one_process) {
    ranking_case_matches_one_process({.mini_batch = 0});
    ranking_case_matches_one_process({.mini_batch = 3, .sgd = true}); // no Adam to hide a gradient's scale
    ranking_case_matches_one_process({.mini_batch = 3});
    ranking_case_matches_one_process({.mini_batch = 3, .negatives = 1, .symmetric = true});
    ranking_case_matches_one_process({.mini_batch = 0, .negatives = 1, .overlap = false});
}

// The encoder's backward hook: with 1 KiB buckets the all-reduce of all but the embeddings' buckets starts inside
// the last backward (the last mini-batch's, with the gradient cache), and the results do not change.
BOOST_AUTO_TEST_CASE(ranking_buckets_start_inside_the_encoders_backward) {
    for (index_t mini_batch : {0, 3}) {
        const outcome dp = ranking_case_matches_one_process({.mini_batch = mini_batch, .bucket_bytes = 1024});
        if (dist::world().size() == 1) continue;
        BOOST_TEST(dp.buckets > 4u);
        BOOST_TEST(dp.started_during_backward + 2 >= dp.buckets); // the embeddings' bucket(s) only at the end
        BOOST_TEST(dp.started_during_backward > 0u);
    }
    tiny_encoder model(1);
    BOOST_TEST(model.backward_stage("encoder.layer.1.attention.self.query.weight") == 1);
    BOOST_TEST(model.backward_stage("encoder.layer.0.output.LayerNorm.bias") == 0);
    BOOST_TEST(model.backward_stage("embeddings.word_embeddings.weight") == -1);
    BOOST_TEST(model.backward_stage("encoder.layer.7.output.dense.weight") == -1); // no such layer
}

// tl::trainer over a device-resident decoder on N ranks (its parameters broadcast and its gradient block summed in
// one collective through the device communicator, here MPI over host memory) is one process over the whole batch:
// losses, validation losses and parameters within 1e-6 relative, replicas bit-identical. Stopped at step 1 and
// resumed from rank 0's checkpoint, it ends bit-identical to the run that never stopped.
// A device model with experts sums its balancing statistics over the ranks between its forward and its loss
// (set_global_balance, installed by the trainer): on N ranks it trains as on one process over the whole batch
// (losses and parameters within 1e-6 relative, replicas bit-identical) and as tl::decoder on N ranks (within 1e-5,
// test_trainer's bar for the device model against tl::decoder); per-layer and pooled balances. A balancing loss of
// each rank's rows alone (weight 0.5) differs far more. A device model without the hook is still refused.
BOOST_AUTO_TEST_CASE(device_decoder_with_experts_balances_over_the_global_batch) {
    dist::communicator& world = dist::world();
    dist::local_communicator alone;
    auto check = [&]<class Config>(Config, const char* which) {
        BOOST_TEST_MESSAGE("experts on the device, balance " << which);
        const outcome one = experts_training<Config>(alone, true), dp = experts_training<Config>(world, true);
        BOOST_TEST_MESSAGE("the device model on " << world.size() << " ranks against one process");
        expect_same_training(dp, one, world, 1e-6, {}, 1e-6);
        const outcome cpu = experts_training<Config>(world, false);
        BOOST_TEST_MESSAGE("the device model against tl::decoder, both on " << world.size() << " ranks");
        expect_same_training(dp, cpu, world, 1e-5, {}, 1e-5);
    };
    check(small_device_moe<true>{}, "per layer");
    check(small_device_moe<false>{}, "pooled");
}

BOOST_AUTO_TEST_CASE(device_decoder_without_global_balance_is_refused_on_several_ranks) {
    static_assert(GlobalBalanceDeviceModel<device_t> && !GlobalBalanceDeviceModel<device_without_global_balance>);
    dist::communicator& world = dist::world();
    if (world.size() == 1) return; // one process trains it (test_trainer, test_moe)
    const auto tokens = text_tokens(4000, 3);
    auto o = ten_steps(1, world);
    o.batch_size = 5;
    gpu::device_decoder_options d;
    d.batch = index_t(dist::part_of(std::size_t(o.batch_size), world.rank(), world.size()).count());
    d.time = o.seq_len;
    device_without_global_balance model(small_device_moe<true>::value, d);
    token_windows source(tokens, 11);
    trainer<device_without_global_balance, token_windows> t(model, source, tokens, o);
    BOOST_CHECK_EXCEPTION(t.run(), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("a device model with experts trains in one process") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(device_decoder_matches_one_process_and_resumes) {
    check_device_data_parallel<gpu::cpu_ops>(dist::world(), nullptr, "device");
}

BOOST_AUTO_TEST_SUITE_END()
