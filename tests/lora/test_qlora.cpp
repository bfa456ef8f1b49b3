// QLoRA: decoder<Config, Backend, Adapter> with lora_config::quantized_base, the frozen projections in NF4 with
// double quantisation (ops/nf4.hpp), dequantised tile by tile in forward and backward (ops/nf4_linear.hpp).
//  - forward, loss and LoRA gradients equal those of the f32 LoRA decoder whose projections are the
//    dequantised NF4 weights (to f32 summation order), on every backend, and with the KV cache;
//  - finite differences of the LoRA tensors through the 4-bit base;
//  - a few AdamW steps lower the loss and leave the 4-bit base byte-identical;
//  - frozen projections take <= 0.6 bytes per weight, and no f32 copy of them is kept;
//  - merge() re-quantises W + (alpha / r) B A: its error against the separate adapter is measured and reported;
//    unmerge() restores the 4-bit weights exactly;
//  - save_pretrained writes the dequantised weights, which load_pretrained re-quantises.
#include "../model/fixture_configs.hpp"
#include "../support/random.hpp"

#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/decoder_step.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/optim/adamw.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include <unistd.h>

using namespace tl;
using namespace tl::test;

namespace {

namespace fs = std::filesystem;

struct qlora_r4 {
    static constexpr lora_config value{
        .rank = 4, .alpha = 8, .dropout = 0, .targets = lora_all, .quantized_base = true};
};
struct lora_r4 { // the same adapter over an f32 base
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0, .targets = lora_all};
};
struct qlora_r4_dropout {
    static constexpr lora_config value{
        .rank = 4, .alpha = 8, .dropout = 0.25f, .targets = lora_all, .quantized_base = true};
};
struct qlora_r2_qv { // the projections that carry no adapter are quantised too
    static constexpr lora_config value{
        .rank = 2, .alpha = 4, .dropout = 0.1f, .targets = lora_q | lora_v, .quantized_base = true};
};

struct batch {
    owned<token_t> ids, targets;
};

batch random_batch(index_t n, index_t t_len, std::uint64_t seed, index_t vocab = 64) {
    batch b{owned<token_t>({n, t_len}), owned<token_t>({n, t_len})};
    counter_rng rng(seed, 3);
    for (auto& v : b.ids.data)
        v = token_t(rng.below(std::uint64_t(vocab)));
    for (auto& v : b.targets.data)
        v = token_t(rng.below(std::uint64_t(vocab)));
    b.targets.data[1] = ignore_index;
    return b;
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

std::vector<float> dequantized(const nf4_tensor& q) {
    owned<float> w(q.shape());
    dequantize(q, w);
    return w.data;
}

// Copies a QLoRA model into an f32 LoRA model: every f32 tensor, and the projections dequantised.
template <class Quantized, class Plain>
void copy_dequantized(const Quantized& q, Plain& f) {
    std::map<std::string, tensor_view<float>> dst;
    for (const parameter_entry& e : f.parameter_entries())
        dst[e.name] = e.value;
    std::size_t copied = 0;
    for (const parameter_entry& e : q.parameter_entries()) {
        BOOST_TEST_REQUIRE(dst.contains(e.name), e.name);
        std::copy(e.value.begin(), e.value.end(), dst[e.name].begin());
        ++copied;
    }
    for (const auto& qe : q.quantized_entries()) {
        BOOST_TEST_REQUIRE(dst.contains(qe.name), qe.name);
        const auto w = dequantized(q.quantized_weight(qe.layer, qe.target));
        std::copy(w.begin(), w.end(), dst[qe.name].begin());
        ++copied;
    }
    BOOST_TEST_REQUIRE(copied == f.parameter_entries().size());
}

template <class Model>
std::vector<std::uint8_t> base_bytes(const Model& m) {
    std::vector<std::uint8_t> out;
    for (const auto& qe : m.quantized_entries()) {
        const nf4_tensor& q = m.quantized_weight(qe.layer, qe.target);
        out.insert(out.end(), q.codes.begin(), q.codes.end());
        out.insert(out.end(), q.qabsmax.begin(), q.qabsmax.end());
        const auto* a2 = reinterpret_cast<const std::uint8_t*>(q.absmax2.data());
        out.insert(out.end(), a2, a2 + q.absmax2.size() * sizeof(float));
    }
    for (const parameter_entry& e : m.parameter_entries())
        if (!e.trainable) {
            const auto* p = reinterpret_cast<const std::uint8_t*>(e.value.data);
            out.insert(out.end(), p, p + e.value.numel() * index_t(sizeof(float)));
        }
    return out;
}

#ifdef TINYLM_HAS_ONEDNN
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu, onednn_cpu>;
#else
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu>;
#endif

constexpr double tolerance = 1e-5;

} // namespace

BOOST_AUTO_TEST_SUITE(qlora)

BOOST_AUTO_TEST_CASE_TEMPLATE(matches_f32_decoder_on_dequantized_weights, B, all_backends) {
    decoder<test::qwen2_tied, B, qlora_r4> q(3); // q/k/v biases and a tied head around the 4-bit projections
    decoder<test::qwen2_tied, B, lora_r4> f(99);
    randomise_lora(q, 5);
    // The f32 walk and the QLoRA walk hold the same names: 7 projections per layer moved to NF4.
    BOOST_TEST(q.quantized_entries().size() == std::size_t(7 * test::qwen2_tied::value.n_layers));
    BOOST_TEST(q.parameter_entries().size() + q.quantized_entries().size() == f.parameter_entries().size());
    copy_dequantized(q, f);
    const batch b = random_batch(2, 11, 4);
    const std::string tag = "qwen2_tied [" + std::string(B::name) + "]";

    const double logits_err = rel_error(logits_of(q, b), logits_of(f, b));
    const float lq = q.loss(b.ids, b.targets), lf = f.loss(b.ids, b.targets);
    q.zero_grad();
    f.zero_grad();
    q.backward();
    f.backward();
    double worst_grad = 0;
    for (std::size_t i = 0; i < q.trainable_entries().size(); ++i) {
        const parameter_entry &a = q.trainable_entries()[i], &e = f.trainable_entries()[i];
        BOOST_TEST_REQUIRE(a.name == e.name);
        const double err = rel_error(std::vector<float>(a.grad.begin(), a.grad.end()),
                                     std::vector<float>(e.grad.begin(), e.grad.end()));
        BOOST_TEST(err < tolerance, tag << " grad " << a.name << ": " << err);
        worst_grad = std::max(worst_grad, err);
    }
    BOOST_TEST_MESSAGE(tag << " QLoRA vs f32 decoder on the dequantised weights: logits " << logits_err << ", loss "
                           << lq << " vs " << lf << ", worst LoRA gradient " << worst_grad);
    BOOST_TEST(logits_err < tolerance);
    BOOST_TEST(std::abs(lq - lf) <= tolerance * std::abs(lf));

    // Generation with the KV cache goes through the same 4-bit projections.
    auto cache = q.make_cache(1, 11, 4);
    owned<float> last({1, test::qwen2_tied::value.vocab_size});
    q.forward_cached(cache, cview<token_t>{b.ids.data.data(), {1, 11}}, last);
    const auto full = logits_of(f, b);
    const index_t v = test::qwen2_tied::value.vocab_size;
    BOOST_TEST(rel_error(last.data, std::vector<float>(full.begin() + 10 * v, full.begin() + 11 * v)) < tolerance);
}

// The same seed draws the same f32 base: QLoRA's projections are the quantised f32 draws.
BOOST_AUTO_TEST_CASE(init_quantizes_the_f32_draws) {
    decoder<test::llama_gqa, eigen_cpu, qlora_r4> q(7);
    decoder<test::llama_gqa, eigen_cpu, lora_r4> f(7);
    std::map<std::string, tensor_view<float>> plain;
    for (const parameter_entry& e : f.parameter_entries())
        plain[e.name] = e.value;
    for (const parameter_entry& e : q.parameter_entries())
        BOOST_TEST(std::equal(e.value.begin(), e.value.end(), plain[e.name].begin()), e.name);
    for (const auto& qe : q.quantized_entries()) {
        const nf4_tensor expected = quantize_nf4(plain[qe.name], true);
        const nf4_tensor& got = q.quantized_weight(qe.layer, qe.target);
        BOOST_TEST((got.codes == expected.codes && got.qabsmax == expected.qabsmax && got.absmax2 == expected.absmax2),
                   qe.name);
    }
}

BOOST_AUTO_TEST_CASE(memory_of_the_frozen_base) {
    decoder<test::llama_gqa, eigen_cpu, qlora_r4> q(1);
    decoder<test::llama_gqa, eigen_cpu, lora_r4> f(1);
    const double per_param = double(q.quantized_base_bytes()) / double(q.quantized_base_params());
    std::size_t f32_projection_bytes = 0;
    for (const auto& qe : q.quantized_entries()) {
        f32_projection_bytes += std::size_t(qe.shape.numel()) * sizeof(float);
        const double b = bytes_per_param(q.quantized_weight(qe.layer, qe.target));
        BOOST_TEST(b <= 0.6, qe.name << ": " << b << " bytes/param");
    }
    BOOST_TEST_MESSAGE("llama_gqa QLoRA: " << q.quantized_base_params() << " frozen projection weights in "
                                           << q.quantized_base_bytes() << " bytes (" << per_param
                                           << " bytes/param); parameter arena " << q.parameter_arena_bytes() << " B vs "
                                           << f.parameter_arena_bytes() << " B with an f32 base");
    BOOST_TEST(per_param <= 0.6);
    // The parameter arena holds no f32 copy of the projections.
    BOOST_TEST(q.parameter_arena_bytes() + f32_projection_bytes <= f.parameter_arena_bytes() + 4096);
    // A Qwen2.5-0.5B-sized projection (4864 x 896, the MLP's): double quantisation brings it to ~0.516.
    owned<float> w = random_tensor<float>({4864, 896}, 3, 0.02);
    const double big = bytes_per_param(quantize_nf4(w.cv(), true));
    BOOST_TEST_MESSAGE("4864 x 896 projection: " << big << " bytes/param");
    BOOST_TEST(big <= 0.52);
}

// Central differences of the loss along a random direction of all LoRA tensors (dropout 0.1, only q and v
// targeted), through the 4-bit base: Richardson-extrapolated, since the decoder computes in f32.
BOOST_AUTO_TEST_CASE(finite_differences_through_the_4bit_base) {
    decoder<test::llama_gqa, reference_cpu, qlora_r2_qv> model(7);
    randomise_lora(model, 11);
    const batch b = random_batch(2, 9, 5);
    const std::uint64_t calls = model.dropout_calls();
    model.zero_grad();
    model.loss(b.ids, b.targets);
    model.backward();
    auto eval = [&] {
        model.set_dropout_calls(calls); // the same dropout masks for every evaluation
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
    auto central = [&](double step) {
        shift(step);
        const double up = eval();
        shift(-2 * step);
        const double down = eval();
        shift(step);
        return (up - down) / (2 * step);
    };
    const double coarse = central(4e-3), fine = central(2e-3), numeric = (4 * fine - coarse) / 3;
    BOOST_TEST_MESSAGE("QLoRA directional derivative (dropout 0.1): analytic " << analytic << ", numeric " << numeric);
    BOOST_TEST(std::abs(analytic - numeric) <= 5e-3 * std::abs(analytic));
    // Single elements of A and B of layer 0 and layer 1.
    const double h = 1e-2;
    for (const std::string name :
         {"model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.v_proj.lora_B.weight",
          "model.layers.1.self_attn.v_proj.lora_A.weight", "model.layers.1.self_attn.q_proj.lora_B.weight"}) {
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

BOOST_AUTO_TEST_CASE(training_lowers_the_loss_and_keeps_the_base) {
    decoder<test::qwen2_tied, eigen_cpu, qlora_r4_dropout> model(12);
    const auto before = base_bytes(model);
    const batch x = random_batch(2, 10, 15);
    adamw opt(model, {.lr = 1e-2});
    float first = 0, last = 0;
    for (int s = 0; s < 8; ++s) {
        model.zero_grad();
        last = model.loss(x.ids, x.targets);
        if (s == 0) first = last;
        model.backward();
        opt.step();
    }
    const float eval = model.eval_loss(x.ids, x.targets);
    BOOST_TEST_MESSAGE("qwen2_tied QLoRA: loss " << first << " -> " << last << " (eval, no dropout: " << eval << ")");
    BOOST_TEST(last < first);
    BOOST_TEST(eval < first);
    BOOST_TEST((base_bytes(model) == before)); // codes, scales, norms, embedding: untouched
}

// merge() on a 4-bit base re-quantises W + (alpha / r) B A. The error it adds is measured, not hidden, on an
// adapter trained for a few steps (B starts at zero, as in real fine-tuning):
//  - weights: |Q(W + sBA) - (W + sBA)| against the update's own size |sBA|;
//  - logits: how much of the adapter's effect (logits with the adapter minus logits of the base) survives,
//    and the loss on the training batch: separate adapter, merged into 4 bits, base alone.
BOOST_AUTO_TEST_CASE(merge_into_4bit_error_is_measured) {
    decoder<test::llama_gqa, eigen_cpu, qlora_r4> model(3);
    const batch x = random_batch(4, 16, 2);
    const auto base_logits = logits_of(model, x);
    const float base_loss = model.eval_loss(x.ids, x.targets);
    adamw opt(model, {.lr = 2e-2, .weight_decay = 0.0});
    for (int s = 0; s < 20; ++s) {
        model.zero_grad();
        model.loss(x.ids, x.targets);
        model.backward();
        opt.step();
    }
    const auto separate = logits_of(model, x);
    const float separate_loss = model.eval_loss(x.ids, x.targets);
    const auto before = base_bytes(model);

    // The exact merged weights in f32, and the updates s B A alone.
    std::vector<std::vector<float>> exact, update;
    const float scale = decltype(model)::lora_scale;
    for (const auto& qe : model.quantized_entries()) {
        auto w = dequantized(model.quantized_weight(qe.layer, qe.target));
        std::vector<float> u(w.size());
        const auto p = model.lora_weights(qe.layer, qe.target);
        const index_t out = qe.shape[0], in = qe.shape[1], r = 4;
        for (index_t o = 0; o < out; ++o)
            for (index_t i = 0; i < in; ++i) {
                double acc = 0;
                for (index_t k = 0; k < r; ++k)
                    acc += double(p.b.data[o * r + k]) * double(p.a.data[k * in + i]);
                u[std::size_t(o * in + i)] = float(scale * acc);
                w[std::size_t(o * in + i)] += u[std::size_t(o * in + i)];
            }
        exact.push_back(std::move(w));
        update.push_back(std::move(u));
    }
    model.merge();
    BOOST_TEST(model.merged());
    double err_sum = 0, update_sum = 0;
    for (std::size_t k = 0; k < exact.size(); ++k) {
        const auto& qe = model.quantized_entries()[k];
        const auto merged = dequantized(model.quantized_weight(qe.layer, qe.target));
        for (std::size_t i = 0; i < merged.size(); ++i) {
            err_sum += std::abs(double(merged[i]) - double(exact[k][i]));
            update_sum += std::abs(double(update[k][i]));
        }
    }
    const auto merged_logits = logits_of(model, x);
    const float merged_loss = model.eval_loss(x.ids, x.targets);
    std::vector<float> effect(separate.size()), merged_effect(separate.size());
    for (std::size_t i = 0; i < separate.size(); ++i) {
        effect[i] = separate[i] - base_logits[i];
        merged_effect[i] = merged_logits[i] - base_logits[i];
    }
    const double logits_err = rel_error(merged_logits, separate), effect_err = rel_error(merged_effect, effect);
    BOOST_TEST_MESSAGE("merge into the 4-bit base (re-quantised), adapter trained 20 steps: mean |Q(W + sBA) - (W + "
                       "sBA)| = "
                       << err_sum / update_sum << " x mean |sBA|; logits vs the separate adapter " << logits_err
                       << "; the adapter's effect on the logits (vs the base) off by " << effect_err << "; loss: base "
                       << base_loss << ", separate adapter " << separate_loss << ", merged into 4 bits "
                       << merged_loss);
    BOOST_TEST(logits_err > 0);   // re-quantisation is lossy...
    BOOST_TEST(effect_err < 1.0); // ...but keeps the direction of the update
    BOOST_TEST(merged_loss < base_loss);

    model.unmerge(); // exact: the kept 4-bit weights come back
    BOOST_TEST((base_bytes(model) == before));
    BOOST_TEST(logits_of(model, x) == separate);
}

// The GPU's training step (cuda/decoder_step.hpp) with QLoRA on the CPU executor (the kernels' arithmetic): the
// model's own NF4 bytes, adapter (random, B not zero) and batch, a Qwen2-shaped model (biases, tied head): the loss
// within 1e-5, every LoRA gradient within 1e-4 of its tensor's scale, then AdamW from the model's gradients bit for
// bit; the step holds no f32 copy of the projections. f32 products, attention through products.
BOOST_AUTO_TEST_CASE(cuda_decoder_step_on_the_cpu_matches_qlora) {
    decoder<test::qwen2_tied, eigen_cpu, qlora_r4> model(21);
    randomise_lora(model, 4);
    const batch b = random_batch(2, 10, 6);
    model.zero_grad();
    const double loss = model.loss(b.ids, b.targets);
    model.backward();

    gpu::decoder_plan_options o;
    o.batch = 2, o.time = 10, o.logits_rows = 7, o.bf16_weights = false, o.lora = qlora_r4::value;
    const gpu::arena_plan plan = gpu::plan_decoder_step(test::qwen2_tied::value, o);
    std::vector<std::byte> memory(plan.bytes());
    gpu::cpu_ops ex;
    gpu::decoder_step<gpu::cpu_ops> step(test::qwen2_tied::value, o, plan, memory.data(), ex);
    for (const parameter_entry& e : model.parameter_entries()) // the f32 base (no projection weights) and adapter
        std::copy_n(e.value.data, e.value.numel(), step.parameter(e.name));
    for (const auto& q : model.quantized_entries())
        step.set_quantized_weight(q.name, model.quantized_weight(q.layer, q.target));
    BOOST_CHECK_THROW(step.parameter("model.layers.0.mlp.up_proj.weight"), error); // only in NF4
    BOOST_TEST(plan.at("nf4.codes").bytes < plan.at("parameters").bytes);
    step.parameters_changed();
    step.zero_gradients();
    const double step_loss = step.forward_backward(b.ids.data.data(), b.targets.data.data());
    BOOST_TEST_MESSAGE("QLoRA loss: decoder " << loss << ", decoder_step on the CPU " << step_loss);
    BOOST_TEST(std::abs(step_loss - loss) < 1e-5 * loss);
    double worst = 0;
    for (const parameter_entry& e : model.trainable_entries()) {
        const float* g = step.gradient(e.name);
        double err = 0, scale = 0;
        for (index_t i = 0; i < e.grad.numel(); ++i) {
            err = std::max(err, std::abs(double(g[i]) - double(e.grad[i])));
            scale = std::max(scale, std::abs(double(e.grad[i])));
        }
        BOOST_TEST(err <= 1e-4 * scale, e.name << ": " << err << " against a scale of " << scale);
        worst = std::max(worst, err / scale);
    }
    BOOST_TEST_MESSAGE("largest LoRA gradient difference: " << worst << " of its tensor's scale");
    for (const parameter_entry& e : model.trainable_entries())
        std::copy_n(e.grad.data, e.grad.numel(), step.gradient(e.name));
    const adamw_options options{.weight_decay = 0.1};
    adamw opt(model, options);
    opt.step(1e-3);
    step.adamw_step(1e-3, options);
    for (const parameter_entry& e : model.trainable_entries())
        BOOST_TEST(std::memcmp(step.parameter(e.name), e.value.data, std::size_t(e.value.numel()) * sizeof(float)) == 0,
                   e.name);
}

// save_pretrained writes the dequantised projections: a plain f32 decoder loads them and computes what the
// QLoRA model computes; load_pretrained into a QLoRA model re-quantises them to the same 4-bit codes.
BOOST_AUTO_TEST_CASE(save_and_load_pretrained) {
    decoder<test::qwen2_tied, eigen_cpu, qlora_r4> model(21); // fresh adapter: B = 0, the base alone
    const batch x = random_batch(2, 10, 6);
    const fs::path dir = fs::temp_directory_path() / ("tinylm_qlora_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    save_pretrained(model, dir / "hf");
    decoder<test::qwen2_tied, eigen_cpu> plain(1);
    load_pretrained(plain, dir / "hf");
    const auto reference = logits_of(model, x);
    const double plain_err = rel_error(logits_of(plain, x), reference);
    BOOST_TEST_MESSAGE("f32 decoder on the saved (dequantised) weights vs QLoRA: " << plain_err);
    BOOST_TEST(plain_err < tolerance);

    decoder<test::qwen2_tied, eigen_cpu, qlora_r4> again(5);
    load_pretrained(again, dir / "hf");
    std::size_t codes_differ = 0, codes = 0;
    for (const auto& qe : model.quantized_entries()) {
        const nf4_tensor &a = model.quantized_weight(qe.layer, qe.target),
                         &b = again.quantized_weight(qe.layer, qe.target);
        for (std::size_t i = 0; i < a.codes.size(); ++i, ++codes)
            codes_differ += a.codes[i] != b.codes[i];
    }
    const double reload_err = rel_error(logits_of(again, x), reference);
    BOOST_TEST_MESSAGE("re-quantised on load: " << codes_differ << " of " << codes << " code bytes differ; logits "
                                                << reload_err);
    BOOST_TEST(codes_differ == 0u);
    BOOST_TEST(reload_err < 1e-3); // only the double-quantised scales may move (a new offset)
    fs::remove_all(dir);
}

// For the `torch` test qlora_matches_peft_bitsandbytes: with TINYLM_QLORA_EXPORT_DIR set, writes <dir>/base
// (save_pretrained: the dequantised projections), <dir>/nf4.safetensors (each projection's 4-bit state as
// tinylm holds it: packed codes, 8-bit scales, second-level scales, offset), <dir>/adapter (save_adapter) and
// <dir>/expected.safetensors (input_ids, labels, logits, loss, LoRA gradients).
// tests/reference/quant/check_qlora_peft.py builds bitsandbytes Linear4bit layers from that state, wraps the
// model with peft and compares.
BOOST_AUTO_TEST_CASE(export_for_peft, *boost::unit_test::disabled()) {
    const char* out = std::getenv("TINYLM_QLORA_EXPORT_DIR");
    BOOST_TEST_REQUIRE(out != nullptr, "set TINYLM_QLORA_EXPORT_DIR");
    decoder<test::llama_gqa, reference_cpu, qlora_r4> model(21);
    randomise_lora(model, 22);
    const fs::path dir(out);
    save_pretrained(model, dir / "base");
    save_adapter(model, dir / "adapter", (dir / "base").string());
    safetensors_writer nf4;
    auto ints = [](const auto& bytes) {
        std::vector<std::int32_t> v(bytes.begin(), bytes.end());
        return v;
    };
    std::vector<std::vector<std::int32_t>> keep; // the writer copies; these only need to outlive add()
    for (const auto& qe : model.quantized_entries()) {
        const nf4_tensor& q = model.quantized_weight(qe.layer, qe.target);
        const auto& codes = keep.emplace_back(ints(q.codes));
        nf4.add<std::int32_t>(qe.name + ".codes", cview<std::int32_t>{codes.data(), {index_t(codes.size())}});
        const auto& scales = keep.emplace_back(ints(q.qabsmax));
        nf4.add<std::int32_t>(qe.name + ".qabsmax", cview<std::int32_t>{scales.data(), {index_t(scales.size())}});
        nf4.add<float>(qe.name + ".absmax2", cview<float>{q.absmax2.data(), {index_t(q.absmax2.size())}});
        nf4.add<float>(qe.name + ".offset", cview<float>{&q.offset, {1}});
    }
    nf4.save(dir / "nf4.safetensors");

    batch x = random_batch(2, 12, 23);
    for (index_t b = 0; b < 2; ++b) // transformers has no target for the last position
        x.targets.data[std::size_t(b * 12 + 11)] = ignore_index;
    const auto logits = logits_of(model, x);
    model.zero_grad();
    const float loss = model.loss(x.ids, x.targets);
    model.backward();
    safetensors_writer w;
    owned<std::int64_t> ids64(x.ids.shape), labels64(x.ids.shape, -100);
    std::copy(x.ids.data.begin(), x.ids.data.end(), ids64.data.begin());
    // transformers shifts labels inside the loss: labels[t + 1] = targets[t].
    for (index_t b = 0; b < 2; ++b)
        for (index_t t = 0; t + 1 < 12; ++t)
            labels64.data[std::size_t(b * 12 + t + 1)] = x.targets.data[std::size_t(b * 12 + t)];
    w.add<std::int64_t>("input_ids", ids64.cv());
    w.add<std::int64_t>("labels", labels64.cv());
    w.add<float>("logits", cview<float>{logits.data(), {2, 12, 64}});
    w.add<float>("loss", cview<float>{&loss, {1}});
    for (const parameter_entry& e : model.trainable_entries())
        w.add<float>("grad." + std::string(peft_prefix) + e.name, cview<float>(e.grad));
    w.save(dir / "expected.safetensors");
}

BOOST_AUTO_TEST_SUITE_END()
