// tinylm serve: the OpenAI-compatible HTTP server (include/tinylm/serve/openai_server.hpp) on one model. Ctrl-C
// or SIGTERM stops it cleanly (requests in flight end first).
#include "common.hpp"

#include <tinylm/serve/openai_server.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

namespace tinylm_cli {

namespace {

struct serve_flags {
    model_flags model;
    tl::server_options server;
    int prompt_cache = 4;   // conversations whose KV cache is kept between requests
    int batch = 4;          // requests decoded together
    int prompt_chunk = 256; // prompt tokens a joining request runs a step while others decode
    bool quiet = false;
};

std::atomic<bool> stop_requested{false};

int run(serve_flags f) {
    const std::unique_ptr<tl::text_model> m = open_model(f.model);
    m->keep_prompt_cache(f.prompt_cache);
    m->set_batch_rows(f.batch);
    m->set_prompt_chunk(f.prompt_chunk);
    f.server.log = !f.quiet;
    tl::openai_server server(*m, f.server);
    tl::check(server.bind(), [&] {
        return "tinylm serve: cannot listen on " + f.server.host + ":" + std::to_string(f.server.port) +
               " (in use, or not an address of this machine)";
    });
    // Signals only set a flag; this thread stops the server outside the handler (stop() is not signal-safe).
    for (int sig : {SIGINT, SIGTERM})
        std::signal(sig, [](int) { stop_requested = true; });
    std::thread watcher([&] {
        while (!stop_requested)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        server.stop();
    });
    std::fprintf(stderr, "serving %s on http://%s:%d/v1 (OpenAI-compatible; Ctrl-C stops)\n", m->name().c_str(),
                 f.server.host.c_str(), server.port());
    if (!f.quiet)
        std::fprintf(stderr,
                     "batch: up to %d requests decoded together; prompt cache: %d conversations (--prompt-cache 0: "
                     "every request from scratch)\n",
                     f.batch, f.prompt_cache);
    const bool ok = server.listen_after_bind();
    stop_requested = true;
    watcher.join();
    const tl::batch_counts steps = m->batch_stats();
    std::fprintf(
        stderr, "stopped after %zu completed requests (%zu decoding steps, %.2f requests a step, at most %zu)\n",
        server.served(), steps.steps, steps.steps ? double(steps.rows) / double(steps.steps) : 0.0, steps.widest);
    return ok ? 0 : 1;
}

} // namespace

void add_serve(CLI::App& app, command& chosen) {
    auto f = std::make_shared<serve_flags>();
    CLI::App* sub = app.add_subcommand("serve", "serve the model over HTTP: /v1/chat/completions, /v1/completions");
    add_model_options(*sub, f->model);
    add_decoding_precision_option(*sub, f->model);
    sub->add_option("--host", f->server.host, "address to bind (0.0.0.0: every interface, reachable by others)");
    sub->add_option("--port", f->server.port, "TCP port (0: any free port, printed at start)")
        ->check(recipes::in_range(0, 65535, "TCP port; 0: any free port"));
    sub->add_option("--batch", f->batch,
                    "requests decoded together, one forward a step for all (a request joins at the next step, "
                    "leaves when it ends); 1: one at a time")
        ->check(recipes::in_range(1, 64, "requests decoded together"))
        ->capture_default_str();
    sub->add_option("--prompt-chunk", f->prompt_chunk,
                    "prompt tokens a request joining the batch runs a step while others decode, so that their next "
                    "token waits for a part of a long prompt, not all of it; 0: the whole prompt at once")
        ->check(recipes::in_range(0, 1 << 20, "prompt tokens a step"))
        ->capture_default_str();
    sub->add_option("--max-waiting", f->server.max_waiting,
                    "requests waiting for a place in the batch beyond this are answered 503")
        ->check(recipes::at_least(1, "requests waiting for the model"));
    sub->add_option("--prompt-cache", f->prompt_cache,
                    "conversations whose KV cache is kept between requests: a request that resends one runs only "
                    "its new tokens (usage.prompt_tokens_details.cached_tokens counts the others); 0: off")
        ->check(recipes::in_range(0, 64, "conversations kept"));
    sub->add_flag("--quiet", f->quiet, "no line per request on stderr");
    sub->callback([f, &chosen] { chosen = [f] { return run(*f); }; });
}

} // namespace tinylm_cli
