// data/stats.hpp and its plots (core/svg_plot.hpp): counts, words, histograms and the written report.
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/stats.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace tl::data;
namespace fs = std::filesystem;

BOOST_AUTO_TEST_SUITE(stats)

BOOST_AUTO_TEST_CASE(counts_words_sentences_and_scripts) {
    corpus_stats st;
    const std::string p = "Кто-то пришёл. Кто-то ушёл! За\u0301мок, Ok.";
    st.add(p, {std::string_view(p).substr(0, 25), std::string_view(p).substr(26)}, 0);
    st.add("Второй документ.", {"Второй документ."}, 1);
    BOOST_TEST(st.documents == 2u);
    BOOST_TEST(st.paragraphs == 2u);
    BOOST_TEST(st.sentences == 3u);
    BOOST_TEST(st.words == 8u);
    BOOST_TEST(st.word_counts.at("кто-то") == 2u);
    BOOST_TEST(st.word_counts.at("замок") == 1u); // the stress mark does not split the word
    BOOST_TEST(st.word_counts.at("ok") == 1u);
    BOOST_TEST(st.scripts.at("Latin") == 2u);
    BOOST_TEST(st.scripts.at("combining mark") == 1u);
    BOOST_TEST(st.top_words(1).front().first == "кто-то");
    BOOST_TEST(st.type_token_ratio() == 7.0 / 8.0);
}

BOOST_AUTO_TEST_CASE(report_files_are_written) {
    cleaner c;
    corpus_stats st;
    std::vector<record> recs;
    const auto kept = c.clean_texts({"Раз два три. Раз два.", "Hello.", "Четыре пять шесть семь."});
    for (std::size_t i = 0; i < kept.size(); ++i)
        st.add(kept[i], {kept[i]}, i);
    const fs::path dir = fs::temp_directory_path() / ("tinylm_report_" + std::to_string(::getpid()));
    write_report(dir, c.report(), st, "test report");
    for (const char* f : {"report.md", "report.json", "zipf.svg", "sentence_words.svg", "paragraph_chars.svg"})
        BOOST_TEST(fs::file_size(dir / f) > 100u);
    std::ifstream md(dir / "report.md");
    std::stringstream ss;
    ss << md.rdbuf();
    BOOST_TEST(ss.str().find("| alphabet (russian) | sentences | 4 | 0 | 1 |") != std::string::npos);
    BOOST_TEST(ss.str().find("[H U+0048] Hello.") != std::string::npos);
    const auto j = nlohmann::json::parse(std::ifstream(dir / "report.json"));
    BOOST_TEST(j["statistics"]["words"].get<int>() == 9);
    std::ifstream svg(dir / "zipf.svg");
    std::string first;
    std::getline(svg, first);
    BOOST_TEST(first.rfind("<svg", 0) == 0u);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(svg_log_axes_bars_and_escaped_text) {
    constexpr auto npos = std::string::npos;
    const auto count = [](const std::string& s, const std::string& what) {
        std::size_t n = 0;
        for (std::size_t at = 0; (at = s.find(what, at)) != npos; ++at)
            ++n;
        return n;
    };
    // Zipf-style log-log axes: ticks at powers of ten, the point at x = 0 left out.
    const std::string z = tl::svg_line_plot({{.name = "words", .x = {1, 10, 100, 0}, .y = {1000, 100, 10, 5}}},
                                            {.title = "a<b & \"c\"", .log_x = true, .log_y = true});
    BOOST_TEST(z.find("a&lt;b &amp; &quot;c&quot;") != npos);
    BOOST_TEST(z.find(">1000</text>") != npos);
    BOOST_TEST(z.find(">10</text>") != npos);
    BOOST_TEST(z.find("nan") == npos);
    BOOST_TEST(count(z, "<polyline") == 1u);
    // Bars: the background and one rectangle per bin.
    const std::string b = tl::svg_bar_plot({3, 0, 5}, 0, 10, {.title = "bars", .x_label = "words"});
    BOOST_TEST(b.rfind("<svg", 0) == 0u);
    BOOST_TEST(count(b, "<rect") == 4u);
    BOOST_TEST(b.find(">words</text>") != npos);
    BOOST_TEST(b.find("</svg>") == b.size() - 7);
}

BOOST_AUTO_TEST_SUITE_END()
