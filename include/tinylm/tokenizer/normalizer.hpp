// tinylm/tokenizer/normalizer.hpp: text normalisation before splitting: NFC (utf8proc), then prepend and
// replace in the Llama metaspace style (Prepend("▁"), Replace(" ", "▁")).
#pragma once

#include <tinylm/tokenizer/unicode.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl {

struct normalizer {
    // Unicode NFC (Hugging Face "NFC").
    bool nfc = false;
    // Put in front of non-empty text (Hugging Face "Prepend"), applied before the replacements.
    std::string prepend;
    // Literal replacements, in order (Hugging Face "Replace" with a String pattern).
    std::vector<std::pair<std::string, std::string>> replace;

    bool empty() const { return !nfc && prepend.empty() && replace.empty(); }

    // `text` must be valid UTF-8.
    std::string apply(std::string_view text) const {
        std::string s = nfc ? unicode::nfc(text) : std::string(text);
        if (!prepend.empty() && !s.empty()) s.insert(0, prepend);
        for (const auto& [from, to] : replace) {
            if (from.empty() || s.find(from) == std::string::npos) continue;
            std::string out;
            out.reserve(s.size() + s.size() / 4);
            std::size_t pos = 0;
            while (true) {
                const std::size_t hit = s.find(from, pos);
                if (hit == std::string::npos) break;
                out.append(s, pos, hit - pos);
                out += to;
                pos = hit + from.size();
            }
            out.append(s, pos);
            s.swap(out);
        }
        return s;
    }
};

} // namespace tl
