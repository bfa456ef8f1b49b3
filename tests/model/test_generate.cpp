// Generation: the KV-cache path reproduces the full forward pass position by position, chunked prefill
// included, and sampling follows its definitions.
#include "../support/kv_cache.hpp"
#include "../support/random.hpp"
#include "fixture_configs.hpp"

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/eval/generate.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/decoder.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <set>

using namespace tl;
using namespace tl::test;

namespace {

template <class Model>
void load_fixture(Model& model, const std::string& name) {
    const safetensors_reader fx(std::filesystem::path(TINYLM_SOURCE_DIR) / "tests/reference/fixtures" /
                                (name + ".safetensors"));
    for (const parameter_entry& e : model.parameter_entries())
        fx.read("param." + e.name, e.value);
}

// Logits of every position from the training forward pass, against the cache fed in uneven chunks.
template <class Config>
void check_cache_matches_full_forward(const std::string& name) {
    decoder<Config, reference_cpu> model(0);
    load_fixture(model, name);
    const index_t B = 2, T = 11, V = Config::value.vocab_size;
    owned<token_t> ids({B, T});
    counter_rng rng(5);
    for (auto& id : ids.data)
        id = token_t(rng.below(std::uint64_t(V)));
    auto cache = model.make_cache(B, 16, /*chunk=*/3);
    // a prefill of 5 (two chunks of 3), two single tokens, then 4 more
    const double worst = cached_vs_full_logits(model, cache, ids, {5, 1, 1, 4});
    owned<float> last({B, V});
    BOOST_TEST(cache.length() == T);
    BOOST_TEST_MESSAGE(name << ": cached vs full logits " << worst);
    BOOST_TEST(worst < 1e-5, name);
    BOOST_CHECK_THROW(model.forward_cached(cache, owned<token_t>({B, 6}, 1), last), tl::error); // over capacity
    // A bf16 cache: keys and values rounded once (8 bits of mantissa), so the logits move by about bf16's rounding
    // (measured 3.1e-3, 1.6e-2 and 5.0e-3 for llama_gqa, mistral_window and qwen2_tied; bf16 weights: up to 2e-2).
    model.set_kv_precision(kv_precision::bf16);
    auto half = model.make_cache(B, 16, /*chunk=*/3);
    BOOST_TEST((half.precision() == kv_precision::bf16));
    const double worst_bf16 = cached_vs_full_logits(model, half, ids, {5, 1, 1, 4});
    BOOST_TEST_MESSAGE(name << ": cached in bf16 vs full logits " << worst_bf16);
    BOOST_TEST((worst_bf16 > 1e-4 && worst_bf16 < 3e-2), name << " " << worst_bf16); // rounded, and close
    BOOST_CHECK_THROW(half.copy_prefix(cache, 1), tl::error);                        // another precision
}

} // namespace

BOOST_AUTO_TEST_SUITE(generation)

BOOST_AUTO_TEST_CASE(kv_cache_matches_full_forward) {
    check_cache_matches_full_forward<test::llama_gqa>("llama_gqa");
    check_cache_matches_full_forward<test::mistral_window>("mistral_window"); // window 4 < 11 positions
    check_cache_matches_full_forward<test::qwen2_tied>("qwen2_tied");
    check_cache_matches_full_forward<test::qwen3_qknorm>("qwen3_qknorm");
}

// A cache cut back (truncate) or copied into a larger one (copy_prefix), then fed other tokens: the logits of a
// fresh cache fed the same sequence, within f32 rounding (the chunks differ).
BOOST_AUTO_TEST_CASE(kv_cache_truncate_and_copy_prefix) {
    decoder<test::llama_gqa, eigen_cpu> model(0);
    load_fixture(model, "llama_gqa");
    const index_t V = test::llama_gqa::value.vocab_size;
    const std::vector<token_t> a{3, 14, 15, 9, 2}, b{7, 1, 12}, c{5, 8, 4, 6};
    auto last_logits = [&](auto& cache, const std::vector<token_t>& ids) {
        owned<float> out({1, V});
        model.forward_cached(cache, cview<token_t>{ids.data(), {1, index_t(ids.size())}}, out);
        return out.data;
    };
    std::vector<token_t> ac = a;
    ac.insert(ac.end(), c.begin(), c.end());
    auto fresh = model.make_cache(1, 16);
    const std::vector<float> want = last_logits(fresh, ac);
    auto cut = model.make_cache(1, 16);
    last_logits(cut, a);
    last_logits(cut, b);
    cut.truncate(index_t(a.size()));
    BOOST_TEST(cut.length() == index_t(a.size()));
    BOOST_TEST(rel_error(last_logits(cut, c), want) < 1e-5);
    auto small = model.make_cache(1, 8), large = model.make_cache(1, 16);
    last_logits(small, a);
    large.copy_prefix(small, index_t(a.size()));
    BOOST_TEST(rel_error(last_logits(large, c), want) < 1e-5);
    BOOST_CHECK_THROW(cut.truncate(cut.length() + 1), tl::error);
    // One sequence given to every row of a batch (generate_batch's prompt): each row goes on as the fresh cache.
    auto rows = model.make_cache(3, 16);
    rows.copy_prefix(small, index_t(a.size()));
    std::vector<token_t> c3;
    for (int r = 0; r < 3; ++r)
        c3.insert(c3.end(), c.begin(), c.end());
    owned<float> out({3, V});
    model.forward_cached(rows, cview<token_t>{c3.data(), {3, index_t(c.size())}}, out);
    for (index_t r = 0; r < 3; ++r)
        BOOST_TEST(rel_error(std::vector<float>(out.data.begin() + r * V, out.data.begin() + (r + 1) * V), want) <
                   1e-5);
    auto two = model.make_cache(2, 16);
    BOOST_CHECK_THROW(rows.copy_prefix(two, 0), tl::error); // 2 rows into 3: neither the same batch nor one
}

// forward_each: sequences of different lengths, each in its own cache (capacities differ), decoded together give
// the logits each gives alone: bit for bit where the products read decoding copies of the weights, and for f32
// weights on CPUs with AVX2 or AVX-512 (backend/gemv.hpp: each row summed as alone), else within f32 rounding
// through the GEMM library; across a sliding window (mistral_window: 4), with tied
// embeddings and with experts (each token routed on its own); with f32 and bf16 KV caches. A full cache, one of two
// sequences, or caches of two precisions together are refused.
template <class Config>
void check_forward_each(const std::string& name) {
    decoder<Config> model(0);
    load_fixture(model, name);
    using cache_t = decltype(model.make_cache(1, 1));
    const index_t V = Config::value.vocab_size;
    const std::vector<std::vector<token_t>> prompts{{3, 14, 15, 9, 2}, {7, 1, 12, 5, 8, 4, 6, 11, 13}, {10}};
    const std::vector<index_t> capacities{16, 24, 12};
    const std::vector<std::vector<token_t>> steps{{4, 9, 2, 7, 1}, {2, 2, 5, 3, 12}, {6, 0, 8, 14, 3}};
    auto prefilled = [&](std::size_t r) {
        cache_t c = model.make_cache(1, capacities[r]);
        owned<float> logits({1, V});
        model.forward_cached(c, cview<token_t>{prompts[r].data(), {1, index_t(prompts[r].size())}}, logits);
        return c;
    };
    for (const auto& [copied, kv] : {std::pair{true, kv_precision::f32}, std::pair{false, kv_precision::f32},
                                     std::pair{false, kv_precision::bf16}}) {
        model.set_kv_precision(kv);
        std::optional<decoding_weights> copies;
        if (copied) copies.emplace(model.parameter_entries(), decoding_format::q8_0);
        std::vector<cache_t> alone, together;
        for (std::size_t r = 0; r < prompts.size(); ++r)
            alone.push_back(prefilled(r)), together.push_back(prefilled(r));
        std::vector<cache_t*> caches{&together[0], &together[1], &together[2]};
        for (std::size_t i = 0; i < steps.front().size(); ++i) {
            std::vector<token_t> ids;
            std::vector<float> want;
            for (std::size_t r = 0; r < prompts.size(); ++r) {
                ids.push_back(steps[r][i]);
                owned<float> one({1, V});
                model.forward_cached(alone[r], cview<token_t>{&steps[r][i], {1, 1}}, one);
                want.insert(want.end(), one.data.begin(), one.data.end());
            }
            owned<float> got({3, V});
            model.forward_each(caches, ids, got);
            if (copied || detail::gemv_f32_has_kernel())
                BOOST_TEST(got.data == want,
                           name << " step " << i << " kv " << to_string(kv) << " gap " << rel_error(got.data, want));
            else
                BOOST_TEST(rel_error(got.data, want) < 1e-5, name << " step " << i << " kv " << to_string(kv));
            for (std::size_t r = 0; r < prompts.size(); ++r)
                BOOST_TEST(together[r].length() == alone[r].length());
        }
    }
    cache_t half = model.make_cache(1, 8); // bf16, the last precision above
    model.set_kv_precision(kv_precision::f32);
    cache_t full = model.make_cache(1, 2), two = model.make_cache(2, 8), other = model.make_cache(1, 8);
    owned<float> logits({1, V});
    const std::vector<token_t> pair{1, 2};
    model.forward_cached(full, cview<token_t>{pair.data(), {1, 2}}, logits);
    std::vector<cache_t*> refused{&full};
    BOOST_CHECK_THROW(model.forward_each(refused, std::vector<token_t>{3}, logits), tl::error);
    refused = {&two};
    BOOST_CHECK_THROW(model.forward_each(refused, std::vector<token_t>{3}, logits), tl::error);
    refused = {&half, &other}; // caches of two precisions
    owned<float> two_logits({2, V});
    BOOST_CHECK_THROW(model.forward_each(refused, std::vector<token_t>{3, 4}, two_logits), tl::error);
}

BOOST_AUTO_TEST_CASE(forward_each_decodes_sequences_together_as_alone) {
    check_forward_each<test::llama_gqa>("llama_gqa");
    check_forward_each<test::mistral_window>("mistral_window");
    check_forward_each<test::qwen2_tied>("qwen2_tied");
    check_forward_each<test::qwen3_qknorm>("qwen3_qknorm");
    check_forward_each<test::mixtral_moe>("mixtral_moe");
}

// prompt_cache: a prompt that extends the last one runs only its new tokens, with the tokens of a fresh generation;
// a cache too small for the next prompt grows (its prefix copied); another prompt starts over.
BOOST_AUTO_TEST_CASE(prompt_cache_runs_only_the_new_tokens) {
    using model_t = decoder<test::llama_gqa, eigen_cpu>;
    model_t model(0);
    load_fixture(model, "llama_gqa");
    const generation_options greedy{.max_new_tokens = 6, .stop_tokens = {}, .sampling = {.temperature = 0}};
    prompt_cache<model_t> pc;
    auto run = [&](const std::vector<token_t>& prompt, prompt_cache<model_t>* reuse) {
        return generate(
            model, prompt, greedy, [](token_t) { return true; }, reuse);
    };
    const std::vector<token_t> first{3, 14, 15, 9};
    const std::vector<token_t> out1 = run(first, &pc);
    BOOST_TEST(pc.reused() == 0u);
    BOOST_TEST(out1 == run(first, nullptr));
    std::vector<token_t> second = first; // the first turn, its answer, a new message: longer than the cache's room
    second.insert(second.end(), out1.begin(), out1.end());
    second.insert(second.end(), {7, 1, 12, 5});
    const std::vector<token_t> out2 = run(second, &pc);
    BOOST_TEST(pc.reused() == first.size() + out1.size()); // the answer's last token was fed too (max tokens)
    BOOST_TEST(out2 == run(second, nullptr));
    BOOST_TEST(run(second, &pc) == out2); // the same prompt again: all but its last token from the cache
    BOOST_TEST(pc.reused() == second.size() - 1);
    const std::vector<token_t> other{4, 14, 15, 9};
    BOOST_TEST(run(other, &pc) == run(other, nullptr));
    BOOST_TEST(pc.reused() == 0u);
}

// Two conversations taking turns in a two-slot cache: each turn finds its own conversation, a third conversation
// sharing their first tokens starts in the older slot with that prefix copied, and every answer is the one an empty
// cache gives.
BOOST_AUTO_TEST_CASE(prompt_cache_slots_keep_conversations_apart) {
    using model_t = decoder<test::llama_gqa, eigen_cpu>;
    model_t model(0);
    load_fixture(model, "llama_gqa");
    const generation_options greedy{.max_new_tokens = 4, .stop_tokens = {}, .sampling = {.temperature = 0}};
    prompt_cache<model_t> pc(2);
    BOOST_TEST(pc.slots() == 2u);
    auto run = [&](const std::vector<token_t>& prompt, prompt_cache<model_t>* reuse) {
        return generate(
            model, prompt, greedy, [](token_t) { return true; }, reuse);
    };
    // A conversation's next turn: what it had, the answer, a new message.
    auto next_turn = [](std::vector<token_t> had, const std::vector<token_t>& answer, std::vector<token_t> message) {
        had.insert(had.end(), answer.begin(), answer.end());
        had.insert(had.end(), message.begin(), message.end());
        return had;
    };
    const std::vector<token_t> a1{2, 8, 3, 14, 15}, b1{2, 8, 6, 1, 1};
    const std::vector<token_t> a_out = run(a1, &pc);
    const std::size_t a_slot = pc.slot_taken();
    const std::vector<token_t> b_out = run(b1, &pc); // shares 2 of a's 9 tokens: a slot of its own
    BOOST_TEST(pc.reused() == 2u);
    BOOST_TEST(pc.slot_taken() != a_slot);
    BOOST_TEST(b_out == run(b1, nullptr));
    const std::vector<token_t> a2 = next_turn(a1, a_out, {7, 9});
    BOOST_TEST(run(a2, &pc) == run(a2, nullptr));
    BOOST_TEST(pc.reused() == a1.size() + a_out.size()); // the whole first turn, though b came in between
    BOOST_TEST(pc.slot_taken() == a_slot);
    const std::vector<token_t> b2 = next_turn(b1, b_out, {4});
    BOOST_TEST(run(b2, &pc) == run(b2, nullptr));
    BOOST_TEST(pc.reused() == b1.size() + b_out.size());
    const std::vector<token_t> c1{2, 8, 3, 5}; // a new conversation: takes a's slot (the older), with a's prefix
    BOOST_TEST(run(c1, &pc) == run(c1, nullptr));
    BOOST_TEST(pc.reused() == 3u);
    BOOST_TEST(pc.slot_taken() == a_slot);
    BOOST_TEST(run(b2, &pc) == run(b2, nullptr)); // b is still whole
    BOOST_TEST(pc.reused() == b2.size() - 1);
    prompt_cache<model_t> one(1); // one slot: the conversations evict each other
    run(a1, &one);
    run(b1, &one);
    run(a2, &one);
    BOOST_TEST(one.reused() == 2u);
    // Slots in use by generations still running (continuous_batch) are never taken, but their prefixes are copied:
    // b's next turn while b's slot runs another generation goes to the other slot, with b's tokens.
    const std::size_t b_slot = 1 - a_slot;
    const std::vector<std::size_t> in_use{b_slot};
    auto& cache = pc.take(model, b2, 32, in_use);
    BOOST_TEST(pc.slot_taken() == a_slot);
    BOOST_TEST(pc.reused() == b2.size() - 1);
    BOOST_TEST(cache.length() == index_t(b2.size() - 1));
    pc.hold(a_slot, b2);
    const std::vector<std::size_t> all{0, 1};
    BOOST_CHECK_THROW(pc.take(model, b2, 32, all), tl::error);
}

BOOST_AUTO_TEST_CASE(greedy_generation_is_the_argmax_of_the_full_forward) {
    decoder<test::llama_gqa, eigen_cpu> model(0);
    load_fixture(model, "llama_gqa");
    const std::vector<token_t> prompt{3, 14, 15, 9};
    const auto out = generate(model, prompt, {.max_new_tokens = 8, .stop_tokens = {}, .sampling = {.temperature = 0}});
    BOOST_TEST(out.size() == 8u);
    std::vector<token_t> seq = prompt;
    for (token_t expected : out) {
        const index_t T = index_t(seq.size()), V = test::llama_gqa::value.vocab_size;
        owned<float> logits({1, T, V});
        model.logits(cview<token_t>{seq.data(), {1, T}}, logits);
        const auto last = logits.data.begin() + (T - 1) * V;
        BOOST_TEST(expected == token_t(std::max_element(last, last + V) - last));
        seq.push_back(expected);
    }
    // Stop tokens end generation without being emitted.
    const auto stopped =
        generate(model, prompt, {.max_new_tokens = 8, .stop_tokens = {out[2]}, .sampling = {.temperature = 0}});
    BOOST_TEST(stopped.size() == 2u);
}

// The weights of `e` rounded to what a `format` copy holds: bf16; q8_0 (per row's block of 32, d = max |w| / 127,
// d round(w / d)); or q4_0 (m the block's weight of largest magnitude, d = m / -8, d (min(15, floor(w / d + 8.5)) -
// 8)).
void round_to(decoding_format format, const parameter_entry& e) {
    if (format == decoding_format::bf16) {
        for (float& w : e.value)
            w = float(bf16(w));
        return;
    }
    // Stacked experts (E, rows, cols): E * rows rows, as decoding_weights copies them.
    const index_t cols = e.value.shape[e.value.shape.rank - 1], rows = e.value.numel() / cols;
    for (index_t r = 0; r < rows; ++r)
        for (index_t p0 = 0; p0 < cols; p0 += 32) {
            float* w = e.value.data + r * cols;
            const index_t p1 = std::min(cols, p0 + 32);
            float largest = 0, m = 0;
            for (index_t p = p0; p < p1; ++p)
                if (std::abs(w[p]) > largest) largest = std::abs(w[p]), m = w[p];
            const float d = format == decoding_format::q8_0 ? largest / 127 : m / -8;
            for (index_t p = p0; p < p1; ++p)
                w[p] = d == 0                            ? 0.0f
                       : format == decoding_format::q8_0 ? d * std::round(w[p] / d)
                                                         : d * (std::min(15.0f, std::floor(w[p] / d + 8.5f)) - 8);
        }
}

// Decoding with bf16 or q8_0 copies of the weights (backend/decoding_weights.hpp): the logits of one-token steps
// after a prefill. Weights that are such numbers already give the f32 steps' logits (the sums in another order),
// through every projection and the head (tied to the embedding in qwen2_tied); other weights give logits within the
// format's rounding, and different ones (the copies were read); after the copies are gone the f32 logits come back.
template <class Config>
void check_copied_decoding(const std::string& name, decoding_format format) {
    decoder<Config> model(0);
    const index_t V = Config::value.vocab_size;
    const std::vector<token_t> prompt{3, 14, 15, 9, 2}, steps{7, 1, 12, 5, 8, 4};
    auto step_logits = [&] {
        auto cache = model.make_cache(1, 16);
        owned<float> logits({1, V});
        model.forward_cached(cache, cview<token_t>{prompt.data(), {1, index_t(prompt.size())}}, logits);
        std::vector<float> all;
        for (const token_t t : steps) {
            model.forward_cached(cache, cview<token_t>{&t, {1, 1}}, logits);
            all.insert(all.end(), logits.data.begin(), logits.data.end());
        }
        return all;
    };
    auto gap = [](const std::vector<float>& a, const std::vector<float>& b) {
        double worst = 0, scale = 0;
        for (std::size_t i = 0; i < a.size(); ++i)
            worst = std::max(worst, double(std::abs(a[i] - b[i]))), scale = std::max(scale, double(std::abs(b[i])));
        return worst / scale;
    };
    // Measured: bf16 4.4e-3 and 4.9e-3, q8_0 1.5e-2 and 1.4e-2, q4_0 0.36 and 0.36 (llama_gqa, qwen2_tied). q8_0's
    // rounding error is about 4x bf16's on these weights (rms d / sqrt(12) with d = max |w| / 127 over 32, against 2^-9
    // / sqrt(3) |w|), q4_0's about 16x q8_0's (d = max |w| / 8): on these tiny random models (32 wide) a third of the
    // logits' scale; llama.cpp's q4_0 rounds alike.
    const double bound = format == decoding_format::bf16 ? 2e-2 : format == decoding_format::q8_0 ? 5e-2 : 0.5;
    for (const bool rounded : {true, false}) {
        load_fixture(model, name);
        if (rounded)
            for (const parameter_entry& e : model.parameter_entries())
                if (e.value.shape.rank >= 2) round_to(format, e);
        const std::vector<float> f32 = step_logits();
        std::vector<float> with_copies;
        {
            const decoding_weights copies(model.parameter_entries(), format);
            with_copies = step_logits();
        }
        BOOST_TEST_MESSAGE(name << ", " << to_string(format) << (rounded ? ", rounded weights" : ", f32 weights")
                                << ": logits gap " << gap(with_copies, f32));
        if (rounded)
            BOOST_TEST(gap(with_copies, f32) < 1e-5, name << " " << to_string(format));
        else
            BOOST_TEST((gap(with_copies, f32) > 1e-5 && gap(with_copies, f32) < bound),
                       name << " " << to_string(format));
        BOOST_TEST(step_logits() == f32, name);
    }
}

BOOST_AUTO_TEST_CASE(bf16_decoding_weights_in_the_decoding_steps) {
    check_copied_decoding<test::llama_gqa>("llama_gqa", decoding_format::bf16);
    check_copied_decoding<test::qwen2_tied>("qwen2_tied", decoding_format::bf16);
}

BOOST_AUTO_TEST_CASE(q8_0_decoding_weights_in_the_decoding_steps) {
    check_copied_decoding<test::llama_gqa>("llama_gqa", decoding_format::q8_0);
    check_copied_decoding<test::qwen2_tied>("qwen2_tied", decoding_format::q8_0);
    check_copied_decoding<test::mixtral_moe>("mixtral_moe", decoding_format::q8_0); // experts copied too
}

BOOST_AUTO_TEST_CASE(q4_0_decoding_weights_in_the_decoding_steps) {
    check_copied_decoding<test::llama_gqa>("llama_gqa", decoding_format::q4_0);
    check_copied_decoding<test::qwen2_tied>("qwen2_tied", decoding_format::q4_0);
    check_copied_decoding<test::mixtral_moe>("mixtral_moe", decoding_format::q4_0); // experts copied too
}

BOOST_AUTO_TEST_CASE(sampling_definitions) {
    const std::vector<float> logits{2.0f, 1.0f, 0.5f, -1.0f, 3.0f};
    // Same seed, same draws.
    sampler a(5, {.temperature = 1.0, .seed = 7}), b(5, {.temperature = 1.0, .seed = 7});
    for (int i = 0; i < 50; ++i)
        BOOST_TEST_REQUIRE(a.sample(logits, {}) == b.sample(logits, {}));
    // top-k = 2 only ever picks the two largest logits (tokens 4 and 0).
    sampler k2(5, {.top_k = 2, .seed = 1});
    std::map<token_t, int> counts;
    for (int i = 0; i < 2000; ++i)
        ++counts[k2.sample(logits, {})];
    BOOST_TEST(counts.size() == 2u);
    BOOST_TEST((counts.contains(4) && counts.contains(0)));
    // Frequencies follow softmax: p(4) / p(0) = e^(3-2).
    BOOST_TEST(std::abs(double(counts[4]) / counts[0] - std::exp(1.0)) < 0.3);
    // top-p = 0.5: token 4 alone has probability 0.61 >= 0.5.
    sampler p(5, {.top_p = 0.5, .seed = 2});
    for (int i = 0; i < 100; ++i)
        BOOST_TEST_REQUIRE(p.sample(logits, {}) == 4);
    // A strong repetition penalty moves greedy away from a token already seen.
    sampler rep(5, {.temperature = 0, .repetition_penalty = 2.0});
    const std::vector<token_t> history{4};
    BOOST_TEST(rep.sample(logits, history) == 0); // 3.0 / 2 = 1.5 < 2.0
    BOOST_CHECK_THROW(sampler(5, {.top_p = 0.0}), tl::error);
}

// top-p without top-k sorts only as much of the vocabulary as the nucleus needs: the draws stay inside the nucleus
// of the definition (every token sorted, the smallest most likely set reaching p), here hundreds of tokens wide.
BOOST_AUTO_TEST_CASE(top_p_nucleus_on_a_wide_vocabulary) {
    const index_t V = 3000;
    std::vector<float> logits(static_cast<std::size_t>(V));
    counter_rng g(5, 1);
    for (float& z : logits)
        z = float(1.5 * g.normal());
    logits[17] = logits[18]; // a tie, broken by id
    const double top_p = 0.9, temperature = 0.8;
    std::vector<index_t> order(static_cast<std::size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return logits[a] > logits[b]; });
    const float zmax = logits[std::size_t(order[0])];
    double total = 0;
    for (float z : logits)
        total += std::exp((z - zmax) / temperature);
    std::set<token_t> nucleus;
    double cumulative = 0, top_weight = 0;
    for (index_t id : order) {
        nucleus.insert(token_t(id));
        cumulative += std::exp((logits[std::size_t(id)] - zmax) / temperature) / total;
        if (cumulative >= top_p) break;
    }
    top_weight = 1 / total / cumulative;       // the most likely token's share of the nucleus
    BOOST_TEST_REQUIRE(nucleus.size() > 512u); // past the first two sorted prefixes (64, 512)
    sampler s(V, {.temperature = temperature, .top_k = 0, .top_p = top_p, .seed = 3});
    int outside = 0, most_likely = 0;
    const int draws = 4000;
    for (int i = 0; i < draws; ++i) {
        const token_t t = s.sample(logits, {});
        outside += !nucleus.contains(t);
        most_likely += t == token_t(order[0]);
    }
    BOOST_TEST(outside == 0);
    BOOST_TEST(std::abs(double(most_likely) / draws - top_weight) < 4 * std::sqrt(top_weight / draws) + 1e-3);
}

BOOST_AUTO_TEST_SUITE_END()
