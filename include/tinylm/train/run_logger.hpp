// tinylm/train/run_logger.hpp: everything a training run records, fed from the trainer's hooks.
//
//   out_dir/tensorboard/  scalars train/loss, train/lr, train/grad_norm, train/tokens_per_s, val/loss;
//                         text "samples" (prompt and continuation)
//   out_dir/log.jsonl     one line per step, validation and sample set; on resume, lines after the resumed
//                         step are dropped first, so the log reads like one uninterrupted run
//   terminal              a progress line (plain lines when stdout is not a terminal)
//   out_dir/report.md     written by finish(): summary table, loss curves (report_loss.svg), samples
#pragma once

#include <tinylm/train/jsonl_log.hpp>
#include <tinylm/train/progress.hpp>
#include <tinylm/train/report.hpp>
#include <tinylm/train/tensorboard.hpp>
#include <tinylm/train/trainer.hpp>

#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace tl {

class run_logger {
public:
    // first_step: the step a resumed run continues from (trainer::restore()); 0 for a new run.
    run_logger(const fs::path& out_dir, std::string title, long long max_steps, long long first_step)
        : out_dir_(out_dir), report_(std::move(title)), first_step_(first_step),
          log_(prepare_log(out_dir / "log.jsonl", first_step),
               first_step > 0 ? jsonl_mode::append : jsonl_mode::truncate),
          board_(out_dir / "tensorboard"), bar_(max_steps, {.first_step = first_step}) {}

    template <class Trainer>
    void attach(Trainer& t) {
        t.on_step = [this](const step_report& r) { step(r); };
        t.on_eval = [this](long long s, double loss) { eval(s, loss); };
    }

    void step(const step_report& r) {
        board_.scalar("train/loss", r.loss, r.step);
        board_.scalar("train/lr", r.lr, r.step);
        board_.scalar("train/grad_norm", r.grad_norm, r.step);
        board_.scalar("train/tokens_per_s", r.tokens_per_second, r.step);
        log_.write(r.step,
                   {{"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm}, {"tokens_per_s", r.tokens_per_second}});
        report_.add_train_loss(r.step, r.loss);
        bar_.update({.step = r.step, .loss = r.loss, .lr = r.lr, .tokens_per_s = r.tokens_per_second});
    }

    void eval(long long s, double loss) {
        board_.scalar("val/loss", loss, s);
        log_.write(s, {{"val_loss", loss}});
        report_.add_val_loss(s, loss);
        char line[96];
        std::snprintf(line, sizeof line, "step %lld: validation loss %.4f", s, loss);
        bar_.message(line);
    }

    // Prompt and continuation pairs at a step (-1: after training).
    void samples(long long s, const std::vector<std::pair<std::string, std::string>>& pairs) {
        std::string markdown;
        for (const auto& [prompt, text] : pairs) {
            markdown += "**" + prompt + "**" + text + "\n\n";
            report_.add_sample(prompt, text, s);
            log_.write(std::max(s, 0LL), {{"prompt", prompt}, {"sample", text}});
        }
        board_.text("samples", markdown, std::max(s, 0LL));
    }

    void summary(const std::string& key, const std::string& value) { report_.add_summary(key, value); }

    fs::path finish() {
        bar_.finish();
        board_.flush();
        return report_.write(out_dir_, "report");
    }

private:
    // Drops log lines after `step` and feeds the kept losses back into the report.
    void replay(const fs::path& path) {
        std::ifstream in(path);
        std::string line;
        while (std::getline(in, line)) {
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded() || !j.contains("step")) continue;
            const long long s = j["step"].get<long long>();
            if (j.contains("loss") && j["loss"].is_number()) report_.add_train_loss(s, j["loss"].get<double>());
            if (j.contains("val_loss") && j["val_loss"].is_number())
                report_.add_val_loss(s, j["val_loss"].get<double>());
        }
    }
    // On resume: keeps the lines up to `step` (report_ is constructed before log_, so it can be fed here).
    fs::path prepare_log(const fs::path& path, long long step) {
        if (step <= 0 || !fs::exists(path)) return path;
        std::ifstream in(path);
        std::string line, kept;
        while (std::getline(in, line)) {
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (!j.is_discarded() && j.contains("step") && j["step"].get<long long>() <= step) kept += line + "\n";
        }
        in.close();
        std::ofstream(path, std::ios::trunc) << kept;
        replay(path);
        return path;
    }

    fs::path out_dir_;
    run_report report_;
    long long first_step_;
    jsonl_log log_;
    tensorboard_writer board_;
    progress_bar bar_;
};

} // namespace tl
