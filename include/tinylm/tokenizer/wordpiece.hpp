// tinylm/tokenizer/wordpiece.hpp: the WordPiece model (BERT): a vocabulary, and each word cut greedily into the
// longest vocabulary entries from the left; pieces after the first carry the continuing-subword prefix ("##").
// A word with a piece that matches nothing, or longer than max_input_chars_per_word characters, is one <unk>
// (Hugging Face `tokenizers`, models/wordpiece).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/token.hpp>
#include <tinylm/tokenizer/bpe.hpp> // token_map
#include <tinylm/tokenizer/unicode.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

class wordpiece_model {
public:
    // id → token, as spelled in the vocabulary (continuations with their prefix).
    std::vector<std::string> tokens;
    std::string unk_token = "[UNK]";
    std::string continuing_subword_prefix = "##";
    std::size_t max_input_chars_per_word = 100;

    // Rebuilds the lookup tables after `tokens` and the settings changed; unk_token must be in the vocabulary.
    void finalize() {
        words_.clear();
        continuations_.clear();
        max_word_bytes_ = max_continuation_bytes_ = 0;
        const std::string_view prefix = continuing_subword_prefix;
        for (std::size_t id = 0; id < tokens.size(); ++id) {
            const std::string& t = tokens[id];
            check(words_.emplace(t, static_cast<token_t>(id)).second,
                  [&] { return "WordPiece vocabulary: token \"" + t + "\" appears twice"; });
            max_word_bytes_ = std::max(max_word_bytes_, t.size());
            // A continuation is looked up without its prefix, so that encoding builds no strings.
            if (!prefix.empty() && t.size() > prefix.size() && t.starts_with(prefix)) {
                continuations_.emplace(t.substr(prefix.size()), static_cast<token_t>(id));
                max_continuation_bytes_ = std::max(max_continuation_bytes_, t.size() - prefix.size());
            }
        }
        unk_ = find(unk_token);
        check(unk_ >= 0, [&] { return "WordPiece: the unk token \"" + unk_token + "\" is not in the vocabulary"; });
    }

    token_t find(std::string_view token) const {
        auto it = words_.find(token);
        return it == words_.end() ? -1 : it->second;
    }
    token_t unk() const { return unk_; }

    // Appends the ids of one word (valid UTF-8, not empty) to out.
    void encode_word(std::string_view word, std::vector<token_t>& out) const {
        if (utf8::length(word) > max_input_chars_per_word) {
            out.push_back(unk_);
            return;
        }
        const std::size_t first = out.size();
        for (std::size_t start = 0; start < word.size();) {
            const bool whole = start == 0 || continuing_subword_prefix.empty();
            const token_map& map = whole ? words_ : continuations_;
            const std::size_t longest = whole ? max_word_bytes_ : max_continuation_bytes_;
            // No entry is longer than `longest` bytes: start there, on a character boundary, and shrink.
            std::size_t end = std::min(word.size(), start + longest);
            while (end < word.size() && end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80)
                --end;
            token_t id = -1;
            while (end > start) {
                auto it = map.find(word.substr(start, end - start));
                if (it != map.end()) {
                    id = it->second;
                    break;
                }
                do
                    --end;
                while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
            }
            if (id < 0) {
                out.resize(first);
                out.push_back(unk_);
                return;
            }
            out.push_back(id);
            start = end;
        }
    }

private:
    token_map words_, continuations_;
    std::size_t max_word_bytes_ = 0, max_continuation_bytes_ = 0;
    token_t unk_ = -1;
};

} // namespace tl
