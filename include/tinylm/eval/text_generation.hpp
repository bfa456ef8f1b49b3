// tinylm/eval/text_generation.hpp: generation as text: tl::generate with the tokens decoded as they come
// (tokenizer/stream_decoder.hpp: whole UTF-8 characters only), stop strings (eval/stop_strings.hpp) and the
// reason generation ended, as an OpenAI-style client expects.
//
//   tl::text_generation_options o{.generation = folder.generation.options(64), .stop = {"\n\n"}};
//   tl::text_completion c = tl::generate_text(model, tok, prompt_ids, o, [](std::string_view piece) {
//       std::cout << piece << std::flush;
//       return true; // false stops generation (a client went away, Ctrl-C)
//   });
#pragma once

#include <tinylm/eval/generate.hpp>
#include <tinylm/eval/stop_strings.hpp>
#include <tinylm/tokenizer/stream_decoder.hpp>

#include <chrono>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

struct text_generation_options {
    generation_options generation{}; // max_new_tokens, stop token ids, sampling
    std::vector<std::string> stop{}; // stop strings (not part of the text)
    bool skip_special = true;        // special tokens are left out of the text
};

enum class finish_reason { stop, length, cancelled };
inline const char* finish_reason_name(finish_reason r) {
    return r == finish_reason::stop ? "stop" : r == finish_reason::length ? "length" : "cancelled";
}

struct text_completion {
    std::string text;            // what on_text received, joined
    std::vector<token_t> tokens; // the generated ids (up to the stop token or the token completing a stop string)
    std::size_t prompt_tokens = 0;
    std::size_t cached_tokens = 0; // prompt tokens taken from a prompt_cache (eval/generate.hpp), not run again
    finish_reason reason = finish_reason::stop; // stop: an end token or stop string; length: max tokens or context
    // Seconds from the call to the first new token (the prompt's prefill, and any wait for a place in a batch; 0 when
    // none came): the rest, over the tokens after the first, is the decoding rate.
    double first_token_seconds = 0;
};

// `reuse` (optional): a KV cache kept between generations (eval/generate.hpp, prompt_cache).
template <class Model, class OnText>
text_completion generate_text(const Model& model, const tokenizer& tok, std::span<const token_t> prompt,
                              const text_generation_options& options, OnText&& on_text,
                              prompt_cache<Model>* reuse = nullptr) {
    text_completion c;
    c.prompt_tokens = prompt.size();
    const auto start = std::chrono::steady_clock::now();
    stream_decoder decoder(tok, options.skip_special);
    stop_strings stops(options.stop);
    bool cancelled = false;
    auto emit = [&](const std::string& piece) {
        if (piece.empty()) return true;
        c.text += piece;
        if (!on_text(std::string_view(piece))) cancelled = true;
        return !cancelled;
    };
    c.tokens = generate(
        model, prompt, options.generation,
        [&](token_t id) {
            if (c.first_token_seconds == 0)
                c.first_token_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            const std::string piece = stops.feed(decoder.push(id));
            return emit(piece) && !stops.stopped();
        },
        reuse);
    if (reuse) c.cached_tokens = reuse->reused();
    if (!cancelled && !stops.stopped()) emit(stops.feed(decoder.finish()) + stops.flush());
    const index_t used = index_t(prompt.size() + c.tokens.size());
    if (cancelled)
        c.reason = finish_reason::cancelled;
    else if (stops.stopped())
        c.reason = finish_reason::stop;
    else if (int(c.tokens.size()) >= options.generation.max_new_tokens || used >= model.config().max_seq_len)
        c.reason = finish_reason::length;
    else
        c.reason = finish_reason::stop;
    return c;
}

} // namespace tl
