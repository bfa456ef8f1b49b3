// data/tokenizer_file.hpp: shards written with a real model's tokenizer.json (Qwen3's byte-level BPE, Llama-2's
// SentencePiece-style BPE with byte fallback, a Gemma-style one built here) decode back to the cleaned text.
#include <tinylm/data/pipeline.hpp>
#include <tinylm/data/reader.hpp>
#include <tinylm/data/shards.hpp>
#include <tinylm/data/tokenizer_file.hpp>

#include "../support/data.hpp"

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace tl::data;
namespace fs = std::filesystem;

BOOST_AUTO_TEST_SUITE(tokenizer_shards)

namespace {

fs::path scratch(const std::string& name) {
    const fs::path p = fs::temp_directory_path() / ("tinylm_tokshards_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
}

// Cleaned documents: the committed sample of 03_corpus and texts with Latin, digits, emoji and CJK (byte
// fallback in Llama-2), through the cleaner with every alphabet allowed.
std::vector<document> cleaned_documents() {
    clean_options opt;
    opt.allowed = alphabet::any();
    opt.threads = 1;
    cleaner c(opt);
    std::vector<document> docs;
    // Ids without the checkout's path: is_validation hashes the id, and the split must not depend on where the
    // repository lies (with the whole path, a checkout under /work/main put no document in validation).
    const auto sink = [&](const clean_paragraph& p) {
        const std::string id =
            fs::path(p.source.substr(0, p.source.find(':'))).filename().string() + "#" + std::to_string(p.doc);
        if (docs.empty() || docs.back().id != id) docs.push_back({id, {}});
        docs.back().paragraphs.push_back(p.text);
    };
    text_reader sample({fs::path(TINYLM_SOURCE_DIR) / "examples/03_corpus/sample.txt"});
    c.run(sample, sink);
    vector_reader extra(
        {"Кошка сидела на окне. Шёл 1984 год, и было 23 °C.",
         "Mixed text: naïve café, 東京 and 🙂 emoji. «Ёлки-палки», — сказал он.",
         "Ещё один документ. Он короткий.", "Токены <|endoftext|>, <s> и </s> в тексте остаются текстом."},
        "extra");
    c.run(extra, sink);
    BOOST_TEST_REQUIRE(docs.size() >= 4u);
    return docs;
}

std::string joined(const document& d) {
    std::string s;
    for (const auto& p : d.paragraphs)
        s += p + "\n";
    return s;
}

// The chunks of a shard: <bos> ... <eos>, or ... <eos> when the tokenizer has no start token.
std::vector<std::vector<std::uint32_t>> read_chunks(const fs::path& path, const shard_tokenizer& st) {
    const token_shard shard(path, st.info().hash);
    const auto all = shard.tokens();
    std::vector<std::vector<std::uint32_t>> chunks;
    std::vector<std::uint32_t> cur;
    for (std::size_t i = 0; i < all.size(); ++i) {
        cur.push_back(all[i]);
        if (st.has_bos() && cur.size() == 1) {
            BOOST_TEST_REQUIRE(all[i] == st.info().bos);
            continue;
        }
        if (all[i] == st.info().eos) chunks.push_back(std::exchange(cur, {}));
    }
    BOOST_TEST(cur.empty());
    BOOST_TEST(chunks.size() == shard.header().chunks);
    return chunks;
}

// Writes the documents with context `context` and returns (train chunks, validation chunks).
std::pair<std::vector<std::vector<std::uint32_t>>, std::vector<std::vector<std::uint32_t>>>
write_and_read(const std::vector<document>& docs, const shard_tokenizer& st, std::size_t context, const fs::path& dir) {
    std::size_t next = 0;
    shard_options o;
    o.chunk = st.chunking(context);
    o.val_fraction = 0.4;
    o.dtype = st.dtype();
    o.threads = 2;
    o.batch_documents = 2;
    write_shards(
        [&](document& d) {
            if (next == docs.size()) return false;
            d = docs[next++];
            return true;
        },
        st, st.info(), dir / "train.bin", dir / "val.bin", o);
    return {read_chunks(dir / "train.bin", st), read_chunks(dir / "val.bin", st)};
}

std::vector<std::uint32_t> without_boundaries(const std::vector<std::vector<std::uint32_t>>& chunks,
                                              const shard_tokenizer& st) {
    std::vector<std::uint32_t> out;
    for (const auto& c : chunks)
        for (auto t : c)
            if (t != st.info().eos && !(st.has_bos() && t == st.info().bos)) out.push_back(t);
    return out;
}

// Every document is one chunk with a large context: each decodes to its cleaned paragraphs, one per line, and
// holds the ids of the whole document encoded at once (what the model's own tokenizer gives for it, special
// tokens spelled in the text encoded as text: no <bos>/<eos> inside a chunk). Small chunks hold the same token
// stream.
void check_round_trip(const shard_tokenizer& st, const std::string& name) {
    const auto docs = cleaned_documents();
    const fs::path dir = scratch(name);
    const auto [train, val] = write_and_read(docs, st, 1 << 16, dir / "large");
    BOOST_TEST_REQUIRE(train.size() + val.size() == docs.size());
    BOOST_TEST_REQUIRE(!val.empty());
    std::size_t ti = 0, vi = 0;
    for (const auto& d : docs) {
        const bool v = is_validation(d.id, 0.4);
        const auto& chunk = v ? val.at(vi++) : train.at(ti++);
        BOOST_TEST(st.decode_chunk(chunk) == joined(d), name << " " << d.id);
        const auto whole = st.ordinary().encode(joined(d));
        for (std::size_t k = 1; k + 1 < chunk.size(); ++k)
            BOOST_TEST_REQUIRE((chunk[k] != st.info().eos && chunk[k] != st.info().bos));
        const auto inner = without_boundaries({chunk}, st);
        BOOST_TEST(std::vector<std::uint32_t>(whole.begin(), whole.end()) == inner, name << " " << d.id);
    }
    const auto [train_small, val_small] = write_and_read(docs, st, 12, dir / "small");
    BOOST_TEST(train_small.size() > train.size());
    for (const auto& c : train_small)
        BOOST_TEST(c.size() <= 12u);
    BOOST_TEST(without_boundaries(train_small, st) == without_boundaries(train, st));
    BOOST_TEST(without_boundaries(val_small, st) == without_boundaries(val, st));
    fs::remove_all(dir);
}

} // namespace

BOOST_AUTO_TEST_CASE(qwen3_shards_decode_to_the_clean_text, tl_test::needs_data("tokenizers/qwen3/tokenizer.json")) {
    const auto st = shard_tokenizer::load(tl_test::data_path("tokenizers/qwen3/tokenizer.json"));
    // No start token (its vocabulary has "<s>" and "</s>" as ordinary words, not special tokens): documents end
    // with <|endoftext|>; 151,669 ids need 32-bit shards.
    BOOST_TEST(!st.has_bos());
    BOOST_TEST(st.info().eos == std::uint32_t(st.tokenizer().token_to_id("<|endoftext|>")));
    BOOST_TEST(st.info().eos == 151643u);
    BOOST_TEST(st.info().vocab_size == 151669u);
    BOOST_TEST((st.dtype() == token_dtype::u32));
    BOOST_TEST(!st.prepends());
    check_round_trip(st, "qwen3");
}

BOOST_AUTO_TEST_CASE(llama2_shards_decode_to_the_clean_text, tl_test::needs_data("tokenizers/llama2/tokenizer.json")) {
    const auto st = shard_tokenizer::load(tl_test::data_path("tokenizers/llama2/tokenizer.json"));
    BOOST_TEST(st.has_bos());
    BOOST_TEST(st.info().bos == 1u); // <s>
    BOOST_TEST(st.info().eos == 2u); // </s>
    BOOST_TEST((st.dtype() == token_dtype::u16));
    BOOST_TEST(st.prepends());
    // The first paragraph starts with "▁"; a later one, encoded as a continuation, does not.
    const auto first = st("Он\n"), later = st.continuation("Он\n");
    BOOST_TEST(st.tokenizer().id_to_bytes(tl::token_t(first.front())).starts_with("▁"));
    BOOST_TEST(!st.tokenizer().id_to_bytes(tl::token_t(later.front())).starts_with("▁"));
    BOOST_TEST(st.tokenizer().decode(std::vector<tl::token_t>(later.begin(), later.end())) == "Он\n");
    check_round_trip(st, "llama2");
}

BOOST_AUTO_TEST_CASE(names_override_and_missing_tokens, tl_test::needs_data("tokenizers/llama2/tokenizer.json")) {
    const auto path = tl_test::data_path("tokenizers/llama2/tokenizer.json");
    const auto st = shard_tokenizer::load(path, {.bos = "</s>", .eos = "<unk>"});
    BOOST_TEST(st.info().bos == 2u);
    BOOST_TEST(st.info().eos == 0u);
    BOOST_CHECK_EXCEPTION(shard_tokenizer::load(path, {.bos = "", .eos = "<nope>"}), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("'<nope>'") != std::string::npos;
    });
}

// A SentencePiece-style BPE with byte fallback and no Prepend (Gemma's layout: Replace " " -> "▁", decoders
// Replace, ByteFallback, Fuse), built here: 256 byte tokens, a few letters and merges. Needs no data.
BOOST_AUTO_TEST_CASE(sentencepiece_byte_fallback_tokenizer) {
    using nlohmann::json;
    json vocab = json::object();
    int id = 0;
    for (const char* s : {"<pad>", "<eos>", "<bos>", "<unk>"})
        vocab[s] = id++;
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        vocab[name] = id++;
    }
    for (const char* s : {"▁", "к", "о", "т", "ш", "а", ".", "▁к", "от", "▁кот"})
        vocab[s] = id++;
    json j = {{"version", "1.0"},
              {"added_tokens", json::array({{{"id", 0}, {"content", "<pad>"}, {"special", true}},
                                            {{"id", 1}, {"content", "<eos>"}, {"special", true}},
                                            {{"id", 2}, {"content", "<bos>"}, {"special", true}}})},
              {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder",
               {{"type", "Sequence"},
                {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                                          {{"type", "ByteFallback"}},
                                          {{"type", "Fuse"}}})}}},
              {"model",
               {{"type", "BPE"},
                {"byte_fallback", true},
                {"unk_token", "<unk>"},
                {"vocab", vocab},
                {"merges", json::array({"▁ к", "о т", "▁к от"})}}}};
    const fs::path dir = scratch("sp");
    std::ofstream(dir / "tokenizer.json") << j.dump();
    const auto st = shard_tokenizer::load(dir / "tokenizer.json");
    BOOST_TEST(st.has_bos());
    BOOST_TEST(st.info().bos == 2u);
    BOOST_TEST(st.info().eos == 1u);
    BOOST_TEST(!st.prepends());
    BOOST_TEST(st.info().hash == file_fnv1a(dir / "tokenizer.json"));
    const std::vector<document> docs = {
        {"a#0", {"кот шёл.", "а кот ёж 🙂"}}, {"b#1", {"кошка"}}, {"c#2", {"тот"}}};
    std::size_t next = 0;
    shard_options o;
    o.chunk = st.chunking(64);
    o.val_fraction = 0;
    write_shards(
        [&](document& d) {
            if (next == docs.size()) return false;
            d = docs[next++];
            return true;
        },
        st, st.info(), dir / "train.bin", dir / "val.bin", o);
    const auto chunks = read_chunks(dir / "train.bin", st);
    BOOST_TEST_REQUIRE(chunks.size() == docs.size());
    for (std::size_t i = 0; i < docs.size(); ++i)
        BOOST_TEST(st.decode_chunk(chunks[i]) == joined(docs[i]));
    // "▁кот" is one token (three merges); "ё" is not in the vocabulary: two byte tokens.
    const auto ids = st(" кот ё");
    BOOST_TEST(ids.size() == 4u); // ▁кот, ▁, <0xD1>, <0x91>
    BOOST_TEST(st.tokenizer().id_to_bytes(tl::token_t(ids[0])) == "▁кот");
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
