// tinylm/tokenizer/tokenizer_config.hpp: tokenizer_config.json (and chat_template.jinja) written the way
// transformers' `save_pretrained` writes them for a tokenizer backed by tokenizer.json, so that
// `AutoTokenizer.from_pretrained(dir)` knows the bos/eos/pad/unk tokens, the length limit and the chat template.
//
//   tl::tokenizer_config_options o;
//   o.bos = "<s>"; o.eos = "</s>"; o.model_max_length = 2048; o.chat_template = tl::chat_templates::zephyr;
//   tl::save_tokenizer_folder(tok, o, "out/checkpoint-100");   // tokenizer.json + tokenizer_config.json (+ .jinja)
//
// transformers 5.23 (checked with PreTrainedTokenizerFast(tokenizer_object=...).save_pretrained) writes, keys
// sorted, two-space indent, UTF-8 unescaped, a final line break:
//   {"backend": "tokenizers", "bos_token": ..., "eos_token": ..., "model_max_length": ..., "pad_token": ...,
//    "tokenizer_class": "TokenizersBackend", "unk_token": ...}
// and no `added_tokens_decoder` (its TokenizersBackend drops it: tokenizer.json holds the added tokens); without a
// length limit it writes int(1e30) = 1000000000000000019884624838656. The chat template goes to
// chat_template.jinja beside the file, byte for byte, not into the JSON.
//
// transformers 4.x has no class TokenizersBackend, so `style = transformers4` writes the form 4.x wrote:
// tokenizer_class PreTrainedTokenizerFast, `added_tokens_decoder` with every added token's flags,
// clean_up_tokenization_spaces false and the chat template inline. transformers 5.23 loads both forms alike.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tl {

enum class tokenizer_config_style {
    transformers5, // exactly what transformers 5.x save_pretrained writes (the default)
    transformers4, // the 4.x form, which both 4.x and 5.x load
};

struct tokenizer_config_options {
    // Special tokens by their text; each must be a token of the tokenizer. Unset ones are not written.
    std::optional<std::string> bos, eos, pad, unk;
    // The context length the model was trained for; unset: transformers' "no limit" (int(1e30)).
    std::optional<std::int64_t> model_max_length;
    // Jinja chat template; empty: none.
    std::string chat_template;
    tokenizer_config_style style = tokenizer_config_style::transformers5;
};

// Sets the special tokens of `o` from ids (-1: none), e.g. a checkpoint's special_token_ids
// (io/hf_config.hpp); an id outside the vocabulary is a tl::error.
inline tokenizer_config_options& special_tokens_from_ids(tokenizer_config_options& o, const tokenizer& tok, token_t bos,
                                                         token_t eos, token_t pad = -1, token_t unk = -1) {
    auto text = [&](token_t id) -> std::optional<std::string> {
        if (id < 0) return std::nullopt;
        return std::string(tok.id_to_bytes(id));
    };
    o.bos = text(bos);
    o.eos = text(eos);
    o.pad = text(pad);
    o.unk = text(unk);
    return o;
}

// transformers' VERY_LARGE_INTEGER, int(1e30), as Python prints it.
inline constexpr std::string_view hf_no_length_limit = "1000000000000000019884624838656";

// The text of tokenizer_config.json for `tok` (the chat template is not in it for style transformers5).
inline std::string tokenizer_config_json(const tokenizer& tok, const tokenizer_config_options& opt) {
    using ojson = nlohmann::ordered_json;
    // Python's json.dumps(sort_keys=True): keys sorted by code point, which for UTF-8 is byte order.
    std::map<std::string, ojson> fields;
    const bool v4 = opt.style == tokenizer_config_style::transformers4;
    auto special = [&](const char* key, const std::optional<std::string>& text) {
        if (!text) return;
        check(!text->empty(), [&] { return std::string("tokenizer_config.json: ") + key + " is an empty string"; });
        check(tok.token_to_id(*text) >= 0, [&] {
            std::string m = "tokenizer_config.json: ";
            m += key;
            m += " \"";
            m += *text;
            m += "\" is not a token of the tokenizer (";
            m += std::to_string(tok.vocab_size());
            m += " tokens); add it first";
            return m;
        });
        fields[key] = *text;
    };
    special("bos_token", opt.bos);
    special("eos_token", opt.eos);
    special("pad_token", opt.pad);
    special("unk_token", opt.unk);
    // A placeholder for the length limit: int(1e30) does not fit a JSON integer of nlohmann's.
    const std::string length_placeholder = "\x01model_max_length\x01";
    if (opt.model_max_length) {
        check(*opt.model_max_length > 0, [&] {
            return "tokenizer_config.json: model_max_length " + std::to_string(*opt.model_max_length) +
                   " is not positive";
        });
        fields["model_max_length"] = *opt.model_max_length;
    } else {
        fields["model_max_length"] = length_placeholder;
    }
    if (v4) {
        fields["tokenizer_class"] = "PreTrainedTokenizerFast";
        fields["clean_up_tokenization_spaces"] = false;
        if (!opt.chat_template.empty()) fields["chat_template"] = opt.chat_template;
        // Keys in id order, as Python sorts the int keys before turning them into strings.
        ojson decoder = ojson::object();
        for (const added_token* t : tok.added_tokens())
            decoder[std::to_string(t->id)] = {{"content", t->content},         {"lstrip", t->lstrip},
                                              {"normalized", t->normalized},   {"rstrip", t->rstrip},
                                              {"single_word", t->single_word}, {"special", t->special}};
        fields["added_tokens_decoder"] = decoder;
    } else {
        fields["backend"] = "tokenizers";
        fields["tokenizer_class"] = "TokenizersBackend";
    }
    ojson root = ojson::object();
    for (auto& [k, v] : fields)
        root[k] = std::move(v);
    std::string text = root.dump(2) + "\n";
    if (!opt.model_max_length) {
        const std::string quoted = ojson(length_placeholder).dump();
        const std::size_t at = text.find(quoted);
        check(at != std::string::npos, "tokenizer_config.json: internal error placing model_max_length");
        text.replace(at, quoted.size(), hf_no_length_limit);
    }
    return text;
}

namespace detail {
inline void write_file_atomically(const std::filesystem::path& path, const std::string& text) {
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary);
        if (!out) fail("cannot create " + tmp.string());
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        if (!out) fail("writing " + tmp.string() + " failed (disk full?)");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) fail("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
}
} // namespace detail

// Writes <dir>/tokenizer_config.json and, for style transformers5 with a chat template, <dir>/chat_template.jinja
// (the directory is created). Like transformers, an existing chat_template.jinja is left alone when there is no
// template to write.
inline void write_tokenizer_config(const tokenizer& tok, const tokenizer_config_options& opt,
                                   const std::filesystem::path& dir) {
    const std::string text = tokenizer_config_json(tok, opt);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    check(!ec && std::filesystem::is_directory(dir), [&] {
        return "tokenizer_config.json: cannot create the directory " + dir.string() + (ec ? ": " + ec.message() : "");
    });
    detail::write_file_atomically(dir / "tokenizer_config.json", text);
    if (opt.style == tokenizer_config_style::transformers5 && !opt.chat_template.empty())
        detail::write_file_atomically(dir / "chat_template.jinja", opt.chat_template);
}

// tokenizer.json and tokenizer_config.json (+ chat_template.jinja) in `dir`: what save_pretrained writes.
inline void save_tokenizer_folder(const tokenizer& tok, const tokenizer_config_options& opt,
                                  const std::filesystem::path& dir) {
    const std::string config = tokenizer_config_json(tok, opt); // checks the options before anything is written
    (void)config;
    write_tokenizer_config(tok, opt, dir);
    save_tokenizer_json(tok, (dir / "tokenizer.json").string());
}

} // namespace tl
