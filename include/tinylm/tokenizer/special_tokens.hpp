// tinylm/tokenizer/special_tokens.hpp: added tokens (<bos>, <eos>, <pad>, <unk>, chat markers such as
// <|im_start|>) that are matched in the raw text before normalisation and splitting, leftmost and longest first,
// as Hugging Face `tokenizers` does.
#pragma once

#include <tinylm/tokenizer/bpe.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

struct added_token {
    std::string content;
    token_t id = -1;
    // Special tokens are control tokens (skipped by decode with skip_special); the others are ordinary words
    // that must never be split.
    bool special = true;
    // Matched in the normalized text rather than the raw text (Hugging Face's default for non-special tokens).
    bool normalized = false;
    // Hugging Face's AddedToken flags: match only as a whole word; swallow the whitespace on the left / right.
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
};

class added_vocabulary {
public:
    const std::vector<added_token>& tokens() const { return tokens_; }
    bool empty() const { return tokens_.empty(); }

    void add(added_token t) {
        check(!t.content.empty(), "added token with empty content");
        tokens_.push_back(std::move(t));
        const std::size_t k = tokens_.size() - 1;
        auto& list = by_first_[static_cast<unsigned char>(tokens_[k].content[0])];
        list.push_back(k);
        std::stable_sort(list.begin(), list.end(), [&](std::size_t a, std::size_t b) {
            return tokens_[a].content.size() > tokens_[b].content.size();
        });
        single_first_ = -1;
        for (int b = 0, n = 0; b < 256; ++b)
            if (!by_first_[static_cast<std::size_t>(b)].empty()) single_first_ = ++n == 1 ? b : -2;
        if (single_first_ < 0) single_first_ = -1;
        if (static_cast<std::size_t>(tokens_[k].id) >= by_id_.size())
            by_id_.resize(static_cast<std::size_t>(tokens_[k].id) + 1, -1);
        by_id_[static_cast<std::size_t>(tokens_[k].id)] = static_cast<std::int32_t>(k);
    }

    // The added token with this id, or nullptr.
    const added_token* find(token_t id) const {
        if (id < 0 || static_cast<std::size_t>(id) >= by_id_.size() || by_id_[static_cast<std::size_t>(id)] < 0)
            return nullptr;
        return &tokens_[static_cast<std::size_t>(by_id_[static_cast<std::size_t>(id)])];
    }
    const added_token* find(std::string_view content) const {
        for (const auto& t : tokens_)
            if (t.content == content) return &t;
        return nullptr;
    }

    // Calls on_text(std::string_view) for the stretches between added tokens and on_token(token_t) for each
    // added token found, in order.
    template <class OnText, class OnToken>
    void split(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
        if (tokens_.empty()) {
            if (!text.empty()) on_text(text);
            return;
        }
        std::size_t start = 0;
        for (std::size_t i = 0; i < text.size(); ++i) {
            if (single_first_ >= 0) { // one first byte: let memchr find the candidates
                const void* hit = std::memchr(text.data() + i, single_first_, text.size() - i);
                if (!hit) break;
                i = static_cast<std::size_t>(static_cast<const char*>(hit) - text.data());
            }
            const auto& list = by_first_[static_cast<unsigned char>(text[i])];
            if (list.empty()) continue;
            for (std::size_t k : list) {
                const std::string& c = tokens_[k].content;
                if (text.compare(i, c.size(), c) == 0) {
                    if (i > start) on_text(text.substr(start, i - start));
                    on_token(tokens_[k].id);
                    start = i + c.size();
                    i = start - 1;
                    break;
                }
            }
        }
        if (start < text.size()) on_text(text.substr(start));
    }

private:
    std::vector<added_token> tokens_;
    std::array<std::vector<std::size_t>, 256> by_first_;
    std::vector<std::int32_t> by_id_;
    int single_first_ = -1; // the first byte of every added token when they share one, else -1
};

} // namespace tl
