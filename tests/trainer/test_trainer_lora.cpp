// LoRA and QLoRA on a device-resident decoder (gpu::device_decoder<Ex, Adapter>, on the CPU executor gpu::cpu_ops):
// tl::trainer over it against tl::trainer over tl::decoder with the same adapter (LoRA dropout on: the same masks
// from the same training-forward count): every step's loss and gradient norm, the validations, the adapter after the
// run; a resume from its checkpoint bit for bit; its checkpoint (the model folder, the PEFT adapter, the adapter's
// moments only) resumed by the CPU model; QLoRA's NF4 base loaded from the host model and through a checkpoint.
// Suite qlora_checkpoint: tl::decoder's QLoRA resume bit for bit against the uninterrupted run (nf4_base.safetensors).
// (In test_trainer's executable: its trainer and device model instantiations are those this file adds to.)
#include "../support/random.hpp"

#include <tinylm/cuda/device_decoder.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/train/trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

using namespace tl;

namespace device_lora_test { // a named namespace: the unity build puts this file beside test_trainer.cpp

struct lora_dropout { // every projection, dropout on: the device must draw tl::decoder's masks
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0.1f, .targets = lora_all};
};
struct qlora_qv { // NF4 base, adapters on q and v only
    static constexpr lora_config value{
        .rank = 2, .alpha = 4, .dropout = 0.05f, .targets = lora_q | lora_v, .quantized_base = true};
};
template <class A>
using host_t = decoder<presets::tiny, default_backend, A>;
template <class A>
using device_t = gpu::device_decoder<gpu::cpu_ops, A>;

struct scratch_dir {
    fs::path path;
    explicit scratch_dir(const std::string& name)
        : path(fs::temp_directory_path() / ("tinylm_device_lora_" + name + "_" + std::to_string(::getpid()))) {
        fs::remove_all(path);
    }
    ~scratch_dir() { fs::remove_all(path); }
};

// Text-like bytes: a few repeating words, so the adapter has something to learn.
std::vector<token_t> words(std::size_t n, std::uint64_t seed) {
    const char* list[] = {"мир ", "война ", "и ", "дух ", "сила ", "мысль "};
    counter_rng rng(seed);
    std::vector<token_t> t;
    while (t.size() < n)
        for (const char* c = list[rng.below(6)]; *c; ++c)
            t.push_back(static_cast<unsigned char>(*c));
    t.resize(n);
    return t;
}

// 4 x 32 tokens, two micro-batches a step, clipping at 1, validation every 2 steps over two batches (the second
// padded, 2 of 4 rows).
trainer_options lora_run(const fs::path& out, long long steps) {
    return {.batch_size = 4,
            .seq_len = 32,
            .grad_accum = 2,
            .max_steps = steps,
            .peak_lr = 1e-2,
            .min_lr = 1e-3,
            .warmup_steps = 2,
            .decay = decay_kind::cosine,
            .adamw = {},
            .clip = 1.0,
            .eval_every = 2,
            .eval_windows = 6,
            .checkpoint_every = 0,
            .out_dir = out,
            .resume = true,
            .special = {}};
}

template <class A>
std::unique_ptr<device_t<A>> device_from(const host_t<A>& init, const trainer_options& o) {
    gpu::device_decoder_options d;
    d.batch = o.batch_size, d.time = o.seq_len, d.logits_rows = 48; // head chunks of 48, 48 and 32 tokens
    auto m = std::make_unique<device_t<A>>(presets::tiny::value, d);
    m->load_from(init);
    return m;
}

// N(0, scale^2) values (an adapter that has trained: B != 0).
void randomize(tensor_view<float> t, double scale, std::uint64_t seed) {
    counter_rng rng(seed, 3);
    for (float& v : t)
        v = float(scale * rng.normal());
}

struct losses {
    std::vector<double> loss, grad_norm, val_loss;
};
template <class Trainer>
void record(Trainer& t, losses& r) {
    t.on_step = [&r](const step_report& s) {
        r.loss.push_back(s.loss);
        r.grad_norm.push_back(s.grad_norm);
    };
    t.on_eval = [&r](long long, double v) { r.val_loss.push_back(v); };
}
// The largest relative difference of two series (checked equal in length).
double worst_relative(const std::vector<double>& device, const std::vector<double>& cpu, const char* what) {
    BOOST_TEST_REQUIRE(device.size() == cpu.size(), what);
    double worst = 0;
    for (std::size_t i = 0; i < cpu.size(); ++i)
        worst = std::max(worst, std::abs(device[i] - cpu[i]) / std::max(std::abs(cpu[i]), 1e-30));
    return worst;
}
// The largest difference of an adapter tensor's element, relative to that tensor's largest element (B starts at
// zero, so an absolute bound would say little).
template <class M1, class M2>
double adapter_difference(const M1& a, const M2& b) {
    double worst = 0;
    std::size_t compared = 0;
    for (const parameter_entry& x : a.parameter_entries()) {
        if (x.kind != param_kind::adapter) continue;
        for (const parameter_entry& y : b.parameter_entries())
            if (y.name == x.name) {
                double err = 0, scale = 0;
                for (index_t j = 0; j < x.value.numel(); ++j) {
                    err = std::max(err, std::abs(double(x.value[j]) - double(y.value[j])));
                    scale = std::max(scale, std::abs(double(y.value[j])));
                }
                worst = std::max(worst, err / std::max(scale, 1e-30));
                ++compared;
            }
    }
    BOOST_TEST(compared > 0);
    return worst;
}
std::set<std::string> tensor_names(const fs::path& file) {
    std::set<std::string> out;
    const safetensors_reader r(file);
    for (const auto& entry : r.tensors())
        out.insert(entry.first);
    return out;
}

// The NF4 base of two models: every byte (codes, 8-bit scales, second-level scales, offset) the same.
template <class M1, class M2>
void expect_same_nf4(const M1& a, const M2& b) {
    BOOST_TEST_REQUIRE(a.quantized_entries().size() == b.quantized_entries().size());
    for (const auto& q : a.quantized_entries()) {
        const nf4_tensor &x = a.quantized_weight(q.layer, q.target), &y = b.quantized_weight(q.layer, q.target);
        BOOST_TEST((x.codes == y.codes && x.qabsmax == y.qabsmax && x.absmax2 == y.absmax2 &&
                    std::memcmp(&x.offset, &y.offset, sizeof(float)) == 0),
                   q.name);
    }
}
// Every trainable entry of two models, bit for bit.
template <class M1, class M2>
void expect_same_adapters(const M1& a, const M2& b) {
    std::size_t compared = 0;
    for (std::size_t i = 0; i < a.parameter_entries().size(); ++i) {
        const parameter_entry &x = a.parameter_entries()[i], &y = b.parameter_entries()[i];
        if (x.kind != param_kind::adapter) continue;
        BOOST_TEST(std::memcmp(x.value.data, y.value.data, std::size_t(x.value.numel()) * sizeof(float)) == 0, x.name);
        ++compared;
    }
    BOOST_TEST(compared > 0);
}
} // namespace device_lora_test

BOOST_AUTO_TEST_SUITE(device_lora)

using namespace device_lora_test;

// 6 steps with LoRA dropout 0.1 on every projection: the device run's losses, gradient norms and validations are the
// CPU run's, the adapters after it too, the dropout count follows the training forwards (2 a step), and the base
// stays as loaded.
BOOST_AUTO_TEST_CASE(lora_trains_as_the_decoder) {
    const auto train_tokens = words(20000, 31), val_tokens = words(4000, 32);
    const auto options = lora_run({}, 6);
    host_t<lora_dropout> cpu(5);
    // Start from a trained-looking adapter (B != 0) so that every gradient, A's too, is there from the first step.
    for (const parameter_entry& e : cpu.parameter_entries())
        if (e.kind == param_kind::adapter) randomize(e.value, 0.05, 40 + std::uint64_t(e.value.numel()));
    auto device = device_from(cpu, options);
    BOOST_TEST(device->parameter_entries().size() == cpu.parameter_entries().size());
    for (std::size_t i = 0; i < cpu.parameter_entries().size(); ++i) { // the same mirror: names, shapes, kinds
        const parameter_entry &c = cpu.parameter_entries()[i], &d = device->parameter_entries()[i];
        BOOST_TEST(c.name == d.name);
        BOOST_TEST((c.value.shape == d.value.shape), c.name);
        BOOST_TEST((c.kind == d.kind && c.trainable == d.trainable), c.name);
    }
    token_windows src_cpu(train_tokens, 6), src_device(train_tokens, 6);
    trainer tc(cpu, src_cpu, val_tokens, options);
    trainer td(*device, src_device, val_tokens, options);
    static_assert(std::is_same_v<decltype(td.optimizer()), gpu::device_adamw<gpu::cpu_ops, lora_dropout>&>);
    losses rc, rd;
    record(tc, rc);
    record(td, rd);
    BOOST_TEST((tc.run() == train_outcome::finished));
    BOOST_TEST((td.run() == train_outcome::finished));
    const double loss = worst_relative(rd.loss, rc.loss, "loss"),
                 norm = worst_relative(rd.grad_norm, rc.grad_norm, "gradient norm"),
                 val = worst_relative(rd.val_loss, rc.val_loss, "validation loss");
    BOOST_TEST_MESSAGE("LoRA with dropout, device against CPU, relative: losses " << loss << ", gradient norms " << norm
                                                                                  << ", validations " << val);
    BOOST_TEST(loss < 1e-5);
    BOOST_TEST(norm < 1e-5);
    BOOST_TEST(val < 1e-5);
    BOOST_TEST(rc.grad_norm.front() > options.clip); // clipping happened
    BOOST_TEST(rc.loss.back() < rc.loss.front());    // the adapter learned
    BOOST_TEST(device->dropout_calls() == cpu.dropout_calls());
    BOOST_TEST(cpu.dropout_calls() == 12u); // 6 steps of 2 micro-batches; the validations draw none

    host_t<lora_dropout> back(77); // other weights everywhere: store_into brings the adapter, the base and the count
    device->store_into(back);
    const double adapters = adapter_difference(back, cpu);
    BOOST_TEST_MESSAGE("adapters after 6 steps within " << adapters << " of each tensor's largest element");
    BOOST_TEST(adapters < 3e-5); // AdamW's first steps magnify f32 rounding (test_trainer.cpp measured 8.4e-5)
    BOOST_TEST(back.dropout_calls() == 12u);
    BOOST_TEST(back.dropout_seed() == cpu.dropout_seed());
    for (std::size_t i = 0; i < cpu.parameter_entries().size(); ++i) {
        const parameter_entry &c = cpu.parameter_entries()[i], &b = back.parameter_entries()[i];
        if (c.kind != param_kind::adapter) // the frozen base, bit for bit
            BOOST_TEST(std::memcmp(c.value.data, b.value.data, std::size_t(c.value.numel()) * sizeof(float)) == 0,
                       c.name);
    }
}

// Stop at step 2, then a fresh device model (other weights, another dropout key) continues to 4 from the checkpoint:
// bit for bit the adapter and dropout count of 4 steps in one go. The checkpoint holds the files a CPU run's holds.
BOOST_AUTO_TEST_CASE(lora_resumes_bit_identically_and_writes_the_cpu_files) {
    const auto train_tokens = words(20000, 33), val_tokens = words(4000, 34);
    scratch_dir a("whole"), b("staged"), c("cpu");
    auto options = lora_run(a.path, 4);
    const host_t<lora_dropout> init(8), other(9);
    auto whole = device_from(init, options);
    token_windows src_a(train_tokens, 7);
    trainer ta(*whole, src_a, val_tokens, options);
    BOOST_TEST((ta.run() == train_outcome::finished));

    auto staged = options;
    staged.out_dir = b.path, staged.stop_at = 2;
    {
        auto first = device_from(init, staged);
        token_windows src(train_tokens, 7);
        trainer t(*first, src, val_tokens, staged);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    { // the same 2 steps on the CPU: the same files and tensor names
        host_t<lora_dropout> cpu(8);
        auto on_cpu = staged;
        on_cpu.out_dir = c.path;
        token_windows src(train_tokens, 7);
        trainer t(cpu, src, val_tokens, on_cpu);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    const fs::path device_ckpt = b.path / "checkpoint", cpu_ckpt = c.path / "checkpoint";
    for (const char* file : {"adapter_config.json", "adapter_model.safetensors", "model.safetensors",
                             "optimizer.safetensors", "trainer_state.json", "config.json"}) {
        BOOST_TEST(fs::exists(device_ckpt / file), file);
        BOOST_TEST(fs::exists(cpu_ckpt / file), file);
    }
    for (const char* file : {"adapter_model.safetensors", "model.safetensors", "optimizer.safetensors"})
        BOOST_TEST((tensor_names(device_ckpt / file) == tensor_names(cpu_ckpt / file)), file);
    for (const std::string& name : tensor_names(device_ckpt / "optimizer.safetensors")) // the adapter's moments only
        BOOST_TEST(name.find(".lora_") != std::string::npos, name);

    auto resumed = device_from(other, options);
    resumed->set_dropout_seed(12345); // the checkpoint's key wins
    options.out_dir = b.path;
    token_windows src_b(train_tokens, 7);
    trainer tb(*resumed, src_b, val_tokens, options);
    BOOST_TEST(tb.restore() == 2);
    BOOST_TEST(tb.optimizer().steps() == 2);
    BOOST_TEST(resumed->dropout_calls() == 4u);
    BOOST_TEST((tb.run() == train_outcome::finished));
    whole->download_parameters();
    resumed->download_parameters();
    BOOST_TEST(resumed->dropout_calls() == whole->dropout_calls());
    for (std::size_t i = 0; i < whole->parameter_entries().size(); ++i) {
        const auto& x = whole->parameter_entries()[i].value;
        const auto& y = resumed->parameter_entries()[i].value;
        BOOST_TEST(std::memcmp(x.data, y.data, std::size_t(x.numel()) * sizeof(float)) == 0,
                   whole->parameter_entries()[i].name);
    }
}

// A device run's checkpoint continued by a CPU run: its last steps' losses are those of a run that never left the
// CPU, its adapter that of the device run that went on.
BOOST_AUTO_TEST_CASE(lora_device_checkpoint_resumed_by_the_cpu_model) {
    const auto train_tokens = words(20000, 35), val_tokens = words(4000, 36);
    scratch_dir dir("device_then_cpu");
    auto options = lora_run({}, 4);
    host_t<lora_dropout> straight(10);
    losses reference;
    {
        token_windows src(train_tokens, 9);
        trainer t(straight, src, val_tokens, options);
        record(t, reference);
        BOOST_TEST((t.run() == train_outcome::finished));
    }
    const host_t<lora_dropout> init(10);
    auto device_straight = device_from(init, options);
    {
        token_windows src(train_tokens, 9);
        trainer t(*device_straight, src, val_tokens, options);
        BOOST_TEST((t.run() == train_outcome::finished));
        device_straight->download_parameters();
    }
    options.out_dir = dir.path;
    auto staged = options;
    staged.stop_at = 2;
    {
        auto device = device_from(init, options);
        token_windows src(train_tokens, 9);
        trainer t(*device, src, val_tokens, staged);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    host_t<lora_dropout> cpu(11); // other weights and dropout key: all come from the checkpoint
    token_windows src(train_tokens, 9);
    trainer t(cpu, src, val_tokens, options);
    losses continued;
    record(t, continued);
    BOOST_TEST((t.run() == train_outcome::finished));
    BOOST_TEST(t.optimizer().steps() == 4);
    BOOST_TEST(cpu.dropout_calls() == 8u);
    const std::vector<double> last_two(reference.loss.begin() + 2, reference.loss.end());
    const double loss = worst_relative(continued.loss, last_two, "device then CPU");
    const double adapters = adapter_difference(cpu, *device_straight);
    BOOST_TEST_MESSAGE("device to CPU: losses within " << loss << " (relative) of the CPU run's, adapters within "
                                                       << adapters << " of the device run's");
    BOOST_TEST(loss < 1e-5);
    BOOST_TEST(adapters < 3e-5);
}

// QLoRA: the NF4 base comes from the host model (its bytes, not a second quantisation), and 2 steps match the CPU
// run's. Its checkpoint is the CPU's (the base dequantised in model.safetensors, its bytes in nf4_base.safetensors):
// read back from either run's checkpoint, the NF4 base is the original's byte for byte; a CPU model resumed from
// the CPU run's checkpoint ends bit for bit as the uninterrupted CPU run, one resumed from the device run's within
// rounding of it; a device model resumed from the device run's checkpoint ends bit for bit as the uninterrupted
// device run.
BOOST_AUTO_TEST_CASE(qlora_trains_as_the_decoder_and_resumes_bit_identically) {
    const auto train_tokens = words(20000, 37), val_tokens = words(4000, 38);
    scratch_dir on_device("qlora_device"), on_cpu("qlora_cpu"), device_copy("qlora_device_copy"),
        whole_cpu_dir("qlora_whole_cpu"), whole_device_dir("qlora_whole_device");
    auto options = lora_run({}, 4);
    options.stop_at = 2;
    const auto init = [] { // the same host model each call: seed 12, a trained-looking adapter
        auto h = std::make_unique<host_t<qlora_qv>>(12);
        for (const parameter_entry& e : h->parameter_entries())
            if (e.kind == param_kind::adapter) randomize(e.value, 0.05, 50 + std::uint64_t(e.value.numel()));
        return h;
    };
    const auto cpu_ptr = init();
    host_t<qlora_qv>& cpu = *cpu_ptr;
    auto device = device_from(cpu, options);
    BOOST_TEST(device->quantized_entries().size() == cpu.quantized_entries().size());
    for (const auto& q : cpu.quantized_entries()) {
        const nf4_tensor &h = cpu.quantized_weight(q.layer, q.target), &d = device->quantized_weight(q.layer, q.target);
        BOOST_TEST((h.codes == d.codes && h.qabsmax == d.qabsmax && h.absmax2 == d.absmax2 && h.offset == d.offset),
                   q.name);
    }
    losses first_cpu, first_device, continued_cpu, continued_device, whole_cpu, whole_device, resumed_device;
    for (const bool device_first : {false, true}) {
        auto staged = options;
        staged.out_dir = device_first ? on_device.path : on_cpu.path;
        token_windows src(train_tokens, 4);
        if (device_first) {
            trainer t(*device, src, val_tokens, staged);
            record(t, first_device);
            BOOST_TEST((t.run() == train_outcome::paused));
        } else {
            trainer t(cpu, src, val_tokens, staged);
            record(t, first_cpu);
            BOOST_TEST((t.run() == train_outcome::paused));
        }
    }
    const double loss = worst_relative(first_device.loss, first_cpu.loss, "QLoRA loss"),
                 norm = worst_relative(first_device.grad_norm, first_cpu.grad_norm, "QLoRA gradient norm");
    BOOST_TEST_MESSAGE("QLoRA, device against CPU, relative: losses " << loss << ", gradient norms " << norm);
    BOOST_TEST(loss < 1e-5);
    BOOST_TEST(norm < 1e-5);
    fs::copy(on_device.path, device_copy.path, fs::copy_options::recursive); // the CPU continuation overwrites it

    auto whole = options; // 4 steps in one go on either model
    whole.stop_at = 0;
    const auto whole_cpu_model = init();
    const auto whole_device_model = device_from(*init(), options);
    for (const bool on_the_device : {false, true}) {
        whole.out_dir = on_the_device ? whole_device_dir.path : whole_cpu_dir.path;
        token_windows src(train_tokens, 4);
        if (on_the_device) {
            trainer t(*whole_device_model, src, val_tokens, whole);
            record(t, whole_device);
            BOOST_TEST((t.run() == train_outcome::finished));
        } else {
            trainer t(*whole_cpu_model, src, val_tokens, whole);
            record(t, whole_cpu);
            BOOST_TEST((t.run() == train_outcome::finished));
        }
    }

    host_t<qlora_qv> from_cpu(13), from_device(14);
    for (const bool device_first : {false, true}) {
        auto rest = options;
        rest.stop_at = 0, rest.out_dir = device_first ? on_device.path : on_cpu.path;
        token_windows src(train_tokens, 4);
        trainer t(device_first ? from_device : from_cpu, src, val_tokens, rest);
        record(t, device_first ? continued_device : continued_cpu);
        BOOST_TEST((t.run() == train_outcome::finished));
    }
    expect_same_nf4(from_cpu, cpu); // the base read back from either checkpoint: the original NF4 bytes
    expect_same_nf4(from_device, cpu);
    const std::vector<double> last_two(whole_cpu.loss.begin() + 2, whole_cpu.loss.end());
    BOOST_TEST_REQUIRE(continued_cpu.loss.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i) // CPU, stopped and resumed: the uninterrupted CPU run bit for bit
        BOOST_TEST(std::memcmp(&continued_cpu.loss[i], &last_two[i], sizeof(double)) == 0, "loss of step " << i + 3);
    expect_same_adapters(from_cpu, *whole_cpu_model);
    const double after = worst_relative(continued_device.loss, last_two, "QLoRA device then CPU");
    const double adapters = adapter_difference(from_device, *whole_cpu_model);
    BOOST_TEST_MESSAGE("QLoRA device to CPU: losses within " << after << ", adapters within " << adapters
                                                             << " of the uninterrupted CPU run");
    BOOST_TEST(after < 1e-5);
    BOOST_TEST(adapters < 3e-5);

    // The device model, stopped and resumed from its own checkpoint: the uninterrupted device run bit for bit.
    const auto resumed = device_from(host_t<qlora_qv>(15), options);
    {
        auto rest = options;
        rest.stop_at = 0, rest.out_dir = device_copy.path;
        token_windows src(train_tokens, 4);
        trainer t(*resumed, src, val_tokens, rest);
        record(t, resumed_device);
        BOOST_TEST((t.run() == train_outcome::finished));
    }
    expect_same_nf4(*resumed, cpu);
    BOOST_TEST_REQUIRE(resumed_device.loss.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i)
        BOOST_TEST(std::memcmp(&resumed_device.loss[i], &whole_device.loss[i + 2], sizeof(double)) == 0,
                   "device loss of step " << i + 3);
    whole_device_model->download_parameters();
    resumed->download_parameters();
    BOOST_TEST(resumed->dropout_calls() == whole_device_model->dropout_calls());
    for (std::size_t i = 0; i < whole_device_model->parameter_entries().size(); ++i) {
        const auto& x = whole_device_model->parameter_entries()[i].value;
        const auto& y = resumed->parameter_entries()[i].value;
        BOOST_TEST(std::memcmp(x.data, y.data, std::size_t(x.numel()) * sizeof(float)) == 0,
                   whole_device_model->parameter_entries()[i].name);
    }
}

BOOST_AUTO_TEST_SUITE_END()

// tl::decoder's QLoRA checkpoint: nf4_base.safetensors (train/checkpoint_nf4.hpp) makes a resume bit-identical.
BOOST_AUTO_TEST_SUITE(qlora_checkpoint)

using namespace device_lora_test;

// The checkpoint as an older tinylm wrote it: no nf4_base.safetensors, and no checksum of it.
void drop_nf4_base(const fs::path& ckpt) {
    fs::remove(ckpt / nf4_base_file);
    nlohmann::json j = nlohmann::json::parse(std::ifstream(ckpt / "trainer_state.json"));
    j["checksums"].erase(nf4_base_file);
    std::ofstream(ckpt / "trainer_state.json") << j.dump(2);
}

// 4 steps in one go against 2 steps, a stop, and 2 more by a fresh model (other weights, so another NF4 base and
// adapter init): the last 2 losses, the adapters and the NF4 bytes, bit for bit. An older checkpoint (no
// nf4_base.safetensors) still resumes, from its base quantised again: other scale bytes, what the file is for.
BOOST_AUTO_TEST_CASE(qlora_resume_is_bit_identical_to_the_uninterrupted_run) {
    const auto train_tokens = words(20000, 41), val_tokens = words(4000, 42);
    scratch_dir whole_dir("qlora_whole"), staged_dir("qlora_staged"), older_dir("qlora_older");
    const auto options = lora_run(whole_dir.path, 4);
    host_t<qlora_qv> whole(21);
    losses all;
    {
        token_windows src(train_tokens, 5);
        trainer t(whole, src, val_tokens, options);
        record(t, all);
        BOOST_TEST((t.run() == train_outcome::finished));
    }
    auto staged = options;
    staged.out_dir = staged_dir.path, staged.stop_at = 2;
    {
        host_t<qlora_qv> first(21);
        token_windows src(train_tokens, 5);
        trainer t(first, src, val_tokens, staged);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    const fs::path ckpt = staged_dir.path / "checkpoint";
    BOOST_TEST(fs::exists(ckpt / nf4_base_file));
    fs::create_directories(older_dir.path);
    fs::copy(ckpt, older_dir.path / "checkpoint", fs::copy_options::recursive);
    drop_nf4_base(older_dir.path / "checkpoint");

    auto rest = options;
    rest.out_dir = staged_dir.path;
    host_t<qlora_qv> resumed(22);
    losses last;
    {
        token_windows src(train_tokens, 5);
        trainer t(resumed, src, val_tokens, rest);
        record(t, last);
        BOOST_TEST((t.run() == train_outcome::finished));
    }
    expect_same_nf4(resumed, whole);
    expect_same_adapters(resumed, whole);
    BOOST_TEST_REQUIRE(last.loss.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i)
        BOOST_TEST(std::memcmp(&last.loss[i], &all.loss[i + 2], sizeof(double)) == 0, "loss of step " << i + 3);

    host_t<qlora_qv> older(23);
    {
        auto from_older = options;
        from_older.out_dir = older_dir.path;
        token_windows src(train_tokens, 5);
        trainer t(older, src, val_tokens, from_older);
        BOOST_TEST(t.restore() == 2);
    }
    std::size_t scale_bytes_differ = 0;
    for (const auto& q : whole.quantized_entries()) {
        const nf4_tensor &x = whole.quantized_weight(q.layer, q.target), &y = older.quantized_weight(q.layer, q.target);
        BOOST_TEST((x.codes == y.codes), q.name); // the codes come back; the scales need not
        scale_bytes_differ += x.qabsmax != y.qabsmax || x.absmax2 != y.absmax2 || x.offset != y.offset;
    }
    BOOST_TEST_MESSAGE("an older QLoRA checkpoint: " << scale_bytes_differ << " of " << whole.quantized_entries().size()
                                                     << " NF4 projections come back with other scale bytes");
    BOOST_TEST(scale_bytes_differ > 0u);
}

// nf4_base.safetensors from another model than model.safetensors' base (its checksum dropped, as if edited
// together): refused, naming the tensor, rather than resumed from a stale NF4 copy.
BOOST_AUTO_TEST_CASE(an_nf4_base_that_does_not_match_the_model_file_is_refused) {
    const auto train_tokens = words(20000, 43), val_tokens = words(4000, 44);
    scratch_dir dir("qlora_stale");
    auto options = lora_run(dir.path, 4);
    options.stop_at = 1;
    {
        host_t<qlora_qv> first(24);
        token_windows src(train_tokens, 5);
        trainer t(first, src, val_tokens, options);
        BOOST_TEST((t.run() == train_outcome::paused));
    }
    const fs::path ckpt = dir.path / "checkpoint";
    drop_nf4_base(ckpt);
    write_nf4_base(host_t<qlora_qv>(25), ckpt);
    host_t<qlora_qv> resumed(26);
    token_windows src(train_tokens, 5);
    trainer t(resumed, src, val_tokens, options);
    BOOST_CHECK_EXCEPTION(t.restore(), tl::error, [](const tl::error& e) {
        const std::string m = e.what();
        BOOST_TEST_MESSAGE(m);
        return m.find("does not dequantise") != std::string::npos && m.find("q_proj.weight") != std::string::npos;
    });
}

BOOST_AUTO_TEST_SUITE_END()
