// The ranking loss (embed/ranking_loss.hpp): values worked by hand, central differences in double (plain,
// symmetric, hard negatives, a clamped zero row), and the cached step (embed/cached_ranking.hpp) against the
// plain one on a toy embedder whose parameter gradients can be compared.
#include "../support/gradcheck.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/backend/reference.hpp>
#include <tinylm/embed/cached_ranking.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <sstream>

using namespace tl;
using namespace tl::embed;
using namespace tl::test;

namespace {

// Loss (and optionally gradients) of one batch in double on the reference backend.
struct loss_run {
    index_t b, h, d;
    arena mem;
    ranking_loss_workspace<double> ws;
    loss_run(index_t b_, index_t h_, index_t d_) : b(b_), h(h_), d(d_) {
        arena m = arena::measuring();
        ranking_loss_workspace<double>::allocate(m, b, h, d);
        mem = arena(m.used());
        ws = ranking_loss_workspace<double>::allocate(mem, b, h, d);
    }
    double loss(const std::vector<double>& a, const std::vector<double>& p, const std::vector<double>& n,
                const ranking_loss_options& opt) {
        return ranking_loss_forward<reference_cpu, double>(ws, cview<double>{a.data(), {b, d}},
                                                           cview<double>{p.data(), {b, d}},
                                                           cview<double>{n.data(), {b * h, d}}, opt);
    }
};

double check_loss_gradients(index_t b, index_t h, index_t d, const ranking_loss_options& opt, std::uint64_t seed) {
    auto a = random_tensor<double>({b, d}, seed), p = random_tensor<double>({b, d}, seed + 1),
         n = random_tensor<double>({b * h, d}, seed + 2);
    // Positives near their anchors, so that the loss is not saturated and every term matters.
    for (std::size_t i = 0; i < p.data.size(); ++i)
        p.data[i] = 0.6 * a.data[i] + 0.4 * p.data[i];
    loss_run run(b, h, d);
    run.loss(a.data, p.data, n.data, opt);
    owned<double> da({b, d}), dp({b, d}), dn({b * h, d});
    ranking_loss_backward<reference_cpu, double>(da, dp, dn, run.ws, opt);
    return gradcheck(
        [&] { return run.loss(a.data, p.data, n.data, opt); },
        {{"anchors", &a.data, &da.data}, {"positives", &p.data, &dp.data}, {"negatives", &n.data, &dn.data}},
        [](const std::string& name, double e) { BOOST_TEST_MESSAGE("ranking_loss d" << name << ": " << e); });
}

} // namespace

BOOST_AUTO_TEST_SUITE(ranking_loss)

BOOST_AUTO_TEST_CASE(values_by_hand) {
    // scale 1; unit anchors (1,0), (0,1); positives (2,0) and (1,0) (lengths must not matter):
    //   S = [[1, 1], [0, 0]]
    //   anchor 0: lse(1, 1) - 1 = ln 2;  anchor 1: lse(0, 0) - 0 = ln 2       -> loss = ln 2
    //   symmetric, positive 0 over anchors: lse(1, 0) - 1 = ln(e + 1) - 1
    //              positive 1 over anchors: lse(1, 0) - 0 = ln(e + 1)         -> (ln 2 + ln(e + 1) - 1/2) / 2
    loss_run run(2, 0, 2);
    const std::vector<double> a = {1, 0, 0, 1}, p = {2, 0, 1, 0}, none;
    const double ln2 = std::log(2.0), le1 = std::log(std::exp(1.0) + 1.0);
    BOOST_TEST(run.loss(a, p, none, {.scale = 1}) == ln2, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(run.loss(a, p, none, {.scale = 1, .symmetric = true}) == (ln2 + (2 * le1 - 1) / 2) / 2,
               boost::test_tools::tolerance(1e-12));
    // Scale 20 makes the same rows sharper: anchor 0 still ties (ln 2), anchor 1 too -> ln 2.
    BOOST_TEST(run.loss(a, p, none, {}) == ln2, boost::test_tools::tolerance(1e-12));

    // One hard negative each: n0 = (0, -3), n1 = (-1, 0); candidates [p0, p1, n0, n1], scale 1:
    //   S = [[1, 1, 0, -1], [0, 0, -1, 0]]
    //   anchor 0: ln(2e + 1 + 1/e) - 1;  anchor 1: ln(3 + 1/e) - 0
    loss_run run_h(2, 1, 2);
    const std::vector<double> n = {0, -3, -1, 0};
    const double e = std::exp(1.0);
    const double want = (std::log(2 * e + 1 + 1 / e) - 1 + std::log(3 + 1 / e)) / 2;
    BOOST_TEST(run_h.loss(a, p, n, {.scale = 1}) == want, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(gradients_plain) { BOOST_TEST(check_loss_gradients(5, 0, 7, {}, 11) < 1e-6); }
BOOST_AUTO_TEST_CASE(gradients_symmetric) {
    BOOST_TEST(check_loss_gradients(5, 0, 7, {.scale = 20, .symmetric = true}, 21) < 1e-6);
}
BOOST_AUTO_TEST_CASE(gradients_hard_negatives) {
    BOOST_TEST(check_loss_gradients(4, 3, 6, {.scale = 7}, 31) < 1e-6);
    BOOST_TEST(check_loss_gradients(3, 2, 5, {.scale = 20, .symmetric = true}, 41) < 1e-6);
}
BOOST_AUTO_TEST_CASE(gradients_with_a_zero_row) {
    // A zero embedding has cosine 0 with everything; its gradient passes the clamp (du / 1e-12), as torch's.
    loss_run run(2, 1, 3);
    const std::vector<double> a = {1, 2, 0, 0, 1, 1}, p = {1, 1, 0, 0, 2, 1}, n = {0, 0, 0, 1, 0, 1};
    const ranking_loss_options opt{.scale = 1};
    run.loss(a, p, n, opt);
    owned<double> da({2, 3}), dp({2, 3}), dn({2, 3});
    ranking_loss_backward<reference_cpu, double>(da, dp, dn, run.ws, opt);
    // dL/du of the zero row is finite and nonzero, so its gradient is of order 1e12.
    BOOST_TEST(std::abs(dn.data[0]) + std::abs(dn.data[1]) + std::abs(dn.data[2]) > 1e9);
    BOOST_TEST(std::isfinite(dn.data[0]));
}

BOOST_AUTO_TEST_CASE(shape_errors) {
    loss_run run(2, 1, 3);
    const std::vector<double> a(6, 1.0), p(6, 1.0), n(3, 1.0);
    auto wrong_negatives = [&] {
        return ranking_loss_forward<reference_cpu, double>(run.ws, cview<double>{a.data(), {2, 3}},
                                                           cview<double>{p.data(), {2, 3}},
                                                           cview<double>{n.data(), {1, 3}}, {});
    };
    BOOST_CHECK_THROW(wrong_negatives(), tl::error);
    BOOST_CHECK_THROW(run.loss(a, p, std::vector<double>(6, 1.0), {.scale = 0}), tl::error);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// A tiny sentence embedder: mean of learned word vectors (words hashed into a vocabulary of 13) through a
// linear layer, out = W mean + bias. Keeps its activations only for embed(train = true) and refuses a
// backward without them, as a real model whose buffers the next forward overwrites.
struct toy_embedder {
    static constexpr index_t vocab = 13, width = 6, dim = 5;
    std::vector<float> table, weight, bias, dtable, dweight, dbias;
    std::vector<std::vector<index_t>> kept_words; // per row of the last train = true call
    std::vector<float> kept_mean;
    bool has_graph = false;
    index_t most_rows_kept = 0;

    explicit toy_embedder(std::uint64_t seed)
        : table(random_tensor<float>({vocab, width}, seed).data),
          weight(random_tensor<float>({dim, width}, seed + 1).data), bias(random_tensor<float>({dim}, seed + 2).data),
          dtable(table.size()), dweight(weight.size()), dbias(bias.size()) {}

    index_t embedding_dim() const { return dim; }

    static std::vector<index_t> words(const std::string& text) {
        std::vector<index_t> ids;
        std::istringstream in(text);
        for (std::string w; in >> w;) {
            std::uint64_t hsh = 1469598103934665603ull;
            for (unsigned char c : w)
                hsh = (hsh ^ c) * 1099511628211ull;
            ids.push_back(index_t(hsh % vocab));
        }
        return ids;
    }

    void embed(std::span<const std::string> texts, tensor_view<float> out, bool train) {
        const index_t n = index_t(texts.size());
        expect_shape("toy_embedder", "out", out, {n, dim});
        has_graph = train;
        if (train) {
            kept_words.assign(texts.size(), {});
            kept_mean.assign(std::size_t(n * width), 0.f);
            most_rows_kept = std::max(most_rows_kept, n);
        }
        for (index_t r = 0; r < n; ++r) {
            const auto ids = words(texts[std::size_t(r)]);
            std::vector<float> mean(width, 0.f);
            for (index_t id : ids)
                for (index_t k = 0; k < width; ++k)
                    mean[std::size_t(k)] += table[std::size_t(id * width + k)] / float(ids.size());
            for (index_t o = 0; o < dim; ++o) {
                float s = bias[std::size_t(o)];
                for (index_t k = 0; k < width; ++k)
                    s += weight[std::size_t(o * width + k)] * mean[std::size_t(k)];
                out.row(r)[o] = s;
            }
            if (train) {
                kept_words[std::size_t(r)] = ids;
                std::copy(mean.begin(), mean.end(), kept_mean.begin() + r * width);
            }
        }
    }

    void backward_embeddings(cview<float> d) {
        check(has_graph, "toy_embedder: backward without a train = true embed");
        const index_t n = index_t(kept_words.size());
        expect_shape("toy_embedder", "d", d, {n, dim});
        for (index_t r = 0; r < n; ++r) {
            std::vector<float> dmean(width, 0.f);
            for (index_t o = 0; o < dim; ++o) {
                const float g = d.row(r)[o];
                dbias[std::size_t(o)] += g;
                for (index_t k = 0; k < width; ++k) {
                    dweight[std::size_t(o * width + k)] += g * kept_mean[std::size_t(r * width + k)];
                    dmean[std::size_t(k)] += g * weight[std::size_t(o * width + k)];
                }
            }
            const auto& ids = kept_words[std::size_t(r)];
            for (index_t id : ids)
                for (index_t k = 0; k < width; ++k)
                    dtable[std::size_t(id * width + k)] += dmean[std::size_t(k)] / float(ids.size());
        }
        has_graph = false;
    }
};
static_assert(SentenceEmbedder<toy_embedder>);

std::vector<std::string> sentences(const std::string& tag, int n, int offset) {
    static const char* words[] = {"red",  "cat",   "sits", "on",   "a",   "mat", "blue", "sky",   "over", "the",
                                  "hill", "quick", "fox",  "runs", "far", "old", "tree", "grows", "tall", "rain"};
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
        std::string s = tag;
        for (int w = 0; w < 2 + (i + offset) % 4; ++w)
            s += std::string(" ") + words[(i * 7 + w * 3 + offset) % 20];
        out.push_back(s);
    }
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cached_ranking)

BOOST_AUTO_TEST_CASE(toy_embedder_backward_matches_finite_differences) {
    // The comparison below is only meaningful if the toy's own backward is right: check dweight numerically on
    // the plain step (float, one-sided tolerance for float rounding).
    toy_embedder model(3);
    const auto anchors = sentences("q", 4, 0), positives = sentences("d", 4, 1);
    ranking_step<reference_cpu> step;
    const ranking_step_options opt{.loss = {.scale = 5}, .mini_batch_size = 0};
    step.run(model, {anchors, positives}, opt);
    const std::vector<float> analytic = model.dweight;
    double worst = 0;
    for (std::size_t i = 0; i < model.weight.size(); ++i) {
        const float saved = model.weight[i], h = 1e-2f;
        model.weight[i] = saved + h;
        const double up = step.run(model, {anchors, positives}, opt);
        model.weight[i] = saved - h;
        const double down = step.run(model, {anchors, positives}, opt);
        model.weight[i] = saved;
        worst = std::max(worst, std::abs((up - down) / (2 * double(h)) - double(analytic[i])));
    }
    BOOST_TEST(worst < 2e-3);
}

BOOST_AUTO_TEST_CASE(cached_equals_plain) {
    const index_t b = 7;
    const auto anchors = sentences("q", b, 0), positives = sentences("d", b, 1), negatives = sentences("n", 2 * b, 2);
    for (bool symmetric : {false, true})
        for (index_t h : {0, 2}) {
            const text_batch batch{anchors, positives,
                                   std::span<const std::string>(negatives).subspan(0, std::size_t(h * b))};
            toy_embedder plain(5), cached(5);
            ranking_step<default_backend> step;
            const double loss_plain = step.run(plain, batch, {.loss = {.symmetric = symmetric}, .mini_batch_size = 0});
            const double loss_cached =
                step.run(cached, batch, {.loss = {.symmetric = symmetric}, .mini_batch_size = 3});
            BOOST_TEST_CONTEXT("symmetric " << symmetric << ", H " << h) {
                BOOST_TEST(loss_cached == loss_plain, boost::test_tools::tolerance(1e-6));
                BOOST_TEST(rel_error(cached.dweight, plain.dweight) < 1e-5);
                BOOST_TEST(rel_error(cached.dbias, plain.dbias) < 1e-5);
                BOOST_TEST(rel_error(cached.dtable, plain.dtable) < 1e-5);
                // The gradient is not trivially zero.
                BOOST_TEST(*std::max_element(plain.dweight.begin(), plain.dweight.end()) > 1e-3f);
                // Memory: the plain step kept every text's activations, the cached step one mini-batch.
                BOOST_TEST(plain.most_rows_kept == b * (2 + h));
                BOOST_TEST(cached.most_rows_kept == 3);
            }
        }
}

BOOST_AUTO_TEST_CASE(a_batch_of_1024_pairs_keeps_one_mini_batch) {
    // 1,024 pairs with mini-batches of 32: the model holds activations for 32 texts at a time, and the step's own
    // memory is the embeddings and their gradients (2 x 2048 x d), the (1024, 1024) scores, the normalised rows
    // and per-row sums: nothing that grows with the model.
    const index_t b = 1024, d = toy_embedder::dim;
    const auto anchors = sentences("q", int(b), 0), positives = sentences("d", int(b), 1);
    toy_embedder model(13);
    ranking_step<default_backend> step;
    const double loss = step.run(model, {anchors, positives}, {.mini_batch_size = 32});
    BOOST_TEST(std::isfinite(loss));
    BOOST_TEST(model.most_rows_kept == 32);
    const double floats = 2.0 * 2 * b * d + double(b) * b + 32.0 * d + 3.0 * b * d;
    const double doubles = 2.0 * b + 2.0 * b;
    BOOST_TEST(double(step.workspace_bytes()) <= 4 * floats + 8 * doubles + 10 * 64);
}

BOOST_AUTO_TEST_CASE(step_grows_and_accumulates) {
    const auto anchors = sentences("q", 5, 0), positives = sentences("d", 5, 1);
    toy_embedder once(9), twice(9);
    ranking_step<default_backend> step;
    step.run(once, {anchors, positives}, {.mini_batch_size = 2});
    step.run(twice, {anchors, positives}, {.mini_batch_size = 2});
    step.run(twice, {anchors, positives}, {.mini_batch_size = 2});
    for (std::size_t i = 0; i < once.dweight.size(); ++i)
        BOOST_TEST(twice.dweight[i] == 2 * once.dweight[i], boost::test_tools::tolerance(1e-5f));
    BOOST_CHECK_THROW(step.run(once, {anchors, std::span<const std::string>(positives).subspan(1)}), tl::error);
    const auto three = sentences("n", 3, 0);
    BOOST_CHECK_THROW(step.run(once, {anchors, positives, three}), tl::error);
}

BOOST_AUTO_TEST_SUITE_END()
