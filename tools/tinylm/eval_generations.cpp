// tinylm eval generations: how a model's continuations fail, per prompt and overall, at several temperatures:
// distinct-1/2/3, repeated n-gram rate, longest repeated span and the rate of n-grams copied verbatim from the
// training corpus (include/tinylm/eval/repetition.hpp defines each). A markdown report on stdout, or --json
// with every generated text so that the numbers can be recomputed.
#include "common.hpp"
#include "course_prompts.hpp"

#include <tinylm/data/shards.hpp>
#include <tinylm/eval/repetition.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <latch>
#include <mutex>
#include <sstream>
#include <thread>

namespace tinylm_cli {

namespace {

namespace te = tl::eval;

struct generations_flags {
    model_flags model;
    sampling_flags sampling;
    fs::path prompts_file;
    std::vector<double> temperatures{0.7, 1.0, 1.3};
    std::vector<fs::path> corpus;
    int samples = 1;
    int batch = 4; // generations decoded together
    te::repetition_options rep{};
    bool json = false;
};

std::vector<std::string> read_prompts(const fs::path& file) {
    if (file.empty()) return {recipes::course_prompts.begin(), recipes::course_prompts.end()};
    std::ifstream in(file);
    tl::check(bool(in), [&] { return "tinylm eval generations: cannot read --prompts " + file.string(); });
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
    }
    tl::check(!out.empty(), [&] { return "tinylm eval generations: " + file.string() + " holds no prompt"; });
    return out;
}

bool is_shard(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    char magic[8] = {};
    in.read(magic, 8);
    return in && std::equal(magic, magic + 8, tl::data::shard_magic);
}

// A corpus file is text (each paragraph one text) or a tinylm token shard (each <bos> ... <eos> chunk decoded
// with the model's tokenizer, which must be the shard's).
void index_corpus(te::ngram_index& index, const fs::path& p, const tl::tokenizer& tok) {
    if (!is_shard(p)) {
        std::ifstream in(p, std::ios::binary);
        tl::check(bool(in), [&] { return "tinylm eval generations: cannot read --corpus " + p.string(); });
        std::stringstream ss;
        ss << in.rdbuf();
        index.add_paragraphs(ss.str());
        return;
    }
    const tl::data::token_shard shard(p);
    const std::uint32_t bos = shard.header().bos, eos = shard.header().eos;
    std::vector<tl::token_t> doc;
    auto flush = [&] {
        if (!doc.empty()) index.add(tok.decode(doc, true));
        doc.clear();
    };
    for (std::uint64_t i = 0; i < shard.size(); ++i) {
        const std::uint32_t id = shard[i];
        if (id == bos || id == eos) {
            flush();
            continue;
        }
        tl::check(id < tok.vocab_size(), [&] {
            return "tinylm eval generations: " + p.string() + " holds token " + std::to_string(id) +
                   ", outside the model's tokenizer (" + std::to_string(tok.vocab_size()) + " tokens)";
        });
        doc.push_back(tl::token_t(id));
    }
    flush();
}

std::string cell(double v) {
    if (std::isnan(v)) return "–";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    return buf;
}

nlohmann::ordered_json number(double v) {
    return std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v);
}

nlohmann::ordered_json metrics_json(std::size_t words, const std::array<double, 3>& distinct, double repeated,
                                    std::size_t longest, const std::string& longest_text, double copied) {
    return {{"words", words},
            {"distinct_1", number(distinct[0])},
            {"distinct_2", number(distinct[1])},
            {"distinct_3", number(distinct[2])},
            {"repeated_ngram_rate", number(repeated)},
            {"longest_repeat", longest},
            {"longest_repeat_text", longest_text},
            {"copied_rate", number(copied)}};
}

struct sample {
    std::size_t prompt = 0;
    std::uint64_t seed = 0;
    std::string text;
    std::size_t tokens = 0;
};

// job(k) for k in [0, count) from `threads` threads, started together (each then takes the next k); the first
// exception thrown is rethrown here once every thread has stopped.
template <class Job>
void run_from_threads(std::size_t count, int threads, const Job& job) {
    const int n = std::max(1, std::min<int>(threads, int(count)));
    std::atomic<std::size_t> next{0};
    std::exception_ptr failed;
    std::mutex failed_mutex;
    std::latch started(n);
    auto work = [&] {
        started.arrive_and_wait(); // else a small model's first generations end before the other threads start
        for (std::size_t k; (k = next++) < count;) {
            try {
                job(k);
            } catch (...) {
                std::lock_guard lock(failed_mutex);
                if (!failed) failed = std::current_exception();
                next = count; // the others stop after their current generation
            }
        }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < n; ++t)
        pool.emplace_back(work);
    work();
    for (std::thread& t : pool)
        t.join();
    if (failed) std::rethrow_exception(failed);
}

int run(const generations_flags& f) {
    const std::unique_ptr<tl::text_model> m = open_model(f.model);
    m->set_batch_rows(f.batch);
    const std::vector<std::string> prompts = read_prompts(f.prompts_file);
    const tl::index_t context = m->config().max_seq_len;
    std::vector<std::vector<tl::token_t>> prompt_ids;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        prompt_ids.push_back(m->tokenizer().encode(prompts[i], {.add_special_tokens = true}));
        tl::check(!prompt_ids.back().empty() && tl::index_t(prompt_ids.back().size()) < context, [&] {
            return "tinylm eval generations: prompt " + std::to_string(i + 1) + " has " +
                   std::to_string(prompt_ids.back().size()) + " tokens; the context is " + std::to_string(context);
        });
    }

    std::unique_ptr<te::ngram_index> index;
    std::size_t corpus_bytes = 0;
    if (!f.corpus.empty()) {
        const auto start = std::chrono::steady_clock::now();
        index = std::make_unique<te::ngram_index>(f.rep.copy_n);
        for (const fs::path& p : f.corpus) {
            index_corpus(*index, p, m->tokenizer());
            corpus_bytes += fs::file_size(p);
        }
        index->finalize();
        std::fprintf(stderr, "corpus: %zu files, %.1f MB, %zu distinct %zu-grams (%.1f s)\n", f.corpus.size(),
                     double(corpus_bytes) / 1e6, index->distinct(), f.rep.copy_n,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }

    // Each temperature as if given with --temperature: a model that decodes greedily by default samples with its
    // generation_config's top-k and top-p (text_model::options_with).
    auto options_at = [&](double temperature) {
        tl::sampling_overrides given = f.sampling.given;
        given.temperature = temperature;
        tl::text_generation_options o = m->options_with(given);
        if (!given.max_tokens) o.generation.max_new_tokens = 100;
        return o;
    };
    const tl::text_generation_options base = options_at(f.temperatures.front());
    nlohmann::ordered_json out{{"model", m->name()},
                               {"prompts", prompts},
                               {"samples_per_prompt", f.samples},
                               {"max_tokens", base.generation.max_new_tokens},
                               {"top_k", base.generation.sampling.top_k},
                               {"top_p", base.generation.sampling.top_p},
                               {"min_p", base.generation.sampling.min_p},
                               {"repetition_penalty", base.generation.sampling.repetition_penalty},
                               {"seed", f.sampling.given.seed},
                               {"rep_n", f.rep.rep_n},
                               {"copy_n", f.rep.copy_n},
                               {"corpus", nlohmann::ordered_json::array()},
                               {"temperatures", nlohmann::ordered_json::array()}};
    for (const fs::path& p : f.corpus)
        out["corpus"].push_back(p.string());
    std::ostringstream md;
    md << "# Generations of " << m->name() << "\n\n"
       << prompts.size() << " prompts × " << f.samples << " sample(s), up to " << base.generation.max_new_tokens
       << " new tokens, top-k " << base.generation.sampling.top_k << ", top-p " << base.generation.sampling.top_p
       << ", repetition penalty " << base.generation.sampling.repetition_penalty << ", seed " << f.sampling.given.seed
       << " (prompt i, sample s: seed + i × samples + s). Words: runs of letters and digits, "
       << "lower-cased. rep-" << f.rep.rep_n << ": " << f.rep.rep_n
       << "-grams repeating an earlier one of the same text; longest: the longest run of words that occurs twice; "
       << "copied: " << f.rep.copy_n << "-grams found in the corpus"
       << (index ? "" : " (no --corpus given: not measured)") << ".\n";
    nlohmann::ordered_json summary = nlohmann::ordered_json::array();
    std::ostringstream summary_md;
    summary_md << "\n## Overall\n\n| temperature | words | distinct-1 | distinct-2 | distinct-3 | rep-" << f.rep.rep_n
               << " | longest | copied " << f.rep.copy_n
               << "-grams | tokens/s |\n|---|---|---|---|---|---|---|---|---|\n";

    { // one token first, so that the first temperature's tokens/s does not include starting the threads
        tl::text_generation_options warm = base;
        warm.generation.max_new_tokens = 1;
        m->complete(prompt_ids.front(), warm, [](std::string_view) { return true; });
    }
    for (const double temperature : f.temperatures) {
        // Prompt i's sample s is generation i * samples + s, with that seed; --batch of them are decoded together
        // (each gets the tokens it would get alone: text_model::set_batch_rows).
        std::vector<sample> samples(prompts.size() * std::size_t(f.samples));
        const tl::batch_counts before = m->batch_stats();
        const auto start = std::chrono::steady_clock::now();
        run_from_threads(samples.size(), f.batch, [&](std::size_t k) {
            tl::text_generation_options o = options_at(temperature);
            o.generation.sampling.seed = f.sampling.given.seed + k;
            const std::size_t i = k / std::size_t(f.samples);
            const tl::text_completion c = m->complete(prompt_ids[i], o, [](std::string_view) { return true; });
            samples[k] = {i, o.generation.sampling.seed, c.text, c.tokens.size()};
        });
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::size_t tokens = 0;
        for (const sample& s : samples)
            tokens += s.tokens;
        const tl::batch_counts steps = m->batch_stats();
        std::fprintf(stderr, "temperature %g: %zu generations, %zu tokens in %.1f s (%.1f tokens/s; %.1f a step)\n",
                     temperature, samples.size(), tokens, seconds, seconds > 0 ? double(tokens) / seconds : 0.0,
                     steps.steps > before.steps ? double(steps.rows - before.rows) / double(steps.steps - before.steps)
                                                : 1.0);
        std::vector<std::string> texts;
        for (const sample& s : samples)
            texts.push_back(s.text);
        const te::repetition_report r = te::analyse_repetition(texts, f.rep, index.get());

        char head[64];
        std::snprintf(head, sizeof head, "%g", temperature);
        md << "\n## Temperature " << head << "\n\n| prompt | words | distinct-1 | distinct-2 | distinct-3 | rep-"
           << f.rep.rep_n << " | longest | copied |\n|---|---|---|---|---|---|---|---|\n";
        nlohmann::ordered_json per_prompt = nlohmann::ordered_json::array();
        for (std::size_t k = 0; k < samples.size(); ++k) {
            const te::text_repetition& t = r.texts[k];
            md << "| " << samples[k].prompt + 1 << (f.samples > 1 ? "." + std::to_string(k % f.samples + 1) : "")
               << " | " << t.words << " | " << cell(t.distinct[0]) << " | " << cell(t.distinct[1]) << " | "
               << cell(t.distinct[2]) << " | " << cell(t.repeated_ngram_rate) << " | " << t.longest_repeat << " | "
               << cell(t.copied_rate) << " |\n";
            nlohmann::ordered_json j{{"prompt", prompts[samples[k].prompt]},
                                     {"prompt_index", samples[k].prompt},
                                     {"seed", samples[k].seed},
                                     {"text", samples[k].text},
                                     {"tokens", samples[k].tokens}};
            j.update(metrics_json(t.words, t.distinct, t.repeated_ngram_rate, t.longest_repeat, t.longest_repeat_text,
                                  t.copied_rate));
            per_prompt.push_back(j);
        }
        const std::string& longest_text =
            r.texts.empty() ? std::string() : r.texts[r.longest_repeat_text_index].longest_repeat_text;
        md << "| **all** | " << r.words << " | " << cell(r.distinct[0]) << " | " << cell(r.distinct[1]) << " | "
           << cell(r.distinct[2]) << " | " << cell(r.repeated_ngram_rate) << " | " << r.longest_repeat << " | "
           << cell(r.copied_rate) << " |\n";
        if (r.longest_repeat > 0)
            md << "\nLongest repeated span (" << r.longest_repeat << " words, prompt "
               << samples[r.longest_repeat_text_index].prompt + 1 << "): «" << longest_text << "»\n";
        char rate[32];
        std::snprintf(rate, sizeof rate, "%.1f", seconds > 0 ? double(tokens) / seconds : 0.0);
        summary_md << "| " << head << " | " << r.words << " | " << cell(r.distinct[0]) << " | " << cell(r.distinct[1])
                   << " | " << cell(r.distinct[2]) << " | " << cell(r.repeated_ngram_rate) << " | " << r.longest_repeat
                   << " | " << cell(r.copied_rate) << " | " << rate << " |\n";
        nlohmann::ordered_json overall =
            metrics_json(r.words, r.distinct, r.repeated_ngram_rate, r.longest_repeat, longest_text, r.copied_rate);
        overall["longest_repeat_text_index"] = r.longest_repeat_text_index;
        overall["tokens"] = tokens;
        overall["seconds"] = seconds;
        out["temperatures"].push_back(
            {{"temperature", temperature}, {"overall", overall}, {"generations", per_prompt}});
    }
    if (f.json)
        std::cout << out.dump(2) << "\n";
    else
        std::cout << md.str() << summary_md.str();
    return 0;
}

} // namespace

void add_eval_generations(CLI::App& eval, command& chosen) {
    auto f = std::make_shared<generations_flags>();
    CLI::App* sub = eval.add_subcommand(
        "generations", "repetition and memorisation of the model's continuations, per prompt and temperature");
    add_model_options(*sub, f->model);
    add_decoding_precision_option(*sub, f->model);
    sub->add_option("--prompts", f->prompts_file, "prompts, one a line (default: the course's ten prompts)")
        ->check(CLI::ExistingFile);
    sub->add_option("--temperatures", f->temperatures, "sampling temperatures, comma-separated")
        ->delimiter(',')
        ->check(CLI::NonNegativeNumber);
    sub->add_option("--corpus", f->corpus, "training text or tinylm token shards, for the copied n-gram rate")
        ->check(CLI::ExistingFile);
    sub->add_option("--samples", f->samples, "continuations per prompt and temperature")->check(CLI::PositiveNumber);
    sub->add_option("--batch", f->batch,
                    "continuations decoded together, one forward a step for all (each gets the tokens it gets "
                    "alone, where the products sum each row as alone: docs/tinylm.md); 1: one at a time")
        ->check(recipes::in_range(1, 64, "continuations decoded together"))
        ->capture_default_str();
    sub->add_option("--rep-n", f->rep.rep_n, "n of the repeated n-gram rate")->check(CLI::PositiveNumber);
    sub->add_option("--copy-n", f->rep.copy_n, "n of the copied n-gram rate")->check(CLI::PositiveNumber);
    sub->add_flag("--json", f->json, "print JSON with every generated text instead of markdown");
    f->sampling.add_to(*sub); // --temperatures replaces --temperature
    sub->callback([f, &chosen] { chosen = [f] { return run(*f); }; });
}

} // namespace tinylm_cli
