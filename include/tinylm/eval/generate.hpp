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

#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tl {

struct generation_options {
    int max_new_tokens = 128;
    std::vector<token_t> stop_tokens{};
    sampling_options sampling;
};

// KV caches kept from one generation to the next (the turns of a chat, requests that resend a conversation): a
// prompt that starts with tokens a cache holds runs only the rest through the model. The positions kept were
// computed as they were then (a generated token by a decoding step, reading decoding weights if there were any),
// so the logits can differ from a fresh prefill's by f32 rounding (sums in another order).
//
// `slots` caches are kept, one conversation each (a server's clients take turns). A prompt that goes on from the
// last prompt of a slot (the next turn of a conversation, or the same turn asked again) continues in that slot.
// Otherwise it starts in an empty or the least recently used slot, with the longest prefix any slot shares with it
// (a system prompt, the turns before an edited message) copied over: a new conversation evicts the one idle
// longest, never one that merely shares its first tokens.
template <class Model>
class prompt_cache {
public:
    using cache_type = decltype(std::declval<const Model&>().make_cache(1, 1));

    explicit prompt_cache(int slots = 1) : slots_(std::size_t(std::max(1, slots))) {}

    // The cache for `prompt`, holding its longest prefix a slot had (never the last token: its step gives the
    // logits), with room for `capacity` positions. `in_use`: slots taken by generations still running (sequences
    // decoded together: eval/continuous_batch.hpp); their prefixes may be copied, but they are never taken, so
    // fewer than slots() of them must be given.
    cache_type& take(const Model& model, std::span<const token_t> prompt, index_t capacity,
                     std::span<const std::size_t> in_use = {}) {
        auto busy = [&](std::size_t i) { return std::find(in_use.begin(), in_use.end(), i) != in_use.end(); };
        check(in_use.size() < slots_.size(), "prompt_cache::take: every slot is in use");
        std::size_t from = 0, keep = 0; // the slot sharing the longest prefix (a continued one, then the older)
        bool continues = false;
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            const std::vector<token_t>& held = slots_[i].tokens;
            const std::size_t limit = std::min(held.size(), prompt.size() - 1);
            std::size_t k = 0;
            while (k < limit && held[k] == prompt[k])
                ++k;
            // The prompt goes on from the slot's last one: a next turn (its answer maybe tokenized anew by the chat
            // template) or the same turn again.
            const bool c = k + 1 >= slots_[i].prompt_length;
            if (k > keep || (k == keep && (c > continues || (c == continues && slots_[i].used < slots_[from].used))))
                from = i, keep = k, continues = c;
        }
        std::size_t to = from;
        if (!continues || busy(from)) { // another conversation, or this one changed: keep it, start in the least
            to = 0;                     // recently used slot
            while (busy(to))
                ++to;
            for (std::size_t i = to + 1; i < slots_.size(); ++i)
                if (!busy(i) && slots_[i].used < slots_[to].used) to = i;
        }
        slot& source = slots_[from];
        slot& target = slots_[to];
        if (!target.cache || target.cache->capacity() < capacity) { // grow: twice the room, within the context
            const index_t had = target.cache ? target.cache->capacity() : 0;
            const index_t room = std::min<index_t>(model.config().max_seq_len, std::max<index_t>(capacity, 2 * had));
            std::optional<cache_type> grown(model.make_cache(1, room));
            if (keep > 0) grown->copy_prefix(*source.cache, index_t(keep));
            target.cache = std::move(grown);
        } else if (to != from && keep > 0) {
            target.cache->copy_prefix(*source.cache, index_t(keep));
        }
        target.cache->truncate(index_t(keep));
        target.tokens.assign(prompt.begin(), prompt.begin() + std::ptrdiff_t(keep));
        target.prompt_length = prompt.size();
        target.used = ++clock_;
        taken_ = to;
        reused_ = keep;
        return *target.cache;
    }
    // After a generation: the tokens the cache it took holds, position by position (of slot `slot`, or the one the
    // last take gave).
    void hold(std::span<const token_t> tokens) { hold(taken_, tokens); }
    void hold(std::size_t slot, std::span<const token_t> tokens) {
        slots_[slot].tokens.assign(tokens.begin(), tokens.end());
    }
    std::size_t reused() const { return reused_; } // prompt tokens the last generation took from a cache
    std::size_t slots() const { return slots_.size(); }
    std::size_t slot_taken() const { return taken_; } // the slot the last generation ran in
    void clear() {
        for (slot& s : slots_)
            s = slot{};
        reused_ = 0;
    }

private:
    struct slot {
        std::optional<cache_type> cache;
        std::vector<token_t> tokens;   // what the cache holds, position by position
        std::size_t prompt_length = 0; // of the last generation in it (tokens holds its answer after it)
        std::uint64_t used = 0;        // when it was last taken (0: never)
    };
    std::vector<slot> slots_;
    std::uint64_t clock_ = 0;
    std::size_t taken_ = 0, reused_ = 0;
};

// The positions a generation's cache needs: the prompt and max_new_tokens, within the context (the model's
// max_seq_len). Refuses an empty prompt, and one that leaves no room for a token (unless none is asked for). `who`
// names the caller in the error.
inline index_t generation_capacity(index_t context, std::size_t prompt, int max_new_tokens, const char* who) {
    check(prompt > 0, [&] { return std::string(who) + ": the prompt must hold at least one token"; });
    const index_t capacity = std::min<index_t>(context, index_t(prompt) + max_new_tokens);
    check(index_t(prompt) < capacity || max_new_tokens == 0, [&] {
        return std::string(who) + ": the prompt has " + std::to_string(prompt) + " tokens, the context is " +
               std::to_string(context);
    });
    return capacity;
}

// `reuse` (optional): a cache kept between generations (above).
template <class Model, class OnToken>
std::vector<token_t> generate(const Model& model, std::span<const token_t> prompt, const generation_options& options,
                              OnToken&& on_token, prompt_cache<Model>* reuse = nullptr) {
    const index_t capacity =
        generation_capacity(model.config().max_seq_len, prompt.size(), options.max_new_tokens, "generate");
    std::optional<typename prompt_cache<Model>::cache_type> own;
    auto& cache = reuse ? reuse->take(model, prompt, capacity) : own.emplace(model.make_cache(1, capacity));
    const index_t kept = cache.length();
    std::vector<float> logits(std::size_t(model.config().vocab_size));
    const tensor_view<float> logits_view{logits.data(), {1, model.config().vocab_size}};
    model.forward_cached(cache, cview<token_t>{prompt.data() + kept, {1, index_t(prompt.size()) - kept}}, logits_view);
    std::vector<token_t> history(prompt.begin(), prompt.end()), output;
    sampler pick(model.config().vocab_size, options.sampling);
    for (int i = 0; i < options.max_new_tokens; ++i) {
        const token_t next = pick.sample(logits, history);
        if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) != options.stop_tokens.end()) break;
        output.push_back(next);
        history.push_back(next);
        if (!on_token(next) || cache.length() >= capacity) break;
        model.forward_cached(cache, cview<token_t>{&next, {1, 1}}, logits_view);
    }
    if (reuse) reuse->hold(std::span<const token_t>(history).first(std::size_t(cache.length())));
    return output;
}

template <class Model>
std::vector<token_t> generate(const Model& model, std::span<const token_t> prompt, const generation_options& options) {
    return generate(model, prompt, options, [](token_t) { return true; });
}

} // namespace tl
