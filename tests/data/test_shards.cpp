// data/shards.hpp: chunking, shard round trip, header errors, deterministic and resumable batches.
#include <tinylm/data/reader.hpp>
#include <tinylm/data/shards.hpp>
#include <tinylm/train/shard_batches.hpp>

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace tl::data;
namespace fs = std::filesystem;

BOOST_AUTO_TEST_SUITE(shards)

namespace {

// A byte-level tokenizer for the tests: ids 0..255 are bytes, 256 is <bos>, 257 is <eos>.
struct byte_encoder {
    std::vector<std::uint32_t> operator()(std::string_view s) const {
        std::vector<std::uint32_t> ids;
        for (char c : s)
            ids.push_back(static_cast<unsigned char>(c));
        return ids;
    }
};
static_assert(TextEncoder<byte_encoder>);
const tokenizer_info byte_tok{.hash = 0xb17e5ull, .bos = 256, .eos = 257, .vocab_size = 258};

std::string decode(std::span<const std::uint32_t> ids) {
    std::string s;
    for (auto t : ids) {
        BOOST_TEST_REQUIRE(t < 256u);
        s.push_back(static_cast<char>(static_cast<unsigned char>(t)));
    }
    return s;
}

// A scratch folder for this process, removed at exit.
fs::path scratch(const std::string& name) {
    struct folder {
        fs::path path = fs::temp_directory_path() / ("tinylm_shards_" + std::to_string(::getpid()));
        folder() { fs::create_directories(path); }
        ~folder() {
            std::error_code ec;
            fs::remove_all(path, ec);
        }
    };
    static const folder f;
    return f.path / name;
}

std::vector<document> make_documents(int n) {
    std::vector<document> docs;
    for (int d = 0; d < n; ++d) {
        document doc{"doc" + std::to_string(d), {}};
        for (int p = 0; p < 1 + d % 4; ++p)
            doc.paragraphs.push_back("Документ " + std::to_string(d) + ", абзац " + std::to_string(p) +
                                     std::string(std::size_t(d * 7 % 90), 'x'));
        docs.push_back(doc);
    }
    return docs;
}

} // namespace

BOOST_AUTO_TEST_CASE(chunks_fit_the_context_and_concatenate_to_the_document) {
    const std::vector<std::string> paras{"Короткий абзац.", std::string(300, 'a'), "Ещё один.", "И последний."};
    for (std::size_t ctx : {8u, 20u, 64u, 1000u}) {
        const auto chunks = chunk_document(paras, byte_encoder{}, byte_tok, {.context = ctx});
        std::string text;
        for (const auto& c : chunks) {
            BOOST_TEST_REQUIRE(c.size() <= ctx);
            BOOST_TEST_REQUIRE(c.size() >= 3u);
            BOOST_TEST(c.front() == 256u);
            BOOST_TEST(c.back() == 257u);
            text += decode(std::span(c).subspan(1, c.size() - 2));
        }
        BOOST_TEST(text == "Короткий абзац.\n" + paras[1] + "\nЕщё один.\nИ последний.\n");
    }
    // paragraphs that fit are not cut
    const auto chunks = chunk_document(paras, byte_encoder{}, byte_tok, {.context = 40});
    BOOST_TEST(decode(std::span(chunks[0]).subspan(1, chunks[0].size() - 2)) == "Короткий абзац.\n");
    BOOST_CHECK_THROW(chunk_document(paras, byte_encoder{}, byte_tok, {.context = 2}), tl::error);
}

BOOST_AUTO_TEST_CASE(shards_round_trip_and_split_by_document) {
    const auto docs = make_documents(200);
    for (auto dtype : {token_dtype::u16, token_dtype::u32}) {
        std::size_t next = 0;
        const auto source = [&](document& d) {
            if (next == docs.size()) return false;
            d = docs[next++];
            return true;
        };
        const auto sum =
            write_shards(source, encode_fn(byte_encoder{}), byte_tok, scratch("train.bin"), scratch("val.bin"),
                         {.chunk = {.context = 32}, .val_fraction = 0.2, .dtype = dtype, .threads = 2});
        BOOST_TEST(sum.train_docs + sum.val_docs == 200u);
        BOOST_TEST(sum.val_docs > 20u);
        BOOST_TEST(sum.val_docs < 60u);
        const token_shard train(scratch("train.bin"), byte_tok.hash), val(scratch("val.bin"), byte_tok.hash);
        BOOST_TEST(train.header().token_bytes == std::uint32_t(dtype));
        BOOST_TEST(train.size() == sum.train_tokens);
        BOOST_TEST(val.header().chunks == sum.val_chunks);
        // decoding the shards gives back the documents, in order, split by is_validation
        std::string want_train, want_val;
        for (const auto& d : docs) {
            std::string t;
            for (const auto& p : d.paragraphs)
                t += p + "\n";
            (is_validation(d.id, 0.2) ? want_val : want_train) += t;
        }
        const auto strip = [](const token_shard& s) {
            std::vector<std::uint32_t> ids;
            for (auto t : s.tokens())
                if (t < 256) ids.push_back(t);
            return decode(ids);
        };
        BOOST_TEST(strip(train) == want_train);
        BOOST_TEST(strip(val) == want_val);
        BOOST_TEST(!fs::exists(scratch("train.bin.tmp")));
    }
}

BOOST_AUTO_TEST_CASE(bad_shards_fail_clearly) {
    {
        shard_writer w(scratch("ok.bin"), byte_tok);
        std::vector<std::uint32_t> c{256, 1, 2, 3, 257};
        w.append(c);
        BOOST_CHECK_THROW(w.append(std::vector<std::uint32_t>{300}), tl::error); // above the vocabulary
        w.close();
    }
    const auto message = [](const fs::path& p, std::optional<std::uint64_t> h) {
        try {
            token_shard s(p, h);
        } catch (const tl::error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    BOOST_TEST(message(scratch("ok.bin"), byte_tok.hash) == "no error");
    // wrong tokenizer hash
    BOOST_TEST(message(scratch("ok.bin"), 0x1234ull).find("written by a different tokenizer") != std::string::npos);
    // truncated
    fs::copy_file(scratch("ok.bin"), scratch("trunc.bin"), fs::copy_options::overwrite_existing);
    fs::resize_file(scratch("trunc.bin"), fs::file_size(scratch("ok.bin")) - 3);
    const auto t = message(scratch("trunc.bin"), {});
    BOOST_TEST(t.find("trunc.bin: truncated token shard: header says 5 tokens (74 bytes) but the file has 71 bytes") !=
               std::string::npos);
    BOOST_TEST_MESSAGE(t);
    // a 64-byte shard whose header declares 2^63 (or 2^62 four-byte) tokens: 64 + count * width wraps
    for (const char* name : {"count_wraps.bin", "count_wraps_u32.bin"}) {
        const auto m = message(fs::path(TINYLM_SOURCE_DIR) / "tests/regressions/shards" / name, {});
        BOOST_TEST(m.find("truncated token shard: header says") != std::string::npos, m);
        BOOST_TEST(m.find("but the file has 64 bytes") != std::string::npos, m);
    }
    fs::resize_file(scratch("trunc.bin"), 10);
    BOOST_TEST(message(scratch("trunc.bin"), {}).find("shorter than the 64-byte header") != std::string::npos);
    // wrong magic
    {
        std::ofstream f(scratch("magic.bin"), std::ios::binary);
        f << std::string(80, 'x');
    }
    BOOST_TEST(message(scratch("magic.bin"), {}).find("magic.bin: not a token shard (wrong magic)") !=
               std::string::npos);
    BOOST_TEST(message(scratch("missing.bin"), {}).find("cannot open") != std::string::npos);
    // u16 cannot hold a large vocabulary
    BOOST_CHECK_THROW(shard_writer(scratch("big.bin"), {.hash = 1, .bos = 0, .eos = 1, .vocab_size = 151643}),
                      tl::error);
    BOOST_TEST(!fs::exists(scratch("big.bin.tmp")));
}

BOOST_AUTO_TEST_CASE(loader_is_deterministic_and_resumable) {
    {
        shard_writer w(scratch("seq.bin"), {.hash = 7, .bos = 0, .eos = 1, .vocab_size = 0}, token_dtype::u32);
        std::vector<std::uint32_t> ids(10000);
        for (std::uint32_t i = 0; i < ids.size(); ++i)
            ids[i] = i;
        w.append(ids);
        w.close();
    }
    const token_shard s(scratch("seq.bin"), 7);
    constexpr std::size_t B = 4, T = 16;
    batch_loader a(s, B, T, 42);
    std::vector<std::vector<std::int32_t>> run;
    for (int step = 0; step < 10; ++step) {
        std::vector<std::int32_t> batch(B * (T + 1));
        a.next(std::span(batch));
        for (std::size_t b = 0; b < B; ++b)
            for (std::size_t t = 0; t < T; ++t) // windows of consecutive tokens
                BOOST_TEST_REQUIRE(batch[b * (T + 1) + t + 1] == batch[b * (T + 1) + t] + 1);
        run.push_back(batch);
    }
    BOOST_TEST(run[0] != run[1]);
    // resume after step 6 from a saved position, in a fresh loader
    batch_loader first(s, B, T, 42);
    std::vector<std::int32_t> batch(B * (T + 1));
    for (int step = 0; step < 6; ++step)
        first.next(std::span(batch));
    const std::uint64_t saved = first.position();
    batch_loader resumed(s, B, T, 42);
    resumed.seek(saved);
    for (int step = 6; step < 10; ++step) {
        resumed.next(std::span(batch));
        BOOST_TEST(batch == run[std::size_t(step)], boost::test_tools::per_element());
    }
    // another seed gives other batches
    batch_loader other(s, B, T, 43);
    other.next(std::span(batch));
    BOOST_TEST(batch != run[0]);
    BOOST_CHECK_THROW(batch_loader(s, 1, 10000, 1), tl::error);
}

// The split is a function of the file name and the document number, not of the folder a run uses.
BOOST_AUTO_TEST_CASE(document_ids_do_not_depend_on_the_folder) {
    std::vector<std::vector<std::string>> ids;
    for (const char* folder : {"run_a", "elsewhere/run_b"}) {
        const fs::path dir = scratch("ids") / folder;
        fs::create_directories(dir);
        std::ofstream(dir / "clean.jsonl") << "{\"doc\": 0, \"text\": \"a\"}\n{\"doc\": 0, \"text\": \"b\"}\n"
                                           << "{\"doc\": 7, \"text\": \"c\"}\n";
        jsonl_reader in({dir / "clean.jsonl"}, "text", true, "doc");
        document_reader docs(in);
        document d;
        ids.emplace_back();
        while (docs.next(d))
            ids.back().push_back(d.id + ":" + std::to_string(d.paragraphs.size()));
    }
    BOOST_TEST(ids[0] == (std::vector<std::string>{"clean.jsonl#0:2", "clean.jsonl#7:1"}),
               boost::test_tools::per_element());
    BOOST_TEST(ids[0] == ids[1], boost::test_tools::per_element());
}

// The trainer's view of a shard: targets are the ids shifted by one, and seek resumes the same batches.
BOOST_AUTO_TEST_CASE(shard_batches_give_next_token_targets_and_resume) {
    {
        shard_writer w(scratch("seq2.bin"), {.hash = 7, .bos = 0, .eos = 1, .vocab_size = 0}, token_dtype::u32);
        std::vector<std::uint32_t> ids(5000);
        for (std::uint32_t i = 0; i < ids.size(); ++i)
            ids[i] = i;
        w.append(ids);
        w.close();
    }
    const token_shard s(scratch("seq2.bin"), 7);
    constexpr tl::index_t B = 3, T = 8;
    std::vector<tl::token_t> ids(B * T), targets(B * T), again_ids(B * T), again_targets(B * T);
    const tl::tensor_view<tl::token_t> x{ids.data(), {B, T}}, y{targets.data(), {B, T}};
    tl::shard_batches a(s, B, T, 5);
    a.next(x, y);
    const std::uint64_t saved = a.position();
    a.next(x, y);
    for (std::size_t i = 0; i < ids.size(); ++i)
        BOOST_TEST_REQUIRE(targets[i] == ids[i] + 1);
    tl::shard_batches b(s, B, T, 5);
    b.seek(saved);
    b.next({again_ids.data(), {B, T}}, {again_targets.data(), {B, T}});
    BOOST_TEST(again_ids == ids, boost::test_tools::per_element());
    BOOST_TEST(again_targets == targets, boost::test_tools::per_element());
    std::vector<tl::token_t> wrong(B * (T + 1));
    BOOST_CHECK_THROW(b.next({wrong.data(), {B, T + 1}}, {wrong.data(), {B, T + 1}}), tl::error);
}

BOOST_AUTO_TEST_SUITE_END()
