// `tinylm eval generations` and `tinylm synth` on a tiny random model: the report's numbers are those of
// eval/repetition.hpp on the texts the model generates, the synthetic records are the model's batched
// continuations, and every filter's verdict agrees with data/langid.hpp and data/dedup.hpp.
#include <tinylm/backend/gemv_f32.hpp>
#include <tinylm/core/utf8.hpp>
#include <tinylm/data/dedup.hpp>
#include <tinylm/data/langid.hpp>
#include <tinylm/data/utf8.hpp>
#include <tinylm/eval/repetition.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/serve/text_model.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include "../support/run_command.hpp"

#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

namespace fs = std::filesystem;

namespace {

const tl::tokenizer& test_tokenizer() {
    static const tl::tokenizer tok =
        tl::load_tokenizer_json(std::string(TINYLM_SOURCE_DIR) + "/tests/reference/tokenizer/trained_byte_level.json");
    return tok;
}

// This process's scratch folder, removed when the tests end.
fs::path temp_dir() {
    struct scratch {
        fs::path path = fs::temp_directory_path() / ("tinylm_synth_" + std::to_string(getpid()));
        scratch() {
            fs::remove_all(path);
            fs::create_directories(path);
        }
        ~scratch() {
            std::error_code ignored;
            fs::remove_all(path, ignored);
        }
    };
    static const scratch dir;
    return dir.path;
}

// Random weights and the trained byte-level tokenizer; no generation_config.json, so greedy by default.
const fs::path& model_folder() {
    static const fs::path dir = [] {
        const fs::path d = temp_dir() / "model";
        tl::model_config c = tl::presets::tiny::value;
        c.vocab_size = int(test_tokenizer().vocab_size());
        c.max_seq_len = 256;
        c.init_std = 0.2;
        tl::decoder<tl::families::llama> m(c, 5);
        tl::save_pretrained(m, d);
        tl::save_tokenizer_json(test_tokenizer(), (d / "tokenizer.json").string());
        return d;
    }();
    return dir;
}

using tl_test::run_command;

fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = temp_dir() / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
    std::vector<nlohmann::json> out;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
}

// A JSON number, or null for NaN (a ratio without n-grams).
void check_value(const nlohmann::json& j, double want, const std::string& what) {
    if (std::isnan(want)) {
        BOOST_TEST(j.is_null(), what << ": " << j.dump());
    } else {
        BOOST_TEST_REQUIRE(j.is_number(), what << ": " << j.dump());
        BOOST_TEST(j.get<double>() == want, what << ": " << j.get<double>() << " vs " << want);
    }
}

void check_metrics(const nlohmann::json& j, std::size_t words, const std::array<double, 3>& distinct, double repeated,
                   std::size_t longest, double copied, const std::string& what) {
    BOOST_TEST(j["words"].get<std::size_t>() == words, what);
    check_value(j["distinct_1"], distinct[0], what + " distinct-1");
    check_value(j["distinct_2"], distinct[1], what + " distinct-2");
    check_value(j["distinct_3"], distinct[2], what + " distinct-3");
    check_value(j["repeated_ngram_rate"], repeated, what + " repeated");
    BOOST_TEST(j["longest_repeat"].get<std::size_t>() == longest, what);
    check_value(j["copied_rate"], copied, what + " copied");
}

// The options the command builds from --temperature, --max-tokens and --seed.
tl::text_generation_options options(const tl::text_model& m, double temperature, int max_tokens, std::uint64_t seed) {
    tl::sampling_overrides given;
    given.temperature = temperature;
    given.max_tokens = max_tokens;
    given.seed = seed;
    return m.options_with(given);
}

const std::vector<std::string> prompts = {"Жили-были старик со старухой", "Сила войска зависит от его духа",
                                          "Чтобы жить честно"};

} // namespace

BOOST_AUTO_TEST_SUITE(batched_generation)

// One row decodes exactly as tl::generate; rows of a batch use seed + r, and at temperature 0 all rows agree.
BOOST_AUTO_TEST_CASE(complete_batch_rows_are_the_model_continuations) {
    const auto m = tl::load_text_model(model_folder());
    const std::vector<tl::token_t> prompt = m->tokenizer().encode("Жили-были");
    tl::text_generation_options o = options(*m, 1.0, 30, 40);
    const auto one = m->complete_batch(prompt, 1, o);
    BOOST_TEST_REQUIRE(one.size() == 1u);
    const tl::text_completion single = m->complete(prompt, o, [](std::string_view) { return true; });
    BOOST_TEST(one[0].tokens == single.tokens, boost::test_tools::per_element());
    BOOST_TEST(one[0].text == single.text);
    BOOST_TEST(tl::finish_reason_name(one[0].reason) == std::string(tl::finish_reason_name(single.reason)));

    const auto three = m->complete_batch(prompt, 3, o);
    BOOST_TEST_REQUIRE(three.size() == 3u);
    BOOST_TEST(three[0].tokens != three[1].tokens); // different seeds
    for (std::size_t r = 0; r < 3; ++r) {
        const std::string full = m->tokenizer().decode(three[r].tokens, true);
        // streamed text equals the decode when the ids end on whole characters (random weights may not)
        if (tl::utf8::is_valid(full)) BOOST_TEST(three[r].text == full, "row " << r);
        tl::stream_decoder alone(m->tokenizer()); // each row has its own decoder: its text is its ids' alone
        std::string streamed;
        for (const tl::token_t id : three[r].tokens)
            streamed += alone.push(id);
        streamed += alone.finish();
        BOOST_TEST(three[r].text == streamed, "row " << r);
        BOOST_TEST(three[r].prompt_tokens == prompt.size());
    }
    o.generation.sampling.temperature = 0;
    const auto greedy = m->complete_batch(prompt, 3, o);
    const tl::text_completion greedy_single = m->complete(prompt, o, [](std::string_view) { return true; });
    for (std::size_t r = 0; r < 3; ++r)
        BOOST_TEST(greedy[r].tokens == greedy_single.tokens, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tinylm_eval_generations)

// The report of two temperatures, then again with the first temperature's texts as the corpus: every number,
// per text and pooled, equals analyse_repetition on the texts, which are the model's continuations, each as alone
// although the tool decodes them together (--batch 4 by default: the stderr line says how many a step; on a CPU
// without AVX2 the f32 products of several rows may round differently, so --batch 1 there).
BOOST_AUTO_TEST_CASE(report_numbers_are_repetition_hpp_on_the_generated_texts) {
    const fs::path prompt_file = write("prompts.txt", prompts[0] + "\n\n" + prompts[1] + "\n" + prompts[2] + "\n");
    const std::string command = std::string(TINYLM_BINARY) + " eval generations --model " + model_folder().string() +
                                " --prompts " + prompt_file.string() +
                                (tl::detail::gemv_f32_has_kernel() ? "" : " --batch 1") +
                                " --temperatures 0.8,1.5 --max-tokens 40 --seed 7 --rep-n 2 --copy-n 3 --json";
    const fs::path log = temp_dir() / "generations.log";
    const nlohmann::json first = nlohmann::json::parse(run_command(command + " 2>" + log.string()));
    { // "temperature T: 3 generations, N tokens in S s (R tokens/s; A a step)", a line per temperature
        std::ifstream in(log);
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        double together = 0; // the most generations a step, on average over a temperature's steps
        for (const std::string t : {"0.8", "1.5"}) {
            const std::size_t at = text.find("temperature " + t + ": 3 generations");
            BOOST_TEST_REQUIRE(at != std::string::npos, text);
            const std::size_t step = text.find(" a step)", at), open = text.rfind("; ", step);
            BOOST_TEST_REQUIRE((step != std::string::npos && open != std::string::npos && open > at));
            together = std::max(together, std::stod(text.substr(open + 2, step - open - 2)));
        }
        // How many share a step depends on when the threads reach the batch: on a loaded machine one generation of
        // 40 tokens (a few ms) can end before the next thread arrives, so the number is printed, not required (CI
        // saw 1.0 once, with a build beside it). Decoding together is checked without timing by complete_batch's
        // test above; that every text is its generation alone, by the numbers below.
        BOOST_TEST_MESSAGE("eval generations: " << together << " generations a step at most");
        BOOST_TEST(together >= 1.0, text);
    }
    std::string corpus;
    for (const auto& g : first["temperatures"][0]["generations"])
        corpus += g["text"].get<std::string>() + "\n\n";
    const fs::path corpus_file = write("corpus.txt", corpus);
    const nlohmann::json report =
        nlohmann::json::parse(run_command(command + " --corpus " + corpus_file.string() + " 2>/dev/null"));

    tl::eval::ngram_index index(3);
    index.add_paragraphs(corpus);
    index.finalize();
    const tl::eval::repetition_options opt{.rep_n = 2, .copy_n = 3};
    const auto m = tl::load_text_model(model_folder());
    for (std::size_t k = 0; k < 2; ++k) {
        const nlohmann::json& at = report["temperatures"][k];
        const double temperature = at["temperature"].get<double>();
        BOOST_TEST(temperature == (k == 0 ? 0.8 : 1.5));
        BOOST_TEST_REQUIRE(at["generations"].size() == prompts.size());
        std::vector<std::string> texts;
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            const nlohmann::json& g = at["generations"][i];
            BOOST_TEST(g["prompt"] == prompts[i]);
            BOOST_TEST(g["seed"].get<std::uint64_t>() == 7 + i);
            BOOST_TEST(g["text"] == first["temperatures"][k]["generations"][i]["text"]); // the corpus changed nothing
            // the text is the model's continuation at this temperature and seed
            const tl::text_generation_options o = options(*m, temperature, 40, 7 + i);
            const auto ids = m->tokenizer().encode(prompts[i], {.add_special_tokens = true});
            BOOST_TEST(g["text"] == m->complete(ids, o, [](std::string_view) { return true; }).text);
            texts.push_back(g["text"].get<std::string>());
        }
        const tl::eval::repetition_report r = tl::eval::analyse_repetition(texts, opt, &index);
        for (std::size_t i = 0; i < texts.size(); ++i) {
            const auto& t = r.texts[i];
            check_metrics(at["generations"][i], t.words, t.distinct, t.repeated_ngram_rate, t.longest_repeat,
                          t.copied_rate, "T " + std::to_string(temperature) + " prompt " + std::to_string(i));
            BOOST_TEST(at["generations"][i]["longest_repeat_text"] == t.longest_repeat_text);
        }
        check_metrics(at["overall"], r.words, r.distinct, r.repeated_ngram_rate, r.longest_repeat, r.copied_rate,
                      "overall T " + std::to_string(temperature));
        if (k == 0 && r.texts.front().counts.copy_ngrams > 0) // the corpus is these texts: all copied
            BOOST_TEST(at["overall"]["copied_rate"].get<double>() == 1.0);
    }
    // The markdown form has a row per prompt and an overall row per temperature.
    const std::string md = run_command(command.substr(0, command.size() - 7) + " 2>/dev/null");
    BOOST_TEST(md.find("## Temperature 0.8") != std::string::npos, md);
    BOOST_TEST(md.find("## Temperature 1.5") != std::string::npos);
    BOOST_TEST(md.find("| **all** |") != std::string::npos);
    BOOST_TEST(md.find("## Overall") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tinylm_synth)

// Every generated text is kept or rejected for the reason the library gives, in the order the tool applies
// them (length, language, duplicates), and the texts are the model's batched continuations of each topic.
BOOST_AUTO_TEST_CASE(records_are_filtered_as_the_library_decides) {
    const fs::path topics = write("topics.txt", "# topics\nзима\n\nлетний дождь\n");
    const fs::path ru = write("ru.txt", "Жили-были старик со старухой у самого синего моря.\n"
                                        "Старик ловил неводом рыбу, старуха пряла свою пряжу.\n"
                                        "Сила войска зависит от его духа.\n");
    const fs::path en = write("en.txt", "The quick brown fox jumps over the lazy dog.\n"
                                        "It was the best of times, it was the worst of times.\n");
    const fs::path out = temp_dir() / "synth.jsonl", rejected = temp_dir() / "rejected.jsonl";
    for (const double temperature : {1.0, 0.0}) { // greedy: the rows of a topic are equal, so duplicates
        const std::string command = std::string(TINYLM_BINARY) + " synth --model " + model_folder().string() +
                                    " --topics " + topics.string() + " --template 'Тема: {topic}.' --per-topic 3" +
                                    " --max-tokens 30 --min-chars 40 --max-chars 100000 --language ru" +
                                    " --langid-train ru=" + ru.string() + " --langid-train en=" + en.string() +
                                    " --temperature " + std::to_string(temperature) + " --seed 3 --out " +
                                    out.string() + " --rejected " + rejected.string() + " --json 2>/dev/null";
        const nlohmann::json summary = nlohmann::json::parse(run_command(command));
        const auto kept = read_jsonl(out), dropped = read_jsonl(rejected);
        BOOST_TEST(summary["generated"].get<std::size_t>() == 6u);
        BOOST_TEST(summary["batch"].get<int>() == 3);
        BOOST_TEST(summary["kept"].get<std::size_t>() == kept.size());
        BOOST_TEST(kept.size() + dropped.size() == 6u);
        BOOST_TEST(summary["tokens_per_second"].get<double>() > 0);

        // The same decisions from the library, over the records in generation order (seed order).
        std::vector<nlohmann::json> all = kept;
        all.insert(all.end(), dropped.begin(), dropped.end());
        std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a["seed"] < b["seed"]; });
        tl::data::ngram_langid langid;
        for (const auto& [lang, file] : {std::pair{"ru", ru}, std::pair{"en", en}}) {
            std::ifstream in(file);
            for (std::string line; std::getline(in, line);)
                langid.train(lang, line);
        }
        tl::data::deduplicator dedup;
        const auto m = tl::load_text_model(model_folder());
        std::size_t short_n = 0, language_n = 0, duplicates = 0;
        for (std::size_t k = 0; k < all.size(); ++k) {
            const nlohmann::json& rec = all[k];
            BOOST_TEST(rec["seed"].get<std::uint64_t>() == 3 + k);
            BOOST_TEST(rec["topic"] == (k < 3 ? "зима" : "летний дождь"));
            BOOST_TEST(rec["prompt"] == (k < 3 ? "Тема: зима." : "Тема: летний дождь."));
            BOOST_TEST(rec["sampling"]["temperature"].get<double>() == temperature);
            if (k % 3 == 0) { // the topic's batch from the library
                const tl::text_generation_options o = options(*m, temperature, 30, 3 + k);
                const auto ids = m->tokenizer().encode(rec["prompt"].get<std::string>(), {.add_special_tokens = true});
                const auto batch = m->complete_batch(ids, 3, o);
                for (std::size_t r = 0; r < 3; ++r)
                    BOOST_TEST(all[k + r]["text"] == batch[r].text, "record " << k + r);
            }
            const std::string text = rec["text"].get<std::string>();
            std::string why;
            if (tl::data::utf8_length(text) < 40)
                why = "short", ++short_n;
            else if (const std::string lang = langid.classify(text).lang; lang != "ru")
                why = "language " + (lang.empty() ? std::string("none") : lang), ++language_n;
            else if (dedup.check_and_add(dedup.prepare(text), k).what != tl::data::deduplicator::verdict::keep)
                ++duplicates, why = "duplicate";
            if (why.empty())
                BOOST_TEST(!rec.contains("rejected"), "record " << k);
            else
                BOOST_TEST(rec.value("rejected", "").find(why == "duplicate" ? "duplicate" : why) != std::string::npos,
                           "record " << k << ": " << why << " vs " << rec.value("rejected", ""));
        }
        BOOST_TEST(summary["too_short"].get<std::size_t>() == short_n);
        BOOST_TEST(summary["other_language"].get<std::size_t>() == language_n);
        BOOST_TEST(summary["exact_duplicates"].get<std::size_t>() + summary["near_duplicates"].get<std::size_t>() ==
                   duplicates);
    }
}

BOOST_AUTO_TEST_CASE(language_without_training_text_is_refused) {
    const fs::path topics = write("topics1.txt", "зима\n");
    const std::string cmd = std::string(TINYLM_BINARY) + " synth --model " + model_folder().string() + " --topics " +
                            topics.string() + " --language ru --out " + (temp_dir() / "x.jsonl").string() +
                            " 2>&1; echo rc=$?";
    const std::string out = run_command(cmd);
    BOOST_TEST(out.find("--langid-train") != std::string::npos, out);
    BOOST_TEST(out.find("rc=1") != std::string::npos, out);
}

BOOST_AUTO_TEST_SUITE_END()
