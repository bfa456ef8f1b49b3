// eval/text_classifier.hpp and data/balance.hpp: the linear head learns a separable toy set, its gradient
// matches finite differences in double, the n-gram features and metrics give worked-out values, and balance()
// reaches exact histograms.
#include <tinylm/data/balance.hpp>
#include <tinylm/eval/text_classifier.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <set>

using namespace tl;
using namespace tl::eval;

BOOST_AUTO_TEST_SUITE(text_classifier)

// Three Gaussian-free clusters: class k has x_k = 1 plus small seeded noise on the other coordinates, so the
// classes are linearly separable; the trained head must classify all of them.
BOOST_AUTO_TEST_CASE(separable_toy_set_reaches_full_accuracy) {
    const index_t K = 3, D = 5, n = 90;
    feature_matrix x;
    x.rows = n, x.dim = D;
    std::vector<int> y;
    counter_rng rng(7);
    for (index_t i = 0; i < n; ++i) {
        const int k = int(i % K);
        y.push_back(k);
        for (index_t j = 0; j < D; ++j)
            x.values.push_back(float(j == k ? 1.0 : 0.3 * (rng.uniform() - 0.5)));
    }
    linear_classifier head(D, K);
    const auto losses = head.fit(x, y, {.epochs = 60, .batch = 16, .lr = 0.05, .weight_decay = 0.0, .seed = 3});
    BOOST_TEST(losses.back() < 0.1 * losses.front());
    const auto m = score_predictions(y, head.predict(x), int(K));
    BOOST_TEST(m.accuracy == 1.0);
    BOOST_TEST(m.macro_f1 == 1.0);
}

BOOST_AUTO_TEST_CASE(head_gradient_matches_finite_differences_in_double) {
    const index_t K = 4, D = 6, n = 5;
    counter_rng rng(11);
    std::vector<double> W(static_cast<std::size_t>(K * D)), b(static_cast<std::size_t>(K)),
        x(static_cast<std::size_t>(n * D));
    for (double& v : W)
        v = rng.uniform() - 0.5;
    for (double& v : b)
        v = rng.uniform() - 0.5;
    for (double& v : x)
        v = 2 * rng.uniform() - 1;
    const std::vector<int> y{0, 3, 1, 3, 2};
    std::vector<double> dW(W.size()), db(b.size()), scratch_w(W.size()), scratch_b(b.size());
    head_loss<double>(W, b, x, y, K, D, dW, db);
    const double h = 1e-5; // central differences: error ~h^2 |f'''| ~ 1e-10, rounding ~1e-16 / h
    auto loss_at = [&] { return head_loss<double>(W, b, x, y, K, D, scratch_w, scratch_b); };
    for (std::size_t i = 0; i < W.size(); ++i) {
        const double keep = W[i];
        W[i] = keep + h;
        const double up = loss_at();
        W[i] = keep - h;
        const double down = loss_at();
        W[i] = keep;
        BOOST_TEST(std::abs(dW[i] - (up - down) / (2 * h)) < 1e-8);
    }
    for (std::size_t k = 0; k < b.size(); ++k) {
        const double keep = b[k];
        b[k] = keep + h;
        const double up = loss_at();
        b[k] = keep - h;
        const double down = loss_at();
        b[k] = keep;
        BOOST_TEST(std::abs(db[k] - (up - down) / (2 * h)) < 1e-8);
    }
    // Zero weights: every class has probability 1/K, so the loss is log K.
    std::fill(W.begin(), W.end(), 0.0);
    std::fill(b.begin(), b.end(), 0.0);
    BOOST_TEST(loss_at() == std::log(double(K)), boost::test_tools::tolerance(1e-12));
}

// "Кот": the padded word " кот " has char 2..4-grams " к", "ко", "от", "т ", " ко", "кот", "от ", " кот",
// "кот " (9) and the word itself: 10 counts. Case and punctuation do not change the row.
BOOST_AUTO_TEST_CASE(ngram_features_ignore_case_and_punctuation) {
    const std::vector<std::string> texts{"Кот", "кот!!", "собака"};
    const feature_matrix x = hashed_ngram_features(texts, {.bits = 16});
    BOOST_TEST(x.rows == 3);
    std::size_t nonzero = 0;
    double norm = 0, dot01 = 0, dot02 = 0;
    for (index_t j = 0; j < x.dim; ++j) {
        nonzero += x.row(0)[std::size_t(j)] != 0;
        norm += double(x.row(0)[std::size_t(j)]) * x.row(0)[std::size_t(j)];
        dot01 += double(x.row(0)[std::size_t(j)]) * x.row(1)[std::size_t(j)];
        dot02 += double(x.row(0)[std::size_t(j)]) * x.row(2)[std::size_t(j)];
    }
    BOOST_TEST(nonzero == 10u); // no collisions among 10 grams in 2^16 buckets for this text
    BOOST_TEST(norm == 1.0, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(dot01 == 1.0, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(dot02 < 0.2);
}

// labels 0 0 1 1 2 2 0 1, predictions 0 1 1 1 2 0 0 2:
//   class 0: tp 2 fp 1 fn 1 -> F1 4/6;  class 1: tp 2 fp 1 fn 1 -> 4/6;  class 2: tp 1 fp 1 fn 1 -> 2/4
BOOST_AUTO_TEST_CASE(metrics_on_worked_example) {
    const std::vector<int> y{0, 0, 1, 1, 2, 2, 0, 1}, p{0, 1, 1, 1, 2, 0, 0, 2};
    const auto m = score_predictions(y, p, 4); // class 3 absent from both: left out of the macro average
    BOOST_TEST(m.accuracy == 5.0 / 8.0);
    BOOST_TEST(m.macro_f1 == (4.0 / 6 + 4.0 / 6 + 0.5) / 3, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(balance_classes)

// Counts 10, 4, 7: uniform without replacement gives min 4 per class, 12 in all, no index twice.
BOOST_AUTO_TEST_CASE(uniform_default_is_the_smallest_class_without_replacement) {
    std::vector<int> labels;
    for (int k = 0; k < 3; ++k)
        labels.insert(labels.end(), std::size_t(k == 0 ? 10 : k == 1 ? 4 : 7), k);
    const auto r = data::balance(labels, 3, {.seed = 5});
    BOOST_TEST(r.before == (std::vector<std::size_t>{10, 4, 7}), boost::test_tools::per_element());
    BOOST_TEST(r.after == (std::vector<std::size_t>{4, 4, 4}), boost::test_tools::per_element());
    BOOST_TEST(r.indices.size() == 12u);
    BOOST_TEST(r.repeated == 0u);
    BOOST_TEST(std::set<std::size_t>(r.indices.begin(), r.indices.end()).size() == 12u);
    std::vector<std::size_t> seen(3);
    for (std::size_t i : r.indices)
        ++seen[std::size_t(labels[i])];
    BOOST_TEST(seen == r.after, boost::test_tools::per_element());
    // Seeded: the same seed gives the same sample, another seed (almost surely) another.
    BOOST_TEST(data::balance(labels, 3, {.seed = 5}).indices == r.indices, boost::test_tools::per_element());
    BOOST_TEST((data::balance(labels, 3, {.seed = 6}).indices != r.indices));
}

// Mix 1:2:1 of 10 examples -> targets 2.5, 5, 2.5: floors 2, 5, 2 and one remainder to the first class (stable).
// Class 1 has 4 examples: all four plus one repeat with replacement, only four without.
BOOST_AUTO_TEST_CASE(target_mix_with_and_without_replacement) {
    std::vector<int> labels;
    for (int k = 0; k < 3; ++k)
        labels.insert(labels.end(), std::size_t(k == 0 ? 10 : k == 1 ? 4 : 7), k);
    const auto with = data::balance(labels, 3, {.mix = {1, 2, 1}, .total = 10, .seed = 1});
    BOOST_TEST(with.target == (std::vector<std::size_t>{3, 5, 2}), boost::test_tools::per_element());
    BOOST_TEST(with.after == with.target, boost::test_tools::per_element());
    BOOST_TEST(with.repeated == 1u);
    const auto without = data::balance(labels, 3, {.mix = {1, 2, 1}, .total = 10, .replacement = false, .seed = 1});
    BOOST_TEST(without.after == (std::vector<std::size_t>{3, 4, 2}), boost::test_tools::per_element());
    BOOST_TEST(without.indices.size() == 9u);
    BOOST_CHECK_THROW(data::balance(labels, 2), tl::error); // label 2 outside [0, 2)
}

BOOST_AUTO_TEST_SUITE_END()
