// tinylm/tokenizer/bpe.hpp: the BPE model: vocabulary, ranked merges, and the encoding of one word.
//
// Tokens are kept as the bytes they stand for: a byte-level file's "Ġthe" is stored as " the", so decoding is a
// concatenation. A word is encoded as Hugging Face `tokenizers` does: start from one symbol per byte
// (byte-level) or per character (falling back to the <0xNN> byte tokens, then to <unk>), then repeatedly merge
// the adjacent pair with the lowest merge rank, leftmost first.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/token.hpp>
#include <tinylm/tokenizer/detail/flat_map.hpp>
#include <tinylm/tokenizer/unicode.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tl {

struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return detail::hash_bytes(s); }
};
using token_map = std::unordered_map<std::string, token_t, string_hash, std::equal_to<>>;

class bpe_model {
public:
    struct merge_info {
        std::int32_t rank = -1;
        token_t result = -1;
    };

    // Vocabulary: id → token bytes, and back.
    std::vector<std::string> tokens;
    token_map ids;
    // Merges in rank order, as pairs of ids.
    std::vector<std::pair<token_t, token_t>> merges;
    // Byte-level alphabet (every word starts as bytes) or characters with byte fallback.
    bool byte_level = true;
    // Characters missing from the vocabulary become their <0xNN> byte tokens (Llama style).
    bool byte_fallback = false;
    // The id of <unk>, or -1; with fuse_unk consecutive unknown characters make one <unk>.
    token_t unk = -1;
    bool fuse_unk = false;

    static constexpr std::uint64_t pair_key(token_t a, token_t b) {
        return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
    }

    // Adds a token (its bytes must be new); returns its id.
    token_t add_token(std::string bytes) {
        const auto id = static_cast<token_t>(tokens.size());
        ids.emplace(bytes, id);
        tokens.push_back(std::move(bytes));
        return id;
    }
    token_t find(std::string_view bytes) const {
        auto it = ids.find(bytes);
        return it == ids.end() ? -1 : it->second;
    }

    // Rebuilds the lookup tables after `tokens`/`merges` were filled; merge results must be in the vocabulary.
    void finalize() {
        merge_table_ = detail::u64_map<merge_info>(merges.size() + 16);
        for (std::size_t r = 0; r < merges.size(); ++r) {
            const token_t a = merges[r].first, b = merges[r].second;
            const token_t result = find(tokens[static_cast<std::size_t>(a)] + tokens[static_cast<std::size_t>(b)]);
            check(result >= 0, [&] {
                return "BPE merge " + std::to_string(r) + " (" + std::to_string(a) + ", " + std::to_string(b) +
                       ") makes a token that is not in the vocabulary";
            });
            merge_info& m = merge_table_[pair_key(a, b)];
            if (m.rank < 0) m = {static_cast<std::int32_t>(r), result};
        }
        byte_token_.fill(-1);
        for (int b = 0; b < 256; ++b) {
            if (byte_level) {
                byte_token_[static_cast<std::size_t>(b)] = find(std::string(1, static_cast<char>(b)));
            } else {
                static constexpr char hex[] = "0123456789ABCDEF";
                const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
                byte_token_[static_cast<std::size_t>(b)] = find(name);
            }
        }
        if (byte_level) {
            for (int b = 0; b < 256; ++b)
                check(byte_token_[static_cast<std::size_t>(b)] >= 0,
                      [&] { return "byte-level BPE vocabulary has no token for byte " + std::to_string(b); });
        }
        metaspace_splittable_ = !byte_level && find("\xE2\x96\x81") >= 0;
        for (const std::string& t : tokens)
            if (t.size() > 3 && t.find("\xE2\x96\x81", 1) != std::string::npos) metaspace_splittable_ = false;
        byte_fallback_id_.assign(tokens.size(), -1);
        if (!byte_level) {
            for (int b = 0; b < 256; ++b)
                if (byte_token_[static_cast<std::size_t>(b)] >= 0)
                    byte_fallback_id_[static_cast<std::size_t>(byte_token_[static_cast<std::size_t>(b)])] = b;
        }
    }

    // True for a character vocabulary in which "▁" only ever starts a token.
    bool metaspace_splittable() const { return metaspace_splittable_; }
    const merge_info* find_merge(token_t a, token_t b) const { return merge_table_.find(pair_key(a, b)); }
    // For byte-fallback vocabularies, the byte an <0xNN> token stands for, else -1.
    int fallback_byte(token_t id) const { return byte_fallback_id_[static_cast<std::size_t>(id)]; }
    token_t byte_token(unsigned char b) const { return byte_token_[b]; }

    // Appends the ids of one word (valid UTF-8 for the character alphabet) to out.
    void encode_word(std::string_view word, std::vector<token_t>& out) const {
        thread_local std::vector<token_t> symbols;
        symbols.clear();
        initial_symbols(word, symbols);
        if (symbols.size() <= 48)
            merge_small(symbols);
        else
            merge_large(symbols);
        out.insert(out.end(), symbols.begin(), symbols.end());
    }

private:
    void initial_symbols(std::string_view word, std::vector<token_t>& symbols) const {
        if (byte_level) {
            for (unsigned char b : word)
                symbols.push_back(byte_token_[b]);
            return;
        }
        bool last_unk = false;
        for (std::size_t i = 0; i < word.size();) {
            const std::size_t len =
                std::min(unicode::sequence_length(static_cast<unsigned char>(word[i])), word.size() - i);
            const std::string_view ch = word.substr(i, len);
            i += len;
            if (const token_t id = find(ch); id >= 0) {
                symbols.push_back(id);
                last_unk = false;
                continue;
            }
            if (byte_fallback) {
                bool all = true;
                for (unsigned char b : ch)
                    all = all && byte_token_[b] >= 0;
                if (all) {
                    for (unsigned char b : ch)
                        symbols.push_back(byte_token_[b]);
                    last_unk = false;
                    continue;
                }
            }
            if (unk < 0)
                fail("BPE: the character '" + std::string(ch) + "' is not in the vocabulary and there is no <unk>");
            if (!(fuse_unk && last_unk)) symbols.push_back(unk);
            last_unk = true;
        }
    }

    // Lowest rank first, leftmost among equals; the rank of each adjacent pair is kept in an array and only
    // the two pairs around a merge are looked up again. Quadratic in the worst case, for short words.
    void merge_small(std::vector<token_t>& s) const {
        std::int32_t rank[64];
        token_t result[64];
        std::size_t n = s.size();
        auto look = [&](std::size_t i) {
            const merge_info* m = merge_table_.find(pair_key(s[i], s[i + 1]));
            rank[i] = m ? m->rank : INT32_MAX;
            result[i] = m ? m->result : -1;
        };
        for (std::size_t i = 0; i + 1 < n; ++i)
            look(i);
        while (n > 1) {
            std::int32_t best_rank = INT32_MAX;
            std::size_t best = 0;
            for (std::size_t i = 0; i + 1 < n; ++i)
                if (rank[i] < best_rank) best_rank = rank[i], best = i;
            if (best_rank == INT32_MAX) break;
            s[best] = result[best];
            for (std::size_t i = best + 1; i + 1 < n; ++i) {
                s[i] = s[i + 1];
                rank[i] = rank[i + 1];
                result[i] = result[i + 1];
            }
            --n;
            if (best + 1 < n) look(best);
            if (best > 0) look(best - 1);
        }
        s.resize(n);
    }

    // A heap of candidate merges over a linked list of symbols, for long words (a whole text in the Llama
    // style): O(n log n).
    void merge_large(std::vector<token_t>& s) const {
        const std::size_t n = s.size();
        std::vector<std::int64_t> prev(n), next(n);
        for (std::size_t i = 0; i < n; ++i)
            prev[i] = static_cast<std::int64_t>(i) - 1, next[i] = static_cast<std::int64_t>(i + 1);
        next[n - 1] = -1;
        std::vector<char> alive(n, 1);
        struct cand {
            std::int32_t rank;
            std::int64_t pos;
            token_t left, right;
            bool operator>(const cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
        };
        std::priority_queue<cand, std::vector<cand>, std::greater<>> heap;
        auto push = [&](std::int64_t i) {
            if (i < 0 || next[static_cast<std::size_t>(i)] < 0) return;
            const auto j = static_cast<std::size_t>(next[static_cast<std::size_t>(i)]);
            if (const merge_info* m = merge_table_.find(pair_key(s[static_cast<std::size_t>(i)], s[j])))
                heap.push({m->rank, i, s[static_cast<std::size_t>(i)], s[j]});
        };
        for (std::size_t i = 0; i + 1 < n; ++i)
            push(static_cast<std::int64_t>(i));
        while (!heap.empty()) {
            const cand c = heap.top();
            heap.pop();
            const auto i = static_cast<std::size_t>(c.pos);
            if (!alive[i] || s[i] != c.left || next[i] < 0) continue;
            const auto j = static_cast<std::size_t>(next[i]);
            if (s[j] != c.right) continue;
            const merge_info* m = merge_table_.find(pair_key(c.left, c.right));
            s[i] = m->result;
            alive[j] = 0;
            next[i] = next[j];
            if (next[j] >= 0) prev[static_cast<std::size_t>(next[j])] = static_cast<std::int64_t>(i);
            push(prev[i]);
            push(static_cast<std::int64_t>(i));
        }
        std::size_t w = 0;
        for (std::int64_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)])
            s[w++] = s[static_cast<std::size_t>(i)];
        s.resize(w);
    }

    detail::u64_map<merge_info> merge_table_;
    std::array<token_t, 256> byte_token_{};
    std::vector<int> byte_fallback_id_;
    bool metaspace_splittable_ = false;
};

} // namespace tl
