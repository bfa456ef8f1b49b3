// Padding and packing (data/sft_batch.hpp) and the decoder's document boundaries: a packed row of several
// documents gives the same loss, gradients and logits as the documents run as separate padded rows, with full
// attention and with a sliding window; the KV-cache path agrees with the packed row's positions.
#include "../model/fixture_configs.hpp"
#include "../support/random.hpp"

#include <tinylm/backend/eigen.hpp>
#include <tinylm/data/sft_batch.hpp>
#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/presets.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

using namespace tl;
using namespace tl::data;
using namespace tl::test;

namespace {

// A random example of n tokens: ids in [3, vocab), labels on the second half (as an assistant reply would be).
sft_example random_example(std::size_t n, std::uint64_t seed, int vocab = 256) {
    counter_rng rng(seed, 5);
    sft_example ex;
    for (std::size_t t = 0; t < n; ++t) {
        ex.ids.push_back(std::int32_t(3 + rng.below(std::uint64_t(vocab - 3))));
        ex.labels.push_back(t >= n / 2 ? ex.ids.back() : sft_ignore_index);
    }
    ex.full_length = n;
    ex.source = "example " + std::to_string(seed);
    return ex;
}

struct tiny_window { // the tiny preset with a sliding window of 4 in every layer
    static constexpr model_config value{.vocab_size = 256,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 64,
                                        .max_seq_len = 64,
                                        .sliding_window = 4,
                                        .init_std = 0.1};
};
struct tiny_full {
    static constexpr model_config value{.vocab_size = 256,
                                        .d_model = 32,
                                        .n_layers = 2,
                                        .n_heads = 4,
                                        .n_kv_heads = 2,
                                        .d_ff = 64,
                                        .max_seq_len = 64,
                                        .init_std = 0.1};
};

template <class M>
std::map<std::string, std::vector<float>> gradients(const M& m) {
    std::map<std::string, std::vector<float>> g;
    for (const parameter_entry& e : m.parameter_entries())
        g[e.name].assign(e.grad.begin(), e.grad.end());
    return g;
}

} // namespace

BOOST_AUTO_TEST_SUITE(sft_packing)

BOOST_AUTO_TEST_CASE(padding_layout) {
    const std::vector<sft_example> exs = {random_example(5, 1), random_example(3, 2), random_example(2, 3)};
    sft_example unlabelled = random_example(4, 4);
    std::fill(unlabelled.labels.begin() + 1, unlabelled.labels.end(), sft_ignore_index);
    unlabelled.labels[0] = unlabelled.ids[0]; // the first label is never a next-token target
    std::vector<sft_example> with_unlabelled = exs;
    with_unlabelled.push_back(unlabelled);
    const sft_rows rows = pad_examples(with_unlabelled, 6, 0);
    BOOST_REQUIRE_EQUAL(rows.rows, 3);
    BOOST_TEST(rows.skipped_unlabelled == 1u);
    BOOST_TEST(rows.padding_tokens == 1u + 3u + 4u);
    for (index_t r = 0; r < 3; ++r) {
        const sft_example& ex = exs[std::size_t(r)];
        const auto targets = next_token_targets(ex.labels);
        for (index_t t = 0; t < 6; ++t) {
            const std::size_t i = std::size_t(r * 6 + t);
            const bool real = t < index_t(ex.ids.size());
            BOOST_TEST(rows.ids[i] == (real ? ex.ids[std::size_t(t)] : 0));
            BOOST_TEST(rows.targets[i] == (real ? targets[std::size_t(t)] : sft_ignore_index));
            BOOST_TEST(rows.doc_start[i] == (real ? 0 : index_t(ex.ids.size())));
        }
    }
    BOOST_TEST((rows.ids_view(1, 2).shape == shape{2, 6}));
    BOOST_TEST(rows.ids_view(1, 2).data == rows.ids.data() + 6);
}

BOOST_AUTO_TEST_CASE(packing_layout) {
    std::vector<sft_example> exs;
    const std::size_t lengths[] = {7, 3, 9, 2, 5, 4, 6, 1};
    for (std::size_t i = 0; i < std::size(lengths); ++i)
        exs.push_back(random_example(lengths[i], 10 + i));
    const index_t T = 10;
    const sft_rows rows = pack_examples(exs, T, 0);
    // First-fit decreasing: 9 | 7+3 | 6+4 | 5+2 (the example of length 1 has no target and is left out).
    BOOST_TEST(rows.skipped_unlabelled == 1u);
    BOOST_REQUIRE_EQUAL(rows.rows, 4);
    // Recover the documents from doc_start and check each is one example, with its targets shifted inside it.
    std::vector<bool> seen(exs.size(), false);
    std::size_t docs = 0, padding = 0;
    for (index_t r = 0; r < rows.rows; ++r) {
        for (index_t t = 0; t < T;) {
            const index_t start = rows.doc_start[std::size_t(r * T + t)];
            BOOST_REQUIRE(start == t);
            index_t end = t + 1;
            while (end < T && rows.doc_start[std::size_t(r * T + end)] == start)
                ++end;
            for (index_t u = t; u < end; ++u)
                BOOST_TEST(rows.position(r, u) == u - t);
            const std::vector<std::int32_t> ids(rows.ids.begin() + r * T + t, rows.ids.begin() + r * T + end);
            const auto it = std::find_if(exs.begin(), exs.end(), [&](const sft_example& e) { return e.ids == ids; });
            if (it == exs.end()) { // padding: pad ids, no targets, only at the end of the row
                BOOST_TEST(end == T);
                for (index_t u = t; u < end; ++u) {
                    BOOST_TEST(rows.ids[std::size_t(r * T + u)] == 0);
                    BOOST_TEST(rows.targets[std::size_t(r * T + u)] == sft_ignore_index);
                }
                padding += std::size_t(end - t);
            } else {
                const std::size_t k = std::size_t(it - exs.begin());
                BOOST_TEST(!seen[k]);
                seen[k] = true;
                ++docs;
                const auto targets = next_token_targets(it->labels);
                BOOST_TEST(std::equal(targets.begin(), targets.end(), rows.targets.begin() + r * T + t));
            }
            t = end;
        }
    }
    BOOST_TEST(docs == exs.size() - 1);
    BOOST_TEST(padding == rows.padding_tokens);
    BOOST_TEST(std::count(seen.begin(), seen.end(), false) == 1); // the unlabelled one
    BOOST_TEST(rows.fill() == 1.0 - double(padding) / double(rows.rows * T));
    // Too long for the row.
    BOOST_CHECK_THROW(pack_examples({random_example(11, 1)}, T, 0), tl::error);
}

using configs = boost::mpl::list<tiny_full, tiny_window>;

// The key equivalence: a packed row of documents = the documents as separate rows (loss, every gradient, logits).
BOOST_AUTO_TEST_CASE_TEMPLATE(packed_row_equals_separate_rows, C, configs) {
    const std::vector<sft_example> exs = {random_example(9, 21), random_example(13, 22), random_example(6, 23)};
    const index_t T = 30; // 9 + 13 + 6 = 28: one row with two padding tokens
    const sft_rows packed = pack_examples(exs, T, 0);
    BOOST_REQUIRE_EQUAL(packed.rows, 1);
    BOOST_REQUIRE_EQUAL(packed.row_docs[0], 3u);
    const sft_rows separate = pad_examples(exs, 13, 0);
    BOOST_REQUIRE_EQUAL(separate.rows, 3);

    decoder<C> a(7), b(7);
    const float loss_packed = a.loss(packed.ids_view(0, 1), packed.targets_view(0, 1), packed.doc_start_view(0, 1));
    a.backward();
    const float loss_separate = b.loss(separate.ids_view(0, 3), separate.targets_view(0, 3));
    b.backward();
    BOOST_TEST(a.counted_targets() == b.counted_targets());
    BOOST_TEST(std::abs(loss_packed - loss_separate) <= 1e-5f * std::abs(loss_separate));
    const auto ga = gradients(a), gb = gradients(b);
    double worst = 0;
    for (const auto& [name, g] : gb) {
        const double err = rel_error(ga.at(name), g);
        worst = std::max(worst, err);
        BOOST_TEST(err < 1e-4, name << ": " << err);
    }
    BOOST_TEST_MESSAGE("packed vs separate rows: loss " << loss_packed << " vs " << loss_separate
                                                        << ", worst gradient error " << worst);

    // Logits at every real token agree too.
    const index_t V = C::value.vocab_size;
    owned<float> lp({1, T, V}), ls({3, 13, V});
    a.logits(packed.ids_view(0, 1), lp, packed.doc_start_view(0, 1));
    b.logits(separate.ids_view(0, 3), ls);
    double logit_err = 0, scale = 0;
    std::size_t compared = 0;
    for (index_t t = 0; t < T; ++t) {
        const std::vector<std::int32_t> doc(packed.ids.begin() + packed.doc_start[std::size_t(t)],
                                            packed.ids.begin() + t + 1);
        for (std::size_t k = 0; k < exs.size(); ++k) {
            if (doc.size() > exs[k].ids.size() || !std::equal(doc.begin(), doc.end(), exs[k].ids.begin())) continue;
            ++compared;
            const index_t u = packed.position(0, t);
            for (index_t v = 0; v < V; ++v) {
                const float x = lp.data[std::size_t(t * V + v)],
                            y = ls.data[std::size_t((index_t(k) * 13 + u) * V + v)];
                logit_err = std::max(logit_err, double(std::abs(x - y)));
                scale = std::max(scale, double(std::abs(y)));
            }
        }
    }
    BOOST_TEST(compared == 28u); // every real token, once
    BOOST_TEST(logit_err / scale < 1e-5);

    // Without doc_start the same row mixes documents: the loss differs (the test can fail).
    decoder<C> c(7);
    const float loss_mixed = c.loss(packed.ids_view(0, 1), packed.targets_view(0, 1));
    BOOST_TEST(std::abs(loss_mixed - loss_separate) > 1e-4f);
}

BOOST_AUTO_TEST_CASE(kv_cache_agrees_with_packed_positions) {
    // The second document of a packed row, run alone through the KV cache from position 0, gives the logits
    // the packed row gives at its last token.
    const std::vector<sft_example> exs = {random_example(8, 31), random_example(5, 32)};
    const sft_rows packed = pack_examples(exs, 13, 0);
    BOOST_REQUIRE_EQUAL(packed.rows, 1);
    decoder<tiny_full> m(3);
    const index_t V = 256, T = 13;
    owned<float> lp({1, T, V});
    m.logits(packed.ids_view(0, 1), lp, packed.doc_start_view(0, 1));
    // pack order: the longer first, so the second document is exs[1] at columns 8..12.
    BOOST_REQUIRE(std::equal(exs[1].ids.begin(), exs[1].ids.end(), packed.ids.begin() + 8));
    auto cache = m.make_cache(1, 16);
    owned<token_t> ids({1, 5});
    std::copy(exs[1].ids.begin(), exs[1].ids.end(), ids.data.begin());
    owned<float> last({1, V});
    m.forward_cached(cache, ids, last);
    std::vector<float> want(lp.data.begin() + (T - 1) * V, lp.data.begin() + T * V);
    BOOST_TEST(rel_error(last.data, want) < 1e-5);
}

BOOST_AUTO_TEST_CASE(malformed_doc_start) {
    decoder<tiny_full> m(1);
    owned<token_t> ids({1, 4}, 5), targets({1, 4}, 6);
    owned<index_t> ds({1, 4});
    ds.data = {0, 0, 1, 1}; // token 2 claims a document starting at 1, but token 1 is in the document of 0
    BOOST_CHECK_THROW(m.loss(ids, targets, ds), tl::error);
    ds.data = {1, 1, 1, 1}; // the row must start a document
    BOOST_CHECK_THROW(m.loss(ids, targets, ds), tl::error);
    owned<index_t> wrong_shape({1, 3});
    BOOST_CHECK_THROW(m.loss(ids, targets, wrong_shape), tl::error);
    ds.data = {0, 0, 2, 2};
    BOOST_CHECK_NO_THROW(m.loss(ids, targets, ds));
}

// For the torch-labelled test (tests/sft/check_packed_logits.py): a checkpoint, a packed row of three documents
// (ids, doc_start, position_ids) and tinylm's logits for it. transformers, given position_ids and the
// block-diagonal causal 4D mask, must reproduce them.
template <class Config>
void export_packed(const std::filesystem::path& root, const std::string& name) {
    decoder<Config, eigen_cpu> model(21);
    save_pretrained(model, root / name, {.bos = 1, .eos = 2});
    const int V = Config::value.vocab_size;
    const std::vector<sft_example> exs = {random_example(11, 51, V), random_example(7, 52, V),
                                          random_example(4, 53, V)};
    const index_t T = 24;
    const sft_rows rows = pack_examples(exs, T, 0);
    BOOST_REQUIRE_EQUAL(rows.rows, 1);
    owned<float> logits({1, T, V});
    model.logits(rows.ids_view(0, 1), logits, rows.doc_start_view(0, 1));
    owned<std::int64_t> ids({1, T}), doc_start({1, T}), positions({1, T});
    for (index_t t = 0; t < T; ++t) {
        ids.data[std::size_t(t)] = rows.ids[std::size_t(t)];
        doc_start.data[std::size_t(t)] = rows.doc_start[std::size_t(t)];
        positions.data[std::size_t(t)] = rows.position(0, t);
    }
    safetensors_writer w;
    w.add<std::int64_t>("input_ids", ids.cv());
    w.add<std::int64_t>("doc_start", doc_start.cv());
    w.add<std::int64_t>("position_ids", positions.cv());
    w.add<float>("logits", logits.cv());
    w.save(root / name / "packed.safetensors");
}

BOOST_AUTO_TEST_CASE(export_for_transformers, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_SFT_EXPORT_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_SFT_EXPORT_DIR");
    export_packed<test::llama_gqa>(dir, "llama_gqa");
    export_packed<test::mistral_window>(dir, "mistral_window");
    export_packed<test::qwen2_tied>(dir, "qwen2_tied");
}

BOOST_AUTO_TEST_SUITE_END()
