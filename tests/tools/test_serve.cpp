// The `tinylm` command's parts: a model folder loaded as a text_model, adapters merged at load, generation as
// text, the OpenAI-compatible server (plain HTTP, in this process), and the binary itself (generate, chat).
#include "../support/errors.hpp"
#include "../support/run_command.hpp"

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/gemv_f32.hpp>
#include <tinylm/eval/multiple_choice.hpp>
#include <tinylm/eval/paraphrase_qa.hpp>
#include <tinylm/io/gguf.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/serve/openai_server.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <latch>
#include <optional>
#include <thread>

namespace fs = std::filesystem;

namespace {

struct test_lora {
    static constexpr tl::lora_config value{.rank = 4, .alpha = 8, .dropout = 0, .targets = tl::lora_all};
};

tl::model_config tiny_config(const tl::tokenizer& tok, int context) {
    tl::model_config c = tl::presets::tiny::value;
    c.vocab_size = int(tok.vocab_size());
    c.max_seq_len = context;
    c.init_std = 0.2; // far from uniform logits: greedy choices are clear of rounding
    return c;
}

const tl::tokenizer& test_tokenizer() {
    static const tl::tokenizer tok =
        tl::load_tokenizer_json(std::string(TINYLM_SOURCE_DIR) + "/tests/reference/tokenizer/trained_byte_level.json");
    return tok;
}

// A model folder as a checkpoint holds it: random weights, the trained byte-level tokenizer, optionally a ChatML
// template in tokenizer_config.json.
fs::path make_folder(const std::string& name, bool chatml, int context = 1024) {
    const fs::path dir = fs::temp_directory_path() / ("tinylm_tools_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(dir);
    tl::decoder<tl::families::llama> m(tiny_config(test_tokenizer(), context), 11);
    tl::save_pretrained(m, dir);
    tl::save_tokenizer_json(test_tokenizer(), (dir / "tokenizer.json").string());
    if (chatml) {
        const nlohmann::json config{{"chat_template", std::string(tl::chat_templates::chatml)},
                                    {"eos_token", "<|im_end|>"},
                                    {"pad_token", "<|endoftext|>"}};
        std::ofstream(dir / "tokenizer_config.json") << config.dump(2);
    }
    return dir;
}

const fs::path& plain_folder() {
    static const fs::path dir = make_folder("plain", false);
    return dir;
}
const fs::path& chat_folder() {
    static const fs::path dir = make_folder("chat", true);
    return dir;
}

// bf16: the decoding steps read bf16 copies of the weights (tinylm --precision bf16).
std::vector<tl::token_t> greedy_reference(const fs::path& dir, std::span<const tl::token_t> prompt, int n,
                                          tl::decoding_format format = tl::decoding_format::f32,
                                          tl::kv_precision kv = tl::kv_precision::f32) {
    tl::decoder<tl::families::llama> m(tl::read_hf_folder_config(dir));
    tl::load_pretrained(m, dir);
    m.set_kv_precision(kv);
    std::optional<tl::decoding_weights> copies;
    if (format != tl::decoding_format::f32) copies.emplace(m.parameter_entries(), format);
    return tl::generate(m, prompt, {.max_new_tokens = n, .sampling = {.temperature = 0.0}});
}

using tl_test::run_command;

} // namespace

BOOST_AUTO_TEST_SUITE(text_model_parts)

BOOST_AUTO_TEST_CASE(greedy_text_equals_tl_generate) {
    const auto m = tl::load_text_model(plain_folder());
    const std::vector<tl::token_t> prompt = m->tokenizer().encode("Жили-были старик со старухой");
    tl::text_generation_options o = m->default_options(40);
    BOOST_TEST(o.generation.sampling.temperature == 0.0); // no generation_config sampling: greedy, as transformers
    std::string streamed;
    const tl::text_completion c = m->complete(prompt, o, [&](std::string_view piece) {
        streamed += piece;
        return true;
    });
    const std::vector<tl::token_t> want = greedy_reference(plain_folder(), prompt, 40);
    BOOST_TEST(c.tokens == want, boost::test_tools::per_element());
    BOOST_TEST(streamed == c.text);
    const std::string full = m->tokenizer().decode(want, true);
    if (tl::utf8::is_valid(full)) BOOST_TEST(c.text == full);
    BOOST_TEST(tl::finish_reason_name(c.reason) == std::string("length"));
    BOOST_TEST(c.prompt_tokens == prompt.size());
    BOOST_TEST(c.first_token_seconds > 0); // the prompt ran before the first token
}

// complete() from four threads at once, with batch_rows 4: the generations are decoded together (a step held more
// than one of them) and each gives what it gives alone, token for token: the products of a decoding step sum each
// row as alone, from q8_0 copies of the weights or (on CPUs with AVX2 or AVX-512) from the f32 weights. The
// generations differ in prompt, length (one leaves early), seed and stop string; a fifth waits for a place
// (batch_rows 4) and joins when one leaves.
void check_decoded_together_as_alone(tl::decoding_format precision) {
    const auto m = tl::load_text_model(plain_folder());
    if (precision != tl::decoding_format::f32) m->use_decoding_weights(precision);
    const std::vector<std::string> prompts = {"Жили-были", "старик со старухой у самого синего моря", "Вопрос",
                                              "Жили-были старик", "море"};
    std::vector<tl::text_generation_options> options;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        tl::sampling_overrides u{.temperature = 0.8, .max_tokens = i == 2 ? 7 : 90, .seed = 100 + i};
        if (i == 3) u.stop = {"о"};
        options.push_back(m->options_with(u));
    }
    auto ask = [&](std::size_t i) {
        std::string streamed;
        tl::text_completion c = m->complete(m->tokenizer().encode(prompts[i]), options[i], [&](std::string_view p) {
            streamed += p;
            return true;
        });
        BOOST_TEST(streamed == c.text);
        return c;
    };
    std::vector<tl::text_completion> alone, together(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i)
        alone.push_back(ask(i));
    BOOST_TEST(m->batch_stats().widest == 1u);
    m->set_batch_rows(4);
    BOOST_TEST(m->batch_rows() == 4);
    std::latch start(std::ptrdiff_t(prompts.size()));
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < prompts.size(); ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            together[i] = ask(i);
        });
    for (std::thread& t : threads)
        t.join();
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        BOOST_TEST(together[i].tokens == alone[i].tokens, "generation " << i);
        BOOST_TEST(together[i].text == alone[i].text);
        BOOST_TEST((together[i].reason == alone[i].reason));
    }
    BOOST_TEST(alone[2].tokens.size() == 7u);
    BOOST_TEST((alone[3].reason == tl::finish_reason::stop)); // the stop string
    const tl::batch_counts counts = m->batch_stats();
    BOOST_TEST(counts.widest > 1u);
    BOOST_TEST(counts.widest <= 4u);
    BOOST_TEST_MESSAGE("decoding steps " << counts.steps << ", rows " << counts.rows << ", widest " << counts.widest);
}
BOOST_AUTO_TEST_CASE(complete_from_several_threads_decodes_them_together) {
    check_decoded_together_as_alone(tl::decoding_format::q8_0);
    if (tl::detail::gemv_f32_has_kernel()) check_decoded_together_as_alone(tl::decoding_format::f32);
}

// Beside a generation decoded with others: one whose on_text says stop (cancelled: it ends at the next step) and one
// whose on_text throws (complete() throws it, once the generation has left the batch); the first is unchanged and
// the model serves the next call.
BOOST_AUTO_TEST_CASE(a_generation_cancelled_or_throwing_leaves_the_batch) {
    const auto m = tl::load_text_model(plain_folder());
    m->use_decoding_weights(tl::decoding_format::q8_0);
    const tl::text_generation_options o = m->options_with({.temperature = 0.8, .max_tokens = 120, .seed = 5});
    const std::vector<tl::token_t> prompt = m->tokenizer().encode("Жили-были");
    const tl::text_completion alone = m->complete(prompt, o, [](std::string_view) { return true; });
    BOOST_TEST_REQUIRE(alone.tokens.size() > 20u); // long enough to be cancelled half-way
    m->set_batch_rows(3);
    std::latch start(3);
    tl::text_completion kept, cancelled;
    std::thread a([&] {
        start.arrive_and_wait();
        kept = m->complete(prompt, o, [](std::string_view) { return true; });
    });
    std::thread b([&] {
        start.arrive_and_wait();
        int pieces = 0;
        cancelled = m->complete(prompt, o, [&](std::string_view) { return ++pieces < 2; });
    });
    bool threw = false;
    std::thread c([&] {
        start.arrive_and_wait();
        try {
            m->complete(prompt, o, [](std::string_view) -> bool { throw std::runtime_error("client gone"); });
        } catch (const std::runtime_error&) {
            threw = true;
        }
    });
    a.join(), b.join(), c.join();
    BOOST_TEST(kept.tokens == alone.tokens);
    BOOST_TEST((cancelled.reason == tl::finish_reason::cancelled));
    BOOST_TEST(cancelled.tokens.size() < alone.tokens.size());
    BOOST_TEST(threw);
    BOOST_TEST(m->complete(prompt, o, [](std::string_view) { return true; }).tokens == alone.tokens);
}

// A long prompt joining a generation that is decoding runs in parts (prompt_chunk 8: a 60-token prompt in 8 parts,
// one a step, the other generation decoding a token at each), and the decoding one gives the tokens it gives
// alone; alone, or with prompt_chunk 0, a prompt runs whole.
BOOST_AUTO_TEST_CASE(a_long_prompt_joins_in_parts) {
    const auto m = tl::load_text_model(plain_folder());
    m->use_decoding_weights(tl::decoding_format::q8_0);
    const tl::text_generation_options a_options = m->options_with({.temperature = 0.8, .max_tokens = 300, .seed = 9});
    const tl::text_generation_options b_options = m->options_with({.temperature = 0.0, .max_tokens = 6});
    const std::vector<tl::token_t> a_prompt = m->tokenizer().encode("Жили-были");
    std::vector<tl::token_t> b_prompt;
    for (int i = 0; i < 60; ++i)
        b_prompt.push_back(m->tokenizer().encode("море")[0]);
    auto quiet = [](std::string_view) { return true; };
    const tl::text_completion a_alone = m->complete(a_prompt, a_options, quiet);
    BOOST_TEST_REQUIRE(a_alone.tokens.size() > 100u);
    m->complete(b_prompt, b_options, quiet);
    BOOST_TEST(m->batch_stats().prompt_parts == 0u); // alone: whole
    for (const int chunk : {8, 0}) {
        m->set_batch_rows(2);
        m->set_prompt_chunk(chunk);
        const std::size_t parts_before = m->batch_stats().prompt_parts;
        std::promise<void> decoding;
        tl::text_completion a, b;
        std::thread a_thread([&] {
            bool first = true;
            a = m->complete(a_prompt, a_options, [&](std::string_view) {
                if (first) decoding.set_value(), first = false;
                std::this_thread::sleep_for(std::chrono::microseconds(500)); // a slow client: b joins meanwhile
                return true;
            });
        });
        decoding.get_future().wait();
        b = m->complete(b_prompt, b_options, quiet);
        a_thread.join();
        BOOST_TEST(a.tokens == a_alone.tokens, "chunk " << chunk);
        BOOST_TEST(b.prompt_tokens == 60u);
        BOOST_TEST((b.tokens.size() == 6u || b.reason == tl::finish_reason::stop));
        const std::size_t parts = m->batch_stats().prompt_parts - parts_before;
        BOOST_TEST(parts == (chunk == 8 ? 7u : 0u), "chunk " << chunk); // 7 parts of 8, then the last 4
    }
}

BOOST_AUTO_TEST_CASE(stop_strings_end_the_text) {
    const auto m = tl::load_text_model(plain_folder());
    const std::vector<tl::token_t> prompt = m->tokenizer().encode("Жили-были");
    tl::text_generation_options o = m->default_options(40);
    const tl::text_completion all = m->complete(prompt, o, [](std::string_view) { return true; });
    BOOST_TEST_REQUIRE(all.text.size() > 6u);
    std::size_t at = all.text.size() / 2; // one whole character from the middle of the text
    while (at > 0 && (static_cast<unsigned char>(all.text[at]) & 0xC0) == 0x80)
        --at;
    const std::string stop = all.text.substr(at, std::max<std::size_t>(1, tl::utf8::sequence_length(all.text, at)));
    BOOST_TEST_REQUIRE(tl::utf8::is_valid(stop));
    o.stop = {stop};
    const tl::text_completion cut = m->complete(prompt, o, [](std::string_view) { return true; });
    BOOST_TEST(cut.text == all.text.substr(0, all.text.find(stop)));
    BOOST_TEST(tl::finish_reason_name(cut.reason) == std::string("stop"));
}

BOOST_AUTO_TEST_CASE(adapter_merged_at_load_equals_the_lora_model) {
    const fs::path dir = fs::temp_directory_path() / ("tinylm_tools_lora_" + std::to_string(getpid()));
    fs::remove_all(dir);
    const tl::model_config c = tiny_config(test_tokenizer(), 64);
    tl::decoder<tl::families::llama, tl::default_backend, test_lora> lora(c, 5);
    lora.init_adapter(6);
    tl::counter_rng rng(9, 1);
    for (const tl::parameter_entry& e : lora.parameter_entries())
        if (e.kind == tl::param_kind::adapter)
            for (float& w : e.value)
                w = float(rng.uniform() - 0.5) * 0.2f; // lora_B starts at zero: make both non-zero
    tl::save_pretrained(lora, dir / "base");
    tl::save_tokenizer_json(test_tokenizer(), (dir / "base" / "tokenizer.json").string());
    tl::save_adapter(lora, dir / "adapter");

    const std::vector<tl::token_t> ids = test_tokenizer().encode("Сәлам, дөнья! Hello, world.");
    const tl::index_t t = tl::index_t(ids.size()), v = c.vocab_size;
    std::vector<float> want(std::size_t(t * v)), got(want.size());
    lora.logits(tl::cview<tl::token_t>{ids.data(), {1, t}}, tl::tensor_view<float>{want.data(), {1, t, v}});
    tl::decoder<tl::families::llama> plain(c);
    tl::load_pretrained(plain, dir / "base");
    const tl::merge_report r = tl::merge_adapter(plain, dir / "adapter");
    BOOST_TEST(r.lora_pairs == 7 * c.n_layers);
    plain.logits(tl::cview<tl::token_t>{ids.data(), {1, t}}, tl::tensor_view<float>{got.data(), {1, t, v}});
    float worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
        worst = std::max(worst, std::abs(got[i] - want[i]));
    BOOST_TEST(worst < 2e-4f);

    // Through the loader, as `tinylm generate --adapter` does: the same greedy tokens as the LoRA model.
    const auto m = tl::load_text_model(dir / "base", dir / "adapter");
    const tl::text_completion completion =
        m->complete(ids, m->default_options(12), [](std::string_view) { return true; });
    BOOST_TEST(completion.tokens == tl::generate(lora, ids, {.max_new_tokens = 12, .sampling = {.temperature = 0.0}}),
               boost::test_tools::per_element());

    // `tinylm export-gguf --adapter`: the file llama.cpp would run holds the merged weights (read back: the LoRA
    // model's logits).
    const fs::path gguf = dir / "merged.gguf";
    run_command(std::string(TINYLM_BINARY) + " export-gguf --model " + (dir / "base").string() + " --adapter " +
                (dir / "adapter").string() + " --type f32 --out " + gguf.string() + " 2>/dev/null");
    const tl::gguf::reader file(gguf);
    tl::decoder<tl::families::llama> from_gguf(tl::gguf_model_config(file));
    tl::load_gguf_weights(from_gguf, file);
    from_gguf.logits(tl::cview<tl::token_t>{ids.data(), {1, t}}, tl::tensor_view<float>{got.data(), {1, t, v}});
    worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
        worst = std::max(worst, std::abs(got[i] - want[i]));
    BOOST_TEST(worst < 2e-4f);

    // What would compute something else is refused, naming the field.
    nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "adapter" / "adapter_config.json"));
    config["use_dora"] = true;
    std::ofstream(dir / "adapter" / "adapter_config.json") << config.dump();
    BOOST_TEST(tl_test::error_of([&] { tl::merge_adapter(plain, dir / "adapter"); }).find("use_dora") !=
               std::string::npos);
    BOOST_TEST(tl_test::error_of([&] { tl::merge_adapter(plain, dir / "nowhere"); }).find("adapter_config.json") !=
               std::string::npos);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

struct running_server {
    std::unique_ptr<tl::text_model> model;
    std::unique_ptr<tl::openai_server> server;
    std::thread thread;
    // prompt_cache: conversations kept between requests (text_model::keep_prompt_cache); batch: requests decoded
    // together (text_model::set_batch_rows), with q8_0 decoding copies when more than 1 (their products sum each
    // row as alone, so answers do not depend on which requests ran together).
    explicit running_server(const fs::path& dir, int prompt_cache = 0, int batch = 1)
        : model(tl::load_text_model(dir)) {
        model->keep_prompt_cache(prompt_cache);
        model->set_batch_rows(batch);
        if (batch > 1) model->use_decoding_weights(tl::decoding_format::q8_0);
        server = std::make_unique<tl::openai_server>(*model, tl::server_options{.port = 0, .log = false});
        BOOST_TEST_REQUIRE(server->bind());
        thread = std::thread([this] { server->listen_after_bind(); });
    }
    ~running_server() {
        server->stop();
        thread.join();
    }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(60, 0);
        return c;
    }
};

// The text of a server-sent-event stream, joined, and the finish reason and usage of its last chunks.
struct stream_result {
    std::string text, finish_reason;
    nlohmann::json usage;
    bool done = false;
    int events = 0;
};
stream_result read_events(const std::string& body, bool chat) {
    stream_result r;
    std::size_t at = 0;
    while (at < body.size()) {
        const std::size_t end = body.find("\n\n", at);
        BOOST_TEST_REQUIRE(end != std::string::npos);
        const std::string event = body.substr(at, end - at);
        at = end + 2;
        BOOST_TEST_REQUIRE(event.rfind("data: ", 0) == 0u);
        const std::string data = event.substr(6);
        if (data == "[DONE]") {
            r.done = true;
            break;
        }
        const nlohmann::json j = nlohmann::json::parse(data);
        ++r.events;
        if (j.contains("usage")) r.usage = j["usage"];
        if (j["choices"].empty()) continue;
        const nlohmann::json& choice = j["choices"][0];
        if (chat && choice["delta"].contains("content")) r.text += choice["delta"]["content"].get<std::string>();
        if (!chat) r.text += choice["text"].get<std::string>();
        if (!choice["finish_reason"].is_null()) r.finish_reason = choice["finish_reason"];
    }
    return r;
}

} // namespace

BOOST_AUTO_TEST_SUITE(openai_server_http)

BOOST_AUTO_TEST_CASE(completions_streaming_and_not) {
    running_server s(plain_folder());
    httplib::Client c = s.client();
    const auto health = c.Get("/health");
    BOOST_TEST_REQUIRE(bool(health));
    BOOST_TEST(health->status == 200);
    const auto models = c.Get("/v1/models");
    BOOST_TEST(nlohmann::json::parse(models->body)["data"][0]["id"] == s.model->name());

    const std::string prompt = "Жили-были старик со старухой";
    const nlohmann::json request{{"model", "any"}, {"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}};
    const auto plain = c.Post("/v1/completions", request.dump(), "application/json");
    BOOST_TEST_REQUIRE(plain->status == 200);
    const nlohmann::json j = nlohmann::json::parse(plain->body);
    const std::vector<tl::token_t> ids = s.model->tokenizer().encode(prompt, {.add_special_tokens = true});
    const std::vector<tl::token_t> want = greedy_reference(plain_folder(), ids, 24);
    tl::stream_decoder text(s.model->tokenizer());
    std::string want_text;
    for (tl::token_t id : want)
        want_text += text.push(id);
    want_text += text.finish();
    BOOST_TEST(j["choices"][0]["text"] == want_text);
    BOOST_TEST(j["choices"][0]["finish_reason"] == "length");
    BOOST_TEST(j["usage"]["prompt_tokens"] == ids.size());
    BOOST_TEST(j["usage"]["completion_tokens"] == 24);
    BOOST_TEST(j["object"] == "text_completion");

    nlohmann::json streamed = request;
    streamed["stream"] = true;
    streamed["stream_options"] = {{"include_usage", true}};
    const auto events = c.Post("/v1/completions", streamed.dump(), "application/json");
    BOOST_TEST_REQUIRE(events->status == 200);
    BOOST_TEST(events->get_header_value("Content-Type").find("text/event-stream") == 0u);
    const stream_result r = read_events(events->body, false);
    BOOST_TEST(r.done);
    BOOST_TEST(r.text == want_text);
    BOOST_TEST(r.finish_reason == "length");
    BOOST_TEST(r.usage["completion_tokens"] == 24);
    BOOST_TEST(r.events > 10);
}

BOOST_AUTO_TEST_CASE(chat_completions_with_the_template) {
    running_server s(chat_folder());
    httplib::Client c = s.client();
    const nlohmann::json messages = nlohmann::json::array(
        {{{"role", "system"}, {"content", "Ты помощник."}}, {{"role", "user"}, {"content", "Сколько планет?"}}});
    const nlohmann::json request{{"messages", messages}, {"max_tokens", 16}, {"temperature", 0}};
    const auto plain = c.Post("/v1/chat/completions", request.dump(), "application/json");
    BOOST_TEST_REQUIRE(plain->status == 200);
    const nlohmann::json j = nlohmann::json::parse(plain->body);
    BOOST_TEST(j["object"] == "chat.completion");
    BOOST_TEST(j["choices"][0]["message"]["role"] == "assistant");
    // The prompt is the ChatML rendering, as transformers' apply_chat_template gives it.
    const std::string rendered = s.model->folder().chat->render(messages, {.add_generation_prompt = true});
    BOOST_TEST(rendered.find("<|im_start|>assistant\n") != std::string::npos);
    const std::vector<tl::token_t> ids = s.model->tokenizer().encode(rendered);
    BOOST_TEST(j["usage"]["prompt_tokens"] == ids.size());
    nlohmann::json streamed = request;
    streamed["stream"] = true;
    const auto events = c.Post("/v1/chat/completions", streamed.dump(), "application/json");
    const stream_result r = read_events(events->body, true);
    BOOST_TEST(r.done);
    BOOST_TEST(r.text == j["choices"][0]["message"]["content"].get<std::string>());
    BOOST_TEST(r.finish_reason == j["choices"][0]["finish_reason"].get<std::string>());
}

// Two clients' chats taking turns on a server keeping two conversations: each resent conversation runs only its new
// message (usage.prompt_tokens_details.cached_tokens), and every answer is the one a server without a cache gives.
BOOST_AUTO_TEST_CASE(chats_resent_by_two_clients_come_from_the_prompt_cache) {
    running_server cached(chat_folder(), 2), fresh(chat_folder());
    httplib::Client c = cached.client(), f = fresh.client();
    auto ask = [](httplib::Client& client, const nlohmann::json& messages) {
        const nlohmann::json request{{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}};
        const auto res = client.Post("/v1/chat/completions", request.dump(), "application/json");
        BOOST_TEST_REQUIRE(res->status == 200);
        return nlohmann::json::parse(res->body);
    };
    std::vector<nlohmann::json> chats(2);
    std::vector<std::size_t> previous(2, 0); // each conversation's prompt tokens in its last turn
    for (int turn = 0; turn < 3; ++turn)
        for (std::size_t who = 0; who < 2; ++who) {
            chats[who].push_back({{"role", "user"}, {"content", "Вопрос " + std::to_string(turn * 2 + who)}});
            const nlohmann::json got = ask(c, chats[who]), want = ask(f, chats[who]);
            const std::string answer = got["choices"][0]["message"]["content"];
            BOOST_TEST(answer == want["choices"][0]["message"]["content"].get<std::string>());
            const std::size_t cached_tokens = got["usage"]["prompt_tokens_details"]["cached_tokens"];
            BOOST_TEST(want["usage"]["prompt_tokens_details"]["cached_tokens"] == 0u);
            const std::size_t prompt_tokens = got["usage"]["prompt_tokens"];
            BOOST_TEST(cached_tokens < prompt_tokens);
            if (turn == 0 && who == 0) BOOST_TEST(cached_tokens == 0u);
            // Later turns: at least the conversation's previous prompt, though the other came in between (the
            // answer's tokens may differ from the template's encoding of its text).
            if (turn > 0) BOOST_TEST(cached_tokens >= previous[who]);
            previous[who] = prompt_tokens;
            chats[who].push_back({{"role", "assistant"}, {"content", answer}});
        }
}

// Four clients at once, served one after another (batch 1) and decoded together (batch 4): each gets the answer it
// gets alone.
BOOST_DATA_TEST_CASE(four_clients_at_once, boost::unit_test::data::make({1, 4}), batch) {
    running_server s(plain_folder(), 0, batch);
    std::vector<std::string> alone(4);
    auto ask = [&](int i) {
        httplib::Client c = s.client();
        const nlohmann::json request{
            {"messages", {{{"role", "user"}, {"content", "Вопрос номер " + std::to_string(i)}}}},
            {"max_tokens", 32},
            {"temperature", 0.8},
            {"seed", i}};
        const auto res = c.Post("/v1/chat/completions", request.dump(), "application/json");
        return res && res->status == 200
                   ? nlohmann::json::parse(res->body)["choices"][0]["message"]["content"].get<std::string>()
                   : std::string("(failed)");
    };
    for (int i = 0; i < 4; ++i)
        alone[std::size_t(i)] = ask(i);
    std::vector<std::future<std::string>> together;
    for (int i = 0; i < 4; ++i)
        together.push_back(std::async(std::launch::async, ask, i));
    for (int i = 0; i < 4; ++i)
        BOOST_TEST(together[std::size_t(i)].get() == alone[std::size_t(i)]); // same seed, same answer, in any order
    BOOST_TEST(s.server->served() == 8u);
}

// n choices: choice i is what a request with seed + i gets (decoded together: batch 4, q8_0 copies), streamed too
// (each chunk names its choice); usage counts the prompt once and every choice's tokens.
BOOST_AUTO_TEST_CASE(n_choices_are_requests_with_seed_plus_i) {
    running_server s(chat_folder(), 0, 4);
    httplib::Client c = s.client();
    auto ask = [&](const nlohmann::json& extra) {
        nlohmann::json request{{"messages", {{{"role", "user"}, {"content", "Расскажи сказку"}}}},
                               {"max_tokens", 24},
                               {"temperature", 0.9},
                               {"seed", 7}};
        request.update(extra);
        const auto res = c.Post("/v1/chat/completions", request.dump(), "application/json");
        BOOST_TEST_REQUIRE(res->status == 200, res->body);
        return res->body;
    };
    const nlohmann::json three = nlohmann::json::parse(ask({{"n", 3}}));
    BOOST_TEST_REQUIRE(three["choices"].size() == 3u);
    std::size_t tokens = 0;
    for (int i = 0; i < 3; ++i) {
        const nlohmann::json alone = nlohmann::json::parse(ask({{"seed", 7 + i}}));
        BOOST_TEST(three["choices"][i]["index"] == i);
        BOOST_TEST(three["choices"][i]["message"]["content"] == alone["choices"][0]["message"]["content"], i);
        BOOST_TEST(three["choices"][i]["finish_reason"] == alone["choices"][0]["finish_reason"]);
        tokens += alone["usage"]["completion_tokens"].get<std::size_t>();
        BOOST_TEST(three["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"]);
    }
    BOOST_TEST(three["usage"]["completion_tokens"].get<std::size_t>() == tokens);
    const std::string body = ask({{"n", 3}, {"stream", true}, {"stream_options", {{"include_usage", true}}}});
    std::vector<std::string> texts(3);
    std::size_t at = 0, finishes = 0;
    while ((at = body.find("data: {", at)) != std::string::npos) {
        const std::size_t end = body.find("\n\n", at);
        const nlohmann::json e = nlohmann::json::parse(body.substr(at + 6, end - at - 6));
        at = end;
        if (e.contains("usage") && !e["usage"].is_null())
            BOOST_TEST(e["usage"]["completion_tokens"].get<std::size_t>() == tokens);
        for (const nlohmann::json& choice : e["choices"]) {
            texts[choice["index"].get<std::size_t>()] += choice["delta"].value("content", "");
            if (!choice["finish_reason"].is_null()) ++finishes;
        }
    }
    BOOST_TEST(finishes == 3u);
    for (std::size_t i = 0; i < 3; ++i)
        BOOST_TEST(texts[i] == three["choices"][i]["message"]["content"].get<std::string>(), i);
}

BOOST_AUTO_TEST_CASE(bad_requests_are_400_with_an_error_body) {
    running_server s(plain_folder());
    httplib::Client c = s.client();
    const std::string long_prompt(20000, 'a');
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"/v1/completions", "{not json"},
        {"/v1/completions", "[1, 2]"},
        {"/v1/completions", R"({"prompt": "x", "bogus_field": 1})"},
        {"/v1/completions", R"({"prompt": 5})"},
        {"/v1/completions", R"({})"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": 0})"},
        {"/v1/completions", R"({"prompt": "x", "max_tokens": "ten"})"},
        {"/v1/completions", R"({"prompt": "x", "temperature": 3})"},
        {"/v1/completions", R"({"prompt": "x", "top_p": 0})"},
        {"/v1/completions", R"({"prompt": "x", "n": 17})"},
        {"/v1/completions", R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})"},
        {"/v1/completions", R"({"prompt": "x", "stop": [""]})"},
        {"/v1/completions", R"({"prompt": "x", "stream": "yes"})"},
        {"/v1/completions", R"({"prompt": "x", "presence_penalty": 0.5})"},
        {"/v1/completions", nlohmann::json{{"prompt", long_prompt}}.dump()},
        {"/v1/chat/completions", R"({"messages": []})"},
        {"/v1/chat/completions", R"({"messages": [{"content": "no role"}]})"},
        {"/v1/chat/completions", R"({"messages": [{"role": "tool", "content": "x"}]})"},
        {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"},
        {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "tools": []})"},
    };
    BOOST_TEST_REQUIRE(bad.size() == 20u);
    for (const auto& [path, body] : bad) {
        const auto res = c.Post(path, body, "application/json");
        BOOST_TEST_REQUIRE(bool(res), path << " " << body.substr(0, 60));
        BOOST_TEST(res->status == 400, body.substr(0, 60) << " -> " << res->status);
        const nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
        BOOST_TEST(
            (j.is_object() && j["error"]["type"] == "invalid_request_error" && j["error"]["message"].is_string()),
            res->body);
    }
    BOOST_TEST(c.Get("/nowhere")->status == 404);
    const auto ok = c.Post("/v1/completions", R"({"prompt": "still alive", "max_tokens": 3})", "application/json");
    BOOST_TEST(ok->status == 200); // nothing crashed
}

BOOST_AUTO_TEST_CASE(a_client_leaving_mid_stream_frees_the_model) {
    running_server s(plain_folder());
    // A raw socket with a small receive buffer, so that the server's writes fill it and fail after the close.
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    const int small = 2048;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(std::uint16_t(s.server->port()));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    BOOST_TEST_REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    const std::string body = R"({"prompt": "Жили-были", "max_tokens": 1000, "stream": true, "temperature": 0})";
    const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Content-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body;
    BOOST_TEST_REQUIRE(write(fd, request.data(), request.size()) == ssize_t(request.size()));
    std::string received; // until the first event: the generation is under way
    char buf[512];
    while (received.find("data: ") == std::string::npos) {
        const ssize_t n = read(fd, buf, sizeof buf);
        BOOST_TEST_REQUIRE(n > 0);
        received.append(buf, std::size_t(n));
    }
    close(fd); // with unread data: the kernel resets the connection, the server's next write fails
    // The server notices at a write, stops generating and serves the next client.
    httplib::Client c = s.client();
    const auto next = c.Post("/v1/completions", R"({"prompt": "next", "max_tokens": 4})", "application/json");
    BOOST_TEST(next->status == 200);
    BOOST_TEST(s.server->disconnected() == 1u);
    BOOST_TEST(s.server->served() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tinylm_command)

// Also with --precision bf16, q8_0 and q4_0: the tokens of tl::generate under tl::decoding_weights; with --kv-cache
// bf16, those of a model whose caches are bf16.
BOOST_AUTO_TEST_CASE(generate_greedy_equals_tl_generate) {
    for (const auto& [precision, kv] : {std::pair<std::string, std::string>{"f32", "f32"},
                                        {"bf16", "f32"},
                                        {"q8_0", "f32"},
                                        {"q4_0", "f32"},
                                        {"f32", "bf16"},
                                        {"q8_0", "bf16"}}) {
        const std::string out =
            run_command(std::string(TINYLM_BINARY) + " generate --model " + plain_folder().string() + " --precision " +
                        precision + " --kv-cache " + kv +
                        " --prompt 'Жили-были' --max-tokens 20 --temperature 0 --json --quiet "
                        "2>/dev/null");
        const nlohmann::json j = nlohmann::json::parse(out);
        const std::vector<tl::token_t> ids = test_tokenizer().encode("Жили-были");
        BOOST_TEST(j["tokens"].get<std::vector<tl::token_t>>() == greedy_reference(plain_folder(), ids, 20,
                                                                                   tl::parse_decoding_format(precision),
                                                                                   tl::parse_kv_precision(kv)),
                   boost::test_tools::per_element());
        BOOST_TEST(j["finish_reason"] == "length");
        BOOST_TEST(j["prompt_tokens"] == ids.size());
        BOOST_TEST((j["first_token_seconds"].get<double>() > 0 &&
                    j["first_token_seconds"].get<double>() <= j["seconds"].get<double>()));
    }
    for (const std::string precision : {"bf16", "q8_0", "q4_0"}) {
        const std::string said =
            run_command(std::string(TINYLM_BINARY) + " generate --model " + plain_folder().string() + " --precision " +
                        precision + " --prompt x --max-tokens 2 " + "2>&1 >/dev/null");
        BOOST_TEST(said.find("decoding reads " + precision + " copies of the weights") != std::string::npos, said);
    }
    const std::string said = run_command(std::string(TINYLM_BINARY) + " generate --model " + plain_folder().string() +
                                         " --kv-cache bf16 --prompt x --max-tokens 2 2>&1 >/dev/null");
    BOOST_TEST(said.find("KV caches keep keys and values in bf16") != std::string::npos, said);
}

// --model FILE.gguf: the tokenizer, special tokens and weights come from the file. Exported in f32 (weights bit for
// bit, the llama q/k permutation undone), it generates the folder's tokens; a chat through the file's template
// answers like the folder; eval bpb gives the folder's figure; info describes it.
BOOST_AUTO_TEST_CASE(generate_and_chat_from_a_gguf_file) {
    const fs::path dir = fs::temp_directory_path() / ("tinylm_tools_gguf_" + std::to_string(getpid()));
    fs::create_directories(dir);
    for (const fs::path& folder : {plain_folder(), chat_folder()})
        tl::with_pretrained(folder, [&](auto& m) {
            tl::write_gguf(m, tl::read_hf_folder(folder), {.type = tl::gguf_type::f32},
                           dir / (folder.filename().string() + ".gguf"));
            return 0;
        });
    auto generate = [](const fs::path& model) {
        return nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " generate --model " + model.string() +
                                                 " --prompt 'Жили-были' --max-tokens 16 --temperature 0 --json "
                                                 "--quiet 2>/dev/null"));
    };
    const nlohmann::json folder = generate(plain_folder()),
                         file = generate(dir / (plain_folder().filename().string() + ".gguf"));
    BOOST_TEST(file["tokens"] == folder["tokens"]);
    BOOST_TEST(file["text"] == folder["text"]);
    BOOST_TEST(file["prompt_tokens"] == folder["prompt_tokens"]);
    const fs::path script = dir / "chat.txt";
    std::ofstream(script) << "Привет!\n/set temperature 0\nКак дела?\n";
    auto chat = [&](const fs::path& model) {
        return run_command(std::string(TINYLM_BINARY) + " chat --model " + model.string() + " --max-tokens 8 < " +
                           script.string() + " 2>/dev/null");
    };
    BOOST_TEST(chat(dir / (chat_folder().filename().string() + ".gguf")) == chat(chat_folder()));
    // info describes the file: the folder's architecture and tokenizer, the file's tensor types.
    const nlohmann::json info =
        nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " info " +
                                          (dir / (plain_folder().filename().string() + ".gguf")).string() + " --json"));
    const nlohmann::json folder_info =
        nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " info " + plain_folder().string() + " --json"));
    BOOST_TEST(info["architecture"] == folder_info["architecture"]);
    BOOST_TEST(info["parameters"] == folder_info["parameters"]);
    BOOST_TEST(info["tokenizer"] == folder_info["tokenizer"]);
    BOOST_TEST(info["tensor_dtypes"]["F32"].get<int>() > 0);
    BOOST_TEST(info.contains("file"));
    // eval bpb reads the file too (tokenizer and weights from it): the folder's figure.
    const fs::path text = dir / "text.txt";
    std::ofstream(text) << "Жили-были старик со старухой у самого синего моря.\nОни жили в ветхой землянке.\n";
    auto bpb = [&](const fs::path& model) {
        return nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " eval bpb --model " + model.string() +
                                                 " --text " + text.string() + " --split line --json 2>/dev/null"));
    };
    const nlohmann::json from_file = bpb(dir / (plain_folder().filename().string() + ".gguf"));
    BOOST_TEST(from_file["bits_per_byte"].get<double>() == bpb(plain_folder())["bits_per_byte"].get<double>(),
               boost::test_tools::tolerance(1e-12));
    BOOST_TEST(from_file["tokens"].get<int>() > 10);
    const std::string refused = run_command(std::string(TINYLM_BINARY) + " generate --model " + script.string() +
                                            " --prompt x 2>&1; echo rc=$?");
    BOOST_TEST(refused.find("not a folder or a .gguf file") != std::string::npos, refused);
    BOOST_TEST(refused.find("rc=0") == std::string::npos, refused);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(chat_script_on_standard_input) {
    const fs::path script = fs::temp_directory_path() / ("tinylm_chat_script_" + std::to_string(getpid()));
    std::ofstream(script) << "Привет!\n/set temperature 0\n/set bogus 1\n/show\nКак дела?\n/reset\nЕщё раз\n";
    const std::string out =
        run_command(std::string(TINYLM_BINARY) + " chat --model " + chat_folder().string() +
                    " --max-tokens 8 --kv-cache bf16 --system 'Ты помощник.' < " + script.string() + " 2>/dev/null");
    BOOST_TEST(out.find("temperature 0, top_k") != std::string::npos, out);
    BOOST_TEST(out.find("precision f32, kv-cache bf16, prompt cache on") != std::string::npos, out);
    BOOST_TEST(out.find("unknown setting 'bogus'") != std::string::npos);
    BOOST_TEST(out.find("(conversation forgotten)") != std::string::npos);
    fs::remove(script);
}

// eval bpb through decoding steps: f32 steps give the whole windows' figure; --precision makes the copies the steps
// read (the figure moves, and the report says what was read); more than 8 windows a step is refused.
BOOST_AUTO_TEST_CASE(eval_bpb_by_decoding_steps) {
    const fs::path text = fs::temp_directory_path() / ("tinylm_bpb_text_" + std::to_string(getpid()));
    std::ofstream(text) << "Жили-были старик со старухой у самого синего моря.\nОни жили в ветхой землянке.\n"
                           "Старик ловил неводом рыбу, а старуха пряла свою пряжу.\n";
    auto bpb = [&](const std::string& flags) {
        return run_command(std::string(TINYLM_BINARY) + " eval bpb --model " + plain_folder().string() + " --text " +
                           text.string() + " --split line " + flags + " 2>&1");
    };
    auto figure = [](const std::string& out) {
        const std::size_t at = out.find("bits per byte ");
        BOOST_TEST_REQUIRE(at != std::string::npos, out);
        return std::stod(out.substr(at + 14));
    };
    const std::string whole = bpb(""), steps = bpb("--by-steps --batch 2"), q4 = bpb("--precision q4_0");
    BOOST_TEST(whole.find("by decoding steps") == std::string::npos, whole);
    BOOST_TEST(steps.find("by decoding steps: weights f32, KV cache f32") != std::string::npos, steps);
    BOOST_TEST(q4.find("by decoding steps: weights q4_0, KV cache f32") != std::string::npos, q4);
    BOOST_TEST(figure(steps) == figure(whole), boost::test_tools::tolerance(2e-4));
    BOOST_TEST(figure(q4) != figure(whole));
    // --json: the report alone on stdout, the figures the text gives.
    const nlohmann::json j = nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " eval bpb --model " +
                                                               plain_folder().string() + " --text " + text.string() +
                                                               " --split line --precision q4_0 --json 2>/dev/null"));
    BOOST_TEST(j["bits_per_byte"].get<double>() == figure(q4), boost::test_tools::tolerance(1e-4));
    BOOST_TEST(j["precision"] == "q4_0");
    BOOST_TEST(j["by_steps"] == true);
    BOOST_TEST(j["documents"] == 3);
    BOOST_TEST(j["tokens"].get<std::size_t>() > 3u);
    const std::string refused = bpb("--precision q8_0 --batch 9 2>&1; echo rc=$?");
    BOOST_TEST(refused.find("--batch: at most 8 windows a step") != std::string::npos, refused);
    BOOST_TEST(refused.find("rc=0") == std::string::npos, refused);
    fs::remove(text);
}

// eval mc and qa --json: stdout is the report alone, and its figures are the library's on the same model and data
// (06_evaluate's rules: shots from the test documents, the tokenizer's prefix token).
BOOST_AUTO_TEST_CASE(eval_mc_and_qa_json_are_the_library_reports) {
    const fs::path task = fs::temp_directory_path() / ("tinylm_mc_task_" + std::to_string(getpid()) + ".jsonl");
    std::ofstream(task)
        << R"({"question": "Кто ловил рыбу?", "choices": ["старик", "старуха", "море"], "answer": 0})"
        << "\n"
        << R"({"question": "Что пряла старуха?", "choices": ["невод", "пряжу"], "answer": 1})"
        << "\n"
        << R"({"question": "Где жили старик со старухой?", "choices": ["у моря", "в лесу"], "answer": 0})"
        << "\n";
    tl::decoder<tl::families::llama> model(tl::read_hf_folder_config(plain_folder()));
    tl::load_pretrained(model, plain_folder());
    const tl::token_t prefix = tl::eval::default_prefix_token(test_tokenizer());

    const nlohmann::json mc =
        nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " eval mc --model " + plain_folder().string() +
                                          " --task " + task.string() + " --shots 1 --json 2>/dev/null"));
    const std::vector<tl::eval::mc_doc> docs = tl::eval::load_mc_jsonl(task);
    tl::eval::mc_options mo{.num_fewshot = 1, .shots_from_test = true};
    mo.loglikelihood.prefix_token = prefix;
    const tl::eval::mc_report mr = tl::eval::evaluate_mc(model, test_tokenizer(), docs, docs, mo);
    BOOST_TEST(mc["documents"] == 3);
    BOOST_TEST(mc["shots"] == 1);
    BOOST_TEST(mc["acc"].get<double>() == mr.acc);
    BOOST_TEST(mc["acc_norm"].get<double>() == mr.acc_norm);
    BOOST_TEST(mc["acc_bytes"].get<double>() == mr.acc_bytes);

    const fs::path facts = fs::path(TINYLM_SOURCE_DIR) / "benchmarks/tatar_qa/facts.jsonl";
    const nlohmann::json qa =
        nlohmann::json::parse(run_command(std::string(TINYLM_BINARY) + " eval qa --model " + plain_folder().string() +
                                          " --set " + facts.string() + " --score sum --json 2>/dev/null"));
    const tl::eval::qa_set set = tl::eval::load_qa(facts);
    tl::eval::qa_options qo{.score = tl::eval::qa_score::sum};
    qo.loglikelihood.prefix_token = prefix;
    const tl::eval::qa_report qr = tl::eval::evaluate_qa(model, test_tokenizer(), set, qo);
    BOOST_TEST(qa["score"] == "sum");
    BOOST_TEST(qa["questions"] == set.question_count());
    BOOST_TEST(qa["model"]["correct"] == qr.correct);
    BOOST_TEST(qa["model"]["questions"] == qr.questions);
    BOOST_TEST(qa["model"]["consistent_facts"] == qr.consistent_facts);
    BOOST_TEST(qa["model"]["accuracy"].get<double>() == qr.accuracy());
    BOOST_TEST(qa["model"]["groups"].size() == qr.groups.size());
    BOOST_TEST(!qa.contains("untrained")); // only with --floors
    fs::remove(task);
}

BOOST_AUTO_TEST_CASE(bad_flags_are_refused) {
    const std::string cmd = std::string(TINYLM_BINARY) + " generate --model /nonexistent --prompt x 2>&1; echo rc=$?";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[1024];
    while (const std::size_t n = std::fread(buf, 1, sizeof buf, p))
        out.append(buf, n);
    pclose(p);
    BOOST_TEST(out.find("--model") != std::string::npos, out);
    BOOST_TEST(out.find("rc=0") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

// For the Python checks (tests/tools/serve_check.py): the ChatML fixture folder written to $TINYLM_TOOLS_FIXTURE.
BOOST_AUTO_TEST_CASE(export_fixture, *boost::unit_test::disabled()) {
    const char* out = std::getenv("TINYLM_TOOLS_FIXTURE");
    BOOST_TEST_REQUIRE(out != nullptr, "set TINYLM_TOOLS_FIXTURE");
    fs::remove_all(out);
    fs::copy(chat_folder(), out, fs::copy_options::recursive);
}
