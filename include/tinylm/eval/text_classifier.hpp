// tinylm/eval/text_classifier.hpp: a linear softmax head over fixed text features, and its metrics (issue 22).
//
//   feature_matrix x = hashed_ngram_features(texts);          // or the embeddings of a sentence encoder
//   linear_classifier head(x.dim, num_classes);
//   head.fit(x, labels, {.epochs = 200, .lr = 1e-2});          // AdamW on the mean cross-entropy
//   std::vector<int> predicted = head.predict(x_test);
//   classification_metrics m = score_predictions(labels_test, predicted, num_classes);
//
// The features are computed once and stay fixed: only W (K x D) and b (K) train. Two kinds serve the recipes:
// hashed bags of words and character n-grams (the baseline: the text's own surface), and the pooled sentence
// embedding of a tinylm encoder (embed/sentence_encoder.hpp encode(); the encoder itself does not train here:
// eval/encoder_classifier.hpp fine-tunes it with its head).
//
// head_loss<T> is the loss and its gradient for any floating type, so the tests check the float head against
// finite differences in double.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/data/normalize.hpp>
#include <tinylm/data/utf8.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/optim/adamw.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl::eval {

// Row-major (rows, dim) features, one row per text.
struct feature_matrix {
    std::vector<float> values;
    index_t rows = 0, dim = 0;
    std::span<const float> row(index_t i) const { return {values.data() + i * dim, std::size_t(dim)}; }
};

struct ngram_feature_options {
    int bits = 14;      // 2^bits hashed buckets
    int min_char_n = 2; // character n-grams inside each padded word " word "
    int max_char_n = 4;
    bool words = true; // whole lower-cased words too
};

// log(1 + count) of hashed word and character n-grams of the lower-cased text (runs of non-letters split words),
// each row scaled to unit length so that long and short texts weigh alike.
inline feature_matrix hashed_ngram_features(std::span<const std::string> texts, const ngram_feature_options& opt = {}) {
    check(opt.bits >= 4 && opt.bits <= 24 && opt.min_char_n >= 1 && opt.max_char_n >= opt.min_char_n,
          "hashed_ngram_features: bits must be in [4, 24] and 1 <= min_char_n <= max_char_n");
    feature_matrix x;
    x.rows = index_t(texts.size());
    x.dim = index_t(1) << opt.bits;
    x.values.assign(std::size_t(x.rows * x.dim), 0.0f);
    const std::uint64_t mask = std::uint64_t(x.dim) - 1;
    auto hash = [](std::span<const char32_t> s, std::uint64_t salt) {
        std::uint64_t h = mix64(salt);
        for (char32_t c : s)
            h = mix64(h ^ c);
        return h;
    };
    std::vector<char32_t> word;
    for (index_t r = 0; r < x.rows; ++r) {
        float* row = x.values.data() + r * x.dim;
        auto add_word = [&] {
            if (word.size() <= 2) return; // only the padding spaces
            if (opt.words) row[hash(word, 1) & mask] += 1.0f;
            for (int n = opt.min_char_n; n <= opt.max_char_n; ++n)
                for (std::size_t i = 0; i + std::size_t(n) <= word.size(); ++i)
                    row[hash(std::span<const char32_t>(word).subspan(i, std::size_t(n)), 2 + std::uint64_t(n)) &
                        mask] += 1.0f;
        };
        const std::string_view t = texts[std::size_t(r)];
        word.assign(1, U' ');
        for (std::size_t i = 0; i < t.size();) {
            const char32_t c = data::next_cp(t, i);
            if (data::is_letter(c)) {
                word.push_back(data::to_lower(c));
            } else if (word.size() > 1) {
                word.push_back(U' ');
                add_word();
                word.assign(1, U' ');
            }
        }
        word.push_back(U' ');
        add_word();
        double norm = 0;
        for (index_t j = 0; j < x.dim; ++j) {
            row[j] = std::log1p(row[j]);
            norm += double(row[j]) * row[j];
        }
        if (norm > 0)
            for (index_t j = 0; j < x.dim; ++j)
                row[j] = float(double(row[j]) / std::sqrt(norm));
    }
    return x;
}

// Mean cross-entropy of softmax(x W^T + b) over the rows of x, and its gradient into dW (K x D) and db (K)
// (overwritten). x is (n, D) row-major; labels in [0, K).
template <std::floating_point T>
T head_loss(std::span<const T> W, std::span<const T> b, std::span<const T> x, std::span<const int> labels, index_t K,
            index_t D, std::span<T> dW, std::span<T> db) {
    const index_t n = index_t(labels.size());
    check(n > 0 && index_t(x.size()) == n * D && index_t(W.size()) == K * D && index_t(b.size()) == K &&
              dW.size() == W.size() && db.size() == b.size(),
          "head_loss: shapes disagree");
    std::fill(dW.begin(), dW.end(), T(0));
    std::fill(db.begin(), db.end(), T(0));
    std::vector<T> p(static_cast<std::size_t>(K));
    T loss = 0;
    for (index_t i = 0; i < n; ++i) {
        const T* xi = x.data() + i * D;
        for (index_t k = 0; k < K; ++k) {
            T z = b[std::size_t(k)];
            const T* wk = W.data() + k * D;
            for (index_t j = 0; j < D; ++j)
                z += wk[j] * xi[j];
            p[std::size_t(k)] = z;
        }
        const T top = *std::max_element(p.begin(), p.end());
        T sum = 0;
        for (T& v : p)
            sum += (v = std::exp(v - top));
        const int y = labels[std::size_t(i)];
        check(y >= 0 && y < K, "head_loss: a label is outside [0, K)");
        loss -= std::log(p[std::size_t(y)] / sum);
        for (index_t k = 0; k < K; ++k) {
            // d(-log softmax_y)/dz_k = p_k - [k == y], averaged over the rows.
            const T g = (p[std::size_t(k)] / sum - T(k == y ? 1 : 0)) / T(n);
            db[std::size_t(k)] += g;
            T* dwk = dW.data() + k * D;
            for (index_t j = 0; j < D; ++j)
                dwk[j] += g * xi[j];
        }
    }
    return loss / T(n);
}

struct head_options {
    int epochs = 100;
    index_t batch = 64; // rows per AdamW step (shuffled each epoch)
    double lr = 1e-2;
    double weight_decay = 1e-2; // on W only
    std::uint64_t seed = 1;
};

class linear_classifier {
public:
    linear_classifier(index_t dim, index_t classes) : D_(dim), K_(classes) {
        check(dim > 0 && classes > 1, "linear_classifier: needs dim > 0 and at least two classes");
        W_.assign(std::size_t(K_ * D_), 0.0f);
        b_.assign(std::size_t(K_), 0.0f);
        dW_.assign(W_.size(), 0.0f);
        db_.assign(b_.size(), 0.0f);
        entries_.push_back({"classifier.weight", {W_.data(), {K_, D_}}, {dW_.data(), {K_, D_}}, param_kind::weight});
        entries_.push_back({"classifier.bias", {b_.data(), {K_}}, {db_.data(), {K_}}, param_kind::bias});
        entries_[0].group = entries_[1].group = param_group::head;
    }

    // entries_ view W_ and b_: a copy would point into the original; a move keeps the buffers, so the views hold.
    linear_classifier(const linear_classifier&) = delete;
    linear_classifier& operator=(const linear_classifier&) = delete;
    linear_classifier(linear_classifier&&) = default;
    linear_classifier& operator=(linear_classifier&&) = default;

    index_t dim() const { return D_; }
    index_t classes() const { return K_; }
    std::span<const float> weight() const { return W_; }
    std::span<const float> bias() const { return b_; }

    // Trains from zero weights; returns the mean training loss of each epoch.
    std::vector<double> fit(const feature_matrix& x, std::span<const int> labels, const head_options& opt = {}) {
        check(x.dim == D_ && x.rows == index_t(labels.size()) && x.rows > 0, [&] {
            return "linear_classifier::fit: " + std::to_string(x.rows) + " x " + std::to_string(x.dim) +
                   " features for " + std::to_string(labels.size()) + " labels, head dim " + std::to_string(D_);
        });
        check(opt.epochs > 0 && opt.batch > 0, "linear_classifier::fit: epochs and batch must be positive");
        std::fill(W_.begin(), W_.end(), 0.0f);
        std::fill(b_.begin(), b_.end(), 0.0f);
        adamw opt_w(entries_, {.lr = opt.lr,
                               .beta1 = 0.9,
                               .beta2 = 0.999,
                               .eps = 1e-8,
                               .weight_decay = opt.weight_decay,
                               .decay_embeddings = true});
        std::vector<std::size_t> order(std::size_t(x.rows));
        std::iota(order.begin(), order.end(), std::size_t(0));
        counter_rng rng(opt.seed, 0xc1a55);
        std::vector<float> xb;
        std::vector<int> yb;
        std::vector<double> losses;
        for (int e = 0; e < opt.epochs; ++e) {
            for (std::size_t i = order.size(); i > 1; --i)
                std::swap(order[i - 1], order[rng.below(i)]);
            double sum = 0;
            for (std::size_t start = 0; start < order.size(); start += std::size_t(opt.batch)) {
                const std::size_t end = std::min(order.size(), start + std::size_t(opt.batch));
                xb.clear();
                yb.clear();
                for (std::size_t i = start; i < end; ++i) {
                    const auto r = x.row(index_t(order[i]));
                    xb.insert(xb.end(), r.begin(), r.end());
                    yb.push_back(labels[order[i]]);
                }
                const float l = head_loss<float>(W_, b_, xb, yb, K_, D_, dW_, db_);
                sum += double(l) * double(end - start);
                opt_w.step();
            }
            losses.push_back(sum / double(order.size()));
        }
        return losses;
    }

    // The arg-max class of each row.
    std::vector<int> predict(const feature_matrix& x) const {
        check(x.dim == D_, "linear_classifier::predict: feature dim differs from the head's");
        std::vector<int> out(std::size_t(x.rows));
        for (index_t i = 0; i < x.rows; ++i) {
            const auto r = x.row(i);
            float best = -INFINITY;
            for (index_t k = 0; k < K_; ++k) {
                float z = b_[std::size_t(k)];
                for (index_t j = 0; j < D_; ++j)
                    z += W_[std::size_t(k * D_ + j)] * r[std::size_t(j)];
                if (z > best) best = z, out[std::size_t(i)] = int(k);
            }
        }
        return out;
    }

private:
    index_t D_, K_;
    std::vector<float> W_, b_, dW_, db_;
    std::vector<parameter_entry> entries_;
};

struct classification_metrics {
    double accuracy = 0;
    double macro_f1 = 0; // F1 averaged over the classes present in the labels or the predictions
    std::vector<double> f1;
    std::size_t n = 0;
};

inline classification_metrics score_predictions(std::span<const int> labels, std::span<const int> predicted,
                                                int classes) {
    check(labels.size() == predicted.size() && !labels.empty(),
          "score_predictions: labels and predictions must be non-empty and of one length");
    const std::size_t K = std::size_t(classes);
    std::vector<std::size_t> tp(K), fp(K), fn(K);
    classification_metrics m;
    m.n = labels.size();
    std::size_t correct = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) {
        const auto y = std::size_t(labels[i]), p = std::size_t(predicted[i]);
        check(y < K && p < K, "score_predictions: a label or prediction is outside [0, classes)");
        if (y == p) {
            ++correct, ++tp[y];
        } else {
            ++fp[p], ++fn[y];
        }
    }
    m.accuracy = double(correct) / double(labels.size());
    m.f1.assign(K, 0.0);
    std::size_t present = 0;
    double sum = 0;
    for (std::size_t k = 0; k < K; ++k) {
        if (tp[k] + fp[k] + fn[k] == 0) continue;
        ++present;
        m.f1[k] = 2.0 * double(tp[k]) / double(2 * tp[k] + fp[k] + fn[k]);
        sum += m.f1[k];
    }
    m.macro_f1 = present ? sum / double(present) : 0.0;
    return m;
}

} // namespace tl::eval
