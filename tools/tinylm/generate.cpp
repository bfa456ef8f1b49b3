// tinylm generate: one continuation (or one chat answer with --chat), streamed to stdout as it is generated.
#include "common.hpp"
#include "interrupt.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace tinylm_cli {

namespace {

struct generate_flags {
    model_flags model;
    sampling_flags sampling;
    std::string prompt;
    fs::path file;
    bool chat = false, json = false, quiet = false, special = false;
    std::string system;
};

std::string read_prompt(const generate_flags& f) {
    if (f.file.empty()) return f.prompt;
    std::stringstream ss;
    if (f.file == "-") {
        ss << std::cin.rdbuf();
    } else {
        std::ifstream in(f.file, std::ios::binary);
        tl::check(bool(in), [&] { return "tinylm generate: cannot read " + f.file.string(); });
        ss << in.rdbuf();
    }
    return ss.str();
}

int run(const generate_flags& f) {
    const std::unique_ptr<tl::text_model> m = open_model(f.model);
    tl::text_generation_options o = f.sampling.apply(*m);
    o.skip_special = !f.special;
    const std::string text = read_prompt(f);
    std::vector<tl::token_t> prompt;
    if (f.chat) {
        const tl::chat_prompt_format format = tl::chat_prompt_format::of(*m);
        nlohmann::ordered_json messages = nlohmann::ordered_json::array();
        if (!f.system.empty()) messages.push_back({{"role", "system"}, {"content", f.system}});
        messages.push_back({{"role", "user"}, {"content", text}});
        prompt = format.encode(*m, messages);
        format.apply(o);
    } else {
        prompt = m->tokenizer().encode(text, {.add_special_tokens = true});
    }
    tl::check(!prompt.empty(), "tinylm generate: the prompt is empty (give --prompt or --file)");
    const tl::index_t context = m->config().max_seq_len;
    tl::check(tl::index_t(prompt.size()) < context, [&] {
        return "tinylm generate: the prompt has " + std::to_string(prompt.size()) + " tokens; the model's context is " +
               std::to_string(context);
    });
    catch_interrupts();
    const auto start = std::chrono::steady_clock::now();
    const tl::text_completion c = m->complete(prompt, o, [&](std::string_view piece) {
        if (!f.json) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
        }
        return !interrupted().load();
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (f.json) {
        const nlohmann::json out{{"model", m->name()},
                                 {"text", c.text},
                                 {"tokens", c.tokens},
                                 {"prompt_tokens", c.prompt_tokens},
                                 {"completion_tokens", c.tokens.size()},
                                 {"finish_reason", tl::finish_reason_name(c.reason)},
                                 {"seconds", seconds}, // prefill and decoding, after the model is loaded
                                 {"first_token_seconds", c.first_token_seconds}}; // prefill and the first pick
        std::cout << out.dump() << "\n";
    } else {
        std::fputc('\n', stdout);
    }
    if (!f.quiet) {
        // The decoding rate: the tokens after the first over the time after it (the first waits for the prompt).
        const double decoding = seconds - c.first_token_seconds;
        char rate[64] = "";
        if (c.tokens.size() > 1 && decoding > 0)
            std::snprintf(rate, sizeof rate, "; decoding %.1f tokens/s", double(c.tokens.size() - 1) / decoding);
        std::fprintf(stderr, "[%zu prompt tokens, %zu new tokens in %.2f s (first after %.2f s%s), %s]\n",
                     c.prompt_tokens, c.tokens.size(), seconds, c.first_token_seconds, rate,
                     tl::finish_reason_name(c.reason));
    }
    return 0;
}

} // namespace

void add_generate(CLI::App& app, command& chosen) {
    auto f = std::make_shared<generate_flags>();
    CLI::App* sub = app.add_subcommand("generate", "continue a prompt (or answer it with --chat), streaming the text");
    add_model_options(*sub, f->model);
    add_decoding_precision_option(*sub, f->model);
    auto* prompt = sub->add_option("--prompt", f->prompt, "the prompt text");
    sub->add_option("--file", f->file, "read the prompt from a file (- for standard input)")->excludes(prompt);
    sub->add_flag("--chat", f->chat, "apply the model's chat template (a plain User:/Assistant: layout without one)");
    sub->add_option("--system", f->system, "system message (with --chat)");
    sub->add_flag("--json", f->json, "print one JSON object (text, tokens, counts, finish_reason) at the end");
    sub->add_flag("--special", f->special, "print special tokens too");
    sub->add_flag("--quiet", f->quiet, "no statistics on stderr");
    f->sampling.add_to(*sub);
    sub->callback([f, &chosen] {
        if (f->prompt.empty() && f->file.empty()) throw CLI::ValidationError("--prompt or --file", "give a prompt");
        if (!f->system.empty() && !f->chat) throw CLI::ValidationError("--system", "needs --chat");
        chosen = [f] { return run(*f); };
    });
}

} // namespace tinylm_cli
