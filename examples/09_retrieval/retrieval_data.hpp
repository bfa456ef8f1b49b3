// examples/09_retrieval/retrieval_data.hpp: retrieval tasks from the data dir, split so that held-out queries
// ask about documents no training pair showed.
//
//   xquad-ru, xquad-en  question -> its paragraph (XQuAD, SQuAD format, 240 paragraphs, 1,190 questions); the
//                       paragraphs are split train/test, the test queries are the questions of test paragraphs
//   tatar-ru            Tatar sentence -> its Russian translation (NTREX-128, 1,997 line-aligned sentences);
//                       the sentences are split train/test, a bilingual retriever
// The corpus searched at evaluation is every document of the task (train and test), so a held-out query must
// find its unseen document among all of them.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/core/shape.hpp>
#include <tinylm/data/pairs.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace recipes {

namespace fs = std::filesystem;

struct retrieval_task {
    std::string name, description;
    std::vector<std::string> corpus;                // every document
    std::vector<tl::data::text_pair> train;         // (query, document) of training documents
    std::vector<std::string> test_queries;          // queries about held-out documents
    std::vector<std::vector<tl::index_t>> relevant; // per test query: its corpus rows
    std::size_t test_documents = 0;
};

// Which of n items are held out: a seeded shuffle, the first round(n * fraction) of it.
inline std::vector<bool> held_out(std::size_t n, double fraction, std::uint64_t seed) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i)
        order[i] = i;
    tl::counter_rng rng(seed, 0x5e11);
    for (std::size_t i = n; i > 1; --i)
        std::swap(order[i - 1], order[std::size_t(rng.below(i))]);
    std::vector<bool> test(n, false);
    for (std::size_t i = 0; i < std::size_t(double(n) * fraction + 0.5) && i < n; ++i)
        test[order[i]] = true;
    return test;
}

inline std::string read_text_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    tl::check(bool(in), [&] { return "09_retrieval: cannot open " + p.string(); });
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline retrieval_task xquad_task(const fs::path& data_dir, const std::string& lang, double test_fraction,
                                 std::uint64_t seed) {
    const fs::path file = data_dir / "qa" / "xquad" / ("xquad." + lang + ".json");
    tl::check(fs::exists(file), [&] { return "09_retrieval: " + file.string() + " not found (see docs/data.md)"; });
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_text_file(file));
    } catch (const nlohmann::json::exception& e) {
        tl::fail("09_retrieval: " + file.string() + " is not valid JSON: " + e.what());
    }
    retrieval_task t;
    t.name = "xquad-" + lang;
    t.description = "XQuAD " + lang + ": question -> its paragraph";
    std::vector<std::vector<std::string>> questions; // per paragraph
    try {
        for (const auto& article : j.at("data"))
            for (const auto& p : article.at("paragraphs")) {
                t.corpus.push_back(p.at("context").get<std::string>());
                questions.emplace_back();
                for (const auto& qa : p.at("qas"))
                    questions.back().push_back(qa.at("question").get<std::string>());
            }
    } catch (const nlohmann::json::exception& e) {
        tl::fail("09_retrieval: " + file.string() + " is not in the SQuAD format: " + e.what());
    }
    tl::check(!t.corpus.empty(), [&] { return "09_retrieval: " + file.string() + " has no paragraphs"; });
    const std::vector<bool> test = held_out(t.corpus.size(), test_fraction, seed);
    for (std::size_t p = 0; p < t.corpus.size(); ++p) {
        t.test_documents += test[p];
        for (const std::string& q : questions[p])
            if (test[p]) {
                t.test_queries.push_back(q);
                t.relevant.push_back({tl::index_t(p)});
            } else {
                t.train.push_back({q, t.corpus[p], {}, file.filename().string()});
            }
    }
    return t;
}

inline std::vector<std::string> read_lines(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    tl::check(bool(in), [&] { return "09_retrieval: cannot open " + p.string() + " (see docs/data.md)"; });
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(line);
    }
    return lines;
}

inline retrieval_task tatar_russian_task(const fs::path& data_dir, double test_fraction, std::uint64_t seed) {
    const auto tat = read_lines(data_dir / "tatar" / "ntrex128.tat.txt");
    const auto rus = read_lines(data_dir / "tatar" / "ntrex128.rus.txt");
    tl::check(tat.size() == rus.size() && !tat.empty(), [&] {
        return "09_retrieval: ntrex128.tat.txt and ntrex128.rus.txt must be line-aligned, got " +
               std::to_string(tat.size()) + " and " + std::to_string(rus.size()) + " lines";
    });
    retrieval_task t;
    t.name = "tatar-ru";
    t.description = "NTREX-128: Tatar sentence -> its Russian translation";
    // The corpus holds each Russian sentence once; a Tatar query is relevant to every copy of its translation.
    std::map<std::string, tl::index_t> row_of;
    std::vector<tl::index_t> doc(rus.size());
    for (std::size_t i = 0; i < rus.size(); ++i) {
        const auto [it, added] = row_of.try_emplace(rus[i], tl::index_t(t.corpus.size()));
        if (added) t.corpus.push_back(rus[i]);
        doc[i] = it->second;
    }
    const std::vector<bool> test = held_out(tat.size(), test_fraction, seed);
    for (std::size_t i = 0; i < tat.size(); ++i) {
        if (tat[i].empty() || rus[i].empty()) continue;
        if (test[i]) {
            ++t.test_documents;
            t.test_queries.push_back(tat[i]);
            t.relevant.push_back({doc[i]});
        } else {
            t.train.push_back({tat[i], rus[i], {}, "ntrex128:" + std::to_string(i + 1)});
        }
    }
    return t;
}

// The data files a task reads (relative to the data dir).
inline std::vector<std::string> task_files(const std::string& name) {
    if (name == "xquad-ru") return {"qa/xquad/xquad.ru.json"};
    if (name == "xquad-en") return {"qa/xquad/xquad.en.json"};
    if (name == "tatar-ru") return {"tatar/ntrex128.tat.txt", "tatar/ntrex128.rus.txt"};
    tl::fail("09_retrieval: unknown task \"" + name + "\" (xquad-ru, xquad-en, tatar-ru)");
}

inline retrieval_task make_task(const std::string& name, const fs::path& data_dir, double test_fraction,
                                std::uint64_t seed) {
    if (name == "xquad-ru") return xquad_task(data_dir, "ru", test_fraction, seed);
    if (name == "xquad-en") return xquad_task(data_dir, "en", test_fraction, seed);
    if (name == "tatar-ru") return tatar_russian_task(data_dir, test_fraction, seed);
    tl::fail("09_retrieval: unknown task \"" + name + "\" (xquad-ru, xquad-en, tatar-ru)");
}

} // namespace recipes
