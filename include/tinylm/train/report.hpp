// tinylm/train/report.hpp: the end-of-run report, a Markdown file with the loss curves and the samples.
//
//   tl::run_report report("tiny on Russian novels");
//   report.add_summary("parameters", "125k");                // a two-column table at the top
//   report.add_train_loss(step, loss);                       // every step (or every logged step)
//   report.add_val_loss(step, val_loss);                     // at each validation
//   report.add_sample(prompt, continuation, step);           // prompt → sample pairs
//   report.write(run_dir);  // run_dir/report.md and run_dir/report_loss.svg
//
// The loss picture is an SVG line plot (core/svg_plot.hpp) of train and validation loss against step; a long
// train curve is averaged over buckets to at most `max_plot_points` points. Samples are grouped by step
// under headings and written as block quotes with Markdown's special characters escaped, so generated text
// is shown as written. Files are written to "<name>.tmp" and renamed, so a crash never leaves half a report.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/svg_plot.hpp>
#include <tinylm/train/tensorboard.hpp> // to_valid_utf8

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace tl {

struct report_sample {
    std::string prompt{};
    std::string text{};     // the continuation, without the prompt
    std::int64_t step = -1; // the step it was generated at; -1: after training
};

// Markdown text that renders as exactly `s` (inline; newlines become hard line breaks inside a block
// quote when `quote` is set).
inline std::string markdown_escape(std::string_view s, bool quote = false) {
    std::string out;
    out.reserve(s.size() + s.size() / 8 + 4);
    bool line_start = true;   // nothing but the line break before
    bool only_digits = false; // the line so far is digits ("12." would start an ordered list)
    for (const char c : s) {
        if (c == '\r') continue;
        if (c == '\n') {
            out += quote ? "  \n> " : "<br>";
            line_start = true;
            only_digits = false;
            continue;
        }
        if (line_start && (c == ' ' || c == '\t')) {
            out += "&#32;"; // leading blanks would make an indented code block
            continue;
        }
        constexpr std::string_view always = "\\`*_[]<>#|~&!{}"; // special anywhere
        constexpr std::string_view at_line_start = "-+=";       // lists, setext headings
        if (always.find(c) != std::string_view::npos ||
            (line_start && at_line_start.find(c) != std::string_view::npos) || (only_digits && (c == '.' || c == ')')))
            out.push_back('\\');
        out.push_back(c);
        only_digits = (line_start || only_digits) && c >= '0' && c <= '9';
        line_start = false;
    }
    return out;
}

class run_report {
public:
    explicit run_report(std::string title = "tinylm run report") : title_(std::move(title)) {}

    void add_summary(std::string key, std::string value) { summary_.emplace_back(std::move(key), std::move(value)); }
    void add_train_loss(std::int64_t step, double loss) { train_.emplace_back(double(step), loss); }
    void add_val_loss(std::int64_t step, double loss) { val_.emplace_back(double(step), loss); }
    void add_sample(std::string prompt, std::string text, std::int64_t step = -1) {
        samples_.push_back({std::move(prompt), std::move(text), step});
    }

    std::size_t max_plot_points = 1000;

    // The loss curves as an SVG document.
    std::string loss_svg() const {
        std::vector<plot_series> series;
        plot_series train{.name = "train", .color = "#1f77b4"};
        const std::size_t bucket = bucket_size();
        for (std::size_t i = 0; i < train_.size(); i += bucket) {
            // Mean of the finite losses of the bucket, at the mean step; a bucket of only NaN is a gap.
            double sx = 0, sy = 0;
            std::size_t n = 0;
            const std::size_t end = std::min(train_.size(), i + bucket);
            for (std::size_t k = i; k < end; ++k)
                if (std::isfinite(train_[k].second)) sx += train_[k].first, sy += train_[k].second, ++n;
            train.x.push_back(n ? sx / double(n) : train_[i].first);
            train.y.push_back(n ? sy / double(n) : NAN);
        }
        if (bucket > 1) train.name = "train (mean of " + std::to_string(bucket) + " points)";
        plot_series val{.name = "validation", .color = "#d62728", .markers = true};
        for (const auto& [s, l] : val_)
            val.x.push_back(s), val.y.push_back(l);
        if (!train_.empty()) series.push_back(std::move(train));
        if (!val_.empty()) series.push_back(std::move(val));
        return svg_line_plot(series, {.title = "Loss", .x_label = "step", .y_label = "loss (nats per token)"});
    }

    // The Markdown document; `svg_file` is the picture's file name relative to the document.
    std::string markdown(std::string_view svg_file) const {
        std::string md = "# " + markdown_escape(to_valid_utf8(title_)) + "\n\n";
        if (!summary_.empty()) {
            md += "| | |\n| --- | --- |\n";
            for (const auto& [k, v] : summary_)
                md += "| " + markdown_escape(to_valid_utf8(k)) + " | " + markdown_escape(to_valid_utf8(v)) + " |\n";
            md += "\n";
        }
        md += "## Loss\n\n";
        const auto last_finite = [](const std::vector<std::pair<double, double>>& v) {
            for (auto it = v.rbegin(); it != v.rend(); ++it)
                if (std::isfinite(it->second)) return it;
            return v.rend();
        };
        char buf[128];
        if (const auto it = last_finite(train_); it != train_.rend()) {
            std::snprintf(buf, sizeof buf, "Final train loss: %.4f (step %lld).  \n", it->second,
                          static_cast<long long>(it->first));
            md += buf;
        }
        if (const auto it = last_finite(val_); it != val_.rend()) {
            std::snprintf(buf, sizeof buf, "Final validation loss: %.4f (step %lld, perplexity %.2f).  \n", it->second,
                          static_cast<long long>(it->first), std::exp(it->second));
            md += buf;
        }
        md += "\n![Train and validation loss against step](" + std::string(svg_file) + ")\n";
        if (!samples_.empty()) {
            md += "\n## Samples\n";
            bool first = true;
            std::int64_t heading_step = 0;
            for (const auto& s : samples_) {
                if (first || s.step != heading_step) {
                    md += s.step >= 0 ? "\n### Step " + std::to_string(s.step) + "\n" : "\n### After training\n";
                    heading_step = s.step;
                    first = false;
                }
                md += "\n**Prompt:** " + markdown_escape(to_valid_utf8(s.prompt)) + "\n\n> ";
                md += markdown_escape(to_valid_utf8(s.prompt + s.text), true);
                md += "\n";
            }
        }
        return md;
    }

    // Writes `dir`/<name>.md and `dir`/<name>_loss.svg (creating `dir`); returns the Markdown file's path.
    std::filesystem::path write(const std::filesystem::path& dir, std::string_view name = "report") const {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        check(!ec && std::filesystem::is_directory(dir),
              [&] { return "report: cannot create the directory " + dir.string() + ": " + ec.message(); });
        const std::string svg_name = std::string(name) + "_loss.svg";
        const auto md_path = dir / (std::string(name) + ".md");
        write_file(dir / svg_name, loss_svg());
        write_file(md_path, markdown(svg_name));
        return md_path;
    }

    const std::vector<report_sample>& samples() const { return samples_; }

private:
    std::size_t bucket_size() const {
        const std::size_t cap = std::max<std::size_t>(max_plot_points, 2);
        return train_.size() <= cap ? 1 : (train_.size() + cap - 1) / cap;
    }

    static void write_file(const std::filesystem::path& path, const std::string& content) {
        const auto tmp = std::filesystem::path(path.string() + ".tmp");
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            check(bool(out), [&] { return "report: cannot create " + tmp.string() + ": " + std::strerror(errno); });
            out.write(content.data(), std::streamsize(content.size()));
            out.flush();
            check(bool(out), [&] { return "report: cannot write " + tmp.string() + ": " + std::strerror(errno); });
        }
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        check(!ec,
              [&] { return "report: cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message(); });
    }

    std::string title_;
    std::vector<std::pair<std::string, std::string>> summary_;
    std::vector<std::pair<double, double>> train_, val_; // (step, loss)
    std::vector<report_sample> samples_;
};

} // namespace tl
