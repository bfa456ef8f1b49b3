// Text as it is generated: the streaming detokenizer, stop strings, min-p sampling.
#include "../support/data.hpp"
#include "../support/errors.hpp"

#include <tinylm/core/utf8.hpp>
#include <tinylm/eval/sampling.hpp>
#include <tinylm/eval/stop_strings.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/stream_decoder.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

namespace {

const std::vector<std::string> texts = {
    "Жили-были старик со старухой у самого синего моря.",
    "Сәлам, дөнья! Татар теле — төрки телләрнең берсе; ә, ө, ү, җ, ң, һ.",
    "Emoji: 👋🏽 🇷🇺 👨‍👩‍👧 — and CJK 漢字, math ∑ ∞ ≠, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢.",
    "  leading spaces,\ttabs\nand new lines\n\n",
};

std::string tokenizer_path(const char* name) {
    return std::string(TINYLM_SOURCE_DIR) + "/tests/reference/tokenizer/" + name;
}

// At every prefix of the ids, the streamed text is valid UTF-8 and a prefix of the full decode; after finish()
// it equals the full decode (whenever that is valid UTF-8, which a prefix ending inside a character is not).
void check_streaming(const tl::tokenizer& tok, const std::string& text) {
    const std::vector<tl::token_t> ids = tok.encode(text);
    BOOST_TEST_REQUIRE(ids.size() > 3u);
    BOOST_TEST(tok.decode(ids) == text);
    for (std::size_t k = 0; k <= ids.size(); ++k) {
        tl::stream_decoder stream(tok);
        std::string shown;
        for (std::size_t i = 0; i < k; ++i) {
            const std::string piece = stream.push(ids[i]);
            BOOST_TEST_REQUIRE(tl::utf8::is_valid(piece));
            shown += piece;
        }
        const std::string full = tok.decode(std::span(ids).first(k));
        BOOST_TEST_REQUIRE(full.compare(0, shown.size(), shown) == 0, "prefix " << k << ": '" << shown << "'");
        shown += stream.finish();
        if (tl::utf8::is_valid(full)) BOOST_TEST_REQUIRE(shown == full, "prefix " << k);
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(text_stream)

BOOST_AUTO_TEST_CASE(byte_level_every_prefix) {
    const tl::tokenizer tok = tl::load_tokenizer_json(tokenizer_path("trained_byte_level.json"));
    for (const std::string& t : texts)
        check_streaming(tok, t);
}

BOOST_AUTO_TEST_CASE(byte_fallback_metaspace_every_prefix) { // "▁" to spaces, the leading space stripped once
    const tl::tokenizer tok = tl::load_tokenizer_json(tokenizer_path("trained_byte_fallback.json"));
    for (const std::string& t : texts)
        if (tok.decode(tok.encode(t)) == t) check_streaming(tok, t);
    const std::vector<tl::token_t> ids = tok.encode("Жили были");
    tl::stream_decoder stream(tok);
    std::string shown;
    for (tl::token_t id : ids)
        shown += stream.push(id);
    shown += stream.finish();
    BOOST_TEST(shown == tok.decode(ids));
    BOOST_TEST(shown.front() != ' ');
}

BOOST_AUTO_TEST_CASE(real_tokenizers_every_prefix, tl_test::needs_data("tokenizers/qwen3/tokenizer.json")) {
    for (const char* name : {"tokenizers/qwen3/tokenizer.json", "tokenizers/llama2/tokenizer.json"}) {
        const auto path = tl_test::data_path(name);
        if (path.empty()) continue;
        const tl::tokenizer tok = tl::load_tokenizer_json(path.string());
        for (const std::string& t : texts)
            if (tok.decode(tok.encode(t)) == t) check_streaming(tok, t);
    }
}

BOOST_AUTO_TEST_CASE(invalid_bytes_become_replacement_characters) {
    const tl::tokenizer tok = tl::load_tokenizer_json(tokenizer_path("trained_byte_level.json"));
    // Byte tokens: 0xD0 (a lead byte) then "A": the lead can never be completed.
    const tl::token_t lead = tok.model.byte_token(0xD0), a = tok.model.byte_token('A');
    BOOST_TEST_REQUIRE(lead >= 0);
    BOOST_TEST_REQUIRE(a >= 0);
    tl::stream_decoder stream(tok);
    BOOST_TEST(stream.push(lead) == ""); // could still become a character
    BOOST_TEST(stream.push(a) == "\xEF\xBF\xBD"
                                 "A");
    BOOST_TEST(stream.push(lead) == "");
    BOOST_TEST(stream.finish() == "\xEF\xBF\xBD");                    // the model ended inside a character
    BOOST_TEST(stream.push(tl::token_t(tok.vocab_size() + 5)) == ""); // past the tokenizer (a padded vocabulary)
}

BOOST_AUTO_TEST_CASE(incomplete_tail) {
    using tl::detail::incomplete_utf8_tail;
    BOOST_TEST(incomplete_utf8_tail("abc") == 0u);
    BOOST_TEST(incomplete_utf8_tail("a\xD0") == 1u);
    BOOST_TEST(incomplete_utf8_tail("a\xF0\x9F") == 2u);
    BOOST_TEST(incomplete_utf8_tail("a\xF0\x9F\x91") == 3u);
    BOOST_TEST(incomplete_utf8_tail("a\xF0\x9F\x91\x8B") == 0u); // 👋 complete
    BOOST_TEST(incomplete_utf8_tail("a\xE0\x80") == 0u);         // overlong: never valid
    BOOST_TEST(incomplete_utf8_tail("a\xED\xA0") == 0u);         // a surrogate: never valid
    BOOST_TEST(incomplete_utf8_tail("a\x80") == 0u);             // a stray continuation byte
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(stop_string_matching)

BOOST_AUTO_TEST_CASE(split_across_pieces) {
    tl::stop_strings stops({"User:", "\n\n"});
    std::string out;
    for (const char* piece : {"Hello", " there", "\nUs", "e", "r: more"}) {
        out += stops.feed(piece);
        if (stops.stopped()) break;
    }
    BOOST_TEST(stops.stopped());
    BOOST_TEST(out == "Hello there\n");
    BOOST_TEST(stops.flush() == "");
}

BOOST_AUTO_TEST_CASE(held_back_then_released) {
    tl::stop_strings stops({"STOP"});
    BOOST_TEST(stops.feed("abc ST") == "abc "); // "ST" may start STOP
    BOOST_TEST(stops.feed("AR") == "STAR");
    BOOST_TEST(stops.feed("S") == "");
    BOOST_TEST(stops.flush() == "S");
    BOOST_TEST(!stops.stopped());
}

BOOST_AUTO_TEST_CASE(first_of_several_and_errors) {
    tl::stop_strings stops({"b", "abc"});
    BOOST_TEST(stops.feed("xxabcd") == "xx"); // the one that starts first ("abc") wins
    BOOST_TEST(tl_test::error_of([] { tl::stop_strings bad({""}); }).find("empty") != std::string::npos);
    tl::stop_strings none;
    BOOST_TEST(none.feed("anything") == "anything");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(min_p_sampling)

BOOST_AUTO_TEST_CASE(drops_tokens_below_min_p_times_the_top) {
    // Probabilities proportional to 1, 0.5, 0.2, 0.05: min_p 0.3 keeps the first two only.
    const std::vector<float> logits = {0.0f, std::log(0.5f), std::log(0.2f), std::log(0.05f)};
    tl::sampler keep_two(4, {.temperature = 1.0, .seed = 3, .min_p = 0.3});
    tl::sampler all(4, {.temperature = 1.0, .seed = 3});
    std::vector<int> counts(4), counts_all(4);
    for (int i = 0; i < 4000; ++i) {
        ++counts[std::size_t(keep_two.sample(logits, {}))];
        ++counts_all[std::size_t(all.sample(logits, {}))];
    }
    BOOST_TEST(counts[2] == 0);
    BOOST_TEST(counts[3] == 0);
    BOOST_TEST(std::abs(counts[0] / 4000.0 - 2.0 / 3.0) < 0.03); // renormalised over the two kept
    BOOST_TEST(counts_all[2] > 200);                             // without min-p they are drawn
    BOOST_TEST(tl_test::error_of([] { tl::sampler bad(4, {.min_p = 1.5}); }).find("min_p") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
