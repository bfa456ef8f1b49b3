// Bad input gives a clear tl::error, never a crash: truncated and malformed tokenizer.json, invalid UTF-8,
// unknown ids. And decode(encode(s)) == s on random strings for every tokenizer style.
#include "../support/errors.hpp"
#include "tokenizer_test_util.hpp"

#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <random>
#include <string>

namespace {

using tl_test::error_of;

std::string small_json() { return tl::test::read_file(tl::test::reference_dir() + "/trained_byte_level.json"); }

void expect_json_error(const std::string& text, const std::string& needle) {
    const std::string msg = error_of([&] { tl::parse_tokenizer_json(text, "bad.json"); });
    BOOST_TEST(msg.find("tokenizer.json bad.json") != std::string::npos, "message names the file: " << msg);
    BOOST_TEST(msg.find(needle) != std::string::npos, "message \"" << msg << "\" lacks \"" << needle << "\"");
}

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
    const auto at = s.find(from);
    BOOST_REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
}

// Random valid UTF-8 from a mix of scripts, spaces, digits, emoji and combining marks.
std::string random_text(std::mt19937_64& rng, bool allow_metaspace) {
    static const std::vector<std::pair<char32_t, char32_t>> ranges = {
        {0x20, 0x3B},     {0x3D, 0x7E},       {0x09, 0x0D},     {0xA0, 0x17F},    {0x300, 0x36F},      {0x400, 0x4FF},
        {0x4E00, 0x4FFF}, {0x1F300, 0x1F6FF}, {0x2000, 0x206F}, {0x3000, 0x303F}, {0x10000, 0x10FFFF}, {0x0, 0x8}};
    std::uniform_int_distribution<std::size_t> len(0, 60), pick(0, ranges.size() - 1);
    std::string s;
    for (std::size_t n = len(rng); n > 0; --n) {
        const auto [lo, hi] = ranges[pick(rng)];
        char32_t c = std::uniform_int_distribution<char32_t>(lo, hi)(rng);
        if ((c >= 0xD800 && c <= 0xDFFF) || (!allow_metaspace && c == 0x2581)) c = 'x';
        tl::unicode::append_utf8(s, c);
    }
    return s;
}

void round_trips(const tl::tokenizer& tok, const std::string& name, bool metaspace) {
    std::mt19937_64 rng(7);
    int failures = 0;
    for (int i = 0; i < 400; ++i) {
        const std::string s = random_text(rng, !metaspace);
        const std::string want = tok.norm.nfc ? tl::unicode::nfc(s) : s;
        const std::string got = tok.decode(tok.encode(s));
        if (got != want && ++failures <= 3)
            BOOST_ERROR(name << ": round trip fails on a random string of " << s.size() << " bytes");
    }
    // Random bytes: valid UTF-8 round-trips, anything else is refused with the offset.
    for (int i = 0; i < 400; ++i) {
        std::string s(std::uniform_int_distribution<std::size_t>(0, 12)(rng), '\0');
        for (char& ch : s)
            ch = static_cast<char>(rng() & 0xFF);
        if (tl::unicode::find_invalid(s) == std::string::npos) {
            const std::string want = tok.norm.nfc ? tl::unicode::nfc(s) : s;
            if (s.find("\xE2\x96\x81") == std::string::npos || !metaspace)
                BOOST_TEST(tok.decode(tok.encode(s)) == want);
        } else {
            BOOST_TEST(error_of([&] { (void)tok.encode(s); }).find("invalid UTF-8") != std::string::npos);
        }
    }
    BOOST_TEST(failures == 0, name << ": " << failures << " of 400 random strings fail to round-trip");
}

} // namespace

BOOST_AUTO_TEST_SUITE(bad_input)

BOOST_AUTO_TEST_CASE(truncated_json_is_an_error) {
    const std::string text = small_json();
    for (std::size_t k = 0; k < 40; ++k) {
        const std::size_t cut = text.size() * k / 40;
        expect_json_error(text.substr(0, cut), "not valid JSON");
    }
}

BOOST_AUTO_TEST_CASE(malformed_json_is_an_error) {
    const std::string text = small_json();
    expect_json_error("[1, 2]", "not an object");
    expect_json_error("{}", "no \"model\"");
    expect_json_error(replace_once(text, "\"type\": \"BPE\"", "\"type\": \"Unigram\""),
                      "model type Unigram is not supported; supported: BPE, WordPiece");
    expect_json_error(replace_once(text, "\"!\": 36", "\"!\": \"four\""), "not an integer");
    expect_json_error(replace_once(text, "\"!\": 36", "\"!\": 4000000"), "outside");
    expect_json_error(replace_once(text, "\"!\": 36", "\"!\": 5"), "used twice");
    expect_json_error(replace_once(text, "\"merges\": [", "\"merges\": [[\"zz\", \"q\"], "), "not in the vocabulary");
    expect_json_error(replace_once(text, "\"merges\": [", "\"merges\": [\"ab\", "), "two tokens");
    expect_json_error(replace_once(text, "\"merges\": [", "\"merges\": [7, "), "neither");
    expect_json_error(replace_once(text, "\"type\": \"NFC\"", "\"type\": \"NFKD\""), "normalizer type \"NFKD\"");
    expect_json_error(replace_once(text, "\"behavior\": \"Isolated\"", "\"behavior\": \"Removed\""), "Isolated");
    expect_json_error(replace_once(text, "\"Regex\": \"", "\"Regex\": \"x|"), "not one tinylm implements");
    expect_json_error(replace_once(text, "\"id\": 0,", "\"id\": -3,"), "out of range");
    const std::string load_missing = error_of([] { tl::load_tokenizer_json("/nonexistent/tokenizer.json"); });
    BOOST_TEST(load_missing.find("cannot open") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(mutated_json_never_crashes) {
    const std::string text = small_json();
    std::mt19937_64 rng(3);
    int loaded = 0;
    for (int i = 0; i < 300; ++i) {
        std::string s = text;
        for (int k = 0; k < 3; ++k)
            s[rng() % s.size()] = static_cast<char>(rng() & 0xFF);
        try {
            const tl::tokenizer tok = tl::parse_tokenizer_json(s, "mutated.json");
            (void)tok.decode(tok.encode("Привет, мир! Hello 123"));
            ++loaded;
        } catch (const tl::error&) {
        }
    }
    BOOST_TEST_MESSAGE(loaded << " of 300 mutated files still loaded; the rest gave tl::error");
}

BOOST_AUTO_TEST_CASE(invalid_utf8_and_unknown_ids) {
    const tl::tokenizer tok = tl::parse_tokenizer_json(small_json());
    const std::string msg = error_of([&] { (void)tok.encode("ok \xD0"); });
    BOOST_TEST(msg.find("invalid UTF-8 at byte 3") != std::string::npos, msg);
    const std::vector<tl::token_t> bad{5, 70000};
    BOOST_TEST(error_of([&] { (void)tok.decode(bad); }).find("token id 70000 is outside the vocabulary") !=
               std::string::npos);
    const std::vector<tl::token_t> negative{-1};
    BOOST_TEST(error_of([&] { (void)tok.decode(negative); }).find("token id -1") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(round_trip)

BOOST_AUTO_TEST_CASE(trained_tokenizers_round_trip_random_strings) {
    round_trips(tl::load_tokenizer_json(tl::test::reference_dir() + "/trained_byte_level.json"), "trained byte-level",
                false);
    round_trips(tl::load_tokenizer_json(tl::test::reference_dir() + "/trained_byte_fallback.json"),
                "trained byte-fallback", true);
}

BOOST_AUTO_TEST_CASE(real_tokenizers_round_trip_random_strings,
                     tl_test::needs_data(tl::test::real_tokenizer_file("qwen3"),
                                         tl::test::real_tokenizer_file("llama2"))) {
    for (const char* name : {"qwen3", "llama2"}) {
        const std::string path = tl::test::real_tokenizer(name);
        round_trips(tl::load_tokenizer_json(path), name, std::string(name) == "llama2");
    }
}

BOOST_AUTO_TEST_CASE(writer_round_trips_real_files, tl_test::needs_data(tl::test::real_tokenizer_file("qwen3"),
                                                                        tl::test::real_tokenizer_file("llama2"))) {
    // What tinylm writes for a real file reads back to the same ids.
    for (const char* name : {"qwen3", "llama2"}) {
        const std::string path = tl::test::real_tokenizer(name);
        const tl::tokenizer a = tl::load_tokenizer_json(path);
        const tl::tokenizer b = tl::parse_tokenizer_json(tl::to_tokenizer_json(a), "rewritten");
        for (const auto& t : tl::test::test_texts())
            BOOST_TEST(
                (a.encode(t.text, {.add_special_tokens = true}) == b.encode(t.text, {.add_special_tokens = true})),
                name << " / " << t.name << ": ids change after write + read");
    }
}

BOOST_AUTO_TEST_SUITE_END()
