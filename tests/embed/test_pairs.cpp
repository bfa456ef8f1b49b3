// Pair data (data/pairs.hpp): the accepted JSONL keys and TSV, and each error with its file:line; the
// no-duplicates sampler (data/pair_sampler.hpp): no text twice in a batch, every row once per epoch,
// determinism for a seed, drop_last and resume.
#include <tinylm/data/pair_sampler.hpp>
#include <tinylm/data/pairs.hpp>

#include "../support/errors.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

using namespace tl;
using namespace tl::data;

namespace {

using tl_test::error_of;

std::filesystem::path write_file(const std::string& name, const std::string& text) {
    const auto dir = std::filesystem::temp_directory_path() / "tinylm_test_pairs";
    std::filesystem::create_directories(dir);
    const auto path = dir / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// "q7" and the like (built with append: GCC 12 warns falsely, -Wrestrict, on a literal + std::to_string).
std::string name(char prefix, int i) {
    std::string s(1, prefix);
    s.append(std::to_string(i));
    return s;
}

} // namespace

BOOST_AUTO_TEST_SUITE(pairs)

BOOST_AUTO_TEST_CASE(jsonl_keys_and_negatives) {
    const auto p =
        write_file("keys.jsonl", "{\"anchor\": \"a1\", \"positive\": \"p1\", \"negative\": \"n1\"}\n"
                                 "\n"
                                 "{\"query\": \"a2\", \"document\": \"p2\", \"negatives\": [\"n2\"], \"id\": 7}\r\n"
                                 "{\"sentence1\": \"a3\", \"sentence2\": \"p3\", \"negative\": [\"n3\"]}\n");
    const auto rows = read_pairs(p);
    BOOST_TEST_REQUIRE(rows.size() == 3u);
    BOOST_TEST(rows[1].anchor == "a2");
    BOOST_TEST(rows[1].positive == "p2");
    BOOST_TEST(rows[2].negatives == std::vector<std::string>{"n3"});
    BOOST_TEST(rows[1].source == p.string() + ":3");
    BOOST_TEST(read_pairs(p, {.limit = 2}).size() == 2u);
}

BOOST_AUTO_TEST_CASE(tsv_with_header) {
    const auto p = write_file("pairs.tsv", "anchor\tpositive\tnegative\nwhat is x\tx is y\tz is w\nq2\td2\tn2\n");
    const auto rows = read_pairs(p);
    BOOST_TEST_REQUIRE(rows.size() == 2u);
    BOOST_TEST(rows[0].anchor == "what is x");
    BOOST_TEST(rows[0].negatives == std::vector<std::string>{"z is w"});
    BOOST_TEST(rows[1].source == p.string() + ":3");
}

BOOST_AUTO_TEST_CASE(errors_name_file_and_line) {
    const auto empty = write_file("empty.jsonl", "\n  \n");
    BOOST_TEST(contains(error_of([&] { read_pairs(empty); }), "empty.jsonl: no pairs"));
    const auto empty_tsv = write_file("empty.tsv", "");
    BOOST_TEST(contains(error_of([&] { read_pairs(empty_tsv); }), "no pairs"));

    const auto bad = write_file("bad.jsonl", "{\"anchor\": \"a\", \"positive\": \"p\"}\n{\"anchor\": \"a\", \n");
    BOOST_TEST(contains(error_of([&] { read_pairs(bad); }), "bad.jsonl:2: invalid JSON"));

    const auto missing = write_file("missing.jsonl", "{\"anchor\": \"a\", \"answer\": \"p\"}\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(missing); }), "missing.jsonl:1: missing field"));

    const auto side = write_file("side.jsonl", "{\"anchor\": \"a\", \"positive\": \"p\"}\n"
                                               "{\"anchor\": \"a2\", \"positive\": \"  \"}\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(side); }), "side.jsonl:2: the \"positive\" is empty"));

    const auto neg = write_file("neg.jsonl", "{\"anchor\": \"a\", \"positive\": \"p\", \"negative\": [\"x\", \"\"]}\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(neg); }), "neg.jsonl:1: the \"negative\"[1] is empty"));

    const auto type = write_file("type.jsonl", "{\"anchor\": 3, \"positive\": \"p\"}\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(type); }), "type.jsonl:1: \"anchor\" must be a string"));

    const auto counts = write_file("counts.jsonl", "{\"anchor\": \"a\", \"positive\": \"p\", \"negative\": \"n\"}\n"
                                                   "{\"anchor\": \"b\", \"positive\": \"q\"}\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(counts); }), "counts.jsonl:2: 0 negatives"));

    const auto one_column = write_file("one.tsv", "a\tp\nonly anchor\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(one_column); }), "one.tsv:2: a pair needs two"));
    const auto empty_side = write_file("side.tsv", "a\t\n");
    BOOST_TEST(contains(error_of([&] { read_pairs(empty_side); }), "side.tsv:1: the positive (column 2) is empty"));

    BOOST_TEST(contains(error_of([&] { read_pairs("/nonexistent/pairs.jsonl"); }), "cannot open"));
}

BOOST_AUTO_TEST_CASE(gather_columns) {
    std::vector<text_pair> rows = {
        {"a0", "p0", {"n0a", "n0b"}, ""}, {"a1", "p1", {"n1a", "n1b"}, ""}, {"a2", "p2", {"n2a", "n2b"}, ""}};
    const std::vector<std::size_t> idx = {2, 0};
    const auto b = gather_pairs(rows, idx);
    BOOST_TEST(b.anchors == (std::vector<std::string>{"a2", "a0"}));
    BOOST_TEST(b.positives == (std::vector<std::string>{"p2", "p0"}));
    BOOST_TEST(b.negatives == (std::vector<std::string>{"n2a", "n2b", "n0a", "n0b"}));
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// 60 rows over a small pool of texts so that batches often clash: anchors repeat every 17 rows, positives
// every 11, and the negative of row i is the positive of row i + 3.
std::vector<text_pair> clashing_rows() {
    std::vector<text_pair> rows;
    for (int i = 0; i < 60; ++i)
        rows.push_back({name('q', i % 17), name('d', i % 11), {name('d', (i + 3) % 11)}, ""});
    return rows;
}

void expect_no_duplicates(const std::vector<text_pair>& rows, std::span<const std::size_t> batch) {
    std::set<std::string> texts;
    for (std::size_t r : batch) {
        std::set<std::string> own = {rows[r].anchor, rows[r].positive};
        own.insert(rows[r].negatives.begin(), rows[r].negatives.end());
        for (const auto& t : own)
            BOOST_TEST(texts.insert(t).second, "text \"" << t << "\" twice in a batch");
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(pair_sampler)

BOOST_AUTO_TEST_CASE(no_duplicates_and_every_row_once) {
    const auto rows = clashing_rows();
    no_duplicates_sampler s(rows, 4, 123);
    BOOST_TEST(s.batches_in_epoch() > 15u); // clashes deferred rows into short batches: more than ceil(60 / 4)
    for (int epoch = 0; epoch < 3; ++epoch) {
        BOOST_TEST(s.position().epoch == std::uint64_t(epoch));
        std::vector<int> used(rows.size(), 0);
        const std::size_t n = s.batches_in_epoch();
        for (std::size_t b = 0; b < n; ++b) {
            const auto batch = s.next();
            BOOST_TEST(!batch.empty());
            BOOST_TEST(batch.size() <= 4u);
            expect_no_duplicates(rows, batch);
            for (std::size_t r : batch)
                ++used[r];
        }
        for (int u : used)
            BOOST_TEST(u == 1);
        s.next(); // moves to the next epoch
        s.set_position({std::uint64_t(epoch + 1), 0});
    }
}

BOOST_AUTO_TEST_CASE(clean_rows_fill_every_batch) {
    std::vector<text_pair> rows;
    for (int i = 0; i < 10; ++i)
        rows.push_back({name('q', i), name('d', i), {}, ""});
    no_duplicates_sampler s(rows, 4, 1);
    BOOST_TEST(s.batches_in_epoch() == 3u); // 4 + 4 + 2
    BOOST_TEST(s.epoch_batches()[2].size() == 2u);
    no_duplicates_sampler dropping(rows, 4, 1, /*drop_last=*/true);
    BOOST_TEST(dropping.batches_in_epoch() == 2u);
    for (const auto& b : dropping.epoch_batches())
        BOOST_TEST(b.size() == 4u);
}

BOOST_AUTO_TEST_CASE(deterministic_and_seeded) {
    const auto rows = clashing_rows();
    no_duplicates_sampler a(rows, 5, 7), b(rows, 5, 7), c(rows, 5, 8);
    BOOST_TEST(a.epoch_batches() == b.epoch_batches());
    BOOST_TEST(a.epoch_batches() != c.epoch_batches());
    // Epochs differ from each other, and epoch 1 does not depend on how epoch 0 was consumed.
    const auto first = a.epoch_batches();
    a.set_position({1, 0});
    BOOST_TEST(a.epoch_batches() != first);
    while (b.position().epoch == 0 || b.position().batch == 0)
        b.next();
    BOOST_TEST(b.epoch_batches() == a.epoch_batches());
}

BOOST_AUTO_TEST_CASE(resume_continues_the_same_batches) {
    const auto rows = clashing_rows();
    no_duplicates_sampler full(rows, 6, 99);
    std::vector<std::vector<std::size_t>> reference;
    sampler_position saved;
    for (int i = 0; i < 40; ++i) {
        if (i == 23) saved = full.position();
        const auto batch = full.next();
        reference.emplace_back(batch.begin(), batch.end());
    }
    BOOST_TEST(saved.epoch >= 1u); // the saved position lies past an epoch boundary
    no_duplicates_sampler resumed(rows, 6, 99);
    resumed.set_position(saved);
    for (int i = 23; i < 40; ++i) {
        const auto batch = resumed.next();
        BOOST_TEST(std::vector<std::size_t>(batch.begin(), batch.end()) == reference[std::size_t(i)]);
    }
    BOOST_CHECK_THROW(resumed.set_position({0, 1000}), tl::error);
}

BOOST_AUTO_TEST_CASE(drop_last_without_any_full_batch) {
    // Every row shares the positive: no batch of 2 is possible.
    std::vector<text_pair> rows = {{"a", "p", {}, ""}, {"b", "p", {}, ""}, {"c", "p", {}, ""}};
    no_duplicates_sampler keep(rows, 2, 0);
    BOOST_TEST(keep.batches_in_epoch() == 3u);
    no_duplicates_sampler drop(rows, 2, 0, true);
    BOOST_TEST(drop.batches_in_epoch() == 0u);
    BOOST_CHECK_THROW(drop.next(), tl::error);
}

BOOST_AUTO_TEST_SUITE_END()
