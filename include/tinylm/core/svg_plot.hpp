// tinylm/core/svg_plot.hpp: tinylm's one SVG plot writer (standard library only): line plots on linear or
// log10 axes (loss curves in run reports, Zipf curves of the corpus report, the tokenizer lab's bytes per
// token) and bar plots (length histograms of the corpus report).
//
//   std::string svg = tl::svg_line_plot({{.name = "train", .x = steps, .y = loss},
//                                        {.name = "validation", .x = vsteps, .y = vloss, .markers = true}},
//                                       {.title = "Loss", .x_label = "step", .y_label = "loss (nats/token)"});
//
// Axes get "nice" ticks (1, 2 or 5 times a power of ten) with grid lines and labels, and the ranges are
// widened to the outer ticks; a log axis (log_x, log_y) has its ticks at powers of ten and drops points <= 0.
// Points that are not finite break a line; a lone point is drawn as a dot. A legend names the series. Text is
// XML-escaped, so any series name or label is safe.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

struct plot_series {
    std::string name{};
    std::vector<double> x{}, y{}; // the same length; pairs with a non-finite coordinate are gaps
    std::string color{};          // any SVG color; empty picks one from a palette
    bool markers = false;         // a dot at every point (sparse series such as validation loss)
};

struct plot_options {
    std::string title{};
    std::string x_label{};
    std::string y_label{};
    int width = 800;
    int height = 450;
    bool log_x = false; // log10 axes: ticks at powers of ten, points <= 0 left out
    bool log_y = false;
};

inline std::string xml_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        case '\'':
            out += "&apos;";
            break;
        default:
            if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out.push_back(c);
        }
    }
    return out;
}

// Ticks covering [lo, hi] spaced by 1, 2 or 5 × 10^k, at most about `max_ticks` of them, the first <= lo
// and the last >= hi. An empty or degenerate range is widened around its value.
inline std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 8) {
    if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
    if (lo > hi) std::swap(lo, hi);
    if (hi - lo <= 1e-12 * std::max(1.0, std::abs(hi))) {
        const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
        lo -= pad, hi += pad;
    }
    max_ticks = std::max(max_ticks, 2);
    const double raw = (hi - lo) / (max_ticks - 1);
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = 10 * mag;
    for (double m : {1.0, 2.0, 5.0})
        if (m * mag >= raw) {
            step = m * mag;
            break;
        }
    const double first = std::floor(lo / step + 1e-9) * step;
    const double last = std::ceil(hi / step - 1e-9) * step;
    std::vector<double> ticks;
    for (int i = 0; first + i * step <= last + step * 1e-6 && i < 1000; ++i) {
        const double t = first + i * step;
        ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t); // no "-0"
    }
    return ticks;
}

// A tick label: as many decimals as the tick spacing needs, scientific for very large or small values.
inline std::string format_tick(double value, double spacing) {
    char buf[64];
    const double a = std::max(std::abs(value), spacing);
    if (a >= 1e6 || (a < 1e-3 && a > 0)) {
        std::snprintf(buf, sizeof buf, "%.3g", value);
    } else {
        const int decimals = std::clamp(int(std::ceil(-std::log10(spacing) - 1e-9)), 0, 6);
        std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    }
    return buf;
}

namespace detail {
inline std::string svg_line_plot(const std::vector<plot_series>& series, const plot_options& options, bool log_x,
                                 bool log_y);
} // namespace detail

inline std::string svg_line_plot(const std::vector<plot_series>& series, const plot_options& options = {}) {
    if (options.log_x || options.log_y) { // plot log10 of the values on linear axes, label the ticks 10^t
        std::vector<plot_series> logged = series;
        const auto lg = [](double v) { return v > 0 ? std::log10(v) : NAN; };
        for (auto& s : logged) {
            if (options.log_x)
                for (double& x : s.x)
                    x = lg(x);
            if (options.log_y)
                for (double& y : s.y)
                    y = lg(y);
        }
        plot_options o = options;
        o.log_x = o.log_y = false;
        return detail::svg_line_plot(logged, o, options.log_x, options.log_y);
    }
    return detail::svg_line_plot(series, options, false, false);
}

namespace detail {

// Ticks of a log axis over log10 values [lo, hi]: whole powers of ten (at least two).
inline std::vector<double> log_ticks(double lo, double hi) {
    if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
    const double a = std::floor(lo + 1e-9), b = std::max(a + 1, std::ceil(hi - 1e-9));
    std::vector<double> t;
    const double step = std::max(1.0, std::ceil((b - a) / 8));
    for (double e = a; e <= b + 1e-9; e += step)
        t.push_back(e);
    if (t.back() < b) t.push_back(t.back() + step);
    return t;
}

inline std::string log_tick(double e) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", std::pow(10.0, e));
    return buf;
}

inline std::string svg_line_plot(const std::vector<plot_series>& series, const plot_options& options, bool log_x,
                                 bool log_y) {
    static constexpr const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
    const double w = std::max(options.width, 200), h = std::max(options.height, 150);
    const double left = 72, right = 24, top = options.title.empty() ? 20 : 44, bottom = 58;
    const double pw = w - left - right, ph = h - top - bottom;

    double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
    for (const auto& s : series)
        for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
            if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
                x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
                y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
            }
    const bool empty = !(x_lo <= x_hi);
    const auto xt = empty ? nice_ticks(0, 1) : log_x ? log_ticks(x_lo, x_hi) : nice_ticks(x_lo, x_hi, 9);
    const auto yt = empty ? nice_ticks(0, 1) : log_y ? log_ticks(y_lo, y_hi) : nice_ticks(y_lo, y_hi, 9);
    const double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();
    const auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
    const auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };

    std::string out;
    char buf[256];
    const auto add = [&](const char* fmt, auto... args) {
        std::snprintf(buf, sizeof buf, fmt, args...);
        out += buf;
    };
    add("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
        "font-family=\"sans-serif\" font-size=\"12\">\n",
        w, h, w, h);
    add("<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", w, h);
    if (!options.title.empty())
        out += "<text x=\"" + std::to_string(int(w / 2)) + "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\">" +
               xml_escape(options.title) + "</text>\n";

    // Grid, ticks and tick labels.
    const double x_step = xt.size() > 1 ? xt[1] - xt[0] : 1, y_step = yt.size() > 1 ? yt[1] - yt[0] : 1;
    out += "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n";
    for (double t : xt)
        add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", px(t), top, px(t), top + ph);
    for (double t : yt)
        add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left, py(t), left + pw, py(t));
    out += "</g>\n<g stroke=\"black\" stroke-width=\"1\">\n";
    for (double t : xt)
        add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", px(t), top + ph, px(t), top + ph + 5);
    for (double t : yt)
        add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left - 5, py(t), left, py(t));
    add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left, top + ph, left + pw, top + ph);
    add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", left, top, left, top + ph);
    out += "</g>\n<g fill=\"black\">\n";
    for (double t : xt)
        add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px(t), top + ph + 19,
            (log_x ? log_tick(t) : format_tick(t, x_step)).c_str());
    for (double t : yt)
        add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left - 8, py(t) + 4,
            (log_y ? log_tick(t) : format_tick(t, y_step)).c_str());
    out += "</g>\n";
    if (!options.x_label.empty()) {
        add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", left + pw / 2, h - 12);
        out += xml_escape(options.x_label) + "</text>\n";
    }
    if (!options.y_label.empty()) {
        add("<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">", top + ph / 2);
        out += xml_escape(options.y_label) + "</text>\n";
    }

    // Series: polylines broken at gaps, dots for lone points or when markers are asked for.
    for (std::size_t k = 0; k < series.size(); ++k) {
        const auto& s = series[k];
        const std::string color = s.color.empty() ? palette[k % std::size(palette)] : xml_escape(s.color);
        const std::size_t n = std::min(s.x.size(), s.y.size());
        const auto ok = [&](std::size_t i) { return std::isfinite(s.x[i]) && std::isfinite(s.y[i]); };
        for (std::size_t i = 0; i < n;) {
            if (!ok(i)) {
                ++i;
                continue;
            }
            std::size_t j = i;
            while (j < n && ok(j))
                ++j;
            if (j - i == 1 && !s.markers) {
                add("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", px(s.x[i]), py(s.y[i]), color.c_str());
            } else if (j - i > 1) {
                out += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\" points=\"";
                for (std::size_t m = i; m < j; ++m)
                    add("%s%.1f,%.1f", m == i ? "" : " ", px(s.x[m]), py(s.y[m]));
                out += "\"/>\n";
            }
            i = j;
        }
        if (s.markers)
            for (std::size_t i = 0; i < n; ++i)
                if (ok(i))
                    add("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(s.x[i]), py(s.y[i]),
                        color.c_str());
    }

    // Legend, top right inside the plot area, on a white box sized by the longest name (about 7 px a character).
    std::size_t longest = 0, n_named = 0;
    for (const auto& s : series) {
        std::size_t chars = 0;
        for (char c : s.name)
            chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        longest = std::max(longest, chars);
        n_named += !s.name.empty();
    }
    if (n_named > 0) {
        const double box_w = 46 + 7.0 * double(longest), box_h = 10 + 18.0 * double(n_named);
        const double bx = std::max(left + 4, left + pw - box_w - 8), by = top + 6;
        add("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" fill-opacity=\"0.85\" "
            "stroke=\"#c0c0c0\"/>\n",
            bx, by, box_w, box_h);
        double ly = by + 19;
        for (std::size_t k = 0; k < series.size(); ++k) {
            if (series[k].name.empty()) continue;
            const std::string color =
                series[k].color.empty() ? palette[k % std::size(palette)] : xml_escape(series[k].color);
            add("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", bx + 8,
                ly - 4, bx + 32, ly - 4, color.c_str());
            add("<text x=\"%.1f\" y=\"%.1f\">", bx + 38, ly);
            out += xml_escape(series[k].name) + "</text>\n";
            ly += 18;
        }
    }
    if (empty)
        add("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#808080\">no data</text>\n", left + pw / 2,
            top + ph / 2);
    out += "</svg>\n";
    return out;
}

} // namespace detail

// Bars: counts[i] is the bar of [lo + i·width, lo + (i+1)·width), on the axes and in the style of svg_line_plot.
inline std::string svg_bar_plot(const std::vector<std::uint64_t>& counts, double lo, double width,
                                const plot_options& options = {}) {
    std::uint64_t mx = 1;
    for (auto c : counts)
        mx = std::max(mx, c);
    const double n = double(std::max<std::size_t>(counts.size(), 1));
    // The axes: an empty series spanning the bars' range, without a legend entry.
    const plot_series frame{.x = {lo, lo + n * width}, .y = {0, double(mx)}, .color = "none"};
    std::string out = svg_line_plot({frame}, options);
    const auto yt = nice_ticks(0, double(mx), 9), xt = nice_ticks(lo, lo + n * width, 9);
    const double w = std::max(options.width, 200), h = std::max(options.height, 150);
    const double left = 72, right = 24, top = options.title.empty() ? 20 : 44, bottom = 58;
    const double pw = w - left - right, ph = h - top - bottom;
    const double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();
    const auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
    const auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };
    std::string bars;
    char buf[192];
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double xa = px(lo + double(i) * width), xb = px(lo + double(i + 1) * width);
        const double ya = py(double(counts[i]));
        std::snprintf(buf, sizeof buf,
                      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f77b4\"/>\n", xa, ya,
                      std::max(xb - xa - 1, 0.5), py(y0) - ya);
        bars += buf;
    }
    out.insert(out.size() - 7, bars); // before </svg>
    return out;
}

} // namespace tl
