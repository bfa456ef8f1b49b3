// The open model: sizes read at run time, any loss from the final hidden states, freezing and row masks.
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/optim/adamw.hpp>

#include "../support/model_gradcheck.hpp"
#include "../support/random.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <numbers>

using namespace tl;
using tl::test::owned;

BOOST_AUTO_TEST_SUITE(open_model)

namespace {

struct batch {
    owned<token_t> ids, targets;
};
batch random_batch(index_t B, index_t T, index_t vocab, std::uint64_t seed) {
    batch b{owned<token_t>({B, T}), owned<token_t>({B, T})};
    counter_rng rng(seed);
    for (auto& v : b.ids.data)
        v = token_t(rng.below(std::uint64_t(vocab)));
    for (auto& v : b.targets.data)
        v = token_t(rng.below(std::uint64_t(vocab)));
    b.targets.data[3] = -100; // an ignored position
    return b;
}

bool same_bits(cview<float> a, cview<float> b) {
    return a.numel() == b.numel() && std::memcmp(a.data, b.data, std::size_t(a.numel()) * sizeof(float)) == 0;
}

// A Mistral-like configuration (GQA, per-layer window) to load into families::llama at run time.
constexpr model_config windowed{.vocab_size = 97,
                                .d_model = 48,
                                .n_layers = 3,
                                .n_heads = 6,
                                .n_kv_heads = 2,
                                .d_ff = 80,
                                .max_seq_len = 32,
                                .sliding_window = 5,
                                .full_attention_every = 2,
                                .init_std = 0.05};
struct windowed_static {
    static constexpr model_config value = windowed;
};

} // namespace

BOOST_AUTO_TEST_CASE(run_time_sizes_match_the_static_preset_bit_for_bit) {
    decoder<windowed_static, reference_cpu> fixed(11);
    decoder<families::llama, reference_cpu> family(windowed, 11);
    BOOST_TEST(family.config().d_model == 48);
    BOOST_TEST(family.parameter_count() == parameter_count(windowed));
    const batch b = random_batch(2, 12, windowed.vocab_size, 3);
    const float lf = fixed.loss(b.ids, b.targets), lr = family.loss(b.ids, b.targets);
    BOOST_TEST(std::memcmp(&lf, &lr, sizeof lf) == 0);
    fixed.backward();
    family.backward();
    const auto &ef = fixed.parameter_entries(), &er = family.parameter_entries();
    BOOST_TEST_REQUIRE(ef.size() == er.size());
    for (std::size_t i = 0; i < ef.size(); ++i) {
        BOOST_TEST(ef[i].name == er[i].name);
        BOOST_TEST(same_bits(ef[i].value, er[i].value), ef[i].name);
        BOOST_TEST(same_bits(ef[i].grad, er[i].grad), ef[i].name);
    }
}

BOOST_AUTO_TEST_CASE(a_fixed_size_that_disagrees_is_named) {
    model_config other = windowed;
    other.d_ff = 96;
    try {
        decoder<windowed_static, reference_cpu> m(other, 1);
        BOOST_FAIL("a d_ff of 96 was accepted by a type that fixes 80");
    } catch (const error& e) {
        BOOST_TEST(std::string(e.what()).find("d_ff") != std::string::npos, e.what());
    }
    model_config bad = windowed;
    bad.n_kv_heads = 4; // 6 heads are not a multiple of 4
    BOOST_CHECK_THROW((decoder<families::llama, reference_cpu>(bad, 1)), error);
}

// The cross-entropy of the LM head, written here from the hidden states, trains exactly like loss().
BOOST_AUTO_TEST_CASE(a_loss_written_outside_the_library_trains_through_the_hidden_states) {
    decoder<presets::tiny, reference_cpu> inside(5), outside(5);
    const index_t B = 2, T = 10, V = presets::tiny::value.vocab_size, d = presets::tiny::value.d_model;
    const batch b = random_batch(B, T, V, 9);
    inside.loss(b.ids, b.targets);
    inside.backward();

    const cview<float> h = outside.forward(b.ids);
    BOOST_TEST(h.dim(0) == B * T);
    BOOST_TEST(h.dim(1) == d);
    const parameter_entry& head = outside.parameter_entries().back(); // lm_head.weight (untied)
    BOOST_TEST_REQUIRE(head.name == "lm_head.weight");
    std::vector<double> dh(std::size_t(B * T * d), 0.0), dhead(std::size_t(V * d), 0.0);
    index_t counted = 0;
    for (index_t i = 0; i < B * T; ++i)
        counted += b.targets.data[std::size_t(i)] >= 0;
    for (index_t i = 0; i < B * T; ++i) {
        const token_t y = b.targets.data[std::size_t(i)];
        if (y < 0) continue;
        std::vector<double> z(static_cast<std::size_t>(V));
        double zmax = -1e300, sum = 0;
        for (index_t v = 0; v < V; ++v) {
            double s = 0;
            for (index_t k = 0; k < d; ++k)
                s += double(h.data[i * d + k]) * double(head.value.data[v * d + k]);
            z[std::size_t(v)] = s;
            zmax = std::max(zmax, s);
        }
        for (double& s : z)
            sum += (s = std::exp(s - zmax));
        for (index_t v = 0; v < V; ++v) {
            const double g = (z[std::size_t(v)] / sum - (v == y)) / double(counted);
            for (index_t k = 0; k < d; ++k) {
                dh[std::size_t(i * d + k)] += g * head.value.data[v * d + k];
                dhead[std::size_t(v * d + k)] += g * h.data[i * d + k];
            }
        }
    }
    std::vector<float> dh32(dh.begin(), dh.end());
    outside.backward_from_hidden(cview<float>{dh32.data(), {B * T, d}});
    for (std::size_t j = 0; j < dhead.size(); ++j)
        head.grad.data[j] += float(dhead[j]); // the head is the test's own layer here
    const auto &ei = inside.parameter_entries(), &eo = outside.parameter_entries();
    for (std::size_t i = 0; i < ei.size(); ++i) {
        const std::vector<float> a(eo[i].grad.begin(), eo[i].grad.end()), e(ei[i].grad.begin(), ei[i].grad.end());
        BOOST_TEST(tl::test::rel_error(a, e) < 1e-4, ei[i].name << ": " << tl::test::rel_error(a, e));
    }
}

// A classifier defined in this file (mean-pooled hidden states -> 2 classes) trains the decoder below it.
BOOST_AUTO_TEST_CASE(a_classification_loss_defined_here_is_learned) {
    decoder<presets::tiny> model(2);
    adamw opt(model, {.weight_decay = 0.0});
    const index_t B = 8, T = 12, d = presets::tiny::value.d_model;
    std::vector<float> w(std::size_t(2 * d)); // the classifier: two rows, trained by plain gradient descent
    counter_rng init(4);
    for (float& x : w)
        x = float(0.01 * init.normal());
    owned<token_t> ids({B, T});
    std::vector<int> label(static_cast<std::size_t>(B));
    auto loss_and_grad = [&](bool train, std::vector<float>* dh) {
        const cview<float> h = model.forward(ids, {}, train);
        double loss = 0;
        std::vector<float> dw(w.size(), 0.0f);
        for (index_t b = 0; b < B; ++b) {
            std::vector<double> pooled(std::size_t(d), 0.0);
            for (index_t t = 0; t < T; ++t)
                for (index_t k = 0; k < d; ++k)
                    pooled[std::size_t(k)] += h.data[(b * T + t) * d + k] / double(T);
            double z[2] = {0, 0};
            for (int c = 0; c < 2; ++c)
                for (index_t k = 0; k < d; ++k)
                    z[c] += w[std::size_t(c * d + k)] * pooled[std::size_t(k)];
            const double m = std::max(z[0], z[1]), s = std::exp(z[0] - m) + std::exp(z[1] - m);
            const int y = label[std::size_t(b)];
            loss += (std::log(s) + m - z[y]) / double(B);
            for (int c = 0; c < 2; ++c) {
                const double g = (std::exp(z[c] - m) / s - (c == y)) / double(B);
                for (index_t k = 0; k < d; ++k) {
                    dw[std::size_t(c * d + k)] += float(g * pooled[std::size_t(k)]);
                    if (dh)
                        for (index_t t = 0; t < T; ++t)
                            (*dh)[std::size_t((b * T + t) * d + k)] += float(g * w[std::size_t(c * d + k)] / double(T));
                }
            }
        }
        if (train)
            for (std::size_t j = 0; j < w.size(); ++j)
                w[j] -= 0.5f * dw[j];
        return loss;
    };
    counter_rng rng(8);
    double first = 0, last = 0;
    for (int step = 0; step < 100; ++step) {
        for (index_t b = 0; b < B; ++b) { // class 1: the sequence holds byte 'z'
            label[std::size_t(b)] = int(rng.below(2));
            for (index_t t = 0; t < T; ++t)
                ids.data[std::size_t(b * T + t)] = token_t('a' + rng.below(20));
            if (label[std::size_t(b)]) ids.data[std::size_t(b * T + rng.below(std::uint64_t(T)))] = 'z';
        }
        std::vector<float> dh(std::size_t(B * T * d), 0.0f);
        model.zero_grad();
        const double loss = loss_and_grad(true, &dh);
        model.backward_from_hidden(cview<float>{dh.data(), {B * T, d}});
        opt.step(3e-3);
        if (step < 5) first += loss / 5;
        if (step >= 95) last += loss / 5;
    }
    BOOST_TEST_MESSAGE("classification loss: first 5 steps " << first << ", last 5 " << last);
    BOOST_TEST(first > 0.6);
    BOOST_TEST(last < 0.3);
}

BOOST_AUTO_TEST_CASE(groups_freeze_at_run_time_and_rows_can_be_masked) {
    decoder<presets::tiny, reference_cpu> model(1);
    const auto count = [&] { return model.trainable_entries().size(); };
    const std::size_t all = model.parameter_entries().size();
    BOOST_TEST(count() == all);
    model.set_trainable(param_group::attention, false);
    for (const parameter_entry& e : model.parameter_entries())
        BOOST_TEST(e.trainable == (e.name.find("self_attn") == std::string::npos), e.name);
    model.set_trainable("layers.1.self_attn.q_proj", true);
    BOOST_TEST(count() == all - 4 * 2 + 1); // 2 layers x q, k, v, o frozen, one back
    model.set_trainable(param_group::attention, true);
    BOOST_TEST(count() == all);

    std::vector<std::uint8_t> mask(std::size_t(presets::tiny::value.vocab_size), 0);
    mask[7] = 1;
    model.set_row_mask(param_group::embedding, mask);
    for (const parameter_entry& e : model.parameter_entries())
        BOOST_TEST((e.row_mask != nullptr) == (e.group == param_group::embedding), e.name);
    BOOST_TEST((*model.parameter_entries().front().row_mask)[7] == 1);
    BOOST_CHECK_THROW(model.set_row_mask(param_group::norm, mask), error);
    BOOST_CHECK_THROW(model.set_row_mask(param_group::head, std::vector<std::uint8_t>(3)), error);
}

struct lora2 {
    static constexpr lora_config value{.rank = 2, .alpha = 4, .targets = lora_q | lora_v};
};
BOOST_AUTO_TEST_CASE(a_frozen_lora_base_cannot_be_unfrozen) {
    decoder<presets::tiny, reference_cpu, lora2> model(1);
    BOOST_TEST(model.trainable_entries().size() == 2u * 2u * 2u); // 2 layers x (q, v) x (A, B)
    BOOST_CHECK_THROW(model.set_trainable(param_group::mlp, true), error);
    model.set_trainable(param_group::adapter, false);
    BOOST_TEST(model.trainable_entries().empty());
}

// The whole model's gradients against central differences of its own f32 loss, in each block layout.
template <class Config, class Adapter = no_adapter>
double worst_finite_difference_error(const char* label) {
    decoder<Config, reference_cpu, Adapter> m(17);
    counter_rng rng(5);
    for (const parameter_entry& e : m.parameter_entries()) // B starts at zero: give A a gradient too
        if (e.name.find("lora_B") != std::string::npos)
            for (float& x : e.value)
                x = 0.2f * (float(rng.uniform()) - 0.5f);
    const batch b = random_batch(2, 7, Config::value.vocab_size, 5);
    m.zero_grad();
    m.loss(b.ids, b.targets);
    m.backward();
    return tl::test::worst_entry_fd_error(
        m.parameter_entries(), [&] { return double(m.loss(b.ids, b.targets)); }, label);
}

constexpr model_config small_block{.vocab_size = 23,
                                   .d_model = 16,
                                   .n_layers = 2,
                                   .n_heads = 4,
                                   .n_kv_heads = 2,
                                   .d_ff = 24,
                                   .max_seq_len = 8,
                                   .init_std = 0.2};
struct pre_rms_swiglu {
    static constexpr model_config value = small_block;
};
struct post_layernorm_gelu {
    static constexpr model_config value = [] {
        model_config c = small_block;
        c.norm = norm_kind::layernorm;
        c.mlp = mlp_kind::gelu;
        c.norm_position = norm_placement::post;
        return c;
    }();
};
struct post_rms_swiglu {
    static constexpr model_config value = [] {
        model_config c = small_block;
        c.norm_position = norm_placement::post;
        return c;
    }();
};

// Qwen3's QK-norm, with heads wider than d_model / n_heads (as Qwen3's).
struct qk_norm_block {
    static constexpr model_config value = [] {
        model_config c = small_block;
        c.qk_norm = true;
        c.d_head = 6;
        return c;
    }();
};

struct qk_norm_lora {
    static constexpr lora_config value{.rank = 2, .alpha = 4, .dropout = 0, .targets = lora_all};
};

// BERT's layout: bidirectional attention, post-norm, LayerNorm, GELU.
struct bert_like {
    static constexpr model_config value = [] {
        model_config c = post_layernorm_gelu::value;
        c.attention = attention_kind::bidirectional;
        return c;
    }();
};

BOOST_AUTO_TEST_CASE(pre_and_post_norm_blocks_match_finite_differences) {
    BOOST_TEST(worst_finite_difference_error<bert_like>("bidirectional, post-norm, LayerNorm, GELU") < 0.05);
    BOOST_TEST(worst_finite_difference_error<pre_rms_swiglu>("pre-norm, RMSNorm, SwiGLU") < 0.05);
    BOOST_TEST(worst_finite_difference_error<post_layernorm_gelu>("post-norm, LayerNorm, GELU") < 0.05);
    BOOST_TEST(worst_finite_difference_error<post_rms_swiglu>("post-norm, RMSNorm, SwiGLU") < 0.05);
    BOOST_TEST(worst_finite_difference_error<qk_norm_block>("pre-norm with QK-norm (Qwen3)") < 0.05);
    // LoRA on every projection of a QK-norm model: the adapters' gradients through the frozen norms.
    BOOST_TEST((worst_finite_difference_error<qk_norm_block, qk_norm_lora>("QK-norm with LoRA") < 0.05));
}

// Bidirectional: a position sees later tokens; right padding (key_lengths) hides the padded ones entirely.
BOOST_AUTO_TEST_CASE(bidirectional_attention_sees_ahead_and_ignores_padding) {
    decoder<bert_like, reference_cpu> m(4);
    const index_t B = 2, T = 6, d = bert_like::value.d_model;
    batch b = random_batch(B, T, bert_like::value.vocab_size, 8);
    const std::vector<index_t> lengths{6, 4};
    const cview<index_t> len{lengths.data(), {B}};
    auto hidden = [&] {
        const cview<float> h = m.forward(b.ids, {}, false, len);
        return std::vector<float>(h.data, h.data + h.numel());
    };
    const std::vector<float> before = hidden();
    b.ids.data[std::size_t(1 * T + 5)] = (b.ids.data[std::size_t(1 * T + 5)] + 1) % 23; // row 1, a padded position
    const std::vector<float> padded_changed = hidden();
    // Row 0 and the four real positions of row 1 (contiguous): bit-identical.
    const std::size_t real = std::size_t((T + 4) * d);
    BOOST_TEST(std::memcmp(before.data(), padded_changed.data(), real * sizeof(float)) == 0);
    b.ids.data[std::size_t(T - 1)] = (b.ids.data[std::size_t(T - 1)] + 1) % 23; // row 0, its last token
    const std::vector<float> last_changed = hidden();
    BOOST_TEST(!std::equal(before.begin(), before.begin() + d, last_changed.begin()), "position 0 sees ahead");
}

// Llama 3.1's rope_scaling (factor 8, low 1, high 4, original context 8192, theta 500000, head width 128):
// transformers' _compute_llama3_parameters keeps high frequencies, divides low ones by the factor and
// interpolates between; by hand for one frequency of each kind.
BOOST_AUTO_TEST_CASE(llama3_rope_scaling_by_hand) {
    const rope_llama3_scaling s{
        .factor = 8, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position = 8192};
    auto plain = [](int i) { return std::pow(500000.0, -2.0 * i / 128.0); };
    auto close = [](double a, double b) { return std::abs(a - b) <= 1e-6 * std::abs(b); };
    BOOST_TEST(close(rope_inverse_frequency(0, 64, 500000, s), plain(0)));       // wavelength 6.3 < 2048: kept
    BOOST_TEST(close(rope_inverse_frequency(63, 64, 500000, s), plain(63) / 8)); // 2.6e6 > 8192: scaled
    const double inv = plain(32), wavelength = 2 * std::numbers::pi / inv;       // 4443: between
    const double smooth = (8192 / wavelength - 1) / (4 - 1);
    BOOST_TEST(close(rope_inverse_frequency(32, 64, 500000, s), (1 - smooth) * inv / 8 + smooth * inv));
    BOOST_TEST(close(rope_inverse_frequency(32, 64, 500000), plain(32))); // no scaling
}

BOOST_AUTO_TEST_SUITE_END()

#include <tinylm/model/model.hpp>
struct lora_for_concept {
    static constexpr tl::lora_config value{.rank = 2, .alpha = 4, .targets = tl::lora_all, .quantized_base = true};
};
static_assert(tl::GenerativeModel<tl::decoder<tl::presets::tiny>>);
static_assert(tl::GenerativeModel<tl::decoder<tl::families::mixtral>>);
static_assert(tl::Model<tl::decoder<tl::presets::tiny, tl::reference_cpu, lora_for_concept>>);
