// bench_tokenizer: BPE training time, peak memory and encoding throughput of tinylm on a corpus directory
// (every file, concatenated in name order). compare.py runs it side by side with SentencePiece and Hugging Face
// tokenizers and writes the table of docs/tokenizer.md.
//
//   bench_tokenizer --corpus ../shared/data/russian_novels/corpus --vocab 3000 8000 --threads 2 --repeat 3
//
// Each training runs in a child process (fork), so that its peak resident memory (ru_maxrss) is its own.
// Output: one JSON object per line.
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <CLI/CLI.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string read_corpus(const std::string& dir) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::string text;
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        text += ss.str();
        if (!text.empty() && text.back() != '\n') text += '\n';
    }
    return text;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"tinylm BPE training and encoding benchmark"};
    std::string corpus, out_dir = ".";
    std::vector<std::size_t> vocabs{3000, 8000};
    int threads = 2, repeat = 3;
    bool fallback = false;
    app.add_option("--corpus", corpus, "directory of UTF-8 text files")->required();
    app.add_option("--vocab", vocabs, "vocabulary sizes");
    app.add_option("--threads", threads, "threads for training");
    app.add_option("--repeat", repeat, "runs of each measurement (the median is reported by compare.py)");
    app.add_option("--out", out_dir, "where the trained tokenizer.json files go");
    app.add_flag("--byte-fallback", fallback, "train the Llama style (metaspace + byte fallback)");
    CLI11_PARSE(app, argc, argv);

    try {
        const std::string text = read_corpus(corpus);
        const double mb = static_cast<double>(text.size()) / 1e6;
        for (std::size_t vocab : vocabs) {
            const std::string path = out_dir + "/tinylm_bpe_" + std::to_string(vocab) + ".json";
            for (int r = 0; r < repeat; ++r) {
                int pipefd[2];
                if (pipe(pipefd) != 0) return 1;
                const pid_t pid = fork();
                if (pid == 0) {
                    close(pipefd[0]);
                    const auto t0 = std::chrono::steady_clock::now();
                    tl::bpe_trainer_options opt;
                    opt.vocab_size = vocab;
                    opt.n_threads = threads;
                    opt.style = fallback ? tl::bpe_style::byte_fallback : tl::bpe_style::byte_level;
                    tl::bpe_trainer trainer(opt);
                    trainer.feed(text);
                    const double t_count = seconds_since(t0);
                    const tl::tokenizer tok = trainer.train();
                    const double t_train = seconds_since(t0);
                    tl::save_tokenizer_json(tok, path);
                    const std::string msg = std::to_string(t_count) + " " + std::to_string(t_train);
                    if (write(pipefd[1], msg.data(), msg.size()) < 0) _exit(1);
                    _exit(0);
                }
                close(pipefd[1]);
                char buf[128] = {};
                const ssize_t got = read(pipefd[0], buf, sizeof buf - 1);
                close(pipefd[0]);
                int status = 0;
                rusage ru{};
                wait4(pid, &status, 0, &ru);
                if (got <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                    std::cerr << "bench_tokenizer: training failed\n";
                    return 1;
                }
                double t_count = 0, t_train = 0;
                std::sscanf(buf, "%lf %lf", &t_count, &t_train);
                std::printf("{\"tool\": \"tinylm\", \"what\": \"train\", \"vocab\": %zu, \"threads\": %d, "
                            "\"seconds\": %.3f, \"count_seconds\": %.3f, \"peak_rss_mb\": %.1f, \"mb\": %.1f}\n",
                            vocab, threads, t_train, t_count, static_cast<double>(ru.ru_maxrss) / 1024.0, mb);
                std::fflush(stdout);
            }
            const tl::tokenizer tok = tl::load_tokenizer_json(path);
            for (int n : {1, 2}) {
                for (int r = 0; r < repeat; ++r) {
                    const auto t0 = std::chrono::steady_clock::now();
                    const auto ids = tok.encode_parallel(text, n);
                    const double s = seconds_since(t0);
                    std::printf("{\"tool\": \"tinylm\", \"what\": \"encode\", \"vocab\": %zu, \"threads\": %d, "
                                "\"seconds\": %.3f, \"mb_per_s\": %.2f, \"tokens\": %zu, \"mb\": %.1f}\n",
                                vocab, n, s, mb / s, ids.size(), mb);
                    std::fflush(stdout);
                }
            }
        }
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    return 0;
}
