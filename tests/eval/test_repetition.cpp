// eval/repetition.hpp: distinct-n, the repeated n-gram rate, the longest repeated span and the copied n-gram
// rate on hand-made texts whose values are worked out in the comments.
#include <tinylm/eval/repetition.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>

using namespace tl::eval;

namespace {

// "The cat sat on the mat.": the cat sat on the mat (6 words; "The" lower-cased).
//   1-grams 6, distinct 5 (the twice)             -> distinct-1 = 5/6
//   2-grams 5, all distinct                       -> distinct-2 = 1
//   3-grams 4, all distinct                       -> distinct-3 = 1
//   4-grams 3, none repeats                       -> repeated 4-gram rate = 0
//   longest run seen twice: "the"                 -> 1
const std::string cat = "The cat sat on the mat.";
// "Ля-ля, ля-ля, ля-ля!": ля x 6.
//   distinct-1 = 1/6, distinct-2 = 1/5, distinct-3 = 1/4
//   4-grams 3, the 2nd and 3rd repeat the 1st     -> 2/3
//   "ля ля ля ля ля" starts at words 0 and 1       -> 5 (overlap allowed)
const std::string la = "Ля-ля, ля-ля, ля-ля!";
// "Я помню чудное мгновенье. Я помню!": я помню чудное мгновенье я помню (6).
//   1-grams 6, distinct 4                          -> 4/6
//   2-grams 5 (я помню twice), distinct 4          -> 4/5
//   3-grams 4, distinct 4                          -> 1
//   4-grams 3, none repeats                        -> 0
//   longest: "я помню"                             -> 2
const std::string pushkin = "Я помню чудное мгновенье. Я помню!";

} // namespace

BOOST_AUTO_TEST_SUITE(repetition)

BOOST_AUTO_TEST_CASE(words_are_lower_cased_letter_and_digit_runs) {
    BOOST_TEST(words_of("Ёлки-палки, 2024 ГОД! naïve") ==
                   (std::vector<std::string>{"ёлки", "палки", "2024", "год", "naïve"}),
               boost::test_tools::per_element());
    BOOST_TEST(words_of(" ... ").empty());
}

BOOST_AUTO_TEST_CASE(per_text_values) {
    const auto c = analyse_repetition(cat);
    BOOST_TEST(c.words == 6u);
    BOOST_TEST(c.distinct[0] == 5.0 / 6.0);
    BOOST_TEST(c.distinct[1] == 1.0);
    BOOST_TEST(c.distinct[2] == 1.0);
    BOOST_TEST(c.repeated_ngram_rate == 0.0);
    BOOST_TEST(c.longest_repeat == 1u);
    BOOST_TEST(c.longest_repeat_text == "the");
    BOOST_TEST(std::isnan(c.copied_rate)); // no corpus index

    const auto l = analyse_repetition(la);
    BOOST_TEST(l.distinct[0] == 1.0 / 6.0);
    BOOST_TEST(l.distinct[1] == 1.0 / 5.0);
    BOOST_TEST(l.distinct[2] == 1.0 / 4.0);
    BOOST_TEST(l.repeated_ngram_rate == 2.0 / 3.0);
    BOOST_TEST(l.longest_repeat == 5u);
    BOOST_TEST(l.longest_repeat_text == "ля ля ля ля ля");

    const auto p = analyse_repetition(pushkin);
    BOOST_TEST(p.distinct[0] == 4.0 / 6.0);
    BOOST_TEST(p.distinct[1] == 4.0 / 5.0);
    BOOST_TEST(p.distinct[2] == 1.0);
    BOOST_TEST(p.repeated_ngram_rate == 0.0);
    BOOST_TEST(p.longest_repeat == 2u);
    BOOST_TEST(p.longest_repeat_text == "я помню");

    // With rep_n = 2: "я помню" is the 5th 2-gram and repeats the 1st -> 1/5.
    BOOST_TEST(analyse_repetition(pushkin, {.rep_n = 2, .copy_n = 8}).repeated_ngram_rate == 1.0 / 5.0);
}

// One word: distinct-1 = 1/1; no 2-, 3- or 4-grams, so those ratios are NaN (0/0), and nothing repeats.
BOOST_AUTO_TEST_CASE(texts_shorter_than_n) {
    const auto r = analyse_repetition("Ok.");
    BOOST_TEST(r.distinct[0] == 1.0);
    BOOST_TEST(std::isnan(r.distinct[1]));
    BOOST_TEST(std::isnan(r.distinct[2]));
    BOOST_TEST(std::isnan(r.repeated_ngram_rate));
    BOOST_TEST(r.longest_repeat == 0u);
    BOOST_TEST(analyse_repetition("").words == 0u);
}

// Pooled over cat, la, pushkin (18 words):
//   1-grams 18; distinct: 5 + 1 + 4 = 10 (no word is shared)     -> 10/18
//   2-grams 15; distinct: 5 + 1 + 4 = 10                          -> 10/15
//   3-grams 12; distinct: 4 + 1 + 4 = 9                           -> 9/12
//   4-grams 9; repeats 0 + 2 + 0                                  -> 2/9
//   longest span: 5, in text 1 (la)
// The same text twice pools to half the distinct share: 2-grams 10, distinct 5 -> 1/2.
BOOST_AUTO_TEST_CASE(pooled_over_texts) {
    const auto rep = analyse_repetition(std::vector<std::string>{cat, la, pushkin});
    BOOST_TEST_REQUIRE(rep.texts.size() == 3u);
    BOOST_TEST(rep.words == 18u);
    BOOST_TEST(rep.distinct[0] == 10.0 / 18.0);
    BOOST_TEST(rep.distinct[1] == 10.0 / 15.0);
    BOOST_TEST(rep.distinct[2] == 9.0 / 12.0);
    BOOST_TEST(rep.repeated_ngram_rate == 2.0 / 9.0);
    BOOST_TEST(rep.longest_repeat == 5u);
    BOOST_TEST(rep.longest_repeat_text_index == 1u);
    BOOST_TEST(rep.texts[2].distinct[1] == 4.0 / 5.0);
    BOOST_TEST(std::isnan(rep.copied_rate));
    const auto twice = analyse_repetition(std::vector<std::string>{cat, cat});
    BOOST_TEST(twice.distinct[1] == 0.5);
    BOOST_TEST(twice.texts[0].distinct[1] == 1.0); // each text alone repeats nothing
}

// Corpus: "Мой дядя самых честных правил," and "когда не в шутку занемог." as two texts (5 words each: 3 trigrams
// each, 6 distinct), the first added twice (9 added, still 6 distinct).
//   "Мой дядя самых честных людей": trigrams мой дядя самых (in), дядя самых честных (in), самых честных людей
//   (not)                                                          -> 2/3
//   "честных правил когда не": честных правил когда and правил когда не cross the two corpus texts, which
//   n-grams never do                                               -> 0/2
//   pooled                                                         -> 2/5
BOOST_AUTO_TEST_CASE(copied_ngrams_from_a_corpus) {
    ngram_index idx(3);
    idx.add("Мой дядя самых честных правил,");
    idx.add("когда не в шутку занемог.");
    idx.add("Мой дядя самых честных правил,");
    idx.finalize();
    BOOST_TEST(idx.total() == 9u);
    BOOST_TEST(idx.distinct() == 6u);
    const repetition_options opt{.rep_n = 4, .copy_n = 3};
    const auto a = analyse_repetition("Мой дядя самых честных людей", opt, &idx);
    BOOST_TEST(a.copied_rate == 2.0 / 3.0);
    const auto b = analyse_repetition("честных правил когда не", opt, &idx);
    BOOST_TEST(b.copied_rate == 0.0);
    BOOST_TEST(analyse_repetition("когда не в шутку занемог", opt, &idx).copied_rate == 1.0);
    const auto rep = analyse_repetition(
        std::vector<std::string>{"Мой дядя самых честных людей", "честных правил когда не"}, opt, &idx);
    BOOST_TEST(rep.copied_rate == 2.0 / 5.0);
    BOOST_CHECK_THROW(analyse_repetition("x", {.rep_n = 4, .copy_n = 8}, &idx), tl::error); // 3-gram index
    ngram_index open(2);
    BOOST_CHECK_THROW(open.contains(0), tl::error); // not finalised
}

// add_paragraphs: the same two lines of Pushkin as one paragraph over two lines (n-grams cross the line break),
// then as two paragraphs (a blank line, with spaces and a \r in it, between them: no n-gram crosses it).
//   one paragraph: 10 words, 8 trigrams, all distinct; "честных правил когда" is in the index
//   two paragraphs: 3 + 3 trigrams, "честных правил когда" is not
BOOST_AUTO_TEST_CASE(corpus_paragraphs_split_at_blank_lines) {
    const auto crossing = detail::ngram_hashes(detail::hashes_of(words_of("честных правил когда")), 3).front();
    ngram_index one(3);
    BOOST_TEST(one.add_paragraphs("Мой дядя самых честных правил,\nкогда не в шутку занемог.\n") == 1u);
    one.finalize();
    BOOST_TEST(one.total() == 8u);
    BOOST_TEST(one.contains(crossing));
    ngram_index two(3);
    BOOST_TEST(two.add_paragraphs("\nМой дядя самых честных правил,\n \r\n\nкогда не в шутку занемог.") == 2u);
    two.finalize();
    BOOST_TEST(two.total() == 6u);
    BOOST_TEST(!two.contains(crossing));
    ngram_index none(3);
    BOOST_TEST(none.add_paragraphs("\n\n  \n") == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
