// examples/common/cli_checks.hpp: how the programs (examples 01-10 and `tinylm`) meet bad input: numeric flags
// checked against a range that says what the flag means, the output folder checked before any work, and every
// failure reported as one line `error: ...` with a non-zero exit code.
//
//   CLI::App app{"..."};
//   recipes::one_line_errors(app);  // CLI11's parse errors: one line, "error: --steps: must be at least 1 ..."
//   app.add_option("--steps", steps, "optimizer steps")->check(recipes::at_least(1LL, "optimizer steps"));
//   app.add_option("--lr", lr, "peak learning rate")->check(recipes::above(0.0, "peak learning rate"));
//   CLI11_PARSE(app, argc, argv);
//   ...
//   } catch (const std::exception& e) { return recipes::report_error(e); }
//
// The validators read the text themselves: CLI11 2.1 converts "99999999999999999999" to a long long by strtoll,
// which saturates without a word, and its PositiveNumber message prints the range as 0 to 1.79e308 in full. The
// validator's type is the flag variable's: pass the bound as that type (1LL for long long, 1 for int, 0.0 for
// double).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/utf8.hpp>

#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace recipes {

namespace detail {

template <class T>
std::string number_text(T v) {
    if constexpr (std::is_integral_v<T>) {
        return std::to_string(v);
    } else {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", double(v));
        return buf;
    }
}

// Reads all of `text` as a T: integers in base 10 and within T's range (never wrapped or saturated),
// floating-point values finite. Returns what is wrong with the text, or "" when `value` was set.
template <class T>
std::string parse_flag_number(const std::string& text, T& value) {
    std::string problem = "'";
    problem += text;
    if constexpr (std::is_integral_v<T>) {
        const char* first = text.data();
        const char* last = first + text.size();
        if (first != last && *first == '+') ++first;
        const bool negative = first != last && *first == '-';
        const std::from_chars_result r = std::from_chars(first, last, value);
        if (r.ec == std::errc::result_out_of_range || (std::is_unsigned_v<T> && negative)) {
            problem += negative ? "' is too small (at least " : "' is too large (at most ";
            problem += number_text(negative ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max());
            problem += ")";
            return problem;
        }
        if (r.ec != std::errc{} || r.ptr != last || first == last) {
            problem += "' is not a whole number";
            return problem;
        }
    } else {
        char* end = nullptr;
        const long double v = std::strtold(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size()) {
            problem += "' is not a number";
            return problem;
        }
        if (!std::isfinite(v) || v > std::numeric_limits<T>::max() || v < std::numeric_limits<T>::lowest()) {
            problem += "' is out of range";
            return problem;
        }
        value = T(v);
    }
    return {};
}

enum class bound { inclusive, exclusive };

template <class T>
CLI::Validator range_check(T lo, T hi, bound low, std::string meaning) {
    static_assert(std::is_arithmetic_v<T>);
    std::string rule;
    if (low == bound::exclusive) {
        rule = "above ";
        rule += number_text(lo);
    } else if (hi == std::numeric_limits<T>::max()) {
        rule = "at least ";
        rule += number_text(lo);
    } else {
        rule = "between ";
        rule += number_text(lo);
        rule += " and ";
        rule += number_text(hi);
    }
    std::string description = "[";
    description += rule;
    description += "]";
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            T v{};
            const bool negative_unsigned = std::is_unsigned_v<T> && text.find('-') == 0;
            if (!negative_unsigned)
                if (std::string problem = parse_flag_number(text, v); !problem.empty()) return problem;
            const bool low_ok = low == bound::exclusive ? v > lo : v >= lo;
            if (!negative_unsigned && low_ok && v <= hi) return {};
            std::string message = "must be ";
            message += rule;
            message += " (";
            message += meaning;
            message += "), not ";
            message += text;
            return message;
        },
        description);
}

} // namespace detail

// The value is at least `lo`: "--batch: must be at least 1 (sequences per step), not 0".
template <class T>
CLI::Validator at_least(T lo, std::string meaning) {
    return detail::range_check(lo, std::numeric_limits<T>::max(), detail::bound::inclusive, std::move(meaning));
}

// The value lies in [lo, hi]: "--val-fraction: must be between 0 and 1 (share of documents in val.bin), not 2".
template <class T>
CLI::Validator in_range(T lo, T hi, std::string meaning) {
    return detail::range_check(lo, hi, detail::bound::inclusive, std::move(meaning));
}

// The value is greater than `lo`: "--lr: must be above 0 (peak learning rate), not -1".
template <class T>
CLI::Validator above(T lo, std::string meaning) {
    return detail::range_check(lo, std::numeric_limits<T>::max(), detail::bound::exclusive, std::move(meaning));
}

// The message of a failure as one line: without tinylm's "tinylm: " prefix, line breaks joined with "; ", a
// filesystem error as its path and reason, memory exhaustion with what to change.
inline std::string error_line(const std::exception& e) {
    std::string text;
    if (const auto* fe = dynamic_cast<const std::filesystem::filesystem_error*>(&e)) {
        text = fe->path1().string();
        if (!fe->path2().empty()) {
            text += " -> ";
            text += fe->path2().string();
        }
        text += ": ";
        text += fe->code().message();
    } else if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
        text = "out of memory (a smaller --batch, context or model needs less)";
    } else {
        text = e.what();
    }
    constexpr std::string_view prefix = "tinylm: ";
    if (text.starts_with(prefix)) text.erase(0, prefix.size());
    std::string line = "error: ";
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n') {
            if (i + 1 < text.size()) line += "; ";
        } else {
            line += text[i];
        }
    }
    return line;
}

// Prints the failure as one line on standard error; returns the exit code 1.
inline int report_error(const std::exception& e) {
    std::fprintf(stderr, "%s\n", error_line(e).c_str());
    return 1;
}

// CLI11's parse errors (unknown flag, a value out of range, a missing required flag) as one line too; --help
// and --version still print as usual. Set it on the top App before parsing.
inline void one_line_errors(CLI::App& app) {
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        std::string line = "error: ";
        line += e.what();
        line += " (--help lists the options)\n";
        return line;
    });
}

// Refuses a file that is not text (binary junk given as a corpus): invalid UTF-8 or a NUL byte, with its offset.
inline void check_is_text(std::string_view text, const std::filesystem::path& file, std::string_view flag) {
    std::size_t at = tl::utf8::find_invalid(text);
    if (const std::size_t nul = text.find('\0'); nul < at) at = nul;
    if (at == std::string_view::npos) return;
    tl::fail(std::string(flag) + ": " + file.string() + " is not UTF-8 text (byte " + std::to_string(at) +
             "); give a text file");
}

// Creates the output folder `dir` (with its parents) and checks that a file can be written in it, so that a run
// with an unwritable --out fails at once, naming the flag and the path, not at its first checkpoint.
inline void prepare_out_dir(const std::filesystem::path& dir, std::string_view flag) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
        tl::fail(std::string(flag) + ": " + dir.string() + " is a file, not a folder");
    fs::create_directories(dir, ec);
    if (ec) tl::fail(std::string(flag) + ": cannot create the folder " + dir.string() + ": " + ec.message());
    const fs::path probe = dir / ".tinylm-write-check";
    bool written = false;
    {
        std::ofstream out(probe, std::ios::binary);
        written = out && (out << "ok") && out.flush();
    }
    fs::remove(probe, ec);
    if (!written) tl::fail(std::string(flag) + ": cannot write in the folder " + dir.string());
}

} // namespace recipes
