// 01_train_tiny: train the tiny byte-level decoder on Russian prose and let it write.
//
// Task:     next-byte prediction with presets::tiny (2 layers, d_model 64, GQA 4/2, SwiGLU, RoPE; 125k
//           parameters), AdamW with warmup + cosine decay and gradient clipping.
// Data:     Pushkin's "The Captain's Daughter" from the data directory (../shared/data/russian_novels,
//           see docs/data.md; TINYLM_DATA_DIR or --data-dir overrides), or a built-in paragraph when the
//           data is absent. The last 10% of the text is held out for validation.
// Runtime:  about a minute on 2 cores with the defaults.
// Command:  build/examples/01_train_tiny [--steps 1500] [--text FILE]
// Output:   a line per 100 steps (step, train loss, learning rate, tokens/s), the validation loss in nats
//           per byte, and a 300-byte sample continuing a prompt.
#include <tinylm/tinylm.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using model_t = tl::decoder<tl::presets::tiny>;

namespace {

const char* builtin_text =
    "Отец мой Андрей Петрович Гринёв в молодости своей служил при графе Минихе и вышел в отставку премьер-майором. "
    "С тех пор жил он в своей Симбирской деревне, где и женился на девице Авдотье Васильевне Ю., дочери бедного "
    "тамошнего дворянина. Нас было девять человек детей. Все мои братья и сестры умерли во младенчестве. ";

fs::path default_data_dir() {
    if (const char* env = std::getenv("TINYLM_DATA_DIR")) return env;
    for (fs::path p : {fs::path("../shared/data"), fs::path("../../shared/data"), fs::path("../../../shared/data")})
        if (fs::exists(p / "russian_novels")) return p;
    return {};
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw tl::error("tinylm: cannot read " + p.string());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// Mean loss over consecutive windows of the held-out bytes.
double evaluate(model_t& model, const std::string& text, tl::index_t T) {
    const tl::index_t windows = std::min<tl::index_t>(64, (tl::index_t(text.size()) - 1) / T);
    if (windows == 0) return NAN;
    std::vector<tl::token_t> ids(windows * T), targets(windows * T);
    for (tl::index_t w = 0; w < windows; ++w)
        for (tl::index_t t = 0; t < T; ++t) {
            ids[w * T + t] = static_cast<unsigned char>(text[w * T + t]);
            targets[w * T + t] = static_cast<unsigned char>(text[w * T + t + 1]);
        }
    return model.loss(tl::cview<tl::token_t>{ids.data(), {windows, T}},
                      tl::cview<tl::token_t>{targets.data(), {windows, T}});
}

std::string sample(model_t& model, std::string context, int n_bytes, double temperature, std::uint64_t seed) {
    const tl::index_t T = model_t::config.max_seq_len, V = model_t::vocab;
    tl::counter_rng rng(seed, 99);
    std::string out;
    std::vector<float> logits(T * V);
    for (int i = 0; i < n_bytes; ++i) {
        const std::string window = context.size() > std::size_t(T) ? context.substr(context.size() - T) : context;
        const tl::index_t len = tl::index_t(window.size());
        std::vector<tl::token_t> ids(window.begin(), window.end());
        for (auto& id : ids)
            id = static_cast<unsigned char>(id);
        model.logits(tl::cview<tl::token_t>{ids.data(), {1, len}}, tl::tensor_view<float>{logits.data(), {1, len, V}});
        const float* last = logits.data() + (len - 1) * V;
        double max = last[0], total = 0;
        for (tl::index_t v = 1; v < V; ++v)
            max = std::max(max, double(last[v]));
        std::vector<double> p(V);
        for (tl::index_t v = 0; v < V; ++v)
            total += p[v] = std::exp((last[v] - max) / temperature);
        double u = rng.uniform() * total;
        tl::index_t pick = 0;
        while (pick < V - 1 && (u -= p[pick]) > 0)
            ++pick;
        context += char(pick);
        out += char(pick);
    }
    return out;
}

} // namespace

int main(int argc, char** argv) try {
    CLI::App app{"Train the tiny byte-level tinylm decoder and sample from it"};
    int steps = 1500, batch = 16;
    double lr = 3e-3;
    std::uint64_t seed = 1;
    std::string text_file, data_dir = default_data_dir().string(), prompt = "Маша вошла в комнату и";
    app.add_option("--steps", steps, "optimizer steps")->check(CLI::PositiveNumber);
    app.add_option("--batch", batch, "sequences per step")->check(CLI::PositiveNumber);
    app.add_option("--lr", lr, "peak learning rate");
    app.add_option("--seed", seed, "initialisation and batching seed");
    app.add_option("--text", text_file, "train on this UTF-8 file instead of the default novel");
    app.add_option("--data-dir", data_dir, "tinylm data directory (default: $TINYLM_DATA_DIR or ../shared/data)");
    app.add_option("--prompt", prompt, "text the sample continues");
    CLI11_PARSE(app, argc, argv);

    std::string text, source;
    if (!text_file.empty())
        text = read_file(text_file), source = text_file;
    else if (fs::path novel = fs::path(data_dir) / "russian_novels/corpus/Pushkin_CapitanskaaDochka.txt";
             !data_dir.empty() && fs::exists(novel))
        text = read_file(novel), source = novel.string();
    else {
        text = builtin_text;
        source = "the built-in paragraph (no data directory found; see docs/data.md)";
    }
    const tl::index_t T = model_t::config.max_seq_len, B = batch;
    if (text.size() < std::size_t(4 * T)) throw tl::error("tinylm: the training text is shorter than 4 contexts");
    const std::size_t split = text.size() * 9 / 10;
    const std::string train = text.substr(0, split), val = text.substr(split);
    std::printf("data: %s (%zu bytes: %zu train, %zu validation)\n", source.c_str(), text.size(), train.size(),
                val.size());
    std::printf("model: presets::tiny, %lld parameters, backend %s\n",
                static_cast<long long>(tl::parameter_count(model_t::config)),
                std::string(model_t::backend::name).c_str());

    model_t model(seed);
    model.plan(B, T);
    tl::adamw opt(model, {.weight_decay = 0.01});
    const tl::lr_schedule schedule{
        .peak_lr = lr, .min_lr = lr / 10, .warmup_steps = std::min(100, steps / 10), .total_steps = steps};
    std::vector<tl::token_t> ids(B * T), targets(B * T);
    tl::counter_rng rng(seed, 1);
    auto start = std::chrono::steady_clock::now();
    double loss_sum = 0;
    for (int step = 0; step < steps; ++step) {
        for (tl::index_t b = 0; b < B; ++b) {
            const std::size_t at = rng.below(train.size() - T - 1);
            for (tl::index_t t = 0; t < T; ++t) {
                ids[b * T + t] = static_cast<unsigned char>(train[at + t]);
                targets[b * T + t] = static_cast<unsigned char>(train[at + t + 1]);
            }
        }
        model.zero_grad();
        const float loss =
            model.loss(tl::cview<tl::token_t>{ids.data(), {B, T}}, tl::cview<tl::token_t>{targets.data(), {B, T}});
        if (!std::isfinite(loss))
            throw tl::error("tinylm: the loss became " + std::to_string(loss) + " at step " + std::to_string(step));
        model.backward();
        tl::clip_grad_norm(model.parameter_entries(), 1.0);
        opt.step(schedule.lr_at(step));
        loss_sum += loss;
        if ((step + 1) % 100 == 0 || step + 1 == steps) {
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            const int done = (step % 100) + 1;
            std::printf("step %5d  loss %.4f  lr %.2e  %.0f tokens/s\n", step + 1, loss_sum / done,
                        schedule.lr_at(step), double(done) * B * T / secs);
            std::fflush(stdout);
            loss_sum = 0;
            start = std::chrono::steady_clock::now();
        }
    }
    const double val_loss = evaluate(model, val, T);
    std::printf("validation loss %.4f nats/byte (%.3f bits/byte)\n", val_loss, val_loss / std::log(2.0));
    std::printf("sample (temperature 0.8):\n%s%s\n", prompt.c_str(), sample(model, prompt, 300, 0.8, seed).c_str());
    return 0;
} catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
}
