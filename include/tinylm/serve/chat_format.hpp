// tinylm/serve/chat_format.hpp: how a conversation becomes a prompt for a text_model: the model's chat template,
// or, for a model without one (a pretrained base model), a plain "User: ... / Assistant: ..." layout whose
// answers end at the next "User:" or a blank line. Shared by `tinylm chat`, `tinylm generate --chat` and the
// server's /v1/chat/completions.
#pragma once

#include <tinylm/serve/text_model.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace tl {

struct chat_prompt_format {
    chat_template templ;
    std::vector<std::string> stop{};    // stop strings the layout needs
    std::vector<token_t> stop_tokens{}; // end-of-turn tokens the tokenizer has (<|im_end|>, <|eot_id|>, ...)
    bool plain = false;

    static chat_prompt_format of(const text_model& m) {
        if (m.folder().chat) {
            chat_prompt_format f{*m.folder().chat};
            for (const char* end : {"<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>"})
                if (const token_t id = m.tokenizer().token_to_id(end); id >= 0) f.stop_tokens.push_back(id);
            return f;
        }
        static const char* plain_layout = "{% for m in messages %}"
                                          "{% if m.role == 'system' %}{{ m.content }}\n\n"
                                          "{% elif m.role == 'user' %}User: {{ m.content }}\n"
                                          "{% else %}Assistant: {{ m.content }}\n\n{% endif %}"
                                          "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
        chat_prompt_format f{chat_template(plain_layout, "plain chat layout")};
        f.stop = {"\nUser:", "\n\n"};
        f.plain = true;
        return f;
    }

    // Adds this format's stops to generation options.
    void apply(text_generation_options& o) const {
        o.stop.insert(o.stop.end(), stop.begin(), stop.end());
        auto& ids = o.generation.stop_tokens;
        for (token_t t : stop_tokens)
            if (std::find(ids.begin(), ids.end(), t) == ids.end()) ids.push_back(t);
    }

    // Ids of `messages` rendered for an answer (the template writes any <bos> itself, as transformers'
    // apply_chat_template: no post-processor tokens are added).
    std::vector<token_t> encode(const text_model& m, const nlohmann::ordered_json& messages) const {
        return m.tokenizer().encode(templ.render(messages, {.add_generation_prompt = true}),
                                    {.add_special_tokens = false});
    }
};

} // namespace tl
