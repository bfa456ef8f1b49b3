// 05_tatar: a small Tatar language model from scratch, and three ways of spending the same compute on it.
//
// Task:     a decoder-only model (RoPE, GQA, SwiGLU, RMSNorm) trained from scratch on Tatar, a language
//           outside the world's top 50, in three variants at equal compute: dense, mixture of experts
//           (4 experts, top-2, load-balancing loss) and sliding window (every other layer windowed).
// Stages:   1. clean the Tatar running text of the data directory (Tatar alphabet, sentences with other
//              letters dropped, an n-gram language filter that drops Russian, exact and near duplicates),
//              plus any Leipzig Wortschatz files given with --leipzig; statistics in OUT/data/corpus/report.md;
//           2. train a byte-level BPE tokenizer (--vocab, default 4000: the tokenizer lab's choice, docs/tatar.md);
//           3. cut documents into --context-token chunks and write train.bin / val.bin (split by document);
//           4. train each variant on the same batches for the same steps, validating and continuing eight
//              Tatar prompts every --eval-every steps (TensorBoard, JSONL, report per variant; the MoE run
//              logs every expert's share of the tokens);
//           5. compare the variants (OUT/report.md) and keep the best one by validation loss as OUT/model
//              (Hugging Face layout with tokenizer.json);
//           6. score every variant on the paraphrase-consistency QA benchmarks (benchmarks/tatar_qa, --qa-set)
//              against two floors: the same model untrained and a unigram model of the training tokens.
//           Stages 1-3 (examples/common/prepare.hpp, shared with 04_russian_novels) are cached in OUT/data_*;
//           a variant resumes from its checkpoint; run again to continue.
// Data:     ../shared/data/tatar (TINYLM_DATA_DIR or --data-dir; sources in ../shared/data/DATA.md and
//           docs/tatar.md). More text: --leipzig FILE (the *-sentences.txt file of a Leipzig Wortschatz
//           Tatar collection, lines "id<TAB>sentence"), repeatable.
// Command:  scripts/run-tatar.sh [flags], or build/examples/05_tatar/05_tatar [--out runs/tatar] [--steps N]
//           [--variants dense,moe,sliding] [--smoke]; --help lists every option with its default (option groups
//           shared with 04 and 06: examples/common/options.hpp). The variants are the presets tatar_dense,
//           tatar_moe and tatar_sliding (include/tinylm/model/presets.hpp).
// Output:   OUT/report.md (corpus, tokenizer, context in tokens and characters, the variants' validation
//           losses, expert usage, samples), OUT/<variant>/{report.md,tensorboard,log.jsonl,checkpoint},
//           OUT/model (the chosen checkpoint).
// Devices:  --device cpu (tl::decoder, the default), cuda (gpu::device_decoder<gpu_ops>: parameters, gradients and
//           AdamW's moments on the GPU, bf16 products; a build with tinylm::cuda) or cpu-ops (the GPU's code path on
//           the CPU, gpu::device_decoder<cpu_ops>: slow, a check), for every variant (MoE and sliding windows
//           included): the same trainer, batches, checkpoints, logs and expert counts; validation on the device; the
//           weights copied back to the CPU for the samples and the QA benchmark (examples/common/devices.hpp, shared
//           with 04). Under mpirun every variant trains on the device too: the moe variant's balancing statistics
//           are summed over the ranks between the device step's forward and its loss (docs/gpu.md), as on the CPU.
// Ranks:    mpirun -np N build/examples/05_tatar/05_tatar ... trains every variant data parallel
//           (docs/distributed.md; --batch is the global batch): rank 0 prepares the data (the others wait, then
//           read its cache), prints, logs, samples, scores the QA sets and writes every file; the other ranks only
//           train and validate, and follow rank 0's choice of variant (examples/common/ranks.hpp).
#include "checkpoint_files.hpp"
#include "devices.hpp"
#include "options.hpp"
#include "prepare.hpp"
#include "ranks.hpp"
#include "samples.hpp"

#include <tinylm/core/data_dir.hpp>
#include <tinylm/eval/paraphrase_qa.hpp>
#include <tinylm/model/registry.hpp>
#include <tinylm/tinylm.hpp>
#include <tinylm/train/run_logger.hpp>
#include <tinylm/train/shard_batches.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <tuple>

namespace fs = std::filesystem;
namespace td = tl::data;
namespace te = tl::eval;

namespace {

// ---- the three variants ---------------------------------------------------------------------------------
// Same width, depth, heads and vocabulary. The MoE variant splits the dense MLP's width over its experts
// (4 experts of d_ff / 2, top-2), so a token passes through the same MLP width (plus the router's 4 x d
// product); the sliding variant has the dense model's weights and windows layers 0 and 2 at 32 tokens, so it
// spends fewer FLOPs on attention (stated in the report from tl::flops_per_token).
const std::vector<std::pair<std::string, std::string>> variant_descriptions = {
    {"dense", "dense SwiGLU MLP, full attention"},
    {"moe", "4 SwiGLU experts of half width, top-2, per-layer aux loss 0.01"},
    {"sliding", "dense, layers 0 and 2 windowed at 32 tokens"}};
std::string variant_what(const std::string& name) {
    for (const auto& [n, what] : variant_descriptions)
        if (n == name) return what;
    return name;
}
constexpr int model_vocab = tl::presets::tatar_dense::value.vocab_size,
              model_context = tl::presets::tatar_dense::value.max_seq_len;
using tl::presets::tatar_dense, tl::presets::tatar_moe, tl::presets::tatar_sliding;
// The variants under their command-line names (--variants), in report order.
using dense_variant = tl::presets::named<"dense", tatar_dense>;
using moe_variant = tl::presets::named<"moe", tatar_moe>;
using sliding_variant = tl::presets::named<"sliding", tatar_sliding>;

// Parameters a token passes through (the experts it is not routed to excluded).
constexpr std::int64_t active_parameters(const tl::model_config& c) {
    const std::int64_t idle = c.moe.n_experts > 0 ? std::int64_t(c.n_layers) * (c.moe.n_experts - c.moe.top_k) * 3 *
                                                        std::int64_t(c.d_model) * c.d_ff
                                                  : 0;
    return tl::parameter_count(c) - idle;
}

// Prompts for samples during and after training: a place, a poet, a song, a tale, everyday speech.
const std::vector<std::string> tatar_prompts = {"Татарстан Республикасының башкаласы",
                                                "Габдулла Тукай",
                                                "Туган тел",
                                                "Бервакыт бер авылда",
                                                "Әнием, сиңа",
                                                "Һәр кешенең",
                                                "Казан шәһәре",
                                                "Яз килде,"};

// Files of ../shared/data/tatar that are Tatar running text (DATA.md). Left out: the .rus/.eng translations,
// the word-frequency list and the 1931 word-pair dictionary (word lists, half Russian).
const std::vector<std::string> tatar_text_files = {"song_lyrics.txt",
                                                   "explanatory_dictionary.txt",
                                                   "bible_nt.txt",
                                                   "ntrex128.tat.txt",
                                                   "udhr.txt",
                                                   "wikipedia_lines.txt",
                                                   "ud_nmctt_sentences.txt",
                                                   "apertium_story.txt",
                                                   "apertium_tat_rus.tat.txt",
                                                   "apertium_commonvoice_lines.txt"};
const std::vector<std::string> smoke_files = {"udhr.txt", "wikipedia_lines.txt", "ud_nmctt_sentences.txt",
                                              "apertium_story.txt", "apertium_commonvoice_lines.txt"};

using recipes::seconds_since;

// ---- readers --------------------------------------------------------------------------------------------

// A Leipzig Wortschatz sentences file: "id<TAB>sentence" per line (the corpora are shuffled sentences, so
// every line is its own paragraph). Lines without a tab are counted as problems and skipped.
class leipzig_reader : public td::reader {
public:
    explicit leipzig_reader(fs::path path) : path_(std::move(path)), lines_(path_) { files_ = 1; }
    bool next(td::record& r) override {
        std::string line;
        while (lines_.next(line)) {
            ++line_no_;
            const auto tab = line.find('\t');
            if (tab == std::string::npos) {
                problems_.add(path_.string() + ":" + std::to_string(line_no_) + ": no id<TAB>sentence");
                continue;
            }
            r.text = line.substr(tab + 1);
            r.source = path_.string() + ":" + std::to_string(line_no_);
            r.doc = 0; // one document: document_chunker cuts it into pieces
            return true;
        }
        repairs_ = lines_.repairs();
        return false;
    }

private:
    fs::path path_;
    td::line_stream lines_;
    std::uint64_t line_no_ = 0;
};

// Several readers in a row, with documents of at most `paragraphs_per_doc` paragraphs: a file is one document
// to text_reader, and the validation split is by document, so a handful of big files would split coarsely.
class document_chunker : public td::reader {
public:
    document_chunker(std::vector<std::unique_ptr<td::reader>> inputs, std::uint64_t paragraphs_per_doc)
        : inputs_(std::move(inputs)), per_doc_(paragraphs_per_doc) {}
    bool next(td::record& r) override {
        while (at_ < inputs_.size()) {
            if (inputs_[at_]->next(r)) {
                if (first_ || r.doc != inner_doc_ || in_doc_ == per_doc_) ++doc_, in_doc_ = 0;
                first_ = false;
                inner_doc_ = r.doc;
                ++in_doc_;
                r.doc = doc_;
                return true;
            }
            const td::reader& done = *inputs_[at_++];
            repairs_ += done.repairs();
            files_ += done.files();
            problems_.count += done.problems().count;
            for (const auto& e : done.problems().examples)
                if (problems_.examples.size() < 5) problems_.examples.push_back(e);
            first_ = true; // the next input starts a document
        }
        return false;
    }

private:
    std::vector<std::unique_ptr<td::reader>> inputs_;
    std::uint64_t per_doc_;
    std::size_t at_ = 0;
    bool first_ = true;
    std::uint64_t doc_ = 0, inner_doc_ = 0, in_doc_ = 0;
};

// ---- stages 1-3 -----------------------------------------------------------------------------------------

using recipes::prepared_data;

std::vector<std::string> read_lines(const fs::path& p) {
    td::text_reader r({p}, {.mode = td::paragraph_mode::line});
    std::vector<std::string> lines;
    td::record rec;
    while (r.next(rec))
        lines.push_back(rec.text);
    return lines;
}

// The shared stage (examples/common/prepare.hpp) with the Tatar alphabet, a language filter that drops
// Russian, documents of at most 64 paragraphs, statistics in DIR/corpus/report.md and document ids that do
// not depend on --out.
prepared_data prepare(const fs::path& tatar_dir, const std::vector<std::string>& files,
                      const std::vector<fs::path>& leipzig, const fs::path& dir, recipes::prepare_options opt) {
    td::ngram_langid langid; // trained only when the stage runs (below)
    const auto open = [&]() -> std::unique_ptr<td::reader> {
        // The language identifier learns Tatar and Russian from line-aligned translations.
        for (const auto& [lang, file] :
             {std::pair{"tt", "ntrex128.tat.txt"}, std::pair{"tt", "apertium_tat_rus.tat.txt"},
              std::pair{"ru", "ntrex128.rus.txt"}, std::pair{"ru", "apertium_tat_rus.rus.txt"}})
            for (const auto& line : read_lines(tatar_dir / file))
                langid.train(lang, line);
        std::vector<std::unique_ptr<td::reader>> inputs;
        std::vector<fs::path> paths;
        for (const auto& f : files)
            paths.push_back(tatar_dir / f);
        inputs.push_back(std::make_unique<td::text_reader>(paths));
        for (const auto& p : leipzig)
            inputs.push_back(std::make_unique<leipzig_reader>(p));
        return std::make_unique<document_chunker>(std::move(inputs), 64);
    };
    opt.clean.allowed = td::alphabet::preset("tatar");
    opt.clean.langid = &langid;
    opt.clean.keep_languages = {"tt"};
    opt.clean.langid_min_letters = 10; // shorter lines (interjections, names) are kept undecided: docs/corpus.md
    opt.corpus_subdir = "corpus";
    opt.write_clean_text = true; // plain text for the tokenizer lab
    opt.report_title = "Tatar corpus";
    opt.doc_id_prefix = "tatar"; // the split must not depend on --out
    return recipes::prepare_data(open, dir, opt);
}

// Characters and bytes per token of the validation split (its text decoded back, <bos>/<eos> left out).
struct compression {
    double chars_per_token = 0, bytes_per_token = 0;
};
compression measure_compression(const prepared_data& d) {
    const td::token_shard val(d.val_bin, d.info.hash);
    std::vector<tl::token_t> all(val.size());
    val.copy<tl::token_t>(0, all);
    std::vector<tl::token_t> ids;
    for (const tl::token_t t : all)
        if (std::uint32_t(t) != d.info.bos && std::uint32_t(t) != d.info.eos) ids.push_back(tl::token_t(t));
    const std::string text = d.tok.decode(ids);
    std::size_t chars = 0;
    for (const char c : text)
        chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80; // UTF-8 lead bytes
    if (ids.empty()) return {};
    return {double(chars) / double(ids.size()), double(text.size()) / double(ids.size())};
}

// ---- stage 4: one variant -------------------------------------------------------------------------------

// A QA set's reports for a trained model and the same configuration untrained, by the set's scoring and by
// mutual information.
struct qa_scores {
    te::qa_report trained{}, untrained{}, trained_mi{}, untrained_mi{};
};

struct variant_result {
    std::string name{}, what{};
    long long steps = 0; // where the variant's run stopped (the comparison point, or the end)
    std::int64_t parameters = 0, active = 0;
    double flops_per_token = 0, val_loss = NAN, seconds = 0, tokens_per_s = 0;
    double usage_max = NAN, usage_min = NAN, step_usage_max = NAN, step_usage_min = NAN; // experts only
    fs::path dir{};
    std::vector<std::pair<std::string, std::string>> samples{};
    std::vector<qa_scores> qa{};                 // one per QA set
    bool interrupted = false, continued = false; // continued: the chosen variant's continuation
};

// The QA benchmark and what scoring it needs; the unigram floor does not depend on the variant.
struct qa_setup {
    std::string name{};
    te::qa_set set{};
    te::qa_options options{}, mutual_info{};
    std::optional<te::qa_report> unigram{};
};

// Expert usage relative to uniform (1 = a fair share) of counts[l][e]; the extremes over all layers.
std::pair<double, double> usage_range(const std::vector<std::vector<std::int64_t>>& counts) {
    double lo = INFINITY, hi = 0;
    for (const auto& layer : counts) {
        std::int64_t total = 0;
        for (const auto c : layer)
            total += c;
        for (const auto c : layer) {
            const double u = total > 0 ? double(c) * double(layer.size()) / double(total) : 0;
            lo = std::min(lo, u), hi = std::max(hi, u);
        }
    }
    return {lo, hi};
}

// Training time, throughput and expert counts add up over the invocations of a resumed run (a second run of the
// finished command trains nothing and reports the first run's figures), kept in OUT/<variant>/run_stats.json.
void merge_run_stats(const fs::path& file, variant_result& res, double tps_sum, long long tps_n,
                     std::vector<std::vector<std::int64_t>>& usage_total) {
    nlohmann::json j = fs::exists(file) ? nlohmann::json::parse(std::ifstream(file)) : nlohmann::json::object();
    const double seconds = j.value("seconds", 0.0) + (tps_n ? res.seconds : 0.0);
    const double sum = j.value("tokens_per_s_sum", 0.0) + tps_sum;
    const long long n = j.value("steps", 0LL) + tps_n;
    if (j.contains("usage_total")) {
        const auto before = j["usage_total"].get<std::vector<std::vector<std::int64_t>>>();
        if (usage_total.empty())
            usage_total = before;
        else
            for (std::size_t l = 0; l < before.size() && l < usage_total.size(); ++l)
                for (std::size_t e = 0; e < before[l].size() && e < usage_total[l].size(); ++e)
                    usage_total[l][e] += before[l][e];
    }
    const auto keep = [&](const char* key, double now, auto pick) {
        const double was = j.value(key, NAN);
        return std::isnan(was) ? now : std::isnan(now) ? was : pick(was, now);
    };
    res.step_usage_min = keep("step_usage_min", res.step_usage_min, [](double a, double b) { return std::min(a, b); });
    res.step_usage_max = keep("step_usage_max", res.step_usage_max, [](double a, double b) { return std::max(a, b); });
    res.seconds = seconds;
    res.tokens_per_s = n ? sum / double(n) : NAN;
    j = {{"seconds", seconds}, {"tokens_per_s_sum", sum}, {"steps", n}};
    if (!usage_total.empty()) j["usage_total"] = usage_total;
    if (!std::isnan(res.step_usage_min))
        j["step_usage_min"] = res.step_usage_min, j["step_usage_max"] = res.step_usage_max;
    std::ofstream(file) << j.dump() << '\n';
}

// Distributed, every rank calls it and trains; rank 0 alone logs, samples, scores the QA sets and writes (`qas` is
// empty on the other ranks). `device` is --device's: the host model itself or a device model trains (devices.hpp).
template <class Config>
variant_result train_variant(tl::dist::communicator& world, const std::string& name, const std::string& what,
                             const prepared_data& data, tl::trainer_options options, std::uint64_t seed,
                             const recipes::sampling_flags& sampling, const std::vector<qa_setup>& qas,
                             const std::string& device) {
    using model_t = tl::decoder<Config>;
    const bool root = world.is_root();
    constexpr tl::model_config c = Config::value;
    tl::check(data.tok.vocab_size() <= std::size_t(Config::value.vocab_size), [&] {
        return "05_tatar: the tokenizer " + data.tokenizer_json.string() + " has " +
               std::to_string(data.tok.vocab_size()) + " tokens, more than the models' vocabulary of " +
               std::to_string(Config::value.vocab_size) +
               " (--vocab at most 4000; --prepare-only stops after the shards)";
    });
    const td::token_shard train_shard(data.train_bin, data.info.hash), val_shard(data.val_bin, data.info.hash);
    tl::check(val_shard.size() > std::size_t(options.seq_len) + 1, [&] {
        return "05_tatar: the validation split has only " + std::to_string(val_shard.size()) + " tokens; delete " +
               data.dir.string() + " and use a larger --val-fraction";
    });
    std::vector<tl::token_t> val_tokens(
        std::min<std::size_t>(val_shard.size(), std::size_t(options.eval_windows * options.seq_len + 1)));
    val_shard.copy<tl::token_t>(0, val_tokens);

    variant_result res{.name = name,
                       .what = what,
                       .parameters = tl::parameter_count(c),
                       .active = active_parameters(c),
                       .flops_per_token = tl::flops_per_token(c, int(options.seq_len)),
                       .dir = options.out_dir};
    model_t model(seed); // the same seed for every variant: same batches, comparable initial draws
    tl::shard_batches batches(train_shard, options.batch_size, options.seq_len, seed);
    options.special = {.bos = int(data.info.bos), .eos = int(data.info.eos), .pad = data.tok.token_to_id("<pad>")};
    recipes::describe_checkpoints(
        options, sampling,
        {.title = "Tatar, " + name + " (" + what + ")",
         .description = "A small decoder pretrained from scratch on Tatar text, one of the variants the 05_tatar "
                        "recipe compares (dense, mixture of experts, sliding window) at equal compute.",
         .data = "Tatar news and web sentences (Leipzig corpora collection, docs/tatar.md), cleaned, language-checked "
                 "and deduplicated, with a byte-level BPE tokenizer trained on them.",
         .languages = {"tt"},
         .example_prompt = "Казан шәһәре",
         .recipe = "examples/05_tatar"});
    // The run itself, with tl::decoder or a device model (whose weights come to `model` for samples and scores).
    const auto train_on = [&](auto& trained, const std::string& backend) -> variant_result {
        tl::trainer run(trained, batches, val_tokens, options);
        run.add_to_checkpoint = recipes::tokenizer_files(data.tok, Config::value.max_seq_len);
        const long long stop = options.stop_at > 0 ? std::min(options.stop_at, options.max_steps) : options.max_steps;
        const long long first_step = run.restore();
        std::optional<tl::run_logger> logger; // rank 0's (the trainer calls the hooks on rank 0 only)
        const double tokens = double(stop) * double(options.batch_size * options.seq_len * options.grad_accum);
        if (root) {
            logger.emplace(options.out_dir, "tinylm: Tatar, " + name + " (" + what + ")", stop, first_step);
            logger->summary("model", what + "; " + std::to_string(res.parameters) + " parameters (" +
                                         std::to_string(res.active) + " active per token), backend " + backend);
            logger->summary("training FLOPs per token", std::to_string(res.flops_per_token / 1e6) + " M (context " +
                                                            std::to_string(options.seq_len) + ")");
            logger->summary("training tokens", std::to_string(static_cast<long long>(tokens)));
        }
        std::printf("\n== %s: %s; %lld parameters (%lld active), %.2f MFLOP/token, steps to %lld of a %lld-step "
                    "schedule, %lld tokens each, backend %s\n",
                    name.c_str(), what.c_str(), (long long)res.parameters, (long long)res.active,
                    res.flops_per_token / 1e6, stop, options.max_steps,
                    static_cast<long long>(options.batch_size * options.seq_len * options.grad_accum), backend.c_str());

        std::vector<std::vector<std::int64_t>> usage_total;
        double tps_sum = 0;
        long long tps_n = 0;
        run.on_step = [&](const tl::step_report& r) {
            logger->step(r);
            tps_sum += r.tokens_per_second, ++tps_n;
            if constexpr (model_t::is_moe) {
                std::vector<std::vector<std::int64_t>> counts;
                for (tl::index_t l = 0; l < Config::value.n_layers; ++l) {
                    const auto layer = trained.expert_counts(l);
                    counts.emplace_back(layer.begin(), layer.end());
                }
                logger->expert_usage(r.step, counts);
                const auto [lo, hi] = usage_range(counts);
                res.step_usage_min = std::isnan(res.step_usage_min) ? lo : std::min(res.step_usage_min, lo);
                res.step_usage_max = std::isnan(res.step_usage_max) ? hi : std::max(res.step_usage_max, hi);
                if (usage_total.empty())
                    usage_total = counts;
                else
                    for (std::size_t l = 0; l < counts.size(); ++l)
                        for (std::size_t e = 0; e < counts[l].size(); ++e)
                            usage_total[l][e] += counts[l][e];
            }
        };
        const auto samples_of = [&](int new_tokens) { // on the CPU, from a device model's weights
            recipes::to_host(trained, model);
            return recipes::continue_prompts(model, data.tok, tatar_prompts, new_tokens, sampling.sampling, seed);
        };
        run.on_eval = [&](long long step, double loss) {
            logger->eval(step, loss);
            res.val_loss = loss;
            if (step < stop) logger->samples(step, samples_of(sampling.new_tokens / 2));
        };
        const auto t0 = std::chrono::steady_clock::now();
        if (run.run() == tl::train_outcome::interrupted) {
            if (logger) logger->finish();
            res.interrupted = true;
            return res;
        }
        res.steps = run.state().step;
        res.seconds = seconds_since(t0);
        // Every rank decides alike (evaluate is collective, and the variant chosen by the loss must be the same).
        world.broadcast_values(std::span<double>(&res.val_loss, 1), 0);
        if (std::isnan(res.val_loss)) res.val_loss = run.evaluate();
        if (!root) return res;
        merge_run_stats(options.out_dir / "run_stats.json", res, tps_sum, tps_n, usage_total);
        if (!usage_total.empty()) std::tie(res.usage_min, res.usage_max) = usage_range(usage_total);
        res.samples = samples_of(sampling.new_tokens);
        logger->samples(-1, res.samples);
        recipes::to_host(trained, model); // the QA benchmark scores the trained weights on the CPU
        if (!qas.empty()) {
            model_t untrained(seed); // the initial weights of this run
            for (const qa_setup& q : qas) {
                qa_scores& sc = res.qa.emplace_back();
                sc.trained = te::evaluate_qa(model, data.tok, q.set, q.options);
                sc.untrained = te::evaluate_qa(untrained, data.tok, q.set, q.options);
                sc.trained_mi = te::evaluate_qa(model, data.tok, q.set, q.mutual_info);
                sc.untrained_mi = te::evaluate_qa(untrained, data.tok, q.set, q.mutual_info);
                logger->summary("QA " + q.name, sc.trained.summary() + "; by group " + sc.trained.group_summary());
                logger->summary("QA " + q.name + ", untrained", sc.untrained.summary());
                std::printf(
                    "%s: QA %s: %s\n  by group: %s\n  untrained: %s\n  mutual-information accuracy %.3f (untrained "
                    "%.3f)\n",
                    name.c_str(), q.name.c_str(), sc.trained.summary().c_str(), sc.trained.group_summary().c_str(),
                    sc.untrained.summary().c_str(), sc.trained_mi.accuracy(), sc.untrained_mi.accuracy());
            }
        }
        logger->summary("validation loss", std::to_string(res.val_loss) + " nats/token");
        logger->finish();
        std::printf("%s: validation loss %.4f nats/token after %.0f s (%.0f tokens/s)\n", name.c_str(), res.val_loss,
                    res.seconds, res.tokens_per_s);
        return res;
    };
    return recipes::train_on_device("05_tatar", world, options, device, model, train_on);
}

// ---- stage 5: the comparison ----------------------------------------------------------------------------

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

// The comparison runs and, when there is one, the chosen variant's continuation, in report order.
std::vector<const variant_result*> with_final(const std::vector<variant_result>& results,
                                              const variant_result* final_run) {
    std::vector<const variant_result*> all;
    for (const auto& r : results)
        all.push_back(&r);
    if (final_run) all.push_back(final_run);
    return all;
}

void write_comparison(const fs::path& out, const prepared_data& data, const compression& comp,
                      const tl::trainer_options& options, long long compare_at,
                      const std::vector<variant_result>& results, const variant_result& chosen,
                      const variant_result* final_run, const std::vector<qa_setup>& qas, double total_seconds) {
    const auto& cs = data.corpus;
    std::string md = "# tinylm: Tatar pretraining, three variants at equal compute\n\n";
    md += "## Corpus\n\n";
    md += "Tatar running text of the data directory (and any --leipzig files), cleaned with the Tatar alphabet and "
          "the language filter dropping Russian; full statistics in `" +
          (data.dir / "corpus" / "report.md").string() + "`.\n\n";
    md += "| | |\n| --- | --- |\n";
    md += "| input | " + std::to_string(cs.value("files", 0LL)) + " files, " + fmt("%.1f", cs.value("mb_in", 0.0)) +
          " MB |\n";
    md += "| kept | " + fmt("%.1f", cs.value("mb_out", 0.0)) + " MB, " + std::to_string(cs.value("paragraphs", 0LL)) +
          " paragraphs, " + std::to_string(cs.value("sentences", 0LL)) + " of " +
          std::to_string(cs.value("sentences_in", 0LL)) + " sentences |\n";
    md += "| dropped as Russian | " +
          std::to_string(cs.value("removed_by_language", cs.value("removed_as_russian", 0LL))) + " sentences |\n";
    md += "| words | " + std::to_string(cs.value("words", 0LL)) + " (" + std::to_string(cs.value("word_types", 0LL)) +
          " types) |\n";
    md += "| tokens | train " + std::to_string(cs.value("train_tokens", 0LL)) + " (" +
          std::to_string(cs.value("train_docs", 0LL)) + " documents), validation " +
          std::to_string(cs.value("val_tokens", 0LL)) + " (" + std::to_string(cs.value("val_docs", 0LL)) +
          " documents) |\n\n";
    md += "## Tokenizer and context\n\n";
    md += "Byte-level BPE, " + std::to_string(data.tok.vocab_size()) + " tokens; on the validation split " +
          fmt("%.2f", comp.chars_per_token) + " characters (" + fmt("%.2f", comp.bytes_per_token) +
          " bytes) per token. Context: " + std::to_string(options.seq_len) + " tokens, about " +
          fmt("%.0f", comp.chars_per_token * double(options.seq_len)) + " characters.\n\n";
    md += "## Variants\n\n";
    const long long tokens_per_step = options.batch_size * options.seq_len * options.grad_accum;
    const auto mtokens = [&](long long steps) { return fmt("%.2f", double(steps) * double(tokens_per_step) / 1e6); };
    md += "Each variant: " + std::to_string(compare_at) + " steps of " + std::to_string(tokens_per_step) + " tokens (" +
          mtokens(compare_at) + " M tokens), the same batches, AdamW with warmup and cosine decay to " +
          fmt("%g", options.min_lr) + " from " + fmt("%g", options.peak_lr) + " over " +
          std::to_string(options.max_steps) + " steps" +
          (compare_at < options.max_steps
               ? "; the variant with the lowest validation loss at step " + std::to_string(compare_at) +
                     " continues on the same schedule to step " + std::to_string(options.max_steps) + " (" +
                     mtokens(options.max_steps) + " M tokens)"
               : std::string()) +
          ". Validation loss in nats per token (the same tokenizer for all: comparable); bits per byte = loss / ln 2 "
          "/ bytes per token.\n\n";
    md += "| variant | parameters (active) | MFLOP/token | steps | validation loss | bits/byte | tokens/s | time | "
          "expert usage (max / min of uniform) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
    for (const variant_result* r : with_final(results, final_run)) {
        md += "| " + r->name + (r->continued ? " (continued)" : ": " + r->what) + " | " +
              std::to_string(r->parameters) + " (" + std::to_string(r->active) + ") | " +
              fmt("%.2f", r->flops_per_token / 1e6) + " | " + std::to_string(r->steps) + " | " +
              fmt("%.4f", r->val_loss) + " | " + fmt("%.3f", r->val_loss / std::log(2.0) / comp.bytes_per_token) +
              " | " + fmt("%.0f", r->tokens_per_s) + " | " + fmt("%.0f s", r->seconds) + " | " +
              (std::isnan(r->usage_max)
                   ? std::string("—")
                   : fmt("%.2f", r->usage_max) + " / " + fmt("%.2f", r->usage_min) + " over the run; single steps " +
                         fmt("%.2f", r->step_usage_max) + " / " + fmt("%.2f", r->step_usage_min)) +
              " |\n";
    }
    md += "\nPer-variant reports, TensorBoard logs and samples during training: `<out>/<variant>/report.md`, "
          "`<out>/<variant>/tensorboard` (the continuation: `<out>/final/`).\n\n";
    const variant_result& model_run = final_run ? *final_run : chosen;
    md += "## Chosen model\n\n`" + chosen.name + "` (lowest validation loss at step " + std::to_string(compare_at) +
          ", " + fmt("%.4f", chosen.val_loss) + ")" +
          (final_run ? ", continued to step " + std::to_string(final_run->steps) + " (validation loss " +
                           fmt("%.4f", final_run->val_loss) + ")"
                     : std::string()) +
          ", copied to `" + (out / "model").string() + "` (Hugging Face layout with tokenizer.json).\n\n";
    md += "Samples after training (temperature 0.8, top-k 50, top-p 0.95, repetition penalty 1.1):\n\n";
    for (auto [prompt, text] : model_run.samples) {
        std::replace(text.begin(), text.end(), '\n', ' '); // one list item per sample
        md += "- **" + prompt + "**" + text + "\n";
    }
    md += "\n";
    for (std::size_t i = 0; i < qas.size(); ++i) {
        const qa_setup& qa = qas[i];
        md += "## Paraphrase-consistency QA: " + qa.name + "\n\n" + std::to_string(qa.set.facts.size()) +
              " facts of the training corpus, " + std::to_string(qa.set.question_count()) +
              " questions (each fact asked in several Tatar phrasings), the right answer against three distractors "
              "(`benchmarks/tatar_qa`, include/tinylm/eval/paraphrase_qa.hpp: a sentence with a blank scores the "
              "rest of the sentence after each choice, a question scores the choice by log-likelihood per "
              "character). Consistency: the share of facts answered the same way in every phrasing; the figure "
              "that counts is consistent and correct (a model that ignores the question is consistent by "
              "construction). Last column: accuracy when a question's choices are scored by their log-likelihood "
              "after the question minus after an empty context (lm-eval's acc_mutual_info).\n\n";
        md += "| model | steps | accuracy | consistency | consistent and correct | accuracy by group | "
              "mutual-information accuracy |\n| --- | ---: | ---: | ---: | ---: | --- | ---: |\n";
        const auto row = [&](const std::string& who, const std::string& steps, const te::qa_report& r,
                             const te::qa_report* mi) {
            md += "| " + who + " | " + steps + " | " + fmt("%.3f", r.accuracy()) + " | " +
                  fmt("%.3f", r.consistency()) + " | " + fmt("%.3f", r.consistent_correct()) + " | " +
                  r.group_summary() + " | " + (mi ? fmt("%.3f", mi->accuracy()) : std::string("—")) + " |\n";
        };
        for (const variant_result* r : with_final(results, final_run)) {
            if (i >= r->qa.size()) continue;
            const qa_scores& sc = r->qa[i];
            row(r->name + (r->continued ? " (continued)" : ""), std::to_string(r->steps), sc.trained, &sc.trained_mi);
            if (!r->continued) row(r->name + " (untrained)", "0", sc.untrained, &sc.untrained_mi);
        }
        if (qa.unigram) row("unigram of the training tokens", "—", *qa.unigram, nullptr);
        md += fmt("\nChance: %.3f.", qa.unigram ? qa.unigram->chance : 0.25) +
              " The unigram floor has no mutual-information score: it scores a choice the same with and without "
              "the question.\n\n";
    }
    md += "Time of this invocation: " + fmt("%.1f", total_seconds / 60) +
          " minutes (a resumed run counts only its own part; each variant's training time, summed over "
          "invocations, is in the table).\n";
    std::ofstream(out / "report.md") << md;
}

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"Pretrain a small Tatar model: dense, mixture-of-experts and sliding-window variants"};
    recipes::show_defaults(app);
    std::string variants = "dense,moe,sliding";
    recipes::data_flags data_flags;
    recipes::run_flags run;
    recipes::sampling_flags sampling{.new_tokens = 48};
    std::vector<std::string> leipzig_flags;
    tl::trainer_options options{.batch_size = 16,
                                .seq_len = 128,
                                .grad_accum = 1,
                                .max_steps = 3400, // the chosen variant's 6.96M tokens: docs/tatar.md sizes it
                                .peak_lr = 3e-3,
                                .min_lr = 3e-4,
                                .warmup_steps = 60,
                                .adamw = {.weight_decay = 0.1},
                                .eval_every = 125,
                                .eval_windows = 64,
                                .checkpoint_every = 125,
                                .out_dir = "runs/tatar"};
    long long compare_steps = 400;
    std::size_t vocab = 4000;
    double val_fraction = 0.03;
    bool prepare_only = false;
    std::vector<std::string> qa_set_paths = {TINYLM_SOURCE_DIR "/benchmarks/tatar_qa/frequent_facts.jsonl",
                                             TINYLM_SOURCE_DIR "/benchmarks/tatar_qa/facts.jsonl"};
    CLI::Option_group* data_group = recipes::add_data_options(app, data_flags);
    data_group->add_option("--leipzig", leipzig_flags,
                           "a Leipzig Wortschatz *-sentences.txt file (id<TAB>sentence), repeatable");
    data_group->add_option("--vocab", vocab, "BPE vocabulary size (at most 4000, the models' embedding size)")
        ->check(recipes::in_range(std::size_t{300}, std::size_t(model_vocab), "BPE vocabulary size"));
    data_group->add_flag("--prepare-only", prepare_only, "stop after cleaning, the tokenizer and the shards");
    std::string tokenizer_flag;
    data_group->add_option("--tokenizer", tokenizer_flag,
                           "a tokenizer.json (Qwen, Llama-2, ...; also under the data dir) instead of training one");
    std::string device = "cpu";
    app.add_option("--device", device,
                   "cpu (tl::decoder), cuda: the GPU (gpu::device_decoder, bf16 products; in a build with "
                   "tinylm::cuda), or cpu-ops: the GPU's code path on the CPU (slow; a check). Every variant trains "
                   "there; samples and the QA benchmark run on the CPU from its weights")
        ->check(CLI::IsMember({"cpu", "cuda", "cpu-ops"}));
    CLI::Option_group* training = recipes::add_training_options(app, options, run);
    training->add_option("--context", options.seq_len, "context in tokens")
        ->check(recipes::in_range(tl::index_t{16}, tl::index_t(model_context), "context in tokens"));
    training->add_option("--variants", variants, "comma-separated subset of dense,moe,sliding");
    training
        ->add_option("--compare-steps", compare_steps,
                     "steps after which the variants are compared; the best continues to --steps (0: all run --steps)")
        ->check(recipes::at_least(0LL, "steps before the variants are compared; 0: all run --steps"));
    recipes::add_sampling_options(app, sampling);
    app.add_option_group("Evaluation")
        ->add_option("--qa-set", qa_set_paths, "paraphrase QA facts (JSONL), repeatable; 'none': skip the benchmark");
    CLI11_PARSE(app, argc, argv);
    tl::dist::communicator& world = recipes::join_world();
    const bool root = world.is_root();
    recipes::check_device("05_tatar", device);
    options.matmul_precision = recipes::checked_precision("05_tatar", run.precision, device);
    if (run.smoke) {
        vocab = 400;
        val_fraction = 0.3;
        options.max_steps = 6;
        compare_steps = 3;
        options.batch_size = 2;
        options.seq_len = 64;
        options.eval_every = 3;
        options.eval_windows = 2;
        options.warmup_steps = 2;
        sampling.new_tokens = 8;
        options.out_dir = options.out_dir / "smoke";
    }
    options.min_lr = options.peak_lr / 10;
    options.warmup_steps = std::min<long long>(options.warmup_steps, options.max_steps / 5);
    const auto wanted = [&](const std::string& v) {
        return ("," + variants + ",").find("," + v + ",") != std::string::npos;
    };
    for (std::size_t at = 0; at <= variants.size();) { // every name is a variant
        const std::size_t comma = std::min(variants.find(',', at), variants.size());
        const std::string v = variants.substr(at, comma - at);
        const auto known = tl::presets::names<dense_variant, moe_variant, sliding_variant>();
        tl::check(std::find(known.begin(), known.end(), v) != known.end(),
                  [&] { return "05_tatar: --variants: '" + v + "' is none of dense, moe, sliding"; });
        at = comma + 1;
    }

    recipes::root_only(world, [&] { recipes::prepare_out_dir(options.out_dir, "--out"); });
    const fs::path data_dir = tl::find_data_dir(data_flags.dir), tatar_dir = data_dir / "tatar";
    const auto& files = run.smoke ? smoke_files : tatar_text_files;
    for (const auto& f : files)
        if (!fs::exists(tatar_dir / f)) {
            std::cerr << "error: 05_tatar: " << tatar_dir / f << " does not exist. Set --data-dir or TINYLM_DATA_DIR; "
                      << "the sources are listed in docs/tatar.md.\n";
            return 2;
        }
    std::vector<fs::path> leipzig;
    for (const auto& l : leipzig_flags) {
        tl::check(fs::exists(l), [&] { return "05_tatar: --leipzig " + l + " does not exist"; });
        leipzig.emplace_back(l);
    }
    const auto start = std::chrono::steady_clock::now();
    const fs::path tokenizer_file = recipes::resolve_tokenizer_file(tokenizer_flag, data_dir);
    const fs::path data_cache =
        options.out_dir / ("data_v" + std::to_string(vocab) + "_ctx" + std::to_string(options.seq_len) +
                           (leipzig.empty() ? "" : "_leipzig") + recipes::tokenizer_dir_suffix(tokenizer_file));
    recipes::prepare_options prep{.vocab = vocab,
                                  .context = std::size_t(options.seq_len),
                                  .val_fraction = val_fraction,
                                  .threads = data_flags.threads};
    prep.tokenizer_file = tokenizer_file;
    const prepared_data data =
        recipes::root_first(world, [&] { return prepare(tatar_dir, files, leipzig, data_cache, prep); });
    const compression comp = measure_compression(data);
    std::printf("data: ready after %.0f s; %.2f characters (%.2f bytes) per token on the validation split, so the "
                "context of %lld tokens holds about %.0f characters\n",
                seconds_since(start), comp.chars_per_token, comp.bytes_per_token, (long long)options.seq_len,
                comp.chars_per_token * double(options.seq_len));
    if (prepare_only) return 0;

    std::vector<qa_setup> qas; // rank 0 scores them
    if (root && !(qa_set_paths.size() == 1 && qa_set_paths[0] == "none")) {
        te::unigram_model unigram(data.tok.vocab_size());
        const td::token_shard train_shard(data.train_bin, data.info.hash);
        std::vector<tl::token_t> train_tokens(train_shard.size());
        train_shard.copy<tl::token_t>(0, train_tokens);
        unigram.add(train_tokens);
        for (const std::string& path : qa_set_paths) {
            qa_setup& q = qas.emplace_back();
            q.name = fs::path(path).stem().string();
            q.set = te::load_qa(path);
            // The smoke run checks that the benchmark runs, not what it measures: 12 facts of each set (the whole
            // sets, evaluated for every variant trained and untrained, were most of the smoke test's minute).
            if (run.smoke && q.set.facts.size() > 12) q.set.facts.resize(12);
            q.options.loglikelihood.prefix_token = te::default_prefix_token(data.tok);
            q.mutual_info = q.options;
            q.mutual_info.score = te::qa_score::mutual_info;
            q.unigram = te::evaluate_qa(unigram, data.tok, q.set, q.options);
            std::printf("QA benchmark %s: %zu facts, %zu questions; unigram floor: %s\n", path.c_str(),
                        q.set.facts.size(), q.set.question_count(), q.unigram->summary().c_str());
        }
    }

    // Stage 4: every variant to the comparison point on the same schedule, then the best one to the end.
    const long long compare_at =
        compare_steps > 0 && compare_steps < options.max_steps ? compare_steps : options.max_steps;
    const auto run_variant = [&](const std::string& name, const fs::path& dir, long long stop_at) {
        tl::trainer_options o = options;
        o.out_dir = dir;
        o.stop_at = stop_at;
        return tl::presets::visit<dense_variant, moe_variant, sliding_variant>(name, [&]<class P>() {
            return train_variant<P>(world, name, variant_what(name), data, o, run.seed, sampling, qas, device);
        });
    };
    std::vector<variant_result> results;
    for (const auto& [name, what] : variant_descriptions) {
        if (!wanted(name)) continue;
        if (run.fresh) {
            const fs::path variant_dir = options.out_dir / name; // clang 14 cannot capture a structured binding
            recipes::root_only(world, [&] {
                fs::remove_all(variant_dir / "checkpoint");
                fs::remove(variant_dir / "run_stats.json");
            });
        }
        results.push_back(run_variant(name, options.out_dir / name, compare_at));
        if (results.back().interrupted) {
            std::printf("interrupted; run the same command again to resume\n");
            return 130;
        }
    }
    tl::check(!results.empty(), "05_tatar: --variants names none of dense, moe, sliding");
    const variant_result* chosen = &results.front(); // the lowest validation loss at the comparison point
    for (const auto& r : results)
        if (r.val_loss < chosen->val_loss) chosen = &r;

    // The continuation starts from a copy of the chosen variant's checkpoint in OUT/final, so that the
    // comparison checkpoints stay where they are (a second run of the command re-reads them unchanged).
    std::optional<variant_result> final_run;
    if (compare_at < options.max_steps) {
        const fs::path final_dir = options.out_dir / "final", marker = final_dir / "variant.txt";
        recipes::root_only(world, [&] {
            std::string previous;
            if (std::ifstream in(marker); in) std::getline(in, previous);
            if (run.fresh || previous != chosen->name) fs::remove_all(final_dir);
            if (!fs::exists(final_dir / "checkpoint" / "trainer_state.json")) {
                fs::create_directories(final_dir);
                fs::copy(chosen->dir / "checkpoint", final_dir / "checkpoint", fs::copy_options::recursive);
                std::ofstream(marker) << chosen->name << "\n";
            }
        });
        std::printf("\n%s has the lowest validation loss at step %lld (%.4f): it continues to step %lld\n",
                    chosen->name.c_str(), compare_at, chosen->val_loss, options.max_steps);
        final_run = run_variant(chosen->name, final_dir, 0);
        final_run->continued = true;
        if (final_run->interrupted) {
            std::printf("interrupted; run the same command again to resume\n");
            return 130;
        }
    }
    if (!root) return 0; // the rest writes the model and the reports
    const variant_result& model_run = final_run ? *final_run : *chosen;
    const fs::path model_dir = options.out_dir / "model";
    fs::remove_all(model_dir);
    fs::create_directories(model_dir);
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"})
        fs::copy_file(model_run.dir / "checkpoint" / f, model_dir / f); // the model without the optimizer state
    write_comparison(options.out_dir, data, comp, options, compare_at, results, *chosen,
                     final_run ? &*final_run : nullptr, qas, seconds_since(start));

    std::printf("\n%-8s %12s %12s %6s %10s %10s\n", "variant", "parameters", "MFLOP/token", "step", "val loss",
                "bits/byte");
    for (const variant_result* r : with_final(results, final_run ? &*final_run : nullptr))
        std::printf("%-8s %12lld %12.2f %6lld %10.4f %10.3f\n", r->name.c_str(), (long long)r->parameters,
                    r->flops_per_token / 1e6, r->steps, r->val_loss,
                    r->val_loss / std::log(2.0) / comp.bytes_per_token);
    std::printf("\nchosen model: %s after %lld steps (validation loss %.4f) in %s\n\n", model_run.name.c_str(),
                model_run.steps, model_run.val_loss, model_dir.c_str());
    for (const auto& [prompt, text] : model_run.samples)
        std::printf("%s|%s\n\n", prompt.c_str(), text.c_str());
    for (std::size_t i = 0; i < qas.size() && i < model_run.qa.size(); ++i)
        std::printf("QA %s: %s\n  unigram floor: %s\n  untrained: %s\n", qas[i].name.c_str(),
                    model_run.qa[i].trained.summary().c_str(), qas[i].unigram->summary().c_str(),
                    model_run.qa[i].untrained.summary().c_str());
    std::printf("report: %s\ntotal time %.1f minutes\n", (options.out_dir / "report.md").c_str(),
                seconds_since(start) / 60);
    return 0;
} catch (const std::exception& e) {
    return recipes::report_error(e);
}
