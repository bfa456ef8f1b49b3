// Assistant-only labels (data/sft_labels.hpp): on multi-turn ChatML and Zephyr conversations with tokenizers
// trained here (byte-level BPE, and byte-fallback BPE with metaspace as in Llama), and with the real Qwen3 and
// Llama 2 tokenizers and Qwen3's own template when ../shared/data is present. Each labelled run of tokens must
// decode to exactly one assistant reply plus its end-of-turn marker, in order, and nothing else is labelled.
#include "../support/data.hpp"
#include "../support/errors.hpp"

#include <tinylm/data/sft.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

using namespace tl;
using namespace tl::data;

namespace {

using tl_test::error_of;

const char* corpus = "Привет! Как дела? Хорошо, спасибо. Сколько будет два плюс два? Будет четыре. "
                     "Ты полезный помощник. Расскажи анекдот про кота. Кот пришёл домой и сказал: мяу. "
                     "hello world, the quick brown fox jumps over the lazy dog. user assistant system ";

tokenizer trained_tokenizer(bpe_style style, std::vector<std::string> specials) {
    bpe_trainer_options opt;
    opt.vocab_size = 420;
    opt.special_tokens = std::move(specials);
    opt.style = style;
    opt.n_threads = 1;
    bpe_trainer trainer(opt);
    for (int i = 0; i < 4; ++i)
        trainer.feed(corpus);
    return trainer.train();
}

const tokenizer& byte_level_tok() {
    static const tokenizer t =
        trained_tokenizer(bpe_style::byte_level, {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
    return t;
}
const tokenizer& byte_fallback_tok() {
    static const tokenizer t = trained_tokenizer(bpe_style::byte_fallback, {"<unk>", "<s>", "</s>"});
    return t;
}

conversation multi_turn(bool with_system) {
    conversation c;
    c.source = "test conversation";
    if (with_system) c.messages.push_back({"system", "Ты полезный помощник."});
    c.messages.push_back({"user", "Привет! Как дела?"});
    c.messages.push_back({"assistant", "Хорошо, спасибо."});
    c.messages.push_back({"user", "Сколько будет два плюс два?"});
    c.messages.push_back({"assistant", "Будет четыре."});
    c.messages.push_back({"user", "Расскажи анекдот про кота."});
    c.messages.push_back({"assistant", "Кот пришёл домой и сказал: мяу."});
    return c;
}

std::vector<std::string> replies(const conversation& c) {
    std::vector<std::string> out;
    for (const chat_message& m : c.messages)
        if (m.role == "assistant") out.push_back(m.content);
    return out;
}

// The labelled runs decode to `expected` (one per assistant turn, in order); labels equal ids inside them.
void check_labels(const tokenizer& tok, const sft_example& ex, const std::vector<std::string>& expected) {
    BOOST_REQUIRE_EQUAL(ex.ids.size(), ex.labels.size());
    const auto runs = labelled_runs(ex.labels);
    BOOST_REQUIRE_EQUAL(runs.size(), expected.size());
    std::size_t labelled = 0;
    for (std::size_t k = 0; k < runs.size(); ++k) {
        const auto [b, e] = runs[k];
        for (std::size_t t = b; t < e; ++t)
            BOOST_TEST(ex.labels[t] == ex.ids[t]);
        const std::vector<std::int32_t> span(ex.ids.begin() + std::ptrdiff_t(b), ex.ids.begin() + std::ptrdiff_t(e));
        BOOST_TEST(tok.decode(span) == expected[k], "run " << k << ": «" << tok.decode(span) << "»");
        // The token before the run still belongs to the prompt (the header of the assistant turn).
        BOOST_TEST(b > 0);
        labelled += e - b;
    }
    BOOST_TEST(ex.labelled_tokens() == labelled);
    std::size_t ignored = 0;
    for (const std::int32_t l : ex.labels)
        ignored += l == sft_ignore_index;
    BOOST_TEST(ignored + labelled == ex.labels.size()); // nothing else is labelled, nor set to another value
}

std::vector<std::string> with_suffix(std::vector<std::string> v, const std::string& suffix) {
    for (auto& s : v)
        s += suffix;
    return v;
}

std::filesystem::path tokenizer_dir(const char* name) {
    return tl_test::data_path(std::filesystem::path("tokenizers") / name);
}

// The Qwen tokenizer (11 MB of JSON), loaded once for the tests that use it.
const tokenizer& qwen_tokenizer(const std::filesystem::path& dir) {
    static const tokenizer t = load_tokenizer_json((dir / "tokenizer.json").string());
    return t;
}

} // namespace

BOOST_AUTO_TEST_SUITE(sft_labels)

BOOST_AUTO_TEST_CASE(chatml_multi_turn) {
    const chat_template tmpl = chat_template::chatml();
    for (const bool with_system : {true, false}) {
        const conversation c = multi_turn(with_system);
        const sft_example ex = tokenize_conversation(byte_level_tok(), tmpl, c);
        check_labels(byte_level_tok(), ex, with_suffix(replies(c), "<|im_end|>"));
        // The ids are those of the template's rendering (byte-level BPE round-trips exactly).
        BOOST_TEST(byte_level_tok().decode(ex.ids) == tmpl.render(c.to_json()));
    }
}

BOOST_AUTO_TEST_CASE(zephyr_multi_turn) {
    const chat_template tmpl = chat_template::zephyr();
    const conversation c = multi_turn(true);
    for (const bool bos : {false, true}) {
        tokenizer tok = byte_fallback_tok();
        tok.prefix_tokens = {tok.token_to_id("<s>")};
        const sft_example ex = tokenize_conversation(tok, tmpl, c, {.add_special_tokens = bos});
        check_labels(tok, ex, with_suffix(replies(c), "</s>"));
        BOOST_TEST((ex.ids.front() == tok.token_to_id("<s>")) == bos);
        BOOST_TEST(ex.labels.front() == sft_ignore_index);
    }
}

BOOST_AUTO_TEST_CASE(spans_in_rendered_text) {
    const chat_template tmpl = chat_template::chatml();
    const conversation c = multi_turn(false);
    const rendered_conversation r = render_with_spans(tmpl, c);
    const auto want = with_suffix(replies(c), "<|im_end|>");
    BOOST_REQUIRE_EQUAL(r.spans.size(), want.size());
    for (std::size_t k = 0; k < want.size(); ++k) {
        BOOST_TEST(r.text.substr(r.spans[k].begin, r.spans[k].end - r.spans[k].begin) == want[k]);
        BOOST_TEST(r.text.substr(0, r.spans[k].begin).ends_with("<|im_start|>assistant\n"));
    }
}

BOOST_AUTO_TEST_CASE(reply_that_repeats_the_prompt) {
    // The reply's text also occurs earlier in the conversation (and in the template's header): the span must
    // still be the reply's own occurrence.
    conversation c;
    c.messages = {{"user", "assistant"}, {"assistant", "assistant"}, {"user", "user"}, {"assistant", "user"}};
    const sft_example ex = tokenize_conversation(byte_level_tok(), chat_template::chatml(), c);
    check_labels(byte_level_tok(), ex, {"assistant<|im_end|>", "user<|im_end|>"});
    const rendered_conversation r = render_with_spans(chat_template::chatml(), c);
    BOOST_TEST(
        r.text.substr(0, r.spans[1].begin).ends_with("<|im_start|>user\nuser<|im_end|>\n<|im_start|>assistant\n"));
}

BOOST_AUTO_TEST_CASE(truncation) {
    const conversation c = multi_turn(true);
    const sft_example full = tokenize_conversation(byte_level_tok(), chat_template::chatml(), c);
    const std::size_t cut = full.ids.size() - 5;
    const sft_example ex = tokenize_conversation(byte_level_tok(), chat_template::chatml(), c, {.max_length = cut});
    BOOST_TEST(ex.ids.size() == cut);
    BOOST_TEST(ex.full_length == full.ids.size());
    BOOST_TEST(ex.truncated());
    BOOST_TEST(std::equal(ex.ids.begin(), ex.ids.end(), full.ids.begin()));
    BOOST_TEST(std::equal(ex.labels.begin(), ex.labels.end(), full.labels.begin()));
    BOOST_TEST(!full.truncated());
}

BOOST_AUTO_TEST_CASE(errors) {
    conversation c;
    c.source = "data.jsonl:7";
    c.messages = {{"user", "Привет"}, {"assistant", "Пока"}};
    // A template that leaves the assistant's content out.
    const chat_template drops("{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}"
                              "{{ eos_token }}{% endfor %}",
                              "drops replies");
    chat_template with_eos = drops;
    with_eos.set_variable("eos_token", "</s>");
    const std::string e1 = error_of([&] { (void)render_with_spans(with_eos, c); });
    BOOST_TEST(e1.find("data.jsonl:7") != std::string::npos, e1);
    BOOST_TEST(e1.find("assistant message 1") != std::string::npos, e1);
    // No end-of-turn marker known.
    const std::string e2 = error_of([&] { (void)render_with_spans(drops, c); });
    BOOST_TEST(e2.find("end_of_turn") != std::string::npos, e2);
    // A marker that never follows the reply.
    const std::string e3 =
        error_of([&] { (void)render_with_spans(chat_template::chatml(), c, {.end_of_turn = "<|eot|>"}); });
    BOOST_TEST(e3.find("<|eot|>") != std::string::npos, e3);
}

BOOST_AUTO_TEST_CASE(next_token_targets_shift) {
    const std::vector<std::int32_t> labels{-100, -100, 5, 6, -100, 7};
    const std::vector<std::int32_t> want{-100, 5, 6, -100, 7, -100};
    BOOST_TEST(next_token_targets(labels) == want);
}

// ---- real tokenizers and templates (../shared/data/tokenizers) ---------------------------------------------

BOOST_AUTO_TEST_CASE(qwen3_template_and_tokenizer,
                     tl_test::needs_data("tokenizers/qwen3/tokenizer.json", "tokenizers/qwen3/tokenizer_config.json")) {
    const auto dir = tokenizer_dir("qwen3");
    const tokenizer& tok = qwen_tokenizer(dir);
    { // The worked example of docs/sft.md: each token, labelled ones in [ ], with its id.
        conversation w;
        w.messages = {{"system", "Отвечай кратко."}, {"user", "Сколько будет 2+2?"}, {"assistant", "Четыре."}};
        const sft_example ex = tokenize_conversation(tok, chat_template::chatml(), w);
        std::string shown;
        for (std::size_t t = 0; t < ex.ids.size(); ++t) {
            std::string piece = tok.decode(std::vector<std::int32_t>{ex.ids[t]});
            for (std::size_t at = 0; (at = piece.find('\n', at)) != std::string::npos;)
                piece.replace(at, 1, "\\n");
            const bool on = ex.labels[t] != sft_ignore_index;
            shown += (on ? "[" : "") + piece + (on ? "]" : "") + "(" + std::to_string(ex.ids[t]) + ") ";
        }
        BOOST_TEST_MESSAGE("worked example (ChatML, Qwen tokenizer), " << ex.ids.size() << " tokens, "
                                                                       << ex.labelled_tokens() << " labelled:\n"
                                                                       << shown);
        check_labels(tok, ex, {"Четыре.<|im_end|>"});
    }
    const conversation c = multi_turn(true);
    // ChatML (Qwen2.5's template) with the Qwen tokenizer.
    const sft_example chatml = tokenize_conversation(tok, chat_template::chatml(), c);
    check_labels(tok, chatml, with_suffix(replies(c), "<|im_end|>"));
    // Qwen3's own template: the last reply (after the last user turn) carries an empty think block, which the
    // model generates after "<|im_start|>assistant\n" and so is labelled; earlier replies are plain.
    const chat_template qwen3 = chat_template::from_tokenizer_config(dir / "tokenizer_config.json");
    const sft_example ex = tokenize_conversation(tok, qwen3, c);
    auto want = with_suffix(replies(c), "<|im_end|>");
    want.back() = "<think>\n\n</think>\n\n" + want.back();
    check_labels(tok, ex, want);
    BOOST_TEST(tok.decode(ex.ids) == qwen3.render(c.to_json()));
    // A reply with its own reasoning keeps it inside the labelled span.
    conversation r = c;
    r.messages.back().content = "<think>\nкот, мяу\n</think>\n\nМяу.";
    const sft_example er = tokenize_conversation(tok, qwen3, r);
    auto want_r = want;
    want_r.back() = "<think>\nкот, мяу\n</think>\n\nМяу.<|im_end|>";
    check_labels(tok, er, want_r);
}

BOOST_AUTO_TEST_CASE(zephyr_with_llama2_tokenizer, tl_test::needs_data("tokenizers/llama2/tokenizer.json")) {
    const auto dir = tokenizer_dir("llama2");
    const tokenizer tok = load_tokenizer_json((dir / "tokenizer.json").string());
    const conversation c = multi_turn(true);
    const sft_example ex = tokenize_conversation(tok, chat_template::zephyr(), c, {.add_special_tokens = true});
    check_labels(tok, ex, with_suffix(replies(c), "</s>"));
    BOOST_TEST(ex.ids.front() == tok.token_to_id("<s>"));
}

// The whole path on real data: seed tasks and arena chats, Qwen tokenizer, ChatML, rows of 1024.
BOOST_AUTO_TEST_CASE(shared_data_to_packed_rows,
                     tl_test::needs_data("tokenizers/qwen3/tokenizer.json", "instruct/ru_alpaca_seed_tasks.jsonl",
                                         "instruct/ru_arena_chats.jsonl")) {
    const auto dir = tokenizer_dir("qwen3");
    const auto data = tl_test::data_dir();
    const tokenizer& tok = qwen_tokenizer(dir);
    const std::int32_t pad = tok.token_to_id("<|endoftext|>");
    for (const auto& [file, limit] :
         {std::pair{"ru_alpaca_seed_tasks.jsonl", 0}, std::pair{"ru_arena_chats.jsonl", 300}}) {
        const auto convs = read_sft(data / "instruct" / file, sft_format::automatic, {.limit = std::size_t(limit)});
        const auto exs = tokenize_conversations(tok, chat_template::chatml(), convs, {.max_length = 1024});
        std::size_t tokens = 0, labelled = 0, truncated = 0, targets = 0;
        for (std::size_t k = 0; k < exs.size(); ++k) {
            tokens += exs[k].ids.size();
            labelled += exs[k].labelled_tokens();
            truncated += exs[k].truncated();
            // One labelled run per assistant turn (fewer only when truncation cut the conversation short).
            BOOST_TEST(labelled_runs(exs[k].labels).size() <= 1u);
            BOOST_TEST((exs[k].labelled_tokens() > 0 || exs[k].truncated()));
            for (std::size_t t = 1; t < exs[k].labels.size(); ++t)
                targets += exs[k].labels[t] >= 0;
        }
        const sft_rows padded = pad_examples(exs, 1024, pad), packed = pack_examples(exs, 1024, pad);
        const auto counted = [](const sft_rows& r) {
            return std::size_t(
                std::count_if(r.targets.begin(), r.targets.end(), [](std::int32_t t) { return t >= 0; }));
        };
        BOOST_TEST(counted(packed) == targets); // packing loses no target and adds none
        BOOST_TEST(counted(padded) == targets);
        BOOST_TEST(packed.rows <= padded.rows);
        BOOST_TEST_MESSAGE(file << ": " << exs.size() << " conversations, " << tokens << " tokens (" << labelled
                                << " labelled, " << truncated << " truncated at 1024); rows of 1024: padded "
                                << padded.rows << " (fill " << padded.fill() << "), packed " << packed.rows << " (fill "
                                << packed.fill() << ")");
    }
}

BOOST_AUTO_TEST_SUITE_END()
