// tinylm/io/gguf_folder.hpp: a GGUF file read as a model folder: the tokenizer rebuilt from tokenizer.ggml.*, the
// special tokens, the chat template and the generation defaults, beside gguf_model_config and load_gguf_weights
// (io/gguf.hpp). What `tinylm generate|chat|serve --model FILE.gguf` loads (serve/text_model.hpp).
//
//   tl::gguf::reader r("model.gguf");
//   tl::hf_folder folder = tl::read_gguf_folder(r);   // folder.tokenizer, .special, .chat, .generation
//   tl::with_gguf(r, [&](auto& model) { ... });       // the decoder of the file's family, its weights loaded
//
// The tokenizer is the inverse of what write_gguf stores (io/gguf.hpp's header), which is also what llama.cpp's
// converter stores for these tokenizers:
//  - "gpt2" (byte-level BPE): tokens in GPT-2's byte-to-character spelling, merges "a b", the split of
//    tokenizer.ggml.pre ("qwen2", "llama-bpe": Llama 3's, or "gpt-2"/"default": GPT-2's).
//  - "llama" (characters with byte fallback, metaspace): "▁" for spaces, prepended when add_space_prefix, <0xNN>
//    byte tokens, <unk> fused; the merges of the file (tinylm writes them), or, in the files llama.cpp converted from
//    SentencePiece models (scores only), merges made from the scores as transformers makes them
//    (detail::merges_from_scores).
// NFC as tinylm.tokenizer.nfc says (tinylm writes it); files without the key: NFC for byte-level BPE (as Qwen's
// tokenizers), none for "llama" (as Llama 2's); llama.cpp itself applies none.
// Token types: control and unknown tokens become special added tokens (matched in text, as llama.cpp and Hugging
// Face match "<unk>"), user-defined ones added tokens that are not special;
// unused rows ([PAD<id>]) past the last token are not tokens. add_bos_token / add_eos_token give the tokens put
// around a text when special tokens are added. The chat template is tokenizer.chat_template; generation stops at
// eos and decodes greedily unless asked otherwise (a file has no generation_config.json).
#pragma once

#include <tinylm/io/gguf.hpp>
#include <tinylm/io/hf_any.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tl {

namespace detail {
// The merges of a SentencePiece BPE vocabulary that has scores only (what llama.cpp's converter stores for Llama 2,
// TinyLlama, Mistral): every split of a token into two tokens, at a character boundary, is a merge; merges rank by
// the score of the token they make, highest first, ties in token order, the splits of one token by (left id, right
// id). This is transformers' SentencePieceExtractor, which made the merges of these models' tokenizer.json.
inline std::vector<std::string> merges_from_scores(const std::vector<std::string>& tokens,
                                                   const std::vector<double>& scores) {
    check(scores.size() == tokens.size(), "gguf: tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length");
    std::unordered_map<std::string_view, std::size_t> id;
    for (std::size_t i = 0; i < tokens.size(); ++i)
        id.emplace(tokens[i], i);
    struct merge {
        double score;
        std::size_t left, right;
    };
    std::vector<merge> found;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        const std::string_view t = tokens[i];
        if (t.empty()) continue;
        const std::size_t first = found.size();
        for (std::size_t at = 0; unicode::next(t, at), at < t.size();) {
            const auto l = id.find(t.substr(0, at)), r = id.find(t.substr(at));
            if (l != id.end() && r != id.end()) found.push_back({scores[i], l->second, r->second});
        }
        std::sort(found.begin() + std::ptrdiff_t(first), found.end(), [](const merge& a, const merge& b) {
            return a.left != b.left ? a.left < b.left : a.right < b.right;
        });
    }
    std::stable_sort(found.begin(), found.end(), [](const merge& a, const merge& b) { return a.score > b.score; });
    std::vector<std::string> out;
    out.reserve(found.size());
    for (const merge& m : found)
        out.push_back(tokens[m.left] + " " + tokens[m.right]);
    return out;
}
} // namespace detail

inline tokenizer gguf_tokenizer(const gguf::reader& r) {
    const std::string where = "gguf: " + r.path().string() + ": ";
    const std::string kind = r.at("tokenizer.ggml.model").as_string();
    check(kind == "gpt2" || kind == "llama",
          [&] { return where + "tokenizer.ggml.model \"" + kind + "\" is not read (gpt2 and llama are)"; });
    const bool byte_level = kind == "gpt2";
    const std::vector<std::string>& spelled = r.at("tokenizer.ggml.tokens").strings();
    const std::vector<std::int64_t>& types = r.at("tokenizer.ggml.token_type").ints();
    check(types.size() == spelled.size(),
          [&] { return where + "tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length"; });
    namespace ex = detail::gguf_export;
    tokenizer tok;
    tok.model.byte_level = byte_level;
    const gguf::value* nfc = r.find("tinylm.tokenizer.nfc");
    tok.norm.nfc = nfc ? nfc->as_bool() : byte_level;
    if (byte_level) {
        const std::string pre = r.find("tokenizer.ggml.pre") ? r.at("tokenizer.ggml.pre").as_string() : "default";
        check(pre == "qwen2" || pre == "llama-bpe" || pre == "gpt-2" || pre == "default", [&] {
            return where + "tokenizer.ggml.pre \"" + pre +
                   "\" has no tinylm split (qwen2, llama-bpe, gpt-2 and default do)";
        });
        tok.pre.pattern = pre == "qwen2"       ? split_pattern::qwen2
                          : pre == "llama-bpe" ? split_pattern::llama3
                                               : split_pattern::gpt2;
    } else {
        const bool prefix =
            r.find("tokenizer.ggml.add_space_prefix") && r.at("tokenizer.ggml.add_space_prefix").as_bool();
        if (prefix) tok.norm.prepend = std::string(metaspace);
        tok.norm.replace = {{" ", std::string(metaspace)}};
        tok.dec.metaspace = true;
        tok.dec.strip_leading_space = prefix;
        tok.model.byte_fallback = true;
        tok.model.fuse_unk = true;
    }
    // Model tokens: every id up to the last normal, byte or unknown one (control tokens among them keep their
    // place, as in tokenizer.json's vocab); added tokens: the control and user-defined ones, wherever they are.
    std::size_t model_tokens = 0;
    for (std::size_t id = 0; id < types.size(); ++id)
        if (types[id] == ex::normal || types[id] == ex::byte || types[id] == ex::unknown) model_tokens = id + 1;
    const byte_level_map& bl = byte_level_map::get();
    std::string raw;
    for (std::size_t id = 0; id < model_tokens; ++id) {
        const bool added = types[id] == ex::control || types[id] == ex::user_defined;
        if (byte_level && !added) {
            check(bl.decode(spelled[id], raw), [&] {
                return where + "token " + std::to_string(id) + " \"" + spelled[id] + "\" is not byte-level spelling";
            });
        } else {
            raw = spelled[id];
        }
        check(tok.model.find(raw) < 0,
              [&] { return where + "token " + std::to_string(id) + " stands for the same text as an earlier one"; });
        tok.model.add_token(raw);
        if (types[id] == ex::unknown && !byte_level) tok.model.unk = token_t(id);
    }
    check(r.find("tokenizer.ggml.merges") != nullptr || (!byte_level && r.find("tokenizer.ggml.scores")), [&] {
        return where + "has neither tokenizer.ggml.merges nor (for a llama tokenizer) tokenizer.ggml.scores";
    });
    const std::vector<std::string> merges =
        r.find("tokenizer.ggml.merges") ? r.at("tokenizer.ggml.merges").strings()
                                        : detail::merges_from_scores(spelled, r.at("tokenizer.ggml.scores").floats());
    std::string left, right;
    auto id_of = [&](const std::string& s, std::size_t m) {
        std::string bytes = s;
        if (byte_level)
            check(bl.decode(s, bytes), [&] { return where + "merge " + std::to_string(m) + ": \"" + s + "\""; });
        const token_t id = tok.model.find(bytes);
        check(id >= 0, [&] { return where + "merge " + std::to_string(m) + ": \"" + s + "\" is not a token"; });
        return id;
    };
    tok.model.merges.reserve(merges.size());
    for (std::size_t m = 0; m < merges.size(); ++m) {
        const std::size_t sp = merges[m].find(' ', 1);
        check(sp != std::string::npos && sp + 1 < merges[m].size(),
              [&] { return where + "merge " + std::to_string(m) + " \"" + merges[m] + "\" is not \"a b\""; });
        tok.model.merges.emplace_back(id_of(merges[m].substr(0, sp), m), id_of(merges[m].substr(sp + 1), m));
    }
    tok.model.finalize();
    for (std::size_t id = 0; id < types.size(); ++id)
        if (types[id] == ex::control || types[id] == ex::user_defined || types[id] == ex::unknown)
            tok.added.add({.content = spelled[id], .id = token_t(id), .special = types[id] != ex::user_defined});
    auto flag = [&](const char* key) { return r.find(key) && r.at(key).as_bool(); };
    auto id_key = [&](const char* key) -> token_t {
        const gguf::value* v = r.find(key);
        if (!v) return -1;
        const std::uint64_t id = v->as_uint();
        check(id < spelled.size(), [&] { return where + key + " " + std::to_string(id) + " is not a token"; });
        return token_t(id);
    };
    if (flag("tokenizer.ggml.add_bos_token") && id_key("tokenizer.ggml.bos_token_id") >= 0)
        tok.prefix_tokens = {id_key("tokenizer.ggml.bos_token_id")};
    if (flag("tokenizer.ggml.add_eos_token") && id_key("tokenizer.ggml.eos_token_id") >= 0)
        tok.suffix_tokens = {id_key("tokenizer.ggml.eos_token_id")};
    return tok;
}

// The file as a folder: `dir` is the file, `config` its configuration in config.json's terms.
inline hf_folder read_gguf_folder(const gguf::reader& r) {
    hf_folder f;
    f.dir = r.path();
    f.tokenizer = gguf_tokenizer(r);
    auto id_key = [&](const char* key) -> token_t {
        const gguf::value* v = r.find(std::string("tokenizer.ggml.") + key);
        return v ? token_t(v->as_uint()) : -1;
    };
    hf_special_tokens& s = f.special;
    s.bos_id = id_key("bos_token_id"), s.eos_id = id_key("eos_token_id");
    s.pad_id = id_key("padding_token_id"), s.unk_id = id_key("unknown_token_id");
    auto text = [&](token_t id) { return id >= 0 ? std::string(f.tokenizer->id_to_bytes(id)) : std::string(); };
    s.bos = text(s.bos_id), s.eos = text(s.eos_id), s.pad = text(s.pad_id), s.unk = text(s.unk_id);
    if (s.eos_id >= 0) f.generation.eos_token_ids = {s.eos_id};
    f.generation.bos_token_id = s.bos_id;
    f.generation.pad_token_id = s.pad_id;
    if (const gguf::value* t = r.find("tokenizer.chat_template"))
        f.chat = chat_template(t->as_string(), r.path().string() + ": tokenizer.chat_template");
    f.config = hf_config_json(gguf_model_config(r), {.bos = s.bos_id, .eos = s.eos_id, .pad = s.pad_id});
    return f;
}

// Builds the decoder a GGUF file describes (llama, llama with experts: mixtral, qwen2), loads its weights and calls
// f(model), as with_pretrained (io/hf_any.hpp) does for a folder.
template <Backend B = default_backend, class F>
decltype(auto) with_gguf(const gguf::reader& r, F&& f, weights_to_load_t how = weights_to_load) {
    const model_config c = gguf_model_config(r);
    auto load = [&]<class Family>() -> decltype(auto) {
        auto model = std::make_unique<decoder<Family, B>>(c, how);
        load_gguf_weights(*model, r);
        return f(*model);
    };
    return visit_family(c, load);
}

} // namespace tl
