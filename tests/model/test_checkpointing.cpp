// Gradient checkpointing (decoder::set_gradient_checkpointing): the recomputed forward must give the same
// loss, gradients and expert counts, bit for bit, as the stored one, for dense, sliding-window, MoE (pooled
// and per-layer balance), packed documents and LoRA with dropout; and the activation arena must shrink.
#include "../support/random.hpp"
#include "fixture_configs.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/model/decoder.hpp>

#include <boost/test/unit_test.hpp>

#include <cstring>
#include <string>

using namespace tl;
using tl::test::owned;

namespace {

struct moe_per_layer {
    static constexpr model_config value = [] {
        model_config c = test::mixtral_moe::value;
        c.moe.balance_per_layer = true;
        return c;
    }();
};
struct lora_dropout {
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0.25f, .targets = lora_all};
};
struct eight_layers { // enough layers for the kept residual stream to be small next to the layers' activations
    static constexpr model_config value{
        .vocab_size = 256, .d_model = 64, .n_layers = 8, .n_heads = 4, .n_kv_heads = 2, .d_ff = 192, .max_seq_len = 64};
};

struct batch {
    owned<token_t> ids, targets;
    owned<index_t> doc_start;
};

batch make_batch(index_t B, index_t T, index_t vocab, bool packed) {
    batch b{owned<token_t>({B, T}), owned<token_t>({B, T}), owned<index_t>({B, T})};
    counter_rng rng(17);
    for (index_t i = 0; i < B * T; ++i) {
        b.ids.data[i] = token_t(rng.below(std::uint64_t(vocab)));
        b.targets.data[i] = token_t(rng.below(std::uint64_t(vocab)));
        const index_t t = i % T;
        b.doc_start.data[i] = packed && t >= T / 3 ? T / 3 : 0; // two documents per row
    }
    return b;
}

bool same_bits(cview<float> a, cview<float> b) {
    return a.numel() == b.numel() && std::memcmp(a.data, b.data, std::size_t(a.numel()) * sizeof(float)) == 0;
}

// Two models from one seed, one checkpointing; two training steps' worth of loss() + backward() each (the
// second step after an SGD update, so that a stale recompute would show).
template <class Model>
void check_identical(const std::string& label, bool packed = false) {
    Model stored(7), recomputed(7);
    recomputed.set_gradient_checkpointing(true);
    BOOST_TEST(recomputed.gradient_checkpointing());
    constexpr index_t B = 2, T = 12;
    const batch b = make_batch(B, T, stored.config().vocab_size, packed);
    const cview<index_t> doc = packed ? b.doc_start.cv() : cview<index_t>{};
    for (int step = 0; step < 2; ++step) {
        Model* models[] = {&stored, &recomputed};
        float losses[2];
        for (int m = 0; m < 2; ++m) {
            models[m]->zero_grad();
            losses[m] = models[m]->loss(b.ids, b.targets, doc);
            models[m]->backward();
        }
        BOOST_TEST(losses[0] == losses[1], label << " step " << step);
        const auto &ea = stored.parameter_entries(), &eb = recomputed.parameter_entries();
        BOOST_TEST_REQUIRE(ea.size() == eb.size());
        std::size_t compared = 0;
        for (std::size_t i = 0; i < ea.size(); ++i) {
            if (!ea[i].grad.data) continue;
            ++compared;
            BOOST_TEST(same_bits(ea[i].grad, eb[i].grad), label << " step " << step << ": " << ea[i].name);
        }
        BOOST_TEST(compared > 0u);
        for (index_t l = 0; l < stored.config().n_layers; ++l)
            BOOST_TEST((stored.expert_counts(l) == recomputed.expert_counts(l)), label << " layer " << l);
        for (Model* m : models) // the same plain SGD step on both
            for (const parameter_entry& e : m->trainable_entries())
                for (index_t i = 0; i < e.value.numel(); ++i)
                    e.value[i] -= 0.5f * e.grad[i];
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(gradient_checkpointing)

BOOST_AUTO_TEST_CASE(recomputed_gradients_are_bit_identical) {
    check_identical<decoder<test::llama_gqa, default_backend>>("dense");
    check_identical<decoder<test::llama_gqa, default_backend>>("dense, packed documents", true);
    check_identical<decoder<test::ministral_layers, default_backend>>("per-layer sliding window");
    check_identical<decoder<test::qwen3_qknorm, default_backend>>("QK-norm");
    check_identical<decoder<test::mixtral_moe, default_backend>>("moe, pooled balance");
    check_identical<decoder<moe_per_layer, default_backend>>("moe, per-layer balance");
    check_identical<decoder<test::llama_gqa, default_backend, lora_dropout>>("lora with dropout");
}

BOOST_AUTO_TEST_CASE(activation_memory_keeps_one_layer) {
    decoder<eight_layers, default_backend> model(1);
    model.plan(4, 64);
    const std::size_t full = model.activation_bytes();
    model.set_gradient_checkpointing(true); // re-plans the same shape
    const std::size_t kept = model.activation_bytes();
    BOOST_TEST_MESSAGE("activation arena: " << full << " bytes stored, " << kept << " with checkpointing");
    BOOST_TEST(kept < full / 2);
    model.set_gradient_checkpointing(false);
    BOOST_TEST(model.activation_bytes() == full);
}

BOOST_AUTO_TEST_CASE(switching_drops_the_pending_backward) {
    decoder<test::llama_gqa, default_backend> model(3);
    const batch b = make_batch(1, 8, 64, false);
    model.loss(b.ids, b.targets);
    model.set_gradient_checkpointing(true);
    BOOST_CHECK_THROW(model.backward(), tl::error);
}

BOOST_AUTO_TEST_SUITE_END()
