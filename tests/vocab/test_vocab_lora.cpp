// Stage 3 of a grown vocabulary as LoRA (issue 16): an adapter with trainable_embeddings trains the LoRA
// tensors plus the embedding and head (all rows, or only the new ones) while every other base weight stays
// bit-identical; its embedding/head gradients equal the plain model's when the adapter is still the identity;
// save_adapter writes peft's modules_to_save / trainable_token_indices and load_adapter reads them back; an
// export for the `torch` test (tests/reference/vocab/check_vocab_stages.py: transformers and peft load the
// staged checkpoints and the adapters and reproduce tinylm's logits on text with the new tokens).
#include "../support/errors.hpp"

#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/presets.hpp>
#include <tinylm/model/resize_vocabulary.hpp>
#include <tinylm/model/vocab_growth.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/tokenizer/add_tokens.hpp>
#include <tinylm/tokenizer/hf_json.hpp>
#include <tinylm/tokenizer/tokenizer_config.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace tl;
using tl_test::error_of;

BOOST_AUTO_TEST_SUITE(vocab_lora)

namespace {

namespace fs = std::filesystem;

struct vocab_lora { // LoRA on all seven projections, embedding and head trainable
    static constexpr lora_config value{.rank = 4,
                                       .alpha = 8,
                                       .dropout = 0,
                                       .targets = lora_all,
                                       .quantized_base = false,
                                       .trainable_embeddings = true};
};
struct plain_lora { // the same adapter without trainable embeddings
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0, .targets = lora_all};
};

template <class Family>
using plain_t = decoder<Family>;
template <class Family>
using lora_t = decoder<Family, default_backend, vocab_lora>;

model_config small_config(index_t vocab, bool tied) {
    model_config c = presets::tiny::value;
    c.vocab_size = vocab;
    c.tied_embeddings = tied;
    return c;
}

const std::string text =
    "Отец мой Андрей Петрович Гринёв в молодости своей служил при графе Минихе и вышел в отставку премьер-майором "
    "в 17.. году. С тех пор жил он в своей Симбирской деревне, где и женился на девице Авдотье Васильевне Ю., "
    "дочери бедного тамошнего дворянина. Нас было девять человек детей. Все мои братья и сестры умерли во "
    "младенчестве. Матушка была ещё мною брюхата, как уже я был записан в Семёновский полк сержантом.";
const std::vector<std::string> words = {"Гринёв", "Симбирской", "младенчестве"};

tokenizer small_tokenizer() {
    return load_tokenizer_json(TINYLM_SOURCE_DIR "/tests/reference/tokenizer/trained_byte_level.json");
}

// The base of `to` (every entry of `from`, by name) copied from `from`.
template <class From, class To>
void copy_base(const From& from, To& to) {
    std::size_t copied = 0;
    for (const parameter_entry& t : to.parameter_entries())
        for (const parameter_entry& f : from.parameter_entries())
            if (f.name == t.name) {
                BOOST_TEST_REQUIRE(f.value.numel() == t.value.numel(), t.name);
                std::memcpy(t.value.data, f.value.data, std::size_t(f.value.numel()) * sizeof(float));
                ++copied;
            }
    BOOST_TEST_REQUIRE(copied == from.parameter_entries().size());
}

const parameter_entry& entry(const auto& m, const std::string& name) {
    for (const auto& e : m.parameter_entries())
        if (e.name == name) return e;
    BOOST_FAIL("no parameter " << name);
    return m.parameter_entries().front();
}

bool same_bytes(const float* a, const float* b, index_t n) {
    return std::memcmp(a, b, std::size_t(n) * sizeof(float)) == 0;
}

// A few AdamW steps (weight decay on) on windows of `ids`.
template <class M>
void train(M& model, const std::vector<token_t>& ids, int steps, double lr) {
    adamw opt(model, {.weight_decay = 0.1});
    const index_t B = 2, T = 24;
    std::vector<token_t> x(std::size_t(B * T)), y(x.size());
    for (int s = 0; s < steps; ++s) {
        for (index_t b = 0; b < B; ++b)
            for (index_t t = 0; t < T; ++t) {
                const std::size_t at = std::size_t((s * 7 + b * 13 + t) % index_t(ids.size() - 1));
                x[std::size_t(b * T + t)] = ids[at];
                y[std::size_t(b * T + t)] = ids[at + 1];
            }
        model.zero_grad();
        model.loss(cview<token_t>{x.data(), {B, T}}, cview<token_t>{y.data(), {B, T}});
        model.backward();
        clip_grad_norm(model.parameter_entries(), 1.0);
        opt.step(lr);
    }
}

template <class M>
std::vector<float> logits_of(M& m, const std::vector<token_t>& ids) {
    const index_t T = index_t(ids.size()), V = m.config().vocab_size;
    m.plan(1, T);
    std::vector<float> out(std::size_t(T * V));
    m.logits(cview<token_t>{ids.data(), {1, T}}, tensor_view<float>{out.data(), {1, T, V}});
    return out;
}

// A tiny model trained a little on the text, grown by the words (input rows: mean of the pieces).
template <class Family>
struct grown_fixture {
    tokenizer old_tok = small_tokenizer(), tok = old_tok;
    std::vector<token_t> new_ids;
    std::unique_ptr<plain_t<Family>> model;

    explicit grown_fixture(bool tied) {
        model_config c = small_config(index_t(old_tok.vocab_size()), tied);
        c.qkv_bias = Family::value.qkv_bias;
        plain_t<Family> original(c, 4);
        train(original, old_tok.encode(text), 20, 1e-2);
        new_ids = tl::add_tokens(tok, words);
        vocab_resize_options o;
        o.embedding_init = new_row_init::subtoken_mean;
        for (const auto& w : words)
            o.pieces.push_back(old_tok.encode(w));
        if (!tied) o.head_init = new_row_init::hf_mean;
        model = tl::resize_vocabulary(original, index_t(tok.vocab_size()), o);
    }
};

} // namespace

// A fresh adapter (B = 0) is the identity, so the embedding and head gradients under it are the plain model's.
BOOST_AUTO_TEST_CASE(embedding_gradients_under_a_fresh_adapter_equal_the_plain_models) {
    for (bool tied : {false, true}) {
        grown_fixture<families::llama> g(tied);
        lora_t<families::llama> lora(g.model->config(), 9);
        copy_base(*g.model, lora);
        const auto ids = g.tok.encode(text);
        const index_t T = 40;
        const cview<token_t> x{ids.data(), {1, T}}, y{ids.data() + 1, {1, T}};
        g.model->zero_grad();
        lora.zero_grad();
        const float l_plain = g.model->loss(x, y), l_lora = lora.loss(x, y);
        BOOST_TEST(l_plain == l_lora, boost::test_tools::tolerance(1e-6f));
        g.model->backward();
        lora.backward();
        std::size_t with_grad = 0;
        for (const parameter_entry& e : lora.parameter_entries()) {
            if (e.kind == param_kind::adapter) continue;
            const bool vocab = e.group == param_group::embedding || e.group == param_group::head;
            BOOST_TEST((e.grad.data != nullptr) == vocab, e.name); // the rest of the base has no gradient memory
            if (!vocab) continue;
            ++with_grad;
            const parameter_entry& p = entry(*g.model, e.name);
            double diff = 0, norm = 0;
            for (index_t i = 0; i < e.grad.numel(); ++i) {
                diff = std::max(diff, std::abs(double(e.grad[i]) - double(p.grad[i])));
                norm = std::max(norm, std::abs(double(p.grad[i])));
            }
            BOOST_TEST(norm > 0.0, e.name);
            BOOST_TEST(diff <= 1e-5 * norm, e.name << ": " << diff << " against " << norm);
        }
        BOOST_TEST(with_grad == (tied ? 1u : 2u));
    }
}

// The stages on an adapter model: what trains, and after training, what stayed bit-identical.
BOOST_AUTO_TEST_CASE(stage_three_trains_the_adapter_and_the_chosen_rows_only) {
    for (bool tied : {false, true})
        for (vocab_stage stage : {vocab_stage::all, vocab_stage::all_but_old_rows}) {
            grown_fixture<families::llama> g(tied);
            lora_t<families::llama> lora(g.model->config(), 9);
            copy_base(*g.model, lora);
            tl::set_vocab_stage(lora, stage, g.new_ids);
            std::size_t adapters = 0, vocab = 0;
            for (const auto& e : lora.trainable_entries()) {
                if (e.kind == param_kind::adapter) ++adapters;
                if (e.group == param_group::embedding || e.group == param_group::head) {
                    ++vocab;
                    BOOST_TEST((e.row_mask != nullptr) == (stage == vocab_stage::all_but_old_rows), e.name);
                }
            }
            BOOST_TEST(adapters == std::size_t(7 * lora.config().n_layers * 2));
            BOOST_TEST(vocab == (tied ? 1u : 2u));
            train(lora, g.tok.encode(text), 8, 1e-2);

            const index_t n_old = index_t(g.old_tok.vocab_size()), V = lora.config().vocab_size;
            for (const parameter_entry& p : g.model->parameter_entries()) {
                const parameter_entry& e = entry(lora, p.name);
                const bool is_vocab = p.group == param_group::embedding || p.group == param_group::head;
                const index_t d = p.value.shape.rank == 2 ? p.value.dim(1) : 1;
                if (!is_vocab) {
                    BOOST_TEST(same_bytes(e.value.data, p.value.data, p.value.numel()), p.name);
                    continue;
                }
                const bool old_same = same_bytes(e.value.data, p.value.data, n_old * d);
                BOOST_TEST(old_same == (stage == vocab_stage::all_but_old_rows), p.name << " old rows");
                BOOST_TEST(!same_bytes(e.value.data + n_old * d, p.value.data + n_old * d, (V - n_old) * d),
                           p.name << " new rows");
            }
            for (const auto& e : lora.parameter_entries())
                if (e.name.ends_with("lora_B.weight")) {
                    bool moved = false;
                    for (float v : e.value)
                        moved = moved || v != 0.0f;
                    BOOST_TEST(moved, e.name);
                }
        }
    // new_rows under the adapter: only the rows, the adapter frozen.
    grown_fixture<families::llama> g(false);
    lora_t<families::llama> lora(g.model->config(), 9);
    tl::set_vocab_stage(lora, vocab_stage::new_rows, g.new_ids);
    BOOST_TEST(lora.trainable_entries().size() == 2u);
    // An adapter without trainable embeddings cannot train them, and says so.
    decoder<families::llama, default_backend, plain_lora> plain(g.model->config(), 9);
    BOOST_TEST(error_of([&] {
                   tl::set_vocab_stage(plain, vocab_stage::new_rows, g.new_ids);
               }).find("no gradient memory") != std::string::npos);
}

// save_adapter -> load_adapter onto the untrained resized base gives the trained model's logits exactly, in both
// of peft's forms; the folder says which; an adapter without trainable embeddings refuses the folder.
BOOST_AUTO_TEST_CASE(adapter_with_embeddings_round_trip) {
    const fs::path root = fs::temp_directory_path() / "tinylm_test_vocab_lora";
    fs::remove_all(root);
    for (bool tied : {false, true})
        for (vocab_stage stage : {vocab_stage::all, vocab_stage::all_but_old_rows}) {
            grown_fixture<families::llama> g(tied);
            lora_t<families::llama> lora(g.model->config(), 9);
            copy_base(*g.model, lora);
            tl::set_vocab_stage(lora, stage, g.new_ids);
            const auto ids = g.tok.encode(text);
            train(lora, ids, 6, 1e-2);
            const fs::path dir = root / ((tied ? "tied_" : "untied_") + std::to_string(int(stage)));
            save_adapter(lora, dir);
            const auto config = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
            const safetensors_reader r(dir / "adapter_model.safetensors");
            if (stage == vocab_stage::all) {
                BOOST_TEST(config["modules_to_save"].size() == (tied ? 1u : 2u));
                BOOST_TEST(r.contains("base_model.model.model.embed_tokens.weight"));
                BOOST_TEST(r.contains("base_model.model.lm_head.weight")); // tied: the same values, as peft writes
                BOOST_TEST(config.contains("ensure_weight_tying") == tied);
            } else {
                const auto& t = config["trainable_token_indices"];
                BOOST_TEST((tied ? t.is_array() : t.is_object()));
                BOOST_TEST((tied ? t : t["embed_tokens"]).size() == words.size());
                BOOST_TEST(
                    r.info("base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta").shape.front() ==
                    std::int64_t(words.size()));
            }

            lora_t<families::llama> loaded(g.model->config(), 1);
            copy_base(*g.model, loaded);
            load_adapter(loaded, dir);
            const std::vector<token_t> probe(ids.begin(), ids.begin() + 48);
            BOOST_TEST(logits_of(loaded, probe) == logits_of(lora, probe), boost::test_tools::per_element());

            decoder<families::llama, default_backend, plain_lora> plain(g.model->config(), 1);
            const std::string err = error_of([&] { load_adapter(plain, dir); });
            BOOST_TEST((err.find("modules_to_save") != std::string::npos ||
                        err.find("trainable_token_indices") != std::string::npos),
                       err);
        }
    fs::remove_all(root);
}

namespace {

template <class M>
void save_stage(M& model, const tokenizer& tok, const fs::path& dir, const std::vector<token_t>& ids) {
    save_pretrained(model, dir);
    tokenizer_config_options c;
    c.model_max_length = model.config().max_seq_len;
    save_tokenizer_folder(tok, c, dir);
    std::vector<std::int64_t> ids64(ids.begin(), ids.end());
    const auto logits = logits_of(model, ids);
    safetensors_writer w;
    w.add<std::int64_t>("input_ids", cview<std::int64_t>{ids64.data(), {1, index_t(ids.size())}});
    w.add<float>("logits", cview<float>{logits.data(), {1, index_t(ids.size()), model.config().vocab_size}});
    w.save(dir / "expected.safetensors");
}

template <class Family>
void export_stages(const fs::path& root, bool tied) {
    grown_fixture<Family> g(tied);
    const auto train_ids = g.tok.encode(text);
    const std::string probe = "Гринёв жил в Симбирской деревне; в младенчестве";
    const auto ids = g.tok.encode(probe);
    std::ofstream(root / "probe.txt") << probe;
    plain_t<Family>& m = *g.model;
    save_stage(m, g.tok, root / "stage0", ids);
    tl::set_vocab_stage(m, vocab_stage::new_rows, g.new_ids);
    train(m, train_ids, 6, 1e-2);
    save_stage(m, g.tok, root / "stage1", ids);
    tl::set_vocab_stage(m, vocab_stage::embeddings_and_head, g.new_ids);
    train(m, train_ids, 6, 1e-2);
    save_stage(m, g.tok, root / "stage2", ids); // also the base of the LoRA stage 3
    for (vocab_stage stage : {vocab_stage::all, vocab_stage::all_but_old_rows}) {
        lora_t<Family> lora(m.config(), 9);
        copy_base(m, lora);
        tl::set_vocab_stage(lora, stage, g.new_ids);
        train(lora, train_ids, 6, 1e-2);
        const fs::path dir = root / (stage == vocab_stage::all ? "stage3_lora_modules" : "stage3_lora_tokens");
        save_adapter(lora, dir, (root / "stage2").string());
        std::vector<std::int64_t> ids64(ids.begin(), ids.end());
        const auto logits = logits_of(lora, ids);
        safetensors_writer w;
        w.add<std::int64_t>("input_ids", cview<std::int64_t>{ids64.data(), {1, index_t(ids.size())}});
        w.add<float>("logits", cview<float>{logits.data(), {1, index_t(ids.size()), m.config().vocab_size}});
        w.save(dir / "expected.safetensors");
    }
    tl::set_vocab_stage(m, vocab_stage::all, g.new_ids);
    train(m, train_ids, 6, 1e-2);
    save_stage(m, g.tok, root / "stage3_full", ids);
}

} // namespace

// For tests/reference/vocab/check_vocab_stages.py (ctest -L torch: hf_loads_vocab_stages): a Llama-like untied and
// a Qwen2-like tied model grown by three words, the checkpoints of stages 0-2 and full stage 3 with their
// tokenizer folders, and stage 3 as LoRA in both peft forms on the stage-2 checkpoint; each with tinylm's logits
// on a text holding the new words.
BOOST_AUTO_TEST_CASE(export_for_hf_vocab_stages, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_VOCAB_STAGES_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_VOCAB_STAGES_DIR");
    fs::create_directories(fs::path(dir) / "llama_untied");
    fs::create_directories(fs::path(dir) / "qwen2_tied");
    export_stages<families::llama>(fs::path(dir) / "llama_untied", false);
    export_stages<families::qwen2>(fs::path(dir) / "qwen2_tied", true);
}

// For the `torch` test, after check_vocab_stages.py: the adapters peft saved again (<stage>_peft_saved) load into
// tinylm on the stage-2 checkpoint and give the logits tinylm had.
BOOST_AUTO_TEST_CASE(load_vocab_adapters_saved_by_peft, *boost::unit_test::disabled()) {
    const char* dir = std::getenv("TINYLM_VOCAB_STAGES_DIR");
    BOOST_TEST_REQUIRE(dir != nullptr, "set TINYLM_VOCAB_STAGES_DIR");
    auto check_model = [&]<class Family>(const std::string& name) {
        const fs::path root = fs::path(dir) / name;
        for (const char* stage : {"stage3_lora_modules", "stage3_lora_tokens"}) {
            const fs::path saved = root / (std::string(stage) + "_peft_saved");
            BOOST_TEST_REQUIRE(fs::exists(saved), "no adapter saved by peft at " << saved);
            const safetensors_reader expected(root / stage / "expected.safetensors");
            shape s;
            const auto ids64 = expected.read_all<std::int64_t>("input_ids", &s);
            model_config c = small_config(index_t(expected.info("logits").shape.back()), Family::value.qkv_bias);
            c.qkv_bias = Family::value.qkv_bias; // as export_stages made them: Qwen2-like tied, Llama-like untied
            lora_t<Family> lora(c, 1);
            load_pretrained(lora, root / "stage2");
            load_adapter(lora, saved);
            const std::vector<token_t> ids(ids64.begin(), ids64.end());
            const auto want = expected.read_all<float>("logits");
            const auto got = logits_of(lora, ids);
            double diff = 0, norm = 0;
            for (std::size_t i = 0; i < want.size(); ++i) {
                diff = std::max(diff, std::abs(double(got[i]) - double(want[i])));
                norm = std::max(norm, std::abs(double(want[i])));
            }
            BOOST_TEST_MESSAGE(name << "/" << stage << " saved by peft, loaded by tinylm: logits relative error "
                                    << diff / norm);
            BOOST_TEST(diff <= 1e-6 * norm);
        }
    };
    check_model.operator()<families::llama>("llama_untied");
    check_model.operator()<families::qwen2>("qwen2_tied");
}

BOOST_AUTO_TEST_SUITE_END()
