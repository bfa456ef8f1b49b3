// The training loop: resume after a crash is bit-identical (token windows with AdamW; packed documents with
// label masks, SGD and a validation callable), SIGINT saves and returns, divergence stops with a clear error,
// gradient accumulation equals the full batch, packed_rows serves each row once per epoch, and checkpoints
// round-trip. The same trainer over a device-resident decoder (cuda/device_decoder.hpp, on the CPU executor): the
// CPU decoder's losses, norms and weights, bit-identical resume, and checkpoints either resumes.
#include "../model/fixture_configs.hpp"
#include "../support/device_training.hpp"
#include "../support/random.hpp"

#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/optim/sgd.hpp>
#include <tinylm/train/trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

using namespace tl;
using namespace tl::test;
using model_t = decoder<presets::tiny>;

namespace {

struct temp_dir {
    fs::path path;
    explicit temp_dir(const std::string& name)
        : path(fs::temp_directory_path() / ("tinylm_trainer_" + name + "_" + std::to_string(::getpid()))) {
        fs::remove_all(path);
    }
    ~temp_dir() { fs::remove_all(path); }
};

trainer_options small_run(const fs::path& out) {
    return {.batch_size = 4,
            .seq_len = 32,
            .grad_accum = 2,
            .max_steps = 30,
            .peak_lr = 3e-3,
            .min_lr = 3e-4,
            .warmup_steps = 5,
            .decay = decay_kind::cosine,
            .adamw = {},
            .clip = 1.0,
            .eval_every = 10,
            .eval_windows = 8,
            .checkpoint_every = 10,
            .out_dir = out,
            .resume = true,
            .special = {}};
}

bool same_bits(const model_t& a, const model_t& b) {
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        const auto& x = a.parameter_entries()[i].value;
        const auto& y = b.parameter_entries()[i].value;
        if (std::memcmp(x.data, y.data, std::size_t(x.numel()) * sizeof(float)) != 0) return false;
    }
    return true;
}

// A fresh trainer over `dir`, which holds a checkpoint, run to the end (the model's own seed must not matter:
// everything comes from the checkpoint). Returns the first step it trained.
long long finish_from_checkpoint(model_t& model, const std::vector<token_t>& train_tokens,
                                 const std::vector<token_t>& val_tokens, std::uint64_t data_seed, const fs::path& dir,
                                 training_state* state = nullptr) {
    token_windows src(train_tokens, data_seed);
    trainer t(model, src, val_tokens, small_run(dir));
    long long first_step = 0;
    t.on_step = [&](const step_report& r) {
        if (!first_step) first_step = r.step;
    };
    BOOST_TEST((t.run() == train_outcome::finished));
    if (state) *state = t.state();
    return first_step;
}

// Rows of T tokens holding two documents each (the second starts at a row-dependent column), with targets -100
// on each document's first half, as SFT rows mask the prompt.
struct packed_data {
    index_t T = 32, rows = 0;
    std::vector<token_t> ids, targets;
    std::vector<index_t> doc_start;
};
packed_data make_packed(index_t rows, std::uint64_t seed) {
    packed_data d;
    d.rows = rows;
    const auto text = byte_tokens(std::size_t(rows * (d.T + 1)), seed);
    for (index_t r = 0; r < rows; ++r) {
        const index_t split = 8 + r % 16;
        for (index_t t = 0; t < d.T; ++t) {
            const index_t start = t < split ? 0 : split, end = t < split ? split : d.T;
            d.ids.push_back(text[std::size_t(r * (d.T + 1) + t)]);
            const bool masked = t < start + (end - start) / 2 || t == end - 1;
            d.targets.push_back(masked ? ignore_index : text[std::size_t(r * (d.T + 1) + t + 1)]);
            d.doc_start.push_back(start);
        }
    }
    return d;
}

trainer_options packed_run(const fs::path& out) {
    auto o = small_run(out);
    o.batch_size = 3;
    o.grad_accum = 2;
    o.max_steps = 24;
    o.eval_every = 6;
    o.checkpoint_every = 6;
    return o;
}

// A device-resident decoder (gpu::device_decoder) trained by the same trainer, on the CPU executor (gpu::cpu_ops:
// the GPU step's kernels and buffers, run by the CPU drivers of their arithmetic).
using device_t = gpu::device_decoder<gpu::cpu_ops>;

trainer_options device_run(const fs::path& out) {
    auto o = small_run(out); // batch 4 x 32, grad_accum 2, warmup 5, clip 1
    o.max_steps = 6;
    o.eval_every = 3;
    o.eval_windows = 6; // two validation batches, the second padded (2 of 4 rows)
    o.checkpoint_every = 0;
    return o;
}
std::unique_ptr<device_t> device_model(const trainer_options& o, const model_t& init) {
    gpu::device_decoder_options d;
    d.batch = o.batch_size, d.time = o.seq_len, d.logits_rows = 48; // head chunks of 48, 48 and 32 tokens
    auto m = std::make_unique<device_t>(presets::tiny::value, d);
    m->load_from(init);
    return m;
}
struct run_record {
    std::vector<double> loss, grad_norm, val_loss;
};
template <class Trainer>
void record(Trainer& t, run_record& r) {
    t.on_step = [&r](const step_report& s) {
        r.loss.push_back(s.loss);
        r.grad_norm.push_back(s.grad_norm);
    };
    t.on_eval = [&r](long long, double v) { r.val_loss.push_back(v); };
}
double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }
void check_close(const std::vector<double>& device, const std::vector<double>& cpu, double tol, const char* what) {
    BOOST_TEST_REQUIRE(device.size() == cpu.size(), what);
    for (std::size_t i = 0; i < cpu.size(); ++i)
        BOOST_TEST(relative(device[i], cpu[i]) < tol,
                   what << " " << i << ": device " << device[i] << ", cpu " << cpu[i]);
}
// The largest difference of a parameter, relative to its tensor's largest element.
double parameter_difference(const model_t& other, const model_t& cpu) {
    double worst = 0;
    for (std::size_t i = 0; i < cpu.parameter_entries().size(); ++i) {
        const auto& a = other.parameter_entries()[i].value;
        const auto& b = cpu.parameter_entries()[i].value;
        double err = 0, scale = 0;
        for (index_t j = 0; j < b.numel(); ++j) {
            err = std::max(err, std::abs(double(a[j]) - double(b[j])));
            scale = std::max(scale, std::abs(double(b[j])));
        }
        worst = std::max(worst, err / scale);
    }
    return worst;
}
double parameter_difference(device_t& device, const model_t& cpu) {
    model_t copy(0);
    device.store_into(copy);
    return parameter_difference(copy, cpu);
}
} // namespace

BOOST_AUTO_TEST_SUITE(trainer_loop)

BOOST_AUTO_TEST_CASE(resume_after_a_crash_is_bit_identical) {
    const auto train_tokens = byte_tokens(20000, 1), val_tokens = byte_tokens(4000, 2);
    temp_dir a("a"), b("b");

    model_t reference(7);
    token_windows src_a(train_tokens, 3);
    trainer ta(reference, src_a, val_tokens, small_run(a.path));
    BOOST_TEST((ta.run() == train_outcome::finished));
    const double first_val = ta.state().history["val_loss"][0][1], last_val = ta.state().history["val_loss"].back()[1];
    BOOST_TEST_MESSAGE("validation loss " << first_val << " -> " << last_val);
    BOOST_TEST(last_val < first_val);

    { // a run that dies at step 17 (after the checkpoint of step 10)
        model_t crashed(7);
        token_windows src(train_tokens, 3);
        trainer t(crashed, src, val_tokens, small_run(b.path));
        t.on_step = [](const step_report& r) {
            if (r.step == 17) throw std::runtime_error("simulated crash");
        };
        BOOST_CHECK_THROW(t.run(), std::runtime_error);
    }
    model_t resumed(99);
    training_state state;
    BOOST_TEST(finish_from_checkpoint(resumed, train_tokens, val_tokens, 3, b.path, &state) == 11); // after step 10
    BOOST_TEST(same_bits(reference, resumed));
    BOOST_TEST(state.data_position == ta.state().data_position);
}

// The same for rows of packed documents with label masks (SFT), another optimizer and a validation callable:
// checkpoints hold SGD's momentum buffers and packed_rows' position.
BOOST_AUTO_TEST_CASE(packed_documents_with_sgd_resume_bit_identically) {
    const packed_data d = make_packed(20, 21), val = make_packed(4, 22);
    temp_dir a("packed_a"), b("packed_b");
    auto validation = [&](model_t& m) {
        return [&m, &val] {
            return double(m.eval_loss(cview<token_t>{val.ids.data(), {val.rows, val.T}},
                                      cview<token_t>{val.targets.data(), {val.rows, val.T}},
                                      cview<index_t>{val.doc_start.data(), {val.rows, val.T}}));
        };
    };
    auto run = [&](model_t& m, const fs::path& dir, long long crash_at) {
        packed_rows src(d.ids, d.targets, d.doc_start, d.T, 5);
        trainer t(m, src, sgd(m, {.momentum = 0.9, .weight_decay = 0.01}), validation(m), packed_run(dir));
        t.on_step = [&](const step_report& r) {
            BOOST_TEST_REQUIRE(r.counted_targets < 2 * 3 * d.T); // the masks left targets out
            if (r.step == crash_at) throw std::runtime_error("simulated crash");
        };
        t.run();
        return t.state();
    };
    model_t reference(7);
    const training_state whole = run(reference, a.path, 0);
    const double first_val = whole.history["val_loss"][0][1], last_val = whole.history["val_loss"].back()[1];
    BOOST_TEST(last_val < first_val);
    BOOST_TEST(last_val == double(validation(reference)())); // the callable's loss, not token windows
    BOOST_TEST(safetensors_reader(a.path / "checkpoint/optimizer.safetensors")
                   .contains("momentum_buffer." + reference.parameter_entries()[0].name));
    {
        model_t crashed(7);
        BOOST_CHECK_THROW(run(crashed, b.path, 15), std::runtime_error); // after the checkpoint of step 12
    }
    model_t resumed(99);
    const training_state rest = run(resumed, b.path, 0);
    BOOST_TEST(same_bits(reference, resumed));
    BOOST_TEST(rest.data_position == whole.data_position);
    BOOST_TEST(rest.history.dump() == whole.history.dump());
}

// The trainer hands doc_start to the loss: the first step's loss is that of the first batch as packed documents.
BOOST_AUTO_TEST_CASE(document_sources_pass_doc_start) {
    const packed_data d = make_packed(6, 31);
    model_t m(2), twin(2);
    packed_rows src(d.ids, d.targets, d.doc_start, d.T, 9), copy(d.ids, d.targets, d.doc_start, d.T, 9);
    std::vector<token_t> ids(std::size_t(3 * d.T)), targets(ids.size());
    std::vector<index_t> starts(ids.size());
    copy.next({ids.data(), {3, d.T}}, {targets.data(), {3, d.T}}, {starts.data(), {3, d.T}});
    const double packed = twin.loss(cview<token_t>{ids.data(), {3, d.T}}, cview<token_t>{targets.data(), {3, d.T}},
                                    cview<index_t>{starts.data(), {3, d.T}});
    const double one_doc = twin.loss(cview<token_t>{ids.data(), {3, d.T}}, cview<token_t>{targets.data(), {3, d.T}});
    BOOST_TEST_REQUIRE(packed != one_doc);
    auto options = packed_run({});
    options.grad_accum = 1;
    options.max_steps = 1;
    options.warmup_steps = 0;
    trainer t(m, src, trainer<model_t, packed_rows>::validation_fn{}, options);
    double loss = 0;
    t.on_step = [&](const step_report& r) { loss = r.loss; };
    t.run();
    BOOST_TEST(loss == packed);
}

BOOST_AUTO_TEST_CASE(packed_rows_serve_each_row_once_per_epoch) {
    const packed_data d = make_packed(10, 41);
    packed_rows src(d.ids, d.targets, d.doc_start, d.T, 3);
    std::vector<token_t> ids(std::size_t(4 * d.T)), targets(ids.size());
    std::vector<index_t> starts(ids.size());
    auto key = [&](const token_t* row) { // FNV-1a over the row: tells rows apart
        std::uint64_t h = 1469598103934665603ull;
        for (index_t t = 0; t < d.T; ++t)
            h = (h ^ std::uint64_t(row[t])) * 1099511628211ull;
        return h;
    };
    std::vector<std::uint64_t> drawn;
    for (int k = 0; k < 5; ++k) {
        src.next({ids.data(), {4, d.T}}, {targets.data(), {4, d.T}}, {starts.data(), {4, d.T}});
        for (index_t b = 0; b < 4; ++b)
            drawn.push_back(key(ids.data() + b * d.T));
    }
    auto sorted = [](std::vector<std::uint64_t> v) {
        std::sort(v.begin(), v.end());
        return v;
    };
    std::vector<std::uint64_t> firsts;
    for (index_t r = 0; r < 10; ++r)
        firsts.push_back(key(d.ids.data() + r * d.T));
    BOOST_TEST_REQUIRE(std::set<std::uint64_t>(firsts.begin(), firsts.end()).size() == 10u);
    const std::vector<std::uint64_t> epoch0(drawn.begin(), drawn.begin() + 10), epoch1(drawn.begin() + 10, drawn.end());
    BOOST_TEST(sorted(epoch0) == sorted(firsts));
    BOOST_TEST(sorted(epoch1) == sorted(firsts));
    BOOST_TEST(epoch0 != epoch1); // reshuffled
    src.seek(3);                  // batch 3 again: rows 12..15
    src.next({ids.data(), {4, d.T}}, {targets.data(), {4, d.T}}, {starts.data(), {4, d.T}});
    BOOST_TEST(key(ids.data()) == drawn[12]);
    BOOST_TEST(key(ids.data() + 3 * d.T) == drawn[15]);
}

BOOST_AUTO_TEST_CASE(a_run_paused_at_stop_at_continues_on_the_same_schedule) {
    const auto train_tokens = byte_tokens(20000, 11), val_tokens = byte_tokens(4000, 12);
    temp_dir a("whole"), b("staged");
    model_t whole(3);
    token_windows src_a(train_tokens, 4);
    trainer ta(whole, src_a, val_tokens, small_run(a.path));
    BOOST_TEST((ta.run() == train_outcome::finished));

    { // stage 1: the first 13 steps (not a multiple of eval_every or checkpoint_every)
        model_t first(3);
        token_windows src(train_tokens, 4);
        auto options = small_run(b.path);
        options.stop_at = 13;
        trainer t(first, src, val_tokens, options);
        std::vector<double> lrs;
        t.on_step = [&](const step_report& r) { lrs.push_back(r.lr); };
        BOOST_TEST((t.run() == train_outcome::paused));
        BOOST_TEST(lrs.size() == 13u);
        BOOST_TEST(t.state().history["val_loss"].back()[0].get<long long>() == 13); // validated at the pause
    }
    model_t staged(99);
    BOOST_TEST(finish_from_checkpoint(staged, train_tokens, val_tokens, 4, b.path) == 14); // after the pause
    BOOST_TEST(same_bits(whole, staged)); // the schedule spans max_steps in both stages
}

BOOST_AUTO_TEST_CASE(sigint_saves_a_checkpoint_and_returns) {
    const auto tokens = byte_tokens(8000, 4);
    temp_dir dir("sigint");
    model_t model(1);
    token_windows src(tokens, 5);
    auto options = small_run(dir.path);
    options.checkpoint_every = 0;
    trainer t(model, src, tokens, options);
    t.on_step = [](const step_report& r) {
        if (r.step == 6) std::raise(SIGINT);
    };
    BOOST_TEST((t.run() == train_outcome::interrupted));
    const auto state = nlohmann::json::parse(std::ifstream(dir.path / "checkpoint/trainer_state.json"));
    BOOST_TEST(state.at("step").get<int>() == 6);
    BOOST_TEST(!fs::exists(dir.path / "checkpoint.tmp"));
}

BOOST_AUTO_TEST_CASE(divergence_stops_with_a_clear_error) {
    const auto tokens = byte_tokens(8000, 6);
    model_t model(1);
    model.parameter_entries()[3].value[0] = std::numeric_limits<float>::quiet_NaN();
    token_windows src(tokens, 5);
    trainer t(model, src, tokens, small_run({}));
    try {
        t.run();
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()).find("diverged at step 1") != std::string::npos, e.what());
    }
}

BOOST_AUTO_TEST_CASE(gradient_accumulation_equals_the_full_batch) {
    const auto tokens = byte_tokens(4000, 8);
    model_t full(3), accumulated(3);
    const index_t B = 4, T = 16;
    std::vector<token_t> ids(B * T), targets(B * T);
    token_windows src(tokens, 1);
    src.next({ids.data(), {B, T}}, {targets.data(), {B, T}});
    full.loss(cview<token_t>{ids.data(), {B, T}}, cview<token_t>{targets.data(), {B, T}});
    full.backward();
    for (index_t half = 0; half < 2; ++half) {
        accumulated.loss(cview<token_t>{ids.data() + half * 2 * T, {2, T}},
                         cview<token_t>{targets.data() + half * 2 * T, {2, T}});
        accumulated.backward(0.5);
    }
    for (std::size_t i = 0; i < full.parameter_entries().size(); ++i) {
        const auto& g1 = full.parameter_entries()[i].grad;
        const auto& g2 = accumulated.parameter_entries()[i].grad;
        BOOST_TEST_REQUIRE(
            rel_error(std::vector<float>(g2.begin(), g2.end()), std::vector<float>(g1.begin(), g1.end())) < 1e-5,
            full.parameter_entries()[i].name);
    }
}

// The trainer over a device decoder follows the trainer over tl::decoder on the same batches: losses, gradient norms
// (with clipping), validation (forward only, a padded batch) and the final weights.
BOOST_AUTO_TEST_CASE(device_decoder_trains_as_the_decoder) {
    const auto train_tokens = byte_tokens(20000, 21), val_tokens = byte_tokens(4000, 22);
    const auto options = device_run({});
    model_t cpu(5);
    token_windows src_cpu(train_tokens, 6), src_device(train_tokens, 6);
    auto device = device_model(options, cpu);
    trainer tc(cpu, src_cpu, val_tokens, options);
    trainer td(*device, src_device, val_tokens, options);
    static_assert(std::is_same_v<decltype(td.optimizer()), gpu::device_adamw<gpu::cpu_ops>&>);
    run_record rc, rd;
    record(tc, rc);
    record(td, rd);
    BOOST_TEST((tc.run() == train_outcome::finished));
    BOOST_TEST((td.run() == train_outcome::finished));
    check_close(rd.loss, rc.loss, 1e-5, "loss");
    check_close(rd.grad_norm, rc.grad_norm, 1e-5, "gradient norm");
    check_close(rd.val_loss, rc.val_loss, 1e-5, "validation loss");
    BOOST_TEST(rc.grad_norm.front() > options.clip); // clipping happened
    const double worst = parameter_difference(*device, cpu);
    BOOST_TEST_MESSAGE("device decoder against tl::decoder after " << options.max_steps << " steps: parameters within "
                                                                   << worst);
    BOOST_TEST(worst < 1e-5);

    auto wrong = options; // the device model's shape is fixed
    wrong.seq_len = 16;
    token_windows src(train_tokens, 6);
    trainer tw(*device, src, val_tokens, wrong);
    BOOST_CHECK_EXCEPTION(tw.run(), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("built for batches of 4 x 32 tokens, asked for 4 x 16") != std::string::npos;
    });
}

// device_decoder_options::attention reaches the step's plan: rows trains as products (the same arithmetic through
// other kernels), and fused, which needs bf16 products and a head width of 64 or 128, is refused for the tiny preset
// (width 16) by the plan, naming it.
BOOST_AUTO_TEST_CASE(device_decoder_takes_its_attention_path) {
    const auto train_tokens = byte_tokens(20000, 21), val_tokens = byte_tokens(4000, 22);
    auto options = device_run({});
    options.max_steps = 6, options.warmup_steps = 1, options.eval_every = 0;
    model_t cpu(5);
    run_record by_path[2];
    for (const gpu::attention_path path : {gpu::attention_path::products, gpu::attention_path::rows}) {
        gpu::device_decoder_options d;
        d.batch = options.batch_size, d.time = options.seq_len, d.attention = path;
        device_t device(presets::tiny::value, d);
        device.load_from(cpu);
        token_windows src(train_tokens, 6);
        trainer t(device, src, val_tokens, options);
        record(t, by_path[path == gpu::attention_path::rows]);
        BOOST_TEST((t.run() == train_outcome::finished));
    }
    check_close(by_path[1].loss, by_path[0].loss, 1e-5, "loss, rows against products");
    check_close(by_path[1].grad_norm, by_path[0].grad_norm, 1e-5, "gradient norm, rows against products");
    gpu::device_decoder_options fused;
    fused.batch = options.batch_size, fused.time = options.seq_len, fused.bf16 = true;
    fused.attention = gpu::attention_path::fused;
    BOOST_CHECK_EXCEPTION(device_t refused(presets::tiny::value, fused), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("attention_path::fused") != std::string::npos &&
               std::string(e.what()).find("head width 16") != std::string::npos;
    });
}

// Stop at step 2, then a fresh device model (other weights) continues to 4 from the checkpoint: bit for bit the
// weights of 4 steps in one go.
BOOST_AUTO_TEST_CASE(device_decoder_resumes_bit_identically) {
    const auto train_tokens = byte_tokens(20000, 23), val_tokens = byte_tokens(4000, 24);
    temp_dir a("device_whole"), b("device_staged");
    auto options = device_run(a.path);
    options.max_steps = 4;
    options.warmup_steps = 2;
    options.eval_windows = 4; // one validation batch
    const model_t init(8), other(9);
    auto whole = device_model(options, init);
    token_windows src_a(train_tokens, 7);
    trainer ta(*whole, src_a, val_tokens, options);
    BOOST_TEST((ta.run() == train_outcome::finished));

    options.out_dir = b.path;
    {
        auto first = device_model(options, init);
        token_windows src(train_tokens, 7);
        auto staged = options;
        staged.stop_at = 2;
        trainer t(*first, src, val_tokens, staged);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    auto resumed = device_model(options, other);
    token_windows src_b(train_tokens, 7);
    trainer tb(*resumed, src_b, val_tokens, options);
    BOOST_TEST(tb.restore() == 2);
    BOOST_TEST(tb.optimizer().steps() == 2);
    BOOST_TEST((tb.run() == train_outcome::finished));
    whole->download_parameters();
    resumed->download_parameters();
    for (std::size_t i = 0; i < whole->parameter_entries().size(); ++i) {
        const auto& x = whole->parameter_entries()[i].value;
        const auto& y = resumed->parameter_entries()[i].value;
        BOOST_TEST(std::memcmp(x.data, y.data, std::size_t(x.numel()) * sizeof(float)) == 0,
                   whole->parameter_entries()[i].name);
    }
}

// tests/support/device_training.hpp's check on the CPU executor (test_cuda_kernels runs it on the GPU): on the tiny
// preset windowed, and with 4 experts, a run stopped after step 2 and resumed by a fresh device model with other
// weights has the bits of 4 steps in one go, and gradient checkpointing the bits of a run without.
BOOST_AUTO_TEST_CASE(device_decoder_resumes_and_checkpoints_bit_identically_on_every_shape) {
    temp_dir dir("device_check");
    for (const auto& [name, config] : device_training_models())
        BOOST_TEST_CONTEXT(name) { check_device_training_is_bit_identical<gpu::cpu_ops>(config, dir.path); }
}

// A device run's checkpoint continued by a CPU run, and a CPU run's by a device run: the same files (model and
// AdamW moments by tl's names), so the continued steps' losses are those of a run that never changed device.
BOOST_AUTO_TEST_CASE(device_and_cpu_checkpoints_resume_each_other) {
    const auto train_tokens = byte_tokens(20000, 25), val_tokens = byte_tokens(4000, 26);
    auto options = device_run({});
    options.max_steps = 4;
    options.warmup_steps = 2;
    options.eval_windows = 4; // one validation batch
    const model_t init(10);
    // The reference: 4 steps on the CPU.
    model_t straight(10);
    token_windows src_ref(train_tokens, 9);
    trainer tr(straight, src_ref, val_tokens, options);
    run_record reference;
    record(tr, reference);
    BOOST_TEST((tr.run() == train_outcome::finished));

    // And 4 steps on the device. AdamW's first steps (m / sqrt(v) near +-1 even for tiny gradients) turn f32
    // rounding differences into weight differences of up to 8.4e-5 of a tensor's scale between the devices
    // (measured), so a continued run's weights are compared with those of the device it started on.
    model_t device_straight(0);
    {
        auto d = device_model(options, init);
        token_windows src(train_tokens, 9);
        trainer t(*d, src, val_tokens, options);
        BOOST_TEST((t.run() == train_outcome::finished));
        d->store_into(device_straight);
        BOOST_TEST_MESSAGE("4 steps, device against CPU: parameters within "
                           << parameter_difference(device_straight, straight));
    }
    for (const bool device_first : {true, false}) {
        temp_dir dir(device_first ? "device_then_cpu" : "cpu_then_device");
        options.out_dir = dir.path;
        auto staged = options;
        staged.stop_at = 2;
        token_windows src1(train_tokens, 9), src2(train_tokens, 9);
        auto device = device_model(options, init);
        model_t cpu(10);
        run_record continued;
        if (device_first) {
            trainer t1(*device, src1, val_tokens, staged);
            BOOST_TEST((t1.run() == train_outcome::paused));
            model_t other(11);
            trainer t2(other, src2, val_tokens, options);
            record(t2, continued);
            BOOST_TEST((t2.run() == train_outcome::finished));
            BOOST_TEST(t2.optimizer().steps() == 4);
            const double worst = parameter_difference(other, device_straight);
            BOOST_TEST_MESSAGE("device to CPU: parameters within " << worst << " of the device run's");
            BOOST_TEST(worst < 1e-5);
        } else {
            trainer t1(cpu, src1, val_tokens, staged);
            BOOST_TEST((t1.run() == train_outcome::paused));
            auto resumed = device_model(options, model_t(11));
            trainer t2(*resumed, src2, val_tokens, options);
            record(t2, continued);
            BOOST_TEST((t2.run() == train_outcome::finished));
            const double worst = parameter_difference(*resumed, straight);
            BOOST_TEST_MESSAGE("CPU to device: parameters within " << worst << " of the CPU run's");
            BOOST_TEST(worst < 1e-5);
        }
        const std::vector<double> last_two(reference.loss.begin() + 2, reference.loss.end());
        check_close(continued.loss, last_two, 1e-5, device_first ? "device then CPU" : "CPU then device");
    }
}

BOOST_AUTO_TEST_CASE(hf_checkpoint_round_trip_and_config_mismatch) {
    temp_dir dir("hf");
    decoder<test::qwen2_tied, eigen_cpu> a(11), b(12);
    save_pretrained(a, dir.path / "ckpt", {.bos = 1, .eos = 2});
    const auto config = nlohmann::json::parse(std::ifstream(dir.path / "ckpt/config.json"));
    BOOST_TEST(config.at("architectures")[0].get<std::string>() == "Qwen2ForCausalLM");
    BOOST_TEST(config.at("eos_token_id").get<int>() == 2);
    const safetensors_reader st(dir.path / "ckpt/model.safetensors");
    BOOST_TEST(!st.contains("lm_head.weight")); // tied
    load_pretrained(b, dir.path / "ckpt");
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        const auto& x = a.parameter_entries()[i].value;
        BOOST_TEST_REQUIRE(std::memcmp(x.data, b.parameter_entries()[i].value.data, std::size_t(x.numel()) * 4) == 0);
    }
    // transformers 5 nests rope_theta in rope_parameters.
    auto nested = config;
    nested.erase("rope_theta");
    nested["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", test::qwen2_tied::value.rope_theta}};
    std::ofstream(dir.path / "ckpt/config.json") << nested.dump();
    load_pretrained(b, dir.path / "ckpt");
    nested["rope_parameters"]["rope_theta"] = 10000.0;
    std::ofstream(dir.path / "ckpt/config.json") << nested.dump();
    BOOST_CHECK_THROW(load_pretrained(b, dir.path / "ckpt"), tl::error);
    std::ofstream(dir.path / "ckpt/config.json") << config.dump();

    decoder<test::llama_gqa, eigen_cpu> other(1);
    try {
        load_pretrained(other, dir.path / "ckpt");
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        const std::string msg = e.what();
        BOOST_TEST(msg.find("rope_theta") != std::string::npos, msg);
        BOOST_TEST(msg.find("tie_word_embeddings") != std::string::npos, msg);
        BOOST_TEST(msg.find("q/k/v biases") != std::string::npos, msg);
    }
}

// Writes checkpoints for tests/reference/check_hf_checkpoint.py (ctest -L torch): for each architecture, a
// model trained for a few steps, saved with save_pretrained, plus input ids and tinylm's logits.
namespace {
template <class Config>
void export_one(const fs::path& root, const std::string& name) {
    decoder<Config, eigen_cpu> model(21);
    const auto tokens = byte_tokens(4000, 9);
    std::vector<token_t> small(tokens.size());
    std::transform(tokens.begin(), tokens.end(), small.begin(), [](token_t t) { return t % Config::value.vocab_size; });
    token_windows src(small, 2);
    trainer t(model, src, small,
              {.batch_size = 2,
               .seq_len = 12,
               .max_steps = 3,
               .peak_lr = 1e-2,
               .warmup_steps = 0,
               .eval_every = 0,
               .checkpoint_every = 0});
    t.run();
    save_pretrained(model, root / name, {.bos = 1, .eos = 2});
    owned<token_t> ids({2, 12});
    counter_rng rng(3);
    for (auto& id : ids.data)
        id = token_t(rng.below(Config::value.vocab_size));
    owned<float> logits({2, 12, Config::value.vocab_size});
    model.logits(ids, logits);
    owned<std::int64_t> ids64({2, 12});
    std::copy(ids.data.begin(), ids.data.end(), ids64.data.begin());
    safetensors_writer w;
    w.add<std::int64_t>("input_ids", ids64.cv());
    w.add<float>("logits", logits.cv());
    w.save(root / name / "expected.safetensors");
}
} // namespace

// A kill at each step of the checkpoint swap (detail::swap_in_hook throws there, leaving the folders as a kill
// would): resume finds the newest complete checkpoint (checkpoint.old when checkpoint is missing), the next save
// keeps that only complete copy, and the finished run equals an uninterrupted one bit for bit.
namespace {
std::string kill_at;
int saves_seen = 0;
void kill_on_second_save(const char* step) {
    if (std::string(step) == "recover") ++saves_seen;
    if (saves_seen == 2 && kill_at == step) throw std::runtime_error(std::string("killed at ") + step);
}
} // namespace

BOOST_AUTO_TEST_CASE(kill_at_every_step_of_the_checkpoint_swap) {
    const auto train_tokens = byte_tokens(20000, 1), val_tokens = byte_tokens(4000, 2);
    temp_dir ref_dir("swap_ref");
    model_t reference(7);
    token_windows src_ref(train_tokens, 3);
    trainer tr(reference, src_ref, val_tokens, small_run(ref_dir.path));
    BOOST_TEST((tr.run() == train_outcome::finished));

    // The second save is step 20's; the first complete checkpoint is step 10's.
    const std::pair<const char*, long long> cases[] = {{"recover", 11},
                                                       {"remove old", 11},
                                                       {"move current to old", 11},
                                                       {"move staged to current", 11},
                                                       {"remove old again", 21}};
    for (const auto& [step, resume_at] : cases) {
        BOOST_TEST_CONTEXT("killed before '" << step << "'") {
            temp_dir d("swap");
            {
                model_t m(7);
                token_windows src(train_tokens, 3);
                trainer t(m, src, val_tokens, small_run(d.path));
                kill_at = step;
                saves_seen = 0;
                detail::swap_in_hook = kill_on_second_save;
                BOOST_CHECK_THROW(t.run(), std::runtime_error);
                detail::swap_in_hook = nullptr;
            }
            if (std::string(step) == "move staged to current") { // the state the issue found: no checkpoint/
                BOOST_TEST(!fs::exists(d.path / "checkpoint"));
                BOOST_TEST(fs::exists(d.path / "checkpoint.old/trainer_state.json"));
                BOOST_TEST(fs::exists(d.path / "checkpoint.tmp"));
            }
            model_t resumed(99);
            BOOST_TEST(finish_from_checkpoint(resumed, train_tokens, val_tokens, 3, d.path) == resume_at);
            BOOST_TEST(same_bits(reference, resumed));
            BOOST_TEST(fs::exists(d.path / "checkpoint/trainer_state.json"));
            BOOST_TEST(!fs::exists(d.path / "checkpoint.old"));
            BOOST_TEST(!fs::exists(d.path / "checkpoint.tmp"));
        }
    }
    detail::swap_in_hook = nullptr;
}

// A partial checkpoint.tmp left by a failed save (disk full) neither blocks nor misleads the next run.
BOOST_AUTO_TEST_CASE(leftover_staging_folder_does_not_block_the_next_run) {
    const auto train_tokens = byte_tokens(20000, 1), val_tokens = byte_tokens(4000, 2);
    temp_dir d("leftover");
    fs::create_directories(d.path / "checkpoint.tmp");
    std::ofstream(d.path / "checkpoint.tmp/trainer_state.json") << "{\"step\": 2";
    model_t m(7);
    BOOST_TEST(finish_from_checkpoint(m, train_tokens, val_tokens, 3, d.path) == 1);
    BOOST_TEST(fs::exists(d.path / "checkpoint/trainer_state.json"));
    BOOST_TEST(!fs::exists(d.path / "checkpoint.tmp"));
}

BOOST_AUTO_TEST_CASE(export_for_transformers, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_HF_EXPORT_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_HF_EXPORT_DIR");
    export_one<test::llama_gqa>(dir, "llama_gqa");
    export_one<test::mistral_window>(dir, "mistral_window");
    export_one<test::qwen2_tied>(dir, "qwen2_tied");
    export_one<test::qwen3_qknorm>(dir, "qwen3_qknorm");
}

BOOST_AUTO_TEST_SUITE_END()
