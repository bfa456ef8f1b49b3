// tinylm/serve/openai_server.hpp: an OpenAI-compatible HTTP server over a tl::text_model (cpp-httplib, Debian's
// libcpp-httplib-dev; link tinylm::serve).
//
//   tl::openai_server server(*model, {.host = "127.0.0.1", .port = 8080});
//   server.listen(); // blocks until stop() (from another thread or a signal watcher)
//
// Endpoints: POST /v1/chat/completions, POST /v1/completions (both streaming with server-sent events when
// "stream": true, with usage counts; stream_options.include_usage adds the final usage chunk), GET /v1/models,
// GET /health. The request fields OpenAI documents for these endpoints are read; tinylm adds top_k, min_p and
// repetition_penalty; n up to 16 choices (choice i samples with seed + i, the choices decoded together). A field it
// does not know, or cannot honour (best_of, logprobs, penalties other than 0, tools), a malformed body, or a prompt
// that does not fit the context, is answered 400 with OpenAI's error body
// {"error": {"message", "type": "invalid_request_error", "param", "code"}}. Fields not given take the model's
// generation_config.json defaults (greedy unless it says do_sample), not OpenAI's temperature 1.
//
// Requests in flight together are decoded together, up to the model's batch_rows() (text_model::set_batch_rows;
// `tinylm serve --batch N`): each step runs one forward for all of them (continuous batching: a request joins at
// the next step and leaves when it ends; eval/continuous_batch.hpp); the others wait, in arrival order. With the
// model's prompt cache on
// (text_model::keep_prompt_cache; `tinylm serve --prompt-cache N`), a request that resends a conversation runs
// only its new tokens; usage.prompt_tokens_details.cached_tokens counts the others, as OpenAI's API does. A streaming
// client that disconnects stops its generation at the next token and frees the model. The server binds to 127.0.0.1
// unless told otherwise.
#pragma once

#include <tinylm/serve/chat_format.hpp>
#include <tinylm/serve/text_model.hpp>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <future>
#include <mutex>
#include <set>
#include <string>

namespace tl {

struct server_options {
    std::string host = "127.0.0.1";
    int port = 8080;      // 0: any free port (see openai_server::port())
    int max_waiting = 64; // requests waiting for a place in the batch beyond this are answered 503
    bool log = true;      // one line per request on stderr
};

class openai_server {
public:
    openai_server(const text_model& model, server_options options)
        : model_(model), options_(std::move(options)), format_(chat_prompt_format::of(model)) {
        routes();
    }

    // Binds (port 0: a free one) and serves until stop(). False when the address cannot be bound.
    bool listen() {
        std::signal(SIGPIPE, SIG_IGN); // a client gone mid-write must not kill the server (httplib sends plainly)
        if (!bind()) return false;
        return http_.listen_after_bind();
    }
    // Binds without serving yet (to learn the port first); listen_after_bind() then serves.
    bool bind() {
        if (port_ > 0) return true;
        port_ = options_.port == 0 ? http_.bind_to_any_port(options_.host)
                                   : (http_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
        return port_ > 0;
    }
    bool listen_after_bind() {
        std::signal(SIGPIPE, SIG_IGN);
        return http_.listen_after_bind();
    }
    void stop() { http_.stop(); }
    int port() const { return port_; }
    std::size_t served() const { return served_.load(); }             // completions sent whole
    std::size_t disconnected() const { return disconnected_.load(); } // streams whose client left mid-way

private:
    struct api_error {
        int status;
        std::string message, param, code;
    };
    using ojson = nlohmann::ordered_json;

    static void send_error(httplib::Response& res, const api_error& e) {
        res.status = e.status;
        const char* type = e.status == 400   ? "invalid_request_error"
                           : e.status == 404 ? "not_found_error"
                                             : "server_error";
        ojson body{{"error",
                    {{"message", e.message},
                     {"type", type},
                     {"param", e.param.empty() ? ojson(nullptr) : ojson(e.param)},
                     {"code", e.code.empty() ? ojson(nullptr) : ojson(e.code)}}}};
        res.set_content(body.dump(), "application/json");
    }

    void routes() {
        http_.set_payload_max_length(16u << 20);
        http_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
            res.set_content(R"({"status":"ok"})", "application/json");
        });
        http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
            ojson body{
                {"object", "list"},
                {"data",
                 ojson::array(
                     {{{"id", model_.name()}, {"object", "model"}, {"created", created_}, {"owned_by", "tinylm"}}})}};
            res.set_content(body.dump(), "application/json");
        });
        http_.Post("/v1/chat/completions",
                   [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, true); });
        http_.Post("/v1/completions",
                   [this](const httplib::Request& req, httplib::Response& res) { handle(req, res, false); });
        http_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return;
            send_error(res, {res.status, res.status == 404 ? "Unknown path " + req.path : "HTTP error", "", ""});
        });
        http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            send_error(res, {500, what, "", ""});
        });
    }

    // A request made ready to run: prompt ids and options.
    struct job {
        std::vector<token_t> prompt;
        text_generation_options options;
        bool stream = false, include_usage = false;
        int n = 1; // choices: choice i samples with the request's seed + i
    };
    static constexpr int max_choices = 16;

    static const ojson& field(const ojson& body, const char* key) {
        static const ojson null = nullptr;
        const auto it = body.find(key);
        return it == body.end() ? null : *it;
    }
    template <class T>
    static std::optional<T> number(const ojson& body, const char* key, double lo, double hi) {
        const ojson& v = field(body, key);
        if (v.is_null()) return std::nullopt;
        const bool ok = std::is_integral_v<T> ? v.is_number_integer() : v.is_number();
        if (!ok) throw api_error{400, std::string("'") + key + "' must be a number", key, "invalid_type"};
        const double x = v.get<double>();
        if (!(x >= lo && x <= hi))
            throw api_error{400,
                            std::string("'") + key + "' is " + v.dump() + "; it must be between " + ojson(lo).dump() +
                                " and " + ojson(hi).dump(),
                            key, "invalid_value"};
        return v.get<T>();
    }

    job parse(const ojson& body, bool chat) const {
        if (!body.is_object()) throw api_error{400, "The request body must be a JSON object", "", ""};
        static const std::set<std::string> common = {"model",
                                                     "max_tokens",
                                                     "temperature",
                                                     "top_p",
                                                     "n",
                                                     "stream",
                                                     "stream_options",
                                                     "stop",
                                                     "seed",
                                                     "user",
                                                     "presence_penalty",
                                                     "frequency_penalty",
                                                     "logit_bias",
                                                     "logprobs",
                                                     "top_k",
                                                     "min_p",
                                                     "repetition_penalty"};
        static const std::set<std::string> chat_only = {"messages", "max_completion_tokens", "top_logprobs",
                                                        "response_format"};
        static const std::set<std::string> completion_only = {"prompt", "echo", "best_of", "suffix"};
        for (const auto& item : body.items()) {
            const std::string& k = item.key();
            if (!common.contains(k) && !(chat ? chat_only : completion_only).contains(k))
                throw api_error{400, "Unrecognized request argument supplied: " + k, k, "unknown_parameter"};
        }
        auto must_be = [&](const char* key, const ojson& fine, const char* why) {
            const ojson& v = field(body, key);
            if (!v.is_null() && v != fine)
                throw api_error{400, std::string("'") + key + "': " + why, key, "unsupported"};
        };
        must_be("best_of", 1, "only best_of = 1 is supported");
        must_be("presence_penalty", 0, "not supported; use repetition_penalty");
        must_be("frequency_penalty", 0, "not supported; use repetition_penalty");
        must_be("logprobs", false, "log-probabilities are not returned yet");
        must_be("echo", false, "echo is not supported");
        must_be("suffix", nullptr, "suffix is not supported");
        must_be("top_logprobs", nullptr, "log-probabilities are not returned yet");
        const ojson& bias = field(body, "logit_bias");
        if (!bias.is_null() && !(bias.is_object() && bias.empty()))
            throw api_error{400, "'logit_bias' is not supported", "logit_bias", "unsupported"};
        const ojson& format = field(body, "response_format");
        if (!format.is_null() && format != ojson{{"type", "text"}})
            throw api_error{400, "'response_format': only {\"type\": \"text\"} is supported", "response_format",
                            "unsupported"};
        const ojson& model_name = field(body, "model");
        if (!model_name.is_null() && !model_name.is_string())
            throw api_error{400, "'model' must be a string", "model", "invalid_type"};
        const ojson& user = field(body, "user");
        if (!user.is_null() && !user.is_string())
            throw api_error{400, "'user' must be a string", "user", "invalid_type"};

        sampling_overrides u;
        u.temperature = number<double>(body, "temperature", 0, 2);
        u.top_p = number<double>(body, "top_p", 1e-9, 1);
        u.top_k = number<int>(body, "top_k", 0, 1e9);
        u.min_p = number<double>(body, "min_p", 0, 1);
        u.repetition_penalty = number<double>(body, "repetition_penalty", 1e-3, 100);
        u.seed = std::uint64_t(number<std::int64_t>(body, "seed", -9.2e18, 9.2e18).value_or(0));
        const char* max_key =
            chat && !field(body, "max_completion_tokens").is_null() ? "max_completion_tokens" : "max_tokens";
        u.max_tokens = number<int>(body, max_key, 1, 1e9);
        if (!u.max_tokens && !chat) u.max_tokens = 16; // OpenAI's default for completions
        const ojson& stop = field(body, "stop");
        if (stop.is_string()) {
            u.stop.push_back(stop.get<std::string>());
        } else if (stop.is_array()) {
            if (stop.size() > 4) throw api_error{400, "'stop' holds at most 4 strings", "stop", "invalid_value"};
            for (const ojson& s : stop) {
                if (!s.is_string()) throw api_error{400, "'stop' must be a string or a list of strings", "stop", ""};
                u.stop.push_back(s.get<std::string>());
            }
        } else if (!stop.is_null()) {
            throw api_error{400, "'stop' must be a string or a list of strings", "stop", "invalid_type"};
        }
        for (const std::string& s : u.stop)
            if (s.empty()) throw api_error{400, "'stop' strings must not be empty", "stop", "invalid_value"};

        job j;
        j.n = number<int>(body, "n", 1, max_choices).value_or(1);
        const ojson& stream = field(body, "stream");
        if (!stream.is_null() && !stream.is_boolean())
            throw api_error{400, "'stream' must be a boolean", "stream", "invalid_type"};
        j.stream = stream.is_boolean() && stream.get<bool>();
        const ojson& so = field(body, "stream_options");
        if (!so.is_null()) {
            if (!so.is_object() || (so.contains("include_usage") && !so["include_usage"].is_boolean()))
                throw api_error{400, "'stream_options' must be {\"include_usage\": bool}", "stream_options", ""};
            j.include_usage = so.value("include_usage", false);
        }
        j.options = model_.options_with(u);
        if (chat) {
            j.prompt = chat_prompt(field(body, "messages"), j.options);
        } else {
            ojson prompt = field(body, "prompt");
            if (prompt.is_array() && prompt.size() == 1) prompt = prompt[0];
            if (!prompt.is_string())
                throw api_error{400, "'prompt' must be a string (one prompt per request)", "prompt", "invalid_type"};
            j.prompt = model_.tokenizer().encode(prompt.get<std::string>(), {.add_special_tokens = true});
            if (j.prompt.empty()) throw api_error{400, "'prompt' is empty", "prompt", "invalid_value"};
        }
        const index_t context = model_.config().max_seq_len;
        if (index_t(j.prompt.size()) >= context)
            throw api_error{400,
                            "This model's maximum context length is " + std::to_string(context) +
                                " tokens. However, your prompt has " + std::to_string(j.prompt.size()) + " tokens.",
                            chat ? "messages" : "prompt", "context_length_exceeded"};
        if (!u.max_tokens) j.options.generation.max_new_tokens = int(context - index_t(j.prompt.size()));
        return j;
    }

    std::vector<token_t> chat_prompt(const ojson& messages, text_generation_options& options) const {
        if (!messages.is_array() || messages.empty())
            throw api_error{400, "'messages' must be a non-empty list", "messages", "invalid_type"};
        ojson clean = ojson::array();
        for (std::size_t i = 0; i < messages.size(); ++i) {
            const ojson& m = messages[i];
            const std::string where = "messages[" + std::to_string(i) + "]";
            if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
                throw api_error{400, where + " must be an object with a string 'role'", where, "invalid_type"};
            const std::string role = m["role"].get<std::string>();
            if (role != "system" && role != "user" && role != "assistant" && role != "developer")
                throw api_error{400, where + ".role '" + role + "' is not supported", where + ".role", ""};
            std::string content;
            const ojson& c = m.contains("content") ? m["content"] : ojson(nullptr);
            if (c.is_string()) {
                content = c.get<std::string>();
            } else if (c.is_array()) { // content parts: text only
                for (const ojson& part : c) {
                    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
                        !part["text"].is_string())
                        throw api_error{400, where + ".content: only text parts are supported", where + ".content", ""};
                    content += part["text"].get<std::string>();
                }
            } else {
                throw api_error{400, where + ".content must be a string or a list of text parts", where + ".content",
                                "invalid_type"};
            }
            if (!utf8::is_valid(content)) throw api_error{400, where + ".content is not valid UTF-8", where, ""};
            clean.push_back({{"role", role == "developer" ? "system" : role}, {"content", content}});
        }
        try {
            format_.apply(options);
            return format_.encode(model_, clean);
        } catch (const error& e) { // the template refused the conversation (raise_exception, roles out of order)
            throw api_error{400, e.what(), "messages", "invalid_value"};
        }
    }

    // The prompt once, the completions of every choice together, as OpenAI counts them.
    static std::size_t generated(const std::vector<text_completion>& cs) {
        std::size_t n = 0;
        for (const text_completion& c : cs)
            n += c.tokens.size();
        return n;
    }
    static ojson usage(const std::vector<text_completion>& cs) {
        const text_completion& c = cs.front();
        return {{"prompt_tokens", c.prompt_tokens},
                {"completion_tokens", generated(cs)},
                {"total_tokens", c.prompt_tokens + generated(cs)},
                {"prompt_tokens_details", {{"cached_tokens", c.cached_tokens}}}};
    }

    // The j.n choices of a request, each a generation of the model's batch (decoded together up to batch_rows());
    // choice i samples with the seed + i. on_text(i, piece) runs on choice i's thread; false stops that choice.
    template <class OnText>
    std::vector<text_completion> complete_choices(const job& j, OnText on_text) {
        std::vector<text_completion> out(static_cast<std::size_t>(j.n));
        auto run = [&](int i) {
            text_generation_options o = j.options;
            o.generation.sampling.seed += std::uint64_t(i);
            const in_flight counted(in_flight_);
            out[std::size_t(i)] =
                model_.complete(j.prompt, o, [&](std::string_view piece) { return on_text(i, piece); });
        };
        std::vector<std::future<void>> others;
        for (int i = 1; i < j.n; ++i)
            others.push_back(std::async(std::launch::async, run, i));
        std::exception_ptr failed;
        try {
            run(0);
        } catch (...) {
            failed = std::current_exception();
        }
        for (std::future<void>& f : others) {
            try {
                f.get();
            } catch (...) {
                if (!failed) failed = std::current_exception();
            }
        }
        if (failed) std::rethrow_exception(failed);
        return out;
    }

    void handle(const httplib::Request& req, httplib::Response& res, bool chat) {
        const auto start = std::chrono::steady_clock::now();
        ojson body;
        job j;
        try {
            try {
                body = ojson::parse(req.body);
            } catch (const nlohmann::json::exception& e) {
                throw api_error{400, std::string("The request body is not valid JSON: ") + e.what(), "",
                                "invalid_json"};
            }
            j = parse(body, chat);
            const int waiting = in_flight_.load() - model_.batch_rows();
            if (waiting >= options_.max_waiting)
                throw api_error{503, "The server is busy: " + std::to_string(waiting) + " requests are waiting", "",
                                "overloaded"};
        } catch (const api_error& e) {
            send_error(res, e);
            log(req, res.status, 0, 0, start);
            return;
        }
        const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_);
        const std::int64_t created =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        const std::string name = model_.name();
        // By value: the streaming provider below runs after handle() has returned.
        auto chunk = [id, created, name, chat](int index, const std::string& piece, const char* finish, bool first) {
            ojson choice{{"index", index}};
            if (chat) {
                ojson delta = ojson::object();
                if (first) delta["role"] = "assistant";
                if (!piece.empty() || first) delta["content"] = piece;
                choice["delta"] = delta;
            } else {
                choice["text"] = piece;
                choice["logprobs"] = nullptr;
            }
            choice["finish_reason"] = finish ? ojson(finish) : ojson(nullptr);
            return ojson{{"id", id},
                         {"object", chat ? "chat.completion.chunk" : "text_completion"},
                         {"created", created},
                         {"model", name},
                         {"choices", ojson::array({choice})}};
        };
        if (!j.stream) {
            double first_text = -1; // seconds from the request to the first piece of text (of choice 0)
            const std::vector<text_completion> cs = complete_choices(j, [&](int i, std::string_view) {
                if (i == 0 && first_text < 0) first_text = seconds_since(start);
                return true;
            });
            ojson choices = ojson::array();
            for (std::size_t i = 0; i < cs.size(); ++i) {
                ojson choice{{"index", i}};
                if (chat)
                    choice["message"] = {{"role", "assistant"}, {"content", cs[i].text}};
                else
                    choice["text"] = cs[i].text, choice["logprobs"] = nullptr;
                choice["finish_reason"] = finish_reason_name(cs[i].reason);
                choices.push_back(choice);
            }
            const ojson out{{"id", id},           {"object", chat ? "chat.completion" : "text_completion"},
                            {"created", created}, {"model", name},
                            {"choices", choices}, {"usage", usage(cs)}};
            res.set_content(out.dump(), "application/json");
            ++served_;
            log(req, 200, cs.front().prompt_tokens, generated(cs), start, cs.front().cached_tokens, first_text);
            return;
        }
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider("text/event-stream", [this, j, chunk, chat, req_path = req.path,
                                                               start](std::size_t, httplib::DataSink& sink) {
            auto send = [&](const ojson& event) {
                const std::string line = "data: " + event.dump() + "\n\n";
                return sink.write(line.data(), line.size());
            };
            // The choices' threads take turns at the socket; after a failed write none writes again.
            std::mutex sending;
            bool connected = true;
            auto send_one = [&](const ojson& event) {
                std::lock_guard lock(sending);
                if (connected) connected = send(event);
                return connected;
            };
            if (chat)
                for (int i = 0; i < j.n; ++i)
                    send_one(chunk(i, "", nullptr, true));
            std::vector<text_completion> cs(static_cast<std::size_t>(j.n));
            double first_text = -1; // of choice 0
            if (connected)
                cs = complete_choices(j, [&](int i, std::string_view piece) {
                    if (i == 0 && first_text < 0) first_text = seconds_since(start);
                    return send_one(chunk(i, std::string(piece), nullptr, false));
                });
            for (int i = 0; i < j.n; ++i)
                send_one(chunk(i, "", finish_reason_name(cs[std::size_t(i)].reason), false));
            if (j.include_usage) {
                ojson last = chunk(0, "", nullptr, false);
                last["choices"] = ojson::array();
                last["usage"] = usage(cs);
                send_one(last);
            }
            if (connected) {
                const std::string done = "data: [DONE]\n\n";
                sink.write(done.data(), done.size());
                sink.done();
                ++served_;
            } else {
                ++disconnected_;
            }
            if (options_.log)
                std::fprintf(stderr, "%s %s stream: %zu prompt%s + %zu new tokens, %.2f s%s%s\n", "POST",
                             req_path.c_str(), cs.front().prompt_tokens, from_cache(cs.front().cached_tokens).c_str(),
                             generated(cs), seconds_since(start), first_text_after(first_text).c_str(),
                             connected ? "" : " (client disconnected: stopped)");
            return connected;
        });
    }

    static double seconds_since(std::chrono::steady_clock::time_point t) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    }
    static std::string from_cache(std::size_t cached) {
        return cached > 0 ? " (" + std::to_string(cached) + " from the cache)" : std::string();
    }
    // Time to the first text (waiting for a place in the batch and the prompt): what a streaming user waits for.
    static std::string first_text_after(double seconds) {
        if (seconds < 0) return {};
        char buf[48];
        std::snprintf(buf, sizeof buf, " (first text after %.2f s)", seconds);
        return buf;
    }
    void log(const httplib::Request& req, int status, std::size_t prompt, std::size_t generated,
             std::chrono::steady_clock::time_point start, std::size_t cached = 0, double first_text = -1) const {
        if (!options_.log) return;
        std::fprintf(stderr, "%s %s %d: %zu prompt%s + %zu new tokens, %.2f s%s\n", req.method.c_str(),
                     req.path.c_str(), status, prompt, from_cache(cached).c_str(), generated, seconds_since(start),
                     first_text_after(first_text).c_str());
    }

    const text_model& model_;
    server_options options_;
    const chat_prompt_format format_; // parsed once: the chat template or the plain layout
    httplib::Server http_;
    // Counts a request from its parse to its last token (waiting for a place in the batch, then decoded).
    struct in_flight {
        explicit in_flight(std::atomic<int>& n) : n_(n) { ++n_; }
        ~in_flight() { --n_; }
        in_flight(const in_flight&) = delete;
        in_flight& operator=(const in_flight&) = delete;
        std::atomic<int>& n_;
    };
    std::atomic<int> in_flight_{0};
    std::atomic<std::size_t> served_{0}, disconnected_{0};
    std::atomic<std::uint64_t> next_id_{0};
    std::int64_t created_ =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    int port_ = -1;
};

} // namespace tl
