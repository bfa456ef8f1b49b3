// tinylm/data/svg.hpp: a tiny SVG writer and the two plots the corpus report needs (log-log line, bars).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::data {

class svg_writer {
public:
    svg_writer(double width, double height) : w_(width), h_(height) {}

    svg_writer& line(double x1, double y1, double x2, double y2, std::string_view stroke = "#000", double sw = 1) {
        body_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) +
                 "\" stroke=\"" + std::string(stroke) + "\" stroke-width=\"" + num(sw) + "\"/>\n";
        return *this;
    }
    svg_writer& rect(double x, double y, double w, double h, std::string_view fill) {
        body_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
                 "\" fill=\"" + std::string(fill) + "\"/>\n";
        return *this;
    }
    svg_writer& polyline(const std::vector<std::pair<double, double>>& pts, std::string_view stroke, double sw = 1.5) {
        body_ +=
            "<polyline fill=\"none\" stroke=\"" + std::string(stroke) + "\" stroke-width=\"" + num(sw) + "\" points=\"";
        for (const auto& [x, y] : pts)
            body_ += num(x) + "," + num(y) + " ";
        body_ += "\"/>\n";
        return *this;
    }
    // anchor: start, middle or end
    svg_writer& text(double x, double y, std::string_view s, double size = 12, std::string_view anchor = "start",
                     double rotate = 0) {
        body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) +
                 "\" font-family=\"sans-serif\" text-anchor=\"" + std::string(anchor) + "\"";
        if (rotate != 0) body_ += " transform=\"rotate(" + num(rotate) + " " + num(x) + " " + num(y) + ")\"";
        body_ += ">" + escape(s) + "</text>\n";
        return *this;
    }
    std::string str() const {
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(w_) + "\" height=\"" + num(h_) +
               "\" viewBox=\"0 0 " + num(w_) + " " + num(h_) + "\">\n<rect width=\"100%\" height=\"100%\" " +
               "fill=\"#fff\"/>\n" + body_ + "</svg>\n";
    }

    static std::string escape(std::string_view s) {
        std::string o;
        for (char c : s) {
            if (c == '<')
                o += "&lt;";
            else if (c == '>')
                o += "&gt;";
            else if (c == '&')
                o += "&amp;";
            else if (c == '"')
                o += "&quot;";
            else
                o.push_back(c);
        }
        return o;
    }
    static std::string num(double v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.6g", v);
        return b;
    }

private:
    double w_, h_;
    std::string body_;
};

// A line on log10-log10 axes (e.g. word frequency against rank). Points with x or y <= 0 are skipped.
inline std::string loglog_plot(const std::vector<std::pair<double, double>>& pts, std::string_view title,
                               std::string_view xlabel, std::string_view ylabel) {
    const double W = 640, H = 420, L = 70, R = 20, T = 40, B = 50;
    svg_writer s(W, H);
    double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
    for (const auto& [x, y] : pts)
        if (x > 0 && y > 0) x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    if (x0 > x1) x0 = 1, x1 = 10, y0 = 1, y1 = 10;
    const double lx0 = std::floor(std::log10(x0)), lx1 = std::max(lx0 + 1, std::ceil(std::log10(x1)));
    const double ly0 = std::floor(std::log10(y0)), ly1 = std::max(ly0 + 1, std::ceil(std::log10(y1)));
    const auto px = [&](double x) { return L + (std::log10(x) - lx0) / (lx1 - lx0) * (W - L - R); };
    const auto py = [&](double y) { return H - B - (std::log10(y) - ly0) / (ly1 - ly0) * (H - T - B); };
    s.text(W / 2, 24, title, 15, "middle");
    s.line(L, H - B, W - R, H - B).line(L, T, L, H - B);
    for (double e = lx0; e <= lx1; ++e) {
        const double x = L + (e - lx0) / (lx1 - lx0) * (W - L - R);
        s.line(x, H - B, x, T, "#ddd").text(x, H - B + 16, "1e" + svg_writer::num(e), 11, "middle");
    }
    for (double e = ly0; e <= ly1; ++e) {
        const double y = H - B - (e - ly0) / (ly1 - ly0) * (H - T - B);
        s.line(L, y, W - R, y, "#ddd").text(L - 6, y + 4, "1e" + svg_writer::num(e), 11, "end");
    }
    std::vector<std::pair<double, double>> p;
    for (const auto& [x, y] : pts)
        if (x > 0 && y > 0) p.emplace_back(px(x), py(y));
    s.polyline(p, "#1f77b4");
    s.text(W / 2, H - 12, xlabel, 12, "middle").text(16, H / 2, ylabel, 12, "middle", -90);
    return s.str();
}

// Bars: counts[i] is the bar of [lo + i·width, lo + (i+1)·width).
inline std::string bar_plot(const std::vector<std::uint64_t>& counts, double lo, double width, std::string_view title,
                            std::string_view xlabel, std::string_view ylabel) {
    const double W = 640, H = 420, L = 70, R = 20, T = 40, B = 50;
    svg_writer s(W, H);
    std::uint64_t mx = 1;
    for (auto c : counts)
        mx = std::max(mx, c);
    const double n = double(std::max<std::size_t>(counts.size(), 1));
    const double bw = (W - L - R) / n;
    s.text(W / 2, 24, title, 15, "middle");
    for (int k = 0; k <= 4; ++k) {
        const double y = H - B - k / 4.0 * (H - T - B);
        s.line(L, y, W - R, y, "#ddd").text(L - 6, y + 4, svg_writer::num(std::round(double(mx) * k / 4.0)), 11, "end");
    }
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double h = double(counts[i]) / double(mx) * (H - T - B);
        s.rect(L + double(i) * bw, H - B - h, std::max(bw - 1, 0.5), h, "#1f77b4");
    }
    const std::size_t step = std::max<std::size_t>(1, counts.size() / 8);
    for (std::size_t i = 0; i <= counts.size(); i += step)
        s.text(L + double(i) * bw, H - B + 16, svg_writer::num(lo + double(i) * width), 11, "middle");
    s.line(L, H - B, W - R, H - B).line(L, T, L, H - B);
    s.text(W / 2, H - 12, xlabel, 12, "middle").text(16, H / 2, ylabel, 12, "middle", -90);
    return s.str();
}

} // namespace tl::data
