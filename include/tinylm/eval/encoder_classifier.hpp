// tinylm/eval/encoder_classifier.hpp: a text classifier fine-tuned end to end: an encoder (model/encoder.hpp),
// its token states pooled per text, and a linear softmax head, trained together by the trainer (issue 22).
//
//   classification_rows rows = pack_classification_rows(token_ids, labels, 256, pad_id);
//   tl::packed_rows source(rows.ids, rows.targets, rows.doc_start, rows.time, seed);
//   encoder_classifier clf(encoder, num_classes, {.seed = 1});
//   tl::trainer t(clf, source, validate, options);   // the trainer's loss()/backward() interface
//   t.run();
//   std::vector<int> predicted = clf.predict(token_ids_of_new_texts);
//
// The trainer knows models only through loss(ids, targets, doc_start), backward(scale), counted_targets() and
// parameter_entries(); this class gives the classification loss that form, so schedules, clipping, gradient
// accumulation and checkpoints (the encoder's Hugging Face folder plus classifier.safetensors) come for free.
// Rows are packed texts (doc_start as in train/batches.hpp); the target of a text's first token is its class and
// every other target is -100, so a text that starts with -100 (the row's padding) is not classified:
//
//   h = encoder(ids, doc_start)                          (B * T, d), attention inside each text
//   e_i = pool(h over the tokens of text i)              mean (default), CLS or max (ops/pooling.hpp)
//   z_i = W e_i + b                                      W (K, d), b (K): "classifier.weight", "classifier.bias"
//   loss = mean_i -log softmax(z_i)[y_i]
//
// backward: dz_i = (softmax(z_i) - onehot(y_i)) / n; dW += dz^T e; db += sum dz; de = dz W, spread over the
// text's tokens by the pooling backward, then encoder.backward_from_hidden. Parameter gradients accumulate
// (docs/conventions.md). The head starts at N(0, 0.02^2) weights and zero biases (transformers'
// BertForSequenceClassification).
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/core/tensor.hpp>
#include <tinylm/core/token.hpp>
#include <tinylm/io/hf_encoder.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/ops/pooling.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace tl::eval {

// Texts packed into rows of `time` tokens for the trainer (a DocumentBatchSource such as tl::packed_rows): each
// row holds whole texts one after another, then padding (its own document, targets -100).
struct classification_rows {
    std::vector<token_t> ids, targets; // rows * time
    std::vector<index_t> doc_start;    // rows * time: the column where each token's text starts
    index_t rows = 0, time = 0;
};

// First fit in the given order: a text goes into the first row with room, else a new row. A text longer than
// `time` tokens is cut to `time` (callers cut at the model's max_length first).
inline classification_rows pack_classification_rows(std::span<const std::vector<token_t>> texts,
                                                    std::span<const int> labels, index_t time, token_t pad_id) {
    check(texts.size() == labels.size() && !texts.empty(), [&] {
        return "pack_classification_rows: " + std::to_string(texts.size()) + " texts for " +
               std::to_string(labels.size()) + " labels (both must be non-empty and of one count)";
    });
    check(time >= 1, "pack_classification_rows: time must be positive");
    std::vector<index_t> used; // tokens taken in each row
    std::vector<std::vector<std::size_t>> members;
    for (std::size_t i = 0; i < texts.size(); ++i) {
        check(!texts[i].empty(),
              [&] { return "pack_classification_rows: text " + std::to_string(i) + " has no tokens"; });
        check(labels[i] >= 0, [&] {
            return "pack_classification_rows: label " + std::to_string(labels[i]) + " of text " + std::to_string(i) +
                   " is negative";
        });
        const index_t len = std::min(index_t(texts[i].size()), time);
        std::size_t r = 0;
        while (r < used.size() && used[r] + len > time)
            ++r;
        if (r == used.size()) used.push_back(0), members.emplace_back();
        used[r] += len;
        members[r].push_back(i);
    }
    classification_rows out;
    out.rows = index_t(used.size()), out.time = time;
    out.ids.assign(std::size_t(out.rows * time), pad_id);
    out.targets.assign(out.ids.size(), ignore_index);
    out.doc_start.assign(out.ids.size(), 0);
    for (index_t r = 0; r < out.rows; ++r) {
        const std::size_t row = std::size_t(r * time);
        index_t at = 0;
        for (std::size_t i : members[std::size_t(r)]) {
            const index_t len = std::min(index_t(texts[i].size()), time);
            std::copy_n(texts[i].begin(), len, out.ids.begin() + std::ptrdiff_t(row + std::size_t(at)));
            out.targets[row + std::size_t(at)] = token_t(labels[i]);
            std::fill_n(out.doc_start.begin() + std::ptrdiff_t(row + std::size_t(at)), len, at);
            at += len;
        }
        std::fill(out.doc_start.begin() + std::ptrdiff_t(row + std::size_t(at)),
                  out.doc_start.begin() + std::ptrdiff_t(row + std::size_t(time)), at); // padding: one document
    }
    return out;
}

struct encoder_classifier_options {
    pooling_mode pooling = pooling_mode::mean;
    double init_std = 0.02; // the head's weights
    std::uint64_t seed = 1;
};

namespace detail {
// The encoder's backend, named as the trainer looks for it (its matmul_precision bf16 needs onednn_cpu).
template <class Encoder>
struct backend_of_encoder {};
template <class Encoder>
requires requires { typename Encoder::backend; }
struct backend_of_encoder<Encoder> {
    using backend = typename Encoder::backend;
};
} // namespace detail

template <class Encoder>
class encoder_classifier : public detail::backend_of_encoder<Encoder> {
public:
    static constexpr bool has_adapter = false; // the checkpoint writes the encoder's folder and the head itself

    encoder_classifier(Encoder& encoder, index_t classes, encoder_classifier_options options = {})
        : encoder_(encoder), options_(options), K_(classes), D_(encoder.hidden_size()) {
        check(classes >= 2,
              [&] { return "encoder_classifier: needs at least two classes, got " + std::to_string(classes); });
        W_.resize(std::size_t(K_ * D_)), b_.assign(std::size_t(K_), 0.0f);
        dW_.assign(W_.size(), 0.0f), db_.assign(b_.size(), 0.0f);
        init_head(options_.seed);
        // The encoder's entries as they are now (freeze parts of it before building the classifier), then the head.
        entries_ = encoder_.parameter_entries();
        entries_.push_back({"classifier.weight", {W_.data(), {K_, D_}}, {dW_.data(), {K_, D_}}, param_kind::weight});
        entries_.push_back({"classifier.bias", {b_.data(), {K_}}, {db_.data(), {K_}}, param_kind::bias});
        entries_[entries_.size() - 2].group = entries_.back().group = param_group::head;
    }
    encoder_classifier(const encoder_classifier&) = delete;
    encoder_classifier& operator=(const encoder_classifier&) = delete;

    void init_head(std::uint64_t seed) {
        counter_rng rng(seed, 0xc1a5);
        for (float& w : W_)
            w = float(options_.init_std * rng.normal());
        std::fill(b_.begin(), b_.end(), 0.0f);
    }

    Encoder& encoder() { return encoder_; }
    const model_config& config() const { return encoder_.config(); }
    index_t classes() const { return K_; }
    const std::vector<parameter_entry>& parameter_entries() const { return entries_; }
    std::span<const float> head_weight() const { return W_; }
    std::span<const float> head_bias() const { return b_; }
    index_t counted_targets() const { return index_t(labels_.size()); }

    void zero_grad() {
        encoder_.zero_grad();
        std::fill(dW_.begin(), dW_.end(), 0.0f);
        std::fill(db_.begin(), db_.end(), 0.0f);
    }
    // Packed rows may be longer than the position table (each text may not); those plan in forward.
    void plan(index_t batch, index_t time) {
        if (time <= encoder_.config().max_seq_len) encoder_.plan(batch, time);
    }
    void set_gradient_checkpointing(bool on) {
        check(!on, "encoder_classifier: gradient checkpointing is a decoder option; the encoder has none");
    }

    // Mean cross-entropy over the texts of packed rows (the header's comment gives the layout); keeps what
    // backward needs.
    float loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start) {
        return run(ids, targets, doc_start, true);
    }
    float eval_loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start) {
        return run(ids, targets, doc_start, false);
    }
    // The trainer's token-window validation has no text boundaries: give it a validation callable instead.
    float eval_loss(cview<token_t>, cview<token_t>) {
        fail("encoder_classifier: validation needs packed rows with doc_start; give the trainer a validation "
             "callable (e.g. the loss or accuracy on a validation split)");
    }

    // Adds scale * d(loss)/d(parameters) of the last loss().
    void backward(double scale = 1.0) {
        check(has_forward_, "encoder_classifier::backward: call loss() first");
        has_forward_ = false;
        const index_t n = index_t(labels_.size());
        std::vector<float> dz(std::size_t(n * K_)), de(std::size_t(n * D_), 0.0f);
        for (index_t i = 0; i < n; ++i)
            for (index_t k = 0; k < K_; ++k)
                dz[std::size_t(i * K_ + k)] = float(
                    scale * (probs_[std::size_t(i * K_ + k)] - (labels_[std::size_t(i)] == k ? 1.0 : 0.0)) / double(n));
        for (index_t i = 0; i < n; ++i) {
            const float* e = pooled_.data() + i * D_;
            float* dei = de.data() + i * D_;
            for (index_t k = 0; k < K_; ++k) {
                const float g = dz[std::size_t(i * K_ + k)];
                db_[std::size_t(k)] += g;
                float* dw = dW_.data() + k * D_;
                const float* w = W_.data() + k * D_;
                for (index_t j = 0; j < D_; ++j)
                    dw[j] += g * e[j], dei[j] += g * w[j];
            }
        }
        dhidden_.resize(std::size_t(tokens_ * D_));
        pool_packed_backward<float>(options_.pooling, {dhidden_.data(), {tokens_, D_}}, {de.data(), {n, D_}},
                                    {arg_.data(), {n, D_}}, {starts_.data(), {n}}, {lengths_.data(), {n}});
        encoder_.backward_from_hidden(cview<float>{dhidden_.data(), {tokens_, D_}});
    }

    // Logits (n, K) of texts given as token ids (special tokens included, each at most the model's max_seq_len),
    // packed into rows of at most row_tokens tokens; inference only (nothing kept for backward).
    std::vector<float> logits(std::span<const std::vector<token_t>> texts, index_t row_tokens = 2048) {
        const index_t n = index_t(texts.size());
        std::vector<float> out(std::size_t(n * K_));
        std::vector<token_t> ids;
        std::vector<index_t> doc_start, starts, lengths;
        std::size_t first = 0;
        auto flush = [&](std::size_t end) {
            if (end == first) return;
            const index_t T = index_t(ids.size()), m = index_t(starts.size());
            const cview<float> h = encoder_.forward(cview<token_t>{ids.data(), {1, T}}, {}, {}, false,
                                                    cview<index_t>{doc_start.data(), {1, T}});
            starts_ = starts, lengths_ = lengths;
            pool(h, m);
            head_forward(m, out.data() + first * std::size_t(K_));
            ids.clear(), doc_start.clear(), starts.clear(), lengths.clear(), first = end;
        };
        for (std::size_t i = 0; i < texts.size(); ++i) {
            const index_t len = index_t(texts[i].size());
            check(len >= 1 && len <= encoder_.config().max_seq_len, [&] {
                return "encoder_classifier::logits: text " + std::to_string(i) + " has " + std::to_string(len) +
                       " tokens; it needs 1 to max_seq_len = " + std::to_string(encoder_.config().max_seq_len);
            });
            if (!ids.empty() && index_t(ids.size()) + len > row_tokens) flush(i);
            const index_t start = index_t(ids.size());
            ids.insert(ids.end(), texts[i].begin(), texts[i].end());
            doc_start.insert(doc_start.end(), std::size_t(len), start);
            starts.push_back(start), lengths.push_back(len);
        }
        flush(texts.size());
        has_forward_ = false;
        return out;
    }

    std::vector<int> predict(std::span<const std::vector<token_t>> texts, index_t row_tokens = 2048) {
        const std::vector<float> z = logits(texts, row_tokens);
        std::vector<int> out(texts.size());
        for (std::size_t i = 0; i < texts.size(); ++i) {
            const float* zi = z.data() + i * std::size_t(K_);
            out[i] = int(std::max_element(zi, zi + K_) - zi);
        }
        return out;
    }

    // Checkpoint files (train/checkpoint.hpp): the encoder's Hugging Face folder plus classifier.safetensors.
    void write_files(const std::filesystem::path& stage) const {
        write_encoder_files(encoder_, stage);
        safetensors_writer w;
        w.add<float>("classifier.weight", cview<float>{W_.data(), {K_, D_}});
        w.add<float>("classifier.bias", cview<float>{b_.data(), {K_}});
        w.save(stage / "classifier.safetensors");
    }
    void load_files(const std::filesystem::path& dir) {
        load_encoder(encoder_, dir);
        const safetensors_reader r(dir / "classifier.safetensors");
        r.read("classifier.weight", tensor_view<float>{W_.data(), {K_, D_}});
        r.read("classifier.bias", tensor_view<float>{b_.data(), {K_}});
    }

private:
    float run(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start, bool train) {
        check(doc_start.data != nullptr, "encoder_classifier::loss: needs doc_start (packed texts)");
        expect_same_shape("encoder_classifier", "targets", targets, ids);
        const index_t B = ids.dim(0), T = ids.dim(1);
        starts_.clear(), lengths_.clear(), labels_.clear();
        for (index_t b = 0; b < B; ++b)
            for (index_t t = 0; t < T; ++t) {
                const token_t y = targets[b * T + t];
                const bool starts_text = doc_start[b * T + t] == t;
                check(starts_text || t > 0, [&] {
                    return "encoder_classifier: doc_start of row " + std::to_string(b) + " does not start at 0";
                });
                if (starts_text) { // a text; one whose first target is -100 (padding) is not classified
                    check(y == ignore_index || (y >= 0 && y < K_), [&] {
                        return "encoder_classifier: the target " + std::to_string(y) + " at row " + std::to_string(b) +
                               ", column " + std::to_string(t) + " is not a class in [0, " + std::to_string(K_) + ")";
                    });
                    labels_.push_back(y);
                    starts_.push_back(b * T + t), lengths_.push_back(0);
                } else {
                    check(y == ignore_index, [&] {
                        return "encoder_classifier: a target at row " + std::to_string(b) + ", column " +
                               std::to_string(t) + " is inside a text; only a text's first token carries its class";
                    });
                }
                ++lengths_.back();
            }
        // Keep the classified texts only.
        std::size_t kept = 0;
        for (std::size_t i = 0; i < labels_.size(); ++i)
            if (labels_[i] >= 0)
                starts_[kept] = starts_[i], lengths_[kept] = lengths_[i], labels_[kept] = labels_[i], ++kept;
        starts_.resize(kept), lengths_.resize(kept), labels_.resize(kept);
        check(kept > 0, "encoder_classifier::loss: no text in the batch carries a class");
        tokens_ = B * T;
        const cview<float> h = encoder_.forward(ids, {}, {}, train, doc_start);
        const index_t n = index_t(kept);
        pool(h, n);
        probs_.resize(std::size_t(n * K_));
        std::vector<float> z(std::size_t(n * K_));
        head_forward(n, z.data());
        double loss = 0;
        for (index_t i = 0; i < n; ++i) {
            const float* zi = z.data() + i * K_;
            const double top = *std::max_element(zi, zi + K_);
            double sum = 0;
            for (index_t k = 0; k < K_; ++k)
                sum += (probs_[std::size_t(i * K_ + k)] = std::exp(double(zi[k]) - top));
            for (index_t k = 0; k < K_; ++k)
                probs_[std::size_t(i * K_ + k)] /= sum;
            loss -= std::log(probs_[std::size_t(i * K_ + labels_[std::size_t(i)])]);
        }
        has_forward_ = train;
        return float(loss / double(n));
    }

    void pool(cview<float> h, index_t n) {
        pooled_.resize(std::size_t(n * D_));
        arg_.resize(std::size_t(n * D_));
        pool_packed_forward<float>(options_.pooling, {pooled_.data(), {n, D_}}, {arg_.data(), {n, D_}}, h,
                                   {starts_.data(), {n}}, {lengths_.data(), {n}});
    }
    void head_forward(index_t n, float* z) const {
        for (index_t i = 0; i < n; ++i)
            for (index_t k = 0; k < K_; ++k) {
                double s = b_[std::size_t(k)];
                const float* w = W_.data() + k * D_;
                const float* e = pooled_.data() + i * D_;
                for (index_t j = 0; j < D_; ++j)
                    s += double(w[j]) * e[j];
                z[i * K_ + k] = float(s);
            }
    }

    Encoder& encoder_;
    encoder_classifier_options options_;
    index_t K_, D_;
    std::vector<float> W_, b_, dW_, db_;
    std::vector<parameter_entry> entries_;
    // The last loss(): the classified texts (flat token start, length, class), pooled states, probabilities.
    std::vector<index_t> starts_, lengths_, arg_;
    std::vector<index_t> labels_;
    std::vector<float> pooled_, dhidden_;
    std::vector<double> probs_;
    index_t tokens_ = 0;
    bool has_forward_ = false;
};

} // namespace tl::eval
