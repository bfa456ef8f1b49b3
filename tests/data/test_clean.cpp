// Cleaning stages: NFC, whitespace, punctuation, sentence splitting, alphabet filter, language ID, dedup,
// and the pipeline's counts.
#include <tinylm/data/dedup.hpp>
#include <tinylm/data/filters.hpp>
#include <tinylm/data/langid.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/sentences.hpp>

#include <boost/test/unit_test.hpp>

#include <set>

using namespace tl::data;

namespace {
std::string norm_p(std::string s) {
    normalize_punctuation(s);
    return s;
}
std::vector<std::string> split(std::string_view s) {
    std::vector<std::string> out;
    for (auto v : split_sentences(s))
        out.emplace_back(v);
    return out;
}
} // namespace

BOOST_AUTO_TEST_SUITE(clean)

BOOST_AUTO_TEST_CASE(nfc_composes_and_fast_path_agrees) {
    std::string s = "e\u0301 и\u0306 ё"; // e + acute, и + breve (й decomposed), ё precomposed
    BOOST_TEST(to_nfc(s));
    BOOST_TEST(s == "\u00e9 й ё");
    BOOST_TEST(!to_nfc(s));
    // stress marks on Russian vowels have no precomposed form and stay
    std::string stress = "за\u0301мок";
    BOOST_TEST(!to_nfc(stress));
    // singletons outside the fast path are mapped: U+2126 OHM -> U+03A9, U+212B ANGSTROM -> U+00C5
    std::string sing = "\u2126 \u212B";
    BOOST_TEST(to_nfc(sing));
    BOOST_TEST(sing == "\u03A9 \u00C5");
    BOOST_TEST(nfc_trivially("Привет, мир — «ёлка» №5 …"));
}

BOOST_AUTO_TEST_CASE(whitespace) {
    std::string s = "  Один\u00A0\u00A0два\tтри\nчетыре\u200Bпять  ";
    BOOST_TEST(normalize_whitespace(s));
    BOOST_TEST(s == "Один два три четырепять");
    std::string k = "a \n\n b";
    normalize_whitespace(k, {.keep_newlines = true});
    BOOST_TEST(k == "a\nb");
}

BOOST_AUTO_TEST_CASE(punctuation) {
    BOOST_TEST(norm_p("Что?!!! Нет!!! Ну???") == "Что?! Нет! Ну?");
    BOOST_TEST(norm_p("Так… и вот.... Да..") == "Так... и вот... Да..");
    BOOST_TEST(norm_p("Он сказал: \"Привет\" и „пока“ и “да”.") == "Он сказал: «Привет» и «пока» и «да».");
    BOOST_TEST(norm_p("Москва - столица -- да; - Иди!") == "Москва — столица — да; — Иди!");
    BOOST_TEST(norm_p("- Да, - сказал он.") == "— Да, — сказал он.");
    BOOST_TEST(norm_p("северо-запад") == "северо-запад");
    BOOST_TEST(norm_p("Слово , слово ! ( скобки ) « кавычки »") == "Слово, слово! (скобки) «кавычки»");
    BOOST_TEST(norm_p("Да,, да") == "Да, да");
    BOOST_TEST(norm_p("кто#нибудь, #1, C# и ##") == "кто-нибудь, #1, C# и ##");
    punctuation_options ascii;
    ascii.quotes = quote_style::ascii;
    std::string q = "«Ёлка»";
    normalize_punctuation(q, ascii);
    BOOST_TEST(q == "\"Ёлка\"");
}

BOOST_AUTO_TEST_CASE(sentence_splitter_knows_russian_abbreviations_and_initials) {
    BOOST_TEST(split("Он пришёл. Она ушла! Кто там? «Я», — ответил он.") ==
                   (std::vector<std::string>{"Он пришёл.", "Она ушла!", "Кто там?", "«Я», — ответил он."}),
               boost::test_tools::per_element());
    BOOST_TEST(split("А. С. Пушкин родился в Москве. Л.Н. Толстой тоже.").size() == 2u);
    BOOST_TEST(split("Это было, т. е. почти было. Дальше.").size() == 2u);
    BOOST_TEST(split("Жил на ул. Ленина, им. Горького, см. Рис. 5. Конец.").size() == 2u);
    BOOST_TEST(split("Яблоки, груши и т. д. Потом ещё.").size() == 2u);
    BOOST_TEST(split("Проф. Преображенский вошёл.").size() == 1u);
    BOOST_TEST(split("— Иди! — сказал он. — Иди! — Он ушёл.") ==
                   (std::vector<std::string>{"— Иди! — сказал он.", "— Иди!", "— Он ушёл."}),
               boost::test_tools::per_element());
    BOOST_TEST(split("Ну... и что? А ничего... Совсем.").size() == 3u);
    BOOST_TEST(split("Он родился в 1799 г. В Москве.").size() == 2u);
    BOOST_TEST(split("").empty());
}

BOOST_AUTO_TEST_CASE(alphabets) {
    const auto ru = alphabet::russian();
    BOOST_TEST(!ru.first_foreign_letter("Ёжик в тумане, 1975 год — «мультфильм»!").has_value());
    BOOST_TEST((*ru.first_foreign_letter("Глава XII") == char32_t('X')));
    BOOST_TEST((*ru.first_foreign_letter("café") == char32_t('c')));
    BOOST_TEST((*ru.first_foreign_letter("Тәрҗемә") == U'ә'));
    BOOST_TEST((*ru.first_foreign_letter("бѣлый") == U'ѣ'));
    BOOST_TEST(!ru.first_foreign_letter("за\u0301мок").has_value()); // a combining stress mark is not a letter
    const auto tt = alphabet::tatar();
    BOOST_TEST(!tt.first_foreign_letter("Тәрҗемә, Өй, Үрдәк, Ңа, Һава").has_value());
    BOOST_TEST(tt.first_foreign_letter("Hello").has_value());
    BOOST_TEST(alphabet::any().allows_all());
    BOOST_CHECK_THROW(alphabet::preset("klingon"), tl::error);
}

BOOST_AUTO_TEST_CASE(langid_separates_two_languages_from_little_text) {
    ngram_langid id;
    id.train("ru", "Это пример русского текста. Мы живём в большом городе и любим читать книги по вечерам.");
    id.train("tt", "Бу татар теленең мисалы. Без зур шәһәрдә яшибез һәм кичләрен китап укырга яратабыз.");
    BOOST_TEST(id.classify("Мы любим читать").lang == "ru");
    BOOST_TEST(id.classify("Без китап укыйбыз").lang == "tt");
    BOOST_TEST(id.classify("123 !!!").lang.empty());
}

BOOST_AUTO_TEST_CASE(dedup_exact_and_near) {
    deduplicator d;
    const std::string a = "Весь день шёл дождь, и мы сидели дома, читали вслух старые письма и пили чай с вареньем.";
    const std::string a_exact =
        "ВЕСЬ день шёл дождь — и мы сидели дома; читали вслух старые письма и пили чай с вареньем!";
    const std::string a_near =
        "Весь день шёл дождь, и мы сидели дома, читали вслух старые письма и пили чай с малиной.";
    const std::string b = "Утром выпал первый снег, и дети выбежали во двор лепить снеговика и кататься на санках.";
    BOOST_TEST((d.check_and_add(d.prepare(a), 0).what == deduplicator::verdict::keep));
    BOOST_TEST((d.check_and_add(d.prepare(b), 1).what == deduplicator::verdict::keep));
    const auto e = d.check_and_add(d.prepare(a_exact), 2);
    BOOST_TEST((e.what == deduplicator::verdict::exact_duplicate));
    BOOST_TEST(e.other == 0u);
    const auto n = d.check_and_add(d.prepare(a_near), 3);
    BOOST_TEST((n.what == deduplicator::verdict::near_duplicate));
    BOOST_TEST(n.similarity >= d.options().threshold);
    BOOST_TEST_MESSAGE("near duplicate similarity " << n.similarity);
    // short texts are never duplicates
    BOOST_TEST((d.check_and_add(d.prepare("— Да."), 4).what == deduplicator::verdict::keep));
    BOOST_TEST((d.check_and_add(d.prepare("— Да."), 5).what == deduplicator::verdict::keep));
}

BOOST_AUTO_TEST_CASE(pipeline_counts_each_stage_with_examples) {
    clean_options opt;
    opt.threads = 2;
    cleaner c(opt);
    const std::vector<std::string> texts{
        "Он  вошёл в комнату!!! Там было темно... Глава XII началась.",
        "Это совершенно обычный абзац, в котором нет ничего особенного, кроме длины и нескольких слов. Его вторая "
        "фраза нужна, чтобы одна замена слова меняла мало шинглов.",
        "Это совершенно обычный абзац, в котором нет ничего особенного, кроме длины и нескольких слов. Его вторая "
        "фраза нужна, чтобы одна замена слова меняла мало шинглов.",
        "Это совершенно обычный абзац, в котором нет ничего особенного, кроме длины и некоторых слов. Его вторая фраза "
        "нужна, чтобы одна замена слова меняла мало шинглов.",
        "* * *",
        "Hello world.",
    };
    const auto out = c.clean_texts(texts);
    for (const auto& o : out)
        BOOST_TEST_MESSAGE("kept: " << o);
    BOOST_TEST_REQUIRE(out.size() == 2u);
    BOOST_TEST(out[0] == "Он вошёл в комнату! Там было темно...");
    const auto& rep = c.report();
    BOOST_TEST(rep.stage("alphabet (russian)")->removed == 2u); // "Глава XII началась.", "Hello world."
    BOOST_TEST(rep.stage("alphabet (russian)")->reasons.begin()->second.examples.front() ==
               "[X U+0058] Глава XII началась.");
    BOOST_TEST(rep.stage("length")->removed == 1u); // "* * *"
    BOOST_TEST(rep.stage("exact_dedup")->removed == 1u);
    BOOST_TEST(rep.stage("near_dedup")->removed == 1u);
    BOOST_TEST(rep.stage("empty_paragraphs")->removed == 2u);
    BOOST_TEST(rep.stage("whitespace")->changed == 1u);
    BOOST_TEST(rep.stage("punctuation")->changed == 1u);
    BOOST_TEST(rep.paragraphs_in == 6u);
    BOOST_TEST(rep.paragraphs_out == 2u);

    // the same output for 1 and 2 threads
    opt.threads = 1;
    cleaner c1(opt);
    BOOST_TEST(c1.clean_texts(texts) == out, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(language_filter_in_the_pipeline) {
    ngram_langid id;
    id.train("ru", "Это пример русского текста. Мы живём в большом городе и любим читать книги по вечерам.");
    id.train("tt", "Бу татар теленең мисалы. Без зур шәһәрдә яшибез һәм кичләрен китап укырга яратабыз.");
    clean_options opt;
    opt.allowed = alphabet::tatar();
    opt.langid = &id;
    opt.keep_languages = {"tt"};
    cleaner c(opt);
    const auto out = c.clean_texts({"Без китап укырга яратабыз. Мы любим читать книги."});
    BOOST_TEST_REQUIRE(out.size() == 1u);
    BOOST_TEST(out[0] == "Без китап укырга яратабыз.");
    BOOST_TEST(c.report().stage("language")->reasons.count("identified as ru") == 1u);
    clean_options bad;
    bad.langid = &id;
    BOOST_CHECK_THROW(cleaner{bad}, tl::error);
}

BOOST_AUTO_TEST_SUITE_END()

// The language-ID bar on real data: NTREX-128 Tatar and Russian are line-aligned translations of the same
// 1,997 news sentences. Train on lines 1-1000 of each, evaluate on the held-out lines 1001-1997.
#include "../support/data.hpp"

BOOST_AUTO_TEST_SUITE(clean)

BOOST_AUTO_TEST_CASE(langid_keeps_tatar_and_drops_russian_on_ntrex,
                     tl_test::needs_data("tatar/ntrex128.tat.txt", "tatar/ntrex128.rus.txt")) {
    const auto tat = tl_test::data_path("tatar/ntrex128.tat.txt");
    const auto rus = tl_test::data_path("tatar/ntrex128.rus.txt");
    const auto lines = [](const std::filesystem::path& p) {
        text_reader r({p}, {.mode = paragraph_mode::line});
        std::vector<std::string> out;
        record rec;
        while (r.next(rec))
            out.push_back(rec.text);
        return out;
    };
    const auto tt = lines(tat), ru = lines(rus);
    BOOST_TEST_REQUIRE(tt.size() == 1997u);
    BOOST_TEST_REQUIRE(ru.size() == 1997u);
    ngram_langid id;
    for (std::size_t i = 0; i < 1000; ++i)
        id.train("tt", tt[i]), id.train("ru", ru[i]);
    std::size_t tt_kept = 0, ru_dropped = 0, n = 0;
    for (std::size_t i = 1000; i < tt.size(); ++i, ++n) {
        tt_kept += id.classify(tt[i]).lang == "tt";
        ru_dropped += id.classify(ru[i]).lang == "ru";
    }
    const double keep = double(tt_kept) / double(n), drop = double(ru_dropped) / double(n);
    BOOST_TEST_MESSAGE("langid on held-out NTREX lines 1001-1997 (" << n << " each): Tatar kept " << tt_kept << " ("
                                                                    << keep * 100 << "%), Russian dropped "
                                                                    << ru_dropped << " (" << drop * 100 << "%)");
    BOOST_TEST(keep >= 0.98);
    BOOST_TEST(drop >= 0.98);

    // The same through the pipeline, one line per paragraph, a mixed sample (Tatar and Russian alternating);
    // no alphabet filter (some lines hold Latin names such as "MWP"), so only the language stage decides.
    clean_options opt;
    opt.allowed = alphabet::any();
    opt.split = false;
    opt.min_letters = 0;
    opt.dedup.exact = opt.dedup.near = false;
    opt.langid = &id;
    opt.keep_languages = {"tt"};
    cleaner c(opt);
    std::vector<std::string> texts;
    for (std::size_t i = 1000; i < tt.size(); ++i)
        texts.push_back(tt[i]), texts.push_back(ru[i]);
    std::size_t kept_tt = 0, kept_ru = 0;
    vector_reader mixed_reader(texts);
    c.run(mixed_reader, [&](const clean_paragraph& p) { (p.doc % 2 == 0 ? kept_tt : kept_ru) += 1; });
    BOOST_TEST_MESSAGE("pipeline on the mixed sample: kept " << kept_tt << " of " << n << " Tatar lines, " << kept_ru
                                                             << " of " << n << " Russian lines");
    BOOST_TEST(double(kept_tt) >= 0.98 * double(n));
    BOOST_TEST(double(n - kept_ru) >= 0.98 * double(n));
}

BOOST_AUTO_TEST_SUITE_END()
