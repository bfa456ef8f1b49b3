// A tokenizer_config.json (its chat_template, string or named list, and special tokens), rendered with a fixed
// conversation; then the same bytes as a conversation (a JSON message list) through the built-in templates.
#include "../fuzz_target.hpp"

#include <tinylm/tokenizer/chat_template.hpp>

TINYLM_FUZZ_TARGET(chat_template) {
    static const auto messages = nlohmann::ordered_json::parse(
        R"([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])");
    const auto text = tl_fuzz::text(in);
    const auto conversation = nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
    if (!conversation.is_discarded() && conversation.is_array()) {
        static const auto chatml = tl::chat_template::chatml();
        static const auto zephyr = tl::chat_template::zephyr();
        try {
            (void)chatml.render(conversation, {.add_generation_prompt = true});
            (void)zephyr.render(conversation);
        } catch (const tl::error&) {
            // A malformed conversation is the caller's input, not a file: any tl::error is the right answer.
        }
        return;
    }
    const auto path = tl_fuzz::scratch::get().write("tokenizer_config.json", in);
    const auto t = tl::chat_template::from_tokenizer_config(path);
    (void)t.render(messages, {.add_generation_prompt = true});
}
