// tinylm/data/sft_formats.hpp: instruction-tuning data as conversations, read from the common file formats.
//
//   auto convs = tl::data::read_sft("ru_alpaca_seed_tasks.jsonl");           // format detected from the data
//   auto jokes = tl::data::read_rated_csv("clean_comedy_gold_ru.csv", {.rating_column = "score", .min_rating = 3.5});
//
// Formats (docs/sft.md):
//   alpaca             JSON array or JSONL of {instruction, input, output}: user = instruction, plus "\n\n" + input
//                      when input is not empty; assistant = output
//   alpaca_system      the SFT assignment's layout of the same rows (d0rj/alpaca-cleaned-ru): input = the system
//                      message (none when empty), instruction = user, output = assistant; JSON array, JSONL, or
//                      CSV with a header naming instruction, input (optional) and output. Never detected (the
//                      fields are alpaca's): ask for it by name (sft_format_from_name("alpaca-system"))
//   seed_tasks         rulm's seed tasks, JSONL of {instruction, instances: [{input, output}, ...]}: one
//                      conversation per instance, built as alpaca
//   messages           JSONL of {"messages": [{"role", "content"}, ...]} (system, user, assistant, tool)
//   prompt_completion  JSONL of {prompt, completion}: user = prompt, assistant = completion
//   csv                a text column as the assistant's reply to a fixed prompt (or a prompt column), rows kept
//                      when a rating column reaches a threshold; RFC 4180 quoting (commas, "" and line breaks
//                      inside quotes)
// Every reader adds read_options::system_prompt as a first system message when it is set and the record has
// none. Bad input throws tl::error naming file:line and the problem; nothing is skipped silently.
#pragma once

#include <tinylm/core/error.hpp>

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tl::data {

struct chat_message {
    std::string role; // system, user, assistant or tool
    std::string content;
};

struct conversation {
    std::vector<chat_message> messages;
    std::string source; // "file:line" of the record it came from

    // The messages as chat_template::render takes them: [{"role": ..., "content": ...}, ...].
    nlohmann::ordered_json to_json() const {
        nlohmann::ordered_json out = nlohmann::ordered_json::array();
        for (const chat_message& m : messages)
            out.push_back({{"role", m.role}, {"content", m.content}});
        return out;
    }
};

struct sft_read_options {
    std::string system_prompt = {}; // when set: a first system message for records that have none
    std::size_t limit = 0;          // stop after this many conversations; 0: all
};

enum class sft_format { automatic, alpaca, alpaca_system, seed_tasks, messages, prompt_completion, csv };

// The command-line names: auto, alpaca, alpaca-system, seed-tasks, messages, prompt-completion, csv.
inline sft_format sft_format_from_name(std::string_view name) {
    static constexpr std::pair<std::string_view, sft_format> names[] = {
        {"auto", sft_format::automatic},
        {"alpaca", sft_format::alpaca},
        {"alpaca-system", sft_format::alpaca_system},
        {"seed-tasks", sft_format::seed_tasks},
        {"messages", sft_format::messages},
        {"prompt-completion", sft_format::prompt_completion},
        {"csv", sft_format::csv}};
    for (const auto& [n, f] : names)
        if (n == name) return f;
    fail("unknown SFT format '" + std::string(name) +
         "' (auto, alpaca, alpaca-system, seed-tasks, messages, prompt-completion, csv)");
}

struct csv_options {
    std::string text_column = "text";         // the assistant's reply
    std::string prompt = "Расскажи анекдот."; // the user's turn, unless prompt_column is set
    std::string prompt_column = {};           // when set: the user's turn is this column
    std::string rating_column = {};           // when set: keep rows whose rating is >= min_rating
    double min_rating = -std::numeric_limits<double>::infinity();
    char delimiter = ',';
    sft_read_options read = {};
};

namespace detail {

inline std::string read_whole_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    check(static_cast<bool>(in), [&] { return path.string() + ": cannot open for reading"; });
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline std::size_t line_of_byte(std::string_view text, std::size_t byte) {
    std::size_t line = 1;
    for (std::size_t i = 0; i < byte && i < text.size(); ++i)
        line += text[i] == '\n';
    return line;
}

inline nlohmann::ordered_json parse_json(std::string_view text, const std::string& where) {
    try {
        return nlohmann::ordered_json::parse(text);
    } catch (const nlohmann::json::exception& e) { // parse_error, or out_of_range for a number such as 1e3087
        fail(where + ": invalid JSON (" + e.what() + ")");
    }
}

inline std::string string_field(const nlohmann::ordered_json& obj, const char* key, const std::string& where,
                                bool required) {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
        check(!required, [&] { return where + ": the field \"" + key + "\" is missing"; });
        return {};
    }
    check(it->is_string(),
          [&] { return where + ": the field \"" + key + "\" must be a string, got " + std::string(it->type_name()); });
    return it->get<std::string>();
}

// Calls f(record, "file:line") for every JSON object of a JSONL file (blank lines are skipped) or of a top-level
// JSON array (its elements' lines found by a scan that follows strings and nesting).
template <class F>
void for_each_json_record(const std::filesystem::path& path, F&& f) {
    const std::string text = read_whole_file(path);
    const std::string file = path.string();
    std::size_t first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text.compare(first, 3, "\xEF\xBB\xBF") == 0)
        first = text.find_first_not_of(" \t\r\n", first + 3);
    if (first == std::string::npos) return;
    if (text[first] == '[') { // one JSON array
        std::vector<std::size_t> element_lines;
        int depth = 0;
        bool in_string = false;
        std::size_t line = 1;
        for (std::size_t i = 0; i < text.size(); ++i) {
            const char c = text[i];
            if (c == '\n') ++line;
            if (in_string) {
                if (c == '\\')
                    ++i;
                else if (c == '"')
                    in_string = false;
                continue;
            }
            if (c == '"') {
                in_string = true;
                if (depth == 1) element_lines.push_back(line);
            } else if (c == '[' || c == '{') {
                if (depth == 1) element_lines.push_back(line);
                ++depth;
            } else if (c == ']' || c == '}') {
                --depth;
            } else if (depth == 1 && c != ',' && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
                if (i == 0 || std::string_view(" \t\r\n,[").find(text[i - 1]) != std::string_view::npos)
                    element_lines.push_back(line); // a number, true, false or null
            }
        }
        nlohmann::ordered_json all;
        try {
            all = nlohmann::ordered_json::parse(text);
        } catch (const nlohmann::json::parse_error& e) {
            fail(file + ":" + std::to_string(line_of_byte(text, e.byte)) + ": invalid JSON (" + e.what() + ")");
        } catch (const nlohmann::json::exception& e) { // out_of_range: a number such as 1e3087
            fail(file + ": invalid JSON (" + e.what() + ")");
        }
        for (std::size_t k = 0; k < all.size(); ++k) {
            const std::string where =
                file + ":" + std::to_string(k < element_lines.size() ? element_lines[k] : std::size_t(0));
            check(all[k].is_object(),
                  [&] { return where + ": array element " + std::to_string(k) + " is not an object"; });
            if (!f(all[k], where)) return;
        }
        return;
    }
    std::size_t line_no = 0, begin = 0;
    while (begin < text.size()) {
        std::size_t end = text.find('\n', begin);
        if (end == std::string::npos) end = text.size();
        ++line_no;
        std::string_view line(text.data() + begin, end - begin);
        begin = end + 1;
        if (line_no == 1 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        const std::string where = file + ":" + std::to_string(line_no);
        const nlohmann::ordered_json record = parse_json(line, where);
        check(record.is_object(), [&] { return where + ": a JSONL line must hold one JSON object"; });
        if (!f(record, where)) return;
    }
}

inline conversation make_conversation(const sft_read_options& opt, std::string source) {
    conversation c;
    c.source = std::move(source);
    if (!opt.system_prompt.empty()) c.messages.push_back({"system", opt.system_prompt});
    return c;
}

// Alpaca's user turn: the instruction, then the input after a blank line when there is one.
inline std::string alpaca_user_turn(std::string instruction, const std::string& input) {
    if (!input.empty()) instruction += "\n\n" + input;
    return instruction;
}

inline bool below_limit(const std::vector<conversation>& out, const sft_read_options& opt) {
    return opt.limit == 0 || out.size() < opt.limit;
}

} // namespace detail

// Alpaca: a JSON array or JSONL of {instruction, input (optional), output}.
inline std::vector<conversation> read_alpaca(const std::filesystem::path& path, const sft_read_options& opt = {}) {
    std::vector<conversation> out;
    detail::for_each_json_record(path, [&](const nlohmann::ordered_json& r, const std::string& where) {
        const std::string instruction = detail::string_field(r, "instruction", where, true);
        const std::string input = detail::string_field(r, "input", where, false);
        const std::string output = detail::string_field(r, "output", where, true);
        check(!instruction.empty() || !input.empty(), [&] { return where + ": instruction and input are both empty"; });
        conversation c = detail::make_conversation(opt, where);
        c.messages.push_back({"user", detail::alpaca_user_turn(instruction, input)});
        c.messages.push_back({"assistant", output});
        out.push_back(std::move(c));
        return detail::below_limit(out, opt);
    });
    return out;
}

// rulm's seed tasks: {instruction, instances: [{input, output}, ...]}, one conversation per instance.
inline std::vector<conversation> read_seed_tasks(const std::filesystem::path& path, const sft_read_options& opt = {}) {
    std::vector<conversation> out;
    detail::for_each_json_record(path, [&](const nlohmann::ordered_json& r, const std::string& where) {
        const std::string instruction = detail::string_field(r, "instruction", where, true);
        const auto it = r.find("instances");
        check(it != r.end() && it->is_array() && !it->empty(),
              [&] { return where + ": \"instances\" must be a non-empty array of {input, output}"; });
        for (std::size_t k = 0; k < it->size(); ++k) {
            const auto& inst = (*it)[k];
            const std::string at = where + " (instance " + std::to_string(k) + ")";
            check(inst.is_object(), [&] { return at + ": an instance must be an object {input, output}"; });
            conversation c = detail::make_conversation(opt, where);
            c.messages.push_back(
                {"user", detail::alpaca_user_turn(instruction, detail::string_field(inst, "input", at, false))});
            c.messages.push_back({"assistant", detail::string_field(inst, "output", at, true)});
            out.push_back(std::move(c));
            if (!detail::below_limit(out, opt)) return false;
        }
        return true;
    });
    return out;
}

// Chat messages: JSONL of {"messages": [{"role": ..., "content": ...}, ...]} with at least one assistant turn.
inline std::vector<conversation> read_chat_messages(const std::filesystem::path& path,
                                                    const sft_read_options& opt = {}) {
    std::vector<conversation> out;
    detail::for_each_json_record(path, [&](const nlohmann::ordered_json& r, const std::string& where) {
        const auto it = r.find("messages");
        check(it != r.end() && it->is_array() && !it->empty(),
              [&] { return where + ": \"messages\" must be a non-empty array of {role, content}"; });
        conversation c;
        c.source = where;
        bool has_assistant = false;
        for (std::size_t k = 0; k < it->size(); ++k) {
            const auto& m = (*it)[k];
            const std::string at = where + " (message " + std::to_string(k) + ")";
            check(m.is_object(), [&] { return at + ": a message must be an object {role, content}"; });
            const std::string role = detail::string_field(m, "role", at, true);
            check(role == "system" || role == "user" || role == "assistant" || role == "tool",
                  [&] { return at + ": unknown role \"" + role + "\" (expected system, user, assistant or tool)"; });
            has_assistant |= role == "assistant";
            c.messages.push_back({role, detail::string_field(m, "content", at, true)});
        }
        check(has_assistant, [&] { return where + ": the conversation has no assistant message to train on"; });
        if (!opt.system_prompt.empty() && c.messages.front().role != "system")
            c.messages.insert(c.messages.begin(), {"system", opt.system_prompt});
        out.push_back(std::move(c));
        return detail::below_limit(out, opt);
    });
    return out;
}

// Prompt/completion pairs: JSONL of {prompt, completion}.
inline std::vector<conversation> read_prompt_completion(const std::filesystem::path& path,
                                                        const sft_read_options& opt = {}) {
    std::vector<conversation> out;
    detail::for_each_json_record(path, [&](const nlohmann::ordered_json& r, const std::string& where) {
        conversation c = detail::make_conversation(opt, where);
        c.messages.push_back({"user", detail::string_field(r, "prompt", where, true)});
        c.messages.push_back({"assistant", detail::string_field(r, "completion", where, true)});
        out.push_back(std::move(c));
        return detail::below_limit(out, opt);
    });
    return out;
}

// ---- CSV ---------------------------------------------------------------------------------------------------

struct csv_row {
    std::size_t line = 0; // where the row starts
    std::vector<std::string> fields;
};

// RFC 4180: fields separated by `delimiter`, rows by LF or CRLF; a quoted field may hold delimiters, line breaks
// and doubled quotes (""). A quote inside an unquoted field, text after a closing quote and an unterminated quote
// are errors naming file:line. Blank lines are skipped.
inline std::vector<csv_row> parse_csv(std::string_view text, const std::string& file, char delimiter = ',') {
    std::vector<csv_row> rows;
    std::size_t i = 0, line = 1;
    if (text.starts_with("\xEF\xBB\xBF")) i = 3;
    while (i < text.size()) {
        if (text[i] == '\n' || (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) { // blank line
            i += text[i] == '\r' ? 2 : 1;
            ++line;
            continue;
        }
        csv_row row;
        row.line = line;
        for (;;) { // one field
            std::string field;
            if (i < text.size() && text[i] == '"') {
                const std::size_t opened = line;
                ++i;
                for (;;) {
                    check(i < text.size(), [&] {
                        return file + ":" + std::to_string(opened) + ": unterminated quoted field (no closing \")";
                    });
                    if (text[i] == '"') {
                        if (i + 1 < text.size() && text[i + 1] == '"') {
                            field.push_back('"');
                            i += 2;
                            continue;
                        }
                        ++i;
                        break;
                    }
                    line += text[i] == '\n';
                    field.push_back(text[i++]);
                }
                const bool ends = i == text.size() || text[i] == delimiter || text[i] == '\n' ||
                                  (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n');
                check(ends, [&] {
                    return file + ":" + std::to_string(line) + ": unexpected character after a closing quote";
                });
            } else {
                while (i < text.size() && text[i] != delimiter && text[i] != '\n' &&
                       !(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) {
                    check(text[i] != '"', [&] {
                        return file + ":" + std::to_string(line) +
                               ": a quote inside an unquoted field (quote the whole field and double the quote)";
                    });
                    field.push_back(text[i++]);
                }
            }
            row.fields.push_back(std::move(field));
            if (i < text.size() && text[i] == delimiter) {
                ++i;
                continue;
            }
            if (i < text.size()) {
                i += text[i] == '\r' ? 2 : 1;
                ++line;
            }
            break;
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

// Rows of a CSV file with a header: each kept row is one conversation, user = the prompt (or prompt column),
// assistant = the text column; with a rating column, rows rated below min_rating are left out.
inline std::vector<conversation> read_rated_csv(const std::filesystem::path& path, const csv_options& opt = {}) {
    const std::string file = path.string();
    const std::vector<csv_row> rows = parse_csv(detail::read_whole_file(path), file, opt.delimiter);
    check(!rows.empty(), [&] { return file + ": empty CSV file (no header row)"; });
    const std::vector<std::string>& header = rows[0].fields;
    auto column = [&](const std::string& name) {
        for (std::size_t k = 0; k < header.size(); ++k)
            if (header[k] == name) return k;
        std::string names;
        for (const std::string& h : header)
            names += (names.empty() ? "" : ", ") + h;
        fail(file + ":1: no column \"" + name + "\" in the header (it has: " + names + ")");
    };
    const std::size_t text_col = column(opt.text_column);
    const std::size_t prompt_col = opt.prompt_column.empty() ? header.size() : column(opt.prompt_column);
    const std::size_t rating_col = opt.rating_column.empty() ? header.size() : column(opt.rating_column);
    std::vector<conversation> out;
    for (std::size_t r = 1; r < rows.size() && detail::below_limit(out, opt.read); ++r) {
        const csv_row& row = rows[r];
        const std::string where = file + ":" + std::to_string(row.line);
        check(row.fields.size() == header.size(), [&] {
            return where + ": the row has " + std::to_string(row.fields.size()) + " fields, the header " +
                   std::to_string(header.size());
        });
        if (rating_col < header.size()) {
            const std::string& s = row.fields[rating_col];
            double rating = 0;
            const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), rating);
            check(ec == std::errc() && end == s.data() + s.size() && std::isfinite(rating), [&] {
                return where + ": the rating \"" + s + "\" in column \"" + opt.rating_column + "\" is not a number";
            });
            if (rating < opt.min_rating) continue;
        }
        check(!row.fields[text_col].empty(),
              [&] { return where + ": the column \"" + opt.text_column + "\" is empty"; });
        conversation c = detail::make_conversation(opt.read, where);
        c.messages.push_back({"user", prompt_col < header.size() ? row.fields[prompt_col] : opt.prompt});
        c.messages.push_back({"assistant", row.fields[text_col]});
        out.push_back(std::move(c));
    }
    return out;
}

// The SFT assignment's alpaca layout: input = system (when not empty; else read_options::system_prompt when set),
// instruction = user, output = assistant. JSON array or JSONL; a .csv file by its header's column names.
inline std::vector<conversation> read_alpaca_system(const std::filesystem::path& path,
                                                    const sft_read_options& opt = {}) {
    std::vector<conversation> out;
    const auto add = [&](const std::string& instruction, const std::string& input, const std::string& output,
                         const std::string& where) {
        check(!instruction.empty(), [&] { return where + ": the instruction (the user's turn) is empty"; });
        conversation c;
        c.source = where;
        if (!input.empty())
            c.messages.push_back({"system", input});
        else if (!opt.system_prompt.empty())
            c.messages.push_back({"system", opt.system_prompt});
        c.messages.push_back({"user", instruction});
        c.messages.push_back({"assistant", output});
        out.push_back(std::move(c));
        return detail::below_limit(out, opt);
    };
    if (path.extension() == ".csv") {
        const std::string file = path.string();
        const std::vector<csv_row> rows = parse_csv(detail::read_whole_file(path), file);
        check(!rows.empty(), [&] { return file + ": empty CSV file (no header row)"; });
        const std::vector<std::string>& header = rows[0].fields;
        const auto column = [&](const char* name, bool required) {
            for (std::size_t k = 0; k < header.size(); ++k)
                if (header[k] == name) return k;
            check(!required, [&] {
                std::string names;
                for (const std::string& h : header)
                    names += (names.empty() ? "" : ", ") + h;
                return file + ":1: no column \"" + name + "\" in the header (it has: " + names + ")";
            });
            return header.size();
        };
        const std::size_t ci = column("instruction", true), cn = column("input", false), co = column("output", true);
        for (std::size_t r = 1; r < rows.size(); ++r) {
            const csv_row& row = rows[r];
            const std::string where = file + ":" + std::to_string(row.line);
            check(row.fields.size() == header.size(), [&] {
                return where + ": the row has " + std::to_string(row.fields.size()) + " fields, the header " +
                       std::to_string(header.size());
            });
            if (!add(row.fields[ci], cn < header.size() ? row.fields[cn] : std::string(), row.fields[co], where)) break;
        }
        return out;
    }
    detail::for_each_json_record(path, [&](const nlohmann::ordered_json& r, const std::string& where) {
        return add(detail::string_field(r, "instruction", where, true), detail::string_field(r, "input", where, false),
                   detail::string_field(r, "output", where, true), where);
    });
    return out;
}

// ---- any format --------------------------------------------------------------------------------------------

// .csv files are csv; otherwise the first record's fields decide: messages, instances (seed tasks),
// instruction (alpaca), prompt (prompt/completion).
inline sft_format detect_sft_format(const std::filesystem::path& path) {
    if (path.extension() == ".csv") return sft_format::csv;
    sft_format found = sft_format::automatic;
    detail::for_each_json_record(path, [&](const nlohmann::ordered_json& r, const std::string& where) {
        if (r.contains("messages"))
            found = sft_format::messages;
        else if (r.contains("instances"))
            found = sft_format::seed_tasks;
        else if (r.contains("instruction"))
            found = sft_format::alpaca;
        else if (r.contains("prompt"))
            found = sft_format::prompt_completion;
        else
            fail(where + ": cannot tell the SFT format (expected a field messages, instances, instruction or prompt)");
        return false;
    });
    check(found != sft_format::automatic, [&] { return path.string() + ": no records"; });
    return found;
}

inline std::vector<conversation> read_sft(const std::filesystem::path& path, sft_format format = sft_format::automatic,
                                          const sft_read_options& opt = {}) {
    if (format == sft_format::automatic) format = detect_sft_format(path);
    switch (format) {
    case sft_format::alpaca:
        return read_alpaca(path, opt);
    case sft_format::alpaca_system:
        return read_alpaca_system(path, opt);
    case sft_format::seed_tasks:
        return read_seed_tasks(path, opt);
    case sft_format::messages:
        return read_chat_messages(path, opt);
    case sft_format::prompt_completion:
        return read_prompt_completion(path, opt);
    case sft_format::csv: {
        csv_options c;
        c.read = opt;
        return read_rated_csv(path, c);
    }
    case sft_format::automatic:
        break;
    }
    fail(path.string() + ": unknown SFT format");
}

} // namespace tl::data
