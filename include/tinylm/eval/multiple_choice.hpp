// tinylm/eval/multiple_choice.hpp: multiple-choice tasks scored by log-likelihood, with the conventions of
// lm-evaluation-harness (0.4.13, ConfigurableTask with output_type: multiple_choice), so that the same task
// gives the same numbers here and under `lm_eval --model hf` on the exported checkpoint.
//
// Task file: JSONL, one document per line: {"question": "...", "choices": ["...", ...], "answer": 2}.
//
// Prompt of a document, k shots (lm-eval's fewshot_context and construct_requests):
//
//   description                                    (lm-eval 0.4.13 adds no delimiter: end it with "\n\n")
//   text(shot 1) + target_delimiter + choices[answer](shot 1) + fewshot_delimiter      (k times)
//   text(doc)                                                                            <- the context
//   target_delimiter + choice                                                            <- one continuation per choice
//
// with text(doc) = the template (default "Question: {question}\nAnswer:") with {question} replaced,
// target_delimiter " " and fewshot_delimiter "\n\n". Shots come from the dev documents: random ones drawn with
// Python's random.Random(seed).sample, one generator for the whole task advanced document by document
// (lm-eval's default sampler, seed 1234), or the first k (its first_n sampler). When the shots come from the
// test documents themselves, k + 1 are drawn and the document being asked is removed (lm-eval does the same).
//
// Metrics: acc (argmax of the log-likelihoods), acc_norm (argmax of log-likelihood / length of the choice in
// characters, i.e. Unicode code points: lm-eval's len(str)), acc_bytes (per UTF-8 byte). Ties go to the first
// choice, as numpy's argmax.
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/eval/loglikelihood.hpp>
#include <tinylm/eval/python_random.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace tl::eval {

struct mc_doc {
    std::string question{};
    std::vector<std::string> choices{};
    int answer = 0;
    bool operator==(const mc_doc&) const = default;
};

enum class fewshot_sampler { random, first_n };

struct mc_options {
    std::string doc_to_text = "Question: {question}\nAnswer:";
    std::string target_delimiter = " ";
    std::string fewshot_delimiter = "\n\n";
    std::string description = "";
    int num_fewshot = 0;
    std::uint64_t fewshot_seed = 1234; // lm-eval's default --seed for few-shot sampling
    fewshot_sampler sampler = fewshot_sampler::random;
    bool shots_from_test = false; // the dev documents are the test documents: never show a document itself
    ll_options loglikelihood{};
};

struct mc_doc_result {
    std::string context{};
    std::vector<double> logprobs{}; // one per choice
    std::vector<bool> greedy{};
    int pred = 0, pred_norm = 0, pred_bytes = 0, answer = 0;
};

struct mc_report {
    std::vector<mc_doc_result> docs{};
    double acc = 0, acc_norm = 0, acc_bytes = 0;
};

// Number of Unicode code points of valid UTF-8 (Python's len(str)).
inline std::size_t code_points(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s)
        n += (c & 0xC0) != 0x80;
    return n;
}

// Reads a JSONL task; every error names the file and the line.
inline std::vector<mc_doc> load_mc_jsonl(const std::filesystem::path& path) {
    std::ifstream in(path);
    check(bool(in), [&] { return "load_mc_jsonl: cannot open " + path.string(); });
    std::vector<mc_doc> docs;
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const auto where = [&] { return path.string() + ":" + std::to_string(line_no) + ": "; };
        try {
            const nlohmann::json j = nlohmann::json::parse(line);
            const std::string file = "load_mc_jsonl: " + path.string() + ":" + std::to_string(line_no);
            mc_doc d{json_field<std::string>(j, "question", file),
                     json_field<std::vector<std::string>>(j, "choices", file), json_field<int>(j, "answer", file)};
            check(d.choices.size() >= 2, [&] { return where() + "a document needs at least two choices"; });
            check(d.answer >= 0 && std::size_t(d.answer) < d.choices.size(),
                  [&] { return where() + "answer " + std::to_string(d.answer) + " is not the index of a choice"; });
            docs.push_back(std::move(d));
        } catch (const nlohmann::json::exception& e) {
            fail("load_mc_jsonl: " + where() + e.what());
        }
    }
    return docs;
}

// The template with every "{question}" replaced.
inline std::string render_doc_text(const std::string& tmpl, const mc_doc& doc) {
    std::string out;
    const std::string key = "{question}";
    std::size_t at = 0;
    for (std::size_t p; (p = tmpl.find(key, at)) != std::string::npos; at = p + key.size())
        out.append(tmpl, at, p - at).append(doc.question);
    return out.append(tmpl, at);
}

// The context of every test document (see the header comment), in order; consumes the sampler's draws in
// the same order as lm-eval.
inline std::vector<std::string> mc_contexts(const std::vector<mc_doc>& test, const std::vector<mc_doc>& dev,
                                            const mc_options& o) {
    check(o.num_fewshot >= 0, "mc_contexts: num_fewshot must be >= 0");
    const std::size_t k = std::size_t(o.num_fewshot);
    check(k == 0 || dev.size() >= k + (o.shots_from_test ? 1 : 0), [&] {
        return "mc_contexts: " + std::to_string(k) + " shots need more than the " + std::to_string(dev.size()) +
               " dev documents";
    });
    python_random rnd(o.fewshot_seed);
    std::vector<std::string> contexts;
    for (const mc_doc& doc : test) {
        std::string ctx = o.description;
        std::vector<const mc_doc*> shots;
        if (k > 0 && o.sampler == fewshot_sampler::first_n) {
            for (const mc_doc& d : dev)
                if (shots.size() < k && !(o.shots_from_test && d == doc)) shots.push_back(&d);
        } else if (k > 0) {
            for (std::size_t i : rnd.sample_indices(dev.size(), k + (o.shots_from_test ? 1 : 0)))
                if (!(o.shots_from_test && dev[i] == doc)) shots.push_back(&dev[i]);
            shots.resize(std::min(shots.size(), k));
        }
        for (const mc_doc* s : shots)
            ctx += render_doc_text(o.doc_to_text, *s) + o.target_delimiter + s->choices[std::size_t(s->answer)] +
                   o.fewshot_delimiter;
        contexts.push_back(ctx + render_doc_text(o.doc_to_text, doc));
    }
    return contexts;
}

// Index of the first maximum of score(i) over i < n (numpy's argmax).
template <class Score>
int first_argmax(std::size_t n, Score&& score) {
    int best = 0;
    for (std::size_t i = 1; i < n; ++i)
        if (score(i) > score(std::size_t(best))) best = int(i);
    return best;
}

template <DecoderModel Model>
mc_report evaluate_mc(Model& model, const tokenizer& tok, const std::vector<mc_doc>& test,
                      const std::vector<mc_doc>& dev, const mc_options& options = {}) {
    const std::vector<std::string> contexts = mc_contexts(test, dev, options);
    std::vector<text_request> requests;
    for (std::size_t d = 0; d < test.size(); ++d)
        for (const std::string& c : test[d].choices)
            requests.push_back({contexts[d], options.target_delimiter + c});
    const std::vector<ll_result> lls =
        loglikelihoods(model, tok, std::span<const text_request>(requests), options.loglikelihood);
    mc_report report;
    std::size_t at = 0;
    for (std::size_t d = 0; d < test.size(); ++d) {
        const mc_doc& doc = test[d];
        mc_doc_result r{.context = contexts[d], .answer = doc.answer};
        for (std::size_t c = 0; c < doc.choices.size(); ++c, ++at) {
            r.logprobs.push_back(lls[at].logprob);
            r.greedy.push_back(lls[at].greedy);
        }
        r.pred = first_argmax(r.logprobs.size(), [&](std::size_t i) { return r.logprobs[i]; });
        r.pred_norm = first_argmax(r.logprobs.size(),
                                   [&](std::size_t i) { return r.logprobs[i] / double(code_points(doc.choices[i])); });
        r.pred_bytes = first_argmax(r.logprobs.size(),
                                    [&](std::size_t i) { return r.logprobs[i] / double(doc.choices[i].size()); });
        report.acc += r.pred == doc.answer;
        report.acc_norm += r.pred_norm == doc.answer;
        report.acc_bytes += r.pred_bytes == doc.answer;
        report.docs.push_back(std::move(r));
    }
    if (!test.empty()) {
        report.acc /= double(test.size());
        report.acc_norm /= double(test.size());
        report.acc_bytes /= double(test.size());
    }
    return report;
}

} // namespace tl::eval
