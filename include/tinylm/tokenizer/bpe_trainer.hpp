// tinylm/tokenizer/bpe_trainer.hpp: learning BPE merges from text.
//
//   tl::bpe_trainer_options opt{.vocab_size = 8000, .special_tokens = {"<|endoftext|>"}, .n_threads = 2};
//   tl::bpe_trainer trainer(opt);
//   trainer.feed(corpus_text);                 // any number of times; words are counted in parallel
//   tl::tokenizer tok = trainer.train();       // save with tl::save_tokenizer_json(tok, "tokenizer.json")
//
// The steps, as in Hugging Face's trainer:
//   1. Add the special tokens (ids 0..k-1).
//   2. The initial alphabet: the 256 bytes (byte-level), or the 256 <0xNN> tokens and the characters of the
//      corpus, most frequent first up to limit_alphabet (byte fallback).
//   3. Count words (pre-tokenizer output) in parallel threads; counts are exact sums, so the thread count
//      cannot change anything that follows.
//   4. Count adjacent pairs over the distinct words, sorted by their bytes, with an index pair → words.
//   5. Merge: take the most frequent pair from a max-heap (ties: the smaller left id, then the smaller right
//      id), rewrite only the words that hold it, and update the counts of the pairs around each occurrence.
//      Stale heap entries are re-queued with their current count when they reach the top.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/tokenizer/detail/flat_map.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tl {

enum class bpe_style {
    byte_level,    // GPT-2/Qwen: every byte is a token, words split by a regex; never an <unk>
    byte_fallback, // Llama/SentencePiece: characters are tokens, "▁" marks word starts, rare characters fall
                   // back to <0xNN> byte tokens
};

struct bpe_progress {
    std::string_view stage; // "count words", "count pairs", "merge"
    std::size_t done = 0, total = 0;
    double seconds = 0; // since train()/feed() started
};

struct bpe_trainer_options {
    // Size of the final vocabulary: special tokens + initial alphabet + merges. Training stops earlier when no
    // pair reaches min_frequency.
    std::size_t vocab_size = 8000;
    // A pair occurring fewer times than this (summed over the corpus) is never merged.
    std::uint64_t min_frequency = 2;
    // Added first, in this order, with ids 0..k-1; matched in text before splitting. Empty → byte_level gets
    // {"<|endoftext|>"}, byte_fallback gets {"<unk>", "<s>", "</s>"} (the first is the unknown token).
    std::vector<std::string> special_tokens;
    // Byte fallback only: keep at most this many distinct characters (most frequent first, ties by code
    // point); the rest are written as <0xNN> byte tokens. 0 keeps all.
    std::size_t limit_alphabet = 1000;
    // Longest token a merge may make, in bytes; 0 means no limit.
    std::size_t max_token_length = 0;
    bpe_style style = bpe_style::byte_level;
    // Byte-level only: the word-splitting regex written into the tokenizer.
    split_pattern pattern = split_pattern::qwen2;
    // Normalise text to NFC before counting (and in the tokenizer that is produced).
    bool nfc = true;
    // Threads for counting words and for rewriting the words of large merges; 0 means
    // std::thread::hardware_concurrency(). The result does not depend on it.
    int n_threads = 0;
    // A merge rewrites its words in parallel when it touches at least this many (a tuning knob; tests set 1).
    std::size_t parallel_merge_min_words = 8192;
    // Called now and then with the stage and how far it got.
    std::function<void(const bpe_progress&)> progress;
};

class bpe_trainer {
public:
    explicit bpe_trainer(bpe_trainer_options opt) : opt_(std::move(opt)) {
        if (opt_.special_tokens.empty()) {
            if (opt_.style == bpe_style::byte_level)
                opt_.special_tokens = {"<|endoftext|>"};
            else
                opt_.special_tokens = {"<unk>", "<s>", "</s>"};
        }
        if (opt_.n_threads <= 0) opt_.n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        start_ = std::chrono::steady_clock::now();
        probe_ = make_empty_tokenizer(); // splitting rules shared by feed() and the result
    }

    // Counts the words of `text` (valid UTF-8, else tl::error). Special tokens in the text are not counted.
    void feed(std::string_view text) {
        const auto n = static_cast<std::size_t>(opt_.n_threads);
        std::vector<std::size_t> cuts{0};
        // Cut where the words cannot change: after a line break (byte-level patterns) or before a space (metaspace,
        // where a space starts a word).
        for (std::size_t k = 1; k < n; ++k) {
            const std::size_t p = std::max(cuts.back(), text.size() * k / n);
            if (opt_.style == bpe_style::byte_level) {
                cuts.push_back(next_word_safe_cut(text, p));
            } else {
                const std::size_t sp = text.find(' ', p);
                cuts.push_back(sp == std::string_view::npos ? text.size() : sp);
            }
        }
        cuts.push_back(text.size());
        std::vector<detail::word_counter> counters(n, detail::word_counter(1 << 16));
        std::vector<std::size_t> bad(n, std::string_view::npos);
        auto work = [&](std::size_t k) {
            const std::string_view part = text.substr(cuts[k], cuts[k + 1] - cuts[k]);
            bad[k] = unicode::find_invalid(part);
            if (bad[k] != std::string_view::npos) return;
            // Lines that normalisation changes are normalised into storage that does not move (the counter
            // keeps views); the others are split where they lie.
            std::deque<std::string> normalized;
            auto count = [&](std::string_view s) {
                if (opt_.style == bpe_style::byte_level)
                    split_words(s, opt_.pattern, [&](std::string_view w) { counters[k].add(w); });
                else
                    split_metaspace(s, [&](std::string_view w) { counters[k].add(w); });
            };
            probe_.added.split(
                part,
                [&](std::string_view piece) {
                    if (opt_.style != bpe_style::byte_level) {
                        // "▁" goes in front of each stretch of text, not in front of a thread's share of one.
                        const bool stretch_start = k == 0 || piece.data() != part.data();
                        count(normalized.emplace_back(normalize(piece, stretch_start)));
                        return;
                    }
                    for (std::size_t at = 0; at < piece.size();) {
                        const std::size_t end = next_word_safe_cut(piece, at + 1);
                        const std::string_view line = piece.substr(at, end - at);
                        if (!opt_.nfc || unicode::nfc_quick_check(line))
                            count(line);
                        else
                            count(normalized.emplace_back(unicode::nfc(line)));
                        at = end;
                    }
                },
                [](token_t) {});
            if (!normalized.empty()) counters[k] = own(counters[k]);
        };
        std::vector<std::thread> threads;
        for (std::size_t k = 1; k < n; ++k)
            threads.emplace_back(work, k);
        work(0);
        for (auto& t : threads)
            t.join();
        for (std::size_t k = 0; k < n; ++k)
            if (bad[k] != std::string_view::npos)
                fail("bpe_trainer: training text: invalid UTF-8 at byte " + std::to_string(cuts[k] + bad[k]) + " of " +
                     std::to_string(text.size()));
        for (const auto& c : counters)
            words_.add_all(c);
        fed_bytes_ += text.size();
        report("count words", fed_bytes_, fed_bytes_);
    }

    // Number of distinct words counted so far.
    std::size_t n_words() const { return words_.size(); }

    // Copy of a counter that owns its long keys (for keys that point into short-lived buffers).
    static detail::word_counter own(const detail::word_counter& c) {
        detail::word_counter owned(c.size() + 16, true);
        owned.add_all(c);
        return owned;
    }

    // Learns the merges and returns the tokenizer (with its normalizer, pre-tokenizer and decoder set).
    tokenizer train() {
        tokenizer tok = make_empty_tokenizer();
        bpe_model& model = tok.model;
        model = bpe_model{};
        model.byte_level = opt_.style == bpe_style::byte_level;
        model.byte_fallback = !model.byte_level;
        model.fuse_unk = model.byte_fallback;

        // 1. Special tokens.
        for (const std::string& s : opt_.special_tokens) {
            check(!s.empty(), "bpe_trainer: empty special token");
            check(model.find(s) < 0, [&] { return "bpe_trainer: special token " + s + " given twice"; });
            model.add_token(s);
        }
        if (model.byte_fallback) model.unk = 0;

        // Distinct words. Their order does not matter: counts are sums, and ties between pairs are broken by
        // token ids, never by where a pair was seen first.
        std::vector<std::pair<std::string_view, std::uint64_t>> words;
        words.reserve(words_.size());
        words_.for_each([&](std::string_view w, std::uint64_t c) { words.emplace_back(w, c); });

        // 2. Alphabet.
        std::vector<std::uint32_t> sym; // all words' symbols, back to back
        struct word_info {
            std::uint32_t begin, len; // symbols at sym[begin, begin + len)
            std::uint32_t stamp;      // the last merge step that rewrote the word
            std::uint64_t freq;
        };
        std::vector<word_info> info;                   // one cache line serves the merge loop
        constexpr std::uint32_t barrier = 0x80000000u; // a byte-fallback symbol: never part of a pair
        if (model.byte_level) {
            for (int b = 0; b < 256; ++b)
                model.add_token(std::string(1, static_cast<char>(b)));
        } else {
            static constexpr char hex[] = "0123456789ABCDEF";
            for (int b = 0; b < 256; ++b)
                model.add_token(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
            std::unordered_map<std::string_view, std::uint64_t> chars;
            for (const auto& [w, c] : words)
                for (std::size_t i = 0; i < w.size();) {
                    const std::size_t l = unicode::sequence_length(static_cast<unsigned char>(w[i]));
                    chars[w.substr(i, l)] += c;
                    i += l;
                }
            std::vector<std::pair<std::string_view, std::uint64_t>> order(chars.begin(), chars.end());
            std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) {
                return x.second != y.second ? x.second > y.second : x.first < y.first;
            });
            if (opt_.limit_alphabet && order.size() > opt_.limit_alphabet) order.resize(opt_.limit_alphabet);
            std::sort(order.begin(), order.end()); // ids in byte order of the characters
            for (const auto& [ch, c] : order)
                if (model.find(ch) < 0) model.add_token(std::string(ch));
        }
        const std::size_t alphabet_end = model.tokens.size();
        check(opt_.vocab_size >= alphabet_end, [&] {
            return "bpe_trainer: vocab_size " + std::to_string(opt_.vocab_size) + " is smaller than the " +
                   std::to_string(alphabet_end) + " special and alphabet tokens";
        });

        // 3. Words as symbol ids.
        for (const auto& [w, c] : words) {
            const auto word_begin = static_cast<std::uint32_t>(sym.size());
            if (model.byte_level) {
                for (unsigned char b : w)
                    sym.push_back(static_cast<std::uint32_t>(opt_.special_tokens.size()) + b);
            } else {
                for (std::size_t i = 0; i < w.size();) {
                    const std::size_t l = unicode::sequence_length(static_cast<unsigned char>(w[i]));
                    const token_t id = model.find(w.substr(i, l));
                    if (id >= 0 && static_cast<std::size_t>(id) >= opt_.special_tokens.size() + 256) {
                        sym.push_back(static_cast<std::uint32_t>(id));
                    } else {
                        for (std::size_t k = 0; k < l; ++k)
                            sym.push_back(barrier | static_cast<std::uint32_t>(opt_.special_tokens.size() +
                                                                               static_cast<unsigned char>(w[i + k])));
                    }
                    i += l;
                }
            }
            info.push_back({word_begin, static_cast<std::uint32_t>(sym.size() - word_begin), 0, c});
        }
        const std::size_t n_words = words.size();

        // 4. Pair counts and the pair → words index.
        detail::u64_map<std::uint32_t> pair_ids(1 << 16);
        std::vector<std::int64_t> pair_count;
        std::vector<std::vector<std::uint32_t>> where;
        std::vector<std::pair<std::uint32_t, std::uint32_t>> pair_of;
        auto pid_of = [&](std::uint32_t a, std::uint32_t b) -> std::uint32_t {
            std::uint32_t& slot = pair_ids[(static_cast<std::uint64_t>(a) << 32) | b];
            if (slot == 0) {
                pair_count.push_back(0);
                where.emplace_back();
                pair_of.emplace_back(a, b);
                slot = static_cast<std::uint32_t>(pair_count.size()); // 1-based; 0 means new
            }
            return slot - 1;
        };
        for (std::size_t w = 0; w < n_words; ++w) {
            const std::uint32_t* s = sym.data() + info[w].begin;
            for (std::uint32_t i = 0; i + 1 < info[w].len; ++i) {
                if ((s[i] | s[i + 1]) & barrier) continue;
                const std::uint32_t p = pid_of(s[i], s[i + 1]);
                pair_count[p] += static_cast<std::int64_t>(info[w].freq);
                if (where[p].empty() || where[p].back() != w) where[p].push_back(static_cast<std::uint32_t>(w));
            }
        }
        report("count pairs", pair_count.size(), pair_count.size());

        // 5. Merges.
        struct entry {
            std::int64_t count;
            std::uint32_t a, b, pid;
            bool operator<(const entry& o) const { // lower priority
                if (count != o.count) return count < o.count;
                if (a != o.a) return a > o.a;
                return b > o.b;
            }
        };
        std::priority_queue<entry> heap;
        for (std::uint32_t p = 0; p < pair_count.size(); ++p)
            if (pair_count[p] > 0) heap.push({pair_count[p], pair_of[p].first, pair_of[p].second, p});
        std::vector<std::uint32_t> touched, pair_stamp(pair_count.size(), 0);
        // Adds f to a pair that holds the new token, and notes the word and the pair.
        std::uint32_t step = 0;
        auto add_new = [&](std::uint32_t p, std::uint32_t w, std::int64_t f) {
            pair_count[p] += f;
            if (where[p].empty() || where[p].back() != w) where[p].push_back(w);
            if (p >= pair_stamp.size()) pair_stamp.resize(pair_count.size(), 0);
            if (pair_stamp[p] != step) pair_stamp[p] = step, touched.push_back(p);
        };
        auto pid_find = [&](std::uint32_t a, std::uint32_t b) {
            return *pair_ids.find((static_cast<std::uint64_t>(a) << 32) | b) - 1;
        };
        const std::size_t n_merges = opt_.vocab_size - alphabet_end;
        const auto min_count = static_cast<std::int64_t>(std::max<std::uint64_t>(opt_.min_frequency, 1));
        while (model.tokens.size() < opt_.vocab_size && !heap.empty()) {
            const entry top = heap.top();
            heap.pop();
            if (pair_count[top.pid] != top.count) {
                if (pair_count[top.pid] > 0) heap.push({pair_count[top.pid], top.a, top.b, top.pid});
                continue;
            }
            if (top.count < min_count) break;
            std::string merged = model.tokens[top.a] + model.tokens[top.b];
            if ((opt_.max_token_length && merged.size() > opt_.max_token_length) || model.find(merged) >= 0) {
                pair_count[top.pid] = 0; // never merged; its count can only fall from here
                continue;
            }
            const std::uint32_t c = static_cast<std::uint32_t>(model.add_token(std::move(merged)));
            model.merges.emplace_back(static_cast<token_t>(top.a), static_cast<token_t>(top.b));
            ++step;
            touched.clear();
            std::vector<std::uint32_t> list = std::move(where[top.pid]);
            where[top.pid] = {};
            // Each word once (a word can sit in the list twice).
            std::size_t kept = 0;
            for (std::uint32_t w : list) {
                word_info& wi = info[w];
                if (wi.stamp == step) continue;
                wi.stamp = step;
                list[kept++] = w;
            }
            list.resize(kept);
            // Rewrites the words list[lo, hi) and reports each change of a pair count: emit(x, y, delta, w, is_new)
            // (is_new: the pair holds the new token and w must join its word list).
            auto rewrite = [&](std::size_t lo, std::size_t hi, auto&& emit) {
                for (std::size_t k = lo; k < hi; ++k) {
                    const std::uint32_t w = list[k];
                    word_info& wi = info[w];
                    std::uint32_t* s = sym.data() + wi.begin;
                    const std::uint32_t n = wi.len;
                    const auto f = static_cast<std::int64_t>(wi.freq);
                    std::uint32_t out = 0;
                    for (std::uint32_t i = 0; i < n;) {
                        if (i + 1 < n && s[i] == top.a && s[i + 1] == top.b) {
                            if (out > 0 && !(s[out - 1] & barrier)) {
                                emit(s[out - 1], top.a, -f, w, false);
                                emit(s[out - 1], c, f, w, true);
                            }
                            if (i + 2 < n && !(s[i + 2] & barrier)) {
                                emit(top.b, s[i + 2], -f, w, false);
                                emit(c, s[i + 2], f, w, true);
                            }
                            s[out++] = c;
                            i += 2;
                        } else {
                            s[out++] = s[i++];
                        }
                    }
                    wi.len = out;
                }
            };
            auto apply = [&](std::uint32_t x, std::uint32_t y, std::int64_t delta, std::uint32_t w, bool is_new) {
                if (is_new)
                    add_new(pid_of(x, y), w, delta);
                else
                    pair_count[pid_find(x, y)] += delta;
            };
            const std::size_t n_threads = static_cast<std::size_t>(opt_.n_threads);
            if (n_threads <= 1 || list.size() < std::max<std::size_t>(opt_.parallel_merge_min_words, n_threads)) {
                rewrite(0, list.size(), apply);
            } else {
                // Large lists: threads rewrite disjoint words and record the changes; the changes are then
                // applied in list order, so counts, word lists and pair ids are those of one thread.
                struct change {
                    std::uint32_t x, y, w;
                    bool is_new;
                    std::int64_t delta;
                };
                std::vector<std::vector<change>> changes(n_threads);
                std::vector<std::thread> pool;
                for (std::size_t t = 0; t < n_threads; ++t) {
                    const std::size_t lo = list.size() * t / n_threads, hi = list.size() * (t + 1) / n_threads;
                    auto job = [&, t, lo, hi] {
                        rewrite(lo, hi,
                                [&](std::uint32_t x, std::uint32_t y, std::int64_t d, std::uint32_t w, bool nw) {
                                    changes[t].push_back({x, y, w, nw, d});
                                });
                    };
                    if (t + 1 < n_threads)
                        pool.emplace_back(job);
                    else
                        job();
                }
                for (auto& th : pool)
                    th.join();
                for (const auto& part : changes)
                    for (const change& ch : part)
                        apply(ch.x, ch.y, ch.delta, ch.w, ch.is_new);
            }
            pair_count[top.pid] = 0;
            for (std::uint32_t p : touched)
                if (pair_count[p] > 0) heap.push({pair_count[p], pair_of[p].first, pair_of[p].second, p});
            if ((step & 255) == 0) report("merge", step, n_merges);
        }
        report("merge", step, n_merges);
        model.finalize();
        return tok;
    }

private:
    std::string normalize(std::string_view piece, bool prepend) const {
        std::string s = opt_.nfc ? unicode::nfc(piece) : std::string(piece);
        if (opt_.style == bpe_style::byte_fallback) s = metaspace_replace(s, prepend);
        return s;
    }

    tokenizer make_empty_tokenizer() const {
        tokenizer tok;
        tok.norm.nfc = opt_.nfc;
        if (opt_.style == bpe_style::byte_level) {
            tok.pre.pattern = opt_.pattern;
        } else {
            tok.norm.prepend = std::string(metaspace);
            tok.norm.replace = {{" ", std::string(metaspace)}};
            tok.dec.metaspace = true;
            tok.dec.strip_leading_space = true;
        }
        for (std::size_t i = 0; i < opt_.special_tokens.size(); ++i)
            tok.added.add({opt_.special_tokens[i], static_cast<token_t>(i), true, false});
        return tok;
    }

    void report(std::string_view stage, std::size_t done, std::size_t total) const {
        if (!opt_.progress) return;
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        opt_.progress({stage, done, total, s});
    }

    bpe_trainer_options opt_;
    tokenizer probe_;
    detail::word_counter words_{1 << 16, true};
    std::size_t fed_bytes_ = 0;
    std::chrono::steady_clock::time_point start_;
};

} // namespace tl
