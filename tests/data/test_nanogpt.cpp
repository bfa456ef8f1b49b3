// data/nanogpt.hpp: tinylm shards to nanoGPT's train.bin / val.bin / meta.json and back, byte for byte.
#include <tinylm/data/nanogpt.hpp>
#include <tinylm/data/shards.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <unistd.h>

using namespace tl::data;
namespace fs = std::filesystem;

BOOST_AUTO_TEST_SUITE(nanogpt)

namespace {

fs::path scratch(const std::string& name) {
    const fs::path p = fs::temp_directory_path() / ("tinylm_nanogpt_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
}

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Bytes shifted up by `offset` (so that ids pass 65,535 when offset is large).
struct offset_encoder {
    std::uint32_t offset = 0;
    std::vector<std::uint32_t> operator()(std::string_view s) const {
        std::vector<std::uint32_t> ids;
        for (char c : s)
            ids.push_back(offset + static_cast<unsigned char>(c));
        return ids;
    }
};

void make_shards(const fs::path& dir, const offset_encoder& enc, const tokenizer_info& tok, token_dtype dtype) {
    const std::vector<document> docs = {{"a#0", {"первый документ", "второй абзац"}},
                                        {"b#1", {"short"}},
                                        {"c#2", {"third document, long enough to need two chunks of 16"}},
                                        {"d#3", {"четвёртый"}},
                                        {"e#4", {"fifth"}}};
    std::size_t next = 0;
    shard_options o;
    o.chunk.context = 16;
    o.val_fraction = 0.4;
    o.dtype = dtype;
    write_shards(
        [&](document& d) {
            if (next == docs.size()) return false;
            d = docs[next++];
            return true;
        },
        enc, tok, dir / "train.bin", dir / "val.bin", o);
}

// The tokens of a raw nanoGPT file of width w, read the way numpy's memmap reads them.
std::vector<std::uint32_t> raw_tokens(const fs::path& p, std::size_t w) {
    const std::string b = read_bytes(p);
    BOOST_TEST_REQUIRE(b.size() % w == 0);
    std::vector<std::uint32_t> v;
    for (std::size_t i = 0; i < b.size(); i += w) {
        std::uint32_t t = 0;
        for (std::size_t k = 0; k < w; ++k)
            t |= std::uint32_t(static_cast<unsigned char>(b[i + k])) << (8 * k); // little-endian
        v.push_back(t);
    }
    return v;
}

void round_trip(const offset_encoder& enc, const tokenizer_info& tok, token_dtype dtype, std::size_t width,
                const std::string& name) {
    const fs::path dir = scratch(name);
    make_shards(dir / "tinylm", enc, tok, dtype);
    const nanogpt_meta m = export_nanogpt(dir / "tinylm/train.bin", dir / "tinylm/val.bin", dir / "nanogpt");
    BOOST_TEST((m.dtype == dtype));
    for (const char* split : {"train.bin", "val.bin"}) {
        const token_shard shard(dir / "tinylm" / split);
        BOOST_TEST(raw_tokens(dir / "nanogpt" / split, width) == shard.tokens(), split);
        BOOST_TEST(fs::file_size(dir / "nanogpt" / split) == shard.size() * width);
    }
    const auto j = nlohmann::json::parse(read_bytes(dir / "nanogpt/meta.json"));
    BOOST_TEST(j["dtype"].get<std::string>() == (width == 2 ? "uint16" : "uint32"));
    BOOST_TEST(j["vocab_size"].get<std::uint32_t>() == tok.vocab_size);
    BOOST_TEST(j["eos"].get<std::uint32_t>() == tok.eos);
    BOOST_TEST(j["train_tokens"].get<std::uint64_t>() == token_shard(dir / "tinylm/train.bin").size());

    const nanogpt_meta back = import_nanogpt(dir / "nanogpt", dir / "again/train.bin", dir / "again/val.bin");
    BOOST_TEST(back.tokenizer_hash == tok.hash);
    for (const char* split : {"train.bin", "val.bin"})
        BOOST_TEST(read_bytes(dir / "again" / split) == read_bytes(dir / "tinylm" / split), split);
    BOOST_TEST(token_shard(dir / "again/train.bin").header().chunks > 2u);
    fs::remove_all(dir);
}

} // namespace

BOOST_AUTO_TEST_CASE(uint16_round_trip) {
    round_trip({0}, {.hash = 0x0123456789abcdefull, .bos = 256, .eos = 257, .vocab_size = 258}, token_dtype::u16, 2,
               "u16");
}

// Ids above 65,535 (a Qwen-sized vocabulary) go out as uint32.
BOOST_AUTO_TEST_CASE(uint32_round_trip) {
    round_trip({151000}, {.hash = 0xfeedull, .bos = 151644, .eos = 151643, .vocab_size = 151669}, token_dtype::u32, 4,
               "u32");
}

// A file as nanoGPT's GPT-2 prepare.py writes it: documents ended by <|endoftext|> (50256), meta written by hand.
BOOST_AUTO_TEST_CASE(import_a_nanogpt_file) {
    const fs::path dir = scratch("gpt2");
    const std::vector<std::uint16_t> ids = {15496, 995, 50256, 40, 1101, 257, 50256, 31373};
    for (const char* split : {"train.bin", "val.bin"})
        std::ofstream(dir / split, std::ios::binary)
            .write(reinterpret_cast<const char*>(ids.data()), std::streamsize(ids.size() * 2));
    std::ofstream(dir / "meta.json") << R"({"vocab_size": 50257, "eos": 50256})";
    const nanogpt_meta m = import_nanogpt(dir, dir / "shards/train.bin", dir / "shards/val.bin");
    BOOST_TEST(m.bos == 50256u); // no "bos": documents are separated by <eos> alone
    const token_shard s(dir / "shards/train.bin");
    BOOST_TEST(s.header().chunks == 3u); // two ended by 50256, and the unfinished tail
    BOOST_TEST(s.header().vocab_size == 50257u);
    BOOST_TEST(s.tokens() == std::vector<std::uint32_t>(ids.begin(), ids.end()));
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(bad_files_are_named) {
    const fs::path dir = scratch("bad");
    const auto fails_with = [&](const std::string& needle) {
        BOOST_CHECK_EXCEPTION(import_nanogpt(dir, dir / "out/train.bin", dir / "out/val.bin"), tl::error,
                              [&](const tl::error& e) {
                                  BOOST_TEST_MESSAGE(e.what());
                                  return std::string(e.what()).find(needle) != std::string::npos;
                              });
    };
    std::ofstream(dir / "train.bin", std::ios::binary) << "abc"; // 3 bytes: not whole uint16 tokens
    std::ofstream(dir / "val.bin", std::ios::binary) << "ab";
    std::ofstream(dir / "meta.json") << R"({"vocab_size": 70000, "eos": 1})";
    fails_with("does not fit dtype uint16");
    std::ofstream(dir / "meta.json") << R"({"vocab_size": 300, "eos": 1, "dtype": "int8"})";
    fails_with("\"dtype\" must be uint16 or uint32");
    std::ofstream(dir / "meta.json") << R"({"vocab_size": 300, "eos": 1})";
    fails_with("is not a whole number of uint16 tokens");
    std::ofstream(dir / "train.bin", std::ios::binary) << "abcd"; // 0x6261 = 25185 >= 300
    fails_with("token 25185 at position 0 is outside the vocabulary of 300");
    BOOST_TEST(!fs::exists(dir / "out/train.bin")); // no shard left behind
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
