// The splitting scanners against hand-worked matches of the GPT-2, Qwen2 and Llama 3 regexes and against Hugging
// Face's Split pre-tokenizer on the test texts, the byte-level map, UTF-8 validation.
#include "tokenizer_test_util.hpp"

#include <tinylm/tokenizer/pretokenizer.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

namespace {
std::vector<std::string> split(std::string_view s, tl::split_pattern p) {
    std::vector<std::string> out;
    tl::split_words(s, p, [&](std::string_view w) { out.emplace_back(w); });
    return out;
}
using v = std::vector<std::string>;
} // namespace

BOOST_AUTO_TEST_SUITE(pretokenizer)

BOOST_AUTO_TEST_CASE(gpt2_pattern) {
    using enum tl::split_pattern;
    BOOST_TEST(split("Hello world", gpt2) == (v{"Hello", " world"}));
    BOOST_TEST(split("it's 2024!!  ok", gpt2) == (v{"it", "'s", " 2024", "!!", " ", " ok"}));
    BOOST_TEST(split("a   b", gpt2) == (v{"a", "  ", " b"}));
    BOOST_TEST(split("x  ", gpt2) == (v{"x", "  "}));
    BOOST_TEST(split("Привет,мир", gpt2) == (v{"Привет", ",", "мир"}));
}

BOOST_AUTO_TEST_CASE(qwen2_pattern) {
    using enum tl::split_pattern;
    BOOST_TEST(split("Hello world", qwen2) == (v{"Hello", " world"}));
    BOOST_TEST(split("IT'S 123", qwen2) == (v{"IT", "'S", " ", "1", "2", "3"}));
    BOOST_TEST(split("«Фауст»\n\nГлава", qwen2) == (v{"«Фауст", "»\n\n", "Глава"}));
    BOOST_TEST(split("a \n\n b", qwen2) == (v{"a", " \n\n", " b"}));
    BOOST_TEST(split("a\t\tb", qwen2) == (v{"a", "\t", "\tb"}));
}

BOOST_AUTO_TEST_CASE(llama3_pattern) {
    using enum tl::split_pattern;
    BOOST_TEST(split("IT'S 1234567", llama3) == (v{"IT", "'S", " ", "123", "456", "7"}));
    BOOST_TEST(split("x1y22z333w4444", llama3) == (v{"x", "1", "y", "22", "z", "333", "w", "444", "4"}));
    BOOST_TEST(split("«Фауст»\n\nГлава", llama3) == (v{"«Фауст", "»\n\n", "Глава"}));
}

// Every pattern on the test texts and some digit runs, as Hugging Face `tokenizers` cuts them with a Split
// pre-tokenizer of the pattern's regex (expected_splits.json, from make_reference.py).
BOOST_AUTO_TEST_CASE(splits_equal_hugging_face) {
    const nlohmann::json want = tl::test::read_json(tl::test::reference_dir() + "/expected_splits.json");
    std::vector<tl::test::test_text> texts = tl::test::test_texts();
    for (std::size_t i = 0; i < want["extra_texts"].size(); ++i)
        texts.push_back({"extra_" + std::to_string(i), want["extra_texts"][i].get<std::string>()});
    for (const auto& [name, pattern] :
         {std::pair{"gpt2", tl::split_pattern::gpt2}, std::pair{"qwen2", tl::split_pattern::qwen2},
          std::pair{"llama3", tl::split_pattern::llama3}})
        for (const auto& t : texts)
            BOOST_TEST(split(t.text, pattern) == want[name][t.name].get<v>(), name << " / " << t.name);
}

BOOST_AUTO_TEST_CASE(byte_level_map_round_trips) {
    const auto& m = tl::byte_level_map::get();
    std::string all;
    for (int b = 0; b < 256; ++b)
        all += static_cast<char>(b);
    std::string back;
    BOOST_TEST(m.decode(m.encode(all), back));
    BOOST_TEST(back == all);
    BOOST_TEST(m.encode(" ") == "\xC4\xA0"); // "Ġ"
}

BOOST_AUTO_TEST_CASE(utf8_validation) {
    using tl::unicode::find_invalid;
    BOOST_TEST(find_invalid("ok Привет 👋") == std::string_view::npos);
    BOOST_TEST(find_invalid("ab\xC0\x80") == 2u);       // overlong
    BOOST_TEST(find_invalid("\xED\xA0\x80") == 0u);     // surrogate
    BOOST_TEST(find_invalid("abc\xE2\x96") == 3u);      // truncated
    BOOST_TEST(find_invalid("\xF4\x90\x80\x80") == 0u); // above U+10FFFF
    BOOST_TEST(find_invalid(std::string_view("\x80", 1)) == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
