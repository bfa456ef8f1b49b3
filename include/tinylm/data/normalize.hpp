// tinylm/data/normalize.hpp: Unicode NFC, whitespace and punctuation normalisation, and character classes.
//
// Each function rewrites one string and returns whether it changed anything, so that a pipeline can count
// the records each stage touched. Input must be valid UTF-8 (see repair_utf8).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/utf8.hpp>

#include <utf8proc.h>

#include <cstdlib>
#include <string>
#include <string_view>

namespace tl::data {

// ---- character classes -----------------------------------------------------------------------------------

inline bool is_letter(char32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    if (c >= 0x410 && c <= 0x44F) return true;
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}
inline bool is_upper(char32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z';
    if (c >= 0x410 && c <= 0x42F) return true;
    if (c >= 0x430 && c <= 0x44F) return false;
    return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LU;
}
inline bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
inline char32_t to_lower(char32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x430 && c <= 0x44F) return c;
    return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}
inline bool is_space(char32_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == 0xA0 || (c >= 0x2000 && c <= 0x200A) || c == 0x202F ||
           c == 0x205F || c == 0x3000 || c == 0x1680;
}
// Zero-width and invisible characters that normalisation removes.
inline bool is_invisible(char32_t c) { return c == 0x200B || c == 0x2060 || c == 0xAD || c == 0x180E; }

// Script of a letter, for reports.
inline const char* script_of(char32_t c) {
    if (c < 0x80) return is_letter(c) ? "Latin" : is_digit(c) ? "digit" : is_space(c) ? "space" : "punctuation/symbol";
    if (c >= 0x400 && c <= 0x52F) return is_letter(c) ? "Cyrillic" : "Cyrillic mark";
    if (!is_letter(c)) {
        const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
        if (cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME) return "combining mark";
        if (cat == UTF8PROC_CATEGORY_ND) return "digit";
        if (is_space(c)) return "space";
        return "punctuation/symbol";
    }
    if (c <= 0x24F || (c >= 0x1E00 && c <= 0x1EFF)) return "Latin";
    if (c >= 0x370 && c <= 0x3FF) return "Greek";
    if (c >= 0x1F00 && c <= 0x1FFF) return "Greek";
    if (c >= 0x590 && c <= 0x5FF) return "Hebrew";
    if (c >= 0x600 && c <= 0x6FF) return "Arabic";
    if (c >= 0x4E00 && c <= 0x9FFF) return "CJK";
    return "other letter";
}

inline std::string hex_cp(char32_t c) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(c));
    return buf;
}

// ---- NFC ---------------------------------------------------------------------------------------------------

// True when `s` has only code points whose NFC form is themselves whatever surrounds them (below U+0300,
// Cyrillic letters, general punctuation, №): such text is already NFC and utf8proc is not called.
inline bool nfc_trivially(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const char32_t c = next_cp(s, i);
        if (c < 0x300 || (c >= 0x400 && c <= 0x482) || (c >= 0x48A && c <= 0x52F) || (c >= 0x2010 && c <= 0x2027) ||
            (c >= 0x2030 && c <= 0x205E) || c == 0x2116 || c == 0xFFFD)
            continue;
        return false;
    }
    return true;
}

// Canonical composition (NFC). Returns true when the text changed.
inline bool to_nfc(std::string& s) {
    if (nfc_trivially(s)) return false;
    utf8proc_uint8_t* out = nullptr;
    const auto n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()), &out,
                     static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    check(n >= 0, [&] { return std::string("nfc: utf8proc failed: ") + utf8proc_errmsg(n); });
    std::string r(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
    std::free(out);
    if (r == s) return false;
    s = std::move(r);
    return true;
}

// ---- whitespace ------------------------------------------------------------------------------------------

struct whitespace_options {
    bool keep_newlines = false; // false: line breaks inside a paragraph become spaces
};

// Unicode spaces and tabs become ' ', invisible characters are dropped, runs collapse to one space (or one
// line break), and the ends are trimmed. Returns true when the text changed.
inline bool normalize_whitespace(std::string& s, const whitespace_options& opt = {}) {
    std::string out;
    out.reserve(s.size());
    bool pending_space = false, pending_nl = false;
    std::size_t i = 0;
    while (i < s.size()) {
        const auto b = static_cast<unsigned char>(s[i]);
        char32_t c;
        std::size_t start = i;
        if (b < 0x80)
            c = b, ++i;
        else
            c = next_cp(s, i);
        if (c == '\n' && opt.keep_newlines) {
            pending_nl = true;
            continue;
        }
        if (is_space(c)) {
            pending_space = true;
            continue;
        }
        if (is_invisible(c)) continue;
        if (!out.empty()) {
            if (pending_nl)
                out.push_back('\n');
            else if (pending_space)
                out.push_back(' ');
        }
        pending_space = pending_nl = false;
        out.append(s, start, i - start);
    }
    if (out == s) return false;
    s = std::move(out);
    return true;
}

// ---- punctuation -----------------------------------------------------------------------------------------

enum class quote_style { keep, guillemets, ascii };

struct punctuation_options {
    bool collapse_repeats = true;                 // "!!!" -> "!", "???" -> "?", "?!!" -> "?!", ",," -> ","
    bool ellipsis_to_dots = true;                 // "…" and "...." -> "..."
    quote_style quotes = quote_style::guillemets; // « » „ “ ” "  -> «» (or ")
    bool dashes = true;                           // " - ", " – ", "--" and a leading "- " -> em dash
    bool space_before_punct = true; // "слово ," -> "слово,"; "( x )" -> "(x)"; "« x »" -> "«x»"
    // "кто#нибудь" -> "кто-нибудь": some digitised novels of the Russian corpus (Dostoyevsky, Chekhov, Gogol)
    // carry '#' for the hyphen; between two letters it is never anything else.
    bool hash_hyphen = true;
};

inline bool normalize_punctuation(std::string& s, const punctuation_options& opt = {}) {
    std::u32string t;
    t.reserve(s.size());
    for (std::size_t i = 0; i < s.size();)
        t.push_back(next_cp(s, i));
    std::u32string o;
    o.reserve(t.size() + 8);
    const auto prev_is_space_or_start = [&] { return o.empty() || o.back() == ' ' || o.back() == '\n'; };
    for (std::size_t i = 0; i < t.size(); ++i) {
        char32_t c = t[i];
        // ellipsis and runs of dots
        if (opt.ellipsis_to_dots && (c == U'…' || c == '.')) {
            std::size_t j = i, dots = 0;
            while (j < t.size() && (t[j] == '.' || t[j] == U'…'))
                dots += t[j] == '.' ? 1 : 3, ++j;
            if (dots >= 3) {
                o += U"...";
                i = j - 1;
                continue;
            }
        }
        if (opt.collapse_repeats && (c == '!' || c == '?')) {
            // keep the first '?' and '!' of a run, in order of appearance: "?!!?" -> "?!"
            std::size_t j = i;
            bool q = false, e = false;
            std::u32string run;
            while (j < t.size() && (t[j] == '!' || t[j] == '?')) {
                if (t[j] == '?' && !q) run.push_back('?'), q = true;
                if (t[j] == '!' && !e) run.push_back('!'), e = true;
                ++j;
            }
            if (opt.space_before_punct)
                while (!o.empty() && o.back() == ' ' && o.size() >= 2 && o[o.size() - 2] != U'—')
                    o.pop_back();
            o += run;
            i = j - 1;
            continue;
        }
        if (opt.collapse_repeats && (c == ',' || c == ';' || c == ':') && !o.empty() && o.back() == c) continue;
        if (opt.hash_hyphen && c == '#' && !o.empty() && is_letter(o.back()) && i + 1 < t.size() && is_letter(t[i + 1]))
            c = '-';
        if (opt.dashes) {
            if (c == '-' && i + 1 < t.size() && t[i + 1] == '-') { // "--" or "---"
                while (i + 1 < t.size() && t[i + 1] == '-')
                    ++i;
                c = U'—';
            } else if ((c == '-' || c == U'–' || c == U'―') && prev_is_space_or_start() &&
                       (i + 1 == t.size() || t[i + 1] == ' ')) {
                c = U'—';
            }
        }
        if (opt.quotes != quote_style::keep) {
            const char32_t open = opt.quotes == quote_style::guillemets ? U'«' : U'"';
            const char32_t close = opt.quotes == quote_style::guillemets ? U'»' : U'"';
            if (c == U'«' || c == U'„')
                c = open;
            else if (c == U'»')
                c = close;
            else if (c == U'“' || c == U'”' || c == '"') {
                // opening when at the start or after a space or an opening bracket/quote/dash
                const bool opening = prev_is_space_or_start() || o.back() == '(' || o.back() == '[' ||
                                     o.back() == U'«' || o.back() == U'—';
                c = opening ? open : close;
            }
        }
        if (opt.space_before_punct) {
            const bool closing = c == ',' || c == '.' || c == ';' || c == ':' || c == '!' || c == '?' || c == ')' ||
                                 c == ']' || c == U'»' || c == U'…';
            if (closing) {
                // "слово ," -> "слово,", but not "... ," at the start or " ..." after a dash
                while (!o.empty() && o.back() == ' ' && o.size() >= 2 && o[o.size() - 2] != U'—' &&
                       !(c == '.' && i + 1 < t.size() && t[i + 1] == '.'))
                    o.pop_back();
            }
            if (c == ' ' && !o.empty() && (o.back() == '(' || o.back() == '[' || o.back() == U'«')) continue;
        }
        o.push_back(c);
    }
    std::string r;
    r.reserve(s.size());
    for (char32_t c : o)
        append_utf8(r, c);
    if (r == s) return false;
    s = std::move(r);
    return true;
}

} // namespace tl::data
