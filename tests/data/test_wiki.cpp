// data/wiki.hpp: Wikipedia markup out of a fixture with every wiki40b marker and the plain-dump markup, alone and
// as the first stage of the cleaner (its counts in the report).
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/wiki.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

using namespace tl::data;

namespace {

std::string fixture() {
    std::ifstream in(TINYLM_SOURCE_DIR "/tests/data/fixtures/wiki_markup.txt", std::ios::binary);
    BOOST_TEST_REQUIRE(bool(in));
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

} // namespace

BOOST_AUTO_TEST_SUITE(wiki_markup)

// Worked out by hand from tests/data/fixtures/wiki_markup.txt: the article and section markers go with their
// title lines, the heading line "== Наследие ==" too; each _START_PARAGRAPH_ / _NEWLINE_ leaves one "\n" (beside
// the file's own line breaks around it); the
// {{sfn}} and the nested {{Infobox{{lang}}}} templates, both <ref>s (one with a template inside), the comment,
// [[Файл:...[[Болдино]]]] and [[Category:]] vanish; [[a|b]] -> b, [[a]] -> a, [url text] -> text; <br/> -> ' ';
// the quotes of '''Болдине''' and ''Повести Белкина'' go; nine entities decode, "&lt;ref&gt;" to text last.
BOOST_AUTO_TEST_CASE(every_marker) {
    std::string s = fixture();
    wiki_counts n;
    BOOST_TEST(clean_wiki_markup(s, n));
    const std::string want = "\n\n\nОсенью 1830 года «Пушкин» приехал в Болдино. Там он закончил Евгений Онегин.\n"
                             "Он писал & много работал\u00a0— каждый день.\n"
                             "\n\nВ Болдине написаны Повести Белкина. Текст ёлки ёж.\n"
                             "Село стало музеем. Подробнее на сайте музея. Строка дальше. Запись <ref> осталась "
                             "текстом.\n";
    BOOST_TEST(s == want);
    BOOST_TEST(n.articles == 1u);
    BOOST_TEST(n.sections == 2u); // _START_SECTION_ and "== Наследие =="
    BOOST_TEST(n.paragraphs == 2u);
    BOOST_TEST(n.newlines == 1u);
    BOOST_TEST(n.templates == 2u); // outermost only
    BOOST_TEST(n.links == 3u);     // two [[...]] and one [https://...]
    BOOST_TEST(n.media == 2u);
    BOOST_TEST(n.refs == 3u); // two <ref>s and the comment
    BOOST_TEST(n.tags == 1u);
    BOOST_TEST(n.emphasis == 4u);
    BOOST_TEST(n.entities == 9u);
    BOOST_TEST(n.total() == 30u);
    // Clean text stays as it is.
    wiki_counts none;
    std::string clean = "Обычный текст, без разметки: a_b, x = y, 'кавычки'.";
    BOOST_TEST(!clean_wiki_markup(clean, none));
    BOOST_TEST(none.total() == 0u);
}

BOOST_AUTO_TEST_CASE(unbalanced_and_unknown_markup_is_left_alone) {
    wiki_counts n;
    std::string s = "{{не закрыт [[и это &foo; &#xZZ; & конец";
    BOOST_TEST(!clean_wiki_markup(s, n));
    BOOST_TEST(n.total() == 0u);
    std::string label = "[[Пушкин|''Александр'' &amp; {{nbsp}}Пушкин]]";
    BOOST_TEST(clean_wiki_markup(label, n));
    BOOST_TEST(label == "Александр & Пушкин");
    BOOST_TEST(n.links == 1u);
    BOOST_TEST(n.emphasis == 2u);
    BOOST_TEST(n.templates == 1u);
    BOOST_TEST(n.entities == 1u);
}

// In the cleaner: the line breaks end sentences (the whitespace stage keeps them), the Latin sentence goes to
// the alphabet filter, and the report's wiki_markup stage counts every kind.
BOOST_AUTO_TEST_CASE(stage_in_the_cleaner) {
    clean_options opt;
    opt.wiki = true;
    opt.threads = 1;
    cleaner c(opt);
    vector_reader r({fixture(), "Статья без разметки."});
    std::vector<std::string> kept;
    c.run(r, [&](const clean_paragraph& p) { kept.push_back(p.text); });
    BOOST_TEST_REQUIRE(kept.size() == 2u);
    BOOST_TEST(kept[0] == "Осенью 1830 года «Пушкин» приехал в Болдино. Там он закончил Евгений Онегин. Он писал & "
                          "много работал — каждый день. В Болдине написаны Повести Белкина. Текст ёлки ёж. Село "
                          "стало музеем. Подробнее на сайте музея. Строка дальше.");
    const stage_stats* w = c.report().stage("wiki_markup");
    BOOST_TEST_REQUIRE(w != nullptr);
    BOOST_TEST(w->seen == 2u);
    BOOST_TEST(w->changed == 1u);
    BOOST_TEST(w->reasons.at("_START_ARTICLE_ (title line dropped)").count == 1u);
    BOOST_TEST(w->reasons.at("{{template}} removed").count == 2u);
    BOOST_TEST(w->reasons.at("HTML entity decoded").count == 9u);
    BOOST_TEST(c.report().stage("alphabet (russian)")->removed == 1u); // "Запись <ref> осталась текстом."
    // Off by default: the stage sees nothing.
    cleaner plain(clean_options{});
    plain.clean_texts({"[[a|б]]"});
    BOOST_TEST(plain.report().stage("wiki_markup")->seen == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
