// Real tokenizers (Qwen3's byte-level BPE and Llama-2's SentencePiece-style BPE with byte fallback, from the data
// dir) on any valid UTF-8 text: encoding never fails, and decoding gives the text back (for Qwen3 its NFC form,
// the tokenizer's normalizer; for Llama-2 texts without "▁" or "<", which its decoder maps differently by design).
#include "../fuzz_target.hpp"

#include <tinylm/core/data_dir.hpp>
#include <tinylm/core/utf8.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/unicode.hpp>

#include <memory>

namespace {
struct real_tokenizers {
    std::unique_ptr<tl::tokenizer> qwen3, llama2;
    real_tokenizers() {
        auto data = tl::find_data_dir();
        if (data.empty()) data = TINYLM_SOURCE_DIR "/../shared/data";
        const auto dir = data / "tokenizers";
        if (data.empty() || !std::filesystem::exists(dir / "qwen3/tokenizer.json") ||
            !std::filesystem::exists(dir / "llama2/tokenizer.json")) {
            tl_fuzz::unavailable() = "the Qwen3 and Llama-2 tokenizers of the data dir (TINYLM_DATA_DIR) are absent";
            return;
        }
        qwen3 = std::make_unique<tl::tokenizer>(tl::load_tokenizer_json((dir / "qwen3/tokenizer.json").string()));
        llama2 = std::make_unique<tl::tokenizer>(tl::load_tokenizer_json((dir / "llama2/tokenizer.json").string()));
    }
};
} // namespace

TINYLM_FUZZ_TARGET(bpe_roundtrip) {
    static const real_tokenizers real;
    const auto text = tl_fuzz::text(in);
    if (!real.qwen3 || !tl::utf8::is_valid(text)) return;
    const std::string nfc = tl::unicode::nfc(text);
    tl_fuzz::require(real.qwen3->decode(real.qwen3->encode(text)) == nfc, "Qwen3: decode(encode(text)) != NFC(text)");
    const auto llama_ids = real.llama2->encode(text);
    if (text.find("\u2581") == std::string_view::npos && text.find('<') == std::string_view::npos)
        tl_fuzz::require(real.llama2->decode(llama_ids) == text, "Llama-2: decode(encode(text)) != text");
}
