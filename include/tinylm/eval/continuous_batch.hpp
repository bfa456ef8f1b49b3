// tinylm/eval/continuous_batch.hpp: text generations asked for from several threads at once, decoded together
// (continuous batching: a server's clients).
//
//   tl::continuous_batch<Model> batch(model, tokenizer, /*rows=*/4);
//   // on each client's thread:
//   tl::text_completion c = batch.complete(prompt_ids, options, [](std::string_view piece) { ...; return true; });
//
// complete() may be called from any number of threads. A call joins the batch at the next step, once fewer than
// `rows` generations are running (the others wait, in arrival order): its prompt runs through the model (from a
// prompt_cache slot when one is given), then each step decodes one token of every running generation in one
// forward (decoder::forward_each), so each weight matrix is read once a step for all of them. A generation leaves
// the batch when it ends; the call returns its completion, as generate_text would give it: the same tokens, as the
// products of a step sum each row as alone (backend/gemv.hpp; f32 weights on CPUs without AVX2 go to the GEMM
// library, whose products of several rows may round differently).
//
// No thread of its own: one caller (the driver) runs the steps until its own generation ends, then another caller
// takes over (one thread running the steps in a row keeps one OpenMP team busy, not one per caller: simd.hpp).
// Each caller gets its text pieces on its own thread, between steps; on_text returning false cancels its generation
// at the next step. The driver hands its own pieces over between steps, so a client that reads slowly slows the
// batch while its thread drives.
//
// A joining generation's prompt runs in parts of prompt_chunk() tokens (default 256), one a step, while others are
// decoding: their next token waits for a part, not for the whole prompt (a 2,000-token prompt of a 0.5B model is
// seconds). Alone, a prompt runs whole (512 positions a chunk: model/kv_cache.hpp). The parts of a long prompt
// depend on what else was running, and products of other sizes may round differently: its logits can differ from a
// lone run's by f32 rounding (prompts of up to 8 tokens, and decoding steps, do not: backend/gemv.hpp).
#pragma once

#include <tinylm/eval/text_generation.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tl {

// Decoding steps of a continuous_batch: how many, the generations they decoded (summed over steps), the most in one.
struct batch_counts {
    std::size_t steps = 0, rows = 0, widest = 0;
    std::size_t prompt_parts = 0; // prompt runs that left part of their prompt for later steps (others decoding)
};

template <class Model>
class continuous_batch {
public:
    using cache_type = typename prompt_cache<Model>::cache_type;
    using on_text_fn = std::function<bool(std::string_view)>;

    continuous_batch(const Model& model, const tokenizer& tok, int rows = 1) : model_(&model), tok_(&tok) {
        set_rows(rows);
    }

    // Prompt tokens a joining generation runs a step while others are decoding (0: all of it at once); alone it
    // runs all of them. Not while complete() runs.
    void set_prompt_chunk(index_t tokens) {
        check(tokens >= 0, "continuous_batch: the prompt chunk must be 0 or more tokens");
        prompt_chunk_ = tokens;
    }
    index_t prompt_chunk() const { return prompt_chunk_; }
    // Generations decoded together (at least 1: one after another). Not while complete() runs.
    void set_rows(int rows) {
        check(rows >= 1, "continuous_batch: rows must be at least 1");
        rows_ = std::size_t(rows);
    }
    int rows() const { return int(rows_); }
    // KV caches kept between generations (nullptr: none); a generation takes a slot that no running one holds, or
    // a cache of its own when every slot is taken. Not while complete() runs.
    void use_prompt_cache(prompt_cache<Model>* reuse) { reuse_ = reuse; }

    // Decoding steps so far.
    batch_counts stats() const {
        std::lock_guard lock(mutex_);
        return stats_;
    }

    // Generates from `prompt`, calling on_text with each piece of text on this thread; false from it stops.
    text_completion complete(std::span<const token_t> prompt, const text_generation_options& options,
                             const on_text_fn& on_text) {
        generation g(prompt, options);
        std::exception_ptr thrown; // by on_text
        std::unique_lock lock(mutex_);
        waiting_.push_back(&g);
        for (;;) {
            if (g.finished && driver_ == &g) { // another caller runs the steps from now on
                driver_ = nullptr;
                changed_.notify_all();
            }
            if (!g.pending.empty()) {
                const std::string piece = std::move(g.pending);
                g.pending.clear();
                lock.unlock();
                bool go_on = false;
                try {
                    if (!thrown) go_on = on_text(piece);
                } catch (...) { // cancelled; rethrown once the generation has left the batch
                    thrown = std::current_exception();
                }
                lock.lock();
                if (!go_on) g.cancelled = true;
            } else if (g.finished) {
                break;
            } else if (!stepping_ && (driver_ == nullptr || driver_ == &g)) {
                driver_ = &g;
                stepping_ = true;
                lock.unlock();
                step();
                lock.lock();
                stepping_ = false;
                changed_.notify_all();
            } else {
                changed_.wait(lock);
            }
        }
        if (thrown) std::rethrow_exception(thrown);
        if (g.error) std::rethrow_exception(g.error);
        return std::move(g.result);
    }

private:
    // One generation: what its caller gave and gets (under mutex_), and what the steps keep (the stepping thread's).
    struct generation {
        generation(std::span<const token_t> p, const text_generation_options& o)
            : prompt(p.begin(), p.end()), options(o) {}
        std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
        std::vector<token_t> prompt;
        text_generation_options options;
        // The caller's side, under mutex_.
        std::string pending; // text not yet given to on_text
        bool cancelled = false, finished = false;
        text_completion result;
        std::exception_ptr error;
        // The steps' side.
        std::optional<cache_type> own; // when no prompt_cache slot was free
        cache_type* cache = nullptr;
        std::optional<std::size_t> slot;
        index_t capacity = 0;
        std::optional<sampler> pick;
        std::optional<stream_decoder> decoder;
        std::optional<stop_strings> stops;
        std::vector<token_t> history;
        std::vector<float> logits;
        std::string text; // what has been handed to the caller's side
        finish_reason reason = finish_reason::stop;
    };

    // Sets up a generation joining the batch: its cache (a prompt_cache slot's prefix, if any), sampler, decoder.
    void join(generation& g) {
        g.capacity = generation_capacity(model_->config().max_seq_len, g.prompt.size(),
                                         g.options.generation.max_new_tokens, "generate");
        std::vector<std::size_t> in_use;
        for (const generation* r : running_)
            if (r->slot) in_use.push_back(*r->slot);
        if (reuse_ && in_use.size() < reuse_->slots()) {
            g.cache = &reuse_->take(*model_, g.prompt, g.capacity, in_use);
            g.slot = reuse_->slot_taken();
            g.result.cached_tokens = reuse_->reused();
        } else {
            g.cache = &g.own.emplace(model_->make_cache(1, std::max<index_t>(g.capacity, 1)));
        }
        const index_t vocab = model_->config().vocab_size;
        g.logits.resize(std::size_t(vocab));
        g.pick.emplace(vocab, g.options.generation.sampling);
        g.decoder.emplace(*tok_, g.options.skip_special);
        g.stops.emplace(g.options.stop);
        g.history = g.prompt;
        g.result.prompt_tokens = g.prompt.size();
    }

    // Runs the next part of a generation's prompt (at most `limit` tokens; 0: the rest); the last part's logits give
    // its first token.
    void run_prompt(generation& g, index_t limit) {
        const index_t fed = g.cache->length(), rest = index_t(g.prompt.size()) - fed;
        const index_t n = limit > 0 ? std::min(limit, rest) : rest;
        model_->forward_cached(*g.cache, cview<token_t>{g.prompt.data() + fed, {1, n}},
                               tensor_view<float>{g.logits.data(), {1, model_->config().vocab_size}});
    }
    static bool prompt_done(const generation& g) { return g.cache->length() >= index_t(g.prompt.size()); }

    // Picks the next token of a running generation; false when it has ended.
    bool pick_next(generation& g, bool cancelled) {
        const generation_options& o = g.options.generation;
        if (cancelled) return g.reason = finish_reason::cancelled, false;
        if (int(g.result.tokens.size()) >= o.max_new_tokens) return g.reason = finish_reason::length, false;
        const token_t t = g.pick->sample(g.logits, g.history);
        if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), t) != o.stop_tokens.end()) return false;
        if (g.result.tokens.empty())
            g.result.first_token_seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - g.started).count();
        g.result.tokens.push_back(t);
        g.history.push_back(t);
        g.text += g.stops->feed(g.decoder->push(t));
        if (g.stops->stopped()) return false;
        // As tl::generate: the last token need not fit in the cache (its keys and values are never needed).
        const bool full = int(g.result.tokens.size()) >= o.max_new_tokens || g.cache->length() >= g.capacity;
        if (full) g.reason = finish_reason::length;
        return !full;
    }

    // The rest of the text, the cache kept for the next generations, the completion.
    void finish(generation& g) {
        if (g.reason != finish_reason::cancelled && !g.stops->stopped())
            g.text += g.stops->feed(g.decoder->finish()) + g.stops->flush();
        if (g.slot) reuse_->hold(*g.slot, std::span<const token_t>(g.history).first(std::size_t(g.cache->length())));
    }

    // One step: generations join; prompts run (a part each while others decode); each generation past its prompt
    // picks its next token; one forward for all of those that go on.
    void step() {
        std::vector<generation*> joining;
        {
            std::lock_guard lock(mutex_);
            while (running_.size() + joining.size() < rows_ && !waiting_.empty()) {
                joining.push_back(waiting_.front());
                waiting_.pop_front();
            }
        }
        for (generation* g : joining) {
            try {
                join(*g);
                running_.push_back(g);
            } catch (...) {
                end(*g, std::current_exception());
            }
        }
        // While some generation is decoding, a prompt runs prompt_chunk_ tokens a step, so that the others' next
        // tokens wait for a part of it rather than all of it.
        const bool decoding =
            std::any_of(running_.begin(), running_.end(), [](const generation* g) { return prompt_done(*g); });
        // Prompts first (a part each while others decode), then every generation past its prompt picks its next
        // token: those in parallel, as each samples on its own (a sampler, a decoder, stop strings of its own; the
        // tokenizer is immutable), and over Qwen's 151,936 logits a pick at temperature 0.8 takes 0.6 ms.
        enum class next { prompt_part, pick, ended };
        struct state {
            next what = next::pick;
            bool cancelled = false, more = false;
            std::size_t before = 0; // its text's length before this pick
            std::exception_ptr error;
        };
        std::vector<state> states(running_.size());
        std::vector<std::size_t> picks;
        for (std::size_t r = 0; r < running_.size(); ++r) {
            generation& g = *running_[r];
            state& st = states[r];
            {
                std::lock_guard lock(mutex_);
                st.cancelled = g.cancelled;
            }
            try {
                if (!prompt_done(g) && !st.cancelled) {
                    run_prompt(g, decoding ? prompt_chunk_ : 0);
                    if (!prompt_done(g)) {
                        std::lock_guard lock(mutex_);
                        ++stats_.prompt_parts;
                        st.what = next::prompt_part;
                        continue;
                    }
                }
                st.before = g.text.size();
                picks.push_back(r);
            } catch (...) {
                st.what = next::ended;
                end(g, std::current_exception());
            }
        }
        const std::ptrdiff_t pick_count = std::ptrdiff_t(picks.size());
#pragma omp parallel for schedule(dynamic, 1) if (pick_count > 1)
        for (std::ptrdiff_t p = 0; p < pick_count; ++p) {
            state& st = states[picks[std::size_t(p)]];
            try {
                st.more = pick_next(*running_[picks[std::size_t(p)]], st.cancelled);
            } catch (...) {
                st.error = std::current_exception();
            }
        }
        std::vector<generation*> going_on;
        for (std::size_t r = 0; r < running_.size(); ++r) {
            generation& g = *running_[r];
            state& st = states[r];
            if (st.what == next::prompt_part) going_on.push_back(&g);
            if (st.what != next::pick) continue;
            try {
                if (st.error) std::rethrow_exception(st.error);
                if (!st.more) finish(g);
                std::lock_guard lock(mutex_);
                g.pending += g.text.substr(st.before);
                if (st.more)
                    going_on.push_back(&g);
                else
                    end_locked(g, nullptr);
            } catch (...) {
                end(g, std::current_exception());
            }
        }
        running_ = going_on;
        std::vector<generation*> next; // past their prompts
        std::copy_if(running_.begin(), running_.end(), std::back_inserter(next),
                     [&](const generation* g) { return prompt_done(*g); });
        if (next.empty()) return;
        {
            std::lock_guard lock(mutex_);
            ++stats_.steps;
            stats_.rows += next.size();
            stats_.widest = std::max(stats_.widest, next.size());
        }
        try {
            forward(next);
        } catch (...) {
            for (generation* g : next)
                end(*g, std::current_exception());
            std::erase_if(running_,
                          [&](generation* g) { return std::find(next.begin(), next.end(), g) != next.end(); });
        }
    }

    // The next token of every running generation through the model, together.
    void forward(const std::vector<generation*>& gs) {
        const index_t vocab = model_->config().vocab_size, n = index_t(gs.size());
        if (n == 1) { // as tl::generate steps
            generation& g = *gs.front();
            const token_t t = g.history.back();
            model_->forward_cached(*g.cache, cview<token_t>{&t, {1, 1}},
                                   tensor_view<float>{g.logits.data(), {1, vocab}});
            return;
        }
        std::vector<cache_type*> caches;
        std::vector<token_t> ids;
        for (generation* g : gs)
            caches.push_back(g->cache), ids.push_back(g->history.back());
        logits_.resize(std::size_t(n * vocab));
        model_->forward_each(caches, ids, tensor_view<float>{logits_.data(), {n, vocab}});
        for (index_t i = 0; i < n; ++i)
            std::copy_n(logits_.data() + i * vocab, vocab, gs[std::size_t(i)]->logits.data());
    }

    void end(generation& g, std::exception_ptr error) {
        std::lock_guard lock(mutex_);
        end_locked(g, error);
    }
    void end_locked(generation& g, std::exception_ptr error) {
        g.error = error;
        g.result.text = g.text;
        g.result.reason = g.reason;
        g.own.reset();
        g.finished = true;
    }

    const Model* model_;
    const tokenizer* tok_;
    prompt_cache<Model>* reuse_ = nullptr;
    std::size_t rows_ = 1;
    index_t prompt_chunk_ = 256;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    batch_counts stats_;                 // under mutex_
    std::deque<generation*> waiting_;    // under mutex_
    bool stepping_ = false;              // under mutex_: a caller is running a step
    const generation* driver_ = nullptr; // under mutex_: the caller that runs the steps (nullptr: the next one)
    std::vector<generation*> running_;   // the stepping thread's
    std::vector<float> logits_;          // the stepping thread's: (n, V) of a step
};

} // namespace tl
