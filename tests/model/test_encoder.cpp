// The encoder (model/encoder.hpp) against transformers' BertModel on the same weights, its gradients against
// PyTorch's and against central differences, and BERT folders read and written (io/hf_encoder.hpp). Also the CUDA
// backend's encoder step (cuda/encoder_step.hpp) run on the CPU executor against the encoder.
#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/encoder_step.hpp>
#include <tinylm/cuda/ranking_step.hpp>
#include <tinylm/embed/bpe_batches.hpp>
#include <tinylm/embed/cached_ranking.hpp>
#include <tinylm/embed/ranking_loss.hpp>
#include <tinylm/io/hf_encoder.hpp>
#include <tinylm/io/sentence_transformers.hpp>
#include <tinylm/model/encoder.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/ops/pooling.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/tokenizer/bpe_trainer.hpp>
#include <tinylm/train/checkpoint.hpp>

#include "../support/model_gradcheck.hpp"
#include "../support/models.hpp"
#include "../support/random.hpp"
#include "../support/step_optimizer.hpp"
#include "../support/tiny_bert.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <optional>

#include <unistd.h>

using namespace tl;
using tl::test::owned;
namespace fs = std::filesystem;

namespace {

const fs::path fixture_dir = fs::path(TINYLM_SOURCE_DIR) / "tests/reference/fixtures/bert_tiny";

struct fixture {
    safetensors_reader expected{fixture_dir / "expected.safetensors"};
    owned<token_t> ids{{1, 1}}, types{{1, 1}};
    owned<index_t> lengths{{1}};
    index_t B = 0, T = 0;
    fixture() {
        shape s;
        ids.data = expected.read_all<token_t>("ids", &s);
        ids.shape = s;
        types.data = expected.read_all<token_t>("type_ids");
        types.shape = s;
        B = s.dims[0], T = s.dims[1];
        const auto l = expected.read_all<std::int32_t>("lengths");
        lengths = owned<index_t>({B});
        for (index_t b = 0; b < B; ++b)
            lengths.data[std::size_t(b)] = l[std::size_t(b)];
    }
    std::vector<float> get(const std::string& name) const { return expected.read_all<float>(name); }
};

double max_abs_diff(const float* a, const std::vector<float>& b) {
    double m = 0;
    for (std::size_t i = 0; i < b.size(); ++i)
        m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

// loss = sum(normalize(pool(hidden)) * r): the sentence-transformers path, forward and backward.
template <class Model>
double pooled_loss(Model& m, cview<token_t> ids, cview<token_t> types, cview<index_t> lengths, const owned<float>& r,
                   bool backward, pooling_mode mode = pooling_mode::mean, owned<float>* embeddings = nullptr) {
    const index_t B = ids.dim(0), T = ids.dim(1), d = m.hidden_size();
    const cview<float> h = m.forward(ids, lengths, types, backward);
    owned<float> pooled({B, d}), normed({B, d}), norms({B});
    owned<index_t> arg({B, d});
    pool_forward<float>(mode, pooled, arg, h.reshaped({B, T, d}), lengths);
    l2_normalize_forward<float>(normed, norms, pooled);
    double loss = 0;
    for (std::size_t i = 0; i < normed.data.size(); ++i)
        loss += double(normed.data[i]) * double(r.data[i]);
    if (embeddings) *embeddings = normed;
    if (backward) {
        owned<float> dpooled({B, d}), dh({B, T, d});
        l2_normalize_backward<float>(dpooled, r, normed, norms);
        pool_backward<float>(mode, dh, dpooled, arg, lengths);
        m.backward_from_hidden(dh.cv().reshaped({B * T, d}));
    }
    return loss;
}

// A tokenizer's padded batch of n texts (rows of `time` tokens): each text's length drawn in 2..7 unless `lengths`
// gives them, then random ids (never 0, the padding id) and token types 0/1, drawn from `rng`.
embed::token_batch random_texts(const model_config& c, index_t n, index_t time, counter_rng& rng,
                                std::vector<index_t> lengths = {}) {
    embed::token_batch tokens;
    tokens.batch = n, tokens.time = time;
    if (lengths.empty())
        for (index_t r = 0; r < n; ++r)
            lengths.push_back(2 + index_t(rng.below(6)));
    tokens.lengths = lengths;
    for (index_t i = 0; i < n * time; ++i) {
        const bool real = i % time < lengths[std::size_t(i / time)];
        tokens.ids.push_back(real ? token_t(1 + rng.below(std::uint64_t(c.vocab_size - 1))) : 0);
        tokens.type_ids.push_back(real ? token_t(rng.below(2)) : 0);
    }
    return tokens;
}
embed::token_batch random_texts(const model_config& c, index_t n, index_t time, std::uint64_t seed,
                                std::vector<index_t> lengths = {}) {
    counter_rng rng(seed);
    return random_texts(c, n, time, rng, std::move(lengths));
}

// An encoder step's random inputs, drawn from `rng` in this order: token ids, token types and the gradient of the
// hidden states (any id, padding included: the step's own tests, not a tokenizer's batch).
void draw_step_inputs(const model_config& c, counter_rng& rng, owned<token_t>& ids, owned<token_t>& types,
                      owned<float>& dh) {
    for (auto& v : ids.data)
        v = token_t(rng.below(std::uint64_t(c.vocab_size)));
    for (auto& v : types.data)
        v = token_t(rng.below(std::uint64_t(c.type_vocab_size)));
    for (auto& v : dh.data)
        v = float(rng.normal());
}

} // namespace

BOOST_AUTO_TEST_SUITE(encoder_model)

// transformers' BertModel (float64 math) on a random tiny BERT: hidden states, the three poolings and every
// parameter's gradient of a pooled loss (tests/reference/encoder/make_bert_fixture.py made the fixture).
BOOST_AUTO_TEST_CASE(bert_matches_transformers_forward_and_gradients) {
    const fixture f;
    auto m = load_bert(fixture_dir);
    const index_t d = m->hidden_size();
    const auto r_values = f.get("r");
    owned<float> r({f.B, d});
    r.data = r_values;
    m->zero_grad();
    owned<float> mean({f.B, d});
    const double loss = pooled_loss(*m, f.ids, f.types, f.lengths, r, true, pooling_mode::mean, &mean);
    BOOST_TEST(std::abs(loss - double(f.get("loss")[0])) < 1e-5);
    BOOST_TEST(max_abs_diff(mean.data.data(), f.get("mean")) < 1e-5);

    // Hidden states of every real token.
    const cview<float> h = m->forward(f.ids, f.lengths, f.types, false);
    const auto hidden = f.get("hidden");
    double worst = 0;
    for (index_t b = 0; b < f.B; ++b)
        for (index_t t = 0; t < f.lengths.data[std::size_t(b)]; ++t)
            for (index_t j = 0; j < d; ++j) {
                const std::size_t i = std::size_t((b * f.T + t) * d + j);
                worst = std::max(worst, std::abs(double(h.data[i]) - double(hidden[i])));
            }
    BOOST_TEST_MESSAGE("hidden states: max |tinylm - transformers| " << worst);
    BOOST_TEST(worst < 1e-5);

    for (pooling_mode mode : {pooling_mode::cls, pooling_mode::max}) {
        owned<float> e({f.B, d});
        pooled_loss(*m, f.ids, f.types, f.lengths, r, false, mode, &e);
        BOOST_TEST(max_abs_diff(e.data.data(), f.get(pooling_name(mode))) < 1e-5, pooling_name(mode));
    }

    int compared = 0;
    for (const parameter_entry& e : m->parameter_entries()) {
        if (e.name.starts_with("pooler.")) continue; // frozen, no gradient here; zero in PyTorch
        const auto g = f.get("grad." + e.name);
        double diff = 0, scale = 0;
        for (std::size_t i = 0; i < g.size(); ++i) {
            diff = std::max(diff, std::abs(double(e.grad.data[i]) - double(g[i])));
            scale = std::max(scale, std::abs(double(g[i])));
        }
        // key biases: exactly zero in theory (softmax ignores a shift shared by all keys), f32 noise here
        BOOST_TEST(diff <= 1e-4 * scale + 1e-6, e.name << ": max diff " << diff << " (scale " << scale << ")");
        ++compared;
    }
    BOOST_TEST(compared == 5 + 2 * 16);
}

// sentence-transformers' MultipleNegativesRankingLoss (scale 20) through the whole tiny BERT: anchors are the
// fixture's rows, positives a second batch, both mean-pooled; the loss and every parameter's gradient against
// PyTorch's (the loss class itself, float64 math).
BOOST_AUTO_TEST_CASE(ranking_loss_through_bert_matches_pytorch) {
    const fixture f;
    auto m = load_bert(fixture_dir);
    const index_t B = f.B, T = f.T, d = m->hidden_size();
    // One forward over anchors and positives: rows 0..B-1 and B..2B-1.
    owned<token_t> ids({2 * B, T}), types({2 * B, T});
    owned<index_t> lengths({2 * B});
    const auto ids2 = f.expected.read_all<token_t>("ids2"), types2 = f.expected.read_all<token_t>("type_ids2");
    const auto lengths2 = f.expected.read_all<std::int32_t>("lengths2");
    std::copy(f.ids.data.begin(), f.ids.data.end(), ids.data.begin());
    std::copy(ids2.begin(), ids2.end(), ids.data.begin() + B * T);
    std::copy(f.types.data.begin(), f.types.data.end(), types.data.begin());
    std::copy(types2.begin(), types2.end(), types.data.begin() + B * T);
    for (index_t b = 0; b < B; ++b)
        lengths.data[std::size_t(b)] = f.lengths.data[std::size_t(b)],
        lengths.data[std::size_t(B + b)] = lengths2[std::size_t(b)];

    m->zero_grad();
    const cview<float> h = m->forward(ids, lengths, types, true);
    owned<float> pooled({2 * B, d}), dpooled({2 * B, d}), dh({2 * B, T, d});
    owned<index_t> arg({2 * B, d});
    pool_forward<float>(pooling_mode::mean, pooled, arg, h.reshaped({2 * B, T, d}), lengths);
    arena a(1 << 20);
    const auto ws = embed::ranking_loss_workspace<float>::allocate(a, B, 0, d);
    const cview<float> anchors{pooled.data.data(), {B, d}}, positives{pooled.data.data() + B * d, {B, d}};
    const double loss =
        embed::ranking_loss_forward<default_backend, float>(ws, anchors, positives, {nullptr, {0, d}}, {.scale = 20});
    embed::ranking_loss_backward<default_backend, float>(
        {dpooled.data.data(), {B, d}}, {dpooled.data.data() + B * d, {B, d}}, {nullptr, {0, d}}, ws, {.scale = 20});
    pool_backward<float>(pooling_mode::mean, dh, dpooled, arg, lengths);
    m->backward_from_hidden(dh.cv().reshaped({2 * B * T, d}));

    const double expected_loss = f.get("mnrl_loss")[0];
    BOOST_TEST_MESSAGE("ranking loss: tinylm " << loss << ", sentence-transformers " << expected_loss);
    BOOST_TEST(std::abs(loss - expected_loss) <= 1e-5 * std::abs(expected_loss));
    double worst = 0;
    for (const parameter_entry& e : m->parameter_entries()) {
        if (e.name.starts_with("pooler.")) continue;
        const auto g = f.get("mnrl_grad." + e.name);
        double diff = 0, scale = 0;
        for (std::size_t i = 0; i < g.size(); ++i) {
            diff = std::max(diff, std::abs(double(e.grad.data[i]) - double(g[i])));
            scale = std::max(scale, std::abs(double(g[i])));
        }
        BOOST_TEST(diff <= 1e-4 * scale + 1e-6, e.name << ": max diff " << diff << " (scale " << scale << ")");
        if (scale > 1e-3) worst = std::max(worst, diff / scale);
    }
    BOOST_TEST_MESSAGE("ranking loss gradients: worst relative difference " << worst);
}

// Packed texts (one row, document starts, no padding) give the padded rows' embeddings and gradients.
BOOST_AUTO_TEST_CASE(packed_texts_equal_padded_rows) {
    const fixture f;
    auto m = load_bert(fixture_dir);
    const index_t d = m->hidden_size();
    const auto tokenize = [&](std::span<const std::string>, index_t) {
        return embed::token_batch{f.ids.data, f.types.data, f.lengths.data, f.B, f.T, 0};
    };
    const std::vector<std::string> texts(std::size_t(f.B)); // the tokenizer above ignores them
    owned<float> r({f.B, d});
    r.data = f.get("r");
    std::vector<std::vector<float>> embeddings, grads;
    for (const bool pack : {false, true}) {
        embed::sentence_encoder se(*m, tokenize, {.max_length = 16, .pack = pack});
        owned<float> out({f.B, d});
        m->zero_grad();
        se.embed(texts, out, true);
        se.backward_embeddings(r);
        embeddings.push_back(out.data);
        grads.emplace_back();
        for (const parameter_entry& e : m->parameter_entries())
            grads.back().insert(grads.back().end(), e.grad.data, e.grad.data + e.grad.numel());
    }
    BOOST_TEST(max_abs_diff(embeddings[1].data(), embeddings[0]) < 1e-6);
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < grads[0].size(); ++i) {
        diff = std::max(diff, std::abs(double(grads[1][i]) - double(grads[0][i])));
        scale = std::max(scale, std::abs(double(grads[0][i])));
    }
    BOOST_TEST_MESSAGE("packed against padded: embeddings " << max_abs_diff(embeddings[1].data(), embeddings[0])
                                                            << ", gradients " << diff << " (scale " << scale << ")");
    BOOST_TEST(diff <= 1e-5 * scale);
    // Mean against the fixture's (transformers') as well.
    BOOST_TEST(max_abs_diff(embeddings[1].data(), f.get("mean")) < 1e-5);
}

// f16 and bf16 files load as their f32 values rounded: the same model within the formats' precision.
BOOST_AUTO_TEST_CASE(half_precision_folders_load) {
    auto ref = load_bert(fixture_dir);
    for (const char* file : {"model_f16.safetensors", "model_bf16.safetensors"}) {
        const fs::path dir = fs::temp_directory_path() / ("tinylm_bert_" + std::string(file));
        fs::create_directories(dir);
        fs::copy_file(fixture_dir / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
        fs::copy_file(fixture_dir / file, dir / "model.safetensors", fs::copy_options::overwrite_existing);
        auto m = load_bert(dir);
        const double ulp = std::string(file).find("bf16") != std::string::npos ? 1.0 / 256 : 1.0 / 2048;
        double worst = 0;
        for (std::size_t k = 0; k < m->parameter_entries().size(); ++k) {
            const auto& a = m->parameter_entries()[k].value;
            const auto& b = ref->parameter_entries()[k].value;
            for (index_t i = 0; i < a.numel(); ++i)
                worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / std::max(1e-3, std::abs(double(b[i]))));
        }
        BOOST_TEST(worst <= ulp, file << ": worst relative rounding " << worst);
        fs::remove_all(dir);
    }
}

// save_encoder writes what load_bert reads back bit for bit (and what transformers reads: the torch-labelled test).
BOOST_AUTO_TEST_CASE(saved_folders_round_trip) {
    const fixture f;
    auto m = load_bert(fixture_dir);
    const fs::path dir = fs::temp_directory_path() / "tinylm_bert_saved";
    fs::remove_all(dir);
    save_encoder(*m, dir);
    auto back = load_bert(dir);
    const cview<float> a = m->forward(f.ids, f.lengths, f.types, false);
    const std::vector<float> first(a.data, a.data + a.numel());
    const cview<float> b = back->forward(f.ids, f.lengths, f.types, false);
    BOOST_TEST(std::memcmp(first.data(), b.data, first.size() * sizeof(float)) == 0);
    BOOST_TEST(m->parameter_count() == back->parameter_count());
    fs::remove_all(dir);
}

// Padding: changing a padded token changes no real position; a real token changes every position of its row.
BOOST_AUTO_TEST_CASE(padding_is_invisible_and_attention_sees_the_whole_row) {
    fixture f;
    auto m = load_bert(fixture_dir);
    const index_t d = m->hidden_size();
    auto run = [&] {
        const cview<float> h = m->forward(f.ids, f.lengths, f.types, false);
        return std::vector<float>(h.data, h.data + h.numel());
    };
    const auto before = run();
    f.ids.data[std::size_t(1 * f.T + 7)] = 5; // row 1 has 5 real tokens
    const auto after = run();
    for (index_t t = 0; t < 5; ++t)
        BOOST_TEST(std::memcmp(&before[std::size_t((f.T + t) * d)], &after[std::size_t((f.T + t) * d)],
                               std::size_t(d) * sizeof(float)) == 0);
    f.ids.data[std::size_t(1 * f.T + 4)] = (f.ids.data[std::size_t(1 * f.T + 4)] + 1) % 61; // its last real token
    const auto changed = run();
    BOOST_TEST(
        std::memcmp(&before[std::size_t(f.T * d)], &changed[std::size_t(f.T * d)], std::size_t(d) * sizeof(float)) != 0,
        "position 0 sees a later token");
}

// The whole encoder against central differences of its own f32 pooled loss, in BERT's layout and in a pre-norm
// rotary layout without token types (the ops are checked in f64 one by one in tests/ops; this checks the wiring:
// embeddings, norms, padding, pooling).
template <class Config>
double encoder_finite_difference_error(const char* label) {
    encoder<Config, reference_cpu> m(11);
    const index_t B = 2, T = 6, d = Config::value.d_model;
    owned<token_t> ids({B, T}), types({B, T});
    counter_rng rng(5);
    for (auto& v : ids.data)
        v = token_t(rng.below(std::uint64_t(Config::value.vocab_size)));
    if (Config::value.type_vocab_size > 0)
        for (auto& v : types.data)
            v = token_t(rng.below(std::uint64_t(Config::value.type_vocab_size)));
    owned<index_t> lengths({B});
    lengths.data = {6, 4};
    owned<float> r({B, d});
    for (auto& v : r.data)
        v = float(rng.normal());
    const cview<token_t> type_ids = Config::value.type_vocab_size > 0 ? types.cv() : cview<token_t>{};
    m.zero_grad();
    pooled_loss(m, ids, type_ids, lengths, r, true);
    return tl::test::worst_entry_fd_error(
        m.parameter_entries(), [&] { return pooled_loss(m, ids, type_ids, lengths, r, false); }, label);
}

constexpr model_config small_bert = tl_test::tiny_bert(29, 8);
struct bert_small {
    static constexpr model_config value = small_bert;
};
struct pre_norm_rotary_encoder {
    static constexpr model_config value = [] {
        model_config c = small_bert;
        c.norm_position = norm_placement::pre;
        c.positions = position_kind::rope;
        c.type_vocab_size = 0;
        c.norm = norm_kind::rmsnorm;
        c.mlp = mlp_kind::swiglu;
        c.n_kv_heads = 2;
        c.qkv_bias = c.dense_bias = false;
        c.norm_eps = 1e-6;
        return c;
    }();
};

BOOST_AUTO_TEST_CASE(encoders_match_finite_differences) {
    BOOST_TEST(encoder_finite_difference_error<bert_small>("BERT layout") < 0.05);
    BOOST_TEST(encoder_finite_difference_error<pre_norm_rotary_encoder>("pre-norm, rotary, GQA") < 0.05);
}

// A from-scratch encoder: presets::encoder_small on a BPE tokenizer trained here, trained contrastively (a sentence
// and its lowercased, unpunctuated copy are a pair; the rest of the batch are negatives): the loss falls tenfold,
// and the saved BertModel folder reloads with the same embeddings.
BOOST_AUTO_TEST_CASE(an_encoder_trains_from_scratch_on_a_bpe_tokenizer) {
    const std::vector<std::string> sentences = {
        "The river flows past the old mill.",     "Казань стоит на Волге.",
        "She reads a book every evening.",        "Мальчик пишет письмо бабушке.",
        "Rain is expected in the north tonight.", "Кошка спит на тёплой печке.",
        "A new bridge opened in the city.",       "Студенты готовятся к экзамену.",
        "The market sells fresh bread at dawn.",  "Зимой в лесу тихо и бело.",
        "Engineers tested the engine twice.",     "Поезд прибыл точно по расписанию.",
        "Children played football after school.", "Учёный открыл новую звезду.",
        "The museum shows ancient coins.",        "Весной сады покрываются цветами."};
    std::vector<std::string> positives;
    for (const std::string& t : sentences) {
        std::string p;
        for (char c : t)
            if (c != '.') p.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c);
        positives.push_back(p);
    }
    std::string corpus;
    for (int r = 0; r < 4; ++r)
        for (std::size_t i = 0; i < sentences.size(); ++i)
            corpus += sentences[i] + "\n" + positives[i] + "\n";
    bpe_trainer_options options;
    options.vocab_size = 600;
    options.special_tokens = {"[PAD]", "[CLS]", "[SEP]", "[UNK]"};
    options.n_threads = 1;
    bpe_trainer trainer(options);
    trainer.feed(corpus);
    const tokenizer tok = trainer.train();

    model_config c = presets::encoder_small::value;
    c.vocab_size = int(tok.vocab_size());
    encoder<presets::encoder_small> m(c, 1);
    embed::sentence_encoder se(m, embed::bpe_sentence_tokenizer(tok, embed::find_bpe_specials(tok)),
                               {.max_length = 64});
    adamw opt(m, {.lr = 1e-3, .weight_decay = 0.0});
    embed::ranking_step<default_backend> step;
    std::vector<double> losses;
    for (int k = 0; k < 30; ++k) {
        const std::size_t at = std::size_t(k % 2) * 8;
        const std::span<const std::string> a(sentences.data() + at, 8), p(positives.data() + at, 8);
        m.zero_grad();
        losses.push_back(step.run(se, {a, p}, {.mini_batch_size = 8}));
        opt.step();
    }
    BOOST_TEST_MESSAGE("from scratch: ranking loss " << losses.front() << " -> " << losses.back());
    BOOST_TEST(losses.front() > 0.5); // at initialisation the pairs already share tokens: below ln(8), not near 0
    BOOST_TEST(losses.back() < 0.1 * losses.front());

    const fs::path dir = fs::temp_directory_path() / "tinylm_encoder_small";
    fs::remove_all(dir);
    save_encoder(m, dir);
    auto back = load_bert(dir);
    embed::sentence_encoder se2(*back, embed::bpe_sentence_tokenizer(tok, embed::find_bpe_specials(tok)),
                                {.max_length = 64});
    const auto e1 = se.encode(sentences), e2 = se2.encode(sentences);
    BOOST_TEST(std::memcmp(e1.data(), e2.data(), e1.size() * sizeof(float)) == 0);
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(bad_folders_are_named) {
    const fs::path dir = fs::temp_directory_path() / "tinylm_not_an_encoder";
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})";
    auto message = [&] {
        try {
            load_bert(dir);
        } catch (const tl::error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    BOOST_TEST(message().find("is not an encoder tinylm reads") != std::string::npos, message());
    fs::copy_file(fixture_dir / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
    BOOST_TEST(message().find("has no model.safetensors") != std::string::npos, message());
    {
        safetensors_writer w; // a file without the second layer
        const safetensors_reader r(fixture_dir / "model.safetensors");
        for (const auto& [name, info] : r.tensors())
            if (name.find("layer.1.") == std::string::npos) {
                shape s;
                auto v = r.read_all<float>(name, &s);
                w.add<float>(name, cview<float>{v.data(), s});
            }
        w.save(dir / "model.safetensors");
    }
    BOOST_TEST(message().find("lacks:\n  encoder.layer.1.") != std::string::npos, message());
    std::ofstream(dir / "config.json") << R"({"model_type": "bert", "hidden_act": "gelu_new", "vocab_size": 3})";
    BOOST_TEST(message().find("hidden_act \"gelu_new\" is not supported") != std::string::npos, message());
    fs::remove_all(dir);
}

// The real all-MiniLM-L6-v2 (scripts/fetch-models.sh): tinylm's embeddings of 24 varied texts (scripts, accents,
// emoji, control characters, a text past the 256-token limit) against SentenceTransformer.encode's, stored by
// tests/reference/encoder/minilm_reference.py fixture. The torch-labelled sentence_transformers_load_tinylm
// recomputes them live on 200 texts and checks the folders and adapters tinylm writes.
BOOST_AUTO_TEST_CASE(minilm_matches_sentence_transformers, tl_test::needs_model("all-MiniLM-L6-v2")) {
    const fs::path dir = tl_test::model_path("all-MiniLM-L6-v2");
    const sentence_folder folder = read_sentence_config(dir);
    BOOST_TEST(folder.config.max_length == 256);
    BOOST_TEST(folder.config.normalize);
    BOOST_TEST(int(folder.config.pooling) == int(pooling_mode::mean));
    const wordpiece_tokenizer tok = load_wordpiece_json((dir / "tokenizer.json").string());
    auto model = load_bert(folder.transformer_dir);
    embed::sentence_encoder se(*model, sentence_tokenizer(tok), folder.config);

    const fs::path fixtures = fs::path(TINYLM_SOURCE_DIR) / "tests/reference/fixtures";
    std::vector<std::string> texts;
    std::ifstream in(fixtures / "minilm_embeddings.txt");
    for (std::string line; std::getline(in, line);) { // "\\n" in the file stands for a newline
        std::string text;
        for (std::size_t i = 0; i < line.size(); ++i)
            if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == 'n')
                text += '\n', ++i;
            else
                text += line[i];
        texts.push_back(text);
    }
    const auto expected = safetensors_reader(fixtures / "minilm_embeddings.safetensors").read_all<float>("embeddings");
    BOOST_REQUIRE(expected.size() == texts.size() * 384);
    const std::vector<float> mine = se.encode(texts, 8);
    const double diff = max_abs_diff(mine.data(), expected);
    BOOST_TEST_MESSAGE("all-MiniLM-L6-v2, " << texts.size() << " texts: max |tinylm - sentence-transformers| " << diff);
    BOOST_TEST(diff <= 1e-5);
    BOOST_TEST(se.truncated_texts() == 1); // the 300-word text
}

// The GPU's encoder step (cuda/encoder_step.hpp), in the order of its kernels and over the buffers of its arena plan,
// executed by the CPU drivers of the same arithmetic (gpu::cpu_ops), against tl::encoder on the same weights (the
// tiny BERT, 2 x 8 tokens, two token types): the hidden states, then with a random d hidden every parameter's
// gradient, with and without right padding, with attention by rows and through products (in one chunk of scores
// and a sequence at a time); with bf16 products within bf16's rounding; then clipping and two AdamW steps bit for
// bit as tl::adamw.
BOOST_AUTO_TEST_CASE(cuda_encoder_step_on_the_cpu_matches_the_encoder) {
    using config = tl_test::tiny_bert_config;
    const model_config& c = config::value;
    encoder<config> model(42);
    const index_t B = 2, T = 8, d = c.d_model;
    owned<token_t> ids({B, T}), types({B, T});
    owned<index_t> lengths({B});
    lengths.data = {8, 5};
    owned<float> dh({B * T, d});
    counter_rng rng(17);
    draw_step_inputs(c, rng, ids, types, dh);
    // The largest difference between a and the reference b (n), and b's largest magnitude.
    auto difference = [](const float* a, const float* b, index_t n) {
        double err = 0, scale = 0;
        for (index_t i = 0; i < n; ++i) {
            err = std::max(err, std::abs(double(a[i]) - double(b[i])));
            scale = std::max(scale, std::abs(double(b[i])));
        }
        return std::pair{err, scale};
    };

    // tl::encoder's hidden states and trainable gradients (all but the frozen pooler), without and with padding,
    // computed once; the model keeps the padded run's gradients.
    struct reference {
        std::vector<float> hidden;
        std::vector<std::vector<float>> grads; // in trainable_entries' order
    };
    auto reference_of = [&](bool padded) {
        reference r;
        model.zero_grad();
        const cview<float> h = model.forward(ids, padded ? lengths.cv() : cview<index_t>{}, types, true);
        r.hidden.assign(h.data, h.data + h.numel());
        model.backward_from_hidden(dh.cv());
        for (const parameter_entry& e : model.trainable_entries())
            r.grads.emplace_back(e.grad.data, e.grad.data + e.grad.numel());
        return r;
    };
    const reference references[2] = {reference_of(false), reference_of(true)}; // by `padded`
    // The gradient error of each trainable tensor against the reference r, relative to the tensor's scale; a key
    // bias adds q . b to every score of a query's row, which the softmax ignores: its gradient is 0 but for
    // rounding on both sides, measured against the query bias's scale of the same layer.
    auto gradient_errors = [&](auto& step, const reference& r) {
        const auto& entries = model.trainable_entries();
        auto scale_of = [&](const std::string& name) {
            for (std::size_t i = 0; i < entries.size(); ++i)
                if (entries[i].name == name)
                    return difference(r.grads[i].data(), r.grads[i].data(), index_t(r.grads[i].size())).second;
            return 0.0;
        };
        std::vector<std::pair<std::string, double>> out;
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const std::string& name = entries[i].name;
            const std::size_t key = name.find("self.key.bias");
            const double scale = scale_of(key == std::string::npos ? name : name.substr(0, key) + "self.query.bias");
            const double err = difference(step.gradient(name), r.grads[i].data(), index_t(r.grads[i].size())).first;
            out.emplace_back(name, scale > 0 ? err / scale : INFINITY);
        }
        return out;
    };

    struct setup {
        gpu::attention_path path;
        long long sequences;
        const char* name;
    };
    struct on_cpu {
        gpu::encoder_plan_options o;
        gpu::arena_plan plan;
        std::vector<std::byte> memory;
        gpu::cpu_ops ex;
        gpu::encoder_step<gpu::cpu_ops> step; // last: it keeps references to the members above
        on_cpu(const model_config& c, const gpu::encoder_plan_options& options)
            : o(options), plan(gpu::plan_encoder_step(c, o)), memory(plan.bytes()),
              step(c, o, plan, memory.data(), ex) {}
    };
    std::optional<on_cpu> run;
    for (const setup& a :
         {setup{gpu::attention_path::products, 1, "products, one sequence per chunk"},
          setup{gpu::attention_path::products, 0, "products"}, setup{gpu::attention_path::rows, 0, "rows"}}) {
        gpu::encoder_plan_options o;
        o.batch = B, o.time = T, o.bf16_weights = false, o.attention = a.path, o.attention_sequences = a.sequences;
        run.emplace(c, o);
        auto& step = run->step;
        // The layout is the encoder's parameter_entries: the same names in the same order, the same sizes.
        BOOST_TEST_REQUIRE(step.layout().size() == model.parameter_entries().size());
        for (std::size_t i = 0; i < step.layout().size(); ++i) {
            const parameter_entry& e = model.parameter_entries()[i];
            BOOST_TEST_REQUIRE(step.layout()[i].name == e.name);
            BOOST_TEST_REQUIRE(step.layout()[i].size() == std::size_t(e.value.numel()), e.name);
            std::copy_n(e.value.data, e.value.numel(), step.parameter(e.name));
        }
        for (const bool padded : {true, false}) {
            const reference& r = references[padded];
            step.zero_gradients();
            const float* step_h =
                step.forward(ids.data.data(), padded ? lengths.data.data() : nullptr, types.data.data());
            const auto [herr, hscale] = difference(step_h, r.hidden.data(), B * T * d);
            BOOST_TEST(herr <= 1e-5 * hscale, a.name << ", padded " << padded << ": hidden states " << herr
                                                     << " against a scale of " << hscale);
            step.backward(dh.data.data());
            double worst = 0;
            for (const auto& [name, relative] : gradient_errors(step, r)) {
                BOOST_TEST(relative <= 1e-4,
                           name << ": " << relative << " of its scale, " << a.name << ", padded " << padded);
                worst = std::max(worst, relative);
            }
            BOOST_TEST_MESSAGE(a.name << ", padded " << padded << ": hidden states within " << herr / hscale
                                      << " of their scale, gradients within " << worst << " of theirs");
        }
    }
    {
        // bf16 products (the GPU's default) on the CPU executor: the operands rounded to bf16 before each product,
        // everything else f32; within bf16's rounding of the f32 encoder (padded, attention through products).
        gpu::encoder_plan_options o;
        o.batch = B, o.time = T, o.bf16_weights = true;
        on_cpu bf16(c, o);
        for (const parameter_entry& e : model.parameter_entries())
            std::copy_n(e.value.data, e.value.numel(), bf16.step.parameter(e.name));
        bf16.step.zero_gradients();
        const float* step_h = bf16.step.forward(ids.data.data(), lengths.data.data(), types.data.data());
        const auto [herr, hscale] = difference(step_h, references[1].hidden.data(), B * T * d);
        bf16.step.backward(dh.data.data());
        double worst = 0;
        for (const auto& [name, relative] : gradient_errors(bf16.step, references[1]))
            worst = std::max(worst, relative);
        BOOST_TEST_MESSAGE("bf16 products: hidden states within "
                           << herr / hscale << " of their scale, gradients within " << worst << " of theirs");
        BOOST_TEST(herr <= 3e-2 * hscale); // measured 1.3e-2 and 2.3e-2: a few bf16 roundings (2^-8) deep
        BOOST_TEST(worst <= 6e-2);
    }
    // The optimizer over the flat blocks from the same gradients, as tl's (no decay on LayerNorms and biases, the
    // pooler untouched).
    tl_test::expect_step_optimizer_matches(model, run->step);
}

// The GPU's contrastive step (cuda/ranking_step.hpp: the encoder step, pooling, the normalisations, the ranking
// loss's product, rows and gradient) on the CPU executor against tinylm's CPU path on the same tiny BERT and the
// same tokens: sentence_encoder + embed::ranking_step (the plain step) + tl::clip_grad_norm + tl::adamw. Texts of
// 2 to 7 tokens padded to 7 by the tokenizer and to 8 by the plan; 2 pairs in a plan of 3 (its unused rows are not
// computed); mean, cls and max pooling, normalised or not, symmetric or not, with and without hard negatives,
// the CPU's texts packed or padded, the device's texts each in a row of its own or packed end to end. The loss within
// 1e-5 relative, every gradient within 1e-4 of its tensor's scale, the parameters after one clipped AdamW step within
// 1e-2 of that step's size.
BOOST_AUTO_TEST_CASE(cuda_ranking_step_on_the_cpu_matches_the_sentence_encoder) {
    using config = tl_test::tiny_bert_config;
    const model_config& c = config::value;
    const index_t pairs = 2, time = 7;
    struct setup {
        pooling_mode pooling;
        bool normalize, symmetric;
        index_t negatives;
        bool pack;
    };
    for (const setup& u :
         {setup{pooling_mode::mean, true, false, 1, false}, setup{pooling_mode::mean, true, true, 1, true},
          setup{pooling_mode::cls, false, true, 0, false}, setup{pooling_mode::max, true, false, 1, true}}) {
        const std::string name = std::string(pooling_name(u.pooling)) + (u.normalize ? ", normalised" : "") +
                                 (u.symmetric ? ", symmetric" : "") + ", " + std::to_string(u.negatives) +
                                 " negatives" + (u.pack ? ", packed on the CPU" : "");
        const index_t n = pairs * (2 + u.negatives);
        const embed::token_batch tokens = random_texts(c, n, time, 23);
        const auto tokenize = [&](std::span<const std::string> texts, index_t) {
            BOOST_TEST_REQUIRE(index_t(texts.size()) == n); // the plain step embeds the whole batch at once
            return tokens;
        };
        const embed::sentence_config sc{
            .pooling = u.pooling, .normalize = u.normalize, .max_length = 8, .pack = u.pack};
        const embed::ranking_loss_options loss_options{.scale = 20, .symmetric = u.symmetric};
        const std::vector<std::string> texts(static_cast<std::size_t>(n)); // the tokenizer ignores them

        encoder<config> model(42);
        embed::sentence_encoder se(model, tokenize, sc);
        embed::ranking_step<default_backend> cpu_step;
        const std::span<const std::string> all(texts);
        model.zero_grad();
        const double loss =
            cpu_step.run(se,
                         {all.subspan(0, std::size_t(pairs)), all.subspan(std::size_t(pairs), std::size_t(pairs)),
                          all.subspan(std::size_t(2 * pairs))},
                         {.loss = loss_options, .mini_batch_size = 0});

        // The device step with every text in a row of its own and with the texts packed end to end.
        std::unique_ptr<gpu::ranking_step<gpu::cpu_ops>> steps[2];
        for (const bool packed : {false, true}) {
            auto& step = steps[packed ? 1 : 0];
            step = std::make_unique<gpu::ranking_step<gpu::cpu_ops>>(
                c, sc, gpu::ranking_step_shape{.pairs = 3, .negatives = u.negatives, .packed = packed});
            const std::string label = name + (packed ? ", packed on the device" : "");
            step->load_from(model);
            step->zero_gradients();
            const double step_loss = step->forward_backward(tokens, pairs, loss_options);
            BOOST_TEST(std::abs(step_loss - loss) <= 1e-5 * std::abs(loss),
                       label << ": loss " << step_loss << " against " << loss);
            // The embeddings as the sentence encoder gives them (before any optimizer step).
            owned<float> embedded({n, c.d_model});
            se.embed(texts, embedded, false);
            BOOST_TEST(max_abs_diff(step->embeddings(), embedded.data) <= 1e-5, label << ": embeddings");
            // Gradients against each tensor's scale (a key bias's, whose true gradient is 0, against its query
            // bias's).
            double worst = 0;
            for (const parameter_entry& e : model.trainable_entries()) {
                const std::size_t key = e.name.find("self.key.bias");
                const std::string scale_name =
                    key == std::string::npos ? e.name : e.name.substr(0, key) + "self.query.bias";
                double scale = 0, err = 0;
                for (const parameter_entry& s : model.trainable_entries())
                    if (s.name == scale_name)
                        for (index_t i = 0; i < s.grad.numel(); ++i)
                            scale = std::max(scale, std::abs(double(s.grad[i])));
                const float* g = step->gradient(e.name);
                for (index_t i = 0; i < e.grad.numel(); ++i)
                    err = std::max(err, std::abs(double(g[i]) - double(e.grad[i])));
                BOOST_TEST(err <= 1e-4 * scale,
                           label << ", " << e.name << ": " << err << " against a scale of " << scale);
                worst = std::max(worst, scale > 0 ? err / scale : INFINITY);
            }
            BOOST_TEST_MESSAGE(label << ": loss " << step_loss << " (CPU " << loss << "), gradients within " << worst
                                     << " of their scale");
        }
        // One optimizer step as 09_retrieval's: clipping at 1, AdamW (betas 0.9, 0.999, eps 1e-6, decay 0.01).
        const adamw_options options{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01};
        const double norm = clip_grad_norm(model.trainable_entries(), 1.0);
        adamw opt(model, options);
        opt.step(1e-3);
        for (const auto& step : steps) {
            const double step_norm = step->clip_gradients(1.0);
            BOOST_TEST(std::abs(step_norm - norm) <= 1e-5 * norm,
                       name << ": gradient norm " << step_norm << " against " << norm);
            step->adamw_step(1e-3, options);
            // A key bias's gradient is rounding noise on both sides (its true value is 0), which AdamW's first step
            // turns into a move of up to lr either way: those only within 2 lr; every other parameter within 1% of
            // lr.
            double moved = 0, moved_key_bias = 0;
            for (const parameter_entry& e : model.parameter_entries()) {
                const bool key_bias = e.name.find("self.key.bias") != std::string::npos;
                for (index_t i = 0; i < e.value.numel(); ++i) {
                    const double diff = std::abs(double(step->parameter(e.name)[i]) - double(e.value[i]));
                    (key_bias ? moved_key_bias : moved) = std::max(key_bias ? moved_key_bias : moved, diff);
                }
            }
            BOOST_TEST(moved <= 1e-2 * 1e-3, name << ": parameters after the step " << moved << " apart");
            BOOST_TEST(moved_key_bias <= 2e-3, name << ": key biases after the step " << moved_key_bias << " apart");
            BOOST_TEST_MESSAGE(name << (step->shape().packed ? ", packed" : "") << ": parameters after one step within "
                                    << moved << " (key biases " << moved_key_bias << ")");
        }
    }
}

// Packed texts in the device's contrastive step (ranking_step_shape::packed: the texts end to end in rows of
// max_length, doc_start keeping attention inside each text, positions restarting, pooling over each text's segment)
// against the same step with every text in a row of its own, both on the CPU executor: texts of mixed lengths, two
// exactly max_length, token types, mean, cls and max pooling, symmetric or not, the packed step's attention through
// products and through the row kernels (the padded one's through products). The loss within 1e-6 relative,
// the embeddings within 1e-6 and every gradient within 1e-5 of its tensor's scale. Then pack_texts' first-fit
// layout, and a planned token budget (ranking_step_shape::rows) refusing a batch that needs more rows.
BOOST_AUTO_TEST_CASE(cuda_ranking_step_packed_texts_match_padded_rows) {
    using config = tl_test::tiny_bert_config;
    const model_config& c = config::value;
    const index_t pairs = 3, negatives = 1, n = pairs * (2 + negatives), T = 8;
    const std::vector<index_t> lengths{8, 3, 5, 2, 8, 4, 5, 2, 2}; // first fit: 5 rows of 8 for 9 texts
    const embed::token_batch tokens = random_texts(c, n, T, 31, lengths);
    const gpu::text_packing layout = gpu::pack_texts(lengths.data(), n, T, true);
    BOOST_TEST(layout.rows == 5);
    BOOST_TEST(layout.row == (std::vector<std::int64_t>{0, 1, 1, 2, 3, 2, 4, 2, 4}), boost::test_tools::per_element());
    BOOST_TEST(layout.offset == (std::vector<std::int64_t>{0, 0, 3, 0, 0, 2, 0, 6, 5}),
               boost::test_tools::per_element());
    BOOST_TEST(gpu::pack_texts(lengths.data(), n, T, false).rows == n);

    encoder<config> model(42);
    for (const pooling_mode pooling : {pooling_mode::mean, pooling_mode::cls, pooling_mode::max}) {
        const bool symmetric = pooling != pooling_mode::cls;
        const embed::sentence_config sc{.pooling = pooling, .normalize = true, .max_length = T};
        const embed::ranking_loss_options loss{.scale = 20, .symmetric = symmetric};
        const std::string name = std::string(pooling_name(pooling)) + (symmetric ? ", symmetric" : "");
        gpu::ranking_step<gpu::cpu_ops> padded(c, sc, {.pairs = pairs, .negatives = negatives});
        padded.load_from(model);
        padded.zero_gradients();
        const double padded_loss = padded.forward_backward(tokens, pairs, loss);
        const std::vector<float> padded_embeddings(padded.embeddings(), padded.embeddings() + n * c.d_model);
        // Packed, attention through products (09's) and through the row kernels.
        for (const gpu::attention_path path : {gpu::attention_path::products, gpu::attention_path::rows}) {
            const std::string label =
                name + (path == gpu::attention_path::products ? ", attention products" : ", attention rows");
            gpu::ranking_step<gpu::cpu_ops> packed(
                c, sc, {.pairs = pairs, .negatives = negatives, .attention = path, .packed = true});
            packed.load_from(model);
            packed.zero_gradients();
            const double packed_loss = packed.forward_backward(tokens, pairs, loss);
            BOOST_TEST(std::abs(packed_loss - padded_loss) <= 1e-6 * std::abs(padded_loss),
                       label << ": packed loss " << packed_loss << " against " << padded_loss);
            BOOST_TEST(max_abs_diff(packed.embeddings(), padded_embeddings) <= 1e-6, label << ": embeddings");
            double worst = 0;
            for (const parameter_entry& e : model.trainable_entries()) {
                const float *g = packed.gradient(e.name), *h = padded.gradient(e.name);
                double scale = 0, err = 0;
                for (index_t i = 0; i < e.value.numel(); ++i) {
                    scale = std::max(scale, std::abs(double(h[i])));
                    err = std::max(err, std::abs(double(g[i]) - double(h[i])));
                }
                if (e.name.find("self.key.bias") != std::string::npos) continue; // its true gradient is 0: noise
                BOOST_TEST(err <= 1e-5 * scale,
                           label << ", " << e.name << ": " << err << " against a scale of " << scale);
                worst = std::max(worst, scale > 0 ? err / scale : 0.0);
            }
            BOOST_TEST_MESSAGE(label << ": packed loss " << packed_loss << " (padded rows " << padded_loss
                                     << "), gradients within " << worst << " of their scale, " << layout.rows
                                     << " rows instead of " << n);
        }
    }
    // A planned budget of 4 rows refuses this batch (5 rows), with the counts; 5 rows take it.
    const embed::sentence_config sc{.max_length = T};
    gpu::ranking_step<gpu::cpu_ops> small(c, sc, {.pairs = pairs, .negatives = negatives, .packed = true, .rows = 4});
    small.load_from(model);
    BOOST_CHECK_EXCEPTION(small.forward_backward(tokens, pairs, {.scale = 20}), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("pack into 5 rows of 8 tokens, the plan holds 4") != std::string::npos;
    });
    gpu::ranking_step<gpu::cpu_ops> enough(c, sc, {.pairs = pairs, .negatives = negatives, .packed = true, .rows = 5});
    enough.load_from(model);
    BOOST_TEST(std::isfinite(enough.forward_backward(tokens, pairs, {.scale = 20})));
    BOOST_TEST(enough.arena_bytes() <
               gpu::ranking_step<gpu::cpu_ops>(c, sc, {.pairs = pairs, .negatives = negatives}).arena_bytes());
}

// A device step's checkpoint (gpu::ranking_adamw + train/checkpoint.hpp, as 09_retrieval --device writes it) on the
// CPU executor: 2 clipped AdamW steps, a checkpoint, a fresh model and step (other weights) that load it and take 2
// more, bit for bit as 4 uninterrupted steps (parameters, both moments, the step count). The files are a CPU run's:
// tl::adamw reads the device's moments (same names and shapes, bit for bit), and a checkpoint tl::adamw writes
// resumes on the step with the same moments. Tiny BERT, 2 pairs and 1 hard negative each of 2 to 7 tokens.
BOOST_AUTO_TEST_CASE(cuda_ranking_step_checkpoints_resume_bit_for_bit) {
    using config = tl_test::tiny_bert_config;
    const model_config& c = config::value;
    const index_t pairs = 2, negatives = 1, time = 7, n = pairs * (2 + negatives);
    const embed::sentence_config sc{.pooling = pooling_mode::mean, .normalize = true, .max_length = 8};
    const embed::ranking_loss_options loss{.scale = 20, .symmetric = true};
    const adamw_options options{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01};
    auto batch_of = [&](long long k) { // step k's tokens
        return random_texts(c, n, time, 100 + std::uint64_t(k));
    };
    using step_t = gpu::ranking_step<gpu::cpu_ops>;
    const gpu::ranking_step_shape shape{.pairs = pairs, .negatives = negatives};
    auto train = [&](step_t& step, gpu::ranking_adamw<gpu::cpu_ops>& opt, long long from, long long to) {
        for (long long k = from; k < to; ++k) {
            step.zero_gradients();
            const double value = step.forward_backward(batch_of(k), pairs, loss);
            BOOST_TEST_REQUIRE(std::isfinite(value));
            step.clip_gradients(1.0);
            opt.step(1e-3 * double(k + 1));
        }
    };
    // The step's parameters and moments, in its layout's order.
    auto state_of = [](step_t& step) {
        std::vector<float> out;
        for (const gpu::parameter_slice& s : step.encoder().layout())
            for (const float* p :
                 {step.parameter(s.name), step.encoder().first_moment(s.name), step.encoder().second_moment(s.name)})
                out.insert(out.end(), p, p + s.size());
        return out;
    };

    encoder<config> straight_model(42);
    step_t straight(c, sc, shape);
    gpu::ranking_adamw<gpu::cpu_ops> straight_opt(straight, options);
    straight.load_from(straight_model);
    train(straight, straight_opt, 0, 4);

    const fs::path dir = fs::temp_directory_path() / ("tinylm_ranking_step_checkpoint_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    {
        encoder<config> model(42);
        step_t step(c, sc, shape);
        gpu::ranking_adamw<gpu::cpu_ops> opt(step, options);
        step.load_from(model);
        train(step, opt, 0, 2);
        step.store_into(model);
        save_training_checkpoint(model, opt, {2, 0, {{"note", "device"}}}, dir);
    }
    BOOST_TEST_REQUIRE(fs::exists(dir / "trainer_state.json"));
    BOOST_TEST(!fs::exists(dir.string() + ".tmp")); // staged, then swapped in
    encoder<config> model(7);                       // other weights: the checkpoint's must replace them
    step_t resumed(c, sc, shape);
    gpu::ranking_adamw<gpu::cpu_ops> opt(resumed, options);
    resumed.load_from(model);
    const training_state st = load_training_checkpoint(model, opt, dir);
    resumed.load_from(model);
    BOOST_TEST(st.step == 2);
    BOOST_TEST(opt.steps() == 2);
    BOOST_TEST(st.history.at("note").get<std::string>() == "device");

    // The CPU's optimizer reads the device's checkpoint: every moment tl::adamw keeps (the pooler has none), the
    // same bits as the resumed step's.
    encoder<config> cpu_model(7);
    adamw cpu_opt(cpu_model, options);
    load_training_checkpoint(cpu_model, cpu_opt, dir);
    BOOST_TEST(cpu_opt.steps() == 2);
    std::size_t moments = 0;
    cpu_opt.visit_state([&](const std::string& name, cview<float> t) {
        const bool first = name.starts_with("exp_avg.");
        const std::string param = name.substr(name.find('.') + 1);
        const float* device = first ? resumed.encoder().first_moment(param) : resumed.encoder().second_moment(param);
        BOOST_TEST(std::memcmp(device, t.data, std::size_t(t.numel()) * sizeof(float)) == 0, name);
        ++moments;
    });
    BOOST_TEST(moments == 2 * model.trainable_entries().size());

    // ... and writes one the step resumes from with the same moments.
    const fs::path cpu_dir = dir.string() + "_cpu";
    save_training_checkpoint(cpu_model, cpu_opt, st, cpu_dir);
    {
        encoder<config> m(9);
        step_t step(c, sc, shape);
        gpu::ranking_adamw<gpu::cpu_ops> o(step, options);
        load_training_checkpoint(m, o, cpu_dir);
        step.load_from(m);
        BOOST_TEST(o.steps() == 2);
        BOOST_TEST((state_of(step) == state_of(resumed)));
    }

    train(resumed, opt, 2, 4);
    BOOST_TEST(opt.steps() == 4);
    const std::vector<float> a = state_of(resumed), b = state_of(straight);
    BOOST_TEST_REQUIRE(a.size() == b.size());
    BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
               "a resumed run differs from an uninterrupted one");
    fs::remove_all(dir);
    fs::remove_all(cpu_dir);
}

// 09_retrieval's adapter at rank 4: every projection of an encoder, no dropout.
struct tiny_encoder_lora {
    static constexpr lora_config value{
        .rank = 4, .alpha = 8, .dropout = 0, .targets = lora_attention | lora_up | lora_down};
};

// 09_retrieval's QLoRA: that adapter over an NF4 base. Its training checkpoint holds the NF4 bytes
// (nf4_base.safetensors, train/checkpoint_nf4.hpp): an encoder of other weights resumes with them byte for byte,
// where quantising model.safetensors' dequantised base again would change scale bytes.
struct tiny_encoder_qlora {
    static constexpr lora_config value{
        .rank = 4, .alpha = 8, .dropout = 0, .targets = lora_attention | lora_up | lora_down, .quantized_base = true};
};
BOOST_AUTO_TEST_CASE(qlora_encoder_checkpoint_keeps_the_nf4_bytes) {
    using model_t = encoder<tl_test::tiny_bert_config, default_backend, tiny_encoder_qlora>;
    const fs::path dir = fs::temp_directory_path() / ("tinylm_qlora_encoder_checkpoint_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    model_t model(42);
    adamw opt(model);
    save_training_checkpoint(model, opt, {.step = 1}, dir);
    BOOST_TEST_REQUIRE(fs::exists(dir / nf4_base_file));
    model_t resumed(7); // other weights: the checkpoint's must replace them
    adamw resumed_opt(resumed);
    BOOST_TEST(load_training_checkpoint(resumed, resumed_opt, dir).step == 1);
    BOOST_TEST_REQUIRE(resumed.quantized_entries().size() == model.quantized_entries().size());
    BOOST_TEST(!model.quantized_entries().empty());
    for (const auto& q : model.quantized_entries()) {
        const nf4_tensor &x = model.quantized_weight(q.layer, q.target),
                         &y = resumed.quantized_weight(q.layer, q.target);
        BOOST_TEST((x.codes == y.codes && x.qabsmax == y.qabsmax && x.absmax2 == y.absmax2 &&
                    std::memcmp(&x.offset, &y.offset, sizeof(float)) == 0),
                   q.name);
    }
    fs::remove_all(dir);
}

// 09's adapter with LoRA dropout 0.1 (09 has none: its gradient cache embeds each text twice), and over an NF4 base.
struct tiny_encoder_lora_dropout {
    static constexpr lora_config value{
        .rank = 4, .alpha = 8, .dropout = 0.1f, .targets = lora_attention | lora_up | lora_down};
};
struct tiny_encoder_qlora_dropout {
    static constexpr lora_config value{.rank = 4,
                                       .alpha = 8,
                                       .dropout = 0.1f,
                                       .targets = lora_attention | lora_up | lora_down,
                                       .quantized_base = true};
};

// LoRA on the device's contrastive step (encoder_plan_options::lora through ranking_step_shape::lora) on the CPU
// executor against tl::encoder with the same adapter (rank 4, alpha 8, every projection: 09_retrieval's targets) and
// the CPU's sentence_encoder + embed::ranking_step + clip_grad_norm + tl::adamw, from the same weights (B drawn, not
// peft's zeros, so that every adapter gradient is non-zero): the loss within 1e-5 relative, every adapter gradient
// within 1e-4 of its tensor's scale, the frozen base without gradients (only the adapter trains); then two clipped
// AdamW steps (gpu::ranking_adamw, 09's options): the adapters within 2e-2 of the learning rate of the CPU's, both
// moments of every tensor tl::adamw keeps (by its names) within 1e-4 of their scale, the base bit for bit unchanged.
// With LoRA dropout, each step draws new masks on both sides (the training-forward counts checked equal): the
// device's tokens take the masks of their places in the CPU's layout, sentence_encoder's texts end to end (cpu_pack)
// or its (texts, 7) rows, whether the device's rows are one text each (padded to 8) or packed (device_packed).
template <class Adapter>
void check_lora_ranking_step_on_the_cpu(const char* what, bool cpu_pack = true, bool device_packed = false) {
    using config = tl_test::tiny_bert_config;
    const model_config& c = config::value;
    const index_t pairs = 2, negatives = 1, time = 7, n = pairs * (2 + negatives);
    counter_rng rng(31); // the texts, then the adapters' B
    const embed::token_batch tokens = random_texts(c, n, time, rng);
    const auto tokenize = [&](std::span<const std::string>, index_t) { return tokens; };
    const embed::sentence_config sc{
        .pooling = pooling_mode::mean, .normalize = true, .max_length = 8, .pack = cpu_pack};
    const embed::ranking_loss_options loss_options{.scale = 20, .symmetric = true};
    const adamw_options options{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01};
    const std::vector<std::string> texts(static_cast<std::size_t>(n));
    const std::span<const std::string> all(texts);

    encoder<config, default_backend, Adapter> model(42);
    for (const parameter_entry& e : model.parameter_entries())
        if (e.name.find("lora_B") != std::string::npos)
            for (index_t i = 0; i < e.value.numel(); ++i)
                e.value[i] = float(0.3 * rng.normal());
    std::vector<std::vector<float>> base; // the frozen base's values, in parameter_entries' order
    for (const parameter_entry& e : model.parameter_entries())
        base.emplace_back(e.value.data, e.value.data + e.value.numel());
    embed::sentence_encoder se(model, tokenize, sc);
    embed::ranking_step<default_backend> cpu_step;
    adamw cpu_opt(model, options);

    // QLoRA: the host's NF4 projection weights, byte for byte (codes, scales, offset), before any step.
    std::vector<std::vector<std::uint8_t>> nf4_bytes;
    for (const auto& q : model.quantized_entries()) {
        const nf4_tensor& w = model.quantized_weight(q.layer, q.target);
        std::vector<std::uint8_t> b(w.codes.begin(), w.codes.end());
        b.insert(b.end(), w.qabsmax.begin(), w.qabsmax.end());
        const auto* scales = reinterpret_cast<const std::uint8_t*>(w.absmax2.data());
        b.insert(b.end(), scales, scales + w.absmax2.size() * sizeof(float));
        nf4_bytes.push_back(std::move(b));
    }
    BOOST_TEST(nf4_bytes.size() == (Adapter::value.quantized_base ? 6u * std::size_t(c.n_layers) : 0u));
    gpu::ranking_step<gpu::cpu_ops> step(
        c, sc, {.pairs = 3, .negatives = negatives, .lora = Adapter::value, .packed = device_packed});
    gpu::ranking_adamw<gpu::cpu_ops> opt(step, options);
    step.load_from(model);
    BOOST_TEST(step.encoder().trainable_layout().size() == model.trainable_entries().size());
    for (const parameter_entry& e : model.trainable_entries())
        BOOST_TEST_REQUIRE(e.name.find(".lora_") != std::string::npos, e.name << " trains on the CPU");
    for (const gpu::parameter_slice& s : step.encoder().trainable_layout())
        BOOST_TEST_REQUIRE(s.name.find(".lora_") != std::string::npos, s.name << " trains on the device");
    BOOST_CHECK_THROW(step.gradient("encoder.layer.0.attention.self.query.weight"), tl::error); // frozen

    // Each tensor's largest difference between the device's values (by name) and the CPU's, and the CPU's scale.
    auto difference = [](const float* device, cview<float> cpu) {
        double err = 0, scale = 0;
        for (index_t i = 0; i < cpu.numel(); ++i) {
            err = std::max(err, std::abs(double(device[i]) - double(cpu[i])));
            scale = std::max(scale, std::abs(double(cpu[i])));
        }
        return std::pair{err, scale};
    };
    for (int k = 0; k < 2; ++k) {
        model.zero_grad();
        const double loss =
            cpu_step.run(se,
                         {all.subspan(0, std::size_t(pairs)), all.subspan(std::size_t(pairs), std::size_t(pairs)),
                          all.subspan(std::size_t(2 * pairs))},
                         {.loss = loss_options, .mini_batch_size = 0});
        step.zero_gradients();
        const double step_loss = step.forward_backward(tokens, pairs, loss_options);
        BOOST_TEST(std::abs(step_loss - loss) <= 1e-5 * std::abs(loss),
                   "step " << k << ": loss " << step_loss << " against " << loss);
        double worst = 0;
        for (const parameter_entry& e : model.trainable_entries()) {
            const auto [err, scale] = difference(step.gradient(e.name), e.grad);
            BOOST_TEST(scale > 0.0, e.name);
            BOOST_TEST(err <= 1e-4 * scale, "step " << k << ", " << e.name << ": " << err << " against " << scale);
            worst = std::max(worst, err / scale);
        }
        const double norm = clip_grad_norm(model.trainable_entries(), 1.0), step_norm = step.clip_gradients(1.0);
        BOOST_TEST(std::abs(step_norm - norm) <= 1e-5 * norm, "step " << k << ": gradient norm " << step_norm);
        cpu_opt.step(1e-3);
        opt.step(1e-3);
        BOOST_TEST(step.encoder().dropout_calls() == model.dropout_calls());
        BOOST_TEST(model.dropout_calls() == (Adapter::value.dropout > 0 ? std::uint64_t(k + 1) : 0u));
        BOOST_TEST_MESSAGE(what << ", step " << k << ": loss " << step_loss << " (CPU " << loss
                                << "), adapter gradients within " << worst << " of their scale");
    }
    BOOST_TEST(opt.steps() == 2);
    double moved = 0;
    std::size_t base_changed = 0, i = 0;
    for (const parameter_entry& e : model.parameter_entries()) {
        const float* device = step.parameter(e.name);
        if (e.name.find(".lora_") != std::string::npos)
            moved = std::max(moved, difference(device, e.value).first);
        else
            base_changed += std::memcmp(device, base[i].data(), base[i].size() * sizeof(float)) != 0 ||
                            std::memcmp(e.value.data, base[i].data(), base[i].size() * sizeof(float)) != 0;
        ++i;
    }
    BOOST_TEST(moved <= 2e-2 * 1e-3, "adapters after two steps " << moved << " apart");
    // The NF4 base on both sides after two steps: the host's bytes unchanged, and the device's (what its products
    // dequantise) the same bytes and offset.
    std::size_t nf4_changed = 0, j = 0;
    for (const auto& q : model.quantized_entries()) {
        const nf4_tensor& w = model.quantized_weight(q.layer, q.target);
        const gpu::nf4_weight d = step.encoder().quantized_weight(q.name);
        const std::vector<std::uint8_t>& b = nf4_bytes[j++];
        const std::size_t codes = w.codes.size(), blocks = w.qabsmax.size();
        nf4_changed += std::memcmp(w.codes.data(), b.data(), codes) != 0 ||
                       std::memcmp(w.qabsmax.data(), b.data() + codes, blocks) != 0 ||
                       std::memcmp(w.absmax2.data(), b.data() + codes + blocks, b.size() - codes - blocks) != 0 ||
                       std::memcmp(d.codes, b.data(), codes) != 0 ||
                       std::memcmp(d.qabsmax, b.data() + codes, blocks) != 0 ||
                       std::memcmp(d.absmax2, b.data() + codes + blocks, b.size() - codes - blocks) != 0 ||
                       d.offset != w.offset || d.n != w.numel();
    }
    BOOST_TEST(nf4_changed == 0u, nf4_changed << " NF4 weights differ from the host's before the steps");
    BOOST_TEST(base_changed == 0u, base_changed << " base tensors changed");
    std::size_t moments = 0;
    cpu_opt.visit_state([&](const std::string& name, cview<float> t) {
        const std::string param = name.substr(name.find('.') + 1);
        const float* device =
            name.starts_with("exp_avg.") ? step.encoder().first_moment(param) : step.encoder().second_moment(param);
        const auto [err, scale] = difference(device, t);
        BOOST_TEST(err <= 1e-4 * scale, name << ": " << err << " against " << scale);
        ++moments;
    });
    BOOST_TEST(moments == 2 * model.trainable_entries().size());
    BOOST_TEST_MESSAGE(what << ": adapters after two AdamW steps within " << moved << " (lr 1e-3)");
}

BOOST_AUTO_TEST_CASE(cuda_ranking_step_with_lora_on_the_cpu_matches_the_sentence_encoder) {
    check_lora_ranking_step_on_the_cpu<tiny_encoder_lora>("LoRA");
}

// QLoRA on the device's contrastive step (tiny_encoder_qlora, above: 09_retrieval's adapter over an NF4 base, double
// quantisation; encoder_step's NF4 projections, dequantised before each product) on the CPU executor against
// tl::encoder with the same QLoRA adapter, by the LoRA case's checks: the loss, every adapter gradient within 1e-4 of
// its scale, two AdamW steps, the f32 base unchanged; and the NF4 base's bytes (codes, scales, offsets) the host's,
// untouched on both sides.
BOOST_AUTO_TEST_CASE(cuda_ranking_step_with_qlora_on_the_cpu_matches_the_sentence_encoder) {
    check_lora_ranking_step_on_the_cpu<tiny_encoder_qlora>("QLoRA");
}

// LoRA dropout 0.1 on the device's contrastive step (encoder_step's masks, keyed by the CPU's token layout) against
// tl::encoder's, by the LoRA case's checks over two steps with new masks each: the CPU's texts end to end and the
// device's one per row; the CPU's padded rows and the device's packed ones; and QLoRA with dropout.
BOOST_AUTO_TEST_CASE(cuda_ranking_step_with_lora_dropout_on_the_cpu_matches_the_sentence_encoder) {
    check_lora_ranking_step_on_the_cpu<tiny_encoder_lora_dropout>("LoRA dropout, CPU packed, device padded");
    check_lora_ranking_step_on_the_cpu<tiny_encoder_lora_dropout>("LoRA dropout, CPU padded, device packed", false,
                                                                  true);
    check_lora_ranking_step_on_the_cpu<tiny_encoder_qlora_dropout>("QLoRA dropout, CPU packed, device packed", true,
                                                                   true);
}

// encoder_step alone with LoRA dropout 0.1 (tiny_encoder_lora_dropout) on the CPU executor against tl::encoder given
// the same (2, 8) rows (one padded): no dropout_positions, so each token keys its mask by its own place, as the CPU
// encoder's. Three training forwards and backwards from a random d hidden (new masks each, the counts 1, 2, 3 on both):
// hidden states within 1e-5 and every adapter gradient within 1e-4 of its scale; then the third forward again at its
// count with dropout_positions the identity: the same bits.
BOOST_AUTO_TEST_CASE(cuda_encoder_step_with_lora_dropout_matches_the_encoder) {
    using config = tl_test::tiny_bert_config;
    const model_config& c = config::value;
    encoder<config, default_backend, tiny_encoder_lora_dropout> model(42);
    const index_t B = 2, T = 8, d = c.d_model;
    owned<token_t> ids({B, T}), types({B, T});
    owned<index_t> lengths({B});
    lengths.data = {8, 5};
    owned<float> dh({B * T, d});
    counter_rng rng(19);
    draw_step_inputs(c, rng, ids, types, dh);
    for (const parameter_entry& e : model.parameter_entries()) // B drawn: every adapter gradient non-zero
        if (e.name.find("lora_B") != std::string::npos)
            for (index_t i = 0; i < e.value.numel(); ++i)
                e.value[i] = float(0.3 * rng.normal());
    gpu::encoder_plan_options o;
    o.batch = B, o.time = T, o.bf16_weights = false, o.lora = tiny_encoder_lora_dropout::value;
    const gpu::arena_plan plan = gpu::plan_encoder_step(c, o);
    std::vector<std::byte> memory(plan.bytes());
    gpu::cpu_ops ex;
    gpu::encoder_step<gpu::cpu_ops> step(c, o, plan, memory.data(), ex);
    for (const parameter_entry& e : model.parameter_entries())
        std::copy_n(e.value.data, e.value.numel(), step.parameter(e.name));
    step.parameters_changed();
    BOOST_TEST(step.dropout_seed() != model.dropout_seed()); // tl::encoder(0)'s key against seed 42's
    step.set_dropout_seed(model.dropout_seed());
    auto difference = [](const float* a, const float* b, index_t n) {
        double err = 0, scale = 0;
        for (index_t i = 0; i < n; ++i) {
            err = std::max(err, std::abs(double(a[i]) - double(b[i])));
            scale = std::max(scale, std::abs(double(b[i])));
        }
        return std::pair{err, scale};
    };
    for (int k = 0; k < 3; ++k) {
        model.zero_grad();
        const cview<float> h = model.forward(ids, lengths.cv(), types, true);
        const std::vector<float> hidden(h.data, h.data + h.numel());
        model.backward_from_hidden(dh.cv());
        step.zero_gradients();
        const auto [herr, hscale] =
            difference(step.forward(ids.data.data(), lengths.data.data(), types.data.data()), hidden.data(), B * T * d);
        step.backward(dh.data.data());
        BOOST_TEST(step.dropout_calls() == model.dropout_calls());
        BOOST_TEST(model.dropout_calls() == std::uint64_t(k + 1));
        BOOST_TEST(herr <= 1e-5 * hscale, "forward " << k << ": hidden states " << herr << " against " << hscale);
        double worst = 0;
        for (const parameter_entry& e : model.trainable_entries()) {
            const auto [err, scale] = difference(step.gradient(e.name), e.grad.data, e.grad.numel());
            BOOST_TEST(scale > 0.0, e.name);
            BOOST_TEST(err <= 1e-4 * scale, "forward " << k << ", " << e.name << ": " << err << " against " << scale);
            worst = std::max(worst, err / scale);
        }
        BOOST_TEST_MESSAGE("encoder_step with LoRA dropout 0.1, forward "
                           << k << ": hidden states within " << herr / hscale << " of their scale, adapter gradients "
                           << worst << " of theirs");
    }
    const std::vector<float> last(step.hidden(), step.hidden() + B * T * d);
    std::vector<std::int64_t> identity(static_cast<std::size_t>(B * T));
    std::iota(identity.begin(), identity.end(), 0);
    step.set_dropout_calls(2);
    step.forward(ids.data.data(), lengths.data.data(), types.data.data(), nullptr, 0, identity.data());
    BOOST_TEST(std::memcmp(step.hidden(), last.data(), last.size() * sizeof(float)) == 0);
    BOOST_TEST(step.dropout_calls() == 3u);
}

// A device run with LoRA dropout stopped after two steps and resumed from its checkpoint (train/checkpoint.hpp: the
// masks' key and training-forward count in trainer_state.json, through store_into and load_from) by a step loaded
// from an encoder of other weights and another dropout key: steps 3 and 4 draw the uninterrupted run's masks, so the
// adapter and AdamW's moments end bit for bit as that run's, and the count is 4 on both.
BOOST_AUTO_TEST_CASE(cuda_ranking_step_with_lora_dropout_resumes_bit_for_bit) {
    using config = tl_test::tiny_bert_config;
    using model_t = encoder<config, default_backend, tiny_encoder_lora_dropout>;
    using step_t = gpu::ranking_step<gpu::cpu_ops>;
    const model_config& c = config::value;
    const index_t pairs = 2, negatives = 1, time = 7, n = pairs * (2 + negatives);
    const embed::sentence_config sc{.pooling = pooling_mode::mean, .normalize = true, .max_length = 8};
    const embed::ranking_loss_options loss{.scale = 20, .symmetric = true};
    const adamw_options options{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01};
    const gpu::ranking_step_shape shape{
        .pairs = pairs, .negatives = negatives, .lora = tiny_encoder_lora_dropout::value};
    auto train = [&](step_t& step, gpu::ranking_adamw<gpu::cpu_ops>& opt, long long from, long long to) {
        for (long long k = from; k < to; ++k) {
            step.zero_gradients();
            BOOST_TEST_REQUIRE(
                std::isfinite(step.forward_backward(random_texts(c, n, time, 100 + std::uint64_t(k)), pairs, loss)));
            step.clip_gradients(1.0);
            opt.step(1e-3);
        }
    };
    auto state_of = [](step_t& step) { // the adapter and its moments, in the adapter's layout order
        std::vector<float> out;
        for (const gpu::parameter_slice& s : step.encoder().adapter_layout())
            for (const float* p :
                 {step.parameter(s.name), step.encoder().first_moment(s.name), step.encoder().second_moment(s.name)})
                out.insert(out.end(), p, p + s.size());
        return out;
    };
    auto drawn = [&](model_t& model) { // B drawn (peft's zeros would leave A's gradient 0), the same for every model
        counter_rng rng(31);
        for (const parameter_entry& e : model.parameter_entries())
            if (e.name.find("lora_B") != std::string::npos)
                for (index_t i = 0; i < e.value.numel(); ++i)
                    e.value[i] = float(0.3 * rng.normal());
    };

    model_t straight_model(42);
    drawn(straight_model);
    step_t straight(c, sc, shape);
    gpu::ranking_adamw<gpu::cpu_ops> straight_opt(straight, options);
    straight.load_from(straight_model);
    train(straight, straight_opt, 0, 4);
    BOOST_TEST(straight.encoder().dropout_calls() == 4u);

    const fs::path dir = fs::temp_directory_path() / ("tinylm_lora_dropout_ranking_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    std::uint64_t key = 0;
    {
        model_t model(42);
        drawn(model);
        key = model.dropout_seed();
        step_t step(c, sc, shape);
        gpu::ranking_adamw<gpu::cpu_ops> opt(step, options);
        step.load_from(model);
        train(step, opt, 0, 2);
        step.store_into(model);
        BOOST_TEST(model.dropout_calls() == 2u);
        save_training_checkpoint(model, opt, {.step = 2}, dir);
    }
    model_t model(7); // other weights and another dropout key: the checkpoint's must replace them
    BOOST_TEST_REQUIRE(model.dropout_seed() != key);
    step_t resumed(c, sc, shape);
    gpu::ranking_adamw<gpu::cpu_ops> opt(resumed, options);
    resumed.load_from(model);
    BOOST_TEST(load_training_checkpoint(model, opt, dir).step == 2);
    resumed.load_from(model);
    BOOST_TEST(resumed.encoder().dropout_seed() == key);
    BOOST_TEST(resumed.encoder().dropout_calls() == 2u);
    train(resumed, opt, 2, 4);
    BOOST_TEST(resumed.encoder().dropout_calls() == 4u);
    const std::vector<float> a = state_of(resumed), b = state_of(straight);
    BOOST_TEST_REQUIRE(a.size() == b.size());
    BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
               "a resumed run differs from an uninterrupted one");
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
