// tinylm/eval/generate_batch.hpp: several continuations of one prompt decoded together.
//
// The KV cache holds `count` sequences of one common length (model/kv_cache.hpp has no per-sequence positions or
// padding), so the sequences decoded together must share their prompt: the prompt is run through the model once
// and its keys and values copied to every row, then each step runs one token of every row in one forward pass, so
// each weight matrix is read once per step for all rows instead of once per row. Row r samples with seed + r and stops
// on its own (an end token, a stop string, its on_token returning false); a finished row keeps being fed its last
// token, and its outputs are ignored, until every row has finished. Row r's first token is sampled from the logits
// tl::generate computes; later steps are tl::generate's with seed + r, bit for bit where the products sum each row as
// alone (up to 8 rows: backend/gemv.hpp, but for f32 weights on a CPU without AVX2); beyond, a batched product may
// round differently from a single-row one, so a near tie can be sampled differently.
#pragma once

#include <tinylm/eval/text_generation.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

namespace tl {

// on_token(row, token) is called as each row's token is chosen; false finishes that row.
template <class Model, class OnToken>
std::vector<std::vector<token_t>> generate_batch(const Model& model, std::span<const token_t> prompt, int count,
                                                 const generation_options& options, OnToken&& on_token) {
    const index_t capacity =
        generation_capacity(model.config().max_seq_len, prompt.size(), options.max_new_tokens, "generate_batch");
    check(count >= 1, "generate_batch: count must be at least 1");
    const std::size_t rows = std::size_t(count), vocab = std::size_t(model.config().vocab_size);
    auto cache = model.make_cache(count, capacity);
    std::vector<float> logits(rows * vocab);
    const tensor_view<float> logits_view{logits.data(), {count, model.config().vocab_size}};
    { // the prompt runs once, as tl::generate runs it; every row starts from its keys, values and logits
        auto one = model.make_cache(1, index_t(prompt.size()));
        model.forward_cached(one, cview<token_t>{prompt.data(), {1, index_t(prompt.size())}},
                             tensor_view<float>{logits.data(), {1, model.config().vocab_size}});
        cache.copy_prefix(one, one.length());
        for (std::size_t r = 1; r < rows; ++r)
            std::copy_n(logits.data(), vocab, logits.data() + r * vocab);
    }
    std::vector<std::vector<token_t>> history(rows, std::vector<token_t>(prompt.begin(), prompt.end())), output(rows);
    std::vector<sampler> pick;
    for (std::size_t r = 0; r < rows; ++r) {
        sampling_options s = options.sampling;
        s.seed += r;
        pick.emplace_back(model.config().vocab_size, s);
    }
    std::vector<char> done(rows, 0);
    std::vector<token_t> next(rows, prompt.back());
    for (int i = 0; i < options.max_new_tokens; ++i) {
        for (std::size_t r = 0; r < rows; ++r) {
            if (done[r]) continue;
            const token_t t = pick[r].sample(std::span<const float>(logits.data() + r * vocab, vocab), history[r]);
            if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), t) != options.stop_tokens.end()) {
                done[r] = 1;
                continue;
            }
            output[r].push_back(t);
            history[r].push_back(t);
            next[r] = t;
            if (!on_token(r, t)) done[r] = 1;
        }
        if (std::all_of(done.begin(), done.end(), [](char d) { return d != 0; }) || cache.length() >= cache.capacity())
            break;
        model.forward_cached(cache, cview<token_t>{next.data(), {count, 1}}, logits_view);
    }
    return output;
}

// generate_text for `count` rows of one prompt (row r: seed + r), each with its own streaming decoder and stop
// strings; no streaming callback (the texts are returned whole).
template <class Model>
std::vector<text_completion> generate_text_batch(const Model& model, const tokenizer& tok,
                                                 std::span<const token_t> prompt, int count,
                                                 const text_generation_options& options) {
    std::vector<text_completion> out(static_cast<std::size_t>(count));
    std::vector<stream_decoder> decoders;
    std::vector<stop_strings> stops;
    for (int r = 0; r < count; ++r) {
        decoders.emplace_back(tok, options.skip_special);
        stops.emplace_back(options.stop);
    }
    const auto start = std::chrono::steady_clock::now();
    const auto tokens = generate_batch(model, prompt, count, options.generation, [&](std::size_t r, token_t id) {
        if (out[r].first_token_seconds == 0)
            out[r].first_token_seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        out[r].text += stops[r].feed(decoders[r].push(id));
        return !stops[r].stopped();
    });
    const index_t used_max = model.config().max_seq_len;
    for (std::size_t r = 0; r < out.size(); ++r) {
        text_completion& c = out[r];
        c.tokens = tokens[r];
        c.prompt_tokens = prompt.size();
        if (!stops[r].stopped()) c.text += stops[r].feed(decoders[r].finish()) + stops[r].flush();
        const bool full = int(c.tokens.size()) >= options.generation.max_new_tokens ||
                          index_t(prompt.size() + c.tokens.size()) >= used_max;
        c.reason = !stops[r].stopped() && full ? finish_reason::length : finish_reason::stop;
    }
    return out;
}

} // namespace tl
