// tinylm/data/shards.hpp: chunking documents into context-sized token pieces, binary token shards, and a
// memory-mapped loader that draws (B, T+1) batches deterministically.
//
// The tokenizer is any callable `std::vector<std::uint32_t>(std::string_view)` (concept TextEncoder) plus a
// `tokenizer_info`: a 64-bit hash that identifies the vocabulary and merges, and the ids of <bos> and <eos>.
// A shard records the hash, and opening it with a different expected hash fails, so a model never trains on
// ids from another tokenizer.
//
// Shard layout (little-endian): a 64-byte header, then `count` tokens of 2 or 4 bytes.
//   offset  0  char[8]  magic "TLSHARD\0"
//           8  u32      version (1)
//          12  u32      bytes per token (2 or 4)
//          16  u64      token count
//          24  u32      reserved (0)
//          28  u32      <bos> id
//          32  u32      <eos> id
//          36  u32      vocabulary size (0: unknown)
//          40  u64      chunk count (each chunk is <bos> ... <eos>)
//          48  u64      reserved (0)
//          56  u64      tokenizer hash
// Files are written to "<path>.tmp" and renamed when complete, so a crash never leaves a short shard.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/data/reader.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tl::data {

template <class E>
concept TextEncoder = requires(const E& e, std::string_view s) {
    { e(s) } -> std::convertible_to<std::vector<std::uint32_t>>;
};
using encode_fn = std::function<std::vector<std::uint32_t>(std::string_view)>;

// An encoder that also encodes a paragraph as the continuation of a document (`e.continuation(s)`): what a
// SentencePiece-style tokenizer, which prepends "▁" once to its input, gives for the paragraphs after the first
// (data/tokenizer_file.hpp). chunk_document uses it for every paragraph but a document's first.
template <class E>
concept ContinuationEncoder = TextEncoder<E> && requires(const E& e, std::string_view s) {
    { e.continuation(s) } -> std::convertible_to<std::vector<std::uint32_t>>;
};

struct tokenizer_info {
    std::uint64_t hash = 0; // identifies the tokenizer (vocabulary, merges, normalisation)
    std::uint32_t bos = 0, eos = 0;
    std::uint32_t vocab_size = 0; // 0: unknown; otherwise every id must be below it
};

enum class token_dtype : std::uint32_t { u16 = 2, u32 = 4 };

inline constexpr char shard_magic[8] = {'T', 'L', 'S', 'H', 'A', 'R', 'D', '\0'};
inline constexpr std::uint32_t shard_version = 1;
inline constexpr std::size_t shard_header_bytes = 64;

struct shard_header {
    std::uint32_t version = shard_version;
    std::uint32_t token_bytes = 2;
    std::uint64_t count = 0;
    std::uint32_t bos = 0, eos = 0, vocab_size = 0;
    std::uint64_t chunks = 0;
    std::uint64_t tokenizer_hash = 0;
};

namespace detail {
template <class T>
void put(unsigned char* p, T v) {
    std::memcpy(p, &v, sizeof v); // the formats are little-endian, like every machine tinylm targets
}
template <class T>
T get(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
inline std::array<unsigned char, shard_header_bytes> encode_header(const shard_header& h) {
    std::array<unsigned char, shard_header_bytes> b{};
    std::memcpy(b.data(), shard_magic, 8);
    put(b.data() + 8, h.version);
    put(b.data() + 12, h.token_bytes);
    put(b.data() + 16, h.count);
    put(b.data() + 28, h.bos);
    put(b.data() + 32, h.eos);
    put(b.data() + 36, h.vocab_size);
    put(b.data() + 40, h.chunks);
    put(b.data() + 56, h.tokenizer_hash);
    return b;
}
} // namespace detail

// Writes one shard. Tokens are appended chunk by chunk; close() writes the header and renames the file.
class shard_writer {
public:
    shard_writer(std::filesystem::path path, const tokenizer_info& tok, token_dtype dtype = token_dtype::u16)
        : path_(std::move(path)), tmp_(path_.string() + ".tmp") {
        header_.token_bytes = static_cast<std::uint32_t>(dtype);
        header_.bos = tok.bos, header_.eos = tok.eos, header_.vocab_size = tok.vocab_size;
        header_.tokenizer_hash = tok.hash;
        check(dtype == token_dtype::u32 || tok.vocab_size <= 65536, [&] {
            return path_.string() + ": vocabulary of " + std::to_string(tok.vocab_size) +
                   " does not fit 16-bit tokens; use token_dtype::u32";
        });
        if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
        file_ = std::fopen(tmp_.c_str(), "wb");
        check(file_ != nullptr, [&] { return tmp_.string() + ": cannot open for writing"; });
        const auto h = detail::encode_header(header_);
        write(h.data(), h.size());
    }
    ~shard_writer() {
        if (file_) {
            std::fclose(file_);
            std::error_code ec;
            std::filesystem::remove(tmp_, ec); // never leave a half-written shard behind
        }
    }
    shard_writer(const shard_writer&) = delete;
    shard_writer& operator=(const shard_writer&) = delete;

    // Appends one chunk (normally <bos> ... <eos>).
    void append(std::span<const std::uint32_t> tokens) {
        check(file_ != nullptr, [&] { return path_.string() + ": append after close"; });
        const std::uint32_t limit = header_.vocab_size         ? header_.vocab_size
                                    : header_.token_bytes == 2 ? 65536u
                                                               : 0xFFFFFFFFu;
        if (header_.token_bytes == 2) {
            buf16_.clear();
            for (std::uint32_t t : tokens) {
                check(t < limit, [&] { return bad_token(t, limit); });
                buf16_.push_back(static_cast<std::uint16_t>(t));
            }
            write(buf16_.data(), buf16_.size() * 2);
        } else {
            for (std::uint32_t t : tokens)
                check(header_.vocab_size == 0 || t < limit, [&] { return bad_token(t, limit); });
            write(tokens.data(), tokens.size() * 4);
        }
        header_.count += tokens.size();
        ++header_.chunks;
    }
    void close() {
        if (!file_) return;
        const auto h = detail::encode_header(header_);
        check(std::fseek(file_, 0, SEEK_SET) == 0, [&] { return tmp_.string() + ": seek failed"; });
        write(h.data(), h.size());
        const bool ok = std::fflush(file_) == 0;
        std::fclose(file_);
        file_ = nullptr;
        check(ok, [&] { return tmp_.string() + ": write failed (disk full?)"; });
        std::filesystem::rename(tmp_, path_);
    }
    std::uint64_t count() const { return header_.count; }
    std::uint64_t chunks() const { return header_.chunks; }

private:
    std::string bad_token(std::uint32_t t, std::uint32_t limit) const {
        return path_.string() + ": token id " + std::to_string(t) + " is out of range (limit " + std::to_string(limit) +
               ")";
    }
    void write(const void* p, std::size_t n) {
        check(std::fwrite(p, 1, n, file_) == n, [&] { return tmp_.string() + ": write failed (disk full?)"; });
    }
    std::filesystem::path path_, tmp_;
    std::FILE* file_ = nullptr;
    shard_header header_;
    std::vector<std::uint16_t> buf16_;
};

// A shard opened read-only through mmap. Validates magic, version, token width, size and (optionally) the
// tokenizer hash, each with an error naming the file and the problem.
class token_shard {
public:
    explicit token_shard(const std::filesystem::path& path, std::optional<std::uint64_t> expected_hash = {})
        : path_(path) {
        const int fd = ::open(path.c_str(), O_RDONLY);
        check(fd >= 0, [&] { return path.string() + ": cannot open token shard"; });
        struct stat st {};
        ::fstat(fd, &st);
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            ::close(fd);
            check(p != MAP_FAILED, [&] { return path.string() + ": mmap failed"; });
            map_ = static_cast<const unsigned char*>(p);
        } else
            ::close(fd);
        try {
            validate(expected_hash);
        } catch (...) {
            unmap();
            throw;
        }
    }
    ~token_shard() { unmap(); }
    token_shard(const token_shard&) = delete;
    token_shard& operator=(const token_shard&) = delete;
    token_shard(token_shard&& o) noexcept : path_(std::move(o.path_)), map_(o.map_), size_(o.size_), h_(o.h_) {
        o.map_ = nullptr;
        o.size_ = 0;
    }

    const shard_header& header() const { return h_; }
    std::uint64_t size() const { return h_.count; }
    const std::filesystem::path& path() const { return path_; }
    std::uint32_t operator[](std::uint64_t i) const {
        const unsigned char* p = map_ + shard_header_bytes + i * h_.token_bytes;
        return h_.token_bytes == 2 ? detail::get<std::uint16_t>(p) : detail::get<std::uint32_t>(p);
    }
    // Copies tokens [begin, begin + out.size()) into out.
    template <class T>
    void copy(std::uint64_t begin, std::span<T> out) const {
        check(begin + out.size() <= h_.count, [&] { return path_.string() + ": read past the end of the shard"; });
        const unsigned char* p = map_ + shard_header_bytes + begin * h_.token_bytes;
        if (h_.token_bytes == 2)
            for (std::size_t i = 0; i < out.size(); ++i)
                out[i] = static_cast<T>(detail::get<std::uint16_t>(p + 2 * i));
        else
            for (std::size_t i = 0; i < out.size(); ++i)
                out[i] = static_cast<T>(detail::get<std::uint32_t>(p + 4 * i));
    }
    std::vector<std::uint32_t> tokens() const {
        std::vector<std::uint32_t> v(h_.count);
        copy<std::uint32_t>(0, v);
        return v;
    }

private:
    void unmap() {
        if (map_) ::munmap(const_cast<unsigned char*>(map_), size_);
        map_ = nullptr;
    }
    void validate(std::optional<std::uint64_t> expected_hash) {
        const std::string f = path_.string();
        check(size_ >= shard_header_bytes, [&] {
            return f + ": not a token shard (" + std::to_string(size_) + " bytes, shorter than the 64-byte header)";
        });
        check(std::memcmp(map_, shard_magic, 8) == 0, [&] { return f + ": not a token shard (wrong magic)"; });
        h_.version = detail::get<std::uint32_t>(map_ + 8);
        h_.token_bytes = detail::get<std::uint32_t>(map_ + 12);
        h_.count = detail::get<std::uint64_t>(map_ + 16);
        h_.bos = detail::get<std::uint32_t>(map_ + 28);
        h_.eos = detail::get<std::uint32_t>(map_ + 32);
        h_.vocab_size = detail::get<std::uint32_t>(map_ + 36);
        h_.chunks = detail::get<std::uint64_t>(map_ + 40);
        h_.tokenizer_hash = detail::get<std::uint64_t>(map_ + 56);
        check(h_.version == shard_version, [&] {
            return f + ": token shard version " + std::to_string(h_.version) + ", this tinylm reads version " +
                   std::to_string(shard_version);
        });
        check(h_.token_bytes == 2 || h_.token_bytes == 4,
              [&] { return f + ": bad token width " + std::to_string(h_.token_bytes) + " (2 or 4 bytes)"; });
        // Compare in tokens, not bytes: 64 + count * width wraps for a hostile count (2^63 passes a 64-byte file).
        const std::uint64_t room = (size_ - shard_header_bytes) / h_.token_bytes;
        check(h_.count <= room, [&] {
            const bool fits = h_.count <= (UINT64_MAX - shard_header_bytes) / h_.token_bytes;
            return f + ": truncated token shard: header says " + std::to_string(h_.count) + " tokens (" +
                   (fits ? std::to_string(shard_header_bytes + h_.count * h_.token_bytes) : "over 2^64") +
                   " bytes) but the file has " + std::to_string(size_) + " bytes";
        });
        const std::uint64_t want = shard_header_bytes + h_.count * h_.token_bytes;
        check(size_ == want, [&] {
            return f + ": token shard has " + std::to_string(size_ - want) + " bytes after its " +
                   std::to_string(h_.count) + " tokens";
        });
        if (expected_hash)
            check(h_.tokenizer_hash == *expected_hash, [&] {
                char b[96];
                std::snprintf(b, sizeof b, "%016llx but the tokenizer in use has %016llx",
                              static_cast<unsigned long long>(h_.tokenizer_hash),
                              static_cast<unsigned long long>(*expected_hash));
                return f + ": written by a different tokenizer: shard tokenizer hash " + b;
            });
    }

    std::filesystem::path path_;
    const unsigned char* map_ = nullptr;
    std::size_t size_ = 0;
    shard_header h_;
};

// Draws batches of `batch` windows of `time + 1` consecutive tokens from a shard. Window b of step s starts at
// a position that is a pure function of (seed, s, b), so a loader restored with seek(position()) gives exactly
// the batches an uninterrupted run would have given. Inputs are row[0..T), targets row[1..T].
class batch_loader {
public:
    batch_loader(const token_shard& shard, std::size_t batch, std::size_t time, std::uint64_t seed)
        : shard_(&shard), B_(batch), T_(time), rng_(seed, 0xba7c4) {
        check(batch > 0 && time > 0, "batch_loader: batch and time must be positive");
        check(shard.size() >= time + 1, [&] {
            return shard.path().string() + ": " + std::to_string(shard.size()) +
                   " tokens, fewer than time + 1 = " + std::to_string(time + 1);
        });
    }
    // Fills `out` (B × (T+1), row-major) with the next batch.
    template <class T>
    void next(std::span<T> out) {
        check(out.size() == B_ * (T_ + 1), [&] {
            return "batch_loader: output has " + std::to_string(out.size()) +
                   " elements, expected B × (T + 1) = " + std::to_string(B_ * (T_ + 1));
        });
        const std::uint64_t n_starts = shard_->size() - T_;
        for (std::size_t b = 0; b < B_; ++b) {
            const std::uint64_t r = rng_.at(step_ * B_ + b);
            const auto start = std::uint64_t((static_cast<unsigned __int128>(r) * n_starts) >> 64);
            shard_->copy<T>(start, out.subspan(b * (T_ + 1), T_ + 1));
        }
        ++step_;
    }
    std::uint64_t position() const { return step_; }
    void seek(std::uint64_t step) { step_ = step; }
    std::size_t batch() const { return B_; }
    std::size_t time() const { return T_; }

private:
    const token_shard* shard_;
    std::size_t B_, T_;
    counter_rng rng_;
    std::uint64_t step_ = 0;
};

// ---- chunking ----------------------------------------------------------------------------------------------

struct chunk_options {
    std::size_t context = 512; // tokens per chunk, <bos> and <eos> included
    bool add_bos = true, add_eos = true;
};

// Cuts a document (its paragraphs, each encoded with a trailing "\n") into chunks of at most `context`
// tokens. Paragraphs are kept whole when they fit; a paragraph longer than a chunk is cut between tokens.
// Concatenating the chunks without their <bos>/<eos> gives the encoded document, paragraph by paragraph (with a
// ContinuationEncoder, paragraphs after the first are encoded as continuations).
template <TextEncoder E>
std::vector<std::vector<std::uint32_t>> chunk_document(const std::vector<std::string>& paragraphs, const E& encode,
                                                       const tokenizer_info& tok, const chunk_options& opt = {}) {
    const std::size_t extra = std::size_t(opt.add_bos) + std::size_t(opt.add_eos);
    check(opt.context > extra,
          [&] { return "chunk: context " + std::to_string(opt.context) + " leaves no room for text"; });
    const std::size_t budget = opt.context - extra;
    std::vector<std::vector<std::uint32_t>> out;
    std::vector<std::uint32_t> cur;
    const auto emit = [&] {
        if (cur.empty()) return;
        std::vector<std::uint32_t> c;
        c.reserve(cur.size() + extra);
        if (opt.add_bos) c.push_back(tok.bos);
        c.insert(c.end(), cur.begin(), cur.end());
        if (opt.add_eos) c.push_back(tok.eos);
        out.push_back(std::move(c));
        cur.clear();
    };
    std::string text;
    for (const auto& p : paragraphs) {
        const bool first = &p == &paragraphs.front();
        text.assign(p);
        text.push_back('\n');
        std::vector<std::uint32_t> t;
        if constexpr (ContinuationEncoder<E>)
            t = first ? encode(std::string_view(text)) : encode.continuation(std::string_view(text));
        else
            t = encode(std::string_view(text));
        if (cur.size() + t.size() <= budget) {
            cur.insert(cur.end(), t.begin(), t.end());
            continue;
        }
        emit();
        std::size_t i = 0;
        for (; t.size() - i > budget; i += budget) {
            cur.assign(t.begin() + std::ptrdiff_t(i), t.begin() + std::ptrdiff_t(i + budget));
            emit();
        }
        cur.assign(t.begin() + std::ptrdiff_t(i), t.end());
    }
    emit();
    return out;
}

// A document: an id (for the train/validation split) and its paragraphs.
struct document {
    std::string id;
    std::vector<std::string> paragraphs;
};

// Groups consecutive records of a reader with the same `doc` into documents; the id is the file name of the
// record's source (up to its first ':', without the folder, so that the train/validation split does not
// depend on where a run keeps its files) and the document number.
class document_reader {
public:
    explicit document_reader(reader& in) : in_(&in) {}
    bool next(document& d) {
        d.paragraphs.clear();
        if (!have_) have_ = in_->next(rec_);
        if (!have_) return false;
        const std::uint64_t doc = rec_.doc;
        d.id = std::filesystem::path(rec_.source.substr(0, rec_.source.find(':'))).filename().string() + "#" +
               std::to_string(doc);
        while (have_ && rec_.doc == doc) {
            d.paragraphs.push_back(std::move(rec_.text));
            have_ = in_->next(rec_);
        }
        return true;
    }

private:
    reader* in_;
    record rec_;
    bool have_ = false;
};

// Whether a document goes to validation: a pure function of its id and the seed.
inline bool is_validation(std::string_view id, double fraction, std::uint64_t seed = 0) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (char c : id)
        h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    return double(mix64(h ^ mix64(seed)) >> 11) * 0x1.0p-53 < fraction;
}

struct shard_options {
    chunk_options chunk{};
    double val_fraction = 0.05;
    std::uint64_t split_seed = 0;
    token_dtype dtype = token_dtype::u16;
    int threads = 2;
    std::size_t batch_documents = 16; // documents tokenized together
};

struct shard_summary {
    std::uint64_t train_docs = 0, val_docs = 0, train_chunks = 0, val_chunks = 0, train_tokens = 0, val_tokens = 0;
};

// Tokenizes documents from `next_doc` in parallel (`encode` must be callable from several threads) and writes
// train and validation shards; the output does not depend on the number of threads.
template <TextEncoder E>
shard_summary write_shards(const std::function<bool(document&)>& next_doc, const E& encode, const tokenizer_info& tok,
                           const std::filesystem::path& train_path, const std::filesystem::path& val_path,
                           const shard_options& opt = {}) {
    shard_writer train(train_path, tok, opt.dtype), val(val_path, tok, opt.dtype);
    shard_summary sum;
    std::vector<document> docs;
    std::vector<std::vector<std::vector<std::uint32_t>>> chunks;
    const auto flush = [&] {
        chunks.assign(docs.size(), {});
        const std::size_t n_threads =
            std::max<std::size_t>(1, std::min<std::size_t>(std::size_t(opt.threads), docs.size()));
        std::vector<std::exception_ptr> errors(n_threads);
        std::vector<std::thread> pool;
        for (std::size_t t = 0; t < n_threads; ++t)
            pool.emplace_back([&, t] {
                try {
                    for (std::size_t i = t; i < docs.size(); i += n_threads)
                        chunks[i] = chunk_document(docs[i].paragraphs, encode, tok, opt.chunk);
                } catch (...) {
                    errors[t] = std::current_exception();
                }
            });
        for (auto& th : pool)
            th.join();
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
        for (std::size_t i = 0; i < docs.size(); ++i) {
            const bool v = is_validation(docs[i].id, opt.val_fraction, opt.split_seed);
            auto& w = v ? val : train;
            for (const auto& c : chunks[i]) {
                w.append(c);
                (v ? sum.val_tokens : sum.train_tokens) += c.size();
            }
            (v ? sum.val_chunks : sum.train_chunks) += chunks[i].size();
            ++(v ? sum.val_docs : sum.train_docs);
        }
        docs.clear();
    };
    document d;
    while (next_doc(d)) {
        docs.push_back(std::move(d));
        d = document{};
        if (docs.size() >= opt.batch_documents) flush();
    }
    flush();
    train.close();
    val.close();
    return sum;
}

} // namespace tl::data
