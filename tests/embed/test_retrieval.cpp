// Retrieval (eval/retrieval.hpp): metrics on rankings worked by hand, exact search against a brute-force sort
// (chunk sizes, ties, normalisation), the result's JSON and table, and the committed sentence-transformers
// fixture (tests/reference/embed/expected.json, written by tests/reference/embed/compare_st.py from the inputs
// this file's export case writes; ctest -L torch reruns that comparison against the installed packages).
#include "../support/random.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/backend/reference.hpp>
#include <tinylm/embed/ranking_loss.hpp>
#include <tinylm/eval/retrieval.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace tl;
using namespace tl::eval;
using namespace tl::test;

namespace {

std::vector<retrieval_hit> ranked(std::initializer_list<index_t> docs) {
    std::vector<retrieval_hit> h;
    float s = 1.0f;
    for (index_t d : docs)
        h.push_back({d, s -= 0.1f});
    return h;
}

// Brute force: every score, full sort by (score desc, index asc), first k.
std::vector<std::vector<retrieval_hit>> brute_force(const owned<float>& q, const owned<float>& c, index_t k) {
    const index_t nq = q.shape[0], nc = c.shape[0], d = q.shape[1];
    auto unit = [&](const owned<float>& m, index_t r) {
        double s = 0;
        for (index_t j = 0; j < d; ++j)
            s += double(m.data[std::size_t(r * d + j)]) * m.data[std::size_t(r * d + j)];
        std::vector<double> u(static_cast<std::size_t>(d));
        for (index_t j = 0; j < d; ++j)
            u[std::size_t(j)] = m.data[std::size_t(r * d + j)] / std::sqrt(s);
        return u;
    };
    std::vector<std::vector<retrieval_hit>> out;
    for (index_t i = 0; i < nq; ++i) {
        const auto uq = unit(q, i);
        std::vector<std::pair<double, index_t>> all;
        for (index_t j = 0; j < nc; ++j) {
            const auto uc = unit(c, j);
            double s = 0;
            for (index_t t = 0; t < d; ++t)
                s += uq[std::size_t(t)] * uc[std::size_t(t)];
            all.push_back({-s, j});
        }
        std::sort(all.begin(), all.end());
        std::vector<retrieval_hit> h;
        for (index_t j = 0; j < std::min(k, nc); ++j)
            h.push_back({all[std::size_t(j)].second, float(-all[std::size_t(j)].first)});
        out.push_back(h);
    }
    return out;
}

// The inputs shared with the sentence-transformers comparison: a corpus of 60 random rows (d 16) and 25 queries,
// each a noisy mix of its 1 to 3 relevant documents; query 7 has no relevant document (skipped by the metrics).
struct retrieval_case {
    owned<float> queries = random_tensor<float>({25, 16}, 501);
    owned<float> corpus = random_tensor<float>({60, 16}, 502);
    std::vector<std::vector<index_t>> relevant;
    retrieval_case() {
        counter_rng rng(503);
        relevant.resize(25);
        for (index_t q = 0; q < 25; ++q) {
            if (q == 7) continue;
            const index_t n_rel = 1 + index_t(rng.below(3));
            for (index_t r = 0; r < n_rel; ++r)
                relevant[std::size_t(q)].push_back(index_t(rng.below(60)));
            const double noise = 1.0 + 3.0 * rng.uniform(); // some queries easy, some hard
            for (index_t j = 0; j < 16; ++j) {
                float& x = queries.data[std::size_t(q * 16 + j)];
                x = float(noise * x);
                for (index_t doc : relevant[std::size_t(q)])
                    x += corpus.data[std::size_t(doc * 16 + j)];
            }
        }
    }
};

// The ranking-loss inputs of the comparison: B 6, H 2, d 10, positives near their anchors.
struct loss_case {
    owned<float> anchors = random_tensor<float>({6, 10}, 601);
    owned<float> positives = random_tensor<float>({6, 10}, 602);
    owned<float> negatives = random_tensor<float>({12, 10}, 603);
    loss_case() {
        for (std::size_t i = 0; i < positives.data.size(); ++i)
            positives.data[i] = 0.5f * anchors.data[i] + 0.8f * positives.data[i];
    }
};

nlohmann::ordered_json matrix_json(const owned<float>& m) {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    const index_t d = m.shape[1];
    for (index_t r = 0; r < m.shape[0]; ++r)
        rows.push_back(std::vector<float>(m.data.begin() + r * d, m.data.begin() + (r + 1) * d));
    return rows;
}

std::filesystem::path fixture_path() {
    return std::filesystem::path(TINYLM_SOURCE_DIR) / "tests/reference/embed/expected.json";
}

} // namespace

BOOST_AUTO_TEST_SUITE(retrieval)

BOOST_AUTO_TEST_CASE(metrics_by_hand) {
    const retrieval_options opt{
        .accuracy_at = {1, 3}, .precision_recall_at = {1, 3}, .mrr_at = {3}, .ndcg_at = {3}, .map_at = {3}};
    // A: hits 5 2 7 1, relevant {2, 1}: relevant at ranks 2 and 4.
    //    acc@1 0, acc@3 1; p@1 0, p@3 1/3; r@1 0, r@3 1/2; mrr@3 1/2;
    //    ndcg@3 = (1/log2 3) / (1 + 1/log2 3) = 0.386853; map@3 = (1/2) / min(3, 2) = 1/4
    // B: hits 3 4 0 6, relevant {3}: everything 1 except p@3 = 1/3
    // C: no relevant document: skipped
    // D: hits 0 1 2 3, relevant {6, 7, 5, 4} (listed twice: counts once): nothing found, every metric 0
    const std::vector<std::vector<retrieval_hit>> hits = {ranked({5, 2, 7, 1}), ranked({3, 4, 0, 6}),
                                                          ranked({1, 2, 3, 4}), ranked({0, 1, 2, 3})};
    const std::vector<std::vector<index_t>> relevant = {{2, 1}, {3}, {}, {6, 7, 5, 4, 6}};
    const auto r = retrieval_metrics(hits, relevant, 8, opt);
    const double l3 = 1 / std::log2(3.0);
    BOOST_TEST(r.n_queries == 3);
    auto close = boost::test_tools::tolerance(1e-12);
    BOOST_TEST(r.accuracy.at(1) == 1.0 / 3, close);
    BOOST_TEST(r.accuracy.at(3) == 2.0 / 3, close);
    BOOST_TEST(r.precision.at(1) == 1.0 / 3, close);
    BOOST_TEST(r.precision.at(3) == 2.0 / 9, close); // (1/3 + 1/3 + 0) / 3
    BOOST_TEST(r.recall.at(1) == 1.0 / 3, close);
    BOOST_TEST(r.recall.at(3) == 0.5, close); // (1/2 + 1 + 0) / 3
    BOOST_TEST(r.mrr.at(3) == 0.5, close);    // (1/2 + 1 + 0) / 3
    BOOST_TEST(r.ndcg.at(3) == (l3 / (1 + l3) + 1) / 3, close);
    BOOST_TEST(r.map.at(3) == 5.0 / 12, close); // (1/4 + 1 + 0) / 3
}

BOOST_AUTO_TEST_CASE(precision_counts_k_even_past_the_corpus) {
    // A corpus of 4: precision@10 is (relevant found) / 10, as sentence-transformers; MAP@100 divides by
    // min(100, R). Relevant {1, 3} at ranks 2 and 4: map = (1/2 + 2/4) / 2 = 1/2; ndcg@10 =
    // (1/log2 3 + 1/log2 5) / (1 + 1/log2 3).
    const auto r = retrieval_metrics({ranked({0, 1, 2, 3})}, {{1, 3}}, 4);
    BOOST_TEST(r.precision.at(10) == 0.2, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(r.recall.at(10) == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(r.map.at(100) == 0.5, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(r.ndcg.at(10) == (1 / std::log2(3.0) + 1 / std::log2(5.0)) / (1 + 1 / std::log2(3.0)),
               boost::test_tools::tolerance(1e-12));
    BOOST_TEST(r.accuracy.size() == 4u); // the default k lists
}

BOOST_AUTO_TEST_CASE(search_matches_brute_force) {
    const auto q = random_tensor<float>({13, 8}, 71), c = random_tensor<float>({50, 8}, 72);
    const auto want = brute_force(q, c, 10);
    for (const search_options opt : {search_options{}, search_options{.query_block = 4, .corpus_chunk = 7},
                                     search_options{.query_block = 1, .corpus_chunk = 3}}) {
        const auto got = exact_search<default_backend>(q, c, 10, opt);
        BOOST_TEST_REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
            BOOST_TEST_REQUIRE(got[i].size() == 10u);
            for (std::size_t j = 0; j < 10; ++j) {
                BOOST_TEST(got[i][j].doc == want[i][j].doc);
                BOOST_TEST(got[i][j].score == want[i][j].score, boost::test_tools::tolerance(1e-5f));
            }
        }
    }
    // k larger than the corpus: every document, ranked.
    BOOST_TEST(exact_search<default_backend>(q, c, 80)[0].size() == 50u);
}

BOOST_AUTO_TEST_CASE(ties_break_by_corpus_index_and_lengths_do_not_matter) {
    // Every corpus row points the same way with a different length: all scores tie (cosine 1), so the best 5 are
    // rows 0..4 whatever the chunking.
    owned<float> c({20, 3}), q({2, 3});
    for (index_t r = 0; r < 20; ++r)
        for (index_t j = 0; j < 3; ++j)
            c.data[std::size_t(r * 3 + j)] = float(j + 1) * float(1 + (19 - r));
    q.data = {1, 2, 3, 2, 4, 6};
    for (index_t chunk : {20, 6, 1}) {
        const auto hits = exact_search<reference_cpu>(q, c, 5, {.query_block = 1, .corpus_chunk = chunk});
        for (const auto& h : hits)
            for (index_t j = 0; j < 5; ++j)
                BOOST_TEST(h[std::size_t(j)].doc == j);
    }
}

BOOST_AUTO_TEST_CASE(json_table_and_errors) {
    const auto r = retrieval_metrics({ranked({0, 1, 2, 3})}, {{1}}, 4);
    const auto j = r.to_json();
    BOOST_TEST(j["mrr@10"].get<double>() == 0.5);
    BOOST_TEST(j["accuracy@1"].get<double>() == 0.0);
    BOOST_TEST(j["map@100"].get<double>() == 0.5);
    BOOST_TEST(j["queries"].get<int>() == 1);
    const std::string t = r.table();
    BOOST_TEST_MESSAGE(t);
    BOOST_TEST(t.find("retrieval: 1 queries, 4 documents") != std::string::npos);
    BOOST_TEST(t.find("mrr") != std::string::npos);
    BOOST_TEST(t.find("0.5000") != std::string::npos);
    BOOST_CHECK_THROW(retrieval_metrics({ranked({0})}, {{4}}, 4), tl::error); // document outside the corpus
    BOOST_CHECK_THROW(retrieval_metrics({ranked({0})}, {{0}, {1}}, 4), tl::error);
    owned<float> q({2, 3}), c({4, 2});
    BOOST_CHECK_THROW(exact_search<default_backend>(q, c, 1), tl::error);
}

BOOST_AUTO_TEST_CASE(matches_the_sentence_transformers_fixture) {
    // Values computed by sentence-transformers' InformationRetrievalEvaluator and MultipleNegativesRankingLoss
    // on these inputs (tests/reference/embed/compare_st.py --write-fixture).
    std::ifstream in(fixture_path());
    BOOST_TEST_REQUIRE(static_cast<bool>(in), "missing " << fixture_path());
    const auto expected = nlohmann::json::parse(in);
    retrieval_case rc;
    const auto r = evaluate_retrieval<default_backend>(rc.queries, rc.corpus, rc.relevant);
    const auto got = r.to_json();
    BOOST_TEST_MESSAGE(r.table());
    for (const auto& [name, value] : expected["metrics"].items()) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST_REQUIRE(got.contains(name));
            BOOST_TEST(std::abs(got[name].get<double>() - value.get<double>()) <= 1e-6);
        }
    }
    BOOST_TEST(expected["metrics"].size() == 15u);
    // Not a trivial case: some queries found, some not.
    BOOST_TEST(got["recall@1"].get<double>() > 0.2);
    BOOST_TEST(got["recall@1"].get<double>() < 0.9);

    loss_case lc;
    for (const char* variant : {"plain", "symmetric", "hard_negatives", "symmetric_hard_negatives"}) {
        const std::string v = variant;
        const bool symmetric = v.starts_with("symmetric"), hard = v.ends_with("negatives");
        const index_t h = hard ? 2 : 0;
        arena mem(1 << 16);
        auto ws = embed::ranking_loss_workspace<float>::allocate(mem, 6, h, 10);
        const double loss = embed::ranking_loss_forward<default_backend, float>(
            ws, lc.anchors, lc.positives, cview<float>{lc.negatives.data.data(), {6 * h, 10}},
            {.symmetric = symmetric});
        BOOST_TEST_CONTEXT(variant) {
            const double want = expected["loss"][variant].get<double>();
            BOOST_TEST(std::abs(loss - want) <= 1e-5 * std::abs(want));
        }
    }
}

// Writes the inputs and tinylm's results for tests/reference/embed/compare_st.py into $TINYLM_EMBED_EXPORT_DIR
// (ctest -L torch runs both). Without the variable the case does nothing.
BOOST_AUTO_TEST_CASE(export_for_sentence_transformers) {
    const char* dir = std::getenv("TINYLM_EMBED_EXPORT_DIR");
    if (!dir || !*dir) return;
    retrieval_case rc;
    loss_case lc;
    nlohmann::ordered_json j;
    j["queries"] = matrix_json(rc.queries);
    j["corpus"] = matrix_json(rc.corpus);
    j["relevant"] = rc.relevant;
    j["metrics"] = evaluate_retrieval<default_backend>(rc.queries, rc.corpus, rc.relevant).to_json();
    j["anchors"] = matrix_json(lc.anchors);
    j["positives"] = matrix_json(lc.positives);
    j["negatives"] = matrix_json(lc.negatives);
    j["negatives_per_anchor"] = 2;
    for (const char* variant : {"plain", "symmetric", "hard_negatives", "symmetric_hard_negatives"}) {
        const std::string v = variant;
        const bool symmetric = v.starts_with("symmetric");
        const index_t h = v.ends_with("negatives") ? 2 : 0;
        arena mem(1 << 16);
        auto ws = embed::ranking_loss_workspace<float>::allocate(mem, 6, h, 10);
        const embed::ranking_loss_options opt{.symmetric = symmetric};
        const double loss = embed::ranking_loss_forward<default_backend, float>(
            ws, lc.anchors, lc.positives, cview<float>{lc.negatives.data.data(), {6 * h, 10}}, opt);
        owned<float> da({6, 10}), dp({6, 10}), dn({6 * h, 10});
        embed::ranking_loss_backward<default_backend, float>(da, dp, dn, ws, opt);
        j["tinylm_loss"][variant] = {{"loss", loss},
                                     {"d_anchors", matrix_json(da)},
                                     {"d_positives", matrix_json(dp)},
                                     {"d_negatives", matrix_json(dn)}};
    }
    std::ofstream(std::filesystem::path(dir) / "inputs.json") << j.dump(1);
    BOOST_TEST_MESSAGE("wrote " << dir << "/inputs.json");
}

BOOST_AUTO_TEST_SUITE_END()
