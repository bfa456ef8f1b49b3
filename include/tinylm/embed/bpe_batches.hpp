// tinylm/embed/bpe_batches.hpp: sentence-encoder batches from a tinylm BPE tokenizer (tokenizer/tokenizer.hpp), for
// an encoder trained from scratch on our own vocabulary (presets::encoder_small):
//   row = [cls] ids(text)[: max_length - 2] [sep], right-padded with pad; token types all 0.
// The special tokens are ids of the tokenizer's vocabulary (bpe_trainer_options::special_tokens: for example
// {"[PAD]", "[CLS]", "[SEP]", "[UNK]"} gives ids 0..3). A pretrained BERT's WordPiece tokenizer has its own batches
// (io/sentence_transformers.hpp: sentence_tokenizer).
#pragma once

#include <tinylm/embed/sentence_encoder.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <algorithm>

namespace tl::embed {

struct bpe_specials {
    token_t cls = -1, sep = -1, pad = -1;
};

// The specials by name in `tok` (an error names a missing one).
inline bpe_specials find_bpe_specials(const tokenizer& tok, std::string_view cls = "[CLS]",
                                      std::string_view sep = "[SEP]", std::string_view pad = "[PAD]") {
    bpe_specials s{tok.token_to_id(cls), tok.token_to_id(sep), tok.token_to_id(pad)};
    check(s.cls >= 0 && s.sep >= 0 && s.pad >= 0, [&] {
        return "bpe_sentence_tokenizer: the tokenizer lacks " +
               std::string(s.cls < 0   ? cls
                           : s.sep < 0 ? sep
                                       : pad) +
               " (train it with special_tokens such as {\"[PAD]\", \"[CLS]\", \"[SEP]\", \"[UNK]\"})";
    });
    return s;
}

// `tok` must outlive the function.
inline batch_tokenizer bpe_sentence_tokenizer(const tokenizer& tok, bpe_specials s) {
    return [&tok, s](std::span<const std::string> texts, index_t max_length) {
        check(max_length >= 2, "bpe_sentence_tokenizer: max_length must be >= 2 ([CLS] and [SEP])");
        token_batch b;
        b.batch = index_t(texts.size());
        std::vector<std::vector<token_t>> rows;
        for (const std::string& t : texts) {
            std::vector<token_t> ids = tok.encode(t);
            if (index_t(ids.size()) > max_length - 2) {
                ids.resize(std::size_t(max_length - 2));
                ++b.truncated;
            }
            ids.insert(ids.begin(), s.cls);
            ids.push_back(s.sep);
            b.time = std::max(b.time, index_t(ids.size()));
            rows.push_back(std::move(ids));
        }
        b.ids.assign(std::size_t(b.batch * b.time), s.pad);
        b.type_ids.assign(b.ids.size(), 0);
        for (std::size_t r = 0; r < rows.size(); ++r) {
            std::copy(rows[r].begin(), rows[r].end(), b.ids.begin() + std::ptrdiff_t(r) * b.time);
            b.lengths.push_back(index_t(rows[r].size()));
        }
        return b;
    };
}

} // namespace tl::embed
