// tinylm/train/jsonl_log.hpp: a JSON Lines metrics log, one object per line, flushed per line.
//
//   tl::jsonl_log log(run_dir / "metrics.jsonl");
//   log.write(step, {{"loss", loss}, {"lr", lr}, {"tokens_per_s", tps}});
//   log.write(step, {{"prompt", prompt}, {"sample", text}});
// writes   {"step":100,"loss":2.5,"lr":0.0003,"tokens_per_s":37063.0}
// Keys keep their order, "step" first. Numbers that are not finite (a NaN loss) are written as null, since
// JSON has no NaN; strings that are not valid UTF-8 get U+FFFD in place of the bad bytes. Each line goes to
// the kernel in one write as soon as it is complete, so a crash loses no finished line. Opened with
// jsonl_mode::append (resuming a run), a last line cut short by a crash is ended before new lines are added.
#pragma once

#include <tinylm/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace tl {

enum class jsonl_mode { truncate, append };

// One named value of a line: a number (double or integer), a string or a boolean.
struct jsonl_field {
    using value_type = std::variant<double, std::int64_t, std::string_view, bool>;
    std::string_view name;
    value_type value;

    jsonl_field(std::string_view n, double v) : name(n), value(v) {}
    jsonl_field(std::string_view n, float v) : name(n), value(double(v)) {}
    template <class Int>
    jsonl_field(std::string_view n, Int v) requires(std::is_integral_v<Int> && !std::is_same_v<Int, bool>)
        : name(n), value(std::int64_t(v)) {}
    jsonl_field(std::string_view n, bool v) : name(n), value(v) {}
    jsonl_field(std::string_view n, std::string_view v) : name(n), value(v) {}
    jsonl_field(std::string_view n, const std::string& v) : name(n), value(std::string_view(v)) {}
    jsonl_field(std::string_view n, const char* v) : name(n), value(std::string_view(v)) {}
};

class jsonl_log {
public:
    explicit jsonl_log(const std::filesystem::path& path, jsonl_mode mode = jsonl_mode::truncate) : path_(path) {
        if (path.has_parent_path()) {
            std::error_code ec;
            std::filesystem::create_directories(path.parent_path(), ec);
        }
        bool needs_newline = false;
        if (mode == jsonl_mode::append) {
            if (std::FILE* in = std::fopen(path.c_str(), "rb")) {
                if (std::fseek(in, -1, SEEK_END) == 0) needs_newline = std::fgetc(in) != '\n';
                std::fclose(in);
            }
        }
        file_ = std::fopen(path.c_str(), mode == jsonl_mode::append ? "ab" : "wb");
        check(file_ != nullptr,
              [&] { return "jsonl_log: cannot open " + path_.string() + " for writing: " + std::strerror(errno); });
        if (needs_newline) put("\n");
    }

    jsonl_log(const jsonl_log&) = delete;
    jsonl_log& operator=(const jsonl_log&) = delete;
    jsonl_log(jsonl_log&& other) noexcept
        : path_(std::move(other.path_)), file_(other.file_), line_(std::move(other.line_)) {
        other.file_ = nullptr;
    }
    jsonl_log& operator=(jsonl_log&&) = delete;
    ~jsonl_log() {
        if (file_) std::fclose(file_);
    }

    // Writes {"step": step, <fields in order>} as one line. A field named "step" is refused.
    void write(std::int64_t step, std::initializer_list<jsonl_field> fields) {
        nlohmann::ordered_json line;
        line["step"] = step;
        for (const auto& f : fields) {
            check(f.name != "step" && !f.name.empty(), [&] {
                return "jsonl_log: " + path_.string() + ": field name \"" + std::string(f.name) +
                       "\" is empty or the reserved \"step\"";
            });
            auto& slot = line[std::string(f.name)];
            std::visit(
                [&](const auto& v) {
                    using V = std::decay_t<decltype(v)>;
                    if constexpr (std::is_same_v<V, double>) {
                        if (std::isfinite(v))
                            slot = v;
                        else
                            slot = nullptr;
                    } else if constexpr (std::is_same_v<V, std::string_view>) {
                        slot = std::string(v);
                    } else {
                        slot = v;
                    }
                },
                f.value);
        }
        write_line(line);
    }

    // Writes any JSON object as one line (for records the field list does not fit).
    void write_line(const nlohmann::ordered_json& object) {
        check(object.is_object(), [&] { return "jsonl_log: " + path_.string() + ": a line must be a JSON object"; });
        line_ = object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        line_.push_back('\n');
        put(line_);
    }

    void flush() {
        if (file_) std::fflush(file_);
    }
    const std::filesystem::path& path() const { return path_; }

private:
    void put(std::string_view s) {
        check(file_ != nullptr, "jsonl_log: the log was moved from");
        const bool ok = std::fwrite(s.data(), 1, s.size(), file_) == s.size();
        check(ok && std::fflush(file_) == 0,
              [&] { return "jsonl_log: cannot write to " + path_.string() + ": " + std::strerror(errno); });
    }

    std::filesystem::path path_;
    std::FILE* file_ = nullptr;
    std::string line_;
};

} // namespace tl
