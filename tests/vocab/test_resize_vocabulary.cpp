// Growing a model's vocabulary (issue 16): old rows and every other parameter bit-identical, new rows as
// transformers' mean_resizing (mean + 1e-9 Σ noise), the mean of a word's old pieces, or random; logits on text
// without new tokens unchanged; stage 1 with a row mask trains only the new rows; KL(before ‖ after) on held-out
// text tiny with the mean and larger with random rows; errors for bad resizes.
#include "../support/errors.hpp"

#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/safetensors.hpp>

#include <tinylm/model/decoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/model/resize_vocabulary.hpp>
#include <tinylm/model/vocab_growth.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/tokenizer/add_tokens.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

using namespace tl;
using tl_test::error_of;

namespace {

using model_t = decoder<families::llama>;

model_config small_config(index_t vocab, bool tied) {
    model_config c = presets::tiny::value;
    c.vocab_size = vocab;
    c.tied_embeddings = tied;
    return c;
}

const parameter_entry& entry(const model_t& m, const std::string& name) {
    for (const auto& e : m.parameter_entries())
        if (e.name == name) return e;
    BOOST_FAIL("no parameter " << name);
    return m.parameter_entries().front();
}

bool same_bytes(const float* a, const float* b, index_t n) {
    return std::memcmp(a, b, std::size_t(n) * sizeof(float)) == 0;
}

// Every parameter of `after` equals `before`'s bit for bit, except the rows >= n_old of the vocabulary matrices.
void check_old_parts_identical(const model_t& before, const model_t& after) {
    const index_t n_old = before.config().vocab_size;
    for (std::size_t i = 0; i < before.parameter_entries().size(); ++i) {
        const auto& a = before.parameter_entries()[i];
        const auto& b = after.parameter_entries()[i];
        const index_t n = a.group == param_group::embedding || a.group == param_group::head ? n_old * a.value.dim(1)
                                                                                            : a.value.numel();
        BOOST_TEST(same_bytes(a.value.data, b.value.data, n), a.name);
    }
}

std::vector<double> column_mean(const parameter_entry& e, index_t rows) {
    const index_t d = e.value.dim(1);
    std::vector<double> m(static_cast<std::size_t>(d), 0.0);
    for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < d; ++j)
            m[std::size_t(j)] += e.value.data[r * d + j];
    for (double& x : m)
        x /= double(rows);
    return m;
}

// The texts: Pushkin (public domain), one part to train on and one held out.
const std::string train_text =
    "Отец мой Андрей Петрович Гринёв в молодости своей служил при графе Минихе и вышел в отставку премьер-майором "
    "в 17.. году. С тех пор жил он в своей Симбирской деревне, где и женился на девице Авдотье Васильевне Ю., "
    "дочери бедного тамошнего дворянина. Нас было девять человек детей. Все мои братья и сестры умерли во "
    "младенчестве. Матушка была ещё мною брюхата, как уже я был записан в Семёновский полк сержантом.";
const std::string held_out_text = "Нас было девять человек детей, и жил он в своей деревне, где служил при графе.";

tokenizer small_tokenizer() {
    return load_tokenizer_json(TINYLM_SOURCE_DIR "/tests/reference/tokenizer/trained_byte_level.json");
}

// Windows of T tokens from `ids` and their next tokens.
void windows(const std::vector<token_t>& ids, index_t B, index_t T, counter_rng& rng, std::vector<token_t>& x,
             std::vector<token_t>& y) {
    x.resize(std::size_t(B * T));
    y.resize(std::size_t(B * T));
    for (index_t b = 0; b < B; ++b) {
        const index_t start = index_t(rng.below(ids.size() - std::size_t(T) - 1));
        for (index_t t = 0; t < T; ++t) {
            x[std::size_t(b * T + t)] = ids[std::size_t(start + t)];
            y[std::size_t(b * T + t)] = ids[std::size_t(start + t + 1)];
        }
    }
}

void train(model_t& model, const std::vector<token_t>& ids, int steps, double lr, double weight_decay = 0.0) {
    adamw opt(model, {.weight_decay = weight_decay});
    const index_t B = 4, T = 32;
    counter_rng rng(11);
    std::vector<token_t> x, y;
    for (int s = 0; s < steps; ++s) {
        windows(ids, B, T, rng, x, y);
        model.zero_grad();
        model.loss(cview<token_t>{x.data(), {B, T}}, cview<token_t>{y.data(), {B, T}});
        model.backward();
        clip_grad_norm(model.parameter_entries(), 1.0);
        opt.step(lr);
    }
}

// log-softmax rows of the logits of `ids` (one sequence), in double.
std::vector<std::vector<double>> log_probs(model_t& m, const std::vector<token_t>& ids) {
    const index_t T = index_t(ids.size()), V = m.config().vocab_size;
    m.plan(1, T);
    std::vector<float> logits(std::size_t(T * V));
    m.logits(cview<token_t>{ids.data(), {1, T}}, tensor_view<float>{logits.data(), {1, T, V}});
    std::vector<std::vector<double>> out(static_cast<std::size_t>(T));
    for (index_t t = 0; t < T; ++t) {
        const float* z = logits.data() + t * V;
        double mx = z[0];
        for (index_t v = 0; v < V; ++v)
            mx = std::max(mx, double(z[v]));
        double s = 0;
        for (index_t v = 0; v < V; ++v)
            s += std::exp(double(z[v]) - mx);
        auto& row = out[std::size_t(t)];
        row.resize(std::size_t(V));
        for (index_t v = 0; v < V; ++v)
            row[std::size_t(v)] = double(z[v]) - mx - std::log(s);
    }
    return out;
}

// Mean over positions of KL(before ‖ after); `after` has more tokens, which `before` gives probability 0.
double mean_kl(model_t& before, model_t& after, const std::vector<token_t>& ids) {
    const auto p = log_probs(before, ids), q = log_probs(after, ids);
    double kl = 0;
    for (std::size_t t = 0; t < p.size(); ++t)
        for (std::size_t v = 0; v < p[t].size(); ++v)
            kl += std::exp(p[t][v]) * (p[t][v] - q[t][v]);
    return kl / double(p.size());
}

} // namespace

BOOST_AUTO_TEST_SUITE(resize_vocabulary)

BOOST_AUTO_TEST_CASE(old_rows_identical_new_rows_as_transformers_mean) {
    for (bool tied : {false, true}) {
        // 300 old rows of width 64 (N > d: the covariance can be positive definite, so there is noise).
        model_t model(small_config(300, tied), 3);
        const auto grown = tl::resize_vocabulary(model, 305);
        BOOST_TEST(grown->config().vocab_size == 305);
        check_old_parts_identical(model, *grown);
        for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
            if (tied && std::string(name) == "lm_head.weight") continue;
            const auto& old_e = entry(model, name);
            const auto& new_e = entry(*grown, name);
            const auto mean = column_mean(old_e, 300);
            // Each new row is the mean plus noise of covariance 1e-9 Σ: per element ~3e-5 of the rows' spread
            // (~1e-6 here), so within 6 of its standard deviations, and not zero.
            double max_dev = 0, sum_sq = 0, var = 0;
            for (std::size_t j = 0; j < mean.size(); ++j)
                for (index_t r = 0; r < 300; ++r) {
                    const double x = old_e.value.data[r * 64 + index_t(j)] - mean[j];
                    var += x * x / 300.0;
                }
            var /= double(mean.size());
            for (index_t r = 300; r < 305; ++r)
                for (index_t j = 0; j < 64; ++j) {
                    const double dev = new_e.value.data[r * 64 + j] - mean[std::size_t(j)];
                    max_dev = std::max(max_dev, std::abs(dev));
                    sum_sq += dev * dev;
                }
            BOOST_TEST(max_dev < 6 * std::sqrt(1e-9 * var), name << " max |new - mean| " << max_dev);
            // The noise's variance is 1e-9 times the rows' (5 * 64 draws: within a factor of 2 of it, but
            // float rounding of values ~0.02 adds ~1e-9^2 variance).
            const double noise_var = sum_sq / (5.0 * 64.0);
            BOOST_TEST(noise_var > 0.5e-9 * var, name << " noise variance " << noise_var << " rows' " << var);
            BOOST_TEST(noise_var < 2.0e-9 * var + 1e-18, name << " noise variance " << noise_var << " rows' " << var);
        }
    }
}

BOOST_AUTO_TEST_CASE(fewer_rows_than_width_gives_the_plain_mean) {
    model_t model(small_config(40, false), 5); // 40 rows of width 64: Σ has rank < 64, as transformers: the mean
    const auto grown = tl::resize_vocabulary(model, 42);
    const auto& e = entry(*grown, "model.embed_tokens.weight");
    const auto mean = column_mean(entry(model, "model.embed_tokens.weight"), 40);
    for (index_t r = 40; r < 42; ++r)
        for (index_t j = 0; j < 64; ++j)
            BOOST_TEST(e.value.data[r * 64 + j] == float(mean[std::size_t(j)]));
}

BOOST_AUTO_TEST_CASE(subtoken_mean_and_random) {
    model_t model(small_config(300, false), 4);
    vocab_resize_options o;
    o.embedding_init = new_row_init::subtoken_mean;
    o.head_init = new_row_init::random;
    o.pieces = {{5, 17, 230}, {299}};
    o.seed = 9;
    const auto grown = tl::resize_vocabulary(model, 302, o);
    check_old_parts_identical(model, *grown);
    const auto& old_e = entry(model, "model.embed_tokens.weight");
    const auto& e = entry(*grown, "model.embed_tokens.weight");
    for (index_t j = 0; j < 64; ++j) {
        const double m =
            (double(old_e.value.data[5 * 64 + j]) + old_e.value.data[17 * 64 + j] + old_e.value.data[230 * 64 + j]) /
            3.0;
        BOOST_TEST(e.value.data[300 * 64 + j] == float(m));
        BOOST_TEST(e.value.data[301 * 64 + j] == old_e.value.data[299 * 64 + j]);
    }
    // Random head rows: N(0, init_std^2), 128 draws.
    const auto& h = entry(*grown, "lm_head.weight");
    double sq = 0;
    for (index_t i = 300 * 64; i < 302 * 64; ++i)
        sq += double(h.value.data[i]) * h.value.data[i];
    const double std = std::sqrt(sq / 128.0);
    const double want = model.config().init_std;
    BOOST_TEST(std > 0.75 * want, std << " against " << want);
    BOOST_TEST(std < 1.25 * want, std << " against " << want);
    // The same seed gives the same rows.
    const auto again = tl::resize_vocabulary(model, 302, o);
    BOOST_TEST(same_bytes(entry(*again, "lm_head.weight").value.data, h.value.data, 302 * 64));
}

BOOST_AUTO_TEST_CASE(logits_of_old_tokens_unchanged) {
    for (bool tied : {false, true}) {
        model_t model(small_config(300, tied), 6);
        const auto grown = tl::resize_vocabulary(model, 310);
        std::vector<token_t> ids;
        for (int i = 0; i < 20; ++i)
            ids.push_back(token_t((i * 37) % 300));
        const auto p = log_probs(model, ids);
        model.plan(1, 20);
        grown->plan(1, 20);
        std::vector<float> a(20 * 300), b(20 * 310);
        model.logits(cview<token_t>{ids.data(), {1, 20}}, tensor_view<float>{a.data(), {1, 20, 300}});
        grown->logits(cview<token_t>{ids.data(), {1, 20}}, tensor_view<float>{b.data(), {1, 20, 310}});
        double worst = 0, scale = 0;
        for (index_t t = 0; t < 20; ++t)
            for (index_t v = 0; v < 300; ++v) {
                worst = std::max(worst, double(std::abs(a[std::size_t(t * 300 + v)] - b[std::size_t(t * 310 + v)])));
                scale = std::max(scale, double(std::abs(a[std::size_t(t * 300 + v)])));
            }
        BOOST_TEST(worst <= 1e-6 * scale, "tied " << tied << ": max |Δlogit| " << worst << " of " << scale);
    }
}

BOOST_AUTO_TEST_CASE(bad_resizes_are_clear_errors) {
    model_t model(small_config(300, false), 1);
    auto has = [](const std::string& msg, const std::string& part) {
        BOOST_TEST(msg.find(part) != std::string::npos, "\"" << msg << "\" lacks \"" << part << "\"");
    };
    has(error_of([&] { tl::resize_vocabulary(model, 299); }),
        "the new vocabulary (299) is smaller than the current one (300)");
    model_t tied(small_config(310, true), 1);
    has(error_of([&] { tl::resize_vocabulary_into(model, tied); }), "untied embeddings and the target tied ones");
    model_t smaller(small_config(200, false), 1);
    has(error_of([&] { tl::resize_vocabulary_into(model, smaller); }), "is smaller than the current one");
    model_config other = small_config(310, false);
    other.rope_theta = 500.0;
    model_t different(other, 1);
    has(error_of([&] { tl::resize_vocabulary_into(model, different); }),
        "differs from the model's in more than vocab_size");
    model_t tied_model(small_config(300, true), 1);
    vocab_resize_options o;
    o.head_init = new_row_init::random;
    has(error_of([&] { tl::resize_vocabulary(tied_model, 305, o); }),
        "embeddings are tied, so the head is the embedding");
    o = {};
    o.embedding_init = new_row_init::subtoken_mean;
    o.pieces = {{1, 2}};
    has(error_of([&] { tl::resize_vocabulary(model, 305, o); }),
        "subtoken_mean needs the pieces of each of the 5 new tokens");
    o.pieces = {{1}, {2}, {3}, {4}, {300}};
    has(error_of([&] { tl::resize_vocabulary(model, 305, o); }), "piece id 300 of new token 304 is not an old token");
}

// Stage 1 of growing a vocabulary: only the new rows of the embedding (and head) train; every other parameter,
// the old rows included, stays bit-identical even with weight decay.
BOOST_AUTO_TEST_CASE(stage_one_with_a_row_mask_changes_only_new_rows) {
    for (bool tied : {false, true}) {
        tokenizer tok = small_tokenizer();
        const tokenizer before_tok = tok;
        const std::vector<std::string> words = {"Гринёв", "Симбирской", "младенчестве"};
        const auto new_ids = tl::add_tokens(tok, words);
        model_t model(small_config(index_t(before_tok.vocab_size()), tied), 2);
        vocab_resize_options o;
        o.embedding_init = new_row_init::subtoken_mean;
        for (const auto& w : words)
            o.pieces.push_back(before_tok.encode(w));
        const auto grown = tl::resize_vocabulary(model, index_t(tok.vocab_size()), o);
        // A copy of the grown model before training, to compare with.
        const auto start = tl::resize_vocabulary(model, index_t(tok.vocab_size()), o);

        const index_t V = grown->config().vocab_size, n_old = model.config().vocab_size;
        std::vector<std::uint8_t> mask(std::size_t(V), 0);
        for (token_t id : new_ids)
            mask[std::size_t(id)] = 1;
        grown->set_trainable([](const parameter_entry&) { return true; }, false);
        grown->set_trainable(param_group::embedding, true);
        grown->set_row_mask(param_group::embedding, mask);
        if (!tied) {
            grown->set_trainable(param_group::head, true);
            grown->set_row_mask(param_group::head, mask);
        }
        const auto ids = tok.encode(train_text + " " + train_text);
        train(*grown, ids, 10, 1e-2, 0.1);

        check_old_parts_identical(model, *grown);
        // ... and the new rows did train.
        for (const auto& e : grown->parameter_entries()) {
            if (e.group != param_group::embedding && e.group != param_group::head) continue;
            const auto& s = entry(*start, e.name);
            const index_t d = e.value.dim(1);
            BOOST_TEST(!same_bytes(e.value.data + n_old * d, s.value.data + n_old * d, (V - n_old) * d), e.name);
        }
    }
}

// KL(before ‖ after) on held-out text: the point of mean initialisation is that the model's predictions hardly
// change; random rows move them more. On a model trained a little, so that its predictions are not uniform.
BOOST_AUTO_TEST_CASE(kl_before_after_is_tiny_with_the_mean) {
    for (bool tied : {false, true}) {
        tokenizer tok = small_tokenizer();
        model_t model(small_config(index_t(tok.vocab_size()), tied), 8);
        train(model, tok.encode(train_text), 40, 1e-2);
        const auto held_out = tok.encode(held_out_text);
        const std::vector<std::string> words = {"Гринёв", "Симбирской", "младенчестве", "сержантом", "дворянина"};
        tl::add_tokens(tok, words);
        const index_t V = index_t(tok.vocab_size());
        auto mean_model = tl::resize_vocabulary(model, V);
        vocab_resize_options random;
        random.embedding_init = new_row_init::random;
        random.seed = 1;
        auto random_model = tl::resize_vocabulary(model, V, random);
        const double kl_mean = mean_kl(model, *mean_model, held_out);
        const double kl_random = mean_kl(model, *random_model, held_out);
        BOOST_TEST_MESSAGE((tied ? "tied" : "untied")
                           << ": KL(before || after) mean " << kl_mean << ", random " << kl_random);
        BOOST_TEST(kl_mean < 1e-3);
        BOOST_TEST(kl_mean >= 0.0);
        BOOST_TEST(kl_random > 3 * kl_mean);
    }
}

BOOST_AUTO_TEST_CASE(stages_set_what_trains) {
    for (bool tied : {false, true}) {
        model_t model(small_config(310, tied), 1);
        const std::vector<token_t> new_ids = {300, 305, 309};
        auto trainable_groups = [&] {
            std::vector<std::string> names;
            for (const auto& e : model.trainable_entries())
                names.push_back(e.name + (e.row_mask ? "[rows]" : ""));
            return names;
        };
        tl::set_vocab_stage(model, vocab_stage::new_rows, new_ids);
        std::vector<std::string> want = {"model.embed_tokens.weight[rows]"};
        if (!tied) want.push_back("lm_head.weight[rows]");
        BOOST_TEST(trainable_groups() == want, boost::test_tools::per_element());
        for (const auto& e : model.trainable_entries()) {
            BOOST_TEST(std::count(e.row_mask->begin(), e.row_mask->end(), 1) == 3);
            BOOST_TEST((*e.row_mask)[305] == 1);
        }
        tl::set_vocab_stage(model, vocab_stage::embeddings_and_head, new_ids);
        want = {"model.embed_tokens.weight"};
        if (!tied) want.push_back("lm_head.weight");
        BOOST_TEST(trainable_groups() == want, boost::test_tools::per_element());
        tl::set_vocab_stage(model, vocab_stage::all, new_ids);
        BOOST_TEST(model.trainable_entries().size() == model.parameter_entries().size());
        for (const auto& e : model.trainable_entries())
            BOOST_TEST(e.row_mask == nullptr);
        const std::vector<token_t> outside = {310};
        BOOST_TEST(error_of([&] {
                       tl::set_vocab_stage(model, vocab_stage::new_rows, outside);
                   }).find("new token id 310 is outside the vocabulary of 310") != std::string::npos);
    }
}

// Stage 1 through the staging helper on texts with the new words: their perplexity falls and the model gives the
// new tokens more probability; a new token started as the mean of one piece is nearest to that piece.
BOOST_AUTO_TEST_CASE(stage_one_learns_the_new_words_and_diagnostics) {
    tokenizer tok = small_tokenizer();
    const tokenizer before_tok = tok;
    const std::vector<std::string> words = {"Гринёв", "Симбирской", "младенчестве"};
    model_t model(small_config(index_t(before_tok.vocab_size()), false), 8);
    train(model, before_tok.encode(train_text), 40, 1e-2);
    const auto new_ids = tl::add_tokens(tok, words);
    vocab_resize_options o;
    o.embedding_init = new_row_init::subtoken_mean;
    o.head_init = new_row_init::hf_mean;
    for (const auto& w : words)
        o.pieces.push_back(before_tok.encode(w));
    o.pieces[2] = {o.pieces[2].front()}; // one piece: the new row equals that piece's row
    auto grown = tl::resize_vocabulary(model, index_t(tok.vocab_size()), o);
    const index_t n_old = model.config().vocab_size;

    const auto near = tl::nearest_tokens(*grown, new_ids[2], 3, token_side::input, n_old);
    BOOST_TEST_REQUIRE(near.size() == 3u);
    BOOST_TEST(near[0].first == o.pieces[2].front());
    BOOST_TEST(near[0].second > 0.999999);
    BOOST_TEST(near[1].second <= near[0].second);
    BOOST_TEST(tl::token_cosine(*grown, new_ids[0], new_ids[0], token_side::output) == 1.0,
               boost::test_tools::tolerance(1e-12));

    const auto with_words = tok.encode(train_text);
    const double ppl_before = tl::perplexity(*grown, with_words, 32);
    const double mass_before = tl::new_token_mass(*grown, with_words, 32, token_t(n_old));
    tl::set_vocab_stage(*grown, vocab_stage::new_rows, new_ids);
    train(*grown, with_words, 30, 1e-2);
    const double ppl_after = tl::perplexity(*grown, with_words, 32);
    const double mass_after = tl::new_token_mass(*grown, with_words, 32, token_t(n_old));
    BOOST_TEST_MESSAGE("stage 1: perplexity " << ppl_before << " -> " << ppl_after << ", new-token mass " << mass_before
                                              << " -> " << mass_after);
    BOOST_TEST(ppl_after < ppl_before);
    BOOST_TEST(mass_after > mass_before);
    // The old tokens' rows did not move: KL on text without the new words comes only from the new tokens' mass.
    const auto held_out = tok.encode(held_out_text);
    const double kl = tl::mean_kl(model, *grown, held_out, 32);
    BOOST_TEST_MESSAGE("KL(before || after stage 1) on held-out text " << kl);
    BOOST_TEST(kl < 0.05); // only the new tokens took probability (0.004 here)
}

namespace {
template <class Family>
void export_resize(const std::filesystem::path& root, const std::string& name, bool tied) {
    model_config c = small_config(300, tied);
    c.qkv_bias = Family::value.qkv_bias;
    c.init_std = 0.02; // transformers' initializer_range: noise ~6e-7 per element
    decoder<Family> model(c, 12);
    save_pretrained(model, root / name / "original");
    vocab_resize_options o;
    o.seed = 5;
    const auto grown = tl::resize_vocabulary(model, 310, o);
    save_pretrained(*grown, root / name / "resized");
    o.mean_noise = false;
    save_pretrained(*tl::resize_vocabulary(model, 310, o), root / name / "resized_mean");
    const index_t B = 2, T = 12;
    std::vector<token_t> ids(std::size_t(B * T));
    std::vector<std::int64_t> ids64(ids.size());
    counter_rng rng(3);
    for (std::size_t i = 0; i < ids.size(); ++i)
        ids64[i] = ids[i] = token_t(rng.below(300)); // old tokens only
    std::vector<float> logits(std::size_t(B * T * 310));
    grown->plan(B, T);
    grown->logits(cview<token_t>{ids.data(), {B, T}}, tensor_view<float>{logits.data(), {B, T, 310}});
    safetensors_writer w;
    w.add<std::int64_t>("input_ids", cview<std::int64_t>{ids64.data(), {B, T}});
    w.add<float>("logits", cview<float>{logits.data(), {B, T, 310}});
    w.save(root / name / "expected.safetensors");
}
} // namespace

// For tests/reference/vocab/check_resize.py (ctest -L torch: transformers_resize_matches_tinylm): a Llama-like
// untied and a Qwen2-like tied model, before and after resize_vocabulary(310, hf_mean), and the resized
// model's logits on old tokens.
BOOST_AUTO_TEST_CASE(export_for_transformers_resize, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_RESIZE_EXPORT_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_RESIZE_EXPORT_DIR");
    export_resize<families::llama>(dir, "llama_untied", false);
    export_resize<families::qwen2>(dir, "qwen2_tied", true);
}

BOOST_AUTO_TEST_SUITE_END()
