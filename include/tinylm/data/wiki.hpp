// tinylm/data/wiki.hpp: Wikipedia markup out of a text, for corpora built from wiki40b or plain wikitext dumps.
//
// wiki40b (tensorflow datasets) stores an article as one text:
//   "\n_START_ARTICLE_\nTitle\n_START_SECTION_\nSection title\n_START_PARAGRAPH_\nFirst line_NEWLINE_Second line"
// The title and section-title lines are dropped (headings, not sentences); _START_PARAGRAPH_ and _NEWLINE_ become
// line breaks, which end sentences when the whitespace stage keeps line breaks (clean_options::wiki sets it).
// Plain wikitext ("== Heading ==" lines, templates, links, <ref> notes, bold and italic quotes, HTML entities):
//   {{template|...}}           removed, nested ones included (infoboxes, citations);
//   [[target|text]], [[target]] their text, the target when there is none;
//   [[File:...]], [[Category:...]] (also Image, Файл, Изображение, Категория) removed with their captions;
//   [http://x text]            the text;
//   <ref ...>...</ref>, <ref/>, <!-- comment -->  removed; other tags (<small>, ...) dropped, content kept, <br> a
//   space;
//   '''bold''', ''italic''     the quotes dropped;
//   == Heading == lines        dropped;
//   &amp; &lt; &gt; &quot; &apos; &nbsp; &ndash; &mdash; &laquo; &raquo; &hellip; &#NNN; &#xHH;  decoded last, so
//   text that spells markup with entities ("&lt;ref&gt;") stays text. Unknown named entities are left alone.
// Each kind is counted (wiki_counts), so the pipeline's report says what the stage removed.
#pragma once

#include <tinylm/data/utf8.hpp>

#include <array>
#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace tl::data {

struct wiki_counts {
    std::uint64_t articles = 0;   // _START_ARTICLE_ (with its title line)
    std::uint64_t sections = 0;   // _START_SECTION_ (with its title line) and "== Heading ==" lines
    std::uint64_t paragraphs = 0; // _START_PARAGRAPH_
    std::uint64_t newlines = 0;   // _NEWLINE_
    std::uint64_t templates = 0;  // {{...}} (outermost)
    std::uint64_t links = 0;      // [[...]] kept as text, [http... text]
    std::uint64_t media = 0;      // [[File:...]], [[Category:...]] removed
    std::uint64_t refs = 0;       // <ref>...</ref>, <ref/>, comments
    std::uint64_t tags = 0;       // other HTML tags dropped
    std::uint64_t emphasis = 0;   // '' and ''' runs
    std::uint64_t entities = 0;   // HTML entities decoded

    wiki_counts& operator+=(const wiki_counts& o) {
        articles += o.articles, sections += o.sections, paragraphs += o.paragraphs, newlines += o.newlines;
        templates += o.templates, links += o.links, media += o.media, refs += o.refs, tags += o.tags;
        emphasis += o.emphasis, entities += o.entities;
        return *this;
    }
    std::uint64_t total() const {
        return articles + sections + paragraphs + newlines + templates + links + media + refs + tags + emphasis +
               entities;
    }
    // (name, count) of each kind, for reports.
    std::array<std::pair<const char*, std::uint64_t>, 11> items() const {
        return {{{"_START_ARTICLE_ (title line dropped)", articles},
                 {"_START_SECTION_ / == heading == (title line dropped)", sections},
                 {"_START_PARAGRAPH_ (line break)", paragraphs},
                 {"_NEWLINE_ (line break)", newlines},
                 {"{{template}} removed", templates},
                 {"[[link|text]] / [url text] kept as text", links},
                 {"[[File:]] / [[Category:]] removed", media},
                 {"<ref> note / comment removed", refs},
                 {"HTML tag dropped", tags},
                 {"'' / ''' emphasis dropped", emphasis},
                 {"HTML entity decoded", entities}}};
    }
};

namespace detail {

inline bool starts_with_ci(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char a = s[i], b = prefix[i];
        if (a >= 'A' && a <= 'Z') a = char(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z') b = char(b - 'A' + 'a');
        if (a != b) return false;
    }
    return true;
}

// The end of a balanced `open ... close` run starting at s[i] (s.substr(i) starts with `open`), or npos.
inline std::size_t balanced_end(std::string_view s, std::size_t i, std::string_view open, std::string_view close) {
    int depth = 0;
    while (i < s.size()) {
        if (s.substr(i, open.size()) == open) {
            ++depth;
            i += open.size();
        } else if (s.substr(i, close.size()) == close) {
            i += close.size();
            if (--depth == 0) return i;
        } else
            ++i;
    }
    return std::string_view::npos;
}

inline bool is_media_target(std::string_view t) {
    while (!t.empty() && t.front() == ' ')
        t.remove_prefix(1);
    for (std::string_view p : {"file:", "image:", "category:", "файл:", "изображение:", "категория:"})
        if (starts_with_ci(t, p)) return true; // ASCII case folding only: Cyrillic capitals listed below
    for (std::string_view p : {"Файл:", "Изображение:", "Категория:"})
        if (t.starts_with(p)) return true;
    return false;
}

// Decodes one entity at s[i] == '&'; appends it and returns the length consumed, or 0 when it is not one.
inline std::size_t decode_entity(std::string_view s, std::size_t i, std::string& out) {
    const std::size_t semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 10 || semi == i + 1) return 0;
    const std::string_view name = s.substr(i + 1, semi - i - 1);
    char32_t cp = 0;
    if (name[0] == '#') {
        const bool hex = name.size() > 1 && (name[1] == 'x' || name[1] == 'X');
        const std::string_view digits = name.substr(hex ? 2 : 1);
        if (digits.empty()) return 0;
        for (char c : digits) {
            int v;
            if (c >= '0' && c <= '9')
                v = c - '0';
            else if (hex && c >= 'a' && c <= 'f')
                v = c - 'a' + 10;
            else if (hex && c >= 'A' && c <= 'F')
                v = c - 'A' + 10;
            else
                return 0;
            cp = cp * (hex ? 16 : 10) + char32_t(v);
            if (cp > 0x10FFFF) return 0;
        }
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    } else {
        static constexpr std::pair<std::string_view, char32_t> named[] = {
            {"amp", '&'},       {"lt", '<'},       {"gt", '>'},        {"quot", '"'},     {"apos", '\''},
            {"nbsp", 0xA0},     {"ndash", 0x2013}, {"mdash", 0x2014},  {"laquo", 0xAB},   {"raquo", 0xBB},
            {"hellip", 0x2026}, {"shy", 0xAD},     {"thinsp", 0x2009}, {"minus", 0x2212}, {"times", 0xD7},
            {"deg", 0xB0},      {"copy", 0xA9},    {"bdquo", 0x201E},  {"ldquo", 0x201C}, {"rdquo", 0x201D},
            {"lsquo", 0x2018},  {"rsquo", 0x2019}, {"middot", 0xB7},   {"sect", 0xA7},    {"prime", 0x2032}};
        for (const auto& [n, c] : named)
            if (n == name) cp = c;
        if (cp == 0) return 0;
    }
    append_utf8(out, cp);
    return semi - i + 1;
}

} // namespace detail

// Removes wiki markup from `s` (see the top of this file) and counts what it removed; returns true when the text
// changed.
inline bool clean_wiki_markup(std::string& s, wiki_counts& n) {
    if (s.find_first_of("_{[<'&=") == std::string::npos) return false;
    const std::string_view in = s;
    std::string out;
    out.reserve(s.size());
    const auto skip_line = [&](std::size_t i) { // past the end of the line that starts at i
        const std::size_t nl = in.find('\n', i);
        return nl == std::string_view::npos ? in.size() : nl + 1;
    };
    const auto at_line_start = [&](std::size_t i) { return i == 0 || in[i - 1] == '\n'; };
    std::size_t i = 0;
    while (i < in.size()) {
        const std::string_view rest = in.substr(i);
        const char c = in[i];
        if (c == '_') {
            if (rest.starts_with("_START_ARTICLE_") || rest.starts_with("_START_SECTION_")) {
                ++(rest[7] == 'A' ? n.articles : n.sections);
                i = skip_line(skip_line(i)); // the marker's line and the title after it
                continue;
            }
            if (rest.starts_with("_START_PARAGRAPH_")) {
                ++n.paragraphs;
                out.push_back('\n');
                i += 17;
                continue;
            }
            if (rest.starts_with("_NEWLINE_")) {
                ++n.newlines;
                out.push_back('\n');
                i += 9;
                continue;
            }
        } else if (c == '=' && at_line_start(i) && rest.starts_with("==")) {
            const std::size_t end = skip_line(i);
            std::string_view line = in.substr(i, end - i);
            while (!line.empty() && (line.back() == '\n' || line.back() == ' '))
                line.remove_suffix(1);
            if (line.size() >= 4 && line.ends_with("==")) {
                ++n.sections;
                i = end;
                continue;
            }
        } else if (c == '{' && rest.starts_with("{{")) {
            const std::size_t end = detail::balanced_end(in, i, "{{", "}}");
            if (end != std::string_view::npos) {
                ++n.templates;
                i = end;
                continue;
            }
        } else if (c == '[' && rest.starts_with("[[")) {
            const std::size_t end = detail::balanced_end(in, i, "[[", "]]");
            if (end != std::string_view::npos) {
                const std::string_view inner = in.substr(i + 2, end - i - 4);
                if (detail::is_media_target(inner)) {
                    ++n.media;
                } else {
                    ++n.links;
                    std::string text(inner.substr(inner.find('|') == std::string_view::npos ? 0 : inner.find('|') + 1));
                    wiki_counts nested; // a label may hold markup of its own
                    clean_wiki_markup(text, nested);
                    n += nested;
                    out += text;
                }
                i = end;
                continue;
            }
        } else if (c == '[' && (rest.starts_with("[http://") || rest.starts_with("[https://"))) {
            const std::size_t close = in.find(']', i);
            if (close != std::string_view::npos) {
                const std::string_view inner = in.substr(i + 1, close - i - 1);
                const std::size_t sp = inner.find(' ');
                ++n.links;
                if (sp != std::string_view::npos) out += inner.substr(sp + 1);
                i = close + 1;
                continue;
            }
        } else if (c == '<') {
            if (rest.starts_with("<!--")) {
                const std::size_t end = in.find("-->", i);
                ++n.refs;
                i = end == std::string_view::npos ? in.size() : end + 3;
                continue;
            }
            const std::size_t gt = in.find('>', i);
            const bool tag_like = gt != std::string_view::npos && gt - i < 200 && gt > i + 1 &&
                                  (std::isalpha(static_cast<unsigned char>(in[i + 1])) || in[i + 1] == '/');
            if (tag_like) {
                if (detail::starts_with_ci(rest, "<ref")) {
                    ++n.refs;
                    if (in[gt - 1] == '/') { // <ref name="x"/>
                        i = gt + 1;
                        continue;
                    }
                    std::size_t close = gt + 1;
                    while (close < in.size() && !detail::starts_with_ci(in.substr(close), "</ref>"))
                        ++close;
                    i = close >= in.size() ? in.size() : close + 6;
                    continue;
                }
                ++n.tags;
                if (detail::starts_with_ci(rest, "<br")) out.push_back(' '); // "a<br/>b": two words
                i = gt + 1;
                continue;
            }
        } else if (c == '\'' && rest.starts_with("''")) {
            std::size_t k = i;
            while (k < in.size() && in[k] == '\'')
                ++k;
            ++n.emphasis;
            i = k;
            continue;
        }
        out.push_back(c);
        ++i;
    }
    // Entities last: text that spells markup with them stays text.
    std::string decoded;
    decoded.reserve(out.size());
    for (std::size_t k = 0; k < out.size();) {
        if (out[k] == '&') {
            if (const std::size_t used = detail::decode_entity(out, k, decoded)) {
                ++n.entities;
                k += used;
                continue;
            }
        }
        decoded.push_back(out[k++]);
    }
    if (decoded == s) return false;
    s = std::move(decoded);
    return true;
}

} // namespace tl::data
