// Tests of the fine-tuning recipes' own pieces (examples 07 and 08): the plain-text chat format for models
// without chat tokens, the held-out split, the fortune(6) reader, and 08's system message and data histograms.
#include "jokes_data.hpp"
#include "sft_recipe.hpp"

#include <tinylm/tokenizer/bpe_trainer.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <unistd.h>

namespace {

// A byte-level BPE with <bos>/<eos>/<pad>, as examples/04_russian_novels trains for our model.
const tl::tokenizer& russian_tok() {
    static const tl::tokenizer t = [] {
        tl::bpe_trainer_options opt;
        opt.vocab_size = 400;
        opt.special_tokens = {"<bos>", "<eos>", "<pad>"};
        opt.n_threads = 1;
        tl::bpe_trainer trainer(opt);
        for (int i = 0; i < 4; ++i)
            trainer.feed("Расскажи анекдот про врачей. Приходит мужик к врачу. Доктор, у меня болит голова! "
                         "### Вопрос: ### Ответ: Сколько будет два плюс два? Четыре. ");
        return trainer.train();
    }();
    return t;
}

tl::hf_folder folder_without_chat_tokens() {
    tl::hf_folder f;
    f.tokenizer = russian_tok();
    f.generation.eos_token_ids = {russian_tok().token_to_id("<eos>")};
    return f;
}

} // namespace

BOOST_AUTO_TEST_SUITE(recipes)

BOOST_AUTO_TEST_CASE(plain_chat_format_labels_replies_and_eos_only) {
    const tl::tokenizer& tok = russian_tok();
    const recipe::chat_format fmt = recipe::pick_chat_format(folder_without_chat_tokens(), "auto");
    BOOST_TEST(fmt.name == "plain");
    const tl::token_t eos = tok.token_to_id("<eos>");
    BOOST_TEST(fmt.stop == std::vector<tl::token_t>{eos});

    const tl::data::conversation c{{{"system", "Ты врач."},
                                    {"user", "Расскажи анекдот про врачей"},
                                    {"assistant", "Приходит мужик к врачу."},
                                    {"user", "Сколько будет два плюс два?"},
                                    {"assistant", "Четыре."}},
                                   "test"};
    const std::string text = fmt.tmpl.render(c.to_json());
    BOOST_TEST(text == "<bos>Ты врач.\n\n### Вопрос:\nРасскажи анекдот про врачей\n\n### Ответ:\nПриходит мужик к "
                       "врачу.<eos>\n\n### Вопрос:\nСколько будет два плюс два?\n\n### Ответ:\nЧетыре.<eos>\n\n");
    const auto prompt = fmt.tmpl.render(nlohmann::ordered_json::array({{{"role", "user"}, {"content", "Привет"}}}),
                                        {.add_generation_prompt = true});
    BOOST_TEST(prompt == "<bos>### Вопрос:\nПривет\n\n### Ответ:\n");

    const auto ex = tl::data::tokenize_conversation(tok, fmt.tmpl, c);
    BOOST_TEST(ex.ids.front() == tok.token_to_id("<bos>")); // the special token, not its letters
    const auto runs = tl::data::labelled_runs(ex.labels);
    BOOST_TEST_REQUIRE(runs.size() == 2u);
    const std::vector<std::string> replies = {"Приходит мужик к врачу.<eos>", "Четыре.<eos>"};
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const std::vector<tl::token_t> run(ex.ids.begin() + long(runs[i].first), ex.ids.begin() + long(runs[i].second));
        BOOST_TEST(tok.decode(run) == replies[i]);
        BOOST_TEST(run.back() == eos);
    }
}

BOOST_AUTO_TEST_CASE(hold_out_is_a_seeded_partition) {
    std::vector<tl::data::conversation> all;
    for (int i = 0; i < 50; ++i)
        all.push_back({{{"user", "q"}, {"assistant", std::to_string(i)}}, std::to_string(i)});
    const auto a = recipe::hold_out(all, 10, 3), b = recipe::hold_out(all, 10, 3), c = recipe::hold_out(all, 10, 4);
    BOOST_TEST(a.val.size() == 10u);
    BOOST_TEST(a.train.size() == 40u);
    std::set<std::string> seen;
    for (const auto* part : {&a.train, &a.val})
        for (const auto& conv : *part)
            seen.insert(conv.source);
    BOOST_TEST(seen.size() == 50u); // nothing lost, nothing twice
    auto sources = [](const std::vector<tl::data::conversation>& v) {
        std::vector<std::string> s;
        for (const auto& conv : v)
            s.push_back(conv.source);
        return s;
    };
    BOOST_TEST(sources(a.val) == sources(b.val));
    BOOST_TEST(sources(a.val) != sources(c.val));
    BOOST_TEST(recipe::hold_out(all, 40, 3).val.size() == 25u); // never more than half
}

BOOST_AUTO_TEST_CASE(fortune_files) {
    const auto dir = std::filesystem::temp_directory_path() / "tinylm_test_recipes_fortunes";
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    {
        std::ofstream(dir / "programming", std::ios::binary)
            << "Первая шутка\nв две строки.\r\n%\r\nВторая.\n\t\t-- Автор\n%\n\n%\nТретья без конца";
        std::ofstream(dir / "other", std::ios::binary) << "Разное.\n%\n" << std::string("\xff\xfe") << "\n%\n";
        std::ofstream(dir / "programming.dat", std::ios::binary) << "index";
        std::ofstream(dir / "sex", std::ios::binary) << "Не берём.\n%\n";
    }
    const auto convs = jokes::read_fortunes(dir, 600);
    BOOST_TEST_REQUIRE(convs.size() == 4u); // files in name order; the empty and the non-UTF-8 entries left out
    BOOST_TEST(convs[0].messages[0].content == "Расскажи анекдот.");
    BOOST_TEST(convs[0].messages[1].content == "Разное.");
    BOOST_TEST(convs[1].messages[0].content == "Расскажи анекдот про программистов");
    BOOST_TEST(convs[1].messages[1].content == "Первая шутка\nв две строки.");
    BOOST_TEST(convs[2].messages[1].content == "Вторая."); // attribution dropped
    BOOST_TEST(convs[3].messages[1].content == "Третья без конца");
    BOOST_TEST(convs[2].source == (dir / "programming").string() + ":4");
    BOOST_TEST(jokes::read_fortunes(dir, 14).size() == 2u); // longer than 14 bytes: left out
    std::filesystem::remove_all(dir);
}

// The assignment's system message goes first where there is none; a conversation with its own keeps it.
BOOST_AUTO_TEST_CASE(system_message_for_jokes) {
    std::vector<tl::data::conversation> convs = {
        {{{"user", "Расскажи анекдот."}, {"assistant", "Шутка."}}, "a"},
        {{{"system", "Своё."}, {"user", "Ещё."}, {"assistant", "Вторая."}}, "b"}};
    jokes::add_system_message(convs, jokes::default_system);
    BOOST_TEST(convs[0].messages.size() == 3u);
    BOOST_TEST(convs[0].messages[0].role == "system");
    BOOST_TEST(convs[0].messages[0].content ==
               "Ты ассистент, который рассказывает короткие смешные анекдоты на русском языке.");
    BOOST_TEST(convs[1].messages[0].content == "Своё.");
    BOOST_TEST(convs[1].messages.size() == 3u);
    jokes::add_system_message(convs, ""); // --system '': nothing added
    BOOST_TEST(convs[0].messages.size() == 3u);
}

// Scores 1.0, 2.4, 2.5, 3.0, 4.9, 5.0 in the bins [1, 2.5), [2.5, 4), [4, 5]: 2, 2, 2 (5.0 in the closed last bin);
// 0.5 falls outside every bin. After keeping >= 3.0: 0, 1, 2.
BOOST_AUTO_TEST_CASE(histograms_before_and_after) {
    const std::vector<double> edges = {1.0, 2.5, 4.0, 5.0};
    const std::vector<double> before = {1.0, 2.4, 2.5, 3.0, 4.9, 5.0, 0.5}, after = {3.0, 4.9, 5.0};
    BOOST_TEST(jokes::bin_counts(before, edges) == (std::vector<std::size_t>{2, 2, 2}),
               boost::test_tools::per_element());
    BOOST_TEST(jokes::bin_counts(after, edges) == (std::vector<std::size_t>{0, 1, 2}),
               boost::test_tools::per_element());
    const std::string md = jokes::histogram_markdown("score", edges, before, after, 1);
    BOOST_TEST(md.find("| [1.0, 2.5) | 2 | 0 |") != std::string::npos, md);
    BOOST_TEST(md.find("| [2.5, 4.0) | 2 | 1 |") != std::string::npos, md);
    BOOST_TEST(md.find("| [4.0, 5.0] | 2 | 2 |") != std::string::npos, md);
    BOOST_TEST(md.find("| all | 7 | 3 | |") != std::string::npos, md);
    // The largest bin gets 40 characters, a bin of 1 of 2 half as many.
    std::string full, half;
    for (int i = 0; i < 40; ++i)
        full += "█";
    for (int i = 0; i < 20; ++i)
        half += "▓";
    BOOST_TEST(md.find("`" + full + "`<br>`" + half + "`") != std::string::npos, md);
    BOOST_TEST(md.find("| [1.0, 2.5) | 2 | 0 | `" + full + "`<br> |") != std::string::npos, md); // no bar for 0
    BOOST_TEST(
        jokes::histogram_markdown("characters", {0, 100, 1e9}, {5, 150, 2000}, {}, 0).find("| ≥ 100 | 2 | 0 |") !=
        std::string::npos);
    BOOST_TEST(jokes::characters("Ёж, ok") == 6u);
}

BOOST_AUTO_TEST_CASE(scores_of_a_rated_csv) {
    const auto dir = std::filesystem::temp_directory_path() / ("tinylm_scores_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "rated.csv") << "text,score\n\"Первый, с запятой\",4.2\nВторой,1.5\n";
    const auto s = jokes::read_scores(dir / "rated.csv");
    BOOST_TEST_REQUIRE(s.size() == 2u);
    BOOST_TEST(s[0].score == 4.2);
    BOOST_TEST(s[0].text == "Первый, с запятой");
    BOOST_TEST(s[1].score == 1.5);
    std::ofstream(dir / "bad.csv") << "text,score\nТретий,высоко\n";
    BOOST_CHECK_EXCEPTION(jokes::read_scores(dir / "bad.csv"), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("bad.csv:2: the score \"высоко\" is not a number") != std::string::npos;
    });
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

// The jokes cleaner on hand-made replies: each step's count is what the comments say the input holds.
BOOST_AUTO_TEST_CASE(joke_cleaner_counts_each_step) {
    jokes::cleaning_counts n;
    // two entities, one \r\n, two space runs (two spaces; a tab and a space), two glued sentences ("был?Ну",
    // "Ну...Хорошо")
    const auto a = jokes::clean_joke("Муж  приходит &quot;домой&quot;.\r\nЖена:\t - Где был?Ну...Хорошо.", n);
    BOOST_TEST_REQUIRE(a.size() == 1u);
    BOOST_TEST(a[0] == "Муж приходит \"домой\".\nЖена: - Где был? Ну... Хорошо.");
    BOOST_TEST(n.entities == 2u);
    BOOST_TEST(n.carriage_returns == 1u);
    BOOST_TEST(n.space_runs == 2u);
    BOOST_TEST(n.glued_sentences == 2u);
    // initials are not glued sentences; an unknown entity stays
    const auto b = jokes::clean_joke("А.С.Пушкин сказал &foo; всё.", n);
    BOOST_TEST(b == std::vector<std::string>{"А.С.Пушкин сказал &foo; всё."}, boost::test_tools::per_element());
    // three jokes glued: two blank lines, then a separator line; one blank line inside a joke stays
    const auto c = jokes::clean_joke("Первый.\n\n\nВторой,\n\nс абзацем.\n***\nТретий.", n);
    BOOST_TEST(c == (std::vector<std::string>{"Первый.", "Второй,\n\nс абзацем.", "Третий."}),
               boost::test_tools::per_element());
    BOOST_TEST(n.glued_jokes == 2u);
    BOOST_TEST(n.jokes == 3u);
    BOOST_TEST(n.changed == 2u);
    BOOST_TEST(n.entities == 2u);
    BOOST_TEST(n.markdown().find("| glued jokes split off | 2 |") != std::string::npos);

    // As conversations: a reply of two jokes becomes two conversations with the same prompt.
    std::vector<tl::data::conversation> convs(1);
    convs[0].messages = {{"user", "Расскажи анекдот"}, {"assistant", "Раз.\n%\nДва."}};
    jokes::cleaning_counts m;
    const auto out = jokes::clean_conversations(convs, m);
    BOOST_TEST_REQUIRE(out.size() == 2u);
    BOOST_TEST(out[0].messages[1].content == "Раз.");
    BOOST_TEST(out[1].messages[1].content == "Два.");
    BOOST_TEST(out[1].messages[0].content == "Расскажи анекдот");
}
