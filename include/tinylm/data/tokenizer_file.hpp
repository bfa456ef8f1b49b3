// tinylm/data/tokenizer_file.hpp: token shards from any Hugging Face tokenizer.json (Qwen's byte-level BPE,
// Llama-2's SentencePiece-style BPE with byte fallback and metaspace, tinylm's own), not only from a tokenizer
// trained by the corpus recipe.
//
//   const auto st = tl::data::shard_tokenizer::load("tokenizers/llama2/tokenizer.json");
//   tl::data::write_shards(next_doc, st, st.info(), "train.bin", "val.bin",
//                          {.chunk = st.chunking(512), .dtype = st.dtype()});
//
// Document boundaries: the shard's <bos>/<eos> are the tokenizer's own document tokens, found by name among its
// special tokens (first match): <bos>, <s>, <|begin_of_text|>, <|startoftext|> for the start; <eos>, </s>,
// <|endoftext|>,
// <|end_of_text|> for the end; or given explicitly. A tokenizer without a start token (GPT-2, Qwen) separates
// documents with its end token alone (chunk_options::add_bos = false; the header's <bos> repeats <eos>).
//
// Paragraphs after a document's first are encoded as the continuation of the text before them: tokenizers
// that prepend "▁" to their input (Llama's Prepend normalizer, Metaspace with prepend_scheme "always") do so
// only once per document, as when the whole document is encoded at once, so a chunk decodes back to its text.
// Special tokens spelled out in the text ("<|endoftext|>" in a page about tokenizers) are encoded as ordinary
// text, as nanoGPT's prepare.py does with tiktoken's encode_ordinary: only the shard's own <bos>/<eos> mark
// documents. Vocabularies above 65,536 entries (Qwen: 151,669) need 32-bit shards (dtype()).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/data/shards.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/tokenizer.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tl::data {

// FNV-1a over a file's bytes: identifies a tokenizer.json in shard headers (the corpus recipes' hash).
inline std::uint64_t file_fnv1a(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    check(bool(in), [&] { return p.string() + ": cannot open"; });
    std::uint64_t h = 0xcbf29ce484222325ull;
    char buf[1 << 16];
    while (in) {
        in.read(buf, sizeof buf);
        for (std::streamsize i = 0; i < in.gcount(); ++i)
            h = (h ^ static_cast<unsigned char>(buf[i])) * 0x100000001b3ull;
    }
    return h;
}

// Copies a tokenizer.json beside the shards made with it (writable, whatever the source's permissions).
inline void copy_tokenizer_file(const std::filesystem::path& from, const std::filesystem::path& to) {
    namespace fs = std::filesystem;
    if (fs::exists(to) && fs::equivalent(from, to)) return;
    if (to.has_parent_path()) fs::create_directories(to.parent_path());
    fs::remove(to);
    fs::copy_file(from, to);
    fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
}

// The token names a shard uses at document boundaries; empty: found by name (see the top of this file).
struct document_token_names {
    std::string bos{}, eos{};
};

// A loaded tokenizer.json as the TextEncoder of write_shards (thread-safe), with its tokenizer_info.
class shard_tokenizer {
public:
    shard_tokenizer(tl::tokenizer tok, std::uint64_t hash, const document_token_names& names = {},
                    const std::string& where = "tokenizer")
        : first_(std::make_shared<const tl::tokenizer>(std::move(tok))), id_(next_id()) {
        const tl::tokenizer& t = *first_;
        info_.hash = hash;
        info_.vocab_size = static_cast<std::uint32_t>(t.vocab_size());
        const auto find = [&](const std::string& given, std::initializer_list<std::string_view> candidates,
                              const char* what) -> token_t {
            if (!given.empty()) {
                const token_t id = t.token_to_id(given);
                check(id >= 0, [&] { return where + ": " + what + " token '" + given + "' is not in the vocabulary"; });
                return id;
            }
            for (std::string_view c : candidates) // special tokens only: Qwen's vocabulary spells "</s>" as a word
                if (const added_token* a = t.added.find(c); a && a->special) return a->id;
            return -1;
        };
        const token_t eos = find(names.eos, {"<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>"}, "end-of-document");
        check(eos >= 0, [&] {
            return where + ": no end-of-document token (<eos>, </s>, <|endoftext|>, <|end_of_text|>); name one "
                           "(--eos)";
        });
        const token_t bos = find(names.bos, {"<bos>", "<s>", "<|begin_of_text|>", "<|startoftext|>"}, "start");
        has_bos_ = bos >= 0;
        info_.eos = static_cast<std::uint32_t>(eos);
        info_.bos = static_cast<std::uint32_t>(has_bos_ ? bos : eos);
        tl::tokenizer ordinary = t; // special tokens are not matched in the text
        ordinary.added = {};
        for (const added_token& a : t.added.tokens())
            if (!a.special) ordinary.added.add(a);
        if (!t.norm.prepend.empty() || t.pre.metaspace_prepend) {
            tl::tokenizer cont = ordinary;
            cont.norm.prepend.clear();
            cont.pre.metaspace_prepend = false;
            continuation_ = std::make_shared<const tl::tokenizer>(std::move(cont));
        }
        ordinary_ = std::make_shared<const tl::tokenizer>(std::move(ordinary));
    }

    // Loads a tokenizer.json; the shard hash is FNV-1a over the file.
    static shard_tokenizer load(const std::filesystem::path& path, const document_token_names& names = {}) {
        check(std::filesystem::exists(path), [&] { return path.string() + ": tokenizer file does not exist"; });
        return shard_tokenizer(tl::load_tokenizer_json(path.string()), file_fnv1a(path), names, path.string());
    }

    const tl::tokenizer& tokenizer() const { return *first_; }
    // The tokenizer that encodes a document's first paragraph: tokenizer() without its special tokens.
    const tl::tokenizer& ordinary() const { return *ordinary_; }
    const tokenizer_info& info() const { return info_; }
    bool has_bos() const { return has_bos_; }
    // Whether later paragraphs are encoded without the tokenizer's prepended "▁".
    bool prepends() const { return continuation_ != nullptr; }
    // 16-bit tokens when every id fits, else 32-bit.
    token_dtype dtype() const { return info_.vocab_size <= 65536 ? token_dtype::u16 : token_dtype::u32; }
    chunk_options chunking(std::size_t context) const {
        chunk_options c;
        c.context = context;
        c.add_bos = has_bos_;
        c.add_eos = true;
        return c;
    }

    // A document's first paragraph.
    std::vector<std::uint32_t> operator()(std::string_view text) const { return encode(*ordinary_, text, 0); }
    // A later paragraph: what it adds to the encoding of the document so far.
    std::vector<std::uint32_t> continuation(std::string_view text) const {
        return continuation_ ? encode(*continuation_, text, 1) : encode(*ordinary_, text, 0);
    }

    // The text of a chunk read back from a shard, without its <bos>/<eos>.
    std::string decode_chunk(std::span<const std::uint32_t> chunk) const {
        std::vector<token_t> ids;
        ids.reserve(chunk.size());
        for (std::uint32_t t : chunk)
            if (!(t == info_.eos || (has_bos_ && t == info_.bos))) ids.push_back(static_cast<token_t>(t));
        return first_->decode(ids);
    }

private:
    static std::uint64_t next_id() {
        static std::atomic<std::uint64_t> n{0};
        return ++n;
    }
    // Each thread keeps one word cache per tokenizer of the object it last encoded for.
    std::vector<std::uint32_t> encode(const tl::tokenizer& t, std::string_view text, int which) const {
        struct caches {
            std::uint64_t owner = 0;
            std::unique_ptr<encode_cache> c[2];
        };
        thread_local caches tc;
        if (tc.owner != id_) {
            tc.owner = id_;
            tc.c[0] = std::make_unique<encode_cache>();
            tc.c[1] = std::make_unique<encode_cache>();
        }
        std::vector<token_t> ids;
        t.encode_into(text, ids, tc.c[which].get());
        return std::vector<std::uint32_t>(ids.begin(), ids.end());
    }

    std::shared_ptr<const tl::tokenizer> first_, ordinary_, continuation_;
    std::uint64_t id_;
    tokenizer_info info_{};
    bool has_bos_ = false;
};

} // namespace tl::data
