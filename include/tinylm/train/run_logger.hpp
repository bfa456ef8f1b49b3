// tinylm/train/run_logger.hpp: everything a training run records, fed from the trainer's hooks.
//
//   out_dir/tensorboard/  scalars train/loss, train/lr, train/grad_norm, train/tokens_per_s, val/loss;
//                         text "samples" (prompt and continuation); with experts (expert_usage()):
//                         moe/layer<l>/expert<e>, moe/max_usage, moe/min_usage
//   out_dir/log.jsonl     one line per step, validation and sample set; on resume, lines after the resumed
//                         step are dropped first, so the log reads like one uninterrupted run
//   terminal              a progress line (plain lines when stdout is not a terminal)
//   out_dir/report.md     written by finish(): summary table, loss curves (report_loss.svg), samples
#pragma once

#include <tinylm/core/json_field.hpp>
#include <tinylm/train/jsonl_log.hpp>
#include <tinylm/train/progress.hpp>
#include <tinylm/train/report.hpp>
#include <tinylm/train/tensorboard.hpp>
#include <tinylm/train/trainer.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace tl {

class run_logger {
public:
    // first_step: the step a resumed run continues from (trainer::restore()); 0 for a new run.
    run_logger(const fs::path& out_dir, std::string title, long long max_steps, long long first_step)
        : out_dir_(out_dir), report_(std::move(title)),
          log_(prepare_log(out_dir / "log.jsonl", first_step),
               first_step > 0 ? jsonl_mode::append : jsonl_mode::truncate),
          board_(out_dir / "tensorboard"), bar_(max_steps, {.first_step = first_step}), last_step_(first_step) {}

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
        last_step_ = std::max(last_step_, r.step);
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

    // Prompt and continuation pairs at a step (-1: after training; the log and TensorBoard put them at the last
    // step trained, not at step 0, which reads as "before training").
    void samples(long long s, const std::vector<std::pair<std::string, std::string>>& pairs) {
        const long long at = s < 0 ? last_step_ : s;
        std::string markdown;
        for (const auto& [prompt, text] : pairs) {
            markdown += "**" + prompt + "**" + text + "\n\n";
            report_.add_sample(prompt, text, s);
            log_.write(at, {{"prompt", prompt}, {"sample", text}});
        }
        board_.text("samples", markdown, at);
    }

    // Mixture of experts: counts[l][e] is the number of tokens expert e of layer l received in the step's last
    // forward (decoder::expert_counts). Usage relative to uniform is count / (routed tokens / experts): 1 is a
    // perfect balance, 2 twice the fair share. Logged per layer and expert to TensorBoard, with the step's
    // extremes; the JSONL line keeps the raw counts, so that a resumed run's report still sums the whole run.
    void expert_usage(long long s, const std::vector<std::vector<std::int64_t>>& counts) {
        double lo = 0, hi = 0;
        usage_extremes(counts, &lo, &hi, [&](std::size_t l, std::size_t e, double u) {
            board_.scalar("moe/layer" + std::to_string(l) + "/expert" + std::to_string(e), u, s);
        });
        board_.scalar("moe/max_usage", hi, s);
        board_.scalar("moe/min_usage", lo, s);
        nlohmann::ordered_json line{{"step", s}, {"expert_counts", counts}, {"max_usage", hi}, {"min_usage", lo}};
        log_.write_line(line);
        add_usage(counts, lo, hi);
    }

    void summary(const std::string& key, const std::string& value) { report_.add_summary(key, value); }

    fs::path finish() {
        if (!usage_total_.empty()) summarise_usage();
        bar_.finish();
        board_.flush();
        return report_.write(out_dir_, "report");
    }

private:
    // Calls f(layer, expert, usage) for every expert; *lo and *hi receive the extremes over all layers.
    template <class F>
    static void usage_extremes(const std::vector<std::vector<std::int64_t>>& counts, double* lo, double* hi, F&& f) {
        *lo = INFINITY;
        *hi = 0;
        for (std::size_t l = 0; l < counts.size(); ++l) {
            std::int64_t total = 0;
            for (const std::int64_t c : counts[l])
                total += c;
            for (std::size_t e = 0; e < counts[l].size(); ++e) {
                const double u = total > 0 ? double(counts[l][e]) * double(counts[l].size()) / double(total) : 0.0;
                f(l, e, u);
                *lo = std::min(*lo, u);
                *hi = std::max(*hi, u);
            }
        }
        if (!std::isfinite(*lo)) *lo = 0;
    }
    void add_usage(const std::vector<std::vector<std::int64_t>>& counts, double lo, double hi) {
        if (usage_total_.empty()) {
            usage_total_.resize(counts.size());
            for (std::size_t l = 0; l < counts.size(); ++l)
                usage_total_[l].assign(counts[l].size(), 0);
        }
        for (std::size_t l = 0; l < counts.size() && l < usage_total_.size(); ++l)
            for (std::size_t e = 0; e < counts[l].size() && e < usage_total_[l].size(); ++e)
                usage_total_[l][e] += counts[l][e];
        step_usage_lo_ = usage_steps_ == 0 ? lo : std::min(step_usage_lo_, lo);
        step_usage_hi_ = usage_steps_ == 0 ? hi : std::max(step_usage_hi_, hi);
        ++usage_steps_;
    }
    // Report rows: usage of the counts summed over the run, per layer, and the extremes of single steps.
    void summarise_usage() {
        std::vector<std::string> rows(usage_total_.size(), "by expert:"); // a leading digit would be escaped
        double lo = 0, hi = 0;
        usage_extremes(usage_total_, &lo, &hi, [&](std::size_t l, std::size_t, double u) {
            char cell[16];
            std::snprintf(cell, sizeof cell, " %.2f", u);
            rows[l] += cell;
        });
        char line[200];
        std::snprintf(line, sizeof line,
                      "max %.2f, min %.2f of uniform (tokens summed over %lld steps); single steps: max %.2f, min %.2f",
                      hi, lo, usage_steps_, step_usage_hi_, step_usage_lo_);
        report_.add_summary("expert usage", line);
        for (std::size_t l = 0; l < rows.size(); ++l)
            report_.add_summary("expert usage, layer " + std::to_string(l), rows[l]);
    }

    // Drops log lines after `step` and feeds the kept losses back into the report.
    void replay(const fs::path& path) {
        std::ifstream in(path);
        std::string line;
        while (std::getline(in, line)) {
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded() || !j.is_object() || !j.contains("step")) continue;
            const std::string where = "run_logger: " + path.string();
            const long long s = json_field<long long>(j, "step", where);
            if (j.contains("loss") && j["loss"].is_number())
                report_.add_train_loss(s, json_as<double>(j["loss"], where, "loss"));
            if (j.contains("val_loss") && j["val_loss"].is_number())
                report_.add_val_loss(s, json_as<double>(j["val_loss"], where, "val_loss"));
            if (j.contains("expert_counts") && j["expert_counts"].is_array())
                add_usage(json_as<std::vector<std::vector<std::int64_t>>>(j["expert_counts"], where, "expert_counts"),
                          json_field_or(j, "min_usage", 0.0, where), json_field_or(j, "max_usage", 0.0, where));
        }
    }
    // On resume: keeps the lines up to `step` (report_ is constructed before log_, so it can be fed here).
    fs::path prepare_log(const fs::path& path, long long step) {
        if (step <= 0 || !fs::exists(path)) return path;
        std::ifstream in(path);
        std::string line, kept;
        while (std::getline(in, line)) {
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (!j.is_discarded() && j.is_object() && j.contains("step") &&
                json_field<long long>(j, "step", "run_logger: " + path.string()) <= step)
                kept += line + "\n";
        }
        in.close();
        std::ofstream(path, std::ios::trunc) << kept;
        replay(path);
        return path;
    }

    fs::path out_dir_;
    run_report report_;
    std::vector<std::vector<std::int64_t>> usage_total_; // experts: tokens per layer and expert over the run
    double step_usage_lo_ = 0, step_usage_hi_ = 0;
    long long usage_steps_ = 0;
    jsonl_log log_;
    tensorboard_writer board_;
    progress_bar bar_;
    long long last_step_; // the last step trained (or resumed from): where samples(-1) are logged
};

} // namespace tl
