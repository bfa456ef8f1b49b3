// tinylm/tokenizer/wordpiece_json.hpp: WordPiece (BERT) tokenizer.json files, read and written back.
//
// Reads what BERT-family files ship: BertNormalizer (or none), BertPreTokenizer, the WordPiece model, a
// TemplateProcessing or BertProcessing post-processor, the WordPiece decoder. A component tinylm does not
// implement is an error naming it. Writing keeps the loaded file's text and writes it back unchanged (a
// sentence-transformers folder written by tinylm carries the tokenizer it was given).
//
//   switch (tl::tokenizer_json_kind(path)) {                      // which loader a file needs
//   case tl::tokenizer_kind::bpe: ... tl::load_tokenizer_json(path) ...
//   case tl::tokenizer_kind::wordpiece: ... tl::load_wordpiece_json(path) ...
//   }
#pragma once

#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/wordpiece_tokenizer.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace tl {

enum class tokenizer_kind { bpe, wordpiece };

namespace detail {

inline std::string read_tokenizer_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("tokenizer.json " + path + ": cannot open the file");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline json parse_tokenizer_text(const json_reader& reader, std::string_view text) {
    try {
        return json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
        reader.bad(std::string("not valid JSON (truncated?): ") + e.what());
    }
}

inline tokenizer_kind kind_of(const json_reader& reader, const json& root) {
    reader.need(root.is_object(), "the top level is not an object");
    const json& m = reader.field(root, "model", "the file");
    reader.need(m.is_object(), "\"model\" is not an object");
    // Old BPE files leave the type out.
    const std::string type = m.contains("type") ? json_reader::type_of(m) : std::string("BPE");
    if (type == "BPE") return tokenizer_kind::bpe;
    if (type == "WordPiece") return tokenizer_kind::wordpiece;
    reader.bad("model type " + type + " is not supported; supported: BPE, WordPiece");
}

struct wordpiece_reader : json_reader {
    void normalizer(const json& j, wordpiece_tokenizer& tok) const {
        if (j.is_null()) {
            tok.normalizer.reset();
            return;
        }
        const std::string t = type_of(j);
        need(t == "BertNormalizer",
             "normalizer type \"" + t + "\" is not supported with WordPiece (BertNormalizer is)");
        bert_normalizer n;
        n.clean_text = bool_field(j, "clean_text", true);
        n.handle_chinese_chars = bool_field(j, "handle_chinese_chars", true);
        n.lowercase = bool_field(j, "lowercase", true);
        // null: strip accents exactly when lowercasing (as BERT's uncased models do).
        n.strip_accents = bool_field(j, "strip_accents", n.lowercase);
        tok.normalizer = n;
    }

    void pre_tokenizer(const json& j) const {
        const std::string t = j.is_null() ? std::string("null") : type_of(j);
        need(t == "BertPreTokenizer",
             "pre_tokenizer type \"" + t + "\" is not supported with WordPiece (BertPreTokenizer is)");
    }

    void decoder(const json& j, wordpiece_tokenizer& tok) const {
        if (j.is_null()) {
            tok.decoder.reset();
            return;
        }
        const std::string t = type_of(j);
        need(t == "WordPiece", "decoder type \"" + t + "\" is not supported with WordPiece (WordPiece is)");
        wordpiece_decoder d;
        if (j.contains("prefix")) d.prefix = string_field(j, "prefix", "decoder WordPiece");
        d.cleanup = bool_field(j, "cleanup", true);
        tok.decoder = d;
    }

    token_t special_id(const wordpiece_tokenizer& tok, const std::string& name) const {
        const token_t id = tok.token_to_id(name);
        need(id >= 0, "post_processor: special token " + name + " is not in the vocabulary");
        return id;
    }

    void template_items(const json& list, const char* which, std::vector<token_template::item>& out,
                        const wordpiece_tokenizer& tok) const {
        need(list.is_array(), std::string("post_processor: \"") + which + "\" is not an array");
        for (const json& it : list) {
            token_template::item item;
            if (it.contains("Sequence")) {
                const std::string id = string_field(it["Sequence"], "id", "post_processor Sequence");
                need(id == "A" || id == "B", "post_processor: sequence " + id + " is neither A nor B");
                item.sequence = id == "A" ? 0 : 1;
                item.type_id = it["Sequence"].value("type_id", 0);
            } else {
                need(it.contains("SpecialToken"),
                     std::string("post_processor: an item of \"") + which + "\" is neither Sequence nor SpecialToken");
                item.id = special_id(tok, string_field(it["SpecialToken"], "id", "post_processor SpecialToken"));
                item.type_id = it["SpecialToken"].value("type_id", 0);
            }
            out.push_back(item);
        }
    }

    void post_processor(const json& j, wordpiece_tokenizer& tok) const {
        if (j.is_null()) return;
        const std::string t = type_of(j);
        token_template& p = tok.post;
        if (t == "TemplateProcessing") {
            template_items(field(j, "single", "post_processor"), "single", p.single, tok);
            if (j.contains("pair")) template_items(j["pair"], "pair", p.pair, tok);
        } else if (t == "BertProcessing") {
            // {"sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}: [CLS] $A [SEP] and [CLS] $A [SEP] $B:1 [SEP]:1.
            auto token = [&](const char* name) {
                const json& v = field(j, name, "post_processor BertProcessing");
                need(v.is_array() && v.size() == 2 && v[0].is_string(),
                     std::string("post_processor BertProcessing: \"") + name + "\" is not [token, id]");
                return special_id(tok, v[0].get<std::string>());
            };
            const token_t cls = token("cls"), sep = token("sep");
            p.single = {{cls, 0, 0}, {-1, 0, 0}, {sep, 0, 0}};
            p.pair = {{cls, 0, 0}, {-1, 0, 0}, {sep, 0, 0}, {-1, 1, 1}, {sep, 0, 1}};
        } else {
            bad("post_processor type \"" + t +
                "\" is not supported with WordPiece (TemplateProcessing, "
                "BertProcessing are)");
        }
    }

    void settings(const json& root, wordpiece_tokenizer& tok) const {
        auto& s = tok.settings;
        if (root.contains("truncation") && root["truncation"].is_object()) {
            const json& t = root["truncation"];
            s.truncation_max_length = t.value("max_length", std::size_t{0});
            s.truncation_strategy = t.value("strategy", std::string());
        }
        if (root.contains("padding") && root["padding"].is_object()) {
            const json& p = root["padding"];
            s.padding = true;
            if (p.contains("strategy") && p["strategy"].is_object() && p["strategy"].contains("Fixed"))
                s.padding_fixed = p["strategy"]["Fixed"].get<std::size_t>();
            tok.pad_id = p.value("pad_id", 0);
            tok.pad_type_id = p.value("pad_type_id", 0);
        }
    }

    wordpiece_tokenizer read(const json& root) const {
        need(kind_of(*this, root) == tokenizer_kind::wordpiece,
             "model type BPE: load it with tl::load_tokenizer_json (tinylm/tokenizer/hf_json.hpp)");
        const json& m = root["model"];
        wordpiece_tokenizer tok;
        wordpiece_model& model = tok.model;

        const json& vocab = field(m, "vocab", "model");
        need(vocab.is_object(), "model.vocab is not an object");
        need(!vocab.empty(), "model.vocab is empty");
        need(vocab.size() < (1u << 24), "model.vocab has more than 2^24 entries");
        model.tokens.assign(vocab.size(), std::string());
        std::vector<bool> seen(vocab.size(), false);
        for (auto it = vocab.begin(); it != vocab.end(); ++it) {
            need(it.value().is_number_integer(), "model.vocab: the id of \"" + it.key() + "\" is not an integer");
            const auto id = it.value().get<std::int64_t>();
            need(id >= 0 && static_cast<std::size_t>(id) < vocab.size(), "model.vocab: id " + std::to_string(id) +
                                                                             " of \"" + it.key() + "\" is outside 0.." +
                                                                             std::to_string(vocab.size() - 1));
            need(!seen[static_cast<std::size_t>(id)], "model.vocab: id " + std::to_string(id) + " is used twice");
            need(unicode::find_invalid(it.key()) == std::string::npos,
                 "model.vocab: token " + std::to_string(id) + " is not valid UTF-8");
            seen[static_cast<std::size_t>(id)] = true;
            model.tokens[static_cast<std::size_t>(id)] = it.key();
        }
        model.unk_token = string_field(m, "unk_token", "model");
        if (m.contains("continuing_subword_prefix") && !m["continuing_subword_prefix"].is_null())
            model.continuing_subword_prefix = string_field(m, "continuing_subword_prefix", "model");
        if (m.contains("max_input_chars_per_word") && !m["max_input_chars_per_word"].is_null()) {
            need(m["max_input_chars_per_word"].is_number_unsigned(),
                 "model.max_input_chars_per_word is not a non-negative integer");
            model.max_input_chars_per_word = m["max_input_chars_per_word"].get<std::size_t>();
        }
        try {
            model.finalize();
        } catch (const error& e) {
            bad(e.what());
        }

        added_tokens(root, [&](const added_token& t) {
            const token_t in_vocab = model.find(t.content);
            need(static_cast<std::size_t>(t.id) >= model.tokens.size() || in_vocab == t.id,
                 "added token " + t.content + " has id " + std::to_string(t.id) +
                     ", which the model gives to another token");
            need(tok.find_added(t.id) == nullptr, "added token id " + std::to_string(t.id) + " appears twice");
            (t.normalized ? tok.added_normalized : tok.added).add(t);
        });
        normalizer(root.value("normalizer", json()), tok);
        pre_tokenizer(root.value("pre_tokenizer", json()));
        decoder(root.value("decoder", json()), tok);
        post_processor(root.value("post_processor", json()), tok);
        settings(root, tok);
        return tok;
    }
};

} // namespace detail

// Which model a tokenizer.json holds (BPE or WordPiece); tl::error naming the file for anything else.
inline tokenizer_kind tokenizer_json_kind(const std::string& path) {
    const detail::json_reader reader{path};
    return detail::kind_of(reader, detail::parse_tokenizer_text(reader, detail::read_tokenizer_file(path)));
}

// Parses WordPiece tokenizer.json text; `name` is used in error messages.
inline wordpiece_tokenizer parse_wordpiece_json(std::string_view text, const std::string& name = "<memory>") {
    const detail::wordpiece_reader reader{{name}};
    const detail::json root = detail::parse_tokenizer_text(reader, text);
    try {
        wordpiece_tokenizer tok = reader.read(root);
        tok.source_json = text;
        return tok;
    } catch (const detail::json::exception& e) {
        reader.bad(std::string("unexpected content: ") + e.what());
    }
}

inline wordpiece_tokenizer load_wordpiece_json(const std::string& path) {
    return parse_wordpiece_json(detail::read_tokenizer_file(path), path);
}

// Writes the tokenizer.json the tokenizer was loaded from, unchanged, to `path` (through a temporary file). A
// tokenizer built in memory has no file to write: tl::error.
inline void save_wordpiece_json(const wordpiece_tokenizer& tok, const std::string& path) {
    check(!tok.source_json.empty(),
          "save_wordpiece_json: this tokenizer was not loaded from a tokenizer.json; only loaded ones are written");
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary);
        if (!out) fail("tokenizer.json " + path + ": cannot create " + tmp);
        out.write(tok.source_json.data(), static_cast<std::streamsize>(tok.source_json.size()));
        if (!out) fail("tokenizer.json " + path + ": write failed (disk full?)");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("tokenizer.json " + path + ": cannot rename " + tmp);
}

} // namespace tl
