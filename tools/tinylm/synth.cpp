// tinylm synth: synthetic text from a model over a list of topics, as JSONL (one record a kept text: topic,
// prompt, text, model, sampling settings, seed), with length and language filters and near-duplicate removal.
// The continuations of one topic share their prompt, so they are decoded together (text_model::complete_batch,
// eval/generate_batch.hpp): one forward pass per step for the whole batch.
#include "common.hpp"

#include <tinylm/data/dedup.hpp>
#include <tinylm/data/langid.hpp>
#include <tinylm/data/utf8.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

namespace tinylm_cli {

namespace {

struct synth_flags {
    model_flags model;
    sampling_flags sampling;
    fs::path topics, out, rejected;
    std::string prompt_template = "{topic}";
    bool chat = false, json = false, no_dedup = false;
    std::string system;
    int per_topic = 4, batch = 0;
    std::size_t min_chars = 0, max_chars = 0;
    std::string language;
    std::vector<std::string> langid_train;
    double dedup_threshold = 0.7;
};

std::vector<std::string> read_topics(const fs::path& file) {
    std::ifstream in(file);
    tl::check(bool(in), [&] { return "tinylm synth: cannot read --topics " + file.string(); });
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const std::size_t first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#') continue;
        out.push_back(line.substr(first));
    }
    tl::check(!out.empty(), [&] { return "tinylm synth: " + file.string() + " holds no topic"; });
    return out;
}

std::string fill(const std::string& templ, const std::string& topic) {
    std::string out;
    for (std::size_t at = 0;;) {
        const std::size_t k = templ.find("{topic}", at);
        out += templ.substr(at, k == std::string::npos ? std::string::npos : k - at);
        if (k == std::string::npos) return out;
        out += topic;
        at = k + 7;
    }
}

// The language identifier trained from LANG=FILE pairs (each line of FILE is a sample of LANG).
tl::data::ngram_langid train_langid(const std::vector<std::string>& specs) {
    tl::data::ngram_langid id;
    for (const std::string& spec : specs) {
        const std::size_t eq = spec.find('=');
        tl::check(eq != std::string::npos && eq > 0,
                  [&] { return "tinylm synth: --langid-train expects LANG=FILE, got '" + spec + "'"; });
        std::ifstream in(spec.substr(eq + 1));
        tl::check(bool(in), [&] { return "tinylm synth: cannot read " + spec.substr(eq + 1); });
        for (std::string line; std::getline(in, line);)
            id.train(spec.substr(0, eq), line);
    }
    id.finalize();
    return id;
}

int run(const synth_flags& f) {
    const std::unique_ptr<tl::text_model> m = open_model(f.model);
    const std::vector<std::string> topics = read_topics(f.topics);
    tl::check(f.language.empty() || !f.langid_train.empty(),
              "tinylm synth: --language needs --langid-train LANG=FILE (samples of that language and of others)");
    std::optional<tl::data::ngram_langid> langid;
    if (!f.language.empty()) {
        langid = train_langid(f.langid_train);
        const auto& names = langid->languages();
        tl::check(std::find(names.begin(), names.end(), f.language) != names.end(), [&] {
            return "tinylm synth: --language " + f.language + " is none of the --langid-train languages";
        });
    }
    tl::data::dedup_options dopt;
    dopt.threshold = f.dedup_threshold;
    dopt.exact = dopt.near = !f.no_dedup;
    tl::data::deduplicator dedup(dopt);

    tl::text_generation_options options = f.sampling.apply(*m);
    if (!f.sampling.given.max_tokens) options.generation.max_new_tokens = 256;
    const tl::chat_prompt_format format = tl::chat_prompt_format::of(*m);
    if (f.chat) format.apply(options);
    const tl::sampling_options& s = options.generation.sampling;
    const nlohmann::ordered_json sampling{{"temperature", s.temperature},
                                          {"top_k", s.top_k},
                                          {"top_p", s.top_p},
                                          {"min_p", s.min_p},
                                          {"repetition_penalty", s.repetition_penalty},
                                          {"max_tokens", options.generation.max_new_tokens}};
    const int batch = f.batch > 0 ? std::min(f.batch, f.per_topic) : f.per_topic;

    if (f.out.has_parent_path()) fs::create_directories(f.out.parent_path());
    std::ofstream out(f.out, std::ios::binary), rejected;
    tl::check(bool(out), [&] { return "tinylm synth: cannot write --out " + f.out.string(); });
    if (!f.rejected.empty()) {
        rejected.open(f.rejected, std::ios::binary);
        tl::check(bool(rejected), [&] { return "tinylm synth: cannot write --rejected " + f.rejected.string(); });
    }
    std::size_t generated = 0, kept = 0, too_short = 0, too_long = 0, other_language = 0, exact_dups = 0, near_dups = 0,
                tokens = 0, forward_passes = 0;
    double seconds = 0;
    for (std::size_t t = 0; t < topics.size(); ++t) {
        const std::string prompt_text = fill(f.prompt_template, topics[t]);
        std::vector<tl::token_t> prompt;
        if (f.chat) {
            nlohmann::ordered_json messages = nlohmann::ordered_json::array();
            if (!f.system.empty()) messages.push_back({{"role", "system"}, {"content", f.system}});
            messages.push_back({{"role", "user"}, {"content", prompt_text}});
            prompt = format.encode(*m, messages);
        } else {
            prompt = m->tokenizer().encode(prompt_text, {.add_special_tokens = true});
        }
        tl::check(!prompt.empty() && tl::index_t(prompt.size()) < m->config().max_seq_len, [&] {
            return "tinylm synth: the prompt of topic " + std::to_string(t + 1) + " has " +
                   std::to_string(prompt.size()) + " tokens; the context is " + std::to_string(m->config().max_seq_len);
        });
        if (t == 0) { // one token first, so that tokens/s does not include starting the threads
            tl::text_generation_options warm = options;
            warm.generation.max_new_tokens = 1;
            m->complete_batch(prompt, batch, warm);
        }
        for (int first = 0; first < f.per_topic; first += batch) {
            const int count = std::min(batch, f.per_topic - first);
            tl::text_generation_options o = options;
            o.generation.sampling.seed = f.sampling.given.seed + t * std::uint64_t(f.per_topic) + std::uint64_t(first);
            const auto start = std::chrono::steady_clock::now();
            const std::vector<tl::text_completion> done = m->complete_batch(prompt, count, o);
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            std::size_t longest = 0;
            for (int r = 0; r < count; ++r) {
                const tl::text_completion& c = done[std::size_t(r)];
                ++generated;
                tokens += c.tokens.size();
                longest = std::max(longest, c.tokens.size());
                std::string text = c.text;
                if (f.chat && format.plain) text.erase(0, text.find_first_not_of(' '));
                const std::size_t chars = tl::data::utf8_length(text);
                nlohmann::ordered_json rec{{"topic", topics[t]},
                                           {"prompt", prompt_text},
                                           {"text", text},
                                           {"model", m->name()},
                                           {"sampling", sampling},
                                           {"seed", o.generation.sampling.seed + std::uint64_t(r)},
                                           {"tokens", c.tokens.size()},
                                           {"finish_reason", tl::finish_reason_name(c.reason)}};
                std::string why;
                if (chars < f.min_chars) {
                    why = "short", ++too_short;
                } else if (f.max_chars > 0 && chars > f.max_chars) {
                    why = "long", ++too_long;
                } else if (langid) {
                    const tl::data::langid_result l = langid->classify(text);
                    if (l.lang != f.language) why = "language " + (l.lang.empty() ? "none" : l.lang), ++other_language;
                }
                if (why.empty() && !f.no_dedup) {
                    const auto d = dedup.check_and_add(dedup.prepare(text), generated - 1);
                    if (d.what == tl::data::deduplicator::verdict::exact_duplicate)
                        why = "exact duplicate", ++exact_dups;
                    else if (d.what == tl::data::deduplicator::verdict::near_duplicate)
                        why = "near duplicate", ++near_dups;
                }
                if (why.empty()) {
                    out << rec.dump() << "\n";
                    ++kept;
                } else if (rejected.is_open()) {
                    rec["rejected"] = why;
                    rejected << rec.dump() << "\n";
                }
            }
            forward_passes += longest; // one decode step per new token of the longest row, for the whole batch
        }
    }
    out.close();
    tl::check(bool(out), [&] { return "tinylm synth: writing " + f.out.string() + " failed"; });
    const double rate = seconds > 0 ? double(tokens) / seconds : 0.0;
    const nlohmann::ordered_json summary{{"model", m->name()},
                                         {"topics", topics.size()},
                                         {"per_topic", f.per_topic},
                                         {"batch", batch},
                                         {"generated", generated},
                                         {"kept", kept},
                                         {"too_short", too_short},
                                         {"too_long", too_long},
                                         {"other_language", other_language},
                                         {"exact_duplicates", exact_dups},
                                         {"near_duplicates", near_dups},
                                         {"tokens", tokens},
                                         {"decode_steps", forward_passes},
                                         {"seconds", seconds},
                                         {"tokens_per_second", rate},
                                         {"out", f.out.string()}};
    if (f.json) {
        std::cout << summary.dump(2) << "\n";
    } else {
        std::printf("synth: %zu topics x %d, %zu texts generated, %zu kept -> %s\n", topics.size(), f.per_topic,
                    generated, kept, f.out.c_str());
        std::printf("dropped: %zu short, %zu long, %zu other language, %zu exact and %zu near duplicates\n", too_short,
                    too_long, other_language, exact_dups, near_dups);
        std::printf("%zu tokens in %.2f s: %.1f tokens/s, %d sequences decoded together\n", tokens, seconds, rate,
                    batch);
    }
    return 0;
}

} // namespace

void add_synth(CLI::App& app, command& chosen) {
    auto f = std::make_shared<synth_flags>();
    CLI::App* sub =
        app.add_subcommand("synth", "synthetic texts over a topics file into JSONL, filtered and deduplicated");
    add_model_options(*sub, f->model);
    sub->add_option("--topics", f->topics, "topics, one a line (blank lines and # comments skipped)")
        ->required()
        ->check(CLI::ExistingFile);
    sub->add_option("--out", f->out, "JSONL file of the kept texts")->required();
    sub->add_option("--rejected", f->rejected, "JSONL file of the dropped texts, with the reason");
    sub->add_option("--template", f->prompt_template, "the prompt; {topic} is replaced by each topic");
    sub->add_flag("--chat", f->chat, "send the prompt as a user message with the model's chat template");
    sub->add_option("--system", f->system, "system message (with --chat)");
    sub->add_option("--per-topic", f->per_topic, "texts per topic")->check(CLI::PositiveNumber);
    sub->add_option("--batch", f->batch, "sequences decoded together (0: --per-topic; 1: one by one)")
        ->check(CLI::NonNegativeNumber);
    sub->add_option("--min-chars", f->min_chars, "drop texts of fewer characters");
    sub->add_option("--max-chars", f->max_chars, "drop texts of more characters (0: no limit)");
    sub->add_option("--language", f->language, "keep only texts the language identifier assigns to LANG");
    sub->add_option("--langid-train", f->langid_train, "LANG=FILE: lines of FILE train LANG (repeat per language)");
    sub->add_option("--dedup-threshold", f->dedup_threshold, "near-duplicate Jaccard similarity (data/dedup.hpp)")
        ->check(CLI::Range(0.01, 1.0));
    sub->add_flag("--no-dedup", f->no_dedup, "keep exact and near duplicates");
    sub->add_flag("--json", f->json, "print the summary as JSON");
    f->sampling.add_to(*sub);
    sub->callback([f, &chosen] { chosen = [f] { return run(*f); }; });
}

} // namespace tinylm_cli
