// tinylm/train/progress.hpp: the training progress line on the terminal.
//
//   tl::progress_bar bar(total_steps);                    // to stdout; TTY or not decided by isatty
//   bar.update({.step = s, .loss = l, .lr = lr, .tokens_per_s = tps});
//   bar.message("validation loss 1.1568");               // a line of its own, the bar redrawn below it
//   bar.finish();
//
// On a terminal one line is redrawn in place with \r (at most every `redraw_seconds`, and always for the
// last step):
//   step   750/1500 [##########----------]  50%  loss 1.0152  lr 3.00e-04  37063 tok/s  ETA 0:00:20
// Otherwise (a file, a pipe, CI) a plain line is printed every `plain_every` steps, at the first update and
// at the last step:
//   step   750/1500  loss 1.0152  lr 3.00e-04  37063 tok/s  elapsed 0:00:20  ETA 0:00:20
// The ETA extrapolates the time per step since the bar was created over the steps left (steps done before,
// e.g. when resuming, are given as `first_step` and not counted). Formatting goes to a fixed buffer with
// snprintf: an update allocates nothing.
#pragma once

#include <tinylm/core/error.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <unistd.h>

namespace tl {

enum class progress_mode { automatic, tty, plain };

struct progress_options {
    progress_mode mode = progress_mode::automatic; // automatic: tty when isatty(fileno(out))
    std::int64_t plain_every = 50;                 // plain mode: a line every this many steps
    double redraw_seconds = 0.1;                   // tty mode: minimum time between redraws
    int bar_width = 20;                            // tty mode: characters inside [ ]
    std::int64_t first_step = 0;                   // steps already done when the bar starts (resume)
};

// What one update shows; lr or tokens_per_s left NaN are not shown.
struct progress_stats {
    std::int64_t step = 0; // steps done, 1-based: the last update has step == total
    double loss = NAN;
    double lr = NAN;
    double tokens_per_s = NAN;
};

// "1:02:03" (or "2:03" under an hour, "--:--" when unknown).
inline int format_duration(char* buf, std::size_t size, double seconds) {
    if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e8) return std::snprintf(buf, size, "--:--");
    const auto s = std::int64_t(seconds + 0.5);
    if (s >= 3600)
        return std::snprintf(buf, size, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                             static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
    return std::snprintf(buf, size, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
}

class progress_bar {
public:
    explicit progress_bar(std::int64_t total_steps, progress_options options = {}, std::FILE* out = stdout)
        : total_(total_steps), options_(options), out_(out), start_(clock::now()) {
        check(total_steps > 0, [&] { return "progress_bar: total_steps is " + std::to_string(total_steps); });
        check(out != nullptr, "progress_bar: no output stream");
        check(options.plain_every > 0,
              [&] { return "progress_bar: plain_every is " + std::to_string(options.plain_every); });
        tty_ = options.mode == progress_mode::tty ||
               (options.mode == progress_mode::automatic && ::isatty(::fileno(out)) == 1);
        if (options_.bar_width < 0) options_.bar_width = 0;
        if (options_.bar_width > 100) options_.bar_width = 100;
    }

    progress_bar(const progress_bar&) = delete;
    progress_bar& operator=(const progress_bar&) = delete;
    ~progress_bar() {
        if (drawn_) std::fputc('\n', out_); // never leave the cursor at the end of the bar
    }

    bool is_tty() const { return tty_; }

    // Shows `stats`, timing from the clock.
    void update(const progress_stats& stats) {
        update(stats, std::chrono::duration<double>(clock::now() - start_).count());
    }

    // Shows `stats` as if `elapsed_seconds` had passed since the bar was created (tests, replay).
    void update(const progress_stats& stats, double elapsed_seconds) {
        const bool last = stats.step >= total_;
        if (tty_) {
            if (!last && drawn_ && elapsed_seconds - last_draw_ < options_.redraw_seconds) return;
            last_draw_ = elapsed_seconds;
            const std::string_view line = format(stats, elapsed_seconds, true);
            std::fputc('\r', out_);
            std::fwrite(line.data(), 1, line.size(), out_);
            std::fputs("\x1b[K", out_); // clear what a longer previous line left
            drawn_ = true;
            if (last) {
                std::fputc('\n', out_);
                drawn_ = false;
            }
        } else {
            const bool first = !printed_any_;
            if (!first && !last && stats.step % options_.plain_every != 0) return;
            if (last && last_printed_step_ == stats.step) return;
            const std::string_view line = format(stats, elapsed_seconds, false);
            std::fwrite(line.data(), 1, line.size(), out_);
            std::fputc('\n', out_);
            printed_any_ = true;
            last_printed_step_ = stats.step;
        }
        std::fflush(out_);
    }

    // Prints `text` on a line of its own; on a terminal the bar is redrawn under it at the next update.
    void message(std::string_view text) {
        if (drawn_) std::fputs("\r\x1b[K", out_);
        std::fwrite(text.data(), 1, text.size(), out_);
        std::fputc('\n', out_);
        std::fflush(out_);
        drawn_ = false;
        last_draw_ = -1e300;
    }

    // Ends the bar's line on a terminal.
    void finish() {
        if (drawn_) std::fputc('\n', out_);
        drawn_ = false;
        std::fflush(out_);
    }

    // The text of one line, without \r or \n (valid until the next call).
    std::string_view format(const progress_stats& stats, double elapsed_seconds, bool with_bar) {
        char* p = buf_;
        char* const end = buf_ + sizeof buf_;
        const auto put = [&](int n) { p += n < 0 ? 0 : std::min<std::ptrdiff_t>(n, end - p - 1); };
        const int width = digits(total_);
        put(std::snprintf(p, end - p, "step %*lld/%lld", width, static_cast<long long>(stats.step),
                          static_cast<long long>(total_)));
        if (with_bar) {
            const double frac = std::clamp(double(stats.step) / double(total_), 0.0, 1.0);
            const int filled = int(frac * options_.bar_width);
            if (end - p > options_.bar_width + 3) {
                *p++ = ' ';
                *p++ = '[';
                for (int i = 0; i < options_.bar_width; ++i)
                    *p++ = i < filled ? '#' : '-';
                *p++ = ']';
            }
            put(std::snprintf(p, end - p, " %3d%%", int(frac * 100)));
        }
        put(std::snprintf(p, end - p, "  loss %.4f", stats.loss)); // a NaN loss shows as "nan"
        if (std::isfinite(stats.lr)) put(std::snprintf(p, end - p, "  lr %.2e", stats.lr));
        if (std::isfinite(stats.tokens_per_s)) put(std::snprintf(p, end - p, "  %.0f tok/s", stats.tokens_per_s));
        const std::int64_t done = stats.step - options_.first_step;
        const double eta =
            done > 0 ? elapsed_seconds / double(done) * double(std::max<std::int64_t>(total_ - stats.step, 0)) : NAN;
        if (!with_bar) {
            put(std::snprintf(p, end - p, "  elapsed "));
            put(format_duration(p, end - p, elapsed_seconds));
        }
        put(std::snprintf(p, end - p, "  ETA "));
        put(format_duration(p, end - p, eta));
        return {buf_, std::size_t(p - buf_)};
    }

private:
    using clock = std::chrono::steady_clock;

    static int digits(std::int64_t v) {
        int n = 1;
        for (; v >= 10; v /= 10)
            ++n;
        return n;
    }

    std::int64_t total_;
    progress_options options_;
    std::FILE* out_;
    clock::time_point start_;
    bool tty_ = false;
    bool drawn_ = false;       // tty: the bar is on the current line
    bool printed_any_ = false; // plain: a line was printed
    std::int64_t last_printed_step_ = -1;
    double last_draw_ = -1e300;
    char buf_[256];
};

} // namespace tl
