// LoRA (decoder<Config, Backend, Adapter>) and the PEFT adapter format (io/peft.hpp):
//  - parity with peft on the llama_gqa_lora fixture (tests/reference/make_fixtures.py): logits, loss, every
//    LoRA gradient, one AdamW step, on every backend;
//  - finite differences of the LoRA path (with dropout) on the reference backend;
//  - merge/unmerge, frozen base, save_adapter/load_adapter, training checkpoints with resume;
//  - an export for the `torch` test (peft.PeftModel.from_pretrained reproduces tinylm's logits).
#include "../model/fixture_configs.hpp"
#include "../support/parity_fixture.hpp"
#include "../support/random.hpp"

#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/train/checkpoint.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>

using namespace tl;
using namespace tl::test;

namespace {

namespace fs = std::filesystem;

struct lora_r4 { // the fixture's adapter: r = 4, alpha = 8, all seven projections
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0, .targets = lora_all};
};
struct lora_r4_dropout {
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0.25f, .targets = lora_all};
};
struct lora_r2_qv {
    static constexpr lora_config value{.rank = 2, .alpha = 4, .dropout = 0, .targets = lora_q | lora_v};
};

constexpr double tolerance = 1e-4;

fs::path fixture_path() { return tl_test::fixture_path("llama_gqa_lora"); }

fs::path temp_dir(const std::string& name) {
    const fs::path p = fs::temp_directory_path() / ("tinylm_lora_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
}

struct batch {
    owned<token_t> ids, targets;
};

batch fixture_batch(const safetensors_reader& fx) {
    tl_test::fixture_batch f = tl_test::read_fixture_batch(fx);
    batch b{owned<token_t>(f.shape), owned<token_t>(f.shape)};
    b.ids.data = std::move(f.ids), b.targets.data = std::move(f.targets);
    return b;
}

batch random_batch(index_t n, index_t t_len, std::uint64_t seed) {
    batch b{owned<token_t>({n, t_len}), owned<token_t>({n, t_len})};
    counter_rng rng(seed, 3);
    for (auto& v : b.ids.data)
        v = token_t(rng.below(64));
    for (auto& v : b.targets.data)
        v = token_t(rng.below(64));
    b.targets.data[1] = ignore_index;
    return b;
}

template <class Model>
void load_fixture(Model& model, const safetensors_reader& fx) {
    for (const parameter_entry& e : model.parameter_entries())
        fx.read((e.kind == param_kind::adapter ? "lora." + std::string(peft_prefix) : "param.") + e.name, e.value);
}

// Random LoRA weights (B non-zero, so that every path carries signal).
template <class Model>
void randomise_lora(Model& model, std::uint64_t seed) {
    std::uint64_t stream = 0;
    for (const parameter_entry& e : model.trainable_entries()) {
        counter_rng rng(seed, stream++);
        for (float& w : e.value)
            w = float(rng.normal() * 0.2);
    }
}

template <class Model>
std::vector<float> logits_of(Model& model, const batch& b) {
    owned<float> out({b.ids.shape[0], b.ids.shape[1], model.config().vocab_size});
    model.logits(b.ids, out);
    return out.data;
}

std::vector<float> snapshot(const std::vector<parameter_entry>& entries) {
    std::vector<float> out;
    for (const parameter_entry& e : entries)
        out.insert(out.end(), e.value.begin(), e.value.end());
    return out;
}

#ifdef TINYLM_HAS_ONEDNN
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu, onednn_cpu>;
#else
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu>;
#endif

} // namespace

BOOST_AUTO_TEST_SUITE(lora)

BOOST_AUTO_TEST_CASE_TEMPLATE(matches_peft, B, all_backends) {
    const safetensors_reader fx(fixture_path());
    const auto meta = nlohmann::json::parse(fx.metadata().at("lora"));
    BOOST_TEST_REQUIRE(meta.at("r").get<int>() == lora_r4::value.rank);
    BOOST_TEST_REQUIRE(meta.at("lora_alpha").get<double>() == lora_r4::value.alpha);
    decoder<test::llama_gqa, B, lora_r4> model(0);
    load_fixture(model, fx);
    std::size_t lora_tensors = 0;
    for (const auto& [n, t] : fx.tensors())
        lora_tensors += n.starts_with("lora.");
    BOOST_TEST(lora_tensors == model.trainable_entries().size());
    BOOST_TEST(model.trainable_entries().size() == std::size_t(2 * 7 * test::llama_gqa::value.n_layers));

    const batch b = fixture_batch(fx);
    const std::string tag = "llama_gqa_lora [" + std::string(B::name) + "]";
    const double logits_err = rel_error(logits_of(model, b), fx.read_all<float>("logits"));
    BOOST_TEST_MESSAGE(tag << " logits: " << logits_err);
    BOOST_TEST(logits_err < tolerance);

    const float loss = model.loss(b.ids, b.targets);
    const double expected_loss = fx.read_all<float>("loss")[0];
    const double loss_err = std::abs(loss - expected_loss) / expected_loss;
    BOOST_TEST_MESSAGE(tag << " loss: " << loss << " vs " << expected_loss << " (" << loss_err << ")");
    BOOST_TEST(loss_err < tolerance);

    model.backward();
    double worst_grad = 0;
    for (const parameter_entry& e : model.trainable_entries()) {
        const double err = rel_error(std::vector<float>(e.grad.begin(), e.grad.end()),
                                     fx.read_all<float>("grad." + std::string(peft_prefix) + e.name));
        BOOST_TEST(err < tolerance, tag << " grad " << e.name << ": " << err);
        worst_grad = std::max(worst_grad, err);
    }
    const auto hp = nlohmann::json::parse(fx.metadata().at("adamw"));
    adamw opt(model, {.lr = hp.at("lr"),
                      .beta1 = hp.at("beta1"),
                      .beta2 = hp.at("beta2"),
                      .eps = hp.at("eps"),
                      .weight_decay = hp.at("weight_decay")});
    opt.step();
    double worst_step = 0, worst_step_rel = 0;
    for (const parameter_entry& e : model.trainable_entries()) {
        const auto expected = fx.read_all<float>("adamw." + std::string(peft_prefix) + e.name);
        const double err = rel_error(std::vector<float>(e.value.begin(), e.value.end()), expected);
        double diff = 0;
        for (index_t i = 0; i < e.value.numel(); ++i)
            diff = std::max(diff, double(std::abs(e.value[i] - expected[i])));
        BOOST_TEST(err < tolerance, tag << " adamw " << e.name << ": " << err);
        worst_step_rel = std::max(worst_step_rel, err);
        worst_step = std::max(worst_step, diff / double(hp.at("lr")));
    }
    BOOST_TEST_MESSAGE(tag << " worst LoRA gradient error " << worst_grad << ", worst AdamW step error "
                           << worst_step_rel << " relative (" << worst_step << " lr)");
}

// The GPU's training step (cuda/decoder_step.hpp) with LoRA on the CPU executor (the kernels' arithmetic), from the
// peft fixture's weights and batch: the loss and every LoRA gradient against peft's within the tolerance above, one
// AdamW step against peft's, the frozen base untouched; attention through products and by rows, and with gradient
// checkpointing (bit-identical to the step without). Logits in chunks of 7 rows (the last partial).
BOOST_AUTO_TEST_CASE(cuda_decoder_step_on_the_cpu_matches_peft) {
    const safetensors_reader fx(fixture_path());
    decoder<test::llama_gqa, reference_cpu, lora_r4> model(0);
    load_fixture(model, fx);
    const batch b = fixture_batch(fx);
    const double expected_loss = fx.read_all<float>("loss")[0];
    const auto hp = nlohmann::json::parse(fx.metadata().at("adamw"));
    const adamw_options options{
        .beta1 = hp.at("beta1"), .beta2 = hp.at("beta2"), .eps = hp.at("eps"), .weight_decay = hp.at("weight_decay")};
    std::vector<float> first; // the gradients of the first setup, for the checkpointed one
    for (const auto& [path, checkpointing] :
         {std::pair{gpu::attention_path::products, false}, std::pair{gpu::attention_path::products, true},
          std::pair{gpu::attention_path::rows, false}}) {
        const std::string what = std::string(path == gpu::attention_path::rows ? "rows" : "products") +
                                 (checkpointing ? ", checkpointing" : "");
        gpu::decoder_plan_options o;
        o.batch = b.ids.shape[0], o.time = b.ids.shape[1], o.logits_rows = 7, o.bf16_weights = false;
        o.attention = path, o.checkpointing = checkpointing, o.lora = lora_r4::value;
        const gpu::arena_plan plan = gpu::plan_decoder_step(test::llama_gqa::value, o);
        std::vector<std::byte> memory(plan.bytes());
        gpu::cpu_ops ex;
        gpu::decoder_step<gpu::cpu_ops> step(test::llama_gqa::value, o, plan, memory.data(), ex);
        BOOST_TEST_REQUIRE(step.adapter_layout().size() == model.trainable_entries().size());
        BOOST_TEST(plan.at("gradients").bytes < plan.at("parameters").bytes); // the adapter's only
        for (const parameter_entry& e : model.parameter_entries())
            std::copy_n(e.value.data, e.value.numel(), step.parameter(e.name));
        step.parameters_changed();
        const std::size_t base_at = plan.at("parameters").offset, base_bytes = plan.at("parameters").bytes;
        const std::vector<std::byte> base(memory.begin() + std::ptrdiff_t(base_at),
                                          memory.begin() + std::ptrdiff_t(base_at + base_bytes));
        step.zero_gradients();
        const double loss = step.forward_backward(b.ids.data.data(), b.targets.data.data());
        BOOST_TEST(std::abs(loss - expected_loss) / expected_loss < tolerance, what << ": loss " << loss);
        double worst = 0;
        for (const parameter_entry& e : model.trainable_entries()) {
            const float* g = step.gradient(e.name);
            const double err = rel_error(std::vector<float>(g, g + e.value.numel()),
                                         fx.read_all<float>("grad." + std::string(peft_prefix) + e.name));
            BOOST_TEST(err < tolerance, what << ": grad " << e.name << ": " << err);
            worst = std::max(worst, err);
        }
        BOOST_TEST_MESSAGE("decoder_step (" << what << ") with LoRA against peft: loss " << loss << " vs "
                                            << expected_loss << ", worst LoRA gradient " << worst);
        const float* grads = reinterpret_cast<const float*>(memory.data() + plan.at("gradients").offset);
        const std::size_t count = plan.at("gradients").bytes / sizeof(float);
        if (first.empty())
            first.assign(grads, grads + count);
        else if (checkpointing)
            BOOST_TEST(std::memcmp(first.data(), grads, count * sizeof(float)) == 0, what);
        step.adamw_step(hp.at("lr"), options);
        for (const parameter_entry& e : model.trainable_entries()) {
            const float* v = step.parameter(e.name);
            const double err = rel_error(std::vector<float>(v, v + e.value.numel()),
                                         fx.read_all<float>("adamw." + std::string(peft_prefix) + e.name));
            BOOST_TEST(err < tolerance, what << ": adamw " << e.name << ": " << err);
        }
        BOOST_TEST(std::memcmp(base.data(), memory.data() + base_at, base_bytes) == 0, what << ": the base changed");
    }
}

// LoRA dropout in the GPU's training step on the CPU executor: decoder_step draws tl::decoder's masks (the same seed,
// training-forward count, layer, projection and element; cuda/dropout_row.hpp), forward and backward. Against
// tl::decoder with the same adapter (dropout 0.25, all seven projections, B random) over two consecutive steps (the
// second draws new masks: the count advanced alike on both sides): the loss within 1e-5 and every LoRA gradient
// within 1e-4 of its tensor's scale; validation (loss()) drops nothing and does not count, as eval_loss; a fresh
// step given the count after one step (a resumed run) gives the second step's gradients bit for bit; with gradient
// checkpointing the same bits (the recomputed forward draws the same masks).
BOOST_AUTO_TEST_CASE(cuda_decoder_step_on_the_cpu_matches_lora_dropout) {
    decoder<test::llama_gqa, reference_cpu, lora_r4_dropout> model(7);
    randomise_lora(model, 11);
    const batch b = random_batch(2, 9, 5);
    gpu::decoder_plan_options o;
    o.batch = 2, o.time = 9, o.logits_rows = 7, o.bf16_weights = false, o.lora = lora_r4_dropout::value;
    struct cpu_step {
        gpu::arena_plan plan;
        std::vector<std::byte> memory;
        gpu::cpu_ops ex;
        gpu::decoder_step<gpu::cpu_ops> step; // last: it keeps references to the members above
        cpu_step(const gpu::decoder_plan_options& options, const std::vector<parameter_entry>& weights,
                 std::uint64_t seed, std::uint64_t calls)
            : plan(gpu::plan_decoder_step(test::llama_gqa::value, options)), memory(plan.bytes()),
              step(test::llama_gqa::value, options, plan, memory.data(), ex) {
            for (const parameter_entry& e : weights)
                std::copy_n(e.value.data, e.value.numel(), step.parameter(e.name));
            step.parameters_changed();
            step.set_dropout_seed(seed);
            step.set_dropout_calls(calls);
        }
        std::vector<float> gradients(const batch& b) {
            step.zero_gradients();
            step.forward_backward(b.ids.data.data(), b.targets.data.data());
            const float* g = reinterpret_cast<const float*>(memory.data() + plan.at("gradients").offset);
            return {g, g + plan.at("gradients").bytes / sizeof(float)};
        }
    };
    cpu_step s(o, model.parameter_entries(), model.dropout_seed(), model.dropout_calls());
    const std::uint64_t calls0 = model.dropout_calls();
    std::vector<float> second; // the gradients of the second step
    for (int k = 0; k < 2; ++k) {
        model.zero_grad();
        s.step.zero_gradients();
        const double expected = model.loss(b.ids, b.targets);
        model.backward();
        const double loss = s.step.forward_backward(b.ids.data.data(), b.targets.data.data());
        BOOST_TEST(s.step.dropout_calls() == model.dropout_calls());
        BOOST_TEST(std::abs(loss - expected) <= 1e-5 * expected, "step " << k << ": " << loss << " vs " << expected);
        double worst = 0;
        for (const parameter_entry& e : model.trainable_entries()) {
            const float* g = s.step.gradient(e.name);
            const double err =
                rel_error(std::vector<float>(g, g + e.grad.numel()), std::vector<float>(e.grad.begin(), e.grad.end()));
            BOOST_TEST(err <= 1e-4, "step " << k << ": " << e.name << ": " << err);
            worst = std::max(worst, err);
        }
        BOOST_TEST_MESSAGE("decoder_step with LoRA dropout 0.25, step " << k << ": loss " << loss << " vs " << expected
                                                                        << ", worst LoRA gradient " << worst);
        if (k == 1) {
            const float* g = reinterpret_cast<const float*>(s.memory.data() + s.plan.at("gradients").offset);
            second.assign(g, g + s.plan.at("gradients").bytes / sizeof(float));
        }
    }
    BOOST_TEST(model.dropout_calls() == calls0 + 2);
    // Validation: no dropout, no count.
    const double validation = s.step.loss(b.ids.data.data(), b.targets.data.data());
    BOOST_TEST(std::abs(validation - model.eval_loss(b.ids, b.targets)) <= 1e-5 * validation);
    BOOST_TEST(s.step.dropout_calls() == calls0 + 2);
    // Resumed after one step (the count restored), and with gradient checkpointing: the second step's bits.
    cpu_step resumed(o, model.parameter_entries(), model.dropout_seed(), calls0 + 1);
    BOOST_TEST((resumed.gradients(b) == second));
    o.checkpointing = true;
    cpu_step checkpointed(o, model.parameter_entries(), model.dropout_seed(), calls0 + 1);
    BOOST_TEST((checkpointed.gradients(b) == second));
}

// Central differences of the loss along a random direction of all LoRA tensors, with dropout: the masks are
// pinned by resetting the dropout counter before each forward.
BOOST_AUTO_TEST_CASE(finite_differences_with_dropout) {
    decoder<test::llama_gqa, reference_cpu, lora_r4_dropout> model(7);
    randomise_lora(model, 11);
    const batch b = random_batch(2, 9, 5);
    const std::uint64_t calls = model.dropout_calls();
    model.loss(b.ids, b.targets);
    model.backward();
    // loss() counts the forward: reset to `calls` before each evaluation so that every one uses the same masks.
    auto eval = [&] {
        model.set_dropout_calls(calls);
        return double(model.loss(b.ids, b.targets));
    };
    counter_rng rng(3, 1);
    std::vector<std::vector<float>> dir;
    double analytic = 0;
    for (const parameter_entry& e : model.trainable_entries()) {
        auto& d = dir.emplace_back();
        for (index_t i = 0; i < e.value.numel(); ++i) {
            d.push_back(float(rng.normal()));
            analytic += double(d.back()) * double(e.grad[i]);
        }
    }
    auto shift = [&](double h) {
        for (std::size_t k = 0; k < dir.size(); ++k) {
            const parameter_entry& e = model.trainable_entries()[k];
            for (index_t i = 0; i < e.value.numel(); ++i)
                e.value[i] += float(h * dir[k][i]);
        }
    };
    // The decoder computes in f32: central differences at h and h/2 combined by Richardson extrapolation
    // (cancels the h^2 term; the loss's f32 rounding stays below 1e-3 of the derivative at these steps).
    auto central = [&](double step) {
        shift(step);
        const double up = eval();
        shift(-2 * step);
        const double down = eval();
        shift(step);
        return (up - down) / (2 * step);
    };
    const double h = 1e-2, coarse = central(4e-3), fine = central(2e-3), numeric = (4 * fine - coarse) / 3;
    BOOST_TEST_MESSAGE("LoRA directional derivative (dropout 0.25): analytic " << analytic << ", numeric " << numeric
                                                                               << " (central " << fine << ")");
    BOOST_TEST(std::abs(analytic - numeric) <= 5e-3 * std::abs(analytic));
    // And per tensor kind: one element of each A and B of layer 0 (q) and layer 1 (down).
    for (const std::string name :
         {"model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj.lora_B.weight",
          "model.layers.1.mlp.down_proj.lora_A.weight", "model.layers.1.mlp.down_proj.lora_B.weight"}) {
        const auto& es = model.trainable_entries();
        const auto it = std::find_if(es.begin(), es.end(), [&](const parameter_entry& e) { return e.name == name; });
        BOOST_TEST_REQUIRE((it != es.end()));
        const index_t i = it->value.numel() / 2 + 1;
        const float keep = it->value[i];
        it->value[i] = keep + float(h);
        const double lu = eval();
        it->value[i] = keep - float(h);
        const double ld = eval();
        it->value[i] = keep;
        const double num = (lu - ld) / (2 * h), ana = it->grad[i];
        BOOST_TEST(std::abs(num - ana) <= 2e-2 * std::abs(ana) + 2e-4,
                   name << ": analytic " << ana << ", numeric " << num);
    }
}

BOOST_AUTO_TEST_CASE(dropout_only_in_training) {
    decoder<test::llama_gqa, eigen_cpu, lora_r4_dropout> a(1);
    decoder<test::llama_gqa, eigen_cpu, lora_r4> b(1);
    randomise_lora(a, 4);
    randomise_lora(b, 4);
    const batch x = random_batch(2, 8, 9);
    BOOST_TEST(logits_of(a, x) == logits_of(b, x)); // identity in logits()
    const float la = a.loss(x.ids, x.targets), lb = b.loss(x.ids, x.targets);
    BOOST_TEST(la != lb); // active in loss()
    const std::uint64_t calls = a.dropout_calls();
    BOOST_TEST(a.eval_loss(x.ids, x.targets) == b.eval_loss(x.ids, x.targets)); // not in eval_loss()
    BOOST_TEST(a.dropout_calls() == calls);
    BOOST_CHECK_THROW(a.backward(), tl::error);
    // forward_cached: identity too
    auto cache = a.make_cache(1, 8);
    owned<float> last({1, 64});
    a.forward_cached(cache, cview<token_t>{x.ids.data.data(), {1, 8}}, last);
    const auto full = logits_of(a, x);
    std::vector<float> want(full.begin() + 7 * 64, full.begin() + 8 * 64);
    BOOST_TEST(rel_error(last.data, want) < 1e-5);
}

BOOST_AUTO_TEST_CASE(merge_unmerge_and_save_merged) {
    decoder<test::llama_gqa, eigen_cpu, lora_r4> model(3);
    randomise_lora(model, 8);
    const batch x = random_batch(2, 10, 2);
    const auto base = snapshot(model.parameter_entries());
    const auto before = logits_of(model, x);
    model.merge();
    BOOST_TEST(model.merged());
    const auto merged = logits_of(model, x);
    const double merge_err = rel_error(merged, before);
    BOOST_TEST_MESSAGE("merged vs unmerged logits: " << merge_err);
    BOOST_TEST(merge_err < 1e-5);
    BOOST_CHECK_THROW(model.merge(), tl::error);
    model.loss(x.ids, x.targets);
    BOOST_CHECK_THROW(model.backward(), tl::error);

    // A merged model saves as a plain Hugging Face checkpoint.
    const fs::path dir = temp_dir("merged");
    save_pretrained(model, dir / "hf");
    decoder<test::llama_gqa, eigen_cpu> plain(99);
    load_pretrained(plain, dir / "hf");
    BOOST_TEST(logits_of(plain, x) == merged);

    model.unmerge();
    BOOST_TEST(!model.merged());
    BOOST_TEST(rel_error(snapshot(model.parameter_entries()), base) < 1e-6);
    BOOST_TEST(rel_error(logits_of(model, x), before) < 1e-5);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(fresh_adapter_is_identity_and_base_stays_frozen) {
    decoder<test::llama_gqa, eigen_cpu> plain(5);
    decoder<test::llama_gqa, eigen_cpu, lora_r4> model(5);
    const batch x = random_batch(2, 10, 4);
    // Same base streams, B = 0: the adapter starts as the identity.
    BOOST_TEST(logits_of(model, x) == logits_of(plain, x));
    for (const parameter_entry& e : model.parameter_entries())
        BOOST_TEST(e.trainable == (e.kind == param_kind::adapter), e.name);
    const auto base = snapshot(model.parameter_entries()); // includes LoRA; compare base part below
    std::vector<float> base_only;
    for (const parameter_entry& e : model.parameter_entries())
        if (!e.trainable) base_only.insert(base_only.end(), e.value.begin(), e.value.end());
    adamw opt(model, {.lr = 1e-2});
    for (int step = 0; step < 3; ++step) {
        model.zero_grad();
        model.loss(x.ids, x.targets);
        model.backward();
        clip_grad_norm(model.parameter_entries(), 1.0);
        opt.step();
    }
    std::vector<float> after;
    for (const parameter_entry& e : model.parameter_entries())
        if (!e.trainable) after.insert(after.end(), e.value.begin(), e.value.end());
    BOOST_TEST_REQUIRE(after.size() == base_only.size());
    BOOST_TEST(std::memcmp(after.data(), base_only.data(), after.size() * sizeof(float)) == 0);
    BOOST_TEST(logits_of(model, x) != logits_of(plain, x)); // the adapter learned something
    // Memory: the base, and the LoRA parameters and their gradients only (no base gradients; the optimizer
    // owns the two moments, of the LoRA tensors only).
    std::size_t base_bytes = 0, lora_bytes = 0;
    for (const parameter_entry& e : model.parameter_entries())
        (e.trainable ? lora_bytes : base_bytes) += std::size_t(e.value.numel()) * sizeof(float);
    BOOST_TEST_MESSAGE("parameter arena " << model.parameter_arena_bytes() << " B: base " << base_bytes << " B, LoRA "
                                          << lora_bytes << " B (x2 with gradients)");
    BOOST_TEST(model.parameter_arena_bytes() < base_bytes + 2 * lora_bytes + 4096);
    BOOST_TEST(plain.parameter_arena_bytes() >= 2 * base_bytes); // a trainable base has gradient memory
}

BOOST_AUTO_TEST_CASE(save_and_load_adapter) {
    decoder<test::llama_gqa, eigen_cpu, lora_r4_dropout> model(6);
    randomise_lora(model, 1);
    const batch x = random_batch(2, 10, 6);
    const fs::path dir = temp_dir("adapter");
    save_adapter(model, dir / "adapter", "tinylm/llama_gqa");
    const auto cfg = nlohmann::json::parse(std::ifstream(dir / "adapter" / "adapter_config.json"));
    BOOST_TEST(cfg.at("peft_type") == "LORA");
    BOOST_TEST(cfg.at("r") == 4);
    BOOST_TEST(cfg.at("lora_dropout").get<double>() == 0.25);
    BOOST_TEST(cfg.at("target_modules").size() == 7u);
    const safetensors_reader st(dir / "adapter" / "adapter_model.safetensors");
    BOOST_TEST(st.contains("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    BOOST_TEST(st.tensors().size() == 28u);

    decoder<test::llama_gqa, eigen_cpu, lora_r4_dropout> other(6); // same base, fresh adapter
    BOOST_TEST(logits_of(other, x) != logits_of(model, x));
    load_adapter(other, dir / "adapter");
    BOOST_TEST(logits_of(other, x) == logits_of(model, x));
    // dropout differs: accepted (a training setting)
    decoder<test::llama_gqa, eigen_cpu, lora_r4> no_dropout(6);
    load_adapter(no_dropout, dir / "adapter");
    BOOST_TEST(logits_of(no_dropout, x) == logits_of(model, x));

    // A different rank and targets: one error naming both.
    decoder<test::llama_gqa, eigen_cpu, lora_r2_qv> wrong(6);
    try {
        load_adapter(wrong, dir / "adapter");
        BOOST_ERROR("load_adapter accepted an adapter of another rank");
    } catch (const tl::error& e) {
        const std::string what = e.what();
        BOOST_TEST_MESSAGE(what);
        BOOST_TEST(what.find("r: 4 in the file, 2 in the model") != std::string::npos);
        BOOST_TEST(what.find("lora_alpha") != std::string::npos);
        BOOST_TEST(what.find("target_modules") != std::string::npos);
    }
    BOOST_CHECK_THROW(load_adapter(other, dir / "missing"), tl::error);
    fs::remove_all(dir);
}

// Reads the adapter peft wrote for the fixture's model? The fixture stores peft's tensor names; an
// adapter folder assembled from them (as peft's save_pretrained lays it out) loads and gives the logits.
BOOST_AUTO_TEST_CASE(loads_peft_names) {
    const safetensors_reader fx(fixture_path());
    const fs::path dir = temp_dir("peftnames");
    safetensors_writer w;
    std::vector<std::vector<float>> keep;
    for (const auto& [name, info] : fx.tensors())
        if (name.starts_with("lora.")) {
            shape s;
            keep.push_back(fx.read_all<float>(name, &s));
            w.add<float>(name.substr(5), cview<float>{keep.back().data(), s});
        }
    w.save(dir / "adapter_model.safetensors");
    nlohmann::json cfg = peft_adapter_config(lora_r4::value);
    cfg["target_modules"] = {"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}; // a set
    cfg["lora_alpha"] = 8; // an int, as peft writes it
    std::ofstream(dir / "adapter_config.json") << cfg.dump();
    decoder<test::llama_gqa, eigen_cpu, lora_r4> model(0);
    for (const parameter_entry& e : model.parameter_entries())
        if (!e.trainable) fx.read("param." + e.name, e.value);
    load_adapter(model, dir);
    BOOST_TEST(rel_error(logits_of(model, fixture_batch(fx)), fx.read_all<float>("logits")) < tolerance);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(training_checkpoint_resumes_bit_identically) {
    using model_t = decoder<test::llama_gqa, eigen_cpu, lora_r4_dropout>;
    const batch x = random_batch(2, 10, 12);
    auto train = [&](model_t& m, adamw& opt, int steps) {
        for (int s = 0; s < steps; ++s) {
            m.zero_grad();
            m.loss(x.ids, x.targets);
            m.backward();
            clip_grad_norm(m.parameter_entries(), 1.0);
            opt.step(1e-2);
        }
    };
    const fs::path dir = temp_dir("resume");
    model_t a(2);
    adamw opt_a(a);
    train(a, opt_a, 2);
    save_training_checkpoint(a, opt_a, {.step = 2}, dir / "ckpt");
    BOOST_TEST(fs::exists(dir / "ckpt" / "adapter_model.safetensors"));
    train(a, opt_a, 3);

    model_t b(77); // another seed: everything must come from the checkpoint
    adamw opt_b(b);
    const training_state st = load_training_checkpoint(b, opt_b, dir / "ckpt");
    BOOST_TEST(st.step == 2);
    train(b, opt_b, 3);
    const auto wa = snapshot(a.parameter_entries()), wb = snapshot(b.parameter_entries());
    BOOST_TEST_REQUIRE(wa.size() == wb.size());
    BOOST_TEST(std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float)) == 0);
    fs::remove_all(dir);
}

// Other architectures: Qwen2 (frozen q/k/v biases, tied head) with all targets, Mixtral (experts) with the
// attention projections only. The base stays bit-identical while the loss falls.
template <class Config, class Adapter>
void trains_with_frozen_base(const std::string& name) {
    decoder<Config, eigen_cpu, Adapter> model(13);
    randomise_lora(model, 14);
    std::vector<float> base;
    for (const parameter_entry& e : model.parameter_entries())
        if (!e.trainable) base.insert(base.end(), e.value.begin(), e.value.end());
    const batch x = random_batch(2, 10, 15);
    adamw opt(model, {.lr = 1e-2});
    float first = 0, last = 0;
    for (int s = 0; s < 8; ++s) {
        model.zero_grad();
        last = model.loss(x.ids, x.targets);
        if (s == 0) first = last;
        model.backward();
        BOOST_TEST_REQUIRE(grad_norm(model.parameter_entries()) > 0);
        opt.step();
    }
    std::vector<float> after;
    for (const parameter_entry& e : model.parameter_entries())
        if (!e.trainable) after.insert(after.end(), e.value.begin(), e.value.end());
    BOOST_TEST(std::memcmp(after.data(), base.data(), base.size() * sizeof(float)) == 0);
    BOOST_TEST_MESSAGE(name << ": loss " << first << " -> " << last);
    BOOST_TEST(last < first);
}
struct lora_attention_only {
    static constexpr lora_config value{.rank = 2, .alpha = 2, .dropout = 0.1f, .targets = lora_attention};
};
BOOST_AUTO_TEST_CASE(qwen2_and_mixtral_train_with_frozen_base) {
    trains_with_frozen_base<test::qwen2_tied, lora_r4_dropout>("qwen2_tied, all targets");
    trains_with_frozen_base<test::mixtral_moe, lora_attention_only>("mixtral_moe, attention targets");
}

// For the `torch` test: with TINYLM_PEFT_EXPORT_DIR set, writes <dir>/base (save_pretrained), <dir>/adapter
// (save_adapter, dropout 0.25 in the config) and <dir>/expected.safetensors (input_ids, tinylm's logits).
BOOST_AUTO_TEST_CASE(export_for_peft, *boost::unit_test::disabled()) {
    const char* out = std::getenv("TINYLM_PEFT_EXPORT_DIR");
    BOOST_TEST_REQUIRE(out != nullptr, "set TINYLM_PEFT_EXPORT_DIR");
    decoder<test::llama_gqa, reference_cpu, lora_r4_dropout> model(21);
    randomise_lora(model, 22);
    adamw opt(model, {.lr = 1e-2});
    const batch x = random_batch(2, 12, 23);
    for (int s = 0; s < 2; ++s) { // a trained adapter, base untouched
        model.zero_grad();
        model.loss(x.ids, x.targets);
        model.backward();
        opt.step();
    }
    const fs::path dir(out);
    save_pretrained(model, dir / "base");
    save_adapter(model, dir / "adapter", (dir / "base").string());
    owned<std::int64_t> ids64(x.ids.shape);
    std::copy(x.ids.data.begin(), x.ids.data.end(), ids64.data.begin());
    const auto logits = logits_of(model, x);
    safetensors_writer w;
    w.add<std::int64_t>("input_ids", ids64.cv());
    w.add<float>("logits", cview<float>{logits.data(), {2, 12, 64}});
    w.save(dir / "expected.safetensors");
}

// For the `torch` test, after check_peft_adapter.py: the adapter that peft's save_pretrained wrote
// (<dir>/peft_saved) loads into tinylm and reproduces the logits.
BOOST_AUTO_TEST_CASE(load_adapter_saved_by_peft, *boost::unit_test::disabled()) {
    const char* out = std::getenv("TINYLM_PEFT_EXPORT_DIR");
    BOOST_TEST_REQUIRE(out != nullptr, "set TINYLM_PEFT_EXPORT_DIR");
    BOOST_TEST_REQUIRE(fs::exists(fs::path(out) / "peft_saved"), "no adapter saved by peft under " << out);
    const fs::path dir(out);
    decoder<test::llama_gqa, reference_cpu, lora_r4_dropout> model(0);
    load_pretrained(model, dir / "base");
    load_adapter(model, dir / "peft_saved");
    const safetensors_reader expected(dir / "expected.safetensors");
    shape s;
    const auto ids64 = expected.read_all<std::int64_t>("input_ids", &s);
    batch b{owned<token_t>(s), owned<token_t>(s)};
    std::transform(ids64.begin(), ids64.end(), b.ids.data.begin(), [](std::int64_t v) { return token_t(v); });
    const double err = rel_error(logits_of(model, b), expected.read_all<float>("logits"));
    BOOST_TEST_MESSAGE("adapter saved by peft, loaded by tinylm: logits relative error " << err);
    BOOST_TEST(err < 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()
