// tinylm/tokenizer/hf_json.hpp: Hugging Face tokenizer.json, read and written.
//
// Reads the two BPE styles real models ship: byte-level (GPT-2, Qwen2/Qwen2.5/Qwen3: ByteLevel, optionally
// after a Split with the Qwen2 pattern; merges as "a b" strings or as [a, b] pairs) and byte fallback with
// metaspace (Llama-2, TinyLlama: Prepend + Replace normalizer, no pre-tokenizer, ByteFallback decoder). A
// component tinylm does not implement is an error naming it, never a silently different tokenizer. Writes
// files that `tokenizers` (and so `transformers`) load with the same ids.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tl {

// The splitting regexes as they appear in tokenizer.json files.
inline constexpr std::string_view gpt2_regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view qwen2_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view llama3_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace detail {

using json = nlohmann::json;

struct json_reader {
    std::string file; // for messages

    [[noreturn]] void bad(const std::string& what) const { fail("tokenizer.json " + file + ": " + what); }
    void need(bool ok, const std::string& what) const {
        if (!ok) bad(what);
    }
    static std::string type_of(const json& j) {
        return j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : std::string("?");
    }
    const json& field(const json& j, const char* name, const char* where) const {
        need(j.is_object() && j.contains(name), std::string(where) + " has no \"" + name + "\"");
        return j[name];
    }
    std::string string_field(const json& j, const char* name, const char* where) const {
        const json& v = field(j, name, where);
        need(v.is_string(), std::string(where) + ".\"" + name + "\" is not a string");
        return v.get<std::string>();
    }
    bool bool_field(const json& j, const char* name, bool fallback) const {
        if (!j.contains(name) || j[name].is_null()) return fallback;
        need(j[name].is_boolean(), std::string("\"") + name + "\" is not a boolean");
        return j[name].get<bool>();
    }

    // Calls f(const added_token&) for each entry of "added_tokens", checked for what every model needs.
    template <class F>
    void added_tokens(const json& root, F&& f) const {
        if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return;
        const json& list = root["added_tokens"];
        need(list.is_array(), "\"added_tokens\" is not an array");
        for (const json& a : list) {
            need(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                     a["content"].is_string(),
                 "an entry of \"added_tokens\" lacks an integer \"id\" or a string \"content\"");
            const auto id = a["id"].get<std::int64_t>();
            need(id >= 0 && id < (1 << 24), "added token id " + std::to_string(id) + " is out of range");
            const auto content = a["content"].get<std::string>();
            need(!content.empty(), "added token " + std::to_string(id) + " has empty content");
            need(unicode::find_invalid(content) == std::string::npos,
                 "added token " + std::to_string(id) + " is not valid UTF-8");
            added_token t;
            t.content = content;
            t.id = static_cast<token_t>(id);
            t.special = bool_field(a, "special", false);
            t.normalized = bool_field(a, "normalized", false); // files written by `tokenizers` always have it
            t.single_word = bool_field(a, "single_word", false);
            t.lstrip = bool_field(a, "lstrip", false);
            t.rstrip = bool_field(a, "rstrip", false);
            f(t);
        }
    }

    void normalizer_part(const json& j, normalizer& n) const {
        if (j.is_null()) return;
        const std::string t = type_of(j);
        if (t == "Sequence") {
            const json& list = field(j, "normalizers", "normalizer Sequence");
            need(list.is_array(), "normalizer Sequence: \"normalizers\" is not an array");
            for (const json& part : list)
                normalizer_part(part, n);
        } else if (t == "NFC") {
            need(n.prepend.empty() && n.replace.empty(), "normalizer: NFC after Prepend/Replace is not supported");
            n.nfc = true;
        } else if (t == "Prepend") {
            need(n.replace.empty(), "normalizer: Prepend after Replace is not supported");
            n.prepend = string_field(j, "prepend", "normalizer Prepend");
        } else if (t == "Replace") {
            const json& pattern = field(j, "pattern", "normalizer Replace");
            need(pattern.is_object() && pattern.contains("String") && pattern["String"].is_string(),
                 "normalizer Replace: only String patterns are supported");
            n.replace.emplace_back(pattern["String"].get<std::string>(),
                                   string_field(j, "content", "normalizer Replace"));
        } else {
            bad("normalizer type \"" + t + "\" is not supported (NFC, Prepend, Replace, Sequence are)");
        }
    }

    void pre_tokenizer_part(const json& j, pre_tokenizer& p, bool& byte_level) const {
        if (j.is_null()) return;
        const std::string t = type_of(j);
        if (t == "Sequence") {
            const json& list = field(j, "pretokenizers", "pre_tokenizer Sequence");
            need(list.is_array(), "pre_tokenizer Sequence: \"pretokenizers\" is not an array");
            for (const json& part : list)
                pre_tokenizer_part(part, p, byte_level);
        } else if (t == "ByteLevel") {
            byte_level = true;
            need(!bool_field(j, "add_prefix_space", false),
                 "pre_tokenizer ByteLevel: add_prefix_space is not supported");
            if (bool_field(j, "use_regex", true)) {
                need(p.pattern == split_pattern::none, "pre_tokenizer: two splitting patterns");
                p.pattern = split_pattern::gpt2;
            }
        } else if (t == "Split") {
            const json& pattern = field(j, "pattern", "pre_tokenizer Split");
            need(pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string(),
                 "pre_tokenizer Split: only Regex patterns are supported");
            const auto re = pattern["Regex"].get<std::string>();
            need(j.value("behavior", std::string()) == "Isolated" && !bool_field(j, "invert", false),
                 "pre_tokenizer Split: only behavior Isolated without invert is supported");
            need(p.pattern == split_pattern::none, "pre_tokenizer: two splitting patterns");
            if (re == qwen2_regex)
                p.pattern = split_pattern::qwen2;
            else if (re == llama3_regex)
                p.pattern = split_pattern::llama3;
            else if (re == gpt2_regex)
                p.pattern = split_pattern::gpt2;
            else
                bad("pre_tokenizer Split: the regex " + re + " is not one tinylm implements (GPT-2, Qwen2, Llama 3)");
        } else if (t == "Metaspace") {
            need(j.value("replacement", std::string(metaspace)) == metaspace,
                 "pre_tokenizer Metaspace: only the replacement \"\u2581\" is supported");
            const std::string scheme = j.value("prepend_scheme", std::string("always"));
            need(scheme == "always" || scheme == "never",
                 "pre_tokenizer Metaspace: prepend_scheme \"" + scheme + "\" is not supported");
            p.metaspace_replace = true;
            p.metaspace_prepend = scheme == "always";
            p.metaspace_split = bool_field(j, "split", true);
        } else {
            bad("pre_tokenizer type \"" + t + "\" is not supported (ByteLevel, Split, Metaspace, Sequence are)");
        }
    }

    void decoder_part(const json& j, token_decoder& d) const {
        if (j.is_null()) return;
        const std::string t = type_of(j);
        if (t == "Sequence") {
            const json& list = field(j, "decoders", "decoder Sequence");
            need(list.is_array(), "decoder Sequence: \"decoders\" is not an array");
            for (const json& part : list)
                decoder_part(part, d);
        } else if (t == "ByteLevel" || t == "ByteFallback" || t == "Fuse") {
            // Byte-level tokens and <0xNN> tokens are bytes already; fusing is what decode does.
        } else if (t == "Replace") {
            const json& pattern = field(j, "pattern", "decoder Replace");
            need(pattern.is_object() && pattern.value("String", std::string()) == metaspace &&
                     j.value("content", std::string()) == " ",
                 "decoder Replace: only \"\u2581\" → \" \" is supported");
            d.metaspace = true;
        } else if (t == "Strip") {
            need(j.value("content", std::string()) == " " && j.value("start", 0) == 1 && j.value("stop", 0) == 0,
                 "decoder Strip: only (\" \", 1, 0) is supported");
            d.strip_leading_space = true;
        } else if (t == "Metaspace") {
            d.metaspace = true;
            d.strip_leading_space = j.value("prepend_scheme", std::string("always")) != "never";
        } else {
            bad("decoder type \"" + t + "\" is not supported");
        }
    }

    void post_processor(const json& j, tokenizer& tok) const {
        if (j.is_null()) return;
        const std::string t = type_of(j);
        if (t == "ByteLevel") return;
        need(t == "TemplateProcessing", "post_processor type \"" + t + "\" is not supported");
        const json& single = field(j, "single", "post_processor");
        need(single.is_array(), "post_processor: \"single\" is not an array");
        bool seen_sequence = false;
        for (const json& item : single) {
            if (item.contains("Sequence")) {
                seen_sequence = true;
                continue;
            }
            need(item.contains("SpecialToken") && item["SpecialToken"].contains("id"),
                 "post_processor: an item of \"single\" is neither Sequence nor SpecialToken");
            const auto name = item["SpecialToken"]["id"].get<std::string>();
            const token_t id = tok.token_to_id(name);
            need(id >= 0, "post_processor: special token " + name + " is not in the vocabulary");
            (seen_sequence ? tok.suffix_tokens : tok.prefix_tokens).push_back(id);
        }
    }

    tokenizer read(const json& root) const {
        need(root.is_object(), "the top level is not an object");
        tokenizer tok;
        const json& m = field(root, "model", "the file");
        need(m.is_object(), "\"model\" is not an object");
        const std::string type = m.value("type", std::string("BPE"));
        need(type != "WordPiece",
             "model type WordPiece: load it with tl::load_wordpiece_json (tinylm/tokenizer/wordpiece_json.hpp)");
        need(type == "BPE", "model type " + type + " is not supported; supported: BPE, WordPiece");
        need(!m.contains("dropout") || m["dropout"].is_null(), "BPE dropout is not supported");
        for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"})
            need(!m.contains(affix) || m[affix].is_null() ||
                     (m[affix].is_string() && m[affix].get<std::string>().empty()),
                 std::string("BPE ") + affix + " is not supported");

        bool byte_level = false;
        pre_tokenizer_part(root.value("pre_tokenizer", json()), tok.pre, byte_level);
        if (root.contains("decoder") && type_of(root["decoder"]) == "ByteLevel") byte_level = true;
        normalizer_part(root.value("normalizer", json()), tok.norm);
        decoder_part(root.value("decoder", json()), tok.dec);
        if (tok.pre.metaspace_replace) tok.dec.metaspace = true;

        bpe_model& model = tok.model;
        model.byte_level = byte_level;
        model.byte_fallback = bool_field(m, "byte_fallback", false);
        model.fuse_unk = bool_field(m, "fuse_unk", false);
        need(!(byte_level && model.byte_fallback), "byte-level BPE with byte_fallback is not supported");

        // Vocabulary, dense ids 0..n-1.
        const json& vocab = field(m, "vocab", "model");
        need(vocab.is_object(), "model.vocab is not an object");
        need(vocab.size() < (1u << 24), "model.vocab has more than 2^24 entries");
        std::vector<const std::string*> spelled(vocab.size(), nullptr);
        std::unordered_map<std::string_view, token_t> by_spelling;
        by_spelling.reserve(vocab.size());
        for (auto it = vocab.begin(); it != vocab.end(); ++it) {
            need(it.value().is_number_integer(), "model.vocab: the id of \"" + it.key() + "\" is not an integer");
            const auto id = it.value().get<std::int64_t>();
            need(id >= 0 && static_cast<std::size_t>(id) < vocab.size(), "model.vocab: id " + std::to_string(id) +
                                                                             " of \"" + it.key() + "\" is outside 0.." +
                                                                             std::to_string(vocab.size() - 1));
            need(spelled[static_cast<std::size_t>(id)] == nullptr,
                 "model.vocab: id " + std::to_string(id) + " is used twice");
            spelled[static_cast<std::size_t>(id)] = &it.key();
            by_spelling.emplace(it.key(), static_cast<token_t>(id));
        }
        const auto& bl = byte_level_map::get();
        std::string raw;
        model.tokens.reserve(vocab.size());
        for (std::size_t id = 0; id < spelled.size(); ++id) {
            const std::string& s = *spelled[id];
            if (byte_level) {
                need(bl.decode(s, raw), "model.vocab: token \"" + s + "\" (id " + std::to_string(id) +
                                            ") is not in the byte-level alphabet");
                need(model.find(raw) < 0,
                     "model.vocab: two tokens stand for the same bytes (id " + std::to_string(id) + ")");
                model.add_token(raw);
            } else {
                model.add_token(s);
            }
        }

        // Merges.
        const json& merges = field(m, "merges", "model");
        need(merges.is_array(), "model.merges is not an array");
        model.merges.reserve(merges.size());
        auto lookup = [&](std::string_view s, std::size_t r) {
            auto it = by_spelling.find(s);
            need(it != by_spelling.end(),
                 "model.merges[" + std::to_string(r) + "]: \"" + std::string(s) + "\" is not in the vocabulary");
            return it->second;
        };
        for (std::size_t r = 0; r < merges.size(); ++r) {
            const json& e = merges[r];
            if (e.is_string()) {
                const std::string& s = e.get_ref<const std::string&>();
                const std::size_t sp = s.find(' ');
                need(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
                     "model.merges[" + std::to_string(r) + "]: \"" + s + "\" is not two tokens separated by a space");
                model.merges.emplace_back(lookup(std::string_view(s).substr(0, sp), r),
                                          lookup(std::string_view(s).substr(sp + 1), r));
            } else {
                need(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(),
                     "model.merges[" + std::to_string(r) + "] is neither \"a b\" nor [\"a\", \"b\"]");
                model.merges.emplace_back(lookup(e[0].get_ref<const std::string&>(), r),
                                          lookup(e[1].get_ref<const std::string&>(), r));
            }
        }
        if (m.contains("unk_token") && !m["unk_token"].is_null()) {
            need(m["unk_token"].is_string(), "model.unk_token is not a string");
            auto it = by_spelling.find(m["unk_token"].get_ref<const std::string&>());
            need(it != by_spelling.end(), "model.unk_token is not in the vocabulary");
            model.unk = it->second;
        }
        try {
            model.finalize();
        } catch (const error& e) {
            bad(e.what());
        }

        // Added tokens.
        added_tokens(root, [&](const added_token& t) {
            if (static_cast<std::size_t>(t.id) < model.tokens.size()) {
                need(spelled[static_cast<std::size_t>(t.id)] && *spelled[static_cast<std::size_t>(t.id)] == t.content,
                     "added token " + t.content + " has id " + std::to_string(t.id) +
                         ", which the model gives to another token");
            }
            need(tok.find_added(t.id) == nullptr, "added token id " + std::to_string(t.id) + " appears twice");
            if (t.normalized) {
                // Matched in normalised text by its normalised content, as `tokenizers` builds its trie.
                std::string pattern = tok.norm.apply(t.content);
                need(!pattern.empty(), "added token " + t.content + " normalises to nothing");
                tok.added_normalized.add(t, std::move(pattern));
            } else {
                tok.added.add(t);
            }
        });
        post_processor(root.value("post_processor", json()), tok);
        return tok;
    }
};

} // namespace detail

// Parses tokenizer.json text; `name` is used in error messages.
inline tokenizer parse_tokenizer_json(std::string_view text, const std::string& name = "<memory>") {
    detail::json_reader reader{name};
    detail::json root;
    try {
        root = detail::json::parse(text.begin(), text.end());
    } catch (const detail::json::exception& e) {
        reader.bad(std::string("not valid JSON (truncated?): ") + e.what());
    }
    try {
        return reader.read(root);
    } catch (const detail::json::exception& e) {
        reader.bad(std::string("unexpected content: ") + e.what());
    }
}

inline tokenizer load_tokenizer_json(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("tokenizer.json " + path + ": cannot open the file");
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_tokenizer_json(ss.str(), path);
}

struct json_write_options {
    // Write merges as ["a", "b"] pairs (tokenizers >= 0.20) rather than "a b" strings.
    bool merges_as_pairs = true;
};

// tokenizer.json text for `tok`.
inline std::string to_tokenizer_json(const tokenizer& tok, const json_write_options& opt = {}) {
    using ojson = nlohmann::ordered_json;
    const bpe_model& model = tok.model;
    const auto& bl = byte_level_map::get();
    auto spell = [&](token_t id) {
        const std::string& t = model.tokens[static_cast<std::size_t>(id)];
        return model.byte_level ? bl.encode(t) : t;
    };
    ojson root;
    root["version"] = "1.0";
    root["truncation"] = nullptr;
    root["padding"] = nullptr;
    ojson added = ojson::array();
    for (const added_token* t : tok.added_tokens())
        added.push_back({{"id", t->id},
                         {"content", t->content},
                         {"single_word", t->single_word},
                         {"lstrip", t->lstrip},
                         {"rstrip", t->rstrip},
                         {"normalized", t->normalized},
                         {"special", t->special}});
    root["added_tokens"] = added;

    ojson norms = ojson::array();
    if (tok.norm.nfc) norms.push_back({{"type", "NFC"}});
    if (!tok.norm.prepend.empty()) norms.push_back({{"type", "Prepend"}, {"prepend", tok.norm.prepend}});
    for (const auto& [from, to] : tok.norm.replace)
        norms.push_back({{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}});
    root["normalizer"] = norms.empty()       ? ojson()
                         : norms.size() == 1 ? norms[0]
                                             : ojson{{"type", "Sequence"}, {"normalizers", norms}};

    const ojson byte_level_step = {
        {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
    if (model.byte_level) {
        ojson pre = byte_level_step;
        if (tok.pre.pattern != split_pattern::none) {
            const std::string_view re = tok.pre.pattern == split_pattern::qwen2    ? qwen2_regex
                                        : tok.pre.pattern == split_pattern::llama3 ? llama3_regex
                                                                                   : gpt2_regex;
            pre = {{"type", "Sequence"},
                   {"pretokenizers",
                    {{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}},
                     byte_level_step}}};
        }
        root["pre_tokenizer"] = pre;
    } else if (tok.pre.metaspace_replace || tok.pre.metaspace_split) {
        root["pre_tokenizer"] = {{"type", "Metaspace"},
                                 {"replacement", metaspace},
                                 {"prepend_scheme", tok.pre.metaspace_prepend ? "always" : "never"},
                                 {"split", tok.pre.metaspace_split}};
    } else {
        check(tok.pre.pattern == split_pattern::none,
              "to_tokenizer_json: a splitting pattern needs the byte-level model");
        root["pre_tokenizer"] = nullptr;
    }

    if (!tok.prefix_tokens.empty() || !tok.suffix_tokens.empty()) {
        ojson single = ojson::array();
        ojson special = ojson::object();
        auto add_special = [&](token_t id) {
            const std::string name(tok.id_to_bytes(id));
            single.push_back({{"SpecialToken", {{"id", name}, {"type_id", 0}}}});
            special[name] = {{"id", name}, {"ids", {id}}, {"tokens", {name}}};
        };
        for (token_t id : tok.prefix_tokens)
            add_special(id);
        single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
        for (token_t id : tok.suffix_tokens)
            add_special(id);
        ojson pair = single;
        pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
        root["post_processor"] = {
            {"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", special}};
    } else {
        root["post_processor"] = nullptr;
    }

    if (model.byte_level) {
        root["decoder"] = byte_level_step;
    } else {
        ojson decs = ojson::array();
        if (tok.dec.metaspace)
            decs.push_back({{"type", "Replace"}, {"pattern", {{"String", metaspace}}}, {"content", " "}});
        if (model.byte_fallback) decs.push_back({{"type", "ByteFallback"}});
        decs.push_back({{"type", "Fuse"}});
        if (tok.dec.strip_leading_space)
            decs.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        root["decoder"] = {{"type", "Sequence"}, {"decoders", decs}};
    }

    // The model is written by hand: an ordered_json object would make the vocabulary quadratic to build.
    ojson m;
    m["type"] = "BPE";
    m["dropout"] = nullptr;
    m["unk_token"] = model.unk >= 0 ? ojson(spell(model.unk)) : ojson();
    m["continuing_subword_prefix"] = nullptr;
    m["end_of_word_suffix"] = nullptr;
    m["fuse_unk"] = model.fuse_unk;
    m["byte_fallback"] = model.byte_fallback;
    m["ignore_merges"] = false;
    try {
        std::string out = root.dump(1);
        out.pop_back(); // the closing brace
        out.pop_back(); // and the line break before it
        out += ",\n \"model\": ";
        std::string head = m.dump(1);
        head.pop_back();
        head.pop_back();
        // Re-indent the model's fields by one space (they sit one level deeper).
        for (std::size_t i = 0; i < head.size(); ++i) {
            out += head[i];
            if (head[i] == '\n') out += ' ';
        }
        out += ",\n  \"vocab\": {";
        for (std::size_t id = 0; id < model.tokens.size(); ++id) {
            out += id ? ",\n   " : "\n   ";
            out += ojson(spell(static_cast<token_t>(id))).dump();
            out += ": ";
            out += std::to_string(id);
        }
        out += "\n  },\n  \"merges\": [";
        for (std::size_t r = 0; r < model.merges.size(); ++r) {
            const auto [a, b] = model.merges[r];
            out += r ? ",\n   " : "\n   ";
            if (opt.merges_as_pairs) {
                out += '[';
                out += ojson(spell(a)).dump();
                out += ", ";
                out += ojson(spell(b)).dump();
                out += ']';
            } else {
                const std::string sa = spell(a), sb = spell(b);
                check(sa.find(' ') == std::string::npos && sb.find(' ') == std::string::npos,
                      "to_tokenizer_json: a merged token holds a space; write merges as pairs");
                out += ojson(sa + " " + sb).dump();
            }
        }
        out += "\n  ]\n }\n}\n";
        return out;
    } catch (const nlohmann::json::exception& e) {
        fail(std::string("to_tokenizer_json: ") + e.what());
    }
}

// Writes tokenizer.json to `path` (through a temporary file renamed into place).
inline void save_tokenizer_json(const tokenizer& tok, const std::string& path, const json_write_options& opt = {}) {
    const std::string text = to_tokenizer_json(tok, opt);
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary);
        if (!out) fail("tokenizer.json " + path + ": cannot create " + tmp);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        if (!out) fail("tokenizer.json " + path + ": write failed (disk full?)");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("tokenizer.json " + path + ": cannot rename " + tmp);
}

} // namespace tl
