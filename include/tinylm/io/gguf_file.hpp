// tinylm/io/gguf_file.hpp: the GGUF container (version 3, as llama.cpp and the `gguf` Python package read it),
// with no knowledge of models: io/gguf.hpp maps a tinylm decoder onto it.
//
//   header    "GGUF", version u32, tensor count u64, metadata count u64           (all little-endian)
//   metadata  key (u64 length + bytes), value type u32, value; arrays: element type u32, count u64, elements
//   tensors   name, n_dims u32, dims u64[n_dims] (fastest-varying first), ggml type u32, offset u64
//   data      from the first multiple of general.alignment after the header; each tensor at an aligned offset
//
//   tl::gguf::writer w;
//   w.add("general.architecture", tl::gguf::value::str("llama"));
//   w.add_tensor("token_embd.weight", {d_model, vocab}, tl::gguf::ggml_type::f16, fill /* writes f32 values */);
//   w.save("model.gguf");                       // to "model.gguf.tmp", renamed into place when complete
//
//   tl::gguf::reader r("model.gguf");           // metadata and tensor table; tensor data read on demand
//   r.at("llama.block_count").as_uint();  r.tensor("token_embd.weight").dims;  r.read_f32("token_embd.weight");
//
// The reader checks what a hostile file could get wrong (magic, version, lengths and counts against the file
// size, unknown types, tensors outside the data or overlapping its end) and names the file and the field.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/io/gguf_quants.hpp>
#include <tinylm/io/gguf_types.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tl::gguf {

namespace fs = std::filesystem;

inline constexpr std::uint32_t version = 3;
inline constexpr std::uint32_t default_alignment = 32;

enum class value_type : std::uint32_t {
    u8 = 0,
    i8 = 1,
    u16 = 2,
    i16 = 3,
    u32 = 4,
    i32 = 5,
    f32 = 6,
    boolean = 7,
    string = 8,
    array = 9,
    u64 = 10,
    i64 = 11,
    f64 = 12,
};

// A metadata value: a scalar, a string, or an array of one element type.
struct value {
    value_type type = value_type::u32;
    value_type elem = value_type::u8; // arrays: the element type
    std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::vector<std::string>,
                 std::vector<std::int64_t>, std::vector<double>>
        data;
    std::string where{}; // read from a file: "gguf: FILE: KEY", so that a value of the wrong type names both

    static value u32(std::uint32_t v) { return {value_type::u32, value_type::u8, std::uint64_t(v)}; }
    static value u64(std::uint64_t v) { return {value_type::u64, value_type::u8, v}; }
    static value i32(std::int32_t v) { return {value_type::i32, value_type::u8, std::int64_t(v)}; }
    static value f32(double v) { return {value_type::f32, value_type::u8, double(float(v))}; }
    static value boolean(bool v) { return {value_type::boolean, value_type::u8, v}; }
    static value str(std::string v) { return {value_type::string, value_type::u8, std::move(v)}; }
    static value strings(std::vector<std::string> v) { return {value_type::array, value_type::string, std::move(v)}; }
    static value i32s(std::vector<std::int64_t> v) { return {value_type::array, value_type::i32, std::move(v)}; }
    static value f32s(std::vector<double> v) { return {value_type::array, value_type::f32, std::move(v)}; }

    bool is_array() const { return type == value_type::array; }
    std::uint64_t as_uint() const { return get<std::uint64_t>("an unsigned integer"); }
    std::int64_t as_int() const { return get<std::int64_t>("a signed integer"); }
    double as_float() const { return get<double>("a float"); }
    bool as_bool() const { return get<bool>("a bool"); }
    const std::string& as_string() const { return get<std::string>("a string"); }
    const std::vector<std::string>& strings() const { return get<std::vector<std::string>>("an array of strings"); }
    const std::vector<std::int64_t>& ints() const { return get<std::vector<std::int64_t>>("an array of integers"); }
    const std::vector<double>& floats() const { return get<std::vector<double>>("an array of floats"); }

private:
    template <class T>
    const T& get(const char* want) const {
        const T* p = std::get_if<T>(&data);
        check(p != nullptr, [&] {
            std::string m = where.empty() ? std::string("gguf: metadata value") : where;
            m += " has value type ";
            m += std::to_string(static_cast<std::uint32_t>(type));
            m += ", not ";
            m += want;
            return m;
        });
        return *p;
    }
};

namespace detail {
enum class kind { unsigned_int, signed_int, floating, boolean, string };
inline bool scalar_kind(value_type t, kind& k, int& bytes) {
    switch (t) {
    case value_type::u8:
        k = kind::unsigned_int, bytes = 1;
        return true;
    case value_type::i8:
        k = kind::signed_int, bytes = 1;
        return true;
    case value_type::u16:
        k = kind::unsigned_int, bytes = 2;
        return true;
    case value_type::i16:
        k = kind::signed_int, bytes = 2;
        return true;
    case value_type::u32:
        k = kind::unsigned_int, bytes = 4;
        return true;
    case value_type::i32:
        k = kind::signed_int, bytes = 4;
        return true;
    case value_type::f32:
        k = kind::floating, bytes = 4;
        return true;
    case value_type::boolean:
        k = kind::boolean, bytes = 1;
        return true;
    case value_type::string:
        k = kind::string, bytes = 0;
        return true;
    case value_type::u64:
        k = kind::unsigned_int, bytes = 8;
        return true;
    case value_type::i64:
        k = kind::signed_int, bytes = 8;
        return true;
    case value_type::f64:
        k = kind::floating, bytes = 8;
        return true;
    case value_type::array:
        return false;
    }
    return false;
}

class byte_sink {
public:
    std::string bytes;
    template <class T>
    void put(T v) {
        char b[sizeof(T)];
        std::memcpy(b, &v, sizeof(T)); // little-endian hosts only (x86-64, aarch64)
        bytes.append(b, sizeof(T));
    }
    void put_string(std::string_view s) {
        put<std::uint64_t>(s.size());
        bytes.append(s);
    }
    // One element of a scalar type from its stored form.
    void put_scalar(value_type t, std::uint64_t u, std::int64_t i, double f, bool b) {
        switch (t) {
        case value_type::u8:
            put<std::uint8_t>(static_cast<std::uint8_t>(u));
            break;
        case value_type::i8:
            put<std::int8_t>(static_cast<std::int8_t>(i));
            break;
        case value_type::u16:
            put<std::uint16_t>(static_cast<std::uint16_t>(u));
            break;
        case value_type::i16:
            put<std::int16_t>(static_cast<std::int16_t>(i));
            break;
        case value_type::u32:
            put<std::uint32_t>(static_cast<std::uint32_t>(u));
            break;
        case value_type::i32:
            put<std::int32_t>(static_cast<std::int32_t>(i));
            break;
        case value_type::f32:
            put<float>(static_cast<float>(f));
            break;
        case value_type::boolean:
            put<std::uint8_t>(b ? 1 : 0);
            break;
        case value_type::u64:
            put<std::uint64_t>(u);
            break;
        case value_type::i64:
            put<std::int64_t>(i);
            break;
        case value_type::f64:
            put<double>(f);
            break;
        default:
            fail("gguf: not a scalar type");
        }
    }
    void put_value(const value& v) {
        put<std::uint32_t>(static_cast<std::uint32_t>(v.type));
        if (v.type == value_type::string) return put_string(std::get<std::string>(v.data));
        if (v.type != value_type::array) {
            const auto* u = std::get_if<std::uint64_t>(&v.data);
            const auto* i = std::get_if<std::int64_t>(&v.data);
            const auto* f = std::get_if<double>(&v.data);
            const auto* b = std::get_if<bool>(&v.data);
            return put_scalar(v.type, u ? *u : 0, i ? *i : 0, f ? *f : 0, b && *b);
        }
        put<std::uint32_t>(static_cast<std::uint32_t>(v.elem));
        if (const auto* s = std::get_if<std::vector<std::string>>(&v.data)) {
            put<std::uint64_t>(s->size());
            for (const auto& x : *s)
                put_string(x);
        } else if (const auto* is = std::get_if<std::vector<std::int64_t>>(&v.data)) {
            put<std::uint64_t>(is->size());
            for (std::int64_t x : *is)
                put_scalar(v.elem, static_cast<std::uint64_t>(x), x, 0, x != 0);
        } else if (const auto* fs = std::get_if<std::vector<double>>(&v.data)) {
            put<std::uint64_t>(fs->size());
            for (double x : *fs)
                put_scalar(v.elem, 0, 0, x, false);
        } else {
            fail("gguf: array value without elements");
        }
    }
};

inline std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }
} // namespace detail

// Writes a GGUF file: metadata in the order added, then tensors, each produced when its turn comes so that
// only one tensor's values are in memory at a time.
class writer {
public:
    // Fills the tensor's values as f32 in GGUF order (dims[0] fastest); the writer encodes them.
    using fill_fn = std::function<void(std::span<float>)>;

    void add(std::string key, value v) {
        for (const auto& [k, _] : kv_)
            check(k != key, [&] { return "gguf: metadata key " + key + " added twice"; });
        kv_.emplace_back(std::move(key), std::move(v));
    }
    void add_tensor(std::string name, std::vector<std::uint64_t> dims, ggml_type type, fill_fn fill) {
        check(!dims.empty() && dims.size() <= 4, [&] { return "gguf: tensor " + name + " needs 1 to 4 dimensions"; });
        std::uint64_t n = 1;
        for (auto d : dims)
            n *= d;
        check(type == ggml_type::f32 || type == ggml_type::f16 || type == ggml_type::q8_0 || type == ggml_type::q4_0,
              [&] { return "gguf: tensor " + name + ": " + type_name(type) + " is read, not written"; });
        check(type == ggml_type::f32 || type == ggml_type::f16 || dims[0] % quant_block == 0, [&] {
            return "gguf: tensor " + name + " has " + std::to_string(dims[0]) + " values per row, not a multiple of " +
                   "32 as " + type_name(type) + " needs";
        });
        for (const auto& t : tensors_)
            check(t.name != name, [&] { return "gguf: tensor " + name + " added twice"; });
        tensors_.push_back({std::move(name), std::move(dims), type, n, std::move(fill)});
    }
    std::uint32_t alignment() const { return alignment_; }

    // Writes `path` through "<path>.tmp", renamed into place once complete.
    void save(const fs::path& path) const {
        detail::byte_sink head;
        head.bytes.append("GGUF", 4);
        head.put<std::uint32_t>(version);
        head.put<std::uint64_t>(tensors_.size());
        head.put<std::uint64_t>(kv_.size());
        for (const auto& [k, v] : kv_) {
            head.put_string(k);
            head.put_value(v);
        }
        std::uint64_t offset = 0;
        for (const auto& t : tensors_) {
            head.put_string(t.name);
            head.put<std::uint32_t>(static_cast<std::uint32_t>(t.dims.size()));
            for (auto d : t.dims)
                head.put<std::uint64_t>(d);
            head.put<std::uint32_t>(static_cast<std::uint32_t>(t.type));
            head.put<std::uint64_t>(offset);
            offset = detail::align_up(offset + type_bytes(t.type, t.numel), alignment_);
        }
        head.bytes.resize(detail::align_up(head.bytes.size(), alignment_), '\0');

        const fs::path tmp = path.string() + ".tmp";
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        check(bool(out), [&] { return "gguf: cannot create " + tmp.string(); });
        out.write(head.bytes.data(), static_cast<std::streamsize>(head.bytes.size()));
        std::vector<float> values;
        std::vector<std::uint8_t> bytes;
        for (const auto& t : tensors_) {
            values.assign(t.numel, 0.0f);
            t.fill(values);
            encode(t.type, values, bytes);
            bytes.resize(detail::align_up(bytes.size(), alignment_), 0);
            out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        }
        out.flush();
        const bool ok = bool(out);
        out.close();
        if (!ok) {
            std::error_code ec;
            fs::remove(tmp, ec);
            fail("gguf: writing " + tmp.string() + " failed (disk full?)");
        }
        std::error_code ec;
        fs::rename(tmp, path, ec);
        check(!ec,
              [&] { return "gguf: cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message(); });
    }

    // Values to the bytes of a tensor of type t.
    static void encode(ggml_type t, std::span<const float> values, std::vector<std::uint8_t>& bytes) {
        bytes.assign(type_bytes(t, values.size()), 0);
        switch (t) {
        case ggml_type::f32:
            std::memcpy(bytes.data(), values.data(), values.size() * 4);
            break;
        case ggml_type::f16:
            for (std::size_t i = 0; i < values.size(); ++i) {
                const std::uint16_t h = float_to_half(values[i]);
                std::memcpy(bytes.data() + 2 * i, &h, 2);
            }
            break;
        case ggml_type::q8_0:
            quantize_q8_0(values, bytes.data());
            break;
        case ggml_type::q4_0:
            quantize_q4_0(values, bytes.data());
            break;
        default:
            fail("gguf: " + type_name(t) + " is read, not written");
        }
    }

private:
    struct tensor {
        std::string name;
        std::vector<std::uint64_t> dims;
        ggml_type type;
        std::uint64_t numel;
        fill_fn fill;
    };
    std::vector<std::pair<std::string, value>> kv_;
    std::vector<tensor> tensors_;
    std::uint32_t alignment_ = default_alignment;
};

struct tensor_info {
    std::string name;
    std::vector<std::uint64_t> dims; // fastest-varying first
    ggml_type type = ggml_type::f32;
    std::uint64_t offset = 0; // from the start of the data section
    std::uint64_t numel() const {
        std::uint64_t n = 1;
        for (auto d : dims)
            n *= d;
        return n;
    }
    std::uint64_t bytes() const { return type_bytes(type, numel()); }
};

// Reads a GGUF file's metadata and tensor table; tensor data is read when asked for.
class reader {
public:
    explicit reader(const fs::path& path) : path_(path) {
        std::ifstream in(path, std::ios::binary);
        check(bool(in), [&] { return "gguf: cannot open " + path.string(); });
        std::error_code ec;
        size_ = fs::file_size(path, ec);
        check(!ec, [&] { return "gguf: cannot stat " + path.string(); });
        in_ = &in;
        char magic[4] = {};
        raw(magic, 4, "magic");
        check(std::memcmp(magic, "GGUF", 4) == 0,
              [&] { return "gguf: " + path.string() + " does not start with GGUF"; });
        version_ = get<std::uint32_t>("version");
        check(version_ == 2 || version_ == 3, [&] {
            return "gguf: " + path.string() + " has version " + std::to_string(version_) + " (2 and 3 are read)";
        });
        const auto n_tensors = get<std::uint64_t>("tensor count");
        const auto n_kv = get<std::uint64_t>("metadata count");
        check(n_tensors <= size_ && n_kv <= size_,
              [&] { return "gguf: " + path.string() + ": counts exceed the file"; });
        for (std::uint64_t i = 0; i < n_kv; ++i) {
            std::string key = get_string("metadata key");
            const auto t = static_cast<value_type>(get<std::uint32_t>("value type of " + key));
            kv_.emplace_back(key, read_value(t, key));
            kv_.back().second.where = "gguf: " + path.string() + ": " + key;
        }
        if (const value* a = find("general.alignment")) {
            alignment_ = static_cast<std::uint32_t>(a->as_uint());
            check(alignment_ > 0 && (alignment_ & (alignment_ - 1)) == 0,
                  [&] { return "gguf: " + path.string() + ": general.alignment is not a power of two"; });
        }
        for (std::uint64_t i = 0; i < n_tensors; ++i) {
            tensor_info t;
            t.name = get_string("tensor name");
            const auto n_dims = get<std::uint32_t>("dimension count of " + t.name);
            check(n_dims >= 1 && n_dims <= 4, [&] {
                return "gguf: " + path.string() + ": tensor " + t.name + " has " + std::to_string(n_dims) +
                       " dimensions";
            });
            for (std::uint32_t d = 0; d < n_dims; ++d) {
                t.dims.push_back(get<std::uint64_t>("dimension of " + t.name));
                check(t.dims.back() > 0 && t.dims.back() <= size_ * 2, [&] {
                    return "gguf: " + path.string() + ": tensor " + t.name + " has a dimension of " +
                           std::to_string(t.dims.back());
                });
            }
            std::uint64_t n = 1;
            for (const std::uint64_t d : t.dims)
                check(!__builtin_mul_overflow(n, d, &n) && n <= size_ * 2, [&] {
                    return "gguf: " + path.string() + ": tensor " + t.name +
                           " has more elements than the file could hold";
                });
            const auto type = get<std::uint32_t>("type of " + t.name);
            check(readable_type(type), [&] {
                return "gguf: " + path.string() + ": tensor " + t.name + " has ggml type " + type_name(type) + " (" +
                       std::to_string(type) + "), which tinylm does not read (it reads " + readable_type_names() +
                       "; llama.cpp's llama-quantize converts to one of them)";
            });
            t.type = static_cast<ggml_type>(type);
            check(t.dims[0] % block_values(t.type) == 0, [&] {
                return "gguf: " + path.string() + ": tensor " + t.name + " rows are not whole blocks of " +
                       std::to_string(block_values(t.type)) + " (" + type_name(t.type) + ")";
            });
            t.offset = get<std::uint64_t>("offset of " + t.name);
            tensors_.push_back(std::move(t));
        }
        data_offset_ = detail::align_up(pos_, alignment_);
        for (const auto& t : tensors_)
            check(t.offset % alignment_ == 0 && t.offset <= size_ && t.bytes() <= size_ &&
                      data_offset_ + t.offset + t.bytes() <= size_,
                  [&] { return "gguf: " + path.string() + ": tensor " + t.name + " lies outside the file"; });
        in_ = nullptr;
    }

    const fs::path& path() const { return path_; }
    std::uint32_t file_version() const { return version_; }
    std::uint32_t alignment() const { return alignment_; }
    std::uint64_t data_offset() const { return data_offset_; }
    const std::vector<std::pair<std::string, value>>& metadata() const { return kv_; }
    const std::vector<tensor_info>& tensors() const { return tensors_; }

    const value* find(std::string_view key) const {
        for (const auto& [k, v] : kv_)
            if (k == key) return &v;
        return nullptr;
    }
    const value& at(std::string_view key) const {
        const value* v = find(key);
        check(v != nullptr, [&] { return "gguf: " + path_.string() + " has no metadata key " + std::string(key); });
        return *v;
    }
    const tensor_info* find_tensor(std::string_view name) const {
        for (const auto& t : tensors_)
            if (t.name == name) return &t;
        return nullptr;
    }
    const tensor_info& tensor(std::string_view name) const {
        if (const tensor_info* t = find_tensor(name)) return *t;
        fail("gguf: " + path_.string() + " has no tensor " + std::string(name));
    }
    std::vector<std::uint8_t> read_bytes(std::string_view name) const {
        const tensor_info& t = tensor(name);
        std::vector<std::uint8_t> bytes(t.bytes());
        std::ifstream in(path_, std::ios::binary);
        in.seekg(static_cast<std::streamoff>(data_offset_ + t.offset));
        in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        check(bool(in),
              [&] { return "gguf: reading tensor " + std::string(name) + " of " + path_.string() + " failed"; });
        return bytes;
    }
    // The tensor's values in GGUF order, dequantised as ggml does.
    std::vector<float> read_f32(std::string_view name) const {
        const tensor_info& t = tensor(name);
        const std::vector<std::uint8_t> bytes = read_bytes(name);
        std::vector<float> out(t.numel());
        dequantize(t.type, bytes.data(), out);
        return out;
    }

private:
    void raw(void* out, std::uint64_t n, const std::string& what) {
        check(pos_ + n <= size_,
              [&] { return "gguf: " + path_.string() + ": " + what + " runs past the end of the file"; });
        in_->read(static_cast<char*>(out), static_cast<std::streamsize>(n));
        check(bool(*in_), [&] { return "gguf: " + path_.string() + ": reading " + what + " failed"; });
        pos_ += n;
    }
    template <class T>
    T get(const std::string& what) {
        T v;
        raw(&v, sizeof(T), what);
        return v;
    }
    std::string get_string(const std::string& what) {
        const auto n = get<std::uint64_t>(what + " length");
        check(n <= size_ - pos_,
              [&] { return "gguf: " + path_.string() + ": " + what + " runs past the end of the file"; });
        std::string s(n, '\0');
        raw(s.data(), n, what);
        return s;
    }
    value read_value(value_type t, const std::string& key) {
        detail::kind k{};
        int bytes = 0;
        value v;
        v.type = t;
        if (detail::scalar_kind(t, k, bytes)) {
            read_scalar(v, t, k, bytes, key);
            return v;
        }
        check(t == value_type::array, [&] {
            return "gguf: " + path_.string() + ": " + key + " has unknown value type " +
                   std::to_string(static_cast<std::uint32_t>(t));
        });
        v.elem = static_cast<value_type>(get<std::uint32_t>("element type of " + key));
        const auto n = get<std::uint64_t>("length of " + key);
        check(detail::scalar_kind(v.elem, k, bytes), [&] {
            return "gguf: " + path_.string() + ": " + key + " is an array of unsupported element type " +
                   std::to_string(static_cast<std::uint32_t>(v.elem));
        });
        check(n <= size_ - pos_, [&] { return "gguf: " + path_.string() + ": " + key + " is longer than the file"; });
        if (k == detail::kind::string) {
            std::vector<std::string> s;
            s.reserve(n);
            for (std::uint64_t i = 0; i < n; ++i)
                s.push_back(get_string(key));
            v.data = std::move(s);
        } else if (k == detail::kind::floating) {
            std::vector<double> f;
            f.reserve(n);
            for (std::uint64_t i = 0; i < n; ++i)
                f.push_back(bytes == 4 ? double(get<float>(key)) : get<double>(key));
            v.data = std::move(f);
        } else {
            std::vector<std::int64_t> is;
            is.reserve(n);
            value one;
            for (std::uint64_t i = 0; i < n; ++i) {
                read_scalar(one, v.elem, k, bytes, key);
                if (const auto* u = std::get_if<std::uint64_t>(&one.data)) is.push_back(static_cast<std::int64_t>(*u));
                if (const auto* s = std::get_if<std::int64_t>(&one.data)) is.push_back(*s);
                if (const auto* b = std::get_if<bool>(&one.data)) is.push_back(*b ? 1 : 0);
            }
            v.data = std::move(is);
        }
        return v;
    }
    void read_scalar(value& v, value_type t, detail::kind k, int bytes, const std::string& key) {
        switch (k) {
        case detail::kind::string:
            v.data = get_string(key);
            return;
        case detail::kind::boolean:
            v.data = get<std::uint8_t>(key) != 0;
            return;
        case detail::kind::floating:
            v.data = bytes == 4 ? double(get<float>(key)) : get<double>(key);
            return;
        case detail::kind::unsigned_int:
            v.data = bytes == 1   ? std::uint64_t(get<std::uint8_t>(key))
                     : bytes == 2 ? std::uint64_t(get<std::uint16_t>(key))
                     : bytes == 4 ? std::uint64_t(get<std::uint32_t>(key))
                                  : get<std::uint64_t>(key);
            return;
        case detail::kind::signed_int:
            v.data = bytes == 1   ? std::int64_t(get<std::int8_t>(key))
                     : bytes == 2 ? std::int64_t(get<std::int16_t>(key))
                     : bytes == 4 ? std::int64_t(get<std::int32_t>(key))
                                  : get<std::int64_t>(key);
            return;
        }
        (void)t;
    }

    fs::path path_;
    std::uint64_t size_ = 0, pos_ = 0, data_offset_ = 0;
    std::ifstream* in_ = nullptr;
    std::uint32_t version_ = 0, alignment_ = default_alignment;
    std::vector<std::pair<std::string, value>> kv_;
    std::vector<tensor_info> tensors_;
};

} // namespace tl::gguf
