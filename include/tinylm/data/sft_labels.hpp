// tinylm/data/sft_labels.hpp: a conversation rendered by its chat template and tokenized into ids and labels,
// with labels only on what the assistant says.
//
//   tl::data::sft_example ex = tl::data::tokenize_conversation(tok, tl::chat_template::chatml(), conv,
//                                                              {.max_length = 512});
//   // ex.labels[t] == ex.ids[t] on assistant tokens (and each turn's <|im_end|>), -100 everywhere else
//
// Labels are aligned with ids as in Hugging Face (labels = input_ids with -100 where not trained); the next-token
// targets the decoder's loss() takes are labels shifted left by one (next_token_targets(), and the batching of
// sft_batch.hpp).
//
// How the assistant spans are found, for any template (docs/sft.md):
//   1. Render the whole conversation: F.
//   2. For assistant message i, render messages[0, i) with add_generation_prompt: A. When F starts with A, the
//      reply starts at |A| (the template's own statement of where the model begins to speak; Qwen3's empty
//      <think></think> block after it is then part of the reply, as the model generates it). Otherwise it
//      starts where the message's content is found in F after the previous message.
//   3. The message's content (or, if the template trims it, its trimmed form) is located in F from there; the
//      span ends after the first end-of-turn marker that follows the content (<|im_end|> for ChatML and Qwen,
//      </s> for Zephyr: by default the template's eos_token). The end-of-turn marker is labelled: a model that
//      never sees a loss on it never learns to stop. What a template writes after it ("\n") is not labelled.
//   4. Character spans become token spans by encoding prefixes of F: the token boundary for a character position
//      c is the length of the common prefix of encode(F[0, c)) and encode(F). A token that straddles the start
//      or the end of a span is labelled (it holds part of the reply).
// Truncation keeps the first max_length tokens.
#pragma once

#include <tinylm/data/sft_formats.hpp>
#include <tinylm/tokenizer/chat_template.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tl::data {

inline constexpr std::int32_t sft_ignore_index = -100;

struct sft_label_options {
    std::string end_of_turn = {};    // labelled after each reply; empty: the template's eos_token variable
    bool add_special_tokens = false; // the tokenizer's post-processor tokens (e.g. Llama's <s>), never labelled
    std::size_t max_length = 0;      // keep the first max_length tokens; 0: no limit
    chat_render_options render = {}; // extra template variables (e.g. {"enable_thinking": false}); the generation
                                     // prompt is set by the labelling itself
};

struct char_span {
    std::size_t begin = 0, end = 0; // [begin, end) in bytes of the rendered text
};

struct rendered_conversation {
    std::string text;             // the template's rendering of the whole conversation
    std::vector<char_span> spans; // one per assistant message: its reply and end-of-turn marker
};

struct sft_example {
    std::vector<std::int32_t> ids;
    std::vector<std::int32_t> labels; // ids on trained tokens, sft_ignore_index elsewhere
    std::size_t full_length = 0;      // tokens before truncation
    std::string source;               // where the conversation came from

    bool truncated() const { return full_length > ids.size(); }
    std::size_t labelled_tokens() const {
        return std::size_t(std::count_if(labels.begin(), labels.end(), [](std::int32_t l) { return l >= 0; }));
    }
};

// The end-of-turn marker: the option, else the template's eos_token variable.
inline std::string end_of_turn_marker(const chat_template& tmpl, const sft_label_options& opt) {
    if (!opt.end_of_turn.empty()) return opt.end_of_turn;
    if (opt.render.eos_token) return *opt.render.eos_token;
    const auto& vars = tmpl.variables();
    const auto it = vars.find("eos_token");
    check(it != vars.end() && it->is_string() && !it->get<std::string>().empty(), [&] {
        return tmpl.name() +
               ": no eos_token to label as the end of each assistant turn; set sft_label_options::end_of_turn";
    });
    return it->get<std::string>();
}

// Renders `conv` and finds each assistant reply in the text (steps 1-3 above).
inline rendered_conversation render_with_spans(const chat_template& tmpl, const conversation& conv,
                                               const sft_label_options& opt = {}) {
    const std::string where = conv.source.empty() ? std::string("conversation") : conv.source;
    const std::string eot = end_of_turn_marker(tmpl, opt);
    chat_render_options full_opt = opt.render;
    full_opt.add_generation_prompt = false;
    rendered_conversation out;
    const nlohmann::ordered_json messages = conv.to_json();
    out.text = tmpl.render(messages, full_opt);
    const std::string& f = out.text;
    std::size_t cursor = 0; // everything before it belongs to earlier messages
    for (std::size_t i = 0; i < conv.messages.size(); ++i) {
        const chat_message& m = conv.messages[i];
        if (m.role != "assistant") {
            const std::size_t at = m.content.empty() ? std::string::npos : f.find(m.content, cursor);
            if (at != std::string::npos) cursor = at + m.content.size();
            continue;
        }
        std::size_t start = std::string::npos;
        if (i > 0) {
            chat_render_options prompt_opt = opt.render;
            prompt_opt.add_generation_prompt = true;
            nlohmann::ordered_json prefix = nlohmann::ordered_json::array();
            for (std::size_t k = 0; k < i; ++k)
                prefix.push_back(messages[k]);
            std::string prompt;
            try {
                prompt = tmpl.render(prefix, prompt_opt);
            } catch (const tl::error&) {
                prompt.clear(); // a template may refuse a prefix (e.g. one that must end with a user turn)
            }
            if (!prompt.empty() && prompt.size() >= cursor && f.compare(0, prompt.size(), prompt) == 0)
                start = prompt.size();
        }
        // The content, as given or trimmed (templates that strip whitespace), at or after the reply's start.
        const std::size_t search_from = start == std::string::npos ? cursor : start;
        std::string content = m.content;
        std::size_t at = content.empty() ? search_from : f.find(content, search_from);
        if (at == std::string::npos) {
            const std::size_t b = content.find_first_not_of(" \t\r\n"), e = content.find_last_not_of(" \t\r\n");
            content = b == std::string::npos ? std::string() : content.substr(b, e - b + 1);
            at = content.empty() ? search_from : f.find(content, search_from);
        }
        check(at != std::string::npos, [&] {
            return where + ": the template (" + tmpl.name() + ") does not reproduce assistant message " +
                   std::to_string(i) + " verbatim, so its tokens cannot be found";
        });
        if (start == std::string::npos) start = at;
        const std::size_t content_end = at + content.size();
        const std::size_t eot_at = f.find(eot, content_end);
        check(eot_at != std::string::npos, [&] {
            return where + ": the end-of-turn marker \"" + eot + "\" does not follow assistant message " +
                   std::to_string(i) + " in the rendering of " + tmpl.name();
        });
        out.spans.push_back({start, eot_at + eot.size()});
        cursor = eot_at + eot.size();
    }
    return out;
}

namespace detail {
inline std::size_t common_prefix(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
    std::size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n])
        ++n;
    return n;
}
} // namespace detail

// Renders, tokenizes and labels one conversation (steps 1-4 above).
inline sft_example tokenize_conversation(const tokenizer& tok, const chat_template& tmpl, const conversation& conv,
                                         const sft_label_options& opt = {}) {
    const rendered_conversation r = render_with_spans(tmpl, conv, opt);
    encode_cache cache;
    std::vector<std::int32_t> body;
    tok.encode_into(r.text, body, &cache);
    // Token index of character position c: where encode(text[0, c)) stops agreeing with encode(text).
    std::vector<std::int32_t> prefix;
    auto boundary = [&](std::size_t c, bool round_up) {
        prefix.clear();
        tok.encode_into(std::string_view(r.text).substr(0, c), prefix, &cache);
        const std::size_t n = detail::common_prefix(prefix, body);
        return n == prefix.size() || !round_up ? n : std::min(n + 1, body.size());
    };
    std::vector<std::int32_t> body_labels(body.size(), sft_ignore_index);
    for (const char_span& s : r.spans) {
        const std::size_t b = boundary(s.begin, false), e = boundary(s.end, true);
        for (std::size_t t = b; t < e; ++t)
            body_labels[t] = body[t];
    }
    sft_example ex;
    ex.source = conv.source;
    if (opt.add_special_tokens) {
        ex.ids = tok.prefix_tokens;
        ex.labels.assign(tok.prefix_tokens.size(), sft_ignore_index);
    }
    ex.ids.insert(ex.ids.end(), body.begin(), body.end());
    ex.labels.insert(ex.labels.end(), body_labels.begin(), body_labels.end());
    if (opt.add_special_tokens) {
        ex.ids.insert(ex.ids.end(), tok.suffix_tokens.begin(), tok.suffix_tokens.end());
        ex.labels.insert(ex.labels.end(), tok.suffix_tokens.size(), sft_ignore_index);
    }
    ex.full_length = ex.ids.size();
    if (opt.max_length > 0 && ex.ids.size() > opt.max_length) {
        ex.ids.resize(opt.max_length);
        ex.labels.resize(opt.max_length);
    }
    return ex;
}

inline std::vector<sft_example> tokenize_conversations(const tokenizer& tok, const chat_template& tmpl,
                                                       const std::vector<conversation>& convs,
                                                       const sft_label_options& opt = {}) {
    std::vector<sft_example> out;
    out.reserve(convs.size());
    for (const conversation& c : convs)
        out.push_back(tokenize_conversation(tok, tmpl, c, opt));
    return out;
}

// Next-token targets of one example: targets[t] = labels[t + 1], the last one ignored.
inline std::vector<std::int32_t> next_token_targets(const std::vector<std::int32_t>& labels) {
    std::vector<std::int32_t> t(labels.size(), sft_ignore_index);
    for (std::size_t i = 0; i + 1 < labels.size(); ++i)
        t[i] = labels[i + 1];
    return t;
}

// Maximal runs of labelled tokens, as [begin, end) token index pairs (tests and reports).
inline std::vector<std::pair<std::size_t, std::size_t>> labelled_runs(const std::vector<std::int32_t>& labels) {
    std::vector<std::pair<std::size_t, std::size_t>> runs;
    for (std::size_t t = 0; t < labels.size(); ++t) {
        if (labels[t] < 0) continue;
        if (!runs.empty() && runs.back().second == t)
            ++runs.back().second;
        else
            runs.push_back({t, t + 1});
    }
    return runs;
}

} // namespace tl::data
