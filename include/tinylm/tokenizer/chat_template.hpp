// tinylm/tokenizer/chat_template.hpp: Hugging Face chat templates (Jinja) rendered in C++.
//
//   tl::chat_template t = tl::chat_template::from_tokenizer_config("model/tokenizer_config.json");
//   std::string prompt = t.render(messages, {.add_generation_prompt = true});
//
// `messages` is a JSON array of message objects ({"role": ..., "content": ...}, plus whatever the template reads:
// tool_calls, reasoning_content, ...). The template sees the variables transformers' apply_chat_template gives
// it: messages, tools and documents (none unless given), add_generation_prompt, the special tokens of the
// tokenizer config (bos_token, eos_token, unk_token, pad_token; undefined when absent or null), any extra
// variables, and the functions raise_exception, strftime_now, namespace, dict and range. As in transformers 5,
// top-level message keys whose value is null are dropped, and a message's reasoning given as reasoning_content,
// thinking or reasoning is copied under the first two names.
//
// The interpreter (tinylm/jinja/) covers what real chat templates use; see docs/chat-templates.md for
// the supported subset. Rendering is byte-identical to transformers (Jinja2 with trim_blocks and lstrip_blocks)
// on the templates in tests/reference/chat/. Errors (syntax, unknown filter, misuse of a value,
// raise_exception) throw tl::error naming the template, line and column.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/json_field.hpp>
#include <tinylm/jinja/interpreter.hpp>
#include <tinylm/jinja/parser.hpp>
#include <tinylm/jinja/value.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

namespace tl {

struct chat_render_options {
    bool add_generation_prompt = false;
    std::optional<std::string> bos_token =
        std::nullopt; // unset: the template's own (tokenizer config or built-in), if any
    std::optional<std::string> eos_token = std::nullopt;
    nlohmann::ordered_json tools = nullptr;                          // a list of tool schemas; null: none
    nlohmann::ordered_json documents = nullptr;                      // null: none
    nlohmann::ordered_json extra = nlohmann::ordered_json::object(); // more variables, e.g. {"enable_thinking": false}
};

namespace chat_templates {

// ChatML as Qwen2.5-Instruct ships it (Qwen/Qwen2.5-0.5B-Instruct tokenizer_config.json, Apache-2.0): a default
// system prompt when the conversation has none, tools and tool calls in <tool_call> tags. eos: <|im_end|>.
inline constexpr std::string_view chatml = R"tmpl({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)tmpl";

// Zephyr as TinyLlama-1.1B-Chat-v1.0 ships it (TinyLlama/TinyLlama-1.1B-Chat-v1.0 tokenizer_config.json,
// Apache-2.0): <|system|>, <|user|>, <|assistant|> turns each ended by eos. bos: <s>, eos: </s>.
inline constexpr std::string_view zephyr = R"tmpl({% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %})tmpl";

} // namespace chat_templates

class chat_template {
public:
    // Parses `source` now: syntax errors and unknown filters or tests throw here, naming `name`, line and column.
    explicit chat_template(std::string source, std::string name = "chat template")
        : source_(std::move(source)), name_(std::move(name)),
          body_(std::make_shared<const jinja::body_t>(jinja::parse(source_, name_))) {}

    // The built-in templates, with their models' special tokens.
    static chat_template chatml() {
        chat_template t(std::string(chat_templates::chatml), "chat template 'chatml'");
        t.set_variable("eos_token", "<|im_end|>");
        t.set_variable("pad_token", "<|endoftext|>");
        return t;
    }
    static chat_template zephyr() {
        chat_template t(std::string(chat_templates::zephyr), "chat template 'zephyr'");
        t.set_variable("bos_token", "<s>");
        t.set_variable("eos_token", "</s>");
        t.set_variable("unk_token", "<unk>");
        return t;
    }

    // Reads `chat_template` from a tokenizer_config.json: a string, or the list form [{"name", "template"}] from
    // which `template_name` is taken. Without one, a chat_template.jinja beside the file is used. The special
    // tokens (bos/eos/unk/pad, as strings or AddedToken objects) become the template's variables.
    static chat_template from_tokenizer_config(const std::filesystem::path& path,
                                               std::string_view template_name = "default") {
        const std::string where = "tokenizer config " + path.string();
        nlohmann::ordered_json config;
        {
            std::ifstream in(path, std::ios::binary);
            check(static_cast<bool>(in), [&] { return where + ": cannot open the file"; });
            try {
                config = nlohmann::ordered_json::parse(in);
            } catch (const nlohmann::json::exception& e) {
                fail(where + ": invalid JSON: " + e.what());
            }
        }
        check(config.is_object(), [&] { return where + ": the top level is not a JSON object"; });
        std::string source;
        std::string label = "chat template (" + path.string() + ")";
        const auto it = config.find("chat_template");
        if (it != config.end() && it->is_string()) {
            source = it->get<std::string>();
        } else if (it != config.end() && it->is_array()) {
            std::string names;
            for (const auto& entry : *it) {
                check(
                    entry.is_object() && entry.contains("name") && entry.contains("template") &&
                        entry["name"].is_string() && entry["template"].is_string(),
                    [&] { return where + ": chat_template list entries must be {\"name\": ..., \"template\": ...}"; });
                const auto n = entry["name"].get<std::string>();
                names += (names.empty() ? "" : ", ") + n;
                if (n == template_name) source = entry["template"].get<std::string>();
            }
            check(!source.empty(), [&] {
                return where + ": no chat template named '" + std::string(template_name) + "' (it has: " + names + ")";
            });
            label = "chat template '" + std::string(template_name) + "' (" + path.string() + ")";
        } else if (it != config.end() && !it->is_null()) {
            fail(where + ": chat_template must be a string or a list of named templates");
        } else {
            const auto jinja_file = path.parent_path() / "chat_template.jinja";
            std::ifstream in(jinja_file, std::ios::binary);
            check(static_cast<bool>(in), [&] {
                return where + ": no chat_template (and no chat_template.jinja beside it); this model has no chat "
                               "format: pick one, e.g. tl::chat_template::chatml() or ::zephyr()";
            });
            std::stringstream ss;
            ss << in.rdbuf();
            source = ss.str();
            label = "chat template (" + jinja_file.string() + ")";
        }
        chat_template t(std::move(source), std::move(label));
        for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
            const auto tok = config.find(key);
            if (tok == config.end() || tok->is_null()) continue;
            if (tok->is_string()) {
                t.set_variable(key, tok->get<std::string>());
            } else if (tok->is_object() && tok->contains("content") && (*tok)["content"].is_string()) {
                t.set_variable(key, (*tok)["content"].get<std::string>());
            } else {
                fail(where + ": " + key + " must be a string or an AddedToken object with \"content\"");
            }
        }
        return t;
    }

    // Renders the conversation. Throws tl::error for malformed messages and for every template error.
    std::string render(const nlohmann::ordered_json& messages, const chat_render_options& o = {}) const {
        check(messages.is_array(), [&] { return name_ + ": messages must be a JSON array of message objects"; });
        for (const auto* j : {&messages, &o.tools, &o.documents, &variables_})
            check(!json_deeper_than(*j, jinja::limits::max_value_depth), [&] {
                return name_ + ": messages, tools or documents nest deeper than the limit of " +
                       std::to_string(jinja::limits::max_value_depth) + " levels";
            });
        jinja::scope globals;
        jinja::add_globals(globals);
        std::vector<jinja::value> msgs;
        for (std::size_t i = 0; i < messages.size(); ++i) {
            const auto& m = messages[i];
            check(m.is_object(), [&] {
                return name_ + ": message " + std::to_string(i) + " is not a JSON object (got " + m.dump() + ")";
            });
            // As apply_chat_template does: keys whose value is null are dropped (templates test for missing keys).
            nlohmann::ordered_json kept = nlohmann::ordered_json::object();
            for (const auto& [k, v] : m.items())
                if (!v.is_null()) kept[k] = v;
            msgs.push_back(alias_reasoning(jinja::from_json(kept)));
        }
        globals.set("messages", jinja::make_list(std::move(msgs)));
        globals.set("tools", jinja::from_json(o.tools));
        globals.set("documents", jinja::from_json(o.documents));
        globals.set("add_generation_prompt", jinja::value(o.add_generation_prompt));
        for (const auto& [k, v] : variables_.items())
            globals.set(k, jinja::from_json(v));
        if (o.bos_token) globals.set("bos_token", jinja::value(*o.bos_token));
        if (o.eos_token) globals.set("eos_token", jinja::value(*o.eos_token));
        check(o.extra.is_object(), [&] { return name_ + ": chat_render_options::extra must be a JSON object"; });
        for (const auto& [k, v] : o.extra.items())
            globals.set(k, jinja::from_json(v));
        jinja::interpreter interp(name_);
        return interp.render(*body_, globals);
    }

    // Renders with exactly `variables` (a JSON object; no messages handling, no special tokens) and the global
    // functions: for templates used outside chat, and for testing the interpreter.
    std::string render_variables(const nlohmann::ordered_json& variables) const {
        check(variables.is_object(), [&] { return name_ + ": variables must be a JSON object"; });
        jinja::scope globals;
        jinja::add_globals(globals);
        for (const auto& [k, v] : variables.items())
            globals.set(k, jinja::from_json(v));
        jinja::interpreter interp(name_);
        return interp.render(*body_, globals);
    }

    // Variables every render sees (the special tokens), before the options' tokens and extra variables.
    void set_variable(const std::string& name, nlohmann::ordered_json v) { variables_[name] = std::move(v); }
    const nlohmann::ordered_json& variables() const { return variables_; }

    const std::string& source() const { return source_; }
    const std::string& name() const { return name_; }

private:
    std::string source_;
    std::string name_;
    std::shared_ptr<const jinja::body_t> body_;
    nlohmann::ordered_json variables_ = nlohmann::ordered_json::object();

    // transformers 5: reasoning given as reasoning_content, thinking or reasoning is copied as
    // {"thinking": r, **message, "reasoning_content": r}.
    static jinja::value alias_reasoning(jinja::value m) {
        const auto& d = *m.dict();
        const jinja::value* reasoning = nullptr;
        for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
            const jinja::value* v = d.find(key);
            if (v && !v->is_none()) {
                reasoning = v;
                break;
            }
        }
        if (!reasoning) return m;
        jinja::value out = jinja::make_dict();
        out.dict()->set("thinking", *reasoning);
        for (const auto& [k, v] : d.items)
            out.dict()->set(k, v);
        out.dict()->set("reasoning_content", *reasoning);
        return out;
    }
};

} // namespace tl
