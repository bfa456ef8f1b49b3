// tinylm/tokenizer/add_tokens.hpp: growing a tokenizer's vocabulary by whole words, as transformers'
// `tokenizer.add_tokens([...])` does (tokenizers' AddedVocabulary::add_tokens), and a report of how each word
// split before and after.
//
//   tl::tokenizer tok = tl::load_tokenizer_json("tokenizer.json");
//   const tl::tokenizer before = tok;
//   std::vector<tl::token_t> ids = tl::add_tokens(tok, {"нейросеть", "дипфейк"});   // ids vocab_size(), +1, ...
//   std::cout << tl::format_split_report(tl::split_report(before, tok, {"нейросеть", "дипфейк"}));
//   tl::save_tokenizer_json(tok, "out/tokenizer.json");    // added_tokens with their flags, as HF writes them
//
// A new token takes the next id (the old vocabulary size, then +1); the model's embedding and head must grow to
// match (model/resize_vocabulary.hpp). Like Hugging Face, a plain word is a normal (non-special) token matched
// in normalised text: in a Llama-style tokenizer (Prepend "▁" normaliser) "word" then matches "▁word", that is
// after a space or at the start of a stretch of text. For a byte-level tokenizer, Hugging Face's decoder maps an
// added token whose characters all belong to the byte-level alphabet (ASCII letters, Latin-1 such as "é")
// through that alphabet, so "café" decodes as "caf\xE9" there (tokenizers then shows U+FFFD); tinylm's decode
// does the same mapping and returns the raw bytes.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <algorithm>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

// One token to add, with Hugging Face's AddedToken flags.
struct new_token {
    std::string content;
    bool single_word = false; // match only where no word character (\w) touches either side
    bool lstrip = false;      // take the whitespace on the left into the token
    bool rstrip = false;      // take the whitespace on the right into the token
    // Match in normalised text; unset: !special, as `add_tokens` (normalized) and `add_special_tokens` (not).
    std::optional<bool> normalized;
    bool special = false; // a control token: matched in raw text, skipped by decode(skip_special)
};

namespace detail {

inline bool holds_byte_fallback_token(std::string_view s) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
    for (std::size_t at = s.find("<0x"); at != std::string_view::npos; at = s.find("<0x", at + 1))
        if (at + 6 <= s.size() && hex(s[at + 3]) && hex(s[at + 4]) && s[at + 5] == '>') return true;
    return false;
}

// Why `t` cannot be added to `tok` (empty: it can).
inline std::string add_token_problem(const tokenizer& tok, const new_token& t) {
    const std::string quoted = "\"" + t.content + "\"";
    if (t.content.empty()) return "an empty string cannot be a token";
    if (unicode::find_invalid(t.content) != std::string_view::npos) return quoted + " is not valid UTF-8";
    if (const token_t id = tok.token_to_id(t.content); id >= 0)
        return quoted + " is already token " + std::to_string(id) + " of the vocabulary";
    for (const added_token* a : tok.added_tokens())
        if (a->special && t.content.find(a->content) != std::string::npos)
            return quoted + " contains the special token " + a->content +
                   ", which is matched first: the new token could never be found";
    const bool metaspace_style = tok.pre.metaspace_replace || tok.dec.metaspace;
    if (metaspace_style && t.content.find(metaspace) != std::string::npos)
        return quoted + " contains the word marker \u2581 of this tokenizer (write a space instead)";
    if (tok.model.byte_fallback && holds_byte_fallback_token(t.content))
        return quoted + " contains a byte-fallback token <0xNN> of this tokenizer";
    const bool normalized = t.normalized.value_or(!t.special);
    if (normalized && tok.norm.apply(t.content).empty()) return quoted + " normalises to nothing";
    return {};
}

} // namespace detail

// Adds `tokens` to `tok` with ids vocab_size(), vocab_size() + 1, ... and returns them. A token that is already
// in the vocabulary, an empty or invalid string, one given twice, one that holds a special token or the
// tokenizer's markers ("▁" in a metaspace tokenizer, "<0xNN>" with byte fallback) is a tl::error naming it, and
// then nothing is added.
inline std::vector<token_t> add_tokens(tokenizer& tok, std::span<const new_token> tokens) {
    std::set<std::string_view> seen;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        const std::string problem = detail::add_token_problem(tok, tokens[i]);
        check(problem.empty(), [&] { return "add_tokens: token " + std::to_string(i) + ": " + problem; });
        check(seen.insert(tokens[i].content).second, [&] {
            return "add_tokens: token " + std::to_string(i) + ": \"" + tokens[i].content + "\" is given twice";
        });
    }
    std::vector<token_t> ids;
    for (const new_token& n : tokens) {
        added_token t;
        t.content = n.content;
        t.id = static_cast<token_t>(tok.vocab_size());
        t.special = n.special;
        t.normalized = n.normalized.value_or(!n.special);
        t.single_word = n.single_word;
        t.lstrip = n.lstrip;
        t.rstrip = n.rstrip;
        if (t.normalized)
            tok.added_normalized.add(t, tok.norm.apply(t.content));
        else
            tok.added.add(t);
        ids.push_back(t.id);
    }
    return ids;
}

// Plain words: normal tokens with Hugging Face's defaults (normalized, no strip, not single_word).
inline std::vector<token_t> add_tokens(tokenizer& tok, const std::vector<std::string>& words) {
    std::vector<new_token> list(words.size());
    for (std::size_t i = 0; i < words.size(); ++i)
        list[i].content = words[i];
    return add_tokens(tok, std::span<const new_token>(list));
}

// A token as readable text: the added token's content, a model token's bytes when they are valid UTF-8, else
// <0xNN> for each byte.
inline std::string token_text(const tokenizer& tok, token_t id) {
    const std::string_view b = tok.id_to_bytes(id);
    if (unicode::find_invalid(b) == std::string_view::npos) return std::string(b);
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : b) {
        out += "<0x";
        out += digits[c >> 4];
        out += digits[c & 15];
        out += '>';
    }
    return out;
}

struct word_split {
    std::string word;
    // The word alone, and after a space (as inside running text: byte-level tokenizers differ).
    std::vector<token_t> before, after, before_in_text, after_in_text;
};

// How each word encodes with `before` and with `after` (the tokenizer after add_tokens).
inline std::vector<word_split> split_report(const tokenizer& before, const tokenizer& after,
                                            const std::vector<std::string>& words) {
    std::vector<word_split> out;
    for (const std::string& w : words) {
        word_split s;
        s.word = w;
        s.before = before.encode(w);
        s.after = after.encode(w);
        // "a word": the ids after those of "a" (the same with both tokenizers unless "a" itself was added).
        const std::string spaced = "a " + w;
        auto after_lead = [&](const tokenizer& tok) {
            std::vector<token_t> ids = tok.encode(spaced);
            const std::size_t lead = std::min(tok.encode("a").size(), ids.size());
            ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(lead));
            return ids;
        };
        s.before_in_text = after_lead(before);
        s.after_in_text = after_lead(after);
        out.push_back(std::move(s));
    }
    return out;
}

// The report as text: one block per word, each split as pieces with their ids.
inline std::string format_split_report(const tokenizer& before, const tokenizer& after,
                                       const std::vector<word_split>& report) {
    auto pieces = [](const tokenizer& tok, const std::vector<token_t>& ids) {
        std::string s = std::to_string(ids.size()) + (ids.size() == 1 ? " token: " : " tokens: ");
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i) s += " | ";
            s += token_text(tok, ids[i]);
            s += " (";
            s += std::to_string(ids[i]);
            s += ')';
        }
        return s;
    };
    std::string out;
    for (const word_split& w : report) {
        out += w.word + "\n";
        out += "  before:          " + pieces(before, w.before) + "\n";
        out += "  after:           " + pieces(after, w.after) + "\n";
        out += "  before, in text: " + pieces(before, w.before_in_text) + "\n";
        out += "  after, in text:  " + pieces(after, w.after_in_text) + "\n";
    }
    return out;
}

} // namespace tl
