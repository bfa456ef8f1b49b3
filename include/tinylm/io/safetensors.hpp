// tinylm/io/safetensors.hpp: read and write the safetensors format (huggingface.co/docs/safetensors):
//   8 bytes little-endian header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets":
//   [begin, end]}, "__metadata__": {string: string}}, then the raw little-endian tensor bytes.
// Reading validates everything against the file size and names the file and the tensor in every error. The reader
// keeps the header; each tensor's bytes are read from the file when asked for, so loading a model needs its
// parameters' memory and one tensor's bytes, not the file's size again.
// Writing goes to "<path>.tmp" and is renamed into place, so a crash never leaves a half-written file.
#pragma once

#include <tinylm/core/dtype.hpp>
#include <tinylm/core/error.hpp>
#include <tinylm/core/json_field.hpp>
#include <tinylm/core/tensor.hpp>

#include <nlohmann/json.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace tl {

struct safetensors_tensor {
    std::string dtype; // "F32", "BF16", "I64", ...
    std::vector<std::int64_t> shape;
    std::size_t begin = 0, end = 0; // byte range in the data section
};

inline int safetensors_dtype_size(const std::string& dtype) {
    static const std::map<std::string, int> sizes{{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                                  {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
    const auto it = sizes.find(dtype);
    return it == sizes.end() ? 0 : it->second;
}

// IEEE binary16 to f32, exactly (every half is an f32): normals, subnormals, infinities and NaN.
inline float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13)); // inf, NaN
    if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
    const float sub = float(mant) * 0x1.0p-24f; // subnormal (or zero): mant * 2^-24
    return sign ? -sub : sub;
}

class safetensors_reader {
public:
    explicit safetensors_reader(const std::filesystem::path& path) : path_(path.string()) {
        std::ifstream in(path, std::ios::binary);
        check(bool(in), [&] { return "safetensors: cannot open " + path_; });
        in.seekg(0, std::ios::end);
        const std::uint64_t size = std::uint64_t(in.tellg());
        in.seekg(0);
        check(size >= 8, [&] {
            return "safetensors: " + path_ + " is too short to hold a header (" + std::to_string(size) + " bytes)";
        });
        unsigned char len_bytes[8];
        in.read(reinterpret_cast<char*>(len_bytes), 8);
        std::uint64_t header_len = 0;
        for (int i = 7; i >= 0; --i)
            header_len = header_len << 8 | len_bytes[i];
        check(header_len <= size - 8, [&] {
            return "safetensors: " + path_ + " declares a " + std::to_string(header_len) +
                   "-byte header but holds only " + std::to_string(size - 8) +
                   " bytes after the length (truncated file?)";
        });
        std::string header(header_len, '\0');
        in.read(header.data(), std::streamsize(header_len));
        check(bool(in), [&] { return "safetensors: error reading " + path_; });
        data_at_ = 8 + header_len;
        data_size_ = size - data_at_;
        parse_header(header);
    }

    const std::map<std::string, safetensors_tensor>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    bool contains(const std::string& name) const { return tensors_.contains(name); }
    const safetensors_tensor& info(const std::string& name) const {
        const auto it = tensors_.find(name);
        check(it != tensors_.end(), [&] { return "safetensors: " + path_ + " has no tensor named '" + name + "'"; });
        return it->second;
    }

    // Copies a tensor into `out`, converting F32/F64/F16/BF16 to T (float or double) or I32/I64 to an integer T.
    // The shape must match exactly.
    template <class T>
    void read(const std::string& name, tensor_view<T> out) const {
        const safetensors_tensor& t = info(name);
        shape s;
        for (std::int64_t d : t.shape)
            s = append(s, d);
        check(s == out.shape, [&] {
            return "safetensors: tensor '" + name + "' in " + path_ + " has shape " + s.str() + " but " +
                   out.shape.str() + " was expected";
        });
        const index_t n = out.numel();
        if constexpr (std::is_same_v<T, float> && std::endian::native == std::endian::little)
            if (t.dtype == "F32") return read_bytes(t, reinterpret_cast<unsigned char*>(out.data)); // as stored
        const std::vector<unsigned char> bytes = read_bytes(t);
        const unsigned char* src = bytes.data();
        auto convert = [&]<class S>(S) {
            for (index_t i = 0; i < n; ++i) {
                S v;
                std::memcpy(&v, src + i * sizeof(S), sizeof(S));
                out[i] = T(v);
            }
        };
        if constexpr (std::is_floating_point_v<T>) {
            if (t.dtype == "F32")
                convert(float{});
            else if (t.dtype == "F64")
                convert(double{});
            else if (t.dtype == "BF16")
                for (index_t i = 0; i < n; ++i) {
                    std::uint16_t b;
                    std::memcpy(&b, src + 2 * i, 2);
                    out[i] = T(float(bf16::from_bits(b)));
                }
            else if (t.dtype == "F16")
                for (index_t i = 0; i < n; ++i) {
                    std::uint16_t h;
                    std::memcpy(&h, src + 2 * i, 2);
                    out[i] = T(half_to_float(h));
                }
            else
                fail("safetensors: tensor '" + name + "' in " + path_ + " has dtype " + t.dtype +
                     ", expected a float type");
        } else {
            if (t.dtype == "I64")
                convert(std::int64_t{});
            else if (t.dtype == "I32")
                convert(std::int32_t{});
            else
                fail("safetensors: tensor '" + name + "' in " + path_ + " has dtype " + t.dtype +
                     ", expected I32 or I64");
        }
    }
    template <class T>
    std::vector<T> read_all(const std::string& name, shape* shape_out = nullptr) const {
        const safetensors_tensor& t = info(name);
        shape s;
        for (std::int64_t d : t.shape)
            s = append(s, d);
        std::vector<T> v(std::size_t(s.numel()));
        read(name, tensor_view<T>{v.data(), s});
        if (shape_out) *shape_out = s;
        return v;
    }

    // The bytes of a U8 tensor as stored (packed NF4 codes and 8-bit scale codes: train/checkpoint_nf4.hpp).
    std::vector<std::uint8_t> read_u8(const std::string& name) const {
        const safetensors_tensor& t = info(name);
        check(t.dtype == "U8", [&] {
            return "safetensors: tensor '" + name + "' in " + path_ + " has dtype " + t.dtype + ", expected U8";
        });
        return read_bytes(t);
    }

private:
    // The bytes of `t`, read from the file into `out` (t.end - t.begin of them).
    void read_bytes(const safetensors_tensor& t, unsigned char* out) const {
        std::ifstream in(path_, std::ios::binary);
        in.seekg(std::streamoff(data_at_ + t.begin));
        in.read(reinterpret_cast<char*>(out), std::streamsize(t.end - t.begin));
        check(bool(in),
              [&] { return "safetensors: error reading " + path_ + " (changed or truncated since opened?)"; });
    }
    std::vector<unsigned char> read_bytes(const safetensors_tensor& t) const {
        std::vector<unsigned char> bytes(t.end - t.begin);
        read_bytes(t, bytes.data());
        return bytes;
    }

    static shape append(shape s, std::int64_t d) {
        check(s.rank < shape::max_rank, "safetensors: tensors of rank above 4 are not supported");
        s.dims[s.rank++] = d;
        return s;
    }

    void parse_header(const std::string& header) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(header);
        } catch (const nlohmann::json::exception& e) {
            fail("safetensors: " + path_ + " has a malformed JSON header: " + e.what());
        }
        check(j.is_object(), [&] { return "safetensors: the header of " + path_ + " is not a JSON object"; });
        for (const auto& item : j.items()) {
            const std::string& name = item.key(); // not a structured binding: clang 14 cannot capture one in a lambda
            const auto& v = item.value();
            if (name == "__metadata__") {
                for (const auto& [k, val] : v.items())
                    if (val.is_string()) metadata_[k] = val.get<std::string>();
                continue;
            }
            safetensors_tensor t;
            const std::string where = "safetensors: " + path_ + ": tensor '" + name + "'";
            t.dtype = json_field<std::string>(v, "dtype", where);
            t.shape = json_field<std::vector<std::int64_t>>(v, "shape", where);
            const auto offsets = json_field<std::vector<std::uint64_t>>(v, "data_offsets", where);
            check(offsets.size() == 2, [&] { return where + ": data_offsets must have two entries"; });
            t.begin = offsets[0];
            t.end = offsets[1];
            const int size = safetensors_dtype_size(t.dtype);
            check(size > 0,
                  [&] { return "safetensors: tensor '" + name + "' in " + path_ + " has unknown dtype " + t.dtype; });
            std::uint64_t count = 1;
            for (std::int64_t d : t.shape) {
                check(d >= 0,
                      [&] { return "safetensors: tensor '" + name + "' in " + path_ + " has a negative dimension"; });
                check(!__builtin_mul_overflow(count, std::uint64_t(d), &count),
                      [&] { return where + ": shape has over 2^64 elements"; });
            }
            check(!__builtin_mul_overflow(count, std::uint64_t(size), &count) && count <= data_size_, [&] {
                return where + ": shape needs more bytes than the " + std::to_string(data_size_) +
                       "-byte data section holds";
            });
            check(t.begin <= t.end && t.end <= data_size_ && t.end - t.begin == count, [&] {
                return "safetensors: tensor '" + name + "' in " + path_ + " has data_offsets [" +
                       std::to_string(t.begin) + ", " + std::to_string(t.end) +
                       "] that do not fit its shape and dtype or the " + std::to_string(data_size_) +
                       "-byte data section";
            });
            tensors_[name] = std::move(t);
        }
    }

    std::string path_;
    std::uint64_t data_at_ = 0, data_size_ = 0; // the data section: its offset in the file, its bytes
    std::map<std::string, safetensors_tensor> tensors_;
    std::map<std::string, std::string> metadata_;
};

// Collects tensors, then writes them in one go (sorted by name, as the Python library does).
class safetensors_writer {
public:
    template <class T>
    void add(const std::string& name, cview<T> t) {
        entry e{std::string(name_of(dtype_of<T>())), {}, {}};
        for (int i = 0; i < t.shape.rank; ++i)
            e.shape.push_back(t.shape[i]);
        e.bytes.resize(std::size_t(t.numel()) * sizeof(T));
        std::memcpy(e.bytes.data(), t.data, e.bytes.size());
        entries_[name] = std::move(e);
    }
    // Bytes as a 1-D U8 tensor (packed NF4 codes and 8-bit scale codes: train/checkpoint_nf4.hpp).
    void add_u8(const std::string& name, std::span<const std::uint8_t> bytes) {
        entries_[name] = entry{"U8", {std::int64_t(bytes.size())}, {bytes.begin(), bytes.end()}};
    }
    void add_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

    void save(const std::filesystem::path& path) const {
        nlohmann::json header = nlohmann::json::object();
        if (!metadata_.empty()) header["__metadata__"] = metadata_;
        std::uint64_t offset = 0;
        for (const auto& [name, e] : entries_) {
            header[name] = {
                {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes.size()}}};
            offset += e.bytes.size();
        }
        std::string text = header.dump();
        text.append((8 - text.size() % 8) % 8, ' '); // align the data section to 8 bytes
        const std::filesystem::path tmp = path.string() + ".tmp";
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            check(bool(out), [&] { return "safetensors: cannot write " + tmp.string(); });
            unsigned char len[8];
            for (int i = 0; i < 8; ++i)
                len[i] = (std::uint64_t(text.size()) >> (8 * i)) & 0xff;
            out.write(reinterpret_cast<const char*>(len), 8);
            out.write(text.data(), std::streamsize(text.size()));
            for (const auto& [name, e] : entries_)
                out.write(reinterpret_cast<const char*>(e.bytes.data()), std::streamsize(e.bytes.size()));
            out.flush();
            check(bool(out), [&] { return "safetensors: writing " + tmp.string() + " failed (disk full?)"; });
        }
        std::filesystem::rename(tmp, path);
    }

private:
    struct entry {
        std::string dtype;
        std::vector<std::int64_t> shape;
        std::vector<unsigned char> bytes;
    };
    std::map<std::string, entry> entries_;
    std::map<std::string, std::string> metadata_;
};

} // namespace tl
