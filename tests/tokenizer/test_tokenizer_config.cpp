// tokenizer_config.json as transformers' save_pretrained writes it: the bytes of the committed references
// (tests/reference/tokenizer/make_tokenizer_config_reference.py --out, transformers 5.23), the transformers 4.x
// form, and errors for special tokens the tokenizer lacks. The "torch" ctest tokenizer_config_hf has transformers
// load the folders export_for_transformers_tokenizer_config writes.
#include "../support/errors.hpp"
#include "tokenizer_test_util.hpp"

#include <tinylm/tokenizer/tokenizer_config.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using tl_test::error_of;

struct config_case {
    std::string name, tokenizer_file;
    tl::tokenizer_config_options options;
};

const std::string chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// The cases of make_tokenizer_config_reference.py.
std::vector<config_case> config_cases() {
    std::vector<config_case> out(3);
    out[0].name = "byte_level_chat";
    out[0].tokenizer_file = "trained_byte_level.json";
    out[0].options.eos = "<|im_end|>";
    out[0].options.pad = "<|endoftext|>";
    out[0].options.model_max_length = 512;
    out[0].options.chat_template = chatml + "{# привет #}";
    out[1].name = "byte_fallback_plain";
    out[1].tokenizer_file = "trained_byte_fallback.json";
    out[1].options.bos = "<s>";
    out[1].options.eos = "</s>";
    out[1].options.unk = "<unk>";
    out[2].name = "byte_fallback_all";
    out[2].tokenizer_file = "trained_byte_fallback.json";
    out[2].options.bos = "<s>";
    out[2].options.eos = "</s>";
    out[2].options.unk = "<unk>";
    out[2].options.pad = "</s>";
    out[2].options.model_max_length = 4096;
    out[2].options.chat_template =
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}";
    return out;
}

tl::tokenizer load(const std::string& file) { return tl::load_tokenizer_json(tl::test::reference_dir() + "/" + file); }

struct scratch_dir {
    fs::path path;
    explicit scratch_dir(const std::string& name) : path(fs::temp_directory_path() / ("tinylm_tokcfg_" + name)) {
        fs::remove_all(path);
    }
    ~scratch_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(tokenizer_config)

BOOST_AUTO_TEST_CASE(equals_transformers_save_pretrained) {
    for (const auto& c : config_cases()) {
        scratch_dir d("equal_" + c.name);
        tl::write_tokenizer_config(load(c.tokenizer_file), c.options, d.path);
        const std::string ref = tl::test::reference_dir() + "/config/" + c.name;
        BOOST_TEST(tl::test::read_file((d.path / "tokenizer_config.json").string()) ==
                       tl::test::read_file(ref + "/tokenizer_config.json"),
                   c.name);
        BOOST_TEST(fs::exists(d.path / "chat_template.jinja") == fs::exists(ref + "/chat_template.jinja"), c.name);
        if (fs::exists(ref + "/chat_template.jinja"))
            BOOST_TEST(tl::test::read_file((d.path / "chat_template.jinja").string()) ==
                           tl::test::read_file(ref + "/chat_template.jinja"),
                       c.name);
    }
}

BOOST_AUTO_TEST_CASE(transformers4_form_lists_added_tokens_with_their_flags) {
    tl::tokenizer tok = load("trained_byte_level.json");
    // An ordinary added token with Hugging Face's flags, and ids past 9 so that numeric and text order differ.
    tl::added_token word;
    word.content = "слово";
    word.id = static_cast<tl::token_t>(tok.vocab_size());
    word.special = false;
    word.normalized = true;
    word.single_word = true;
    word.lstrip = true;
    tok.added.add(word);
    auto opt = config_cases()[0].options;
    opt.style = tl::tokenizer_config_style::transformers4;
    const auto j = nlohmann::json::parse(tl::tokenizer_config_json(tok, opt));
    BOOST_TEST(j["tokenizer_class"] == "PreTrainedTokenizerFast");
    BOOST_TEST(j["chat_template"] == opt.chat_template);
    BOOST_TEST(j["eos_token"] == "<|im_end|>");
    BOOST_TEST(!j.contains("bos_token"));
    BOOST_TEST(j["model_max_length"] == 512);
    const auto& dec = j["added_tokens_decoder"];
    BOOST_TEST(dec.size() == tok.added.tokens().size());
    for (const auto& t : tok.added.tokens()) {
        const auto& e = dec[std::to_string(t.id)];
        BOOST_TEST(e["content"] == t.content);
        BOOST_TEST(e["special"] == t.special);
        BOOST_TEST(e["normalized"] == t.normalized);
        BOOST_TEST(e["single_word"] == t.single_word);
        BOOST_TEST(e["lstrip"] == t.lstrip);
        BOOST_TEST(e["rstrip"] == t.rstrip);
    }
    // Keys in id order, as Python's json.dumps(sort_keys=True) writes int keys.
    const std::string text = tl::tokenizer_config_json(tok, opt);
    BOOST_TEST(text.find("\"2\": {") < text.find("\"" + std::to_string(word.id) + "\": {"));
    // No chat_template.jinja in this form: the template is inline.
    scratch_dir d("v4");
    tl::write_tokenizer_config(tok, opt, d.path);
    BOOST_TEST(fs::exists(d.path / "tokenizer_config.json"));
    BOOST_TEST(!fs::exists(d.path / "chat_template.jinja"));
}

BOOST_AUTO_TEST_CASE(save_tokenizer_folder_round_trips) {
    const auto c = config_cases()[2];
    const tl::tokenizer tok = load(c.tokenizer_file);
    scratch_dir d("folder");
    tl::save_tokenizer_folder(tok, c.options, d.path / "nested");
    const tl::tokenizer back = tl::load_tokenizer_json((d.path / "nested" / "tokenizer.json").string());
    for (const auto& t : tl::test::test_texts())
        BOOST_TEST(back.encode(t.text) == tok.encode(t.text), t.name);
    BOOST_TEST(fs::exists(d.path / "nested" / "tokenizer_config.json"));
    BOOST_TEST(fs::exists(d.path / "nested" / "chat_template.jinja"));
}

BOOST_AUTO_TEST_CASE(special_tokens_from_ids_gives_the_same_file) {
    const auto c = config_cases()[1]; // bos <s> (1), eos </s> (2), unk <unk> (0)
    const tl::tokenizer tok = load(c.tokenizer_file);
    tl::tokenizer_config_options o;
    tl::special_tokens_from_ids(o, tok, 1, 2, -1, 0);
    BOOST_TEST(tl::tokenizer_config_json(tok, o) == tl::tokenizer_config_json(tok, c.options));
    BOOST_TEST(error_of([&] { tl::special_tokens_from_ids(o, tok, 1, 100000); }).find("outside the vocabulary") !=
               std::string::npos);
}

BOOST_AUTO_TEST_CASE(errors_name_the_field) {
    const tl::tokenizer tok = load("trained_byte_level.json");
    tl::tokenizer_config_options opt;
    opt.bos = "<s>"; // not a token of the byte-level tokenizer
    std::string msg = error_of([&] { tl::tokenizer_config_json(tok, opt); });
    BOOST_TEST(msg.find("bos_token \"<s>\" is not a token") != std::string::npos, msg);
    opt.bos.reset();
    opt.pad = "";
    msg = error_of([&] { tl::tokenizer_config_json(tok, opt); });
    BOOST_TEST(msg.find("pad_token is an empty string") != std::string::npos, msg);
    opt.pad.reset();
    opt.model_max_length = 0;
    msg = error_of([&] { tl::tokenizer_config_json(tok, opt); });
    BOOST_TEST(msg.find("model_max_length 0 is not positive") != std::string::npos, msg);
    // A file where the directory should be.
    scratch_dir d("blocked");
    fs::create_directories(d.path);
    std::ofstream(d.path / "file") << "x";
    opt.model_max_length.reset();
    msg = error_of([&] { tl::write_tokenizer_config(tok, opt, d.path / "file"); });
    BOOST_TEST(msg.find("cannot create the directory") != std::string::npos, msg);
    // A failed option writes nothing.
    opt.eos = "missing";
    error_of([&] { tl::save_tokenizer_folder(tok, opt, d.path / "out"); });
    BOOST_TEST(!fs::exists(d.path / "out"));
}

// Writes each case in both forms to $TINYLM_TOKENIZER_CONFIG_DIR/<style>/<case>/ for make_tokenizer_config_reference.py
// --check (ctest -L torch: tokenizer_config_hf).
BOOST_AUTO_TEST_CASE(export_for_transformers_tokenizer_config, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_TOKENIZER_CONFIG_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_TOKENIZER_CONFIG_DIR");
    for (auto c : config_cases())
        for (auto style : {tl::tokenizer_config_style::transformers5, tl::tokenizer_config_style::transformers4}) {
            c.options.style = style;
            const char* sub = style == tl::tokenizer_config_style::transformers5 ? "transformers5" : "transformers4";
            tl::save_tokenizer_folder(load(c.tokenizer_file), c.options, fs::path(dir) / sub / c.name);
        }
}

BOOST_AUTO_TEST_SUITE_END()
