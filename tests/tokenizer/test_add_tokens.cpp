// tl::add_tokens against Hugging Face (issue 16): the added_tokens section and tokenizer_config.json that
// `add_tokens` + `save_pretrained` write, the ids and decoded text of texts holding the new words
// (tests/reference/tokenizer/expected_added_tokens.json, from make_added_tokens_reference.py), the flags
// single_word / lstrip / rstrip / normalized / special on the cases of tokenizers' own tests, the split report,
// and errors for bad tokens. The torch-labelled ctest tokenizer_add_tokens_hf has transformers load what
// export_for_hf_added_tokens writes.
#include "../support/errors.hpp"
#include "tokenizer_test_util.hpp"

#include <tinylm/tokenizer/add_tokens.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/tokenizer_config.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using tl_test::error_of;

// The TOKENS of make_added_tokens_reference.py.
std::vector<tl::new_token> new_tokens() {
    std::vector<tl::new_token> t(9);
    t[0].content = "нейросеть";
    t[1].content = "дипфейк";
    t[2].content = "краш";
    t[2].single_word = true;
    t[2].lstrip = true;
    t[3].content = "кринж";
    t[3].rstrip = true;
    t[4].content = "хайп";
    t[4].normalized = false;
    t[5].content = "Нью Йорк";
    t[6].content = "café";
    t[7].content = "<новое>";
    t[7].special = true;
    t[8].content = "вайб";
    t[8].single_word = true;
    return t;
}

const nlohmann::json& reference() {
    static const nlohmann::json r = tl::test::read_json(tl::test::reference_dir() + "/expected_added_tokens.json");
    return r;
}

// The texts of the reference: texts.json and the reference's own, by name.
std::vector<std::pair<std::string, std::string>> reference_texts() {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& t : tl::test::test_texts())
        out.emplace_back(t.name, t.text);
    const nlohmann::json extra = {{"words", "нейросеть и дипфейк: нейросети, дипфейки, нейросетьб"},
                                  {"single_word", " краш  краши  краш, вайбы вайб вайб. вайб"},
                                  {"strip", "кринж   и кринж\tкринж"},
                                  {"not_normalized", "хайп, ХАЙП, мега-хайп"},
                                  {"space_inside", "Нью Йорк и Нью  Йорк, НьюЙорк"},
                                  {"latin1", "Мой кафе café! Café"},
                                  {"special", "<новое> слово<новое>"},
                                  {"start_and_end", "нейросеть"}};
    for (auto it = extra.begin(); it != extra.end(); ++it)
        out.emplace_back(it.key(), it.value().get<std::string>());
    return out;
}

tl::tokenizer load_named(const std::string& name) {
    if (name.starts_with("trained_")) return tl::load_tokenizer_json(tl::test::reference_dir() + "/" + name + ".json");
    return tl::load_tokenizer_json(tl::test::real_tokenizer(name));
}

tl::tokenizer with_new_tokens(const std::string& name) {
    tl::tokenizer tok = load_named(name);
    const auto list = new_tokens();
    const std::size_t before = tok.vocab_size();
    const auto ids = tl::add_tokens(tok, std::span<const tl::new_token>(list));
    for (std::size_t i = 0; i < ids.size(); ++i)
        BOOST_TEST(ids[i] == tl::token_t(before + i));
    return tok;
}

void check_against_hf(const std::string& name) {
    const nlohmann::json& ref = reference().at(name);
    const tl::tokenizer tok = with_new_tokens(name);
    // tokenizer.json's added_tokens as save_pretrained writes them (compared as JSON values).
    const auto written = nlohmann::json::parse(tl::to_tokenizer_json(tok));
    BOOST_TEST(written["added_tokens"] == ref["added_tokens"], name << ": " << written["added_tokens"].dump());
    BOOST_TEST(tl::tokenizer_config_json(tok, {}) == ref["tokenizer_config"].get<std::string>(), name);
    std::size_t compared_decodes = 0;
    for (const auto& [text_name, text] : reference_texts()) {
        const auto ids = tok.encode(text);
        BOOST_TEST(ids == ref["ids"][text_name].get<std::vector<tl::token_t>>(), name << "/" << text_name);
        // tokenizers shows invalid UTF-8 as U+FFFD; tinylm returns the bytes. Compare where both are text.
        const std::string decoded = tok.decode(ids), hf = ref["decoded"][text_name].get<std::string>();
        if (tl::unicode::find_invalid(decoded) == std::string::npos && hf.find("\uFFFD") == std::string::npos) {
            BOOST_TEST(decoded == hf, name << "/" << text_name << " decode");
            ++compared_decodes;
        }
    }
    BOOST_TEST(compared_decodes >= reference_texts().size() - 4);
    // Written and read back: the same tokens, flags and ids.
    const tl::tokenizer back = tl::parse_tokenizer_json(tl::to_tokenizer_json(tok), name);
    BOOST_TEST(nlohmann::json::parse(tl::to_tokenizer_json(back))["added_tokens"] == written["added_tokens"]);
    for (const auto& [text_name, text] : reference_texts())
        BOOST_TEST(back.encode(text) == tok.encode(text), name << "/" << text_name << " after reload");
}

// The splits of `text` by `v`: the pieces of text as they are, added tokens as "#id".
std::vector<std::string> pieces(const tl::added_vocabulary& v, std::string_view text) {
    std::vector<std::string> out;
    v.split(
        text, [&](std::string_view p) { out.emplace_back(p); },
        [&](tl::token_t id) {
            std::string t = "#";
            t += std::to_string(id);
            out.push_back(t);
        });
    return out;
}

tl::added_token token(const std::string& content, tl::token_t id) {
    tl::added_token t;
    t.content = content;
    t.id = id;
    return t;
}

} // namespace

BOOST_AUTO_TEST_SUITE(add_tokens)

BOOST_AUTO_TEST_CASE(trained_byte_level_matches_hf) { check_against_hf("trained_byte_level"); }
BOOST_AUTO_TEST_CASE(trained_byte_fallback_matches_hf) { check_against_hf("trained_byte_fallback"); }
BOOST_AUTO_TEST_CASE(qwen3_matches_hf, tl_test::needs_data(tl::test::real_tokenizer_file("qwen3"))) {
    check_against_hf("qwen3");
}
BOOST_AUTO_TEST_CASE(llama2_matches_hf, tl_test::needs_data(tl::test::real_tokenizer_file("llama2"))) {
    check_against_hf("llama2");
}

// The expectations of tokenizers' own tests of AddedVocabulary (single_word, lstrip, rstrip), on raw text.
BOOST_AUTO_TEST_CASE(flags_as_tokenizers_tests_expect) {
    tl::added_vocabulary v;
    auto mask = token("<mask>", 0);
    mask.single_word = true;
    v.add(mask);
    BOOST_TEST(pieces(v, "<mask> My name <mask> A<mask> <mask>ony <mask>") ==
                   (std::vector<std::string>{"#0", " My name ", "#0", " A<mask> <mask>ony ", "#0"}),
               boost::test_tools::per_element());
    // Punctuation and dashes are not word characters; a combining mark is.
    BOOST_TEST(pieces(v, "<mask>, <mask>- \u25CC\u0330<mask>") ==
                   (std::vector<std::string>{"#0", ", ", "#0", "- \u25CC\u0330<mask>"}),
               boost::test_tools::per_element());

    tl::added_vocabulary s;
    auto strip = token("<mask>", 0);
    strip.single_word = strip.lstrip = strip.rstrip = true;
    s.add(strip);
    // Tabs and U+2000 are whitespace; the match after one that took a tab does not take it again.
    BOOST_TEST(pieces(s, "Hi <mask> there\t<mask>\t<mask>\u2000") ==
                   (std::vector<std::string>{"Hi", "#0", "there", "#0", "#0"}),
               boost::test_tools::per_element());

    tl::added_vocabulary both;
    auto my = token("my", 0);
    my.lstrip = my.rstrip = true;
    both.add(my);
    both.add(token("name", 1));
    BOOST_TEST(pieces(both, "[CLS] my name is Anthony") ==
                   (std::vector<std::string>{"[CLS]", "#0", "#1", " is Anthony"}),
               boost::test_tools::per_element());
    // A dropped single_word match is not searched again for shorter tokens inside it (non-overlapping search).
    tl::added_vocabulary nested;
    auto longer = token("abc", 0);
    longer.single_word = true;
    nested.add(longer);
    nested.add(token("bc", 1));
    BOOST_TEST(pieces(nested, "xabc abc") == (std::vector<std::string>{"xabc ", "#0"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(split_report_shows_the_old_pieces) {
    const tl::tokenizer before = load_named("trained_byte_level");
    tl::tokenizer after = before;
    const std::vector<std::string> words = {"нейросеть", "дипфейк"};
    const auto ids = tl::add_tokens(after, words);
    const auto report = tl::split_report(before, after, words);
    BOOST_TEST_REQUIRE(report.size() == 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        BOOST_TEST(report[i].before.size() >= 3u, words[i]);
        BOOST_TEST(before.decode(report[i].before) == words[i]);
        BOOST_TEST(report[i].after == std::vector<tl::token_t>{ids[i]});
        BOOST_TEST(report[i].before_in_text.size() >= 3u);
        BOOST_TEST(report[i].after_in_text.back() == ids[i]);
    }
    const std::string text = tl::format_split_report(before, after, report);
    BOOST_TEST(text.find("нейросеть (" + std::to_string(ids[0]) + ")") != std::string::npos, text);
    BOOST_TEST(text.find("before:") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_tokens_are_clear_errors) {
    tl::tokenizer level = load_named("trained_byte_level");
    tl::tokenizer fallback = load_named("trained_byte_fallback");
    const std::size_t n_level = level.vocab_size(), n_fallback = fallback.vocab_size();
    auto err = [](tl::tokenizer& tok, std::vector<std::string> words) {
        return error_of([&] { tl::add_tokens(tok, words); });
    };
    auto has = [](const std::string& msg, const std::string& part) {
        BOOST_TEST(msg.find(part) != std::string::npos, "\"" << msg << "\" lacks \"" << part << "\"");
    };
    has(err(level, {"новое", ""}), "add_tokens: token 1: an empty string cannot be a token");
    has(err(level, {"<|im_end|>"}), "\"<|im_end|>\" is already token 2 of the vocabulary");
    const std::string model_token(level.id_to_bytes(300));
    has(err(level, {model_token}), "is already token 300");
    has(err(level, {"слово", "слово"}), "token 1: \"слово\" is given twice");
    has(err(level, {"a<|im_start|>b"}), "contains the special token <|im_start|>");
    has(err(level, {std::string("\xFF\xFE")}), "is not valid UTF-8");
    has(err(fallback, {"\u2581слово"}), "contains the word marker");
    has(err(fallback, {"x<0x41>"}), "contains a byte-fallback token <0xNN>");
    has(err(fallback, {"<s>x"}), "contains the special token <s>");
    // Nothing was added by a failed call.
    BOOST_TEST(level.vocab_size() == n_level);
    BOOST_TEST(fallback.vocab_size() == n_fallback);
    // Adding a word twice, across calls.
    tl::add_tokens(level, std::vector<std::string>{"слово"});
    has(err(level, {"слово"}), "\"слово\" is already token " + std::to_string(n_level));
}

// Writes, for make_added_tokens_reference.py --check, $TINYLM_ADDED_TOKENS_DIR/<tokenizer>/tokenizer.json,
// tokenizer_config.json and ids.json after tl::add_tokens (the real tokenizers when the data dir has them).
BOOST_AUTO_TEST_CASE(export_for_hf_added_tokens, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_ADDED_TOKENS_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_ADDED_TOKENS_DIR");
    for (const std::string name : {"trained_byte_level", "trained_byte_fallback", "qwen3", "llama2"}) {
        if (!name.starts_with("trained_") && tl_test::data_path(tl::test::real_tokenizer_file(name)).empty()) continue;
        const tl::tokenizer tok = with_new_tokens(name);
        const fs::path out = fs::path(dir) / name;
        tl::save_tokenizer_folder(tok, {}, out);
        nlohmann::json ids;
        for (const auto& [text_name, text] : reference_texts())
            ids[text_name] = tok.encode(text);
        std::ofstream(out / "ids.json") << ids.dump();
    }
}

BOOST_AUTO_TEST_SUITE_END()
