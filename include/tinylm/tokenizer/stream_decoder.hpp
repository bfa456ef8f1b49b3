// tinylm/tokenizer/stream_decoder.hpp: ids to text one token at a time, for printing as tokens are generated.
//
//   tl::stream_decoder text(tok);
//   for (tl::token_t id : generated) std::cout << text.push(id) << std::flush;
//   std::cout << text.finish();
//
// A byte-level token may hold part of a UTF-8 character (an emoji is often two or three tokens), so push()
// returns only whole characters and keeps the rest until the next token completes it. What push() and finish()
// return, joined, equals tok.decode(ids, skip_special) for any ids whose bytes are valid UTF-8; bytes that can
// never become valid (a stray continuation byte, a model that ends inside a character) come out as U+FFFD, as
// Hugging Face's decode does, so the output is always valid UTF-8 (safe for JSON and terminals).
#pragma once

#include <tinylm/core/utf8.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <string>
#include <string_view>

namespace tl {

namespace detail {
// Bytes at the end of `s` that start a UTF-8 character the next bytes could still complete (0 when none).
inline std::size_t incomplete_utf8_tail(std::string_view s) {
    const std::size_t n = s.size();
    for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
        const auto b = static_cast<unsigned char>(s[n - back]);
        if ((b & 0xC0) == 0x80) continue; // a continuation byte: look further back for the lead
        const std::size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        if (b < 0xC2 || b > 0xF4 || back >= need) return 0; // ASCII, an invalid lead, or already complete
        // Complete it with the smallest continuation bytes: valid then means the bytes so far are a valid start
        // (the second byte's range depends on the lead: E0 A0.., ED ..9F, F0 90.., F4 ..8F).
        std::string probe(s.substr(n - back));
        if (back == 1) return 1; // any valid lead has some valid second byte
        probe.append(need - back, '\x80');
        return utf8::sequence_length(probe, 0) == need ? back : 0;
    }
    return 0;
}
} // namespace detail

class stream_decoder {
public:
    explicit stream_decoder(const tokenizer& tok, bool skip_special = true) : tok_(&tok), skip_special_(skip_special) {}

    // The text token `id` completes (possibly empty). An id the tokenizer does not have (a model's vocabulary is
    // often padded past its tokenizer's) adds nothing, as in Hugging Face's decode.
    std::string push(token_t id) {
        if (id < 0 || std::size_t(id) >= tok_->vocab_size()) return {};
        tok_->append_token_bytes(id, pending_, skip_special_);
        return take(pending_.size() - detail::incomplete_utf8_tail(pending_));
    }

    // Whatever is left (an unfinished character becomes U+FFFD); the decoder can then start a new text.
    std::string finish() {
        std::string rest = take(pending_.size());
        started_ = false;
        return rest;
    }

private:
    // Emits pending_[0, n): invalid bytes replaced, then the tokenizer's decoder (metaspace, one leading space).
    std::string take(std::size_t n) {
        std::string text;
        const std::string_view bytes(pending_.data(), n);
        for (std::size_t i = 0; i < n;) {
            bool ok;
            const std::size_t at = i;
            utf8::decode(bytes, i, ok);
            if (ok)
                text.append(bytes.substr(at, i - at));
            else
                utf8::append(text, utf8::replacement);
        }
        pending_.erase(0, n);
        if (text.empty()) return text;
        token_decoder once = tok_->dec;
        once.strip_leading_space = tok_->dec.strip_leading_space && !started_;
        started_ = true;
        return once.finish(std::move(text));
    }

    const tokenizer* tok_;
    bool skip_special_;
    bool started_ = false;
    std::string pending_;
};

} // namespace tl
