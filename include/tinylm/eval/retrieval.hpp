// tinylm/eval/retrieval.hpp: exact nearest-neighbour search over embeddings and the retrieval metrics of
// sentence-transformers' InformationRetrievalEvaluator (docs/retrieval.md).
//
//   auto r = tl::eval::evaluate_retrieval<tl::default_backend>(query_emb, corpus_emb, relevant);
//   std::cout << r.table();                 // or r.to_json()
//
// Search: cosine similarity (rows L2-normalised first, as cos_sim), computed block by block with the backend's
// matrix product (queries in blocks of query_block, the corpus in chunks of corpus_chunk, so at most
// query_block x corpus_chunk scores exist at once); per query the best k are kept by partial selection. Order
// (and ties) as sentence-transformers: score descending, then the lower corpus index (its corpus id order
// when the ids sort like the indices), so the result does not depend on the chunk sizes.
//
// Metrics, per query with R relevant documents and its ranked hits (averaged over the queries that have at least
// one relevant document; the others are skipped, as sentence-transformers does):
//   accuracy@k   1 if a relevant document is among the first k hits
//   precision@k  (relevant among the first k) / k
//   recall@k     (relevant among the first k) / R
//   mrr@k        1 / rank of the first relevant hit within the first k, else 0
//   ndcg@k       DCG / ideal DCG, DCG = sum over the first k of rel_i / log2(i + 1) (i from 1), ideal: R ones
//   map@k        sum over relevant hits within the first k of (relevant so far / rank), divided by min(k, R)
#pragma once

#include <tinylm/backend/backend.hpp>
#include <tinylm/core/simd.hpp>
#include <tinylm/core/tensor.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace tl::eval {

struct retrieval_hit {
    index_t doc = 0; // corpus row
    float score = 0; // cosine similarity
};

struct search_options {
    bool normalize = true;       // L2-normalise rows (cosine); false: the rows are normalised already (dot product)
    index_t query_block = 256;   // query rows per matrix product
    index_t corpus_chunk = 8192; // corpus rows per matrix product
};

struct retrieval_options {
    std::vector<int> accuracy_at = {1, 3, 5, 10};
    std::vector<int> precision_recall_at = {1, 3, 5, 10};
    std::vector<int> mrr_at = {10};
    std::vector<int> ndcg_at = {10};
    std::vector<int> map_at = {100};
    search_options search = {};

    int max_k() const {
        int k = 1;
        for (const auto* v : {&accuracy_at, &precision_recall_at, &mrr_at, &ndcg_at, &map_at})
            for (int x : *v)
                k = std::max(k, x);
        return k;
    }
};

namespace detail {

// a ranks before b: higher score, then lower corpus index.
inline bool ranks_before(const retrieval_hit& a, const retrieval_hit& b) {
    return a.score > b.score || (a.score == b.score && a.doc < b.doc);
}

inline void normalize_rows(std::vector<float>& dst, cview<float> src) {
    const index_t d = src.cols();
    dst.resize(std::size_t(src.numel()));
    tl::detail::parallel_ranges(src.rows(), 256, [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
            double s = 0;
            for (index_t k = 0; k < d; ++k)
                s += double(src.row(r)[k]) * double(src.row(r)[k]);
            const double inv = 1.0 / std::max(std::sqrt(s), 1e-12); // torch's F.normalize eps
            for (index_t k = 0; k < d; ++k)
                dst[std::size_t(r * d + k)] = float(double(src.row(r)[k]) * inv);
        }
    });
}

} // namespace detail

// The best k corpus rows for each query, best first. queries (Q, d), corpus (C, d).
template <class Bk>
requires BackendFor<Bk, float> std::vector<std::vector<retrieval_hit>>
exact_search(cview<float> queries, cview<float> corpus, index_t k, const search_options& opt = {}) {
    const index_t nq = queries.rows(), nc = corpus.rows(), d = queries.cols();
    check(queries.shape.rank == 2 && corpus.shape.rank == 2 && corpus.cols() == d, [&] {
        return "exact_search: queries " + queries.shape.str() + " and corpus " + corpus.shape.str() +
               " must be (Q, d) and (C, d)";
    });
    check(k > 0 && opt.query_block > 0 && opt.corpus_chunk > 0,
          "exact_search: k, query_block and corpus_chunk must be positive");
    std::vector<float> qn, cn;
    const float *q = queries.data, *c = corpus.data;
    if (opt.normalize) {
        detail::normalize_rows(qn, queries);
        detail::normalize_rows(cn, corpus);
        q = qn.data();
        c = cn.data();
    }
    const index_t keep = std::min(k, nc), qb = std::min(opt.query_block, std::max<index_t>(nq, 1)),
                  cc = std::min(opt.corpus_chunk, std::max<index_t>(nc, 1));
    std::vector<std::vector<retrieval_hit>> top(static_cast<std::size_t>(nq));
    std::vector<float> scores(static_cast<std::size_t>(qb * cc));
    for (index_t q0 = 0; q0 < nq; q0 += qb) {
        const index_t rows = std::min(qb, nq - q0);
        for (index_t c0 = 0; c0 < nc; c0 += cc) {
            const index_t width = std::min(cc, nc - c0);
            Bk::gemm(gemm_args<float>{.trans_b = true,
                                      .m = rows,
                                      .n = width,
                                      .k = d,
                                      .a = q + q0 * d,
                                      .lda = d,
                                      .b = c + c0 * d,
                                      .ldb = d,
                                      .c = scores.data(),
                                      .ldc = cc});
            // Merge the chunk into each query's best `keep`: candidates that beat the current k-th, then a
            // partial selection back down to `keep`.
            tl::detail::parallel_ranges(rows, 8, [&](index_t r0, index_t r1) {
                for (index_t r = r0; r < r1; ++r) {
                    std::vector<retrieval_hit>& best = top[std::size_t(q0 + r)];
                    const float* s = scores.data() + r * cc;
                    const bool full = index_t(best.size()) == keep;
                    const retrieval_hit kth = full ? best.back() : retrieval_hit{};
                    for (index_t j = 0; j < width; ++j) {
                        const retrieval_hit h{c0 + j, s[j]};
                        if (!full || detail::ranks_before(h, kth)) best.push_back(h);
                    }
                    if (index_t(best.size()) > keep) {
                        std::nth_element(best.begin(), best.begin() + (keep - 1), best.end(), detail::ranks_before);
                        best.resize(std::size_t(keep));
                    }
                    // Keep the k-th at the back so that the next chunk's filter can read it.
                    if (!best.empty())
                        std::iter_swap(std::max_element(best.begin(), best.end(), detail::ranks_before),
                                       best.end() - 1);
                }
            });
        }
    }
    tl::detail::parallel_ranges(nq, 64, [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r)
            std::sort(top[std::size_t(r)].begin(), top[std::size_t(r)].end(), detail::ranks_before);
    });
    return top;
}

struct retrieval_result {
    index_t n_queries = 0; // queries with at least one relevant document (the ones averaged)
    index_t n_corpus = 0;
    std::map<int, double> accuracy, precision, recall, mrr, ndcg, map;

    // {"accuracy@1": ..., "precision@1": ..., "recall@1": ..., "mrr@10": ..., "ndcg@10": ..., "map@100": ...,
    //  "queries": Q, "corpus": C}: sentence-transformers' metric names without the score-function prefix.
    nlohmann::ordered_json to_json() const {
        nlohmann::ordered_json j;
        auto put = [&](const char* name, const std::map<int, double>& m) {
            for (const auto& [k, v] : m)
                j[std::string(name) + "@" + std::to_string(k)] = v;
        };
        put("accuracy", accuracy);
        put("precision", precision);
        put("recall", recall);
        put("mrr", mrr);
        put("ndcg", ndcg);
        put("map", map);
        j["queries"] = n_queries;
        j["corpus"] = n_corpus;
        return j;
    }

    // One row per metric, one column per k:
    //   retrieval: 50 queries, 200 documents
    //   metric        @1      @3      @5     @10    @100
    //   accuracy  0.4200  0.6000  0.7000  0.8000
    //   ...
    std::string table() const {
        std::set<int> ks;
        const std::pair<const char*, const std::map<int, double>*> rows[] = {
            {"accuracy", &accuracy}, {"precision", &precision}, {"recall", &recall},
            {"mrr", &mrr},           {"ndcg", &ndcg},           {"map", &map}};
        for (const auto& [name, m] : rows)
            for (const auto& kv : *m)
                ks.insert(kv.first);
        char cell[64];
        std::snprintf(cell, sizeof cell, "retrieval: %lld queries, %lld documents\n", static_cast<long long>(n_queries),
                      static_cast<long long>(n_corpus));
        std::string out = cell;
        std::snprintf(cell, sizeof cell, "%-10s", "metric");
        out += cell;
        for (int k : ks) {
            std::snprintf(cell, sizeof cell, "%*s@%d", 7 - int(std::to_string(k).size()), "", k);
            out += cell;
        }
        out += '\n';
        for (const auto& [name, m] : rows) {
            std::snprintf(cell, sizeof cell, "%-10s", name);
            std::string line = cell;
            for (int k : ks) {
                const auto it = m->find(k);
                if (it == m->end())
                    std::snprintf(cell, sizeof cell, "%8s", "");
                else
                    std::snprintf(cell, sizeof cell, "%8.4f", it->second);
                line += cell;
            }
            while (!line.empty() && line.back() == ' ')
                line.pop_back();
            out += line + '\n';
        }
        return out;
    }
};

// The metrics of ranked hits (best first, as exact_search returns them). relevant[q]: the corpus rows relevant to
// query q (duplicates count once); queries without any are skipped.
inline retrieval_result retrieval_metrics(const std::vector<std::vector<retrieval_hit>>& hits,
                                          const std::vector<std::vector<index_t>>& relevant, index_t n_corpus,
                                          const retrieval_options& opt = {}) {
    check(hits.size() == relevant.size(), [&] {
        return "retrieval_metrics: hits for " + std::to_string(hits.size()) + " queries, relevant documents for " +
               std::to_string(relevant.size());
    });
    for (const auto* v : {&opt.accuracy_at, &opt.precision_recall_at, &opt.mrr_at, &opt.ndcg_at, &opt.map_at})
        for (int k : *v)
            check(k > 0, "retrieval_metrics: every k must be positive");
    retrieval_result r;
    r.n_corpus = n_corpus;
    for (int k : opt.accuracy_at)
        r.accuracy[k] = 0;
    for (int k : opt.precision_recall_at)
        r.precision[k] = r.recall[k] = 0;
    for (int k : opt.mrr_at)
        r.mrr[k] = 0;
    for (int k : opt.ndcg_at)
        r.ndcg[k] = 0;
    for (int k : opt.map_at)
        r.map[k] = 0;
    std::vector<char> is_relevant(std::size_t(std::max<index_t>(n_corpus, 0)), 0);
    for (std::size_t q = 0; q < hits.size(); ++q) {
        std::set<index_t> rel(relevant[q].begin(), relevant[q].end());
        if (rel.empty()) continue;
        for (index_t doc : rel)
            check(doc >= 0 && doc < n_corpus, [&] {
                return "retrieval_metrics: query " + std::to_string(q) + " names document " + std::to_string(doc) +
                       ", outside the corpus of " + std::to_string(n_corpus);
            });
        for (index_t doc : rel)
            is_relevant[std::size_t(doc)] = 1;
        const auto& h = hits[q];
        // hit_rel[i]: 1 if the i-th hit (from 0) is relevant.
        std::vector<int> hit_rel(h.size());
        for (std::size_t i = 0; i < h.size(); ++i)
            hit_rel[i] = is_relevant[std::size_t(h[i].doc)];
        auto correct_in = [&](int k) {
            int n = 0;
            for (std::size_t i = 0; i < h.size() && i < std::size_t(k); ++i)
                n += hit_rel[i];
            return n;
        };
        const double n_rel = double(rel.size());
        for (auto& [k, v] : r.accuracy)
            v += correct_in(k) > 0 ? 1.0 : 0.0;
        for (auto& [k, v] : r.precision)
            v += double(correct_in(k)) / double(k);
        for (auto& [k, v] : r.recall)
            v += double(correct_in(k)) / n_rel;
        for (auto& [k, v] : r.mrr)
            for (std::size_t i = 0; i < h.size() && i < std::size_t(k); ++i)
                if (hit_rel[i]) {
                    v += 1.0 / double(i + 1);
                    break;
                }
        for (auto& [k, v] : r.ndcg) {
            double dcg = 0, ideal = 0;
            for (std::size_t i = 0; i < h.size() && i < std::size_t(k); ++i)
                dcg += hit_rel[i] / std::log2(double(i) + 2);
            for (std::size_t i = 0; i < rel.size() && i < std::size_t(k); ++i)
                ideal += 1.0 / std::log2(double(i) + 2);
            v += dcg / ideal;
        }
        for (auto& [k, v] : r.map) {
            double sum = 0;
            int found = 0;
            for (std::size_t i = 0; i < h.size() && i < std::size_t(k); ++i)
                if (hit_rel[i]) sum += double(++found) / double(i + 1);
            v += sum / std::min(double(k), n_rel);
        }
        for (index_t doc : rel)
            is_relevant[std::size_t(doc)] = 0;
        ++r.n_queries;
    }
    if (r.n_queries > 0)
        for (auto* m : {&r.accuracy, &r.precision, &r.recall, &r.mrr, &r.ndcg, &r.map})
            for (auto& kv : *m)
                kv.second /= double(r.n_queries);
    return r;
}

// Search and metrics in one call: queries (Q, d), corpus (C, d), relevant[q] the corpus rows relevant to query q.
template <class Bk>
requires BackendFor<Bk, float> retrieval_result evaluate_retrieval(cview<float> queries, cview<float> corpus,
                                                                   const std::vector<std::vector<index_t>>& relevant,
                                                                   const retrieval_options& opt = {}) {
    check(index_t(relevant.size()) == queries.rows(), [&] {
        return "evaluate_retrieval: " + std::to_string(queries.rows()) + " queries but relevant documents for " +
               std::to_string(relevant.size());
    });
    const auto hits = exact_search<Bk>(queries, corpus, index_t(opt.max_k()), opt.search);
    return retrieval_metrics(hits, relevant, corpus.rows(), opt);
}

} // namespace tl::eval
