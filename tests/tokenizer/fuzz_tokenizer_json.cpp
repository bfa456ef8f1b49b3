// libFuzzer target: any bytes given to the tokenizer.json reader either load or throw tl::error; a tokenizer
// that loads encodes and decodes a fixed text without crashing.
#include <tinylm/tokenizer/hf_json.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const tl::tokenizer tok =
            tl::parse_tokenizer_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
        (void)tok.decode(tok.encode("Привет, мир! Hello 123 <|im_start|> 👋"));
    } catch (const tl::error&) {
    }
    return 0;
}
