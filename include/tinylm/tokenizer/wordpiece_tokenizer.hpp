// tinylm/tokenizer/wordpiece_tokenizer.hpp: a BERT-style tokenizer, the whole pipeline of a WordPiece
// tokenizer.json:
//   added tokens → BertNormalizer → BertPreTokenizer → WordPiece → template ([CLS] $A [SEP] $B [SEP]);
//   WordPiece decoder
// plus what an encoder needs around it: truncation to a length that counts the special tokens (longest first
// for pairs) and batches right-padded to their longest row.
//
//   tl::wordpiece_tokenizer tok = tl::load_wordpiece_json("all-MiniLM-L6-v2/tokenizer.json");
//   tl::wordpiece_batch b = tok.encode_batch(texts, 256);   // ids (B, T), type_ids (B, T), lengths (B)
//   if (b.n_truncated) std::printf("%zu texts were longer than 256 tokens and were cut\n", b.n_truncated);
//
// A tokenizer is immutable once built, so one object can encode from many threads.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/shape.hpp>
#include <tinylm/core/tensor.hpp>
#include <tinylm/core/token.hpp>
#include <tinylm/tokenizer/bert_normalizer.hpp>
#include <tinylm/tokenizer/special_tokens.hpp>
#include <tinylm/tokenizer/wordpiece.hpp>

#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl {

// The post-processor (TemplateProcessing): where the special tokens go around one sequence or a pair.
struct token_template {
    struct item {
        token_t id = -1;  // a special token, or -1 for the sequence
        int sequence = 0; // for the sequence: 0 ($A) or 1 ($B)
        token_t type_id = 0;
    };
    std::vector<item> single, pair;

    std::size_t n_special(bool is_pair) const {
        const auto& items = is_pair ? pair : single;
        return static_cast<std::size_t>(
            std::count_if(items.begin(), items.end(), [](const item& i) { return i.id >= 0; }));
    }
};

// One encoded text or pair: ids and their token type ids (0 for the first text, 1 for the second in BERT).
struct wordpiece_encoding {
    std::vector<token_t> ids;
    std::vector<token_t> type_ids;
    bool truncated = false;
};

// A batch, right-padded to its longest row.
struct wordpiece_batch {
    std::size_t batch = 0, time = 0; // B, T
    std::vector<token_t> ids;        // (B, T); pad_id after each row's end
    std::vector<token_t> type_ids;   // (B, T); pad_type_id in the padding
    std::vector<index_t> lengths;    // (B) real tokens per row: the attention mask is lengths[b] ones, then zeros
    std::size_t n_truncated = 0;     // rows whose text (or pair) was cut to fit the maximum length

    cview<token_t> ids_view() const { return {ids.data(), {index_t(batch), index_t(time)}}; }
    cview<token_t> type_ids_view() const { return {type_ids.data(), {index_t(batch), index_t(time)}}; }
    cview<index_t> lengths_view() const { return {lengths.data(), {index_t(batch)}}; }
};

// Lengths to keep of two sequences of a and b tokens so that together they fit in `budget`, the longer one cut
// first (Hugging Face's LongestFirst): the shorter keeps everything when the longer can absorb the cut, otherwise
// both get half the budget (the second of two equal ones the odd token).
inline std::pair<std::size_t, std::size_t> longest_first(std::size_t a, std::size_t b, std::size_t budget) {
    if (a + b <= budget) return {a, b};
    const std::size_t shorter = std::min(a, b);
    std::size_t keep_short = shorter;
    std::size_t keep_long = shorter > budget ? shorter : std::max(shorter, budget - shorter);
    if (keep_short + keep_long > budget) {
        keep_short = budget / 2;
        keep_long = budget / 2 + budget % 2;
    }
    if (a <= b) return {std::min(a, keep_short), std::min(b, keep_long)};
    return {std::min(a, keep_long), std::min(b, keep_short)};
}

// The WordPiece decoder: pieces after the first are joined with a space unless they carry the prefix (which is
// dropped), and with `cleanup` the spaces English tokenization leaves before punctuation and inside
// contractions are removed, token by token.
struct wordpiece_decoder {
    std::string prefix = "##";
    bool cleanup = true;

    static void replace_all(std::string& s, std::string_view from, std::string_view to) {
        for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
            s.replace(at, from.size(), to);
    }
    std::string token_text(std::string_view token, bool first) const {
        std::string t;
        if (first)
            t = token;
        else if (!prefix.empty() && token.starts_with(prefix))
            t = token.substr(prefix.size());
        else
            t.append(" ").append(token);
        if (cleanup && t.find(' ') != std::string::npos) {
            static constexpr std::pair<std::string_view, std::string_view> rules[] = {
                {" .", "."},   {" ?", "?"},           {" !", "!"},   {" ,", ","},     {" ' ", "'"},   {" n't", "n't"},
                {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
            for (const auto& [from, to] : rules)
                replace_all(t, from, to);
        }
        return t;
    }
};

class wordpiece_tokenizer {
public:
    // Absent: no normalizer in the file.
    std::optional<bert_normalizer> normalizer = bert_normalizer{};
    wordpiece_model model;
    // Added tokens matched in the raw text, and those (normalized: true) matched after normalisation.
    added_vocabulary added, added_normalized;
    token_template post;
    // Absent: no decoder in the file (tokens are joined with spaces).
    std::optional<wordpiece_decoder> decoder = wordpiece_decoder{};
    token_t pad_id = 0, pad_type_id = 0;

    // What the file asks for beyond the pipeline, recorded but not applied: the caller chooses the length
    // (sentence-transformers overrides both with its max_seq_length).
    struct file_settings {
        std::size_t truncation_max_length = 0; // 0: none
        std::string truncation_strategy;       // "LongestFirst", ...
        std::size_t padding_fixed = 0;         // Fixed(n) padding; 0: none or BatchLongest
        bool padding = false;
    } settings;
    // The tokenizer.json text it was loaded from, written back unchanged by save_wordpiece_json.
    std::string source_json;

    std::size_t vocab_size() const {
        std::size_t n = model.tokens.size();
        for (const auto* v : {&added, &added_normalized})
            for (const auto& t : v->tokens())
                n = std::max(n, static_cast<std::size_t>(t.id) + 1);
        return n;
    }
    const added_token* find_added(token_t id) const {
        if (const added_token* t = added.find(id)) return t;
        return added_normalized.find(id);
    }
    token_t token_to_id(std::string_view token) const {
        if (const added_token* t = added.find(token)) return t->id;
        if (const added_token* t = added_normalized.find(token)) return t->id;
        return model.find(token);
    }
    std::string_view id_to_token(token_t id) const {
        if (const added_token* t = find_added(id)) return t->content;
        check(id >= 0 && static_cast<std::size_t>(id) < model.tokens.size(), [&] {
            return "wordpiece_tokenizer: token id " + std::to_string(id) + " is outside the vocabulary of " +
                   std::to_string(vocab_size());
        });
        return model.tokens[static_cast<std::size_t>(id)];
    }

    // Ids of one text (valid UTF-8, else tl::error), without the template's special tokens unless asked.
    std::vector<token_t> encode(std::string_view text, bool add_special_tokens = false) const {
        if (!add_special_tokens) {
            std::vector<token_t> out;
            unicode::check_utf8(text, "encode: input text");
            encode_text(text, out);
            return out;
        }
        return encode_full(text, nullptr, add_special_tokens, 0).ids;
    }

    // One text, or a pair when `second` is given, through the template; max_length > 0 truncates so that the
    // result, special tokens included, has at most max_length tokens.
    wordpiece_encoding encode_full(std::string_view first, const std::string_view* second, bool add_special_tokens,
                                   std::size_t max_length) const {
        unicode::check_utf8(first, "encode: first text");
        std::vector<token_t> a, b;
        encode_text(first, a);
        if (second) {
            unicode::check_utf8(*second, "encode: second text");
            encode_text(*second, b);
        }
        wordpiece_encoding out;
        if (max_length > 0) {
            const std::size_t n_special = add_special_tokens ? post.n_special(second != nullptr) : 0;
            check(max_length > n_special, [&] {
                return "encode: max_length " + std::to_string(max_length) + " leaves no room beside the " +
                       std::to_string(n_special) + " special tokens";
            });
            const std::size_t budget = max_length - n_special;
            std::size_t keep_a = std::min(a.size(), budget), keep_b = 0;
            if (second) std::tie(keep_a, keep_b) = longest_first(a.size(), b.size(), budget);
            out.truncated = keep_a < a.size() || keep_b < b.size();
            a.resize(keep_a);
            b.resize(std::min(b.size(), keep_b));
        }
        const auto& items = second ? post.pair : post.single;
        if (!add_special_tokens || items.empty()) {
            out.ids = std::move(a);
            out.type_ids.assign(out.ids.size(), 0);
            if (second) {
                out.ids.insert(out.ids.end(), b.begin(), b.end());
                out.type_ids.resize(out.ids.size(), 1);
            }
            return out;
        }
        out.ids.reserve(a.size() + b.size() + items.size());
        for (const auto& it : items) {
            if (it.id >= 0) {
                out.ids.push_back(it.id);
                out.type_ids.push_back(it.type_id);
            } else {
                const auto& seq = it.sequence == 0 ? a : b;
                out.ids.insert(out.ids.end(), seq.begin(), seq.end());
                out.type_ids.resize(out.ids.size(), it.type_id);
            }
        }
        return out;
    }

    // A batch of texts with the template's special tokens, each cut to max_length tokens (0: no limit) and
    // right-padded to the longest.
    wordpiece_batch encode_batch(std::span<const std::string_view> texts, std::size_t max_length) const {
        std::vector<wordpiece_encoding> rows;
        rows.reserve(texts.size());
        for (std::string_view t : texts)
            rows.push_back(encode_full(t, nullptr, true, max_length));
        return pad(std::move(rows));
    }
    wordpiece_batch encode_batch(std::span<const std::string> texts, std::size_t max_length) const {
        std::vector<std::string_view> views(texts.begin(), texts.end());
        return encode_batch(std::span<const std::string_view>(views), max_length);
    }
    // A batch of pairs ([CLS] a [SEP] b [SEP] for BERT).
    wordpiece_batch encode_batch(std::span<const std::pair<std::string_view, std::string_view>> pairs,
                                 std::size_t max_length) const {
        std::vector<wordpiece_encoding> rows;
        rows.reserve(pairs.size());
        for (const auto& [a, b] : pairs)
            rows.push_back(encode_full(a, &b, true, max_length));
        return pad(std::move(rows));
    }

    // Text of `ids` as the file's decoder writes it; special added tokens are left out with skip_special.
    std::string decode(std::span<const token_t> ids, bool skip_special = true) const {
        std::string text;
        bool first = true;
        for (token_t id : ids) {
            const added_token* t = find_added(id);
            if (t && t->special && skip_special) continue;
            const std::string_view token = id_to_token(id);
            if (decoder) {
                text += decoder->token_text(token, first);
            } else {
                if (!first) text += ' ';
                text += token;
            }
            first = false;
        }
        return text;
    }

private:
    wordpiece_batch pad(std::vector<wordpiece_encoding> rows) const {
        wordpiece_batch b;
        b.batch = rows.size();
        for (const auto& r : rows)
            b.time = std::max(b.time, r.ids.size());
        b.ids.assign(b.batch * b.time, pad_id);
        b.type_ids.assign(b.batch * b.time, pad_type_id);
        b.lengths.resize(b.batch);
        for (std::size_t i = 0; i < rows.size(); ++i) {
            std::copy(rows[i].ids.begin(), rows[i].ids.end(), b.ids.begin() + static_cast<std::ptrdiff_t>(i * b.time));
            std::copy(rows[i].type_ids.begin(), rows[i].type_ids.end(),
                      b.type_ids.begin() + static_cast<std::ptrdiff_t>(i * b.time));
            b.lengths[i] = static_cast<index_t>(rows[i].ids.size());
            b.n_truncated += rows[i].truncated;
        }
        return b;
    }

    // Appends the ids of valid UTF-8 `text` (no template) to out.
    void encode_text(std::string_view text, std::vector<token_t>& out) const {
        added.split(
            text,
            [&](std::string_view piece) {
                if (!normalizer) {
                    encode_normalized(piece, out);
                    return;
                }
                thread_local std::string normalized;
                normalized.clear();
                normalizer->apply(piece, normalized);
                if (added_normalized.empty()) {
                    encode_normalized(normalized, out);
                } else {
                    // The tokens of added_normalized match in normalised text; copy it since the buffer is shared.
                    const std::string copy = normalized;
                    added_normalized.split(
                        copy, [&](std::string_view p) { encode_normalized(p, out); },
                        [&](token_t id) { out.push_back(id); });
                }
            },
            [&](token_t id) { out.push_back(id); });
    }

    void encode_normalized(std::string_view s, std::vector<token_t>& out) const {
        split_bert_words(s, [&](std::string_view word) { model.encode_word(word, out); });
    }
};

} // namespace tl
