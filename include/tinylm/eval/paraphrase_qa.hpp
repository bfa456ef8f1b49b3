// tinylm/eval/paraphrase_qa.hpp: a paraphrase-consistency QA benchmark. Each fact is asked several ways;
// a model that knows the fact picks the same, right answer whatever the wording.
//
// Data: JSONL, one fact per line (benchmarks/tatar_qa/facts.jsonl):
//   {"id": "...", "source": "file:line ...", "questions": ["phrasing 1", "phrasing 2", ...],
//    "answer": "...", "distractors": ["...", "...", "..."]}
// Each phrasing is a prompt that the answer completes, or a sentence with one blank "___" where the answer goes.
// A blank phrasing is scored the way lm-eval scores Winogrande (partial evaluation): the choice is written into
// the blank and the model scores the rest of the sentence after it (the same text for every choice, so the sum
// is compared and the choice's own frequency plays no part). That suits languages such as Tatar where the
// telling word comes after the answer ("___ кар ява": snow is white). A completion phrasing is scored by
// lm-eval's multiple-choice rules (see
// loglikelihood.hpp): context = the prompt template with {question} replaced, continuation = " " + choice;
// the chosen choice maximises the log-likelihood divided by the choice's length in characters (acc_norm;
// qa_score::sum uses the plain sum; qa_score::mutual_info subtracts the choice's log-likelihood after an
// empty context, lm-eval's acc_mutual_info, so that a choice is not picked for being a frequent word). Choices
// are compared in an order shuffled per question (a fixed hash), so that ties, which a context-free scorer
// meets often, do not favour the answer.
//
// Report: accuracy over all questions; consistency = share of facts whose chosen choice is the same for
// every phrasing; consistent-and-correct = share of facts answered right for every phrasing. A scorer that
// ignores the question (the unigram floor) is perfectly consistent, so consistency alone proves nothing:
// the headline is consistent-and-correct, against the untrained-model and unigram floors. Accuracy is also
// reported per group of facts (the id up to its first '_': month, kind, nt, ...).
#pragma once

#include <tinylm/eval/loglikelihood.hpp>
#include <tinylm/eval/multiple_choice.hpp>
#include <tinylm/eval/unigram.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace tl::eval {

struct qa_fact {
    std::string id{}, source{}, answer{};
    std::vector<std::string> questions{}, distractors{};
    std::string stated{}; // optional: the phrase the corpus states the fact with (checked by test_eval)
};

inline constexpr std::string_view qa_blank = "___";

struct qa_set {
    std::vector<qa_fact> facts;
    std::size_t question_count() const {
        std::size_t n = 0;
        for (const qa_fact& f : facts)
            n += f.questions.size();
        return n;
    }
};

// Reads the JSONL file; a malformed line is an error naming the file and the line.
inline qa_set load_qa(const std::filesystem::path& path) {
    std::ifstream in(path);
    check(bool(in), [&] { return "load_qa: cannot open " + path.string(); });
    qa_set set;
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            const nlohmann::json j = nlohmann::json::parse(line);
            set.facts.push_back({j.at("id").get<std::string>(), j.at("source").get<std::string>(),
                                 j.at("answer").get<std::string>(), j.at("questions").get<std::vector<std::string>>(),
                                 j.at("distractors").get<std::vector<std::string>>(), j.value("stated", "")});
        } catch (const nlohmann::json::exception& e) {
            fail("load_qa: " + path.string() + ":" + std::to_string(line_no) + ": " + e.what());
        }
    }
    return set;
}

struct qa_requirements {
    std::size_t min_facts = 60, min_phrasings = 3, distractors = 3;
};

// What is wrong with the set (empty: nothing): too few facts, phrasings or distractors, duplicates, an
// answer among its distractors, a missing source, a repeated id.
inline std::vector<std::string> qa_problems(const qa_set& set, const qa_requirements& req = {}) {
    std::vector<std::string> problems;
    if (set.facts.size() < req.min_facts)
        problems.push_back(std::to_string(set.facts.size()) + " facts, fewer than " + std::to_string(req.min_facts));
    std::set<std::string> ids;
    for (const qa_fact& f : set.facts) {
        const std::string who = "fact \"" + f.id + "\": ";
        if (f.id.empty() || !ids.insert(f.id).second) problems.push_back(who + "empty or repeated id");
        if (f.source.empty()) problems.push_back(who + "no source");
        const std::set<std::string> phrasings(f.questions.begin(), f.questions.end());
        if (phrasings.size() != f.questions.size() || phrasings.size() < req.min_phrasings)
            problems.push_back(who + std::to_string(phrasings.size()) + " distinct phrasings of " +
                               std::to_string(f.questions.size()) + ", need " + std::to_string(req.min_phrasings));
        std::set<std::string> choices(f.distractors.begin(), f.distractors.end());
        if (choices.size() != f.distractors.size() || f.distractors.size() != req.distractors)
            problems.push_back(who + "needs " + std::to_string(req.distractors) + " distinct distractors");
        if (f.answer.empty() || !choices.insert(f.answer).second)
            problems.push_back(who + "the answer is empty or among the distractors");
        for (const std::string& c : choices)
            if (c.empty()) problems.push_back(who + "an empty choice");
        for (const std::string& q : f.questions) {
            const std::size_t blank = q.find(qa_blank);
            if (blank == std::string::npos) continue;
            if (q.find(qa_blank, blank + 1) != std::string::npos)
                problems.push_back(who + "more than one blank in \"" + q + "\"");
            else if (q.find_first_not_of(" ", blank + qa_blank.size()) == std::string::npos)
                problems.push_back(who + "nothing after the blank in \"" + q + "\" (write it without the blank)");
        }
    }
    return problems;
}

enum class qa_score { per_char, sum, mutual_info };

struct qa_options {
    std::string prompt = "{question}"; // template of the context
    std::string target_delimiter = " ";
    qa_score score = qa_score::per_char;
    ll_options loglikelihood{};
};

struct qa_question_result {
    std::size_t fact = 0, phrasing = 0;
    std::vector<double> logprobs{}; // answer first, then the distractors in file order
    int chosen = 0;                 // index into (answer, distractors...); 0 is right
};

struct qa_group {
    std::string name{};
    std::size_t questions = 0, correct = 0;
};

struct qa_report {
    std::size_t facts = 0, questions = 0, correct = 0, consistent_facts = 0, consistent_correct_facts = 0;
    double chance = 0; // expected accuracy of a random pick
    std::vector<qa_question_result> results{};
    std::vector<qa_group> groups{}; // in order of first appearance
    double accuracy() const { return questions ? double(correct) / double(questions) : NAN; }
    double consistency() const { return facts ? double(consistent_facts) / double(facts) : NAN; }
    double consistent_correct() const { return facts ? double(consistent_correct_facts) / double(facts) : NAN; }
    std::string summary() const {
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "accuracy %.3f (%zu/%zu questions, chance %.3f), consistency %.3f (%zu/%zu facts), "
                      "consistent and correct %.3f (%zu/%zu facts)",
                      accuracy(), correct, questions, chance, consistency(), consistent_facts, facts,
                      consistent_correct(), consistent_correct_facts, facts);
        return buf;
    }
    std::string group_summary() const { // "month 12/33, kind 30/81, ..."
        std::string out;
        for (const qa_group& g : groups)
            out += (out.empty() ? "" : ", ") + g.name + " " + std::to_string(g.correct) + "/" +
                   std::to_string(g.questions);
        return out;
    }
};

// The group of a fact: its id up to the first '_' (the whole id when there is none).
inline std::string qa_group_of(const std::string& id) { return id.substr(0, id.find('_')); }

namespace detail {
inline std::uint64_t qa_hash(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ull) {
    for (unsigned char c : s)
        h = (h ^ c) * 0x100000001b3ull;
    return h;
}
// The order in which the choices of (fact, phrasing) are compared: a permutation fixed by a hash.
inline std::vector<std::size_t> qa_order(const qa_fact& f, std::size_t phrasing, std::size_t n) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i)
        order[i] = i;
    std::uint64_t h = qa_hash(f.questions[phrasing], qa_hash(f.id));
    for (std::size_t i = n; i > 1; --i) { // Fisher-Yates driven by the hash
        h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull + i;
        std::swap(order[i - 1], order[std::size_t(h % i)]);
    }
    return order;
}
} // namespace detail

inline std::vector<std::string> qa_choices(const qa_fact& f) {
    std::vector<std::string> c{f.answer};
    c.insert(c.end(), f.distractors.begin(), f.distractors.end());
    return c;
}

// One (context, continuation) request per fact, phrasing and choice, in that order; for mutual_info then one
// request per fact and choice with an empty context. A blank phrasing gives (text before the blank + choice,
// text after the blank).
inline std::vector<text_request> qa_requests(const qa_set& set, const qa_options& o) {
    std::vector<text_request> reqs;
    for (const qa_fact& f : set.facts)
        for (const std::string& q : f.questions) {
            const std::string ctx = render_doc_text(o.prompt, mc_doc{q, {}, 0});
            const std::size_t blank = ctx.find(qa_blank);
            for (const std::string& c : qa_choices(f))
                reqs.push_back(blank == std::string::npos
                                   ? text_request{ctx, o.target_delimiter + c}
                                   : text_request{ctx.substr(0, blank) + c, ctx.substr(blank + qa_blank.size())});
        }
    if (o.score == qa_score::mutual_info)
        for (const qa_fact& f : set.facts)
            for (const std::string& c : qa_choices(f))
                reqs.push_back({"", o.target_delimiter + c});
    return reqs;
}

// The report from the log-likelihoods of qa_requests(set, options), in that order.
inline qa_report qa_report_from(const qa_set& set, const qa_options& o, std::span<const double> lls) {
    qa_report r;
    std::size_t conditional = 0, choices_in_set = 0; // request counts, as qa_requests makes them
    for (const qa_fact& f : set.facts) {
        conditional += f.questions.size() * (1 + f.distractors.size());
        choices_in_set += 1 + f.distractors.size();
    }
    const bool mutual_info = o.score == qa_score::mutual_info;
    check(lls.size() == conditional + (mutual_info ? choices_in_set : 0),
          "qa_report_from: one log-likelihood per request of qa_requests needed");
    std::size_t at = 0, unconditional = conditional; // this fact's empty-context requests
    for (std::size_t fi = 0; fi < set.facts.size(); ++fi) {
        const qa_fact& f = set.facts[fi];
        const std::vector<std::string> choices = qa_choices(f);
        const std::string group = qa_group_of(f.id);
        auto g = std::find_if(r.groups.begin(), r.groups.end(), [&](const qa_group& x) { return x.name == group; });
        if (g == r.groups.end()) g = r.groups.insert(g, {group});
        bool all_same = true, all_right = true;
        int first_choice = -1;
        for (std::size_t p = 0; p < f.questions.size(); ++p) {
            qa_question_result q{.fact = fi, .phrasing = p};
            for (std::size_t c = 0; c < choices.size(); ++c)
                q.logprobs.push_back(lls[at++]);
            const bool blank = f.questions[p].find(qa_blank) != std::string::npos;
            const auto score = [&](std::size_t c) {
                if (blank) return q.logprobs[c]; // the same continuation for every choice
                switch (o.score) {
                case qa_score::sum:
                    return q.logprobs[c];
                case qa_score::mutual_info:
                    return q.logprobs[c] - lls[unconditional + c];
                default:
                    return q.logprobs[c] / double(code_points(choices[c]));
                }
            };
            const std::vector<std::size_t> order = detail::qa_order(f, p, choices.size());
            std::size_t best = order[0];
            for (std::size_t i = 1; i < order.size(); ++i)
                if (score(order[i]) > score(best)) best = order[i];
            q.chosen = int(best);
            r.correct += best == 0;
            g->questions += 1;
            g->correct += best == 0;
            r.chance += 1.0 / double(choices.size());
            all_right = all_right && best == 0;
            if (first_choice < 0) first_choice = q.chosen;
            all_same = all_same && q.chosen == first_choice;
            r.results.push_back(std::move(q));
        }
        r.consistent_facts += all_same;
        r.consistent_correct_facts += all_right;
        unconditional += choices.size();
    }
    r.facts = set.facts.size();
    r.questions = r.results.size();
    if (r.questions) r.chance /= double(r.questions);
    return r;
}

// The benchmark with a model (a trained one, or a freshly initialised one as the untrained floor).
template <DecoderModel Model>
qa_report evaluate_qa(Model& model, const tokenizer& tok, const qa_set& set, const qa_options& options = {}) {
    const std::vector<text_request> reqs = qa_requests(set, options);
    const std::vector<ll_result> res =
        loglikelihoods(model, tok, std::span<const text_request>(reqs), options.loglikelihood);
    std::vector<double> lls;
    for (const ll_result& r : res)
        lls.push_back(r.logprob);
    return qa_report_from(set, options, lls);
}

// The unigram floor: the same continuation tokens, scored by token frequency alone.
inline qa_report evaluate_qa(const unigram_model& unigram, const tokenizer& tok, const qa_set& set,
                             const qa_options& options = {}) {
    std::vector<double> lls;
    for (const text_request& r : qa_requests(set, options)) {
        const token_request t = encode_pair(tok, r.context, r.continuation, options.loglikelihood);
        lls.push_back(unigram.loglikelihood(t.continuation));
    }
    return qa_report_from(set, options, lls);
}

} // namespace tl::eval
