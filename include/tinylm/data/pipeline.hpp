// tinylm/data/pipeline.hpp: the cleaning pipeline, stage by stage, with counts and examples.
//
// A `cleaner` pulls records (paragraphs) from a reader and runs, in order:
//   [wiki markup] → nfc → whitespace → punctuation → sentence split → alphabet → length → language → exact dedup → near
//   dedup
// Paragraph-local stages (everything before dedup, plus the MinHash signatures) run on `threads` threads over
// batches of about `batch_bytes`; deduplication then runs sequentially in input order, so the output is the
// same for any thread count. Filters remove sentences; dedup removes whole paragraphs (the kept sentences
// joined by one space). Every stage records how many items it saw, changed and removed, and for each removal
// reason a count and the first few examples. Memory: one batch of text plus the dedup tables.
// The wiki-markup stage (clean_options::wiki, data/wiki.hpp) runs only when asked; its reasons count each kind of
// markup it removed (wiki40b markers, templates, links, entities, ...).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/dedup.hpp>
#include <tinylm/data/filters.hpp>
#include <tinylm/data/langid.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/sentences.hpp>
#include <tinylm/data/wiki.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace tl::data {

struct reason_stats {
    std::uint64_t count = 0;
    std::vector<std::string> examples;
};

struct stage_stats {
    std::string name;
    std::string unit; // what `seen`, `changed` and `removed` count
    std::uint64_t seen = 0, changed = 0, removed = 0;
    std::map<std::string, reason_stats> reasons;

    // Counts a removal; `note` (e.g. the offending letter) is put in front of the example.
    void remove(const std::string& reason, std::string_view example, std::size_t max_examples,
                std::string_view note = {}) {
        ++removed;
        auto& r = reasons[reason];
        ++r.count;
        if (r.examples.size() < max_examples) {
            std::string e(note);
            e += example.substr(0, std::min<std::size_t>(example.size(), 240));
            while (!e.empty() && (static_cast<unsigned char>(e.back()) & 0xC0) == 0x80)
                e.pop_back(); // cut cleanly
            if (!e.empty() && static_cast<unsigned char>(e.back()) >= 0xC0) e.pop_back();
            if (e.size() < note.size() + example.size()) e += "…";
            if (std::find(r.examples.begin(), r.examples.end(), e) == r.examples.end())
                r.examples.push_back(std::move(e));
        }
    }
    void merge(const stage_stats& o, std::size_t max_examples) {
        seen += o.seen, changed += o.changed, removed += o.removed;
        for (const auto& [k, v] : o.reasons) {
            auto& r = reasons[k];
            r.count += v.count;
            for (const auto& e : v.examples)
                if (r.examples.size() < max_examples &&
                    std::find(r.examples.begin(), r.examples.end(), e) == r.examples.end())
                    r.examples.push_back(e);
        }
    }
};

struct clean_options {
    bool wiki = false; // Wikipedia markup out first (data/wiki.hpp); also keeps line breaks (ws.keep_newlines)
    bool nfc = true;
    bool whitespace = true;
    whitespace_options ws{};
    bool punctuation = true;
    punctuation_options punct{};
    bool split = true;                         // false: a paragraph is one "sentence"
    alphabet allowed = alphabet::russian();    // alphabet::any() disables the filter
    bool drop_replacement_char = true;         // sentences with U+FFFD (invalid UTF-8 in the source)
    std::size_t min_letters = 2;               // sentences with fewer letters are dropped
    std::size_t max_sentence_chars = 2000;     // longer sentences are dropped
    const ngram_langid* langid = nullptr;      // language filter when set
    std::vector<std::string> keep_languages{}; // languages kept by it
    std::size_t langid_min_letters = 1;        // sentences with fewer letters are kept without a decision
    dedup_options dedup{};
    bool sentence_per_line = false; // output paragraphs with one sentence per line
    int threads = 2;
    std::size_t batch_bytes = 8 << 20;
    std::size_t max_examples = 3;
};

// A paragraph that survived cleaning.
struct clean_paragraph {
    std::string source;
    std::uint64_t doc = 0;
    std::string text;                        // kept sentences joined by ' ' (or '\n')
    std::vector<std::string_view> sentences; // views into text
};

struct clean_report {
    repair_counts repairs;
    read_problems problems;
    std::uint64_t files = 0;
    std::uint64_t bytes_in = 0, bytes_out = 0;
    std::uint64_t paragraphs_in = 0, paragraphs_out = 0, sentences_in = 0, sentences_out = 0;
    double seconds = 0;
    std::vector<stage_stats> stages;
    const stage_stats* stage(std::string_view name) const {
        for (const auto& s : stages)
            if (s.name == name) return &s;
        return nullptr;
    }
};

class cleaner {
public:
    explicit cleaner(clean_options opt = {}) : opt_(std::move(opt)), dedup_(opt_.dedup) {
        check(opt_.threads >= 1, "cleaner: threads must be at least 1");
        check(!opt_.langid || !opt_.keep_languages.empty(),
              "cleaner: a language identifier is set but keep_languages is empty");
        if (opt_.langid) opt_.langid->finalize();
        if (opt_.wiki) opt_.ws.keep_newlines = true; // _NEWLINE_ and _START_PARAGRAPH_ end sentences
        report_.stages = make_stages();
    }

    // Runs the pipeline over everything `in` yields, calling `sink` for each kept paragraph in input order.
    void run(reader& in, const std::function<void(const clean_paragraph&)>& sink) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<record> batch;
        std::size_t bytes = 0;
        record r;
        for (;;) {
            const bool more = in.next(r);
            if (more) {
                bytes += r.text.size();
                batch.push_back(std::move(r));
                r = record{};
            }
            if ((!more && !batch.empty()) || bytes >= opt_.batch_bytes) {
                process(batch, sink);
                batch.clear();
                bytes = 0;
            }
            if (!more) break;
        }
        report_.repairs += in.repairs();
        report_.files += in.files();
        report_.problems.count += in.problems().count;
        for (const auto& e : in.problems().examples)
            if (report_.problems.examples.size() < 5) report_.problems.examples.push_back(e);
        report_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }

    // Cleans a list of texts (one paragraph each, documents numbered in order); returns the kept paragraphs.
    std::vector<std::string> clean_texts(const std::vector<std::string>& texts) {
        std::vector<record> batch;
        for (std::size_t i = 0; i < texts.size(); ++i)
            batch.push_back({"text " + std::to_string(i), i, texts[i]});
        std::vector<std::string> out;
        process(batch, [&](const clean_paragraph& p) { out.push_back(p.text); });
        return out;
    }

    const clean_report& report() const { return report_; }
    const clean_options& options() const { return opt_; }

private:
    enum stage_id { s_wiki, s_nfc, s_ws, s_punct, s_split, s_alpha, s_len, s_lang, s_exact, s_near, s_para, n_stages };

    std::vector<stage_stats> make_stages() const {
        return {{"wiki_markup", "paragraphs", 0, 0, 0, {}},
                {"nfc", "paragraphs", 0, 0, 0, {}},
                {"whitespace", "paragraphs", 0, 0, 0, {}},
                {"punctuation", "paragraphs", 0, 0, 0, {}},
                {"sentences", "paragraphs in, sentences out (changed)", 0, 0, 0, {}},
                {"alphabet (" + opt_.allowed.name() + ")", "sentences", 0, 0, 0, {}},
                {"length", "sentences", 0, 0, 0, {}},
                {"language", "sentences", 0, 0, 0, {}},
                {"exact_dedup", "paragraphs", 0, 0, 0, {}},
                {"near_dedup", "paragraphs", 0, 0, 0, {}},
                {"empty_paragraphs", "paragraphs", 0, 0, 0, {}}};
    }

    struct work_item {
        clean_paragraph para;
        bool alive = true;
        deduplicator::prepared prep;
    };

    // Paragraph-local stages for items [begin, end), counting into `st`.
    void local(std::vector<record>& batch, std::vector<work_item>& items, std::size_t begin, std::size_t end,
               std::vector<stage_stats>& st) const {
        const std::size_t mx = opt_.max_examples;
        std::vector<std::string_view> sents;
        std::string joined;
        for (std::size_t i = begin; i < end; ++i) {
            record& rec = batch[i];
            work_item& w = items[i];
            w.para.source = std::move(rec.source);
            w.para.doc = rec.doc;
            std::string& t = rec.text;
            if (opt_.wiki) {
                ++st[s_wiki].seen;
                wiki_counts wc;
                if (clean_wiki_markup(t, wc)) {
                    ++st[s_wiki].changed;
                    for (const auto& [what, count] : wc.items())
                        if (count) st[s_wiki].reasons[what].count += count;
                }
            }
            if (opt_.nfc) {
                ++st[s_nfc].seen;
                st[s_nfc].changed += to_nfc(t);
            }
            if (opt_.whitespace) {
                ++st[s_ws].seen;
                st[s_ws].changed += normalize_whitespace(t, opt_.ws);
            }
            if (opt_.punctuation) {
                ++st[s_punct].seen;
                st[s_punct].changed += normalize_punctuation(t, opt_.punct);
            }
            sents.clear();
            ++st[s_split].seen;
            if (opt_.split)
                sents = split_sentences(t);
            else if (!t.empty())
                sents.push_back(t);
            st[s_split].changed += sents.size();
            joined.clear();
            std::vector<std::size_t> cuts;
            for (std::string_view s : sents) {
                while (!s.empty() && s.front() == ' ')
                    s.remove_prefix(1);
                while (!s.empty() && s.back() == ' ')
                    s.remove_suffix(1);
                if (s.empty()) continue;
                if (!keep_sentence(s, st, mx)) continue;
                if (!joined.empty()) joined.push_back(opt_.sentence_per_line ? '\n' : ' ');
                cuts.push_back(joined.size());
                joined.append(s);
                cuts.push_back(joined.size());
            }
            w.para.text = joined;
            w.para.sentences.clear();
            for (std::size_t c = 0; c < cuts.size(); c += 2)
                w.para.sentences.push_back(std::string_view(w.para.text).substr(cuts[c], cuts[c + 1] - cuts[c]));
            ++st[s_para].seen;
            if (w.para.text.empty()) {
                st[s_para].remove("nothing left after the filters", t, mx);
                w.alive = false;
                continue;
            }
            if (opt_.dedup.exact || opt_.dedup.near) w.prep = dedup_.prepare(w.para.text);
        }
    }

    bool keep_sentence(std::string_view s, std::vector<stage_stats>& st, std::size_t mx) const {
        auto& a = st[s_alpha];
        ++a.seen;
        if (opt_.drop_replacement_char && s.find("\xEF\xBF\xBD") != std::string_view::npos) {
            a.remove("U+FFFD (invalid UTF-8 in the source)", s, mx);
            return false;
        }
        if (auto bad = opt_.allowed.first_foreign_letter(s)) {
            const std::string script = script_of(*bad);
            std::string note = "[";
            append_utf8(note, *bad);
            note += ' ';
            note += hex_cp(*bad);
            note += "] ";
            a.remove(script + " letter outside the alphabet", s, mx, note);
            return false;
        }
        auto& l = st[s_len];
        ++l.seen;
        const std::size_t letters = count_letters(s);
        if (letters < opt_.min_letters) {
            l.remove("fewer than " + std::to_string(opt_.min_letters) + " letters", s, mx);
            return false;
        }
        if (utf8_length(s) > opt_.max_sentence_chars) {
            l.remove("longer than " + std::to_string(opt_.max_sentence_chars) + " characters", s, mx);
            return false;
        }
        if (opt_.langid) {
            auto& g = st[s_lang];
            ++g.seen;
            if (letters >= opt_.langid_min_letters) {
                const auto res = opt_.langid->classify(s);
                if (!res.lang.empty() && std::find(opt_.keep_languages.begin(), opt_.keep_languages.end(), res.lang) ==
                                             opt_.keep_languages.end()) {
                    g.remove("identified as " + res.lang, s, mx);
                    return false;
                }
            }
        }
        return true;
    }

    void process(std::vector<record>& batch, const std::function<void(const clean_paragraph&)>& sink) {
        const std::size_t n = batch.size();
        for (const auto& r : batch)
            report_.bytes_in += r.text.size();
        report_.paragraphs_in += n;
        std::vector<work_item> items(n);
        const std::size_t n_threads = std::min<std::size_t>(std::size_t(opt_.threads), std::max<std::size_t>(n, 1));
        std::vector<std::vector<stage_stats>> st(n_threads, make_stages());
        if (n_threads == 1)
            local(batch, items, 0, n, st[0]);
        else {
            // contiguous slices of about equal bytes
            std::vector<std::size_t> bounds{0};
            std::size_t total = 0;
            for (const auto& r : batch)
                total += r.text.size();
            std::size_t acc = 0;
            for (std::size_t i = 0; i < n && bounds.size() < n_threads; ++i) {
                acc += batch[i].text.size();
                if (acc * n_threads >= total * bounds.size()) bounds.push_back(i + 1);
            }
            while (bounds.size() <= n_threads)
                bounds.push_back(n);
            std::vector<std::thread> pool;
            std::vector<std::exception_ptr> errors(n_threads);
            for (std::size_t t = 0; t < n_threads; ++t)
                pool.emplace_back([&, t] {
                    try {
                        local(batch, items, bounds[t], bounds[t + 1], st[t]);
                    } catch (...) {
                        errors[t] = std::current_exception();
                    }
                });
            for (auto& th : pool)
                th.join();
            for (auto& e : errors)
                if (e) std::rethrow_exception(e);
        }
        for (auto& s : st)
            for (std::size_t k = 0; k < n_stages; ++k)
                report_.stages[k].merge(s[k], opt_.max_examples);
        // sequential: deduplication in input order
        const std::size_t mx = opt_.max_examples;
        for (std::size_t i = 0; i < n; ++i) {
            work_item& w = items[i];
            if (!w.alive) continue;
            if (opt_.dedup.exact || opt_.dedup.near) {
                report_.stages[s_exact].seen += 1;
                const auto res = dedup_.check_and_add(w.prep, next_id_);
                if (res.what == deduplicator::verdict::exact_duplicate) {
                    report_.stages[s_exact].remove("exact duplicate of an earlier paragraph", w.para.text, mx);
                    continue;
                }
                report_.stages[s_near].seen += w.prep.near_eligible;
                if (res.what == deduplicator::verdict::near_duplicate) {
                    report_.stages[s_near].remove("near duplicate (estimated Jaccard >= " +
                                                      std::to_string(opt_.dedup.threshold).substr(0, 4) + ")",
                                                  w.para.text, mx);
                    continue;
                }
            }
            ++next_id_;
            ++report_.paragraphs_out;
            report_.sentences_out += w.para.sentences.size();
            report_.bytes_out += w.para.text.size();
            sink(w.para);
        }
        report_.sentences_in = report_.stages[s_split].changed;
    }

    clean_options opt_;
    deduplicator dedup_;
    clean_report report_;
    std::uint64_t next_id_ = 0;
};

} // namespace tl::data
