// WordPiece (BERT) tokenizers: ids identical to Hugging Face `tokenizers` on all-MiniLM-L6-v2's tokenizer.json
// (tests/reference/tokenizer/expected_wordpiece_minilm.json, made by make_wordpiece_reference.py), the model and
// truncation rules on small hand-made cases, and bad files.
#include "../support/errors.hpp"
#include "../support/models.hpp"
#include "tokenizer_test_util.hpp"
#include "wordpiece_parity.hpp"

#include <tinylm/tokenizer/wordpiece_json.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <functional>
#include <sstream>

BOOST_AUTO_TEST_SUITE(wordpiece)

namespace {

using tl_test::error_of;

std::string minilm_tokenizer() { return (tl_test::model_path("all-MiniLM-L6-v2") / "tokenizer.json").string(); }

// A small BERT-style file: the pieces of "unaffable" and a few words.
std::string small_wordpiece_json(const std::string& model_type = "WordPiece", const std::string& unk = "[UNK]") {
    return R"({"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [{"id": 0, "content": "[PAD]", "special": true, "normalized": false},
                  {"id": 1, "content": "[UNK]", "special": true, "normalized": false},
                  {"id": 2, "content": "[CLS]", "special": true, "normalized": false},
                  {"id": 3, "content": "[SEP]", "special": true, "normalized": false}],
 "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null,
                "lowercase": true},
 "pre_tokenizer": {"type": "BertPreTokenizer"},
 "post_processor": {"type": "TemplateProcessing",
   "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
   "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
            {"SpecialToken": {"id": "[SEP]", "type_id": 1}}]},
 "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
 "model": {"type": ")" +
           model_type + R"(", "unk_token": ")" + unk + R"(", "continuing_subword_prefix": "##",
   "max_input_chars_per_word": 12,
   "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "un": 4, "##aff": 5, "##able": 6, "aff": 7,
             "able": 8, "cafe": 9, ",": 10, "!": 11, "a": 12, "##a": 13, "unaffable": 14, "##ff": 15}}})";
}

void expect_error(const std::string& text, const std::string& what) {
    const std::string msg = error_of([&] { (void)tl::parse_wordpiece_json(text, "bert/tokenizer.json"); });
    BOOST_TEST(msg.find(what) != std::string::npos, "expected \"" << what << "\", got: " << msg);
    BOOST_TEST(msg.find("bert/tokenizer.json") != std::string::npos, "the message names the file: " << msg);
}

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
    const auto at = s.find(from);
    BOOST_REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
}

using ids = std::vector<tl::token_t>;

} // namespace

BOOST_AUTO_TEST_CASE(minilm_ids_match_hf, tl_test::needs_model("all-MiniLM-L6-v2")) {
    const auto tok = tl::load_wordpiece_json(minilm_tokenizer());
    BOOST_TEST(tok.vocab_size() == 30522u);
    BOOST_TEST((tl::tokenizer_json_kind(minilm_tokenizer()) == tl::tokenizer_kind::wordpiece));
    // The file's own truncation and padding are recorded, not applied.
    BOOST_TEST(tok.settings.truncation_max_length == 128u);
    BOOST_TEST(tok.settings.padding_fixed == 128u);
    const auto ref = tl::test::read_json(tl::test::reference_dir() + "/expected_wordpiece_minilm.json");
    std::ostringstream log;
    const auto n = tl::test::compare_wordpiece(tok, ref, log);
    BOOST_TEST(n.failed == 0, log.str());
    BOOST_TEST(n.checked > 3000);
    BOOST_TEST_MESSAGE("WordPiece: " << ref["texts"].size() << " texts, " << n.checked
                                     << " checks identical to Hugging Face tokenizers "
                                     << ref["tokenizers_version"].get<std::string>());

    // The comparison can fail: a cased normaliser gives other ids.
    auto cased = tok;
    cased.normalizer->lowercase = false;
    std::ostringstream ignored;
    BOOST_TEST(tl::test::compare_wordpiece(cased, ref, ignored).failed > 0);
}

BOOST_AUTO_TEST_CASE(minilm_saves_unchanged, tl_test::needs_model("all-MiniLM-L6-v2")) {
    const auto tok = tl::load_wordpiece_json(minilm_tokenizer());
    const auto dir = std::filesystem::temp_directory_path() / "tinylm_test_wordpiece_save";
    std::filesystem::create_directories(dir);
    const std::string out = (dir / "tokenizer.json").string();
    tl::save_wordpiece_json(tok, out);
    BOOST_TEST(tl::test::read_file(out) == tl::test::read_file(minilm_tokenizer()));
    const auto again = tl::load_wordpiece_json(out);
    BOOST_TEST(again.encode("Saved and loaded again.", true) == tok.encode("Saved and loaded again.", true));
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(greedy_longest_match_first) {
    const auto tok = tl::parse_wordpiece_json(small_wordpiece_json());
    BOOST_TEST(tok.encode("unaffable") == ids({14}));            // the whole word is a token
    BOOST_TEST(tok.encode("unaffablea") == ids({14, 13}));       // the longest first piece, then ##a
    BOOST_TEST(tok.encode("unaff") == ids({4, 5}));              // un ##aff
    BOOST_TEST(tok.encode("affable") == ids({7, 6}));            // aff ##able
    BOOST_TEST(tok.encode("affx") == ids({1}));                  // a piece matches nothing: one [UNK]
    BOOST_TEST(tok.encode("Café, AFF!") == ids({9, 10, 7, 11})); // lowercase, accents, punctuation
    // max_input_chars_per_word is 12 here: 12 characters are cut into pieces, 13 are one [UNK].
    ids twelve{12};
    twelve.insert(twelve.end(), 11, 13);
    BOOST_TEST(tok.encode(std::string(12, 'a')) == twelve);
    BOOST_TEST(tok.encode(std::string(13, 'a')) == ids({1}));
    BOOST_TEST(tok.encode("A\u00c1") == ids({12, 13})); // "aá" → "aa" → a ##a
    // Special tokens are matched in the raw text, before lowercasing.
    BOOST_TEST(tok.encode("[CLS]un[SEP]") == ids({2, 4, 3}));
    BOOST_TEST(tok.encode("[cls]").size() > 1u);
}

BOOST_AUTO_TEST_CASE(template_truncation_and_batches) {
    const auto tok = tl::parse_wordpiece_json(small_wordpiece_json());
    BOOST_TEST(tok.encode("un aff", true) == ids({2, 4, 7, 3}));
    const std::string_view b = "able";
    const auto pair = tok.encode_full("un aff", &b, true, 0);
    BOOST_TEST(pair.ids == ids({2, 4, 7, 3, 8, 3}));
    BOOST_TEST(pair.type_ids == ids({0, 0, 0, 0, 1, 1}));
    BOOST_TEST(!pair.truncated);

    // Longest first: the longer side is cut while it can absorb the cut, then both get half.
    BOOST_TEST((tl::longest_first(10, 2, 8) == std::pair<std::size_t, std::size_t>(6, 2)));
    BOOST_TEST((tl::longest_first(2, 10, 8) == std::pair<std::size_t, std::size_t>(2, 6)));
    BOOST_TEST((tl::longest_first(5, 6, 7) == std::pair<std::size_t, std::size_t>(3, 4)));
    BOOST_TEST((tl::longest_first(6, 5, 7) == std::pair<std::size_t, std::size_t>(4, 3)));
    BOOST_TEST((tl::longest_first(3, 3, 6) == std::pair<std::size_t, std::size_t>(3, 3)));
    BOOST_TEST((tl::longest_first(9, 9, 5) == std::pair<std::size_t, std::size_t>(2, 3)));

    // max_length counts the special tokens.
    const auto cut = tok.encode_full("un aff able cafe", nullptr, true, 4);
    BOOST_TEST(cut.ids == ids({2, 4, 7, 3}));
    BOOST_TEST(cut.truncated);
    BOOST_TEST(error_of([&] { (void)tok.encode_full("un", nullptr, true, 2); }).find("no room") != std::string::npos);

    const std::vector<std::string> texts = {"un", "un aff able cafe a a a", "", "cafe!"};
    const auto batch = tok.encode_batch(std::span<const std::string>(texts), 6);
    BOOST_TEST(batch.batch == 4u);
    BOOST_TEST(batch.time == 6u);
    BOOST_TEST(batch.n_truncated == 1u);
    BOOST_TEST(batch.lengths == std::vector<tl::index_t>({3, 6, 2, 4}));
    BOOST_TEST(batch.ids ==
               ids({2, 4, 3, 0, 0, 0, /**/ 2, 4, 7, 8, 9, 3, /**/ 2, 3, 0, 0, 0, 0, /**/ 2, 9, 11, 3, 0, 0}));
    BOOST_TEST((batch.ids_view().shape == tl::shape{4, 6}));
    BOOST_TEST(batch.lengths_view().numel() == 4);

    BOOST_TEST(tok.decode(tok.encode("Un affable, cafe!", true)) == "un affable, cafe!");
    BOOST_TEST(tok.decode(tok.encode("un", true), false) == "[CLS] un [SEP]");
}

BOOST_AUTO_TEST_CASE(bad_files_are_errors) {
    const std::string text = small_wordpiece_json();
    expect_error("{\"model\": ", "not valid JSON");
    expect_error(small_wordpiece_json("Unigram"), "model type Unigram is not supported; supported: BPE, WordPiece");
    expect_error(small_wordpiece_json("WordLevel"), "model type WordLevel is not supported");
    expect_error(small_wordpiece_json("BPE"), "load it with tl::load_tokenizer_json");
    expect_error(small_wordpiece_json("WordPiece", "[NOPE]"), "unk token \"[NOPE]\" is not in the vocabulary");
    expect_error(replace_once(text, "\"vocab\": {", "\"vocabulary\": {"), "no \"vocab\"");
    expect_error(replace_once(text, "\"BertPreTokenizer\"", "\"Whitespace\""), "pre_tokenizer type \"Whitespace\"");
    expect_error(replace_once(text, "\"BertNormalizer\"", "\"NFKC\""), "normalizer type \"NFKC\"");
    expect_error(replace_once(text, "\"type\": \"WordPiece\", \"prefix\"", "\"type\": \"Metaspace\", \"prefix\""),
                 "decoder type \"Metaspace\"");
    expect_error(replace_once(text, "\"##ff\": 15", "\"##ff\": 99"), "outside");
    expect_error(replace_once(text, "{\"SpecialToken\": {\"id\": \"[CLS]\"", "{\"SpecialToken\": {\"id\": \"[BOS]\""),
                 "special token [BOS] is not in the vocabulary");
    // The BPE loader points WordPiece files to their loader.
    const std::string bpe_msg = error_of([&] { (void)tl::parse_tokenizer_json(text, "bert/tokenizer.json"); });
    BOOST_TEST(bpe_msg.find("load_wordpiece_json") != std::string::npos, bpe_msg);
    BOOST_TEST(error_of([] { (void)tl::load_wordpiece_json("/nonexistent/tokenizer.json"); }).find("cannot open") !=
               std::string::npos);
    // Invalid UTF-8 input is refused.
    const auto tok = tl::parse_wordpiece_json(text);
    BOOST_TEST(error_of([&] { (void)tok.encode("caf\xC3"); }).find("invalid UTF-8") != std::string::npos);
    // A tokenizer built in memory has no file to write back.
    tl::wordpiece_tokenizer empty;
    BOOST_TEST(error_of([&] { tl::save_wordpiece_json(empty, "/tmp/x.json"); }).find("not loaded") !=
               std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
