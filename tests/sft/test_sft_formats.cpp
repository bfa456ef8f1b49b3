// SFT readers (data/sft_formats.hpp) on small hand-written files: alpaca JSON and JSONL, rulm seed tasks, chat
// messages, prompt/completion pairs, CSV with quoting and a rating threshold; errors that name file:line; and
// the real files of ../shared/data/instruct and jokes when present.
#include "../support/data.hpp"
#include "../support/errors.hpp"

#include <tinylm/data/sft_formats.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <unistd.h>

using namespace tl;
using namespace tl::data;
namespace fs = std::filesystem;

namespace {

using tl_test::error_of;

fs::path scratch() {
    static const fs::path p = [] {
        const fs::path d = fs::temp_directory_path() / ("tinylm_sft_" + std::to_string(::getpid()));
        fs::remove_all(d);
        fs::create_directories(d);
        return d;
    }();
    return p;
}

fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = scratch() / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

void expect_turns(const conversation& c, const std::vector<std::pair<std::string, std::string>>& want) {
    BOOST_REQUIRE_EQUAL(c.messages.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        BOOST_TEST(c.messages[i].role == want[i].first);
        BOOST_TEST(c.messages[i].content == want[i].second);
    }
}

// The error names `where` and mentions `what`.
void expect_error(const std::function<void()>& f, const std::string& where, const std::string& what) {
    const std::string e = error_of(f);
    BOOST_TEST(e.find(where) != std::string::npos, "«" << e << "» should name " << where);
    BOOST_TEST(e.find(what) != std::string::npos, "«" << e << "» should mention " << what);
}

} // namespace

BOOST_AUTO_TEST_SUITE(sft_formats)

BOOST_AUTO_TEST_CASE(alpaca_json_and_jsonl) {
    const std::string rows[] = {R"({"instruction": "Переведи на русский", "input": "cat", "output": "кот"})",
                                R"({"instruction": "Скажи привет", "input": "", "output": "Привет!"})",
                                R"({"instruction": "Назови цвет", "output": "Синий"})"};
    const fs::path json = write("alpaca.json", "[\n  " + rows[0] + ",\n  " + rows[1] + ",\n\n  " + rows[2] + "\n]\n");
    const fs::path jsonl = write("alpaca.jsonl", rows[0] + "\n" + rows[1] + "\n\n" + rows[2] + "\n");
    for (const auto& [p, lines] : {std::pair{json, std::pair{2, 5}}, std::pair{jsonl, std::pair{1, 4}}}) {
        const auto convs = read_alpaca(p);
        BOOST_REQUIRE_EQUAL(convs.size(), 3u);
        expect_turns(convs[0], {{"user", "Переведи на русский\n\ncat"}, {"assistant", "кот"}});
        expect_turns(convs[1], {{"user", "Скажи привет"}, {"assistant", "Привет!"}});
        expect_turns(convs[2], {{"user", "Назови цвет"}, {"assistant", "Синий"}});
        BOOST_TEST(convs[0].source == p.string() + ":" + std::to_string(lines.first));
        BOOST_TEST(convs[2].source == p.string() + ":" + std::to_string(lines.second));
    }
    const auto sys = read_alpaca(jsonl, {.system_prompt = "Ты помощник.", .limit = 2});
    BOOST_REQUIRE_EQUAL(sys.size(), 2u);
    expect_turns(sys[1], {{"system", "Ты помощник."}, {"user", "Скажи привет"}, {"assistant", "Привет!"}});
    BOOST_TEST((detect_sft_format(json) == sft_format::alpaca));
}

// The SFT assignment's layout: input = system, instruction = user, output = assistant; the same rows as JSON,
// JSONL and CSV give the same conversations; an empty input leaves the system turn to --system (or none).
BOOST_AUTO_TEST_CASE(alpaca_system_layout) {
    const std::string rows[] = {
        R"({"instruction": "Когда собирать крыжовник?", "input": "Ты садовод.", "output": "В июле."})",
        R"({"instruction": "Расскажи стих", "input": "", "output": "Мороз и солнце; день чудесный!"})"};
    const fs::path json = write("course.json", "[\n" + rows[0] + ",\n" + rows[1] + "\n]\n");
    const fs::path jsonl = write("course.jsonl", rows[0] + "\n" + rows[1] + "\n");
    const fs::path csv = write("course.csv", "instruction,input,output\r\n"
                                             "Когда собирать крыжовник?,Ты садовод.,В июле.\r\n"
                                             "Расскажи стих,,\"Мороз и солнце; день чудесный!\"\r\n");
    for (const fs::path& p : {json, jsonl, csv}) {
        const auto convs = read_sft(p, sft_format_from_name("alpaca-system"));
        BOOST_REQUIRE_EQUAL(convs.size(), 2u);
        expect_turns(convs[0],
                     {{"system", "Ты садовод."}, {"user", "Когда собирать крыжовник?"}, {"assistant", "В июле."}});
        expect_turns(convs[1], {{"user", "Расскажи стих"}, {"assistant", "Мороз и солнце; день чудесный!"}});
        const auto with = read_alpaca_system(p, {.system_prompt = "Ты помощник.", .limit = 0});
        BOOST_TEST(with[0].messages[0].content == "Ты садовод."); // the row's own system message wins
        expect_turns(
            with[1],
            {{"system", "Ты помощник."}, {"user", "Расскажи стих"}, {"assistant", "Мороз и солнце; день чудесный!"}});
    }
    BOOST_TEST(read_alpaca_system(csv).at(1).source == csv.string() + ":3");
    // Plain alpaca reads the same rows differently: the input joins the user's turn.
    BOOST_TEST(read_alpaca(jsonl)[0].messages[0].content == "Когда собирать крыжовник?\n\nТы садовод.");
    expect_error([&] { read_alpaca_system(write("nocol.csv", "instruction,answer\nА,Б\n")); }, "nocol.csv:1",
                 "no column \"output\"");
    expect_error(
        [&] {
            read_alpaca_system(write("empty.jsonl", R"({"instruction": "", "output": "x"})"
                                                    "\n"));
        },
        "empty.jsonl:1", "instruction (the user's turn) is empty");
    expect_error([&] { sft_format_from_name("parquet"); }, "parquet", "alpaca-system");
}

BOOST_AUTO_TEST_CASE(seed_tasks) {
    const fs::path p = write(
        "seed.jsonl",
        R"({"id": "seed_task_0", "instruction": "Реши пример", "instances": [{"input": "2+2", "output": "4"}, {"input": "", "output": "Нужен пример"}]})"
        "\n"
        R"({"id": "seed_task_1", "instruction": "Скажи да", "instances": [{"output": "Да"}]})"
        "\n");
    const auto convs = read_seed_tasks(p);
    BOOST_REQUIRE_EQUAL(convs.size(), 3u);
    expect_turns(convs[0], {{"user", "Реши пример\n\n2+2"}, {"assistant", "4"}});
    expect_turns(convs[1], {{"user", "Реши пример"}, {"assistant", "Нужен пример"}});
    expect_turns(convs[2], {{"user", "Скажи да"}, {"assistant", "Да"}});
    BOOST_TEST(convs[2].source == p.string() + ":2");
    BOOST_TEST((detect_sft_format(p) == sft_format::seed_tasks));
    BOOST_TEST(read_sft(p).size() == 3u);
}

BOOST_AUTO_TEST_CASE(chat_messages) {
    const fs::path p = write(
        "chats.jsonl",
        R"({"messages": [{"role": "system", "content": "Будь краток."}, {"role": "user", "content": "Привет"}, {"role": "assistant", "content": "Здравствуй"}, {"role": "user", "content": "Как дела?"}, {"role": "assistant", "content": "Хорошо"}], "model": "x"})"
        "\n"
        R"({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})"
        "\n");
    const auto convs = read_chat_messages(p, {.system_prompt = "По умолчанию."});
    BOOST_REQUIRE_EQUAL(convs.size(), 2u);
    expect_turns(convs[0], {{"system", "Будь краток."},
                            {"user", "Привет"},
                            {"assistant", "Здравствуй"},
                            {"user", "Как дела?"},
                            {"assistant", "Хорошо"}});
    expect_turns(convs[1], {{"system", "По умолчанию."}, {"user", "2+2?"}, {"assistant", "4"}});
    BOOST_TEST((detect_sft_format(p) == sft_format::messages));
    const auto json = convs[1].to_json();
    BOOST_TEST(
        json.dump() ==
        R"([{"role":"system","content":"По умолчанию."},{"role":"user","content":"2+2?"},{"role":"assistant","content":"4"}])");
}

BOOST_AUTO_TEST_CASE(prompt_completion) {
    const fs::path p = write("pairs.jsonl", R"({"prompt": "Столица Франции?", "completion": "Париж"})"
                                            "\n");
    const auto convs = read_prompt_completion(p);
    BOOST_REQUIRE_EQUAL(convs.size(), 1u);
    expect_turns(convs[0], {{"user", "Столица Франции?"}, {"assistant", "Париж"}});
    BOOST_TEST((detect_sft_format(p) == sft_format::prompt_completion));
}

BOOST_AUTO_TEST_CASE(csv_quoting_and_threshold) {
    const fs::path p = write("jokes.csv", "text,score,score1\r\n"
                                          "\"Шутка, с запятой\",4.5,5\r\n"
                                          "\"Он сказал \"\"привет\"\"\",2.0,2\r\n"
                                          "\"Две\nстроки\",3.5,4\n"
                                          "\n"
                                          "простая,3.0,3\n");
    const auto rows = parse_csv(detail::read_whole_file(p), p.string());
    BOOST_REQUIRE_EQUAL(rows.size(), 5u);
    BOOST_TEST(rows[2].fields[0] == "Он сказал \"привет\"");
    BOOST_TEST(rows[3].fields[0] == "Две\nстроки");
    BOOST_TEST(rows[3].line == 4u);
    BOOST_TEST(rows[4].line == 7u);

    const auto all = read_rated_csv(p, {.prompt = "Расскажи анекдот."});
    BOOST_REQUIRE_EQUAL(all.size(), 4u);
    expect_turns(all[1], {{"user", "Расскажи анекдот."}, {"assistant", "Он сказал \"привет\""}});
    const auto good = read_rated_csv(p, {.rating_column = "score", .min_rating = 3.0});
    BOOST_REQUIRE_EQUAL(good.size(), 3u);
    BOOST_TEST(good[0].messages[1].content == "Шутка, с запятой");
    BOOST_TEST(good[1].messages[1].content == "Две\nстроки");
    BOOST_TEST(good[2].messages[1].content == "простая");
    BOOST_TEST(good[2].source == p.string() + ":7");
    BOOST_TEST(read_rated_csv(p, {.rating_column = "score", .min_rating = 4.0}).size() == 1u);
    // A prompt column instead of the fixed prompt.
    const fs::path q = write("qa.csv", "question,answer\n\"Как, дела?\",Хорошо\n");
    const auto qa = read_rated_csv(q, {.text_column = "answer", .prompt_column = "question"});
    BOOST_REQUIRE_EQUAL(qa.size(), 1u);
    expect_turns(qa[0], {{"user", "Как, дела?"}, {"assistant", "Хорошо"}});
}

BOOST_AUTO_TEST_CASE(bad_input_names_file_and_line) {
    const std::string ok = R"({"instruction": "a", "output": "b"})";
    const fs::path bad_json = write("bad.jsonl", ok + "\n" + ok + "\n{\"instruction\": \"a\", \n");
    expect_error([&] { (void)read_alpaca(bad_json); }, "bad.jsonl:3", "invalid JSON");
    const fs::path missing = write("missing.jsonl", ok + "\n\n" + R"({"instruction": "a"})" + "\n");
    expect_error([&] { (void)read_alpaca(missing); }, "missing.jsonl:3", "\"output\" is missing");
    const fs::path wrong_type = write("type.json", "[\n" + ok + ",\n" + R"({"instruction": "a", "output": 5})" + "\n]");
    expect_error([&] { (void)read_alpaca(wrong_type); }, "type.json:3", "must be a string");
    const fs::path broken_array = write("broken.json", "[\n" + ok + ",\n" + ok + "\n");
    expect_error([&] { (void)read_alpaca(broken_array); }, "broken.json:", "invalid JSON");
    const fs::path role = write("role.jsonl", R"({"messages": [{"role": "bot", "content": "x"}]})");
    expect_error([&] { (void)read_chat_messages(role); }, "role.jsonl:1", "unknown role \"bot\"");
    const fs::path no_reply =
        write("noreply.jsonl", std::string("\n") + R"({"messages": [{"role": "user", "content": "x"}]})");
    expect_error([&] { (void)read_chat_messages(no_reply); }, "noreply.jsonl:2", "no assistant message");
    const fs::path no_instances = write("seed_bad.jsonl", R"({"instruction": "x", "instances": []})");
    expect_error([&] { (void)read_seed_tasks(no_instances); }, "seed_bad.jsonl:1", "instances");
    const fs::path unknown = write("what.jsonl", R"({"question": "x"})");
    expect_error([&] { (void)read_sft(unknown); }, "what.jsonl:1", "cannot tell the SFT format");
    expect_error([&] { (void)read_alpaca(scratch() / "absent.json"); }, "absent.json", "cannot open");

    const fs::path unterminated = write("unterminated.csv", "text,score\nok,1\n\"open,2\nmore,3\n");
    expect_error([&] { (void)read_rated_csv(unterminated); }, "unterminated.csv:3", "unterminated quoted field");
    const fs::path stray = write("stray.csv", "text,score\nsaid \"hi\",1\n");
    expect_error([&] { (void)read_rated_csv(stray); }, "stray.csv:2", "quote inside an unquoted field");
    const fs::path after = write("after.csv", "text,score\n\"a\"b,1\n");
    expect_error([&] { (void)read_rated_csv(after); }, "after.csv:2", "after a closing quote");
    const fs::path fields = write("fields.csv", "text,score\n\"a\nb\",1\nc,2,3\n");
    expect_error([&] { (void)read_rated_csv(fields); }, "fields.csv:4", "3 fields");
    const fs::path rating = write("rating.csv", "text,score\na,4.5\nb,good\n");
    expect_error([&] { (void)read_rated_csv(rating, {.rating_column = "score", .min_rating = 1}); }, "rating.csv:3",
                 "not a number");
    expect_error([&] { (void)read_rated_csv(rating, {.rating_column = "stars"}); }, "rating.csv:1",
                 "no column \"stars\" in the header (it has: text, score)");
}

// ---- the real files (skipped without ../shared/data) -------------------------------------------------------

BOOST_AUTO_TEST_CASE(shared_data_files,
                     tl_test::needs_data("instruct/ru_alpaca_seed_tasks.jsonl", "instruct/ru_arena_chats.jsonl",
                                         "instruct/ru_instruct_gpt4_first100.jsonl",
                                         "jokes/clean_comedy_gold_ru.csv")) {
    const fs::path data = tl_test::data_dir();
    const fs::path seed = data / "instruct" / "ru_alpaca_seed_tasks.jsonl";
    BOOST_TEST((detect_sft_format(seed) == sft_format::seed_tasks));
    const auto tasks = read_seed_tasks(seed);
    BOOST_TEST(tasks.size() >= 137u); // 137 tasks (DATA.md), each with at least one instance
    for (const conversation& c : tasks) {
        BOOST_REQUIRE_EQUAL(c.messages.size(), 2u);
        BOOST_TEST(!c.messages[0].content.empty());
    }
    const fs::path arena = data / "instruct" / "ru_arena_chats.jsonl";
    const auto chats = read_sft(arena, sft_format::automatic, {.limit = 50});
    BOOST_TEST(chats.size() == 50u);
    BOOST_TEST(chats[0].messages.back().role == "assistant");
    const fs::path gpt4 = data / "instruct" / "ru_instruct_gpt4_first100.jsonl";
    BOOST_TEST(read_alpaca(gpt4).size() == 100u); // 100 rows (DATA.md)

    const fs::path jokes = data / "jokes" / "clean_comedy_gold_ru.csv";
    const auto all = read_rated_csv(jokes);
    BOOST_TEST(all.size() == 1000u); // 1,000 jokes (DATA.md)
    const auto funny = read_rated_csv(jokes, {.rating_column = "score", .min_rating = 3.5});
    const auto very = read_rated_csv(jokes, {.rating_column = "score", .min_rating = 4.0});
    BOOST_TEST_MESSAGE("clean_comedy_gold_ru.csv: " << all.size() << " jokes, " << funny.size() << " rated >= 3.5, "
                                                    << very.size() << " rated >= 4.0");
    BOOST_TEST(very.size() > 0u);
    BOOST_TEST(very.size() <= funny.size());
    BOOST_TEST(funny.size() < all.size());
}

BOOST_AUTO_TEST_SUITE_END()
