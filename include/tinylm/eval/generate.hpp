// tinylm/eval/generate.hpp: autoregressive generation for one sequence with a KV cache.
//
// The prompt is run through the model once (prefill, in chunks), then each new token costs one forward
// step over a single position. on_token(token) is called as each token is chosen (stream it to the
// terminal); returning false stops early. Generation also stops at any of stop_tokens (which is not
// emitted) or after max_new_tokens.
// Speed, with no environment variable set: a decoded token opens ~33 OpenMP parallel regions (config B: per
// layer q/k/v together, o, gate/up together, down, plus attention over a long cache; then the head). The
// small loops between them (norms, rope, residuals, SwiGLU, attention over a short cache) run on the calling
// thread (core/simd.hpp, min_parallel_work), and products that share their input go to the backend together
// (gemm_group). Fewer regions means fewer thread wake-ups, which is what OMP_WAIT_POLICY=PASSIVE and busy
// machines make expensive (docs/performance.md, "Issue 17: decoding with default settings").
#pragma once

#include <tinylm/eval/sampling.hpp>

#include <vector>

namespace tl {

struct generation_options {
    int max_new_tokens = 128;
    std::vector<token_t> stop_tokens{};
    sampling_options sampling;
};

template <class Model, class OnToken>
std::vector<token_t> generate(const Model& model, std::span<const token_t> prompt, const generation_options& options,
                              OnToken&& on_token) {
    check(!prompt.empty(), "generate: the prompt must hold at least one token");
    const index_t capacity =
        std::min<index_t>(model.config().max_seq_len, index_t(prompt.size()) + options.max_new_tokens);
    check(index_t(prompt.size()) < capacity || options.max_new_tokens == 0, [&] {
        return "generate: the prompt has " + std::to_string(prompt.size()) + " tokens, the context is " +
               std::to_string(model.config().max_seq_len);
    });
    auto cache = model.make_cache(1, capacity);
    std::vector<float> logits(std::size_t(model.config().vocab_size));
    const tensor_view<float> logits_view{logits.data(), {1, model.config().vocab_size}};
    model.forward_cached(cache, cview<token_t>{prompt.data(), {1, index_t(prompt.size())}}, logits_view);
    std::vector<token_t> history(prompt.begin(), prompt.end()), output;
    sampler pick(model.config().vocab_size, options.sampling);
    for (int i = 0; i < options.max_new_tokens; ++i) {
        const token_t next = pick.sample(logits, history);
        if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) != options.stop_tokens.end()) break;
        output.push_back(next);
        history.push_back(next);
        if (!on_token(next) || cache.length() >= cache.capacity()) break;
        model.forward_cached(cache, cview<token_t>{&next, {1, 1}}, logits_view);
    }
    return output;
}

template <class Model>
std::vector<token_t> generate(const Model& model, std::span<const token_t> prompt, const generation_options& options) {
    return generate(model, prompt, options, [](token_t) { return true; });
}

} // namespace tl
