// A tokenizer.json of any kind (byte-level or SentencePiece-style BPE, WordPiece): a tokenizer that loads
// encodes and decodes a fixed text, is written back, and the written file loads into a tokenizer that gives the
// same ids.
#include "../fuzz_target.hpp"

#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/wordpiece_json.hpp>

namespace {
const std::string_view sample = "Привет, мир! Hello 123 <|im_start|> 👋 [CLS] ▁x\n\t";
}

TINYLM_FUZZ_TARGET(tokenizer_json) {
    const std::string where = "fuzz-input/tokenizer.json";
    const auto text = tl_fuzz::text(in);
    if (text.find("\"WordPiece\"") != std::string_view::npos) {
        const tl::wordpiece_tokenizer tok = tl::parse_wordpiece_json(text, where);
        (void)tok.encode(sample, true);
        return;
    }
    const tl::tokenizer tok = tl::parse_tokenizer_json(text, where);
    const auto ids = tok.encode(sample);
    (void)tok.decode(ids);
    const tl::tokenizer again = tl::parse_tokenizer_json(tl::to_tokenizer_json(tok), where + " (written back)");
    tl_fuzz::require(again.encode(sample) == ids, "tokenizer.json written back encodes differently");
}
