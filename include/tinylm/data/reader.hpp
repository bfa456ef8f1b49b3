// tinylm/data/reader.hpp: streaming readers for text files and folders, JSONL and CSV columns.
//
// Every reader yields `record`s (a piece of text, the document it belongs to and where it came from) one at a
// time, reading its input in 1 MiB blocks, so memory stays bounded on multi-GB inputs: the largest record is
// capped (`max_record_bytes`, split at line boundaries). All bytes go through repair_utf8 and the counts of
// what was repaired are kept in `repairs()`. Malformed JSONL lines and short CSV rows are skipped and counted
// (with the first few examples in `problems()`), never thrown, unless `strict` is set.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/utf8.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tl::data {

struct record {
    std::string source;    // file (and line for JSONL/CSV)
    std::uint64_t doc = 0; // document index: a file for text, a row for JSONL/CSV
    std::string text;      // repaired UTF-8; paragraphs of text files keep their inner line breaks
};

// Lines of one file, repaired, without their line ends; CRLF is counted.
class line_stream {
public:
    explicit line_stream(const std::filesystem::path& path, std::size_t max_line_bytes = 1 << 20)
        : path_(path), max_line_(max_line_bytes) {
        file_ = std::fopen(path.c_str(), "rb");
        check(file_ != nullptr, [&] { return path.string() + ": cannot open for reading"; });
        buf_.resize(1 << 20);
    }
    ~line_stream() {
        if (file_) std::fclose(file_);
    }
    line_stream(const line_stream&) = delete;
    line_stream& operator=(const line_stream&) = delete;

    // Reads the next line into `line` (repaired). Returns false at the end of the file.
    bool next(std::string& line) {
        raw_.swap(rest_);
        rest_.clear();
        for (;;) {
            if (raw_.size() > max_line_) { // cut an over-long line where no UTF-8 sequence is split
                std::size_t cut = max_line_;
                while (cut > 0 && (static_cast<unsigned char>(raw_[cut]) & 0xC0) == 0x80)
                    --cut;
                if (cut == 0) cut = max_line_;
                rest_.assign(raw_, cut);
                raw_.resize(cut);
                line.clear();
                repair_utf8(raw_, line, counts_);
                raw_.clear();
                return true;
            }
            if (pos_ == len_) {
                if (eof_) break;
                len_ = std::fread(buf_.data(), 1, buf_.size(), file_);
                pos_ = 0;
                if (len_ == 0) {
                    check(!std::ferror(file_), [&] { return path_.string() + ": read error"; });
                    eof_ = true;
                    break;
                }
            }
            const char* start = buf_.data() + pos_;
            // a line end within max_line_ bytes ends the line; otherwise take one byte more than fits, so the
            // cut above can see whether it would split a UTF-8 sequence
            const std::size_t room = max_line_ + 1 - raw_.size();
            const auto* nl = static_cast<const char*>(std::memchr(start, '\n', std::min(len_ - pos_, room)));
            const std::size_t take = nl ? std::size_t(nl - start) : std::min(len_ - pos_, room);
            raw_.append(start, take);
            pos_ += take;
            if (nl) {
                ++pos_;
                ++line_no_;
                return finish(line, true);
            }
        }
        if (raw_.empty()) return false;
        ++line_no_;
        return finish(line, false);
    }

    const repair_counts& repairs() const { return counts_; }
    std::uint64_t line_number() const { return line_no_; }
    const std::filesystem::path& path() const { return path_; }

private:
    bool finish(std::string& line, bool had_newline) {
        if (had_newline) counts_.bytes += 1;
        if (!raw_.empty() && raw_.back() == '\r') {
            raw_.pop_back();
            ++counts_.crlf;
            counts_.bytes += 1;
        }
        line.clear();
        repair_utf8(raw_, line, counts_);
        raw_.clear();
        return true;
    }

    std::filesystem::path path_;
    std::size_t max_line_;
    std::FILE* file_ = nullptr;
    std::vector<char> buf_;
    std::size_t pos_ = 0, len_ = 0;
    bool eof_ = false;
    std::string raw_, rest_;
    std::uint64_t line_no_ = 0;
    repair_counts counts_;
};

// A problem a reader skipped over (malformed JSONL line, short CSV row, ...).
struct read_problems {
    std::uint64_t count = 0;
    std::vector<std::string> examples; // the first few, "file:line: what"
    void add(std::string what) {
        ++count;
        if (examples.size() < 5) examples.push_back(std::move(what));
    }
};

class reader {
public:
    virtual ~reader() = default;
    virtual bool next(record& r) = 0;
    const repair_counts& repairs() const { return repairs_; }
    const read_problems& problems() const { return problems_; }
    std::uint64_t files() const { return files_; }

protected:
    repair_counts repairs_;
    read_problems problems_;
    std::uint64_t files_ = 0;
};

// Records from memory: text i is document i (tests, and texts produced by a program).
class vector_reader : public reader {
public:
    explicit vector_reader(std::vector<std::string> texts, std::string source = "memory")
        : texts_(std::move(texts)), source_(std::move(source)) {}
    bool next(record& r) override {
        if (i_ == texts_.size()) return false;
        r.text.clear();
        repair_utf8(texts_[i_], r.text, repairs_);
        r.source = source_ + ":" + std::to_string(i_ + 1);
        r.doc = i_++;
        return true;
    }

private:
    std::vector<std::string> texts_;
    std::string source_;
    std::size_t i_ = 0;
};

// Files given directly, and every regular file under given folders (recursively, sorted by path).
inline std::vector<std::filesystem::path> list_files(const std::vector<std::filesystem::path>& inputs,
                                                     const std::vector<std::string>& extensions = {}) {
    std::vector<std::filesystem::path> out;
    for (const auto& p : inputs) {
        check(std::filesystem::exists(p), [&] { return p.string() + ": no such file or folder"; });
        if (std::filesystem::is_directory(p)) {
            std::vector<std::filesystem::path> found;
            for (const auto& e : std::filesystem::recursive_directory_iterator(p)) {
                if (!e.is_regular_file()) continue;
                if (!extensions.empty() &&
                    std::find(extensions.begin(), extensions.end(), e.path().extension().string()) == extensions.end())
                    continue;
                found.push_back(e.path());
            }
            std::sort(found.begin(), found.end());
            out.insert(out.end(), found.begin(), found.end());
        } else {
            out.push_back(p);
        }
    }
    return out;
}

// How a text file is cut into paragraphs.
enum class paragraph_mode {
    automatic,  // chosen per file from its first 512 lines (see text_reader)
    line,       // every non-blank line is a paragraph
    blank_line, // paragraphs are separated by blank lines
    indent,     // blank lines, and a line starting with a space, tab or dash starts a new paragraph
};

inline const char* to_string(paragraph_mode m) {
    switch (m) {
    case paragraph_mode::automatic:
        return "automatic";
    case paragraph_mode::line:
        return "line";
    case paragraph_mode::blank_line:
        return "blank_line";
    case paragraph_mode::indent:
        return "indent";
    }
    return "?";
}

struct text_reader_options {
    paragraph_mode mode = paragraph_mode::automatic;
    std::size_t max_record_bytes = 64 << 10;  // a longer paragraph is cut at a line boundary
    std::vector<std::string> extensions = {}; // e.g. {".txt"}; empty: every file
};

// Plain text files and folders; one document per file, one record per paragraph.
class text_reader : public reader {
public:
    explicit text_reader(std::vector<std::filesystem::path> inputs, text_reader_options options = {})
        : opt_(std::move(options)), paths_(list_files(inputs, opt_.extensions)) {}

    bool next(record& r) override {
        for (;;) {
            if (!stream_) {
                if (file_index_ == paths_.size()) return false;
                open(paths_[file_index_]);
            }
            if (assemble(r)) return true;
            repairs_ += stream_->repairs();
            stream_.reset();
            ++file_index_;
        }
    }

    // The paragraph mode used for each file opened so far.
    const std::vector<std::pair<std::string, paragraph_mode>>& modes() const { return modes_; }
    const std::vector<std::filesystem::path>& paths() const { return paths_; }

private:
    static bool blank(const std::string& s) {
        return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n'; });
    }
    static bool starts_indented(const std::string& s) {
        if (s.empty()) return false;
        if (s[0] == ' ' || s[0] == '\t' || s[0] == '-') return true;
        return s.rfind("\u2014", 0) == 0 || s.rfind("\u2013", 0) == 0; // em or en dash
    }

    void open(const std::filesystem::path& p) {
        stream_ = std::make_unique<line_stream>(p, opt_.max_record_bytes);
        ++files_;
        pending_.clear();
        mode_ = opt_.mode;
        if (mode_ == paragraph_mode::automatic) {
            std::string line;
            std::size_t n_blank = 0, n_long = 0, n_text = 0;
            while (pending_.size() < 512 && stream_->next(line)) {
                if (blank(line))
                    ++n_blank;
                else {
                    ++n_text;
                    n_long += line.size() > 200;
                }
                pending_.push_back(line);
            }
            // Hard-wrapped text has few lines over 200 bytes; text with a paragraph per line has many.
            if (n_text > 0 && double(n_long) > 0.3 * double(n_text))
                mode_ = paragraph_mode::line;
            else if (double(n_blank) > 0.25 * double(pending_.size()))
                mode_ = paragraph_mode::blank_line;
            else
                mode_ = paragraph_mode::indent;
        }
        modes_.emplace_back(p.string(), mode_);
        doc_ = file_index_;
    }

    bool read_line(std::string& line) {
        if (!pending_.empty()) {
            line = std::move(pending_.front());
            pending_.pop_front();
            return true;
        }
        return stream_->next(line);
    }

    bool assemble(record& r) {
        r.text.clear();
        r.doc = doc_;
        r.source = paths_[file_index_].string();
        std::string line;
        if (held_) {
            r.text = std::move(held_line_);
            held_ = false;
        }
        while (read_line(line)) {
            if (blank(line)) {
                if (!r.text.empty()) return true;
                continue;
            }
            if (mode_ == paragraph_mode::line) {
                r.text = std::move(line);
                return true;
            }
            if (!r.text.empty() && ((mode_ == paragraph_mode::indent && starts_indented(line)) ||
                                    r.text.size() + 1 + line.size() > opt_.max_record_bytes)) {
                held_line_ = std::move(line);
                held_ = true;
                return true;
            }
            if (!r.text.empty()) r.text.push_back('\n');
            r.text += line;
        }
        return !r.text.empty();
    }

    text_reader_options opt_;
    std::vector<std::filesystem::path> paths_;
    std::size_t file_index_ = 0;
    std::unique_ptr<line_stream> stream_;
    std::deque<std::string> pending_;
    paragraph_mode mode_ = paragraph_mode::line;
    std::uint64_t doc_ = 0;
    bool held_ = false;
    std::string held_line_;
    std::vector<std::pair<std::string, paragraph_mode>> modes_;
};

// One string field of every line of JSON Lines files ("text", or a path "a.b" into nested objects).
class jsonl_reader : public reader {
public:
    // `doc_field`: a top-level field (number or string) whose value groups consecutive lines into one
    // document; empty: every line is its own document.
    jsonl_reader(std::vector<std::filesystem::path> inputs, std::string field, bool strict = false,
                 std::string doc_field = {})
        : paths_(list_files(inputs)), strict_(strict), doc_field_(std::move(doc_field)) {
        std::size_t start = 0;
        for (;;) {
            const auto dot = field.find('.', start);
            keys_.push_back(field.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
            if (dot == std::string::npos) break;
            start = dot + 1;
        }
    }

    bool next(record& r) override {
        std::string line;
        for (;;) {
            if (!stream_) {
                if (file_index_ == paths_.size()) return false;
                stream_ = std::make_unique<line_stream>(paths_[file_index_], std::size_t(1) << 30);
                ++files_;
            }
            if (!stream_->next(line)) {
                repairs_ += stream_->repairs();
                stream_.reset();
                ++file_index_;
                continue;
            }
            if (line.find_first_not_of(" \t") == std::string::npos) continue;
            const std::string where = paths_[file_index_].string() + ":" + std::to_string(stream_->line_number());
            nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_discarded()) {
                problem(where + ": not valid JSON");
                continue;
            }
            const nlohmann::json* v = &j;
            for (const auto& k : keys_) {
                if (!v->is_object() || !v->contains(k)) {
                    v = nullptr;
                    break;
                }
                v = &(*v)[k];
            }
            if (!v || !v->is_string()) {
                problem(where + ": no string field '" + join_keys() + "'");
                continue;
            }
            r.text.clear();
            repair_utf8(v->get_ref<const std::string&>(), r.text, repairs_); // escapes can hold controls
            r.source = where;
            r.doc = doc_++;
            if (!doc_field_.empty() && j.contains(doc_field_)) {
                const auto& d = j[doc_field_];
                if (d.is_number_unsigned())
                    r.doc = d.get<std::uint64_t>();
                else if (d.is_string())
                    r.doc = std::hash<std::string>{}(d.get<std::string>());
            }
            return true;
        }
    }

private:
    void problem(std::string what) {
        check(!strict_, what);
        problems_.add(std::move(what));
    }
    std::string join_keys() const {
        std::string s;
        for (const auto& k : keys_)
            s += (s.empty() ? "" : ".") + k;
        return s;
    }
    std::vector<std::filesystem::path> paths_;
    bool strict_;
    std::string doc_field_;
    std::vector<std::string> keys_;
    std::size_t file_index_ = 0;
    std::unique_ptr<line_stream> stream_;
    std::uint64_t doc_ = 0;
};

// One column of CSV files (RFC 4180: quoted fields, "" inside quotes, line breaks inside quotes). The column
// is named (matched against the header row) or numbered from 0 when `column` is all digits.
class csv_reader : public reader {
public:
    csv_reader(std::vector<std::filesystem::path> inputs, std::string column, char delimiter = ',', bool strict = false)
        : paths_(list_files(inputs)), column_(std::move(column)), delim_(delimiter), strict_(strict) {}

    bool next(record& r) override {
        std::vector<std::string> row;
        for (;;) {
            if (!stream_) {
                if (file_index_ == paths_.size()) return false;
                stream_ = std::make_unique<line_stream>(paths_[file_index_], std::size_t(1) << 30);
                ++files_;
                index_.reset();
                if (!column_.empty() &&
                    std::all_of(column_.begin(), column_.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
                    index_ = std::stoul(column_);
                else {
                    std::vector<std::string> header;
                    if (read_row(header)) {
                        const auto it = std::find(header.begin(), header.end(), column_);
                        check(it != header.end(), [&] {
                            return paths_[file_index_].string() + ": no column '" + column_ + "' in the header";
                        });
                        index_ = std::size_t(it - header.begin());
                    }
                }
            }
            const std::uint64_t line = stream_->line_number() + 1;
            if (!index_ || !read_row(row)) {
                repairs_ += stream_->repairs();
                stream_.reset();
                ++file_index_;
                continue;
            }
            const std::string where = paths_[file_index_].string() + ":" + std::to_string(line);
            if (row.size() == 1 && row[0].empty()) continue; // empty line
            if (*index_ >= row.size()) {
                const std::string what = where + ": row has " + std::to_string(row.size()) + " fields, column " +
                                         std::to_string(*index_) + " is missing";
                check(!strict_, what);
                problems_.add(what);
                continue;
            }
            r.text = std::move(row[*index_]);
            r.source = where;
            r.doc = doc_++;
            return true;
        }
    }

private:
    // Reads one CSV row, continuing over line breaks inside quotes. False at the end of the file.
    bool read_row(std::vector<std::string>& row) {
        row.clear();
        std::string line;
        if (!stream_->next(line)) return false;
        std::string field;
        bool quoted = false;
        for (;;) {
            for (std::size_t i = 0; i < line.size(); ++i) {
                const char c = line[i];
                if (quoted) {
                    if (c == '"') {
                        if (i + 1 < line.size() && line[i + 1] == '"')
                            field.push_back('"'), ++i;
                        else
                            quoted = false;
                    } else
                        field.push_back(c);
                } else if (c == '"')
                    quoted = true;
                else if (c == delim_)
                    row.push_back(std::move(field)), field.clear();
                else
                    field.push_back(c);
            }
            if (!quoted) break;
            if (!stream_->next(line)) { // unterminated quote at end of file
                problems_.add(paths_[file_index_].string() + ": unterminated quoted field at end of file");
                break;
            }
            field.push_back('\n');
        }
        row.push_back(std::move(field));
        return true;
    }

    std::vector<std::filesystem::path> paths_;
    std::string column_;
    char delim_;
    bool strict_;
    std::size_t file_index_ = 0;
    std::unique_ptr<line_stream> stream_;
    std::optional<std::size_t> index_;
    std::uint64_t doc_ = 0;
};

} // namespace tl::data
