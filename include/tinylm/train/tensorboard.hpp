// tinylm/train/tensorboard.hpp: a small TensorBoard event-file writer (scalars and text), no TensorFlow needed.
//
// File format (what TensorBoard's event_file_loader reads):
//   a sequence of TFRecords, each   uint64 length (LE) | uint32 masked_crc32c(length bytes) (LE)
//                                   | data | uint32 masked_crc32c(data) (LE)
//   masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 with c = CRC-32C (Castagnoli) of x.
// Each record's data is a serialized tensorboard.Event protobuf, hand-encoded here:
//   Event          { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary        { repeated Value value = 1; }
//   Summary.Value  { string tag = 1; float simple_value = 2; TensorProto tensor = 8; SummaryMetadata metadata = 9; }
//   SummaryMetadata{ PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; bytes content = 2; }
//   TensorProto    { DataType dtype = 1; TensorShapeProto tensor_shape = 2; repeated bytes string_val = 8; }
//   DataType DT_STRING = 7; a TensorShapeProto without dims is a scalar.
// The first record is Event{wall_time, file_version: "brain.Event:2"}. Scalars are Value{tag, simple_value};
// text is the text plugin's format: Value{tag, metadata{plugin_data{plugin_name: "text"}}, tensor{DT_STRING,
// scalar shape, string_val: markdown}}, rendered as Markdown by TensorBoard. Text that is not valid UTF-8
// (a sample cut inside a character) is written with U+FFFD in place of the bad bytes.
//
// The file is events.out.tfevents.<unix time>.<hostname> in the log directory (".<pid>[.<n>]" is appended
// only if that name is taken). Every record is handed to the kernel as soon as it is written, so a crash or
// SIGKILL loses nothing already logged; flush() also fsyncs. Writing a scalar does not allocate once the
// record buffer has grown to its size.
#pragma once

#include <tinylm/core/crc32c.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/core/utf8.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <unistd.h>

namespace tl {

// The TFRecord checksum: the CRC rotated right by 15 bits plus a constant, so that a CRC of data that
// itself contains CRCs stays well distributed.
inline std::uint32_t masked_crc32c(const void* data, std::size_t n) {
    const std::uint32_t c = crc32c(data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}
inline std::uint32_t masked_crc32c(std::string_view s) { return masked_crc32c(s.data(), s.size()); }

// ---- UTF-8 ------------------------------------------------------------------------------------------------
// Samples from a byte-level model can end inside a character; TensorBoard (and Markdown viewers) need valid
// UTF-8. Length of the valid sequence starting at s[i], or 0 if it is invalid (overlong, surrogate, too large,
// truncated).
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) { return utf8::sequence_length(s, i); }

inline bool is_valid_utf8(std::string_view s) { return utf8::is_valid(s); }

// `s` with every invalid byte replaced by U+FFFD and NUL bytes dropped.
inline std::string to_valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 8);
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence_length(s, i);
        if (n == 0)
            out += "\xEF\xBF\xBD";
        else if (s[i] != '\0')
            out.append(s.substr(i, n));
        i += n ? n : 1;
    }
    return out;
}

// ---- protobuf wire-format encoding (only what the event writer needs) ----------------------------------
namespace protobuf {

enum class wire : std::uint32_t { varint = 0, fixed64 = 1, length_delimited = 2, fixed32 = 5 };

constexpr std::size_t varint_size(std::uint64_t v) {
    std::size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        ++n;
    return n;
}
// Size of a length-delimited field (key, length, payload); field numbers here are all < 16 (one-byte keys).
constexpr std::size_t bytes_field_size(std::size_t payload) { return 1 + varint_size(payload) + payload; }

inline void put_varint(std::string& out, std::uint64_t v) {
    for (; v >= 0x80; v >>= 7)
        out.push_back(char((v & 0x7f) | 0x80));
    out.push_back(char(v));
}
inline void put_key(std::string& out, std::uint32_t field, wire type) {
    put_varint(out, (std::uint64_t(field) << 3) | std::uint32_t(type));
}
inline void put_le(std::string& out, std::uint64_t bits, int n_bytes) {
    for (int i = 0; i < n_bytes; ++i)
        out.push_back(char((bits >> (8 * i)) & 0xff));
}
inline void put_double(std::string& out, std::uint32_t field, double v) {
    std::uint64_t bits;
    std::memcpy(&bits, &v, 8);
    put_key(out, field, wire::fixed64);
    put_le(out, bits, 8);
}
inline void put_float(std::string& out, std::uint32_t field, float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put_key(out, field, wire::fixed32);
    put_le(out, bits, 4);
}
// int64 and enums: two's complement as a varint (negative numbers take 10 bytes, as protobuf specifies).
inline void put_int64(std::string& out, std::uint32_t field, std::int64_t v) {
    put_key(out, field, wire::varint);
    put_varint(out, std::uint64_t(v));
}
// The key and length of a length-delimited field; the caller appends `length` payload bytes next.
inline void put_length(std::string& out, std::uint32_t field, std::size_t length) {
    put_key(out, field, wire::length_delimited);
    put_varint(out, length);
}
inline void put_bytes(std::string& out, std::uint32_t field, std::string_view bytes) {
    put_length(out, field, bytes.size());
    out.append(bytes);
}

} // namespace protobuf

// ---- TFRecord framing -----------------------------------------------------------------------------------

// Appends one TFRecord holding `data` to `out`.
inline void append_tfrecord(std::string& out, std::string_view data) {
    unsigned char len[8];
    const std::uint64_t n = data.size();
    for (int i = 0; i < 8; ++i)
        len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    const std::uint32_t len_crc = masked_crc32c(len, 8);
    const std::uint32_t data_crc = masked_crc32c(data);
    out.append(reinterpret_cast<const char*>(len), 8);
    protobuf::put_le(out, len_crc, 4);
    out.append(data);
    protobuf::put_le(out, data_crc, 4);
}

// ---- the writer -------------------------------------------------------------------------------------------

class tensorboard_writer {
public:
    // Creates `log_dir` if needed and a new event file in it, starting with the file_version record.
    explicit tensorboard_writer(const std::filesystem::path& log_dir) {
        std::error_code ec;
        std::filesystem::create_directories(log_dir, ec);
        check(!ec && std::filesystem::is_directory(log_dir),
              [&] { return "tensorboard: cannot create the log directory " + log_dir.string() + ": " + ec.message(); });
        const auto now = unix_time();
        const std::string base = "events.out.tfevents." + std::to_string(std::int64_t(now)) + "." + host_name();
        path_ = log_dir / base;
        for (int n = 0; std::filesystem::exists(path_); ++n)
            path_ = log_dir / (base + "." + std::to_string(::getpid()) + (n ? "." + std::to_string(n) : ""));
        file_ = std::fopen(path_.c_str(), "wbx"); // x: never reuse a file another writer created meanwhile
        check(file_ != nullptr, [&] {
            return "tensorboard: cannot create the event file " + path_.string() + ": " + std::strerror(errno);
        });
        event_.reserve(256);
        record_.reserve(256);
        event_.clear();
        protobuf::put_double(event_, 1, now);
        protobuf::put_bytes(event_, 3, "brain.Event:2");
        write_event();
    }

    tensorboard_writer(const tensorboard_writer&) = delete;
    tensorboard_writer& operator=(const tensorboard_writer&) = delete;
    tensorboard_writer(tensorboard_writer&& other) noexcept
        : path_(std::move(other.path_)), file_(other.file_), event_(std::move(other.event_)),
          record_(std::move(other.record_)) {
        other.file_ = nullptr;
    }
    tensorboard_writer& operator=(tensorboard_writer&&) = delete;
    ~tensorboard_writer() {
        if (file_) std::fclose(file_);
    }

    // A scalar (stored as float32, as TensorBoard does) at `step`; wall time is now unless given.
    void scalar(std::string_view tag, double value, std::int64_t step) { scalar(tag, value, step, unix_time()); }
    void scalar(std::string_view tag, double value, std::int64_t step, double wall_time) {
        check_tag(tag);
        using namespace protobuf;
        const std::size_t value_size = bytes_field_size(tag.size()) + 1 + 4; // tag, simple_value
        const std::size_t summary_size = bytes_field_size(value_size);
        event_.clear();
        put_double(event_, 1, wall_time);
        put_int64(event_, 2, step);
        put_length(event_, 5, summary_size); // Event.summary
        put_length(event_, 1, value_size);   // Summary.value
        put_bytes(event_, 1, tag);           // Value.tag
        put_float(event_, 2, float(value));  // Value.simple_value
        write_event();
    }

    // Text (Markdown) for the text plugin at `step`; wall time is now unless given.
    void text(std::string_view tag, std::string_view markdown, std::int64_t step) {
        text(tag, markdown, step, unix_time());
    }
    void text(std::string_view tag, std::string_view markdown, std::int64_t step, double wall_time) {
        check_tag(tag);
        if (!is_valid_utf8(markdown) || markdown.find('\0') != std::string_view::npos) {
            const std::string repaired = to_valid_utf8(markdown);
            text(tag, repaired, step, wall_time);
            return;
        }
        using namespace protobuf;
        constexpr std::string_view plugin = "text";
        constexpr std::uint64_t dt_string = 7;
        const std::size_t plugin_data_size = bytes_field_size(plugin.size()); // content left empty: version 0
        const std::size_t metadata_size = bytes_field_size(plugin_data_size);
        const std::size_t tensor_size = 1 + varint_size(dt_string)           // dtype
                                        + bytes_field_size(0)                // tensor_shape: no dims, a scalar
                                        + bytes_field_size(markdown.size()); // string_val
        const std::size_t value_size =
            bytes_field_size(tag.size()) + bytes_field_size(tensor_size) + bytes_field_size(metadata_size);
        const std::size_t summary_size = bytes_field_size(value_size);
        event_.clear();
        put_double(event_, 1, wall_time);
        put_int64(event_, 2, step);
        put_length(event_, 5, summary_size);     // Event.summary
        put_length(event_, 1, value_size);       // Summary.value
        put_bytes(event_, 1, tag);               // Value.tag
        put_length(event_, 8, tensor_size);      // Value.tensor
        put_int64(event_, 1, dt_string);         //   TensorProto.dtype = DT_STRING
        put_length(event_, 2, 0);                //   TensorProto.tensor_shape = {}
        put_bytes(event_, 8, markdown);          //   TensorProto.string_val
        put_length(event_, 9, metadata_size);    // Value.metadata
        put_length(event_, 1, plugin_data_size); //   SummaryMetadata.plugin_data
        put_bytes(event_, 1, plugin);            //     PluginData.plugin_name
        write_event();
    }

    // Every record already reached the kernel; this also asks it to put the file on disk.
    void flush() {
        if (!file_) return;
        check(std::fflush(file_) == 0, [&] { return "tensorboard: cannot flush " + path_.string(); });
        ::fsync(::fileno(file_));
    }

    const std::filesystem::path& path() const { return path_; }

    static double unix_time() {
        return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    }

private:
    static std::string host_name() {
        char buf[256] = {};
        if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
        std::string name(buf);
        for (char& c : name)
            if (c == '/') c = '_';
        return name;
    }

    void check_tag(std::string_view tag) const {
        check(!tag.empty() && is_valid_utf8(tag), [&] {
            return "tensorboard: the tag \"" + to_valid_utf8(tag) + "\" for " + path_.string() +
                   " is empty or not valid UTF-8";
        });
        check(file_ != nullptr, "tensorboard: the writer was moved from");
    }

    void write_event() {
        record_.clear();
        append_tfrecord(record_, event_);
        const bool ok = std::fwrite(record_.data(), 1, record_.size(), file_) == record_.size();
        check(ok && std::fflush(file_) == 0,
              [&] { return "tensorboard: cannot write to " + path_.string() + ": " + std::strerror(errno); });
    }

    std::filesystem::path path_;
    std::FILE* file_ = nullptr;
    std::string event_;  // the serialized Event
    std::string record_; // the framed record
};

} // namespace tl
