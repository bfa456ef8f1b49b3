// tinylm/data/nanogpt.hpp: token shards to and from nanoGPT's data layout, so that a nanoGPT user can train on
// tinylm's data and the reverse.
//
// nanoGPT (github.com/karpathy/nanoGPT, data/*/prepare.py and train.py) reads DIR/train.bin and DIR/val.bin as
// raw arrays of little-endian tokens with np.memmap(..., dtype=np.uint16), and DIR/meta.pkl for vocab_size.
// The export writes:
//   DIR/train.bin, DIR/val.bin  the shards' tokens, headers left out, as uint16 when every id fits (a
//                               vocabulary of at most 65,536), else as uint32 (Qwen's 151,669): nanoGPT's
//                               train.py then needs dtype=np.uint32 in get_batch (docs/corpus.md);
//   DIR/meta.json               {"format": "nanogpt", "dtype": "uint16" | "uint32", "vocab_size", "bos", "eos",
//                                "tokenizer_hash" (16 hex digits), "train_tokens", "val_tokens"}: meta.pkl's
//                               vocab_size plus what the import needs to rebuild the shard headers.
// The tokens keep tinylm's document boundaries (<bos> ... <eos> per chunk). The import splits a .bin after each
// <eos> into chunks again, so export then import gives the original shards byte for byte. A .bin made by
// nanoGPT itself (no meta.json) imports with a meta written by hand: GPT-2's prepare.py ends each document with
// <|endoftext|> (50256), so bos = eos = 50256, vocab_size 50257, dtype uint16.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/shards.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace tl::data {

struct nanogpt_meta {
    token_dtype dtype = token_dtype::u16;
    std::uint32_t vocab_size = 0;
    std::uint32_t bos = 0, eos = 0;
    std::uint64_t tokenizer_hash = 0;
    std::uint64_t train_tokens = 0, val_tokens = 0;
};

// The width nanoGPT needs for a vocabulary: uint16 holds ids up to 65,535.
inline token_dtype nanogpt_dtype(std::uint32_t vocab_size) {
    return vocab_size <= 65536 ? token_dtype::u16 : token_dtype::u32;
}
inline const char* to_string(token_dtype d) { return d == token_dtype::u16 ? "uint16" : "uint32"; }

inline void write_nanogpt_meta(const nanogpt_meta& m, const std::filesystem::path& file) {
    char hash[24];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(m.tokenizer_hash));
    const nlohmann::json j = {{"format", "nanogpt"},
                              {"dtype", to_string(m.dtype)},
                              {"vocab_size", m.vocab_size},
                              {"bos", m.bos},
                              {"eos", m.eos},
                              {"tokenizer_hash", hash},
                              {"train_tokens", m.train_tokens},
                              {"val_tokens", m.val_tokens}};
    std::ofstream out(file);
    out << j.dump(2) << '\n';
    out.flush();
    check(bool(out), [&] { return file.string() + ": write failed"; });
}

inline nanogpt_meta read_nanogpt_meta(const std::filesystem::path& file) {
    std::ifstream in(file);
    check(bool(in), [&] { return file.string() + ": cannot open (the nanoGPT meta file)"; });
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(file.string() + ": not JSON: " + e.what());
    }
    const auto f = file.string();
    check(j.is_object(), [&] { return f + ": not a JSON object"; });
    const auto u32 = [&](const char* key, bool required) -> std::uint32_t {
        if (!j.contains(key)) {
            check(!required, [&] { return f + ": missing \"" + key + "\""; });
            return 0;
        }
        const auto& v = j[key];
        check(v.is_number_unsigned() && v.get<std::uint64_t>() <= 0xFFFFFFFFull,
              [&] { return f + ": \"" + key + "\" is not a 32-bit unsigned integer: " + v.dump(); });
        return v.get<std::uint32_t>();
    };
    nanogpt_meta m;
    const std::string dtype = j.value("dtype", std::string("uint16"));
    check(dtype == "uint16" || dtype == "uint32",
          [&] { return f + ": \"dtype\" must be uint16 or uint32, not \"" + dtype + "\""; });
    m.dtype = dtype == "uint16" ? token_dtype::u16 : token_dtype::u32;
    m.vocab_size = u32("vocab_size", true);
    m.eos = u32("eos", true);
    m.bos = j.contains("bos") ? u32("bos", false) : m.eos;
    if (j.contains("tokenizer_hash")) {
        const auto& h = j["tokenizer_hash"];
        check(h.is_string() && h.get<std::string>().size() == 16 &&
                  h.get<std::string>().find_first_not_of("0123456789abcdefABCDEF") == std::string::npos,
              [&] { return f + ": \"tokenizer_hash\" must be 16 hex digits, not " + h.dump(); });
        m.tokenizer_hash = std::stoull(h.get<std::string>(), nullptr, 16);
    }
    check(m.dtype == token_dtype::u32 || m.vocab_size <= 65536,
          [&] { return f + ": a vocabulary of " + std::to_string(m.vocab_size) + " does not fit dtype uint16"; });
    return m;
}

// Writes a shard's tokens as a raw nanoGPT .bin of width `dtype`; returns the token count.
inline std::uint64_t export_nanogpt_bin(const token_shard& shard, const std::filesystem::path& out, token_dtype dtype) {
    const auto tmp = std::filesystem::path(out.string() + ".tmp");
    if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
    {
        std::ofstream f(tmp, std::ios::binary);
        check(bool(f), [&] { return tmp.string() + ": cannot open for writing"; });
        std::vector<std::uint32_t> block;
        std::vector<unsigned char> bytes;
        const std::uint64_t n = shard.size(), step = 1 << 20;
        const std::size_t w = static_cast<std::size_t>(dtype);
        for (std::uint64_t i = 0; i < n; i += step) {
            block.resize(static_cast<std::size_t>(std::min(step, n - i)));
            shard.copy<std::uint32_t>(i, block);
            bytes.resize(block.size() * w);
            for (std::size_t k = 0; k < block.size(); ++k) {
                check(w == 4 || block[k] < 65536, [&] {
                    return shard.path().string() + ": token " + std::to_string(block[k]) + " does not fit uint16";
                });
                if (w == 2)
                    detail::put(bytes.data() + 2 * k, static_cast<std::uint16_t>(block[k]));
                else
                    detail::put(bytes.data() + 4 * k, block[k]);
            }
            f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        }
        f.flush();
        check(bool(f), [&] { return tmp.string() + ": write failed (disk full?)"; });
    }
    std::filesystem::rename(tmp, out);
    return shard.size();
}

// Reads a raw nanoGPT .bin of width `m.dtype` into a tinylm shard (chunks end after each <eos>); returns the
// token count. Every id must be below m.vocab_size.
inline std::uint64_t import_nanogpt_bin(const std::filesystem::path& in, const nanogpt_meta& m,
                                        const std::filesystem::path& shard_out) {
    std::ifstream f(in, std::ios::binary);
    check(bool(f), [&] { return in.string() + ": cannot open"; });
    const std::size_t w = static_cast<std::size_t>(m.dtype);
    const auto bytes = std::filesystem::file_size(in);
    check(bytes % w == 0, [&] {
        return in.string() + ": " + std::to_string(bytes) + " bytes is not a whole number of " + to_string(m.dtype) +
               " tokens (wrong dtype in the meta file?)";
    });
    tokenizer_info tok;
    tok.hash = m.tokenizer_hash, tok.bos = m.bos, tok.eos = m.eos, tok.vocab_size = m.vocab_size;
    shard_writer writer(shard_out, tok, nanogpt_dtype(m.vocab_size));
    std::vector<unsigned char> buf(std::size_t(1 << 20) * w);
    std::vector<std::uint32_t> chunk;
    std::uint64_t count = 0;
    while (f) {
        f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
        const auto got = static_cast<std::size_t>(f.gcount()) / w;
        for (std::size_t k = 0; k < got; ++k) {
            const std::uint32_t t = w == 2 ? detail::get<std::uint16_t>(buf.data() + 2 * k)
                                           : detail::get<std::uint32_t>(buf.data() + 4 * k);
            check(t < m.vocab_size, [&] {
                return in.string() + ": token " + std::to_string(t) + " at position " + std::to_string(count + k) +
                       " is outside the vocabulary of " + std::to_string(m.vocab_size);
            });
            chunk.push_back(t);
            if (t == m.eos) writer.append(std::exchange(chunk, {}));
        }
        count += got;
    }
    if (!chunk.empty()) writer.append(chunk);
    writer.close();
    return count;
}

// DIR_IN/{train,val}.bin (tinylm shards) -> DIR_OUT/{train,val}.bin + meta.json (nanoGPT).
inline nanogpt_meta export_nanogpt(const std::filesystem::path& train_shard, const std::filesystem::path& val_shard,
                                   const std::filesystem::path& out_dir) {
    const token_shard train(train_shard), val(val_shard);
    const auto& h = train.header();
    const auto& hv = val.header();
    check(h.tokenizer_hash == hv.tokenizer_hash && h.bos == hv.bos && h.eos == hv.eos && h.vocab_size == hv.vocab_size,
          [&] { return train_shard.string() + " and " + val_shard.string() + " come from different tokenizers"; });
    nanogpt_meta m;
    m.vocab_size = h.vocab_size;
    if (m.vocab_size == 0) { // unknown in the header: the largest id decides
        for (const token_shard* s : {&train, &val})
            for (std::uint64_t i = 0; i < s->size(); ++i)
                m.vocab_size = std::max(m.vocab_size, (*s)[i] + 1);
        m.vocab_size = std::max(m.vocab_size, std::max(h.bos, h.eos) + 1);
    }
    m.dtype = nanogpt_dtype(m.vocab_size);
    m.bos = h.bos, m.eos = h.eos, m.tokenizer_hash = h.tokenizer_hash;
    std::filesystem::create_directories(out_dir);
    m.train_tokens = export_nanogpt_bin(train, out_dir / "train.bin", m.dtype);
    m.val_tokens = export_nanogpt_bin(val, out_dir / "val.bin", m.dtype);
    write_nanogpt_meta(m, out_dir / "meta.json");
    return m;
}

// DIR_IN/{train,val}.bin + meta.json (nanoGPT) -> tinylm shards at the given paths.
inline nanogpt_meta import_nanogpt(const std::filesystem::path& in_dir, const std::filesystem::path& train_shard,
                                   const std::filesystem::path& val_shard) {
    nanogpt_meta m = read_nanogpt_meta(in_dir / "meta.json");
    m.train_tokens = import_nanogpt_bin(in_dir / "train.bin", m, train_shard);
    m.val_tokens = import_nanogpt_bin(in_dir / "val.bin", m, val_shard);
    return m;
}

} // namespace tl::data
