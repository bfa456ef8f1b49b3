// A Jinja chat template as it arrives inside a stranger's tokenizer_config.json: parsed and rendered with a
// conversation, under the interpreter's depth, size, loop and time limits (jinja/interpreter.hpp), which raise
// tl::error.
#include "../fuzz_target.hpp"

#include <tinylm/tokenizer/chat_template.hpp>

TINYLM_FUZZ_TARGET(jinja) {
    const tl::chat_template t(std::string(tl_fuzz::text(in)), "fuzz-input template");
    static const auto messages = nlohmann::ordered_json::parse(R"([
        {"role": "system", "content": "Ты помощник."},
        {"role": "user", "content": "Привет! {{ 1 + 1 }}"},
        {"role": "assistant", "content": "Здравствуйте.", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "user", "content": "и ещё"}])");
    (void)t.render(messages, {.add_generation_prompt = true, .bos_token = "<s>", .eos_token = "</s>"});
}
