// tinylm/tokenizer/decoder.hpp: ids back to text. Byte-level tokens are already bytes; in the metaspace style
// "▁" becomes a space, <0xNN> tokens become their byte, and one leading space is stripped (what Llama's
// Replace + ByteFallback + Fuse + Strip decoders do).
#pragma once

#include <tinylm/tokenizer/pretokenizer.hpp>

#include <string>
#include <string_view>

namespace tl {

struct token_decoder {
    // "▁" → " ".
    bool metaspace = false;
    // Remove one leading space from the whole text (Hugging Face Strip(" ", 1, 0) / Metaspace prepend).
    bool strip_leading_space = false;

    std::string finish(std::string text) const {
        if (metaspace) {
            std::string out;
            out.reserve(text.size());
            for (std::size_t i = 0; i < text.size(); ++i) {
                if (i + 3 <= text.size() && text.compare(i, 3, tl::metaspace) == 0) {
                    out += ' ';
                    i += 2;
                } else {
                    out += text[i];
                }
            }
            text.swap(out);
        }
        if (strip_leading_space && !text.empty() && text[0] == ' ') text.erase(0, 1);
        return text;
    }
};

} // namespace tl
