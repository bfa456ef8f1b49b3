// examples/common/evaluate_commands.hpp: the evaluation subcommands (bpb, mc, qa) of 06_evaluate and of
// `tinylm eval`: their options and what they run on a loaded model.
//
//   recipes::evaluate::settings s;
//   recipes::evaluate::add_commands(app, s, add_model_flags); // bpb, mc, qa with their options
//   ... s.command = the subcommand given ...
//   tl::with_pretrained(dir, [&](auto& model) { return recipes::evaluate::run(model, s, tok, name); });
#pragma once

#include "options.hpp"

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv.hpp>
#include <tinylm/eval/bits_per_byte.hpp>
#include <tinylm/eval/multiple_choice.hpp>
#include <tinylm/eval/paraphrase_qa.hpp>
#include <tinylm/eval/unigram.hpp>
#include <tinylm/model/kv_cache.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

namespace recipes::evaluate {

namespace fs = std::filesystem;
namespace te = tl::eval;

struct settings {
    std::string command;
    recipes::checkpoint_flags model;
    bool json = false; // the report as one JSON object on stdout, everything else on stderr
    // bpb
    std::vector<fs::path> texts;
    std::string split = "paragraph";
    te::bpb_options bpb{};
    std::size_t max_docs = 0;
    std::string precision = "f32", kv_cache = "f32"; // what decoding steps read; not f32: scored by steps
    // mc
    fs::path task, dev;
    te::mc_options mc{};
    // qa
    fs::path qa_set_path;
    bool floors = false;
    std::vector<fs::path> train_texts;
    std::string qa_score = "per-char";
};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    tl::check(bool(in), [&] { return "06_evaluate: cannot read " + p.string(); });
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Documents of a text: paragraphs (blank-line separated), lines, or the whole file.
std::vector<std::string> split_documents(const std::string& text, const std::string& mode) {
    std::vector<std::string> docs;
    if (mode == "file") return {text};
    std::istringstream in(text);
    std::string line, cur;
    while (std::getline(in, line)) {
        const bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
        if (mode == "line") {
            if (!blank) docs.push_back(line);
            continue;
        }
        if (blank) {
            if (!cur.empty()) docs.push_back(cur);
            cur.clear();
        } else {
            cur += cur.empty() ? line : "\n" + line;
        }
    }
    if (!cur.empty()) docs.push_back(cur);
    return docs;
}

void print_qa(const char* who, const te::qa_report& r) {
    std::printf("%-10s %s\n%-10s by group: %s\n", who, r.summary().c_str(), "", r.group_summary().c_str());
}

nlohmann::json qa_json(const te::qa_report& r) {
    nlohmann::json groups = nlohmann::json::object();
    for (const te::qa_group& g : r.groups)
        groups[g.name] = {{"correct", g.correct}, {"questions", g.questions}};
    return {{"accuracy", r.accuracy()},
            {"correct", r.correct},
            {"questions", r.questions},
            {"chance", r.chance},
            {"consistency", r.consistency()},
            {"consistent_facts", r.consistent_facts},
            {"consistent_correct", r.consistent_correct()},
            {"consistent_correct_facts", r.consistent_correct_facts},
            {"facts", r.facts},
            {"groups", groups}};
}

template <class Model>
int run(Model& model, const settings& s, const tl::tokenizer& tok, const std::string& name) {
    const tl::model_config& c = model.config();
    const tl::token_t prefix = te::default_prefix_token(tok);
    const bool json = s.json; // stdout holds the JSON alone
    std::fprintf(json ? stderr : stdout, "model: %s (%lld parameters), tokenizer %zu tokens, prefix token %d\n",
                 name.c_str(), static_cast<long long>(model.parameter_count()), tok.vocab_size(), prefix);
    if (s.command == "bpb") {
        std::vector<std::string> docs;
        for (const fs::path& p : s.texts)
            for (std::string& d : split_documents(read_file(p), s.split))
                if (s.max_docs == 0 || docs.size() < s.max_docs) docs.push_back(std::move(d));
        tl::check(!docs.empty(), [&] {
            std::string files;
            for (const fs::path& p : s.texts) {
                if (!files.empty()) files += ", ";
                files += p.string();
            }
            return "--text: no documents in " + files + " (empty or blank text)";
        });
        te::bpb_options o = s.bpb;
        o.prefix_token = prefix;
        // The copies serve the products of decoding steps (up to detail::max_gemv_rows rows): the model generation
        // decodes with. They live for this evaluation only.
        const tl::decoding_format format = tl::parse_decoding_format(s.precision);
        o.by_steps = o.by_steps || format != tl::decoding_format::f32 || s.kv_cache != "f32";
        tl::check(!o.by_steps || o.batch <= tl::detail::max_gemv_rows, [&] {
            return "--batch: at most " + std::to_string(tl::detail::max_gemv_rows) +
                   " windows a step when scoring by steps (a product of more rows reads the f32 weights), got " +
                   std::to_string(o.batch);
        });
        std::optional<tl::decoding_weights> copies;
        if (format != tl::decoding_format::f32) copies.emplace(model.parameter_entries(), format);
        if constexpr (requires { model.set_kv_precision(tl::kv_precision::f32); })
            model.set_kv_precision(tl::parse_kv_precision(s.kv_cache));
        const auto start = std::chrono::steady_clock::now();
        auto said = start;
        o.progress = [&](std::size_t done, std::size_t total) { // on stderr every 10 s, while there is more to do
            const auto now = std::chrono::steady_clock::now();
            if (done >= total || now - said < std::chrono::seconds(10)) return;
            said = now;
            const double rate = double(done) / std::chrono::duration<double>(now - start).count();
            std::fprintf(stderr, "bpb: %zu of %zu tokens (%.0f%%), %.0f tokens/s, %.0f s left\n", done, total,
                         100.0 * double(done) / double(total), rate, double(total - done) / rate);
        };
        const te::bpb_report r = te::evaluate_bpb(model, tok, std::span<const std::string>(docs), o);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const long long context = o.context ? o.context : c.max_seq_len, stride = o.stride ? o.stride : context;
        if (json) {
            const nlohmann::json j{{"documents", r.documents},
                                   {"bytes", r.bytes},
                                   {"tokens", r.tokens},
                                   {"unscored_tokens", r.unscored_tokens},
                                   {"windows", r.windows},
                                   {"context", context},
                                   {"stride", stride},
                                   {"by_steps", o.by_steps},
                                   {"precision", s.precision},
                                   {"kv_cache", s.kv_cache},
                                   {"nll", r.nll},
                                   {"nats_per_token", r.nats_per_token()},
                                   {"perplexity", r.perplexity()},
                                   {"bits_per_byte", r.bits_per_byte()},
                                   {"seconds", seconds}};
            std::printf("%s\n", j.dump().c_str());
            return 0;
        }
        std::printf("bpb: %zu documents, %zu bytes, %zu tokens (%zu unscored), %zu windows (context %lld, stride "
                    "%lld)%s\n",
                    r.documents, r.bytes, r.tokens, r.unscored_tokens, r.windows, context, stride,
                    o.by_steps ? (", by decoding steps: weights " + s.precision + ", KV cache " + s.kv_cache).c_str()
                               : "");
        std::fprintf(stderr, "bpb: %.1f s, %.0f tokens/s\n", seconds, double(r.tokens + r.unscored_tokens) / seconds);
        std::printf("loss %.4f nats/token, perplexity %.2f, bits per byte %.4f\n", r.nats_per_token(), r.perplexity(),
                    r.bits_per_byte());
    } else if (s.command == "mc") {
        const std::vector<te::mc_doc> test = te::load_mc_jsonl(s.task);
        tl::check(!test.empty(), [&] { return "--task: no documents in " + s.task.string() + " (an empty task)"; });
        const std::vector<te::mc_doc> dev = s.dev.empty() ? test : te::load_mc_jsonl(s.dev);
        te::mc_options o = s.mc;
        o.shots_from_test = s.dev.empty();
        o.loglikelihood.prefix_token = prefix;
        const auto start = std::chrono::steady_clock::now();
        const te::mc_report r = te::evaluate_mc(model, tok, test, dev, o);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (json) {
            const nlohmann::json j{
                {"task", s.task.string()}, {"documents", test.size()}, {"shots", o.num_fewshot}, {"acc", r.acc},
                {"acc_norm", r.acc_norm},  {"acc_bytes", r.acc_bytes}, {"seconds", seconds}};
            std::printf("%s\n", j.dump().c_str());
            return 0;
        }
        std::printf("mc: %s, %zu documents, %d-shot: acc %.4f, acc_norm %.4f, acc_bytes %.4f\n", s.task.c_str(),
                    test.size(), o.num_fewshot, r.acc, r.acc_norm, r.acc_bytes);
    } else {
        const te::qa_set set = te::load_qa(s.qa_set_path);
        for (const std::string& p : te::qa_problems(set, {.min_facts = 1}))
            std::fprintf(stderr, "warning: %s\n", p.c_str());
        te::qa_options o{.score = s.qa_score == "sum"           ? te::qa_score::sum
                                  : s.qa_score == "mutual-info" ? te::qa_score::mutual_info
                                                                : te::qa_score::per_char};
        o.loglikelihood.prefix_token = prefix;
        nlohmann::json j{{"set", s.qa_set_path.string()},
                         {"facts", set.facts.size()},
                         {"questions", set.question_count()},
                         {"score", s.qa_score}};
        auto report = [&](const char* who, const te::qa_report& r) {
            if (json)
                j[who] = qa_json(r);
            else
                print_qa(who, r);
        };
        if (!json)
            std::printf("qa: %s, %zu facts, %zu questions\n", s.qa_set_path.c_str(), set.facts.size(),
                        set.question_count());
        report("model", te::evaluate_qa(model, tok, set, o));
        if (s.floors) {
            Model untrained(c, s.model.seed);
            report("untrained", te::evaluate_qa(untrained, tok, set, o));
            if (!s.train_texts.empty()) {
                te::unigram_model uni(tok.vocab_size());
                for (const fs::path& p : s.train_texts)
                    uni.add_text(tok, read_file(p), 2);
                report("unigram", te::evaluate_qa(uni, tok, set, o));
            } else if (!json) {
                std::printf("unigram    (give --train-text to compute the unigram floor)\n");
            }
        }
        if (json) std::printf("%s\n", j.dump().c_str());
    }
    return 0;
}

// Adds bpb, mc and qa to `app`; `common(sub)` adds the model options each of them takes.
inline void add_commands(CLI::App& app, settings& s, const std::function<void(CLI::App*)>& common) {
    CLI::App* bpb = app.add_subcommand("bpb", "perplexity and bits per byte of held-out text");
    common(bpb);
    bpb->add_option("--text", s.texts, "UTF-8 text files")->required();
    bpb->add_option("--split", s.split, "documents are paragraphs, lines or whole files")
        ->check(CLI::IsMember({"paragraph", "line", "file"}));
    // --context and --stride default to 0 (the model's context, the window); given, they are at least 1.
    bpb->add_option("--context", s.bpb.context, "window in tokens (default 0: the model's context)")
        ->check(at_least(tl::index_t{1}, "window in tokens"));
    bpb->add_option("--stride", s.bpb.stride, "tokens a window advances (default 0: the window)")
        ->check(at_least(tl::index_t{1}, "tokens a window advances"));
    bpb->add_option("--batch", s.bpb.batch, "windows per forward")
        ->check(at_least(tl::index_t{1}, "windows per forward"));
    bpb->add_option("--max-docs", s.max_docs, "use only the first N documents (0: all)")
        ->check(at_least(std::size_t{0}, "documents to use; 0: all"));
    bpb->add_flag("--by-steps", s.bpb.by_steps,
                  "score each token from a decoding step (one token a step, --batch windows together, at most 8), "
                  "as generation computes it; implied by --precision or --kv-cache other than f32");
    bpb->add_option("--precision", s.precision,
                    "the weights the decoding steps read: f32, or bf16, q8_0, q4_0 copies as `tinylm generate "
                    "--precision` makes them (docs/precision.md): what quantising costs in bits per byte")
        ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0"}))
        ->capture_default_str();
    bpb->add_option("--kv-cache", s.kv_cache, "the precision of the decoding steps' KV cache: f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    bpb->add_flag("--json", s.json,
                  "print the report as one JSON object (documents, bytes, tokens, windows, context, stride, by_steps, "
                  "precision, kv_cache, nll, nats_per_token, perplexity, bits_per_byte, seconds)");
    CLI::App* mc = app.add_subcommand("mc", "a multiple-choice task (JSONL: question, choices, answer)");
    common(mc);
    mc->add_option("--task", s.task, "test documents")->required();
    mc->add_option("--dev", s.dev, "documents for the shots (default: the test documents, never the asked one)");
    mc->add_option("--shots", s.mc.num_fewshot, "number of shots")->check(in_range(0, 100, "number of shots"));
    mc->add_option("--fewshot-seed", s.mc.fewshot_seed, "seed of the shot sampler (lm-eval's default 1234)");
    mc->add_option("--template", s.mc.doc_to_text, "prompt, {question} is replaced");
    mc->add_flag("--json", s.json,
                 "print the report as one JSON object (task, documents, shots, acc, acc_norm, acc_bytes, seconds)");
    CLI::App* qa = app.add_subcommand("qa", "the paraphrase-consistency QA benchmark");
    common(qa);
    qa->add_option("--set", s.qa_set_path, "facts JSONL");
    qa->add_option("--score", s.qa_score, "per-char (acc_norm), sum, or mutual-info (minus the empty-context score)")
        ->check(CLI::IsMember({"per-char", "sum", "mutual-info"}));
    qa->add_flag("--floors", s.floors, "also score an untrained model and (with --train-text) a unigram model");
    qa->add_option("--train-text", s.train_texts, "training text for the unigram floor");
    qa->add_flag("--json", s.json,
                 "print the report as one JSON object (set, facts, questions, score, and for model, untrained and "
                 "unigram: accuracy, correct, questions, chance, consistency, consistent_facts, consistent_correct, "
                 "consistent_correct_facts, facts, groups)");
}

} // namespace recipes::evaluate
