// eval/encoder_classifier.hpp: the packed layout, the loss against texts run one by one, every gradient (encoder
// and head) against central differences, and the trainer fine-tuning a tiny encoder with the head, resumed from a
// checkpoint bit-identically.
#include <tinylm/eval/encoder_classifier.hpp>
#include <tinylm/model/encoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/train/trainer.hpp>

#include "../support/model_gradcheck.hpp"
#include "../support/tiny_bert.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>

using namespace tl;
using namespace tl::eval;

namespace {

using tl_test::tiny_bert_config;
using tiny_encoder = encoder<tiny_bert_config, reference_cpu>;
using tiny_fast_encoder = encoder<tiny_bert_config>; // the default backend: training steps

// Texts of lengths 4, 3, 5 and 2 in rows of 8: first fit puts 4 + 3 in row 0, 5 + 2 in row 1, one pad token each.
const std::vector<std::vector<token_t>> texts = {{1, 5, 6, 2}, {1, 7, 2}, {1, 8, 9, 10, 2}, {1, 2}};
const std::vector<int> labels = {2, 0, 1, 2};

} // namespace

BOOST_AUTO_TEST_SUITE(encoder_classifier_suite)

BOOST_AUTO_TEST_CASE(rows_pack_texts_first_fit_with_the_class_on_each_first_token) {
    const classification_rows r = pack_classification_rows(texts, labels, 8, 0);
    BOOST_TEST(r.rows == 2);
    BOOST_TEST(r.time == 8);
    const std::vector<token_t> ids{1, 5, 6, 2, 1, 7, 2, 0, 1, 8, 9, 10, 2, 1, 2, 0};
    const std::vector<token_t> targets{2, -100, -100, -100, 0,    -100, -100, -100,
                                       1, -100, -100, -100, -100, 2,    -100, -100};
    const std::vector<index_t> doc_start{0, 0, 0, 0, 4, 4, 4, 7, 0, 0, 0, 0, 0, 5, 5, 7};
    BOOST_TEST(r.ids == ids, boost::test_tools::per_element());
    BOOST_TEST(r.targets == targets, boost::test_tools::per_element());
    BOOST_TEST(r.doc_start == doc_start, boost::test_tools::per_element());
    // A text longer than a row is cut to the row.
    const std::vector<std::vector<token_t>> long_text = {{1, 3, 4, 5, 6, 2}};
    const classification_rows cut = pack_classification_rows(long_text, std::vector<int>{1}, 4, 0);
    BOOST_TEST(cut.rows == 1);
    BOOST_TEST((cut.ids == std::vector<token_t>{1, 3, 4, 5}));
}

// The packed loss equals the mean cross-entropy of each text run alone (pooled, head, softmax computed here),
// and logits() of the texts give the same numbers: padding and neighbouring texts change nothing.
BOOST_AUTO_TEST_CASE(packed_loss_equals_the_texts_run_one_by_one) {
    tiny_encoder m(11);
    encoder_classifier clf(m, 3, {.init_std = 0.5, .seed = 2});
    const classification_rows r = pack_classification_rows(texts, labels, 8, 0);
    const shape s{r.rows, r.time};
    const float packed = clf.eval_loss({r.ids.data(), s}, {r.targets.data(), s}, {r.doc_start.data(), s});
    BOOST_TEST(clf.counted_targets() == 4);
    const std::vector<float> z = clf.logits(texts, 6); // rows of at most 6 tokens: three forwards
    const auto W = clf.head_weight();
    const auto b = clf.head_bias();
    double expected = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
        const index_t T = index_t(texts[i].size());
        const cview<float> h = m.forward({texts[i].data(), {1, T}}, {}, {}, false);
        double logit[3], top = -1e30;
        for (index_t k = 0; k < 3; ++k) {
            double v = b[std::size_t(k)];
            for (index_t j = 0; j < 16; ++j) {
                double mean = 0;
                for (index_t t = 0; t < T; ++t)
                    mean += h[t * 16 + j];
                v += W[std::size_t(k * 16 + j)] * mean / double(T);
            }
            logit[k] = v, top = std::max(top, v);
            BOOST_TEST(z[i * 3 + std::size_t(k)] == v, boost::test_tools::tolerance(1e-4));
        }
        double sum = 0;
        for (double v : logit)
            sum += std::exp(v - top);
        expected += -(logit[labels[i]] - top - std::log(sum)) / double(texts.size());
    }
    BOOST_TEST(double(packed) == expected, boost::test_tools::tolerance(1e-5));
    const std::vector<int> predicted = clf.predict(texts);
    for (std::size_t i = 0; i < texts.size(); ++i) {
        const float* zi = z.data() + 3 * i;
        BOOST_TEST(predicted[i] == int(std::max_element(zi, zi + 3) - zi));
    }
}

// Every trainable tensor, the head included, against central differences of the classifier's own f32 loss
// (the ops are checked in f64 in tests/ops; this checks the pooling per text, the head and their wiring).
BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
    for (pooling_mode mode : {pooling_mode::mean, pooling_mode::cls, pooling_mode::max}) {
        tiny_encoder m(11);
        encoder_classifier clf(m, 3, {.pooling = mode, .init_std = 0.5, .seed = 2});
        const classification_rows r = pack_classification_rows(texts, labels, 8, 0);
        const shape s{r.rows, r.time};
        const cview<token_t> ids{r.ids.data(), s}, targets{r.targets.data(), s};
        const cview<index_t> doc_start{r.doc_start.data(), s};
        clf.zero_grad();
        clf.loss(ids, targets, doc_start);
        clf.backward(1.0);
        const double error = tl::test::worst_entry_fd_error(
            clf.parameter_entries(), [&] { return double(clf.eval_loss(ids, targets, doc_start)); },
            pooling_name(mode));
        BOOST_TEST(error < 0.05, pooling_name(mode));
    }
}

BOOST_AUTO_TEST_CASE(bad_rows_are_named) {
    tiny_encoder m(11);
    encoder_classifier clf(m, 3);
    auto message = [&](std::vector<token_t> targets) {
        const std::vector<token_t> ids{1, 5, 6, 2};
        const std::vector<index_t> doc_start{0, 0, 0, 0};
        try {
            clf.loss({ids.data(), {1, 4}}, {targets.data(), {1, 4}}, {doc_start.data(), {1, 4}});
        } catch (const tl::error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    BOOST_TEST(message({3, -100, -100, -100}).find("is not a class in [0, 3)") != std::string::npos);
    BOOST_TEST(message({0, 1, -100, -100}).find("only a text's first token carries its class") != std::string::npos);
    BOOST_TEST(message({-100, -100, -100, -100}).find("no text in the batch carries a class") != std::string::npos);
    BOOST_CHECK_THROW(encoder_classifier(m, 1), tl::error);
}

// The trainer fine-tunes encoder and head on a toy task (the class is which of three marker tokens a text holds,
// among random filler): every training text ends classified right. A run paused at step 40 and resumed from its
// checkpoint (the encoder's folder, classifier.safetensors, AdamW's moments) ends bit-identical to one run through.
// (A pause at step 40 of 80: the schedule is the full run's.)
BOOST_AUTO_TEST_CASE(the_trainer_fine_tunes_encoder_and_head_and_resumes_bit_identically) {
    std::vector<std::vector<token_t>> toy;
    std::vector<int> toy_labels;
    counter_rng rng(9);
    for (int i = 0; i < 24; ++i) {
        const int k = i % 3;
        std::vector<token_t> t{1};
        const index_t len = 3 + index_t(rng.below(5));
        for (index_t j = 0; j < len; ++j)
            t.push_back(token_t(6 + rng.below(17)));
        t[1 + rng.below(std::uint64_t(len))] = token_t(3 + k);
        t.push_back(2);
        toy.push_back(t), toy_labels.push_back(k);
    }
    const classification_rows r = pack_classification_rows(toy, toy_labels, 12, 0);
    const fs::path dir = fs::temp_directory_path() / "tinylm_encoder_classifier_resume";
    auto train = [&](long long stop_at, bool fresh) {
        if (fresh) fs::remove_all(dir);
        tiny_fast_encoder m(11);
        encoder_classifier clf(m, 3, {.seed = 4});
        packed_rows source(r.ids, r.targets, r.doc_start, r.time, 7);
        trainer_options o{.batch_size = 4, .seq_len = r.time, .max_steps = 80, .stop_at = stop_at, .peak_lr = 1e-2};
        o.min_lr = 1e-3, o.warmup_steps = 5, o.eval_every = 0, o.checkpoint_every = 0, o.out_dir = dir;
        o.adamw.weight_decay = 0.0;
        trainer t(clf, source, std::function<double()>{}, o);
        std::vector<double> losses;
        t.on_step = [&](const step_report& s) { losses.push_back(s.loss); };
        t.run();
        std::vector<float> weights;
        for (const parameter_entry& e : clf.parameter_entries())
            weights.insert(weights.end(), e.value.data, e.value.data + e.value.numel());
        return std::tuple{weights, losses, clf.predict(toy)};
    };
    const auto [through, losses, predicted] = train(0, true);
    BOOST_TEST_REQUIRE(losses.size() == 80u);
    const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[77] + losses[78] + losses[79]) / 3;
    BOOST_TEST_MESSAGE("toy classification loss, mean of 3 steps: " << first << " -> " << last);
    BOOST_TEST(last < 0.1 * first);
    BOOST_TEST(predicted == toy_labels, boost::test_tools::per_element());
    train(40, true);
    BOOST_TEST(fs::exists(dir / "checkpoint" / "classifier.safetensors"));
    BOOST_TEST(fs::exists(dir / "checkpoint" / "model.safetensors"));
    const auto resumed = std::get<0>(train(0, false));
    BOOST_TEST(resumed.size() == through.size());
    BOOST_TEST(std::memcmp(resumed.data(), through.data(), through.size() * sizeof(float)) == 0);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
