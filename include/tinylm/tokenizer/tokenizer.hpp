// tinylm/tokenizer/tokenizer.hpp: the whole pipeline, as in a Hugging Face tokenizer.json:
//   added tokens → normalizer → pre-tokenizer → BPE model → (post-processor: <bos>/<eos>) ; decoder.
//
//   tl::tokenizer tok = tl::load_tokenizer_json("tokenizer.json");   // tokenizer/hf_json.hpp
//   std::vector<tl::token_t> ids = tok.encode("Привет, мир!");
//   std::string text = tok.decode(ids);
//
// A tokenizer is immutable once built, so one object can encode from many threads.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/tokenizer/bpe.hpp>
#include <tinylm/tokenizer/decoder.hpp>
#include <tinylm/tokenizer/normalizer.hpp>
#include <tinylm/tokenizer/pretokenizer.hpp>
#include <tinylm/tokenizer/special_tokens.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tl {

struct pre_tokenizer {
    split_pattern pattern = split_pattern::none;
    // Split before each "▁" (Metaspace pre-tokenizer with split = true).
    bool metaspace_split = false;
    // Replace spaces by "▁" and prepend one to each stretch of text (Metaspace pre-tokenizer).
    bool metaspace_replace = false;
    bool metaspace_prepend = false;
};

struct encode_options {
    // Add the post-processor's tokens (e.g. <s> for Llama).
    bool add_special_tokens = false;
};

// Remembers the ids of words already encoded (most words of a text repeat). One per thread.
class encode_cache {
public:
    explicit encode_cache(std::size_t max_words = 1 << 20) : max_words_(max_words) { rehash(1 << 12); }
    // Returns true and appends the ids when `word` is cached.
    bool lookup(std::string_view word, std::uint64_t h, std::vector<token_t>& out) const {
        h |= 1;
        for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
            const entry& e = slots_[i];
            if (e.hash == 0) return false;
            if (e.hash != h || e.len != word.size()) continue;
            if (e.n_ids != long_entry) {
                if (std::memcmp(e.bytes, word.data(), word.size()) != 0) continue;
                out.insert(out.end(), e.ids, e.ids + e.n_ids);
            } else {
                std::uint32_t off[3];
                std::memcpy(off, e.bytes, sizeof off);
                if (std::string_view(long_words_.data() + off[0], e.len) != word) continue;
                out.insert(out.end(), long_ids_.begin() + off[1], long_ids_.begin() + off[1] + off[2]);
            }
            return true;
        }
    }
    void store(std::string_view word, std::uint64_t h, std::span<const token_t> ids) {
        if (size_ >= max_words_ || word.size() > 0xFFFF) return;
        if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
        h |= 1;
        std::size_t i = h & mask_;
        while (slots_[i].hash != 0)
            i = (i + 1) & mask_;
        entry& e = slots_[i];
        e.hash = h;
        e.len = static_cast<std::uint16_t>(word.size());
        if (word.size() <= inline_bytes && ids.size() <= inline_ids) {
            e.n_ids = static_cast<std::uint16_t>(ids.size());
            std::memcpy(e.bytes, word.data(), word.size());
            std::copy(ids.begin(), ids.end(), e.ids);
        } else {
            // Long words keep their bytes and ids outside the table (the slot's bytes hold the offsets).
            const std::uint32_t off[3] = {static_cast<std::uint32_t>(long_words_.size()),
                                          static_cast<std::uint32_t>(long_ids_.size()),
                                          static_cast<std::uint32_t>(ids.size())};
            std::memcpy(e.bytes, off, sizeof off);
            long_words_.append(word);
            long_ids_.insert(long_ids_.end(), ids.begin(), ids.end());
            e.n_ids = long_entry;
        }
        ++size_;
    }

private:
    static constexpr std::size_t inline_bytes = 32, inline_ids = 4;
    static constexpr std::uint16_t long_entry = 0xFFFF;
    // One cache line: the word and its ids side by side.
    struct entry {
        std::uint64_t hash = 0; // 0: empty
        std::uint16_t len = 0, n_ids = 0;
        char bytes[inline_bytes] = {};
        token_t ids[inline_ids] = {};
    };
    void rehash(std::size_t capacity) {
        std::vector<entry> old(capacity);
        old.swap(slots_);
        mask_ = capacity - 1;
        for (const entry& e : old) {
            if (e.hash == 0) continue;
            std::size_t i = e.hash & mask_;
            while (slots_[i].hash != 0)
                i = (i + 1) & mask_;
            slots_[i] = e;
        }
    }
    std::size_t max_words_, size_ = 0, mask_ = 0;
    std::vector<entry> slots_;
    std::string long_words_;
    std::vector<token_t> long_ids_;
};

class tokenizer {
public:
    normalizer norm;
    pre_tokenizer pre;
    bpe_model model;
    // Added tokens matched in the raw text before normalisation (special tokens, and any with normalized: false),
    // and those matched in each normalised stretch between them (normalized: true; their pattern is the
    // normalizer's output for their content), as Hugging Face `tokenizers` does. tokenizer/add_tokens.hpp adds
    // tokens to the right one.
    added_vocabulary added, added_normalized;
    token_decoder dec;
    // Post-processor (single sequence): tokens put before and after the text when add_special_tokens.
    std::vector<token_t> prefix_tokens, suffix_tokens;

    // Total vocabulary: model tokens and added tokens (ids are dense from 0).
    std::size_t vocab_size() const {
        std::size_t n = model.tokens.size();
        for (const auto* v : {&added, &added_normalized})
            for (const auto& t : v->tokens())
                n = std::max(n, static_cast<std::size_t>(t.id) + 1);
        return n;
    }

    // The added token with this id or content (either kind), or nullptr.
    const added_token* find_added(token_t id) const {
        if (const added_token* t = added.find(id)) return t;
        return added_normalized.find(id);
    }
    const added_token* find_added(std::string_view content) const {
        if (const added_token* t = added.find(content)) return t;
        return added_normalized.find(content);
    }
    // Every added token, by id.
    std::vector<const added_token*> added_tokens() const {
        std::vector<const added_token*> all;
        for (const auto* v : {&added, &added_normalized})
            for (const auto& t : v->tokens())
                all.push_back(&t);
        std::sort(all.begin(), all.end(), [](const added_token* a, const added_token* b) { return a->id < b->id; });
        return all;
    }

    token_t token_to_id(std::string_view token) const {
        if (const added_token* t = find_added(token)) return t->id;
        return model.find(token);
    }
    // The bytes of a token (the added token's content for added tokens).
    std::string_view id_to_bytes(token_t id) const {
        if (const added_token* t = find_added(id)) return t->content;
        check(id >= 0 && static_cast<std::size_t>(id) < model.tokens.size(), [&] {
            return "decode: token id " + std::to_string(id) + " is outside the vocabulary of " +
                   std::to_string(vocab_size());
        });
        return model.tokens[static_cast<std::size_t>(id)];
    }

    std::vector<token_t> encode(std::string_view text, const encode_options& opt = {}) const {
        std::vector<token_t> out;
        encode_cache cache;
        encode_into(text, out, &cache, opt);
        return out;
    }

    // Appends the ids of `text` (valid UTF-8, else tl::error) to out.
    void encode_into(std::string_view text, std::vector<token_t>& out, encode_cache* cache,
                     const encode_options& opt = {}) const {
        unicode::check_utf8(text, "encode: input text");
        if (opt.add_special_tokens) out.insert(out.end(), prefix_tokens.begin(), prefix_tokens.end());
        added.split(
            text, [&](std::string_view piece) { encode_piece(piece, out, cache); },
            [&](token_t id) { out.push_back(id); });
        if (opt.add_special_tokens) out.insert(out.end(), suffix_tokens.begin(), suffix_tokens.end());
    }

    // Encodes a large text with n_threads threads, cutting it at line starts where the result cannot change
    // (after '\n', before a non-space character); the ids are the same as encode()'s. Falls back to one thread
    // for tokenizers that see the whole text as one word.
    std::vector<token_t> encode_parallel(std::string_view text, int n_threads) const {
        if (n_threads <= 1 || pre.pattern == split_pattern::none || !norm.prepend.empty() || text.size() < (1 << 16))
            return encode(text);
        const auto n = static_cast<std::size_t>(n_threads);
        // Cut after a line break followed by an ASCII non-space byte (safe before the text is validated).
        std::vector<std::size_t> cuts{0};
        for (std::size_t k = 1; k < n; ++k) {
            std::size_t p = std::max(cuts.back(), text.size() * k / n);
            while (p < text.size()) {
                const std::size_t nl = text.find('\n', p == 0 ? 0 : p - 1);
                if (nl == std::string_view::npos || nl + 1 >= text.size()) {
                    p = text.size();
                    break;
                }
                const auto next_byte = static_cast<unsigned char>(text[nl + 1]);
                p = nl + 1;
                if (next_byte < 0x80 && !unicode::is_space(next_byte)) break;
                ++p;
            }
            cuts.push_back(std::min(p, text.size()));
        }
        cuts.push_back(text.size());
        std::vector<std::vector<token_t>> parts(n);
        std::vector<std::size_t> bad(n, std::string_view::npos);
        std::vector<std::thread> threads;
        for (std::size_t k = 0; k < n; ++k)
            threads.emplace_back([&, k] {
                const std::string_view part = text.substr(cuts[k], cuts[k + 1] - cuts[k]);
                bad[k] = unicode::find_invalid(part);
                if (bad[k] != std::string_view::npos) return;
                encode_cache cache;
                encode_unchecked(part, parts[k], &cache);
            });
        for (auto& t : threads)
            t.join();
        for (std::size_t k = 0; k < n; ++k)
            if (bad[k] != std::string_view::npos)
                fail("encode: input text: invalid UTF-8 at byte " + std::to_string(cuts[k] + bad[k]) + " of " +
                     std::to_string(text.size()));
        std::vector<token_t> out;
        std::size_t total = 0;
        for (auto& p : parts)
            total += p.size();
        out.reserve(total);
        for (auto& p : parts)
            out.insert(out.end(), p.begin(), p.end());
        return out;
    }

    // Text of `ids`; an id outside the vocabulary is a tl::error. With skip_special, special added tokens are
    // left out.
    std::string decode(std::span<const token_t> ids, bool skip_special = false) const {
        std::string text;
        for (token_t id : ids)
            append_token_bytes(id, text, skip_special);
        return dec.finish(std::move(text));
    }

    // Appends the bytes token `id` stands for before the decoder's finishing step (metaspace, leading space):
    // an added token's content (nothing for a special one with skip_special), a fallback byte, or the
    // model's bytes. decode() is finish() over these bytes; tl::stream_decoder streams them.
    void append_token_bytes(token_t id, std::string& out, bool skip_special = false) const {
        if (const added_token* t = find_added(id)) {
            // tokenizers decodes a normalized added token as its normalised content (Llama: "▁word").
            if (!(skip_special && t->special))
                append_added(out, t->normalized && added_normalized.find(id) == t ? added_normalized.pattern(id)
                                                                                  : std::string_view(t->content));
            return;
        }
        const std::string_view bytes = id_to_bytes(id);
        if (!model.byte_level) {
            if (const int b = model.fallback_byte(id); b >= 0) {
                out += static_cast<char>(b);
                return;
            }
        }
        out += bytes;
    }

private:
    // Hugging Face's ByteLevel decoder turns an added token whose characters are all in the byte-level alphabet
    // into the bytes they stand for (so "Ġx" gives " x"); any other content is kept as it is.
    void append_added(std::string& text, std::string_view content) const {
        thread_local std::string bytes;
        if (model.byte_level && byte_level_map::get().decode(content, bytes))
            text += bytes;
        else
            text += content;
    }

    void encode_unchecked(std::string_view text, std::vector<token_t>& out, encode_cache* cache) const {
        added.split(
            text, [&](std::string_view piece) { encode_piece(piece, out, cache); },
            [&](token_t id) { out.push_back(id); });
    }

    void encode_piece(std::string_view piece, std::vector<token_t>& out, encode_cache* cache) const {
        if (!added_normalized.empty()) {
            // Normalise, find the normalized added tokens, then pre-tokenize each stretch between them.
            const std::string s = norm.empty() ? std::string(piece) : norm.apply(piece);
            added_normalized.split(
                s, [&](std::string_view part) { encode_pretokenized(part, out, cache); },
                [&](token_t id) { out.push_back(id); });
            return;
        }
        if (norm.empty() && !pre.metaspace_replace) {
            encode_normalized(piece, out, cache);
            return;
        }
        if (norm.nfc && norm.prepend.empty() && norm.replace.empty() && !pre.metaspace_replace &&
            pre.pattern != split_pattern::none) {
            // NFC only, with a splitting pattern: normalise (copy) just the stretches that NFC may change.
            for (std::size_t at = 0; at < piece.size();) {
                const std::size_t end = next_word_safe_cut(piece, at + 1);
                const std::string_view part = piece.substr(at, end - at);
                if (unicode::nfc_quick_check(part))
                    encode_normalized(part, out, cache);
                else
                    encode_normalized(unicode::nfc(part), out, cache);
                at = end;
            }
            return;
        }
        encode_pretokenized(norm.apply(piece), out, cache);
    }

    // Normalised text through the metaspace pre-tokenizer (when there is one), the splitting and the model.
    void encode_pretokenized(std::string_view normalized, std::vector<token_t>& out, encode_cache* cache) const {
        if (!pre.metaspace_replace) {
            encode_normalized(normalized, out, cache);
            return;
        }
        std::string s = metaspace_replace(normalized, false);
        if (pre.metaspace_prepend && !s.empty() && !s.starts_with(metaspace)) s.insert(0, metaspace);
        encode_normalized(s, out, cache);
    }

    void encode_normalized(std::string_view s, std::vector<token_t>& out, encode_cache* cache) const {
        auto word = [&](std::string_view w) {
            if (cache) {
                const std::uint64_t h = detail::hash_bytes(w);
                if (cache->lookup(w, h, out)) return;
                const std::size_t before = out.size();
                model.encode_word(w, out);
                cache->store(w, h, std::span<const token_t>(out.data() + before, out.size() - before));
            } else {
                model.encode_word(w, out);
            }
        };
        // Without a pre-tokenizer the whole text is one word; when no token holds "▁" past its first byte, no
        // merge can cross a "▁", so cutting before each one gives the same ids and lets the cache work.
        if (pre.metaspace_split || (pre.pattern == split_pattern::none && model.metaspace_splittable()))
            split_metaspace(s, word);
        else
            split_words(s, pre.pattern, word);
    }
};

} // namespace tl
