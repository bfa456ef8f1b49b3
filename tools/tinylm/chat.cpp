// tinylm chat: a conversation in the terminal with the model's chat template (a plain User:/Assistant: layout for
// a model without one). Line editing and history with libedit when standard input is a terminal; piped input is
// read line by line (scripts, tests). Ctrl-C stops the current answer, Ctrl-D quits.
#include "common.hpp"
#include "interrupt.hpp"

#include <editline/readline.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

namespace tinylm_cli {

namespace {

struct chat_flags {
    model_flags model;
    sampling_flags sampling;
    std::string system;
    bool prompt_cache = true; // each turn runs only what follows the conversation the KV cache already holds
    bool quiet = false;
};

const char* help_text =
    "commands:\n"
    "  /reset               forget the conversation (the system message stays)\n"
    "  /system TEXT         set the system message (empty: none) and forget the conversation\n"
    "  /set NAME VALUE      temperature, top_k, top_p, min_p, repetition_penalty, max_tokens, seed\n"
    "  /show                the current settings\n"
    "  /help                this text\n"
    "  /quit                leave (or Ctrl-D); Ctrl-C stops an answer\n";

class line_reader {
public:
    line_reader() : tty_(isatty(STDIN_FILENO) != 0) {}
    // A line without its newline; nullopt at the end of input.
    std::optional<std::string> read(const char* prompt) {
        if (!tty_) {
            std::string line;
            if (!std::getline(std::cin, line)) return std::nullopt;
            return line;
        }
        for (;;) {
            interrupted() = false;
            char* raw = readline(prompt);
            if (raw == nullptr) {
                if (interrupted().exchange(false)) { // Ctrl-C at the prompt: not a way out
                    std::printf("\n(Ctrl-D or /quit leaves)\n");
                    continue;
                }
                return std::nullopt;
            }
            std::string line(raw);
            std::free(raw);
            if (!line.empty()) add_history(line.c_str());
            return line;
        }
    }
    bool tty() const { return tty_; }

private:
    bool tty_;
};

// The settings /set changes, then the ones the command line fixed (the weights' and the cache's precision).
void show(const tl::text_generation_options& o, const chat_flags& f) {
    const tl::sampling_options& s = o.generation.sampling;
    std::printf("temperature %g, top_k %d, top_p %g, min_p %g, repetition_penalty %g, max_tokens %d, seed %llu\n",
                s.temperature, s.top_k, s.top_p, s.min_p, s.repetition_penalty, o.generation.max_new_tokens,
                static_cast<unsigned long long>(s.seed));
    std::printf("precision %s, kv-cache %s, prompt cache %s (command line)\n", f.model.precision.c_str(),
                f.model.kv_cache.c_str(), f.prompt_cache ? "on" : "off");
}

// "/set name value": false (and a message) when the name or value is not valid.
bool set_option(tl::text_generation_options& o, const std::string& name, const std::string& value) {
    tl::sampling_options s = o.generation.sampling;
    int max_tokens = o.generation.max_new_tokens;
    try {
        std::size_t used = 0;
        if (name == "temperature")
            s.temperature = std::stod(value, &used);
        else if (name == "top_k")
            s.top_k = std::stoi(value, &used);
        else if (name == "top_p")
            s.top_p = std::stod(value, &used);
        else if (name == "min_p")
            s.min_p = std::stod(value, &used);
        else if (name == "repetition_penalty")
            s.repetition_penalty = std::stod(value, &used);
        else if (name == "max_tokens")
            max_tokens = std::stoi(value, &used);
        else if (name == "seed")
            s.seed = std::stoull(value, &used);
        else {
            std::printf("unknown setting '%s'; /help lists them\n", name.c_str());
            return false;
        }
        if (used != value.size()) throw std::invalid_argument(value);
        tl::sampler check(1, s); // the sampler's own range checks
    } catch (const std::exception&) {
        std::printf("invalid value '%s' for %s\n", value.c_str(), name.c_str());
        return false;
    }
    if (max_tokens <= 0) {
        std::printf("max_tokens must be positive\n");
        return false;
    }
    o.generation.sampling = s;
    o.generation.max_new_tokens = max_tokens;
    return true;
}

int run(const chat_flags& f) {
    const std::unique_ptr<tl::text_model> m = open_model(f.model);
    m->keep_prompt_cache(f.prompt_cache ? 1 : 0);
    const tl::chat_prompt_format format = tl::chat_prompt_format::of(*m);
    tl::text_generation_options options = f.sampling.apply(*m);
    if (!f.sampling.given.max_tokens) options.generation.max_new_tokens = 256;
    format.apply(options);
    const tl::index_t context = m->config().max_seq_len;
    std::string system = f.system;
    nlohmann::ordered_json turns = nlohmann::ordered_json::array(); // user and assistant messages
    line_reader reader;
    catch_interrupts();
    std::fprintf(stderr, "%s chat with %s (context %d tokens); /help for commands, Ctrl-D quits\n",
                 format.plain ? "plain User:/Assistant:" : "templated", m->name().c_str(), int(context));
    for (std::uint64_t turn = 0;; ++turn) {
        const std::optional<std::string> line = reader.read("> ");
        if (!line) break;
        if (line->empty()) continue;
        if ((*line)[0] == '/') {
            std::istringstream words(*line);
            std::string cmd, a, b;
            words >> cmd >> a >> b;
            if (cmd == "/quit" || cmd == "/exit") break;
            if (cmd == "/reset") {
                turns = nlohmann::ordered_json::array();
                std::printf("(conversation forgotten)\n");
            } else if (cmd == "/system") {
                system = line->size() > 8 ? line->substr(8) : "";
                turns = nlohmann::ordered_json::array();
                std::printf("(system message %s; conversation forgotten)\n", system.empty() ? "removed" : "set");
            } else if (cmd == "/set") {
                if (set_option(options, a, b)) show(options, f);
            } else if (cmd == "/show") {
                show(options, f);
            } else if (cmd == "/help") {
                std::printf("%s", help_text);
            } else {
                std::printf("unknown command %s; /help lists them\n", cmd.c_str());
            }
            std::fflush(stdout);
            continue;
        }
        turns.push_back({{"role", "user"}, {"content", *line}});
        // Drop the oldest exchanges until the prompt leaves room for an answer (a quarter of the context at least).
        const tl::index_t room = std::min<tl::index_t>(options.generation.max_new_tokens, context / 4);
        std::vector<tl::token_t> prompt;
        for (;;) {
            nlohmann::ordered_json messages = nlohmann::ordered_json::array();
            if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
            for (const auto& t : turns)
                messages.push_back(t);
            prompt = format.encode(*m, messages);
            if (tl::index_t(prompt.size()) + room <= context || turns.size() <= 1) break;
            turns.erase(turns.begin(), turns.begin() + std::min<std::ptrdiff_t>(2, std::ptrdiff_t(turns.size()) - 1));
            std::printf("(the oldest turn was dropped to fit the context of %d tokens)\n", int(context));
        }
        if (tl::index_t(prompt.size()) >= context) {
            std::printf("(that message is %zu tokens with the template; the context is %d: not sent)\n", prompt.size(),
                        int(context));
            turns.erase(turns.end() - 1);
            continue;
        }
        tl::text_generation_options o = options;
        o.generation.sampling.seed = options.generation.sampling.seed + turn;
        interrupted() = false;
        const auto start = std::chrono::steady_clock::now();
        const tl::text_completion c = m->complete(prompt, o, [&](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return !interrupted().load();
        });
        std::printf(c.reason == tl::finish_reason::cancelled ? " (stopped)\n" : "\n");
        std::fflush(stdout);
        if (!f.quiet)
            std::fprintf(stderr, "[%zu prompt tokens (%zu from the cache), %zu new tokens in %.2f s, %s]\n",
                         c.prompt_tokens, c.cached_tokens, c.tokens.size(),
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                         tl::finish_reason_name(c.reason));
        std::string answer = c.text;
        if (format.plain) answer.erase(0, answer.find_first_not_of(' ')); // the layout's own space after "Assistant:"
        turns.push_back({{"role", "assistant"}, {"content", answer}});
    }
    if (reader.tty()) std::printf("\n");
    return 0;
}

} // namespace

void add_chat(CLI::App& app, command& chosen) {
    auto f = std::make_shared<chat_flags>();
    CLI::App* sub = app.add_subcommand("chat", "talk to a model in the terminal (its chat template)");
    add_model_options(*sub, f->model);
    add_decoding_precision_option(*sub, f->model);
    sub->add_option("--system", f->system, "system message");
    sub->add_flag("--prompt-cache,!--no-prompt-cache", f->prompt_cache,
                  "keep the KV cache between turns, so that a turn runs only its new tokens (default on; logits then "
                  "differ from a fresh prefill's by f32 rounding)");
    sub->add_flag("--quiet", f->quiet, "no statistics on stderr (one line a turn: prompt tokens, cached, new, time)");
    f->sampling.add_to(*sub);
    sub->callback([f, &chosen] { chosen = [f] { return run(*f); }; });
}

} // namespace tinylm_cli
