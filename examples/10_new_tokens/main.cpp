// 10_new_tokens: grow a model's vocabulary by words its tokenizer splits badly, and train them in stages
// (issue 16, docs/vocabulary.md).
//
//   10_new_tokens --base DIR --corpus text.txt [--words w1,w2] --out OUT
//       DIR: a Hugging Face folder with tokenizer.json (Llama, Mistral, Qwen2, Mixtral; any size)
//   10_new_tokens --tiny --tokenizer tokenizer.json --corpus text.txt --out OUT
//       a small Llama-shaped model pretrained here on the corpus first (the smoke test)
//
// Words: --words, else the --n-words most frequent words of the corpus that split into >= --min-pieces tokens and
// occur >= --min-count times. Usage texts: the corpus lines holding a word (<= --max-texts per word), one in ten
// held out; KL is measured on lines without any. Then: add the words (tl::add_tokens), report how each split
// before and after, grow the embedding (mean of the word's old pieces) and head (transformers' mean init), and
// train stage 1 (new rows only), stage 2 (embeddings + head), stage 3 (everything), each a Hugging Face
// checkpoint OUT/stage<k> with tokenizer.json and tokenizer_config.json. --stage3 lora makes stage 3 a LoRA adapter
// (r 8, alpha 16; all seven projections, attention only with experts) with the embedding and head trained in full
// (peft's modules_to_save), --stage3 lora-new-rows with only their new rows (trainable_token_indices): the adapter
// goes to OUT/stage3_lora, its base (the model stage 3 starts from) is OUT/stage2 (or OUT/stage3_base when stage 2
// is skipped). --baseline also trains stages 2 and 3 (full) on the same lines with the original tokenizer and
// model, so that the gain from the new tokens is visible. Reported at the start and after each
// stage: nats per byte on the held-out lines with the words (comparable across tokenizers), the probability the
// model gives the new tokens there, KL(original ‖ model) on lines without them, the nearest old tokens of each
// new one (input and output side), and a greedy continuation of a prompt ending in each word.
#include "cli_checks.hpp"
#include "options.hpp"

#include <tinylm/io/hf_any.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/model/resize_vocabulary.hpp>
#include <tinylm/model/vocab_growth.hpp>
#include <tinylm/tokenizer/add_tokens.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/tokenizer_config.hpp>
#include <tinylm/train/batches.hpp>
#include <tinylm/train/trainer.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Stage 3 as LoRA: the adapter trains with the embedding and head (lora_config::trainable_embeddings).
struct recipe_lora {
    static constexpr tl::lora_config value{.rank = 8,
                                           .alpha = 16,
                                           .dropout = 0,
                                           .targets = tl::lora_all,
                                           .quantized_base = false,
                                           .trainable_embeddings = true};
};
struct recipe_lora_attention { // experts have no gate/up/down projections to target
    static constexpr tl::lora_config value{.rank = 8,
                                           .alpha = 16,
                                           .dropout = 0,
                                           .targets = tl::lora_attention,
                                           .quantized_base = false,
                                           .trainable_embeddings = true};
};
template <class M>
struct lora_of;
template <class C, class B, class A>
struct lora_of<tl::decoder<C, B, A>> {
    using type = tl::decoder<C, B, std::conditional_t<C::value.moe.n_experts != 0, recipe_lora_attention, recipe_lora>>;
};

struct settings {
    fs::path base, tokenizer_file, corpus, out = "new_tokens_out";
    bool tiny = false;
    long long pretrain_steps = 300;
    std::vector<std::string> words;
    int n_words = 5, min_pieces = 3, min_count = 50, max_texts = 100;
    long long steps[3] = {100, 100, 50};
    double lr[3] = {3e-3, 1e-3, 3e-4};
    tl::index_t batch = 8, seq_len = 64;
    int generate_tokens = 12;
    std::string stage3 = "full"; // full, lora, lora-new-rows
    bool baseline = false;
    tl::precision products = tl::precision::f32; // --precision, as recipes::checked_precision returned it
};

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    tl::check(bool(in), [&] { return "10_new_tokens: cannot read " + p.string(); });
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.size() >= 20 && tl::unicode::find_invalid(line) == std::string::npos) out.push_back(line);
    }
    return out;
}

// Words (runs of letters, at least 4 characters) and their counts.
std::map<std::string, int> count_words(const std::vector<std::string>& lines) {
    std::map<std::string, int> counts;
    for (const std::string& line : lines) {
        std::size_t i = 0, start = 0, letters = 0;
        auto flush = [&](std::size_t end) {
            if (letters >= 4) ++counts[line.substr(start, end - start)];
            letters = 0;
        };
        while (i < line.size()) {
            const std::size_t at = i;
            const char32_t c = tl::utf8::next(line, i);
            if (tl::unicode::classify(c) == tl::unicode::char_class::letter) {
                if (letters == 0) start = at;
                ++letters;
            } else {
                flush(at);
            }
        }
        flush(line.size());
    }
    return counts;
}

std::vector<std::string> choose_words(const settings& s, const tl::tokenizer& tok,
                                      const std::vector<std::string>& lines) {
    if (!s.words.empty()) return s.words;
    std::vector<std::pair<int, std::string>> ranked;
    for (const auto& [w, n] : count_words(lines))
        if (n >= s.min_count && int(tok.encode(w).size()) >= s.min_pieces && tok.token_to_id(w) < 0)
            ranked.emplace_back(n, w);
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<std::string> out;
    for (const auto& r : ranked)
        if (int(out.size()) < s.n_words) out.push_back(r.second);
    tl::check(!out.empty(), [&] {
        return "10_new_tokens: no word of the corpus occurs >= " + std::to_string(s.min_count) +
               " times and splits into >= " + std::to_string(s.min_pieces) +
               " tokens; lower --min-count / --min-pieces or give --words";
    });
    return out;
}

struct texts {
    std::vector<std::string> train, test_with, without;
};

texts usage_texts(const settings& s, const std::vector<std::string>& words, const std::vector<std::string>& lines) {
    texts t;
    std::map<std::string, int> per_word;
    for (const std::string& line : lines) {
        bool has = false, wanted = false;
        for (const std::string& w : words)
            if (line.find(w) != std::string::npos) {
                has = true;
                wanted = wanted || per_word[w] < s.max_texts;
            }
        if (!has) {
            if (t.without.size() < 60) t.without.push_back(line);
            continue;
        }
        if (!wanted) continue;
        for (const std::string& w : words)
            if (line.find(w) != std::string::npos) ++per_word[w];
        ((t.train.size() + t.test_with.size()) % 10 == 9 ? t.test_with : t.train).push_back(line);
    }
    tl::check(!t.train.empty() && !t.test_with.empty() && !t.without.empty(),
              "10_new_tokens: too few corpus lines with and without the words");
    return t;
}

std::vector<tl::token_t> encode_lines(const tl::tokenizer& tok, const std::vector<std::string>& lines) {
    std::vector<tl::token_t> ids;
    for (const std::string& l : lines) {
        const auto e = tok.encode(l + "\n");
        ids.insert(ids.end(), e.begin(), e.end());
    }
    return ids;
}

// Nats per byte of `lines` (each line its own sequence, at most seq_len tokens): comparable across tokenizers.
template <class M>
double nats_per_byte(M& model, const tl::tokenizer& tok, const std::vector<std::string>& lines, tl::index_t T) {
    double nats = 0, bytes = 0;
    for (const std::string& l : lines) {
        auto ids = tok.encode(l);
        if (ids.size() < 2) continue;
        if (tl::index_t(ids.size()) > T) ids.resize(std::size_t(T));
        const double ppl = tl::perplexity(model, ids, T);
        nats += std::log(ppl) * double(ids.size() - 1);
        bytes += double(tok.decode(std::vector<tl::token_t>(ids.begin() + 1, ids.end())).size());
    }
    return bytes > 0 ? nats / bytes : 0.0;
}

template <class M>
std::string greedy(M& model, const tl::tokenizer& tok, const std::string& prompt, int n) {
    auto ids = tok.encode(prompt);
    const tl::index_t V = model.config().vocab_size;
    std::vector<float> logits;
    for (int k = 0; k < n && tl::index_t(ids.size()) < model.config().max_seq_len; ++k) {
        const tl::index_t T = tl::index_t(ids.size());
        model.plan(1, T);
        logits.resize(std::size_t(T * V));
        model.logits(tl::cview<tl::token_t>{ids.data(), {1, T}}, tl::tensor_view<float>{logits.data(), {1, T, V}});
        const float* last = logits.data() + (T - 1) * V;
        ids.push_back(tl::token_t(std::max_element(last, last + V) - last));
    }
    return tok.decode(ids);
}

// Trains `m` for stage k's steps and learning rate on windows of `ids`.
template <class M>
void train_stage(M& m, const std::vector<tl::token_t>& ids, const settings& s, int k, tl::index_t T) {
    tl::token_windows src(ids, 17 + std::uint64_t(k));
    tl::trainer_options opt;
    opt.batch_size = s.batch;
    opt.seq_len = T;
    opt.max_steps = s.steps[k];
    opt.peak_lr = s.lr[k];
    opt.min_lr = s.lr[k] / 10;
    opt.warmup_steps = std::min<long long>(10, s.steps[k] / 5);
    opt.eval_every = 0;
    opt.checkpoint_every = 0;
    opt.resume = false;
    opt.matmul_precision = s.products;
    tl::trainer tr(m, src, std::function<double()>{}, opt);
    tr.run();
}

template <class M>
void run(M& model, tl::tokenizer tok, const settings& s, const std::vector<std::string>& lines) {
    const tl::tokenizer old_tok = tok;
    tl::check(tl::index_t(tok.vocab_size()) <= model.config().vocab_size,
              "10_new_tokens: the tokenizer has more tokens than the model");
    const std::vector<std::string> words = choose_words(s, tok, lines);
    const texts t = usage_texts(s, words, lines);
    std::cout << "words: " << words.size() << "; usage lines " << t.train.size() << " train, " << t.test_with.size()
              << " held out; " << t.without.size() << " lines without them for KL\n";
    const tl::index_t old_rows = model.config().vocab_size;
    // The model may have more rows than the tokenizer has tokens (padding): new tokens then go after the rows.
    std::vector<tl::new_token> list(words.size());
    for (std::size_t i = 0; i < words.size(); ++i)
        list[i].content = words[i];
    while (tl::index_t(tok.vocab_size()) < old_rows) { // padding rows (Qwen2.5: 151,936 rows, 151,665 tokens)
        tl::added_token pad;
        pad.content = "<|pad_" + std::to_string(tok.vocab_size()) + "|>";
        pad.id = tl::token_t(tok.vocab_size());
        tok.added.add(pad); // a special placeholder, so that the new words get ids after every row
    }
    const auto new_ids = tl::add_tokens(tok, std::span<const tl::new_token>(list));
    std::cout << "\nhow each word splits:\n"
              << tl::format_split_report(old_tok, tok, tl::split_report(old_tok, tok, words));

    tl::vocab_resize_options o;
    o.embedding_init = tl::new_row_init::subtoken_mean;
    o.head_init = model.config().tied_embeddings ? tl::new_row_init::subtoken_mean : tl::new_row_init::hf_mean;
    for (const std::string& w : words)
        o.pieces.push_back(old_tok.encode(w));
    auto grown = tl::resize_vocabulary(model, tl::index_t(tok.vocab_size()), o);
    const auto kl_ids = encode_lines(old_tok, t.without);
    const auto with_ids = encode_lines(tok, t.test_with);
    const tl::index_t T = std::min<tl::index_t>(s.seq_len, tl::index_t(model.config().max_seq_len));

    auto report = [&](auto& m, const std::string& when) {
        std::printf("\n== %s ==\n", when.c_str());
        std::printf("held-out lines with the words: %.4f nats/byte (original model: %.4f); new-token mass %.4g\n",
                    nats_per_byte(m, tok, t.test_with, T), nats_per_byte(model, old_tok, t.test_with, T),
                    tl::new_token_mass(m, with_ids, T, tl::token_t(old_rows)));
        std::printf("KL(original || model) on lines without them: %.3g nats/token\n", tl::mean_kl(model, m, kl_ids, T));
        for (std::size_t i = 0; i < words.size(); ++i) {
            std::printf("%s:", words[i].c_str());
            for (auto side : {tl::token_side::input, tl::token_side::output}) {
                std::printf(side == tl::token_side::input ? " nearest (input)" : "; (output)");
                for (const auto& [id, cos] : tl::nearest_tokens(m, new_ids[i], 3, side, old_rows))
                    std::printf(" [%s %.2f]", tl::token_text(tok, id).c_str(), cos);
            }
            std::printf("\n");
        }
        for (std::size_t i = 0; i < words.size(); ++i)
            for (const std::string& l : t.test_with)
                if (const auto at = l.find(words[i]); at != std::string::npos) {
                    std::printf("  > %s\n",
                                greedy(m, tok, l.substr(0, at + words[i].size()), s.generate_tokens).c_str());
                    break;
                }
    };
    report(*grown, "after the resize (stage 0)");

    const auto train_ids = encode_lines(tok, t.train);
    tl::tokenizer_config_options tok_config;
    tok_config.model_max_length = model.config().max_seq_len;
    const tl::vocab_stage stages[3] = {tl::vocab_stage::new_rows, tl::vocab_stage::embeddings_and_head,
                                       tl::vocab_stage::all};
    const char* names[3] = {"stage 1: new rows", "stage 2: embeddings + head", "stage 3: everything"};
    for (int k = 0; k < 3; ++k) {
        if (s.steps[k] <= 0) continue;
        if (k == 2 && s.stage3 != "full") break; // stage 3 as LoRA, below
        tl::set_vocab_stage(*grown, stages[k], new_ids);
        train_stage(*grown, train_ids, s, k, T);
        const fs::path dir = s.out / ("stage" + std::to_string(k + 1));
        tl::save_pretrained(*grown, dir);
        tl::save_tokenizer_folder(tok, tok_config, dir);
        report(*grown, std::string(names[k]) + " (" + std::to_string(s.steps[k]) + " steps) -> " + dir.string());
    }
    if (s.stage3 != "full" && s.steps[2] > 0) {
        // The adapter's base is the model stage 3 starts from: the stage-2 checkpoint, or saved here.
        fs::path base_dir = s.out / "stage2";
        if (s.steps[1] <= 0) {
            base_dir = s.out / "stage3_base";
            tl::save_pretrained(*grown, base_dir);
            tl::save_tokenizer_folder(tok, tok_config, base_dir);
        }
        using lora_t = typename lora_of<M>::type;
        auto lora = std::make_unique<lora_t>(grown->config(), 1);
        for (const tl::parameter_entry& to : lora->parameter_entries())
            for (const tl::parameter_entry& from : grown->parameter_entries())
                if (from.name == to.name)
                    std::copy(from.value.data, from.value.data + from.value.numel(), to.value.data);
        const bool new_rows_only = s.stage3 == "lora-new-rows";
        tl::set_vocab_stage(*lora, new_rows_only ? tl::vocab_stage::all_but_old_rows : tl::vocab_stage::all, new_ids);
        train_stage(*lora, train_ids, s, 2, T);
        const fs::path dir = s.out / "stage3_lora";
        tl::save_adapter(*lora, dir, fs::absolute(base_dir).string());
        tl::save_tokenizer_folder(tok, tok_config, dir);
        report(*lora, std::string("stage 3: LoRA + ") +
                          (new_rows_only ? "new embedding/head rows" : "embeddings + head") + " (" +
                          std::to_string(s.steps[2]) + " steps) -> " + dir.string() + " on " + base_dir.string());
    }
    if (!s.baseline) return;
    // The same stages without new tokens: the original model and tokenizer on the same lines.
    auto plain = tl::resize_vocabulary(model, model.config().vocab_size); // a copy
    const auto plain_ids = encode_lines(old_tok, t.train);
    for (int k = 1; k < 3; ++k) {
        if (s.steps[k] <= 0) continue;
        tl::set_vocab_stage(*plain, stages[k], {});
        train_stage(*plain, plain_ids, s, k, T);
        std::printf("\n== baseline without new tokens, %s (%lld steps) ==\n", names[k], s.steps[k]);
        std::printf("held-out lines with the words: %.4f nats/byte (original model: %.4f)\n",
                    nats_per_byte(*plain, old_tok, t.test_with, T), nats_per_byte(model, old_tok, t.test_with, T));
        std::printf("KL(original || model) on lines without them: %.3g nats/token\n",
                    tl::mean_kl(model, *plain, kl_ids, T));
    }
}

} // namespace

int main(int argc, char** argv) {
    settings s;
    CLI::App app{"Grow a model's vocabulary by new words and train them in stages (docs/vocabulary.md)"};
    app.option_defaults()->always_capture_default();
    recipes::one_line_errors(app);
    app.add_option("--base", s.base, "Hugging Face folder with tokenizer.json");
    app.add_flag("--tiny", s.tiny, "a small Llama-shaped model pretrained here on the corpus instead of --base");
    app.add_option("--tokenizer", s.tokenizer_file, "tokenizer.json for --tiny");
    app.add_option("--pretrain-steps", s.pretrain_steps, "--tiny: pretraining steps on the corpus")
        ->check(recipes::at_least(1LL, "pretraining steps"));
    app.add_option("--corpus", s.corpus, "text, one usage example per line")->required();
    app.add_option("--words", s.words, "words to add (comma-separated); default: chosen from the corpus")
        ->delimiter(',');
    app.add_option("--n-words", s.n_words, "words to choose from the corpus")
        ->check(recipes::at_least(1, "words to choose from the corpus"));
    app.add_option("--min-pieces", s.min_pieces, "a chosen word splits into at least this many tokens")
        ->check(recipes::at_least(2, "tokens a chosen word splits into"));
    app.add_option("--min-count", s.min_count, "a chosen word occurs at least this often")
        ->check(recipes::at_least(1, "occurrences of a chosen word"));
    app.add_option("--max-texts", s.max_texts, "usage lines per word")
        ->check(recipes::at_least(1, "usage lines per word"));
    app.add_option("--steps1", s.steps[0], "stage 1 steps (new rows; 0: skip)")
        ->check(recipes::at_least(0LL, "stage 1 steps; 0: skip"));
    app.add_option("--steps2", s.steps[1], "stage 2 steps (embeddings + head; 0: skip)")
        ->check(recipes::at_least(0LL, "stage 2 steps; 0: skip"));
    app.add_option("--steps3", s.steps[2], "stage 3 steps (everything; 0: skip)")
        ->check(recipes::at_least(0LL, "stage 3 steps; 0: skip"));
    app.add_option("--stage3", s.stage3,
                   "stage 3: full (every parameter), lora (LoRA + embeddings and head: peft modules_to_save) or "
                   "lora-new-rows (LoRA + their new rows: peft trainable_token_indices)")
        ->check(CLI::IsMember({"full", "lora", "lora-new-rows"}));
    app.add_flag("--baseline", s.baseline, "also train stages 2 and 3 without new tokens (original tokenizer)");
    app.add_option("--batch", s.batch, "sequences per step")
        ->check(recipes::at_least(tl::index_t{1}, "sequences per step"));
    app.add_option("--seq-len", s.seq_len, "tokens per sequence")
        ->check(recipes::at_least(tl::index_t{2}, "tokens per sequence"));
    app.add_option("--out", s.out, "checkpoints go to OUT/stage1..3");
    std::string precision = "f32";
    recipes::add_precision_option(app, precision);
    CLI11_PARSE(app, argc, argv);
    try {
        s.products = recipes::checked_precision("10_new_tokens", precision, "cpu");
        recipes::prepare_out_dir(s.out, "--out");
        const std::vector<std::string> lines = lines_of(read_file(s.corpus));
        if (s.tiny) {
            tl::check(!s.tokenizer_file.empty(), "10_new_tokens: --tiny needs --tokenizer");
            const tl::tokenizer tok = tl::load_tokenizer_json(s.tokenizer_file.string());
            tl::model_config c = tl::presets::tiny::value;
            c.vocab_size = tl::index_t(tok.vocab_size());
            tl::decoder<tl::families::llama> model(c, 1);
            tl::token_windows src(encode_lines(tok, lines), 5);
            tl::trainer_options opt;
            opt.batch_size = s.batch;
            opt.seq_len = std::min<tl::index_t>(s.seq_len, tl::index_t(c.max_seq_len));
            opt.max_steps = s.pretrain_steps;
            opt.peak_lr = 3e-3;
            opt.warmup_steps = std::min<long long>(20, s.pretrain_steps / 5); // at most a fifth, as the stages'
            opt.eval_every = 0;
            opt.checkpoint_every = 0;
            opt.resume = false;
            opt.matmul_precision = s.products;
            tl::trainer tr(model, src, std::function<double()>{}, opt);
            tr.run();
            std::cout << "pretrained the tiny model for " << s.pretrain_steps << " steps\n";
            run(model, tok, s, lines);
        } else {
            tl::check(!s.base.empty(), "10_new_tokens: give --base DIR or --tiny");
            const tl::tokenizer tok = tl::load_tokenizer_json((s.base / "tokenizer.json").string());
            tl::with_pretrained(s.base, [&](auto& model) {
                run(model, tok, s, lines);
                return 0;
            });
        }
    } catch (const std::exception& e) {
        return recipes::report_error(e);
    }
    std::cout << "\nnew tokens: done\n";
    return 0;
}
