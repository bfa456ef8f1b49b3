// GGUF export (include/tinylm/io/gguf.hpp): models of the three decoder families with their tokenizers, written
// in f32, f16, q8_0 and q4_0, read back by tinylm's own GGUF reader (io/gguf_file.hpp):
//  - the quantisers: every half round-trips, f32 -> f16 rounds to nearest even, Q8_0 / Q4_0 blocks of known
//    values, reconstruction within one quantisation step;
//  - Qwen2 (the transformers-written fixture tests/reference/hf_folder/fixtures/qwen2_f16: biases, tied
//    embeddings, byte-level BPE with the Qwen2 split, chat template), Llama (byte fallback, metaspace), Mixtral
//    (experts stacked) and Llama with the GPT-2 split: architecture metadata, tokenizer tables, tensor names,
//    dimensions, types, and every value against the model's weights (f32 exactly, f16 as rounded, blocks within
//    one step); the q/k permutation makes llama.cpp's adjacent-pair RoPE equal Hugging Face's rotate-half RoPE;
//  - errors: unknown type, unwritable path, unsupported architectures and tokenizers, no tokenizer, damaged files.
// The `gguf` Python package checks the same files independently (ctest -L torch: gguf_python_reads_tinylm) and
// llama.cpp runs them (ctest -L slow: gguf_llama_cpp_matches_tinylm).
#include "../model/fixture_configs.hpp"
#include "../support/data.hpp"
#include "../support/errors.hpp"

#include <tinylm/eval/generate.hpp>
#include <tinylm/io/gguf.hpp>
#include <tinylm/io/gguf_folder.hpp>
#include <tinylm/io/hf_any.hpp>
#include <tinylm/io/hf_folder.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/clip.hpp>
#include <tinylm/optim/schedule.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include <unistd.h>

using namespace tl;
namespace fs = std::filesystem;
namespace gg = tl::gguf;

namespace {

const fs::path source_dir = TINYLM_SOURCE_DIR;
const fs::path qwen2_fixture = source_dir / "tests" / "reference" / "hf_folder" / "fixtures" / "qwen2_f16";
const fs::path tokenizer_refs = source_dir / "tests" / "reference" / "tokenizer";
const gguf_type all_types[] = {gguf_type::f32, gguf_type::f16, gguf_type::q8_0, gguf_type::q4_0};

struct scratch {
    fs::path dir;
    explicit scratch(const std::string& tag)
        : dir(fs::temp_directory_path() / ("tinylm_gguf_" + tag + "_" + std::to_string(::getpid()))) {
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary);
    out << text;
}

// Weights N(0, 0.2^2) (norms 1 + N(0, 0.1^2), biases N(0, 0.1^2)) as the fixtures use, so that every tensor
// matters and greedy decoding is far from ties.
template <class Model>
void randomise(Model& model, unsigned seed, float std = 0.2f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (const parameter_entry& e : model.parameter_entries())
        for (float& x : e.value)
            x = e.kind == param_kind::norm   ? 1 + 0.1f * n(rng)
                : e.kind == param_kind::bias ? 0.1f * n(rng)
                                             : std * n(rng);
}

// A Hugging Face folder for `model`: save_pretrained, the tokenizer file and a tokenizer_config.json.
template <class Model>
void make_folder(const Model& model, const fs::path& dir, const fs::path& tokenizer_json,
                 const nlohmann::json& tok_config, special_token_ids special) {
    save_pretrained(model, dir, special);
    fs::copy_file(tokenizer_json, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
    write_file(dir / "tokenizer_config.json", tok_config.dump(2));
}

special_token_ids special_ids(int bos, int eos) {
    special_token_ids s;
    s.bos = bos;
    s.eos = eos;
    return s;
}

struct lora_r4 {
    static constexpr lora_config value{.rank = 4, .alpha = 8, .dropout = 0, .targets = lora_all};
};

model_config llama_config() { // byte-fallback tokenizer of 646 tokens
    model_config c = test::llama_gqa::value;
    c.vocab_size = 646;
    return c;
}
model_config mixtral_config() { // byte-level tokenizer of 500 tokens
    model_config c = test::mixtral_moe::value;
    c.vocab_size = 512;
    return c;
}

// The Llama test model: random weights, or (trained_on non-empty) trained for 300 AdamW steps on those lines, so
// that its next-token distributions are as peaked as a real model's (random weights give near-ties everywhere).
void make_llama_folder(const fs::path& dir, const std::vector<std::string>& trained_on = {}) {
    decoder<families::llama> model(llama_config(), 5);
    if (trained_on.empty()) randomise(model, 5);
    if (!trained_on.empty()) {
        const tokenizer tok = load_tokenizer_json((tokenizer_refs / "trained_byte_fallback.json").string());
        std::vector<token_t> text;
        for (const std::string& line : trained_on) {
            text.push_back(1); // <s>
            const std::vector<token_t> ids = tok.encode(line);
            text.insert(text.end(), ids.begin(), ids.end());
        }
        adamw opt(model, {.weight_decay = 0.0});
        const index_t B = 8, T = 48;
        const lr_schedule schedule{.peak_lr = 1e-2, .min_lr = 1e-3, .warmup_steps = 20, .total_steps = 300};
        std::vector<token_t> ids(B * T), targets(B * T);
        std::mt19937 rng(11);
        for (long long step = 0; step < schedule.total_steps; ++step) {
            for (index_t b = 0; b < B; ++b) {
                const std::size_t start = rng() % (text.size() - std::size_t(T) - 1);
                for (index_t t = 0; t < T; ++t) {
                    ids[std::size_t(b * T + t)] = text[start + std::size_t(t)];
                    targets[std::size_t(b * T + t)] = text[start + std::size_t(t) + 1];
                }
            }
            model.zero_grad();
            model.loss(cview<token_t>{ids.data(), {B, T}}, cview<token_t>{targets.data(), {B, T}});
            model.backward();
            clip_grad_norm(model.parameter_entries(), 1.0);
            opt.step(schedule.lr_at(step));
        }
    }
    make_folder(model, dir, tokenizer_refs / "trained_byte_fallback.json",
                {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}}, special_ids(1, 2));
}
void make_mixtral_folder(const fs::path& dir) {
    decoder<families::mixtral> model(mixtral_config(), 6);
    randomise(model, 6);
    make_folder(model, dir, tokenizer_refs / "trained_byte_level.json",
                {{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}}, special_ids(-1, 2));
}
// Qwen3's structure (QK-norm, heads of 16 on d_model 32, tied embeddings) in the llama family, byte-level tokenizer.
void make_qwen3_folder(const fs::path& dir) {
    model_config c = test::qwen3_qknorm::value;
    c.vocab_size = 512;
    decoder<families::llama> model(c, 8);
    randomise(model, 8);
    make_folder(model, dir, tokenizer_refs / "trained_byte_level.json",
                {{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}}, special_ids(-1, 2));
}

std::vector<std::uint64_t> dims_of(const parameter_entry& e) {
    std::vector<std::uint64_t> d;
    for (int i = e.value.shape.rank - 1; i >= 0; --i)
        d.push_back(std::uint64_t(e.value.shape[i]));
    return d;
}

// The HF row a GGUF row of an attn_q / attn_k tensor of the llama architecture holds.
std::int64_t hf_row(std::int64_t r, std::int64_t d) {
    const std::int64_t h = r / d, j = r % d;
    return h * d + (j % 2) * (d / 2) + j / 2;
}

// Checks the stored values of `name` against `expected` (GGUF order): exact for f32, the rounded half for f16,
// within one quantisation step (the block's d) for the block types, and the block bytes re-encoded equal.
void check_values(const gg::reader& r, const std::string& name, const std::vector<float>& expected) {
    const gg::tensor_info& t = r.tensor(name);
    BOOST_TEST_REQUIRE(t.numel() == expected.size(), name);
    const std::vector<float> got = r.read_f32(name);
    std::vector<std::uint8_t> again;
    gg::writer::encode(t.type, expected, again);
    BOOST_TEST((again == r.read_bytes(name)), name << ": the stored bytes are not the encoding of the weights");
    switch (t.type) {
    case gg::ggml_type::f32:
        for (std::size_t i = 0; i < got.size(); ++i)
            if (got[i] != expected[i]) BOOST_FAIL(name << "[" << i << "] " << got[i] << " != " << expected[i]);
        break;
    case gg::ggml_type::f16:
        for (std::size_t i = 0; i < got.size(); ++i)
            if (got[i] != gg::half_to_float(gg::float_to_half(expected[i]))) BOOST_FAIL(name << "[" << i << "]");
        break;
    case gg::ggml_type::q8_0:
    case gg::ggml_type::q4_0: {
        const std::vector<std::uint8_t> bytes = r.read_bytes(name);
        const std::size_t block_bytes = t.type == gg::ggml_type::q8_0 ? gg::q8_0_bytes : gg::q4_0_bytes;
        for (std::size_t b = 0; b * gg::quant_block < got.size(); ++b) {
            const float d =
                std::fabs(gg::half_to_float(std::uint16_t(bytes[b * block_bytes] | bytes[b * block_bytes + 1] << 8)));
            for (std::size_t j = b * gg::quant_block; j < (b + 1) * gg::quant_block; ++j)
                if (std::fabs(got[j] - expected[j]) > d * 1.001f + 1e-7f)
                    BOOST_FAIL(name << "[" << j << "] " << got[j] << " vs " << expected[j] << ", step " << d);
        }
        break;
    }
    default:
        BOOST_FAIL(name << ": tinylm wrote " << gg::type_name(t.type));
    }
}

// The type export gives a tensor of the requested type.
gg::ggml_type expected_type(const std::string& name, const std::vector<std::uint64_t>& dims, gguf_type want) {
    if (dims.size() == 1 || name.ends_with("_norm.weight") || name.find("ffn_gate_inp") != std::string::npos)
        return gg::ggml_type::f32;
    switch (want) {
    case gguf_type::f32:
        return gg::ggml_type::f32;
    case gguf_type::f16:
        return gg::ggml_type::f16;
    case gguf_type::q8_0:
        return dims[0] % 32 ? gg::ggml_type::f16 : gg::ggml_type::q8_0;
    case gguf_type::q4_0:
        return dims[0] % 32 ? gg::ggml_type::f16 : gg::ggml_type::q4_0;
    }
    return gg::ggml_type::f32;
}

// Every tensor of `model` is in the file under its GGUF name, with its dimensions, type and values (q/k rows
// permuted for llama, experts split and stacked); no other tensor is.
template <class Model>
void check_tensors(const gg::reader& r, const Model& model, gguf_type want, const std::string& arch) {
    const model_config& c = model.config();
    std::size_t expected_count = 0;
    for (const parameter_entry& e : model.parameter_entries()) {
        if (e.kind == param_kind::adapter) continue;
        const std::vector<float> hf(e.value.begin(), e.value.end());
        if (e.name.ends_with("mlp.experts.gate_up_proj")) {
            const std::string blk = "blk." + e.name.substr(13, e.name.find(".mlp") - 13) + ".";
            const std::int64_t n_exp = e.value.dim(0), f = e.value.dim(1) / 2, cols = e.value.dim(2);
            for (int part = 0; part < 2; ++part) {
                const std::string name = blk + (part == 0 ? "ffn_gate_exps.weight" : "ffn_up_exps.weight");
                const std::vector<std::uint64_t> dims{std::uint64_t(cols), std::uint64_t(f), std::uint64_t(n_exp)};
                BOOST_TEST((r.tensor(name).dims == dims), name);
                BOOST_TEST((r.tensor(name).type == expected_type(name, dims, want)), name);
                std::vector<float> expected;
                for (std::int64_t x = 0; x < n_exp; ++x)
                    expected.insert(expected.end(), hf.begin() + (x * 2 * f + part * f) * cols,
                                    hf.begin() + (x * 2 * f + part * f + f) * cols);
                check_values(r, name, expected);
                ++expected_count;
            }
            continue;
        }
        std::string name = detail::gguf_export::tensor_name(e.name);
        if (e.name.ends_with("mlp.experts.down_proj"))
            name = "blk." + e.name.substr(13, e.name.find(".mlp") - 13) + ".ffn_down_exps.weight";
        BOOST_TEST_REQUIRE(!name.empty(), e.name);
        ++expected_count;
        const gg::tensor_info& t = r.tensor(name);
        BOOST_TEST((t.dims == dims_of(e)), name);
        BOOST_TEST((t.type == expected_type(name, t.dims, want)), name << " is " << gg::type_name(t.type));
        std::vector<float> expected = hf;
        const bool qk = name.find(".attn_q.") != std::string::npos || name.find(".attn_k.") != std::string::npos;
        if (arch == "llama" && qk) {
            const std::int64_t cols = e.value.shape.rank > 1 ? e.value.dim(1) : 1;
            for (std::int64_t row = 0; row < e.value.dim(0); ++row)
                std::copy(hf.begin() + hf_row(row, c.head_dim()) * cols,
                          hf.begin() + (hf_row(row, c.head_dim()) + 1) * cols, expected.begin() + row * cols);
        }
        check_values(r, name, expected);
    }
    BOOST_TEST(r.tensors().size() == expected_count + (c.rope_scaling.factor > 0 ? 1 : 0));
}

template <class Model>
gg::reader export_and_read(const Model& model, const hf_folder& folder, gguf_type t, const fs::path& out) {
    write_gguf(model, folder, {.type = t, .name = "test model"}, out);
    BOOST_TEST_REQUIRE(fs::exists(out));
    BOOST_TEST(!fs::exists(out.string() + ".tmp"));
    return gg::reader(out);
}

// The metadata every export holds, against the model's configuration.
void check_architecture(const gg::reader& r, const model_config& c, const std::string& arch, gguf_type t) {
    BOOST_TEST(r.file_version() == 3u);
    BOOST_TEST(r.alignment() == 32u);
    BOOST_TEST(r.data_offset() % 32 == 0u);
    for (const auto& info : r.tensors())
        BOOST_TEST(info.offset % 32 == 0u, info.name);
    BOOST_TEST(r.at("general.architecture").as_string() == arch);
    BOOST_TEST(r.at("general.name").as_string() == "test model");
    BOOST_TEST(r.at("general.alignment").as_uint() == 32u);
    const std::uint64_t ftype = t == gguf_type::f32 ? 0 : t == gguf_type::f16 ? 1 : t == gguf_type::q4_0 ? 2 : 7;
    BOOST_TEST(r.at("general.file_type").as_uint() == ftype);
    const std::string a = arch + ".";
    BOOST_TEST(r.at(a + "vocab_size").as_uint() == std::uint64_t(c.vocab_size));
    BOOST_TEST(r.at(a + "context_length").as_uint() == std::uint64_t(c.max_seq_len));
    BOOST_TEST(r.at(a + "embedding_length").as_uint() == std::uint64_t(c.d_model));
    BOOST_TEST(r.at(a + "block_count").as_uint() == std::uint64_t(c.n_layers));
    BOOST_TEST(r.at(a + "feed_forward_length").as_uint() == std::uint64_t(c.d_ff));
    BOOST_TEST(r.at(a + "attention.head_count").as_uint() == std::uint64_t(c.n_heads));
    BOOST_TEST(r.at(a + "attention.head_count_kv").as_uint() == std::uint64_t(c.n_kv_heads));
    BOOST_TEST(r.at(a + "rope.dimension_count").as_uint() == std::uint64_t(c.head_dim()));
    BOOST_TEST(r.at(a + "rope.freq_base").as_float() == double(float(c.rope_theta)));
    BOOST_TEST(r.at(a + "attention.layer_norm_rms_epsilon").as_float() == double(float(c.norm_eps)));
    if (c.moe.n_experts > 0) {
        BOOST_TEST(r.at(a + "expert_count").as_uint() == std::uint64_t(c.moe.n_experts));
        BOOST_TEST(r.at(a + "expert_used_count").as_uint() == std::uint64_t(c.moe.top_k));
    } else {
        BOOST_TEST(r.find(a + "expert_count") == nullptr);
    }
}

// tokenizer.ggml.tokens / token_type / merges against the tokenizer, spelled as llama.cpp expects.
void check_vocab(const gg::reader& r, const tokenizer& tok, const model_config& c) {
    const auto& tokens = r.at("tokenizer.ggml.tokens").strings();
    const auto& types = r.at("tokenizer.ggml.token_type").ints();
    const auto& merges = r.at("tokenizer.ggml.merges").strings();
    BOOST_TEST_REQUIRE(tokens.size() == std::size_t(c.vocab_size));
    BOOST_TEST_REQUIRE(types.size() == tokens.size());
    BOOST_TEST(merges.size() == tok.model.merges.size());
    const byte_level_map& bl = byte_level_map::get();
    for (std::size_t id = 0; id < tokens.size(); ++id) {
        if (id >= tok.vocab_size()) {
            BOOST_TEST(tokens[id] == "[PAD" + std::to_string(id) + "]");
            BOOST_TEST(types[id] == 5); // unused
            continue;
        }
        const added_token* added = tok.added.find(token_t(id));
        const std::string bytes(tok.id_to_bytes(token_t(id)));
        if (added) {
            BOOST_TEST(tokens[id] == added->content);
            BOOST_TEST(types[id] == (token_t(id) == tok.model.unk ? 2 : added->special ? 3 : 4), tokens[id]);
        } else if (tok.model.byte_level) {
            BOOST_TEST(tokens[id] == bl.encode(bytes));
            BOOST_TEST(types[id] == 1);
        } else {
            BOOST_TEST(tokens[id] == bytes);
            const bool is_byte = bytes.size() == 6 && bytes.starts_with("<0x") && bytes.ends_with(">");
            BOOST_TEST(types[id] == (token_t(id) == tok.model.unk ? 2 : is_byte ? 6 : 1), tokens[id]);
        }
    }
    for (std::size_t k = 0; k < merges.size(); ++k) {
        const auto [a, b] = tok.model.merges[k];
        const std::size_t space = merges[k].find(' ');
        BOOST_TEST_REQUIRE(space != std::string::npos);
        BOOST_TEST(merges[k].substr(0, space) == tokens[std::size_t(a)]);
        BOOST_TEST(merges[k].substr(space + 1) == tokens[std::size_t(b)]);
    }
}

// True when `line` holds the text of an ordinary (not added) token that llama.cpp forces to control and end-of-
// generation by its text (src/llama-vocab.cpp: "</s>", "<|endoftext|>", "<|im_end|>", ...); with special tokens
// parsed, llama.cpp then matches it as one token where Hugging Face and tinylm split it as text.
bool has_control_looking_text(const tokenizer& tok, const std::string& line) {
    for (const char* t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
                          "<EOT>", "<|end_of_text|>", "<eos>"})
        if (line.find(t) != std::string::npos && tok.model.find(t) >= 0 &&
            tok.added.find(std::string_view(t)) == nullptr)
            return true;
    return false;
}

// 200 lines of tests/reference/tokenizer/texts.json (Russian, Tatar, English, code, emoji, whitespace runs, special
// token text), cut at spaces into pieces of at most 120 bytes, then runs of 2 to 10 of their words.
std::vector<std::string> test_lines() {
    std::vector<std::string> lines;
    {
        std::ifstream in(tokenizer_refs / "texts.json");
        const nlohmann::json texts = nlohmann::json::parse(in);
        for (const auto& t : texts) {
            std::istringstream ss(t["text"].get<std::string>());
            // The lines of the texts, cut at spaces into pieces of at most 120 bytes.
            for (std::string line; std::getline(ss, line);) {
                while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
                    line.pop_back();
                std::size_t at = 0;
                while (at < line.size() && lines.size() < 200) {
                    std::size_t end = line.size();
                    if (end - at > 120) {
                        end = line.rfind(' ', at + 120);
                        if (end == std::string::npos || end <= at) end = line.find(' ', at + 1);
                        if (end == std::string::npos) end = line.size();
                    }
                    if (end - at >= 2) lines.push_back(line.substr(at, end - at));
                    at = end;
                }
            }
        }
    }
    // Then runs of 2 to 10 words from every second word of each line, until there are 200 lines.
    for (std::size_t base = 0, n = lines.size(); lines.size() < 200 && base < n; ++base) {
        std::vector<std::string> words;
        std::istringstream ws(lines[base]);
        for (std::string w; ws >> w;)
            words.push_back(w);
        for (std::size_t start = 0; start + 2 <= words.size() && lines.size() < 200; start += 2) {
            std::string line = words[start];
            for (std::size_t k = start + 1; k < std::min(words.size(), start + 2 + (start + base) % 9); ++k)
                line += " " + words[k];
            lines.push_back(line);
        }
    }
    return lines;
}

// A tiny Llama of a real tokenizer's vocabulary (tokenizer.json `src` of the shared data: "llama2" or "qwen3") as
// a folder `dir` with that tokenizer and its special tokens, written to `file` as f32 GGUF; returns the tokenizer.
tokenizer real_tokenizer_gguf(const std::string& real, const fs::path& src, const fs::path& dir, const fs::path& file) {
    const tokenizer tok = load_tokenizer_json(src.string());
    model_config c = test::llama_gqa::value;
    c.vocab_size = int(tok.vocab_size());
    c.tied_embeddings = true;
    decoder<families::llama> model(c, 1);
    const nlohmann::json tok_config =
        real == "llama2" ? nlohmann::json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}}
                         : nlohmann::json{{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}};
    make_folder(model, dir, src, tok_config, special_ids(real == "llama2" ? 1 : -1, -1));
    write_gguf(model, read_hf_folder(dir), {.type = gguf_type::f32, .name = real}, file);
    return tok;
}

// tinylm's logits after the last token of `prompt`.
template <class Model>
std::vector<float> last_logits(const Model& model, const std::vector<token_t>& prompt) {
    auto cache = model.make_cache(1, index_t(prompt.size()));
    std::vector<float> logits(std::size_t(model.config().vocab_size));
    model.forward_cached(cache, cview<token_t>{prompt.data(), {1, index_t(prompt.size())}},
                         tensor_view<float>{logits.data(), {1, model.config().vocab_size}});
    return logits;
}

// Hugging Face RoPE (rotate half) on one head of width d, at position p.
std::vector<double> rope_half(const std::vector<double>& x, std::int64_t p, double theta) {
    const std::size_t d = x.size(), h = d / 2;
    std::vector<double> y(d);
    for (std::size_t i = 0; i < h; ++i) {
        const double a = double(p) * std::pow(theta, -2.0 * double(i) / double(d));
        y[i] = x[i] * std::cos(a) - x[i + h] * std::sin(a);
        y[i + h] = x[i + h] * std::cos(a) + x[i] * std::sin(a);
    }
    return y;
}
// llama.cpp's "normal" RoPE (adjacent pairs) on one head.
std::vector<double> rope_pairs(const std::vector<double>& x, std::int64_t p, double theta) {
    const std::size_t d = x.size();
    std::vector<double> y(d);
    for (std::size_t i = 0; i < d / 2; ++i) {
        const double a = double(p) * std::pow(theta, -2.0 * double(i) / double(d));
        y[2 * i] = x[2 * i] * std::cos(a) - x[2 * i + 1] * std::sin(a);
        y[2 * i + 1] = x[2 * i + 1] * std::cos(a) + x[2 * i] * std::sin(a);
    }
    return y;
}

// Reading back: the file's configuration equals the model's, and its weights load into a fresh decoder (f32 bit for
// bit, q8_0 within one quantisation step), for a permuted llama, a tied qwen2 and a mixtral.
template <class Family, class Model>
void round_trip(const Model& model, const hf_folder& folder, const fs::path& dir) {
    const model_config& c = model.config();
    for (const gguf_type t : {gguf_type::f32, gguf_type::q8_0}) {
        BOOST_TEST_CONTEXT("type " << to_string(t)) {
            const gg::reader r = export_and_read(model, folder, t, dir / ("rt-" + to_string(t) + ".gguf"));
            model_config back = gguf_model_config(r);
            BOOST_TEST(back.norm_eps == double(float(c.norm_eps)));
            back.norm_eps = c.norm_eps;
            back.rope_theta = c.rope_theta; // written as f32
            back.moe.aux_loss_weight = c.moe.aux_loss_weight;
            BOOST_TEST((back == c));
            decoder<Family> loaded(back, 99);
            load_gguf_weights(loaded, r);
            const auto& a = model.parameter_entries();
            const auto& b = loaded.parameter_entries();
            BOOST_TEST_REQUIRE(a.size() == b.size());
            for (std::size_t k = 0; k < a.size(); ++k) {
                float worst = 0, scale = 0;
                for (index_t i = 0; i < a[k].value.numel(); ++i) {
                    worst = std::max(worst, std::fabs(a[k].value[i] - b[k].value[i]));
                    scale = std::max(scale, std::fabs(a[k].value[i]));
                }
                if (t == gguf_type::f32)
                    BOOST_TEST(worst == 0.0f, a[k].name);
                else // one Q8_0 step is at most max|x| / 127 (plus the f16 rounding of the scale)
                    BOOST_TEST(worst <= scale / 127 * 0.57f, a[k].name << ": " << worst << " vs scale " << scale);
            }
        }
    }
}
} // namespace

BOOST_AUTO_TEST_SUITE(gguf_quants)

BOOST_AUTO_TEST_CASE(every_half_round_trips_and_f32_rounds_to_nearest_even) {
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const float f = gg::half_to_float(std::uint16_t(h));
        if (std::isnan(f)) {
            BOOST_TEST(std::isnan(gg::half_to_float(gg::float_to_half(f))));
            continue;
        }
        if (gg::float_to_half(f) != h) BOOST_FAIL("half " << h << " does not round-trip");
    }
    BOOST_TEST(gg::float_to_half(1.0f) == 0x3c00);
    BOOST_TEST(gg::float_to_half(65504.0f) == 0x7bff);
    BOOST_TEST(gg::float_to_half(65520.0f) == 0x7c00); // halfway to the next power: rounds to infinity
    BOOST_TEST(gg::float_to_half(65519.0f) == 0x7bff);
    BOOST_TEST(gg::float_to_half(1.0f + 0x1p-11f) == 0x3c00); // tie: to even
    BOOST_TEST(gg::float_to_half(1.0f + 3 * 0x1p-11f) == 0x3c02);
    BOOST_TEST(gg::float_to_half(0x1p-25f) == 0x0000); // tie with the smallest subnormal: to zero
    BOOST_TEST(gg::float_to_half(0x1.8p-25f) == 0x0001);
    BOOST_TEST(gg::float_to_half(-0x1p-24f) == 0x8001);
    BOOST_TEST(gg::float_to_half(0x1.ffcp-15f) == 0x0400); // rounds up into the smallest normal
}

BOOST_AUTO_TEST_CASE(q8_0_and_q4_0_blocks) {
    std::vector<float> x(64);
    for (int i = 0; i < 32; ++i)
        x[std::size_t(i)] = float(i - 10) * 0.25f; // max |x| = 5.25 at i = 31; min -2.5
    // second block all zero
    std::vector<std::uint8_t> q8(2 * gg::q8_0_bytes), q4(2 * gg::q4_0_bytes);
    gg::quantize_q8_0(x, q8.data());
    gg::quantize_q4_0(x, q4.data());
    BOOST_TEST(gg::half_to_float(std::uint16_t(q8[0] | q8[1] << 8)) ==
               gg::half_to_float(gg::float_to_half(5.25f / 127)));
    BOOST_TEST(std::int8_t(q8[2 + 31]) == 127);
    BOOST_TEST(std::int8_t(q8[2 + 0]) == std::int8_t(std::round(-2.5f * (1.0f / (5.25f / 127)))));
    BOOST_TEST(std::int8_t(q8[2 + 10]) == 0);
    // Q4_0: d = 5.25 / -8; x = 5.25 -> trunc(-8 + 8.5) = 0; x = -2.5 -> trunc(3.8095 + 8.5) = 12.
    BOOST_TEST(gg::half_to_float(std::uint16_t(q4[0] | q4[1] << 8)) ==
               gg::half_to_float(gg::float_to_half(-5.25f / 8)));
    BOOST_TEST((q4[2 + 15] >> 4) == 0);   // x[31]
    BOOST_TEST((q4[2 + 0] & 0x0f) == 12); // x[0]
    for (std::size_t j = gg::q8_0_bytes; j < q8.size(); ++j)
        BOOST_TEST(q8[j] == 0);
    for (std::size_t j = gg::q4_0_bytes + 2; j < q4.size(); ++j)
        BOOST_TEST(q4[j] == 0x88); // zero block: every nibble 8
    // Reconstruction within one step on random blocks; the first of equal magnitudes sets Q4_0's sign.
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0, 1);
    std::vector<float> y(32 * 50), back(y.size());
    for (float& v : y)
        v = n(rng);
    y[32] = -3, y[33] = 3; // tie: -3 first
    std::vector<std::uint8_t> b8(50 * gg::q8_0_bytes), b4(50 * gg::q4_0_bytes);
    gg::quantize_q8_0(y, b8.data());
    gg::quantize_q4_0(y, b4.data());
    BOOST_TEST(gg::half_to_float(std::uint16_t(b4[gg::q4_0_bytes] | b4[gg::q4_0_bytes + 1] << 8)) > 0.0f);
    for (auto [bytes, is8] : {std::pair{&b8, true}, std::pair{&b4, false}}) {
        if (is8)
            gg::dequantize_q8_0(bytes->data(), back);
        else
            gg::dequantize_q4_0(bytes->data(), back);
        const std::size_t bb = is8 ? gg::q8_0_bytes : gg::q4_0_bytes;
        for (std::size_t i = 0; i < y.size(); ++i) {
            const std::size_t b = i / 32;
            const float d = std::fabs(gg::half_to_float(std::uint16_t((*bytes)[b * bb] | (*bytes)[b * bb + 1] << 8)));
            // Half a step (q8_0) or one (q4_0, whose top nibble is clipped), plus the rounding of d to f16 times |q|.
            BOOST_TEST(std::fabs(back[i] - y[i]) <= (is8 ? 0.5f + 127 * 0x1p-11f : 1.0f + 8 * 0x1p-11f) * d);
        }
    }
    BOOST_TEST(tl_test::error_of([&] {
                   gg::quantize_q8_0(std::span<const float>(y.data(), 31), b8.data());
               }).find("multiple of 32") != std::string::npos);
}

// Every type tinylm reads, on random blocks: the values of tinylm's reader are the `gguf` package's
// (gguf.quants.dequantize, the numpy port of ggml's dequantize_row_*), bit for bit. The committed fixture is the
// output of tests/reference/gguf/make_blocks.py; the torch test gguf_blocks_from_the_gguf_package runs this case on a
// copy made with the installed package (TINYLM_GGUF_BLOCKS).
BOOST_AUTO_TEST_CASE(dequantisation_is_the_gguf_package) {
    const char* env = std::getenv("TINYLM_GGUF_BLOCKS");
    const fs::path file =
        env ? fs::path(env) : source_dir / "tests" / "reference" / "gguf" / "fixtures" / "blocks.gguf";
    const gg::reader r(file);
    std::vector<std::string> types;
    for (const gg::tensor_info& t : r.tensors()) {
        if (t.name.ends_with(".expected")) continue;
        const std::vector<float> got = r.read_f32(t.name), want = r.read_f32(t.name + ".expected");
        BOOST_TEST_REQUIRE(got.size() == want.size(), t.name);
        const auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin(), [](float a, float b) {
            return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
        });
        BOOST_TEST((g == got.end()), t.name << "[" << (g - got.begin()) << "]: tinylm " << (g == got.end() ? 0 : *g)
                                            << ", gguf " << (w == want.end() ? 0 : *w));
        BOOST_TEST(gg::type_name(t.type) == t.name);
        types.push_back(t.name);
    }
    BOOST_TEST(types.size() == 13u); // every type read but F32 (the expected values are F32)
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gguf_folder)

// A GGUF file read as a folder (io/gguf_folder.hpp), for the files export writes: the Qwen2 fixture (byte-level, the
// Qwen2 split, no NFC, a chat template), the same with the GPT-2 split, a Llama with tinylm's trained byte-fallback
// tokenizer (metaspace, NFC), a Mixtral with tinylm's trained byte-level tokenizer (NFC). The rebuilt tokenizer gives
// the folder tokenizer's ids on the 200 lines, with and without special tokens, and decodes them to the same text;
// the special tokens and the chat template are the folder's; the file loads as a text_model-ready configuration.
BOOST_AUTO_TEST_CASE(tokenizer_and_folder_from_the_file) {
    scratch s("folder");
    make_llama_folder(s.dir / "llama");
    make_mixtral_folder(s.dir / "mixtral");
    const std::vector<std::string> lines = test_lines();
    struct source {
        std::string name;
        fs::path dir;
        std::optional<split_pattern> split{};
    };
    for (const source& src : {source{"qwen2", qwen2_fixture}, source{"qwen2-gpt2", qwen2_fixture, split_pattern::gpt2},
                              source{"qwen2-llama3", qwen2_fixture, split_pattern::llama3},
                              source{"llama", s.dir / "llama"}, source{"mixtral", s.dir / "mixtral"}}) {
        hf_folder folder = read_hf_folder(src.dir);
        if (src.split) folder.tokenizer->pre.pattern = *src.split;
        const fs::path file = s.dir / (src.name + ".gguf");
        with_pretrained(src.dir, [&](auto& model) {
            write_gguf(model, folder, {.type = gguf_type::q8_0}, file);
            return 0;
        });
        const gg::reader r(file);
        const hf_folder back = read_gguf_folder(r);
        const tokenizer &want = *folder.tokenizer, &got = *back.tokenizer;
        BOOST_TEST(got.vocab_size() == want.vocab_size(), src.name);
        BOOST_TEST(got.norm.nfc == want.norm.nfc, src.name);
        BOOST_TEST((got.pre.pattern == want.pre.pattern), src.name);
        std::size_t same = 0, decoded = 0;
        for (const std::string& line : lines)
            for (const bool special : {false, true}) {
                const std::vector<token_t> ids = want.encode(line, {.add_special_tokens = special});
                const std::vector<token_t> again = got.encode(line, {.add_special_tokens = special});
                same += ids == again;
                decoded += got.decode(ids) == want.decode(ids);
                if (ids != again) {
                    std::string a, b;
                    for (token_t t : ids)
                        a += std::to_string(t) + " ";
                    for (token_t t : again)
                        b += std::to_string(t) + " ";
                    BOOST_TEST_MESSAGE(src.name << ": \"" << line << "\": folder " << a << "file " << b);
                }
            }
        BOOST_TEST(same == 2 * lines.size(), src.name << ": " << same << " of " << 2 * lines.size() << " encodings");
        BOOST_TEST(decoded == 2 * lines.size(), src.name);
        BOOST_TEST(std::uint64_t(back.special.eos_id) == r.at("tokenizer.ggml.eos_token_id").as_uint(), src.name);
        if (folder.special.eos_id >= 0) BOOST_TEST(back.special.eos == folder.special.eos, src.name);
        BOOST_TEST(back.generation.eos_token_ids == std::vector<token_t>{back.special.eos_id},
                   boost::test_tools::per_element());
        BOOST_TEST(bool(back.chat) == bool(folder.chat), src.name);
        if (back.chat && folder.chat) BOOST_TEST(back.chat->source() == folder.chat->source(), src.name);
        BOOST_TEST(back.config["architectures"] == folder.config["architectures"], src.name);
    }
    // The real Llama 2 (32,000 tokens, byte fallback) and Qwen3 (151,669 byte-level tokens, NFC) tokenizers of the
    // shared data, when present, on a tiny model of their vocabulary: the same ids on the 200 lines.
    for (const std::string real : {"llama2", "qwen3"}) {
        const fs::path src = tl_test::data_path(fs::path("tokenizers") / real / "tokenizer.json");
        if (src.empty()) {
            BOOST_TEST_MESSAGE("skipped " << real << ": no shared data");
            continue;
        }
        const tokenizer tok = real_tokenizer_gguf(real, src, s.dir / real, s.dir / (real + ".gguf"));
        const tokenizer got = gguf_tokenizer(gg::reader(s.dir / (real + ".gguf")));
        std::size_t same = 0;
        for (const std::string& line : lines)
            same += got.encode(line, {.add_special_tokens = true}) == tok.encode(line, {.add_special_tokens = true});
        BOOST_TEST(same == lines.size(), real << ": " << same << " of " << lines.size());
        if (real != "llama2") continue;
        // As llama.cpp's converter writes Llama 2 (scores, no merges): the merges made from the scores are the
        // tokenizer.json's, in order, and so are the ids.
        const gg::reader full(s.dir / "llama2.gguf");
        gg::writer w;
        for (const auto& [key, value] : full.metadata())
            if (key != "tokenizer.ggml.merges") w.add(key, value);
        w.save(s.dir / "llama2-scores.gguf");
        const std::vector<std::string> made = detail::merges_from_scores(full.at("tokenizer.ggml.tokens").strings(),
                                                                         full.at("tokenizer.ggml.scores").floats());
        const std::vector<std::string>& written = full.at("tokenizer.ggml.merges").strings();
        BOOST_TEST(made.size() == written.size());
        BOOST_TEST(written.size() == tok.model.merges.size()); // 58,980
        std::size_t first_difference = 0;
        while (first_difference < std::min(made.size(), written.size()) &&
               made[first_difference] == written[first_difference])
            ++first_difference;
        BOOST_TEST(first_difference == written.size(), "merge " << first_difference << " differs");
        const tokenizer from_scores = gguf_tokenizer(gg::reader(s.dir / "llama2-scores.gguf"));
        same = 0;
        for (const std::string& line : lines)
            same += from_scores.encode(line, {.add_special_tokens = true}) ==
                    tok.encode(line, {.add_special_tokens = true});
        BOOST_TEST(same == lines.size(), "llama2 from scores: " << same << " of " << lines.size());
    }
    // What is not read is refused by name: a tokenizer model or split llama.cpp has but tinylm does not.
    gg::writer w;
    w.add("tokenizer.ggml.model", gg::value::str("bert"));
    w.save(s.dir / "bert.gguf");
    BOOST_TEST(tl_test::error_of([&] {
                   gguf_tokenizer(gg::reader(s.dir / "bert.gguf"));
               }).find("tokenizer.ggml.model \"bert\" is not read (gpt2 and llama are)") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gguf_export)

BOOST_AUTO_TEST_CASE(qwen2_fixture_all_types) {
    scratch s("qwen2");
    const hf_folder folder = read_hf_folder(qwen2_fixture);
    decoder<families::qwen2> model(read_hf_folder_config(qwen2_fixture));
    load_pretrained(model, qwen2_fixture);
    const model_config& c = model.config();
    BOOST_TEST_REQUIRE(c.tied_embeddings);
    for (const gguf_type t : all_types) {
        BOOST_TEST_CONTEXT("type " << to_string(t)) {
            const gg::reader r = export_and_read(model, folder, t, s.dir / (to_string(t) + ".gguf"));
            check_architecture(r, c, "qwen2", t);
            check_tensors(r, model, t, "qwen2");
            BOOST_TEST(r.find_tensor("output.weight") == nullptr); // tied: llama.cpp reuses token_embd
            BOOST_TEST(r.tensor("blk.1.attn_k.bias").dims == std::vector<std::uint64_t>{16});
            BOOST_TEST(r.at("tokenizer.ggml.model").as_string() == "gpt2");
            BOOST_TEST(r.at("tokenizer.ggml.pre").as_string() == "qwen2");
            BOOST_TEST(r.find("tokenizer.ggml.scores") == nullptr);
            check_vocab(r, *folder.tokenizer, c);
            BOOST_TEST(r.at("tokenizer.ggml.eos_token_id").as_uint() == 2u);     // <|im_end|>
            BOOST_TEST(r.at("tokenizer.ggml.padding_token_id").as_uint() == 0u); // <|endoftext|>
            BOOST_TEST(r.find("tokenizer.ggml.bos_token_id") == nullptr);        // bos_token_id null
            BOOST_TEST(r.at("tokenizer.ggml.add_bos_token").as_bool() == false);
            BOOST_TEST(r.at("tokenizer.chat_template").as_string() == folder.chat->source());
        }
    }
}

// Qwen3: architecture qwen3, the q/k norms as attn_q_norm / attn_k_norm of the head width in F32 whatever the type,
// q/k rows not permuted (NEOX RoPE), a query width (64) other than embedding_length (32).
BOOST_AUTO_TEST_CASE(qwen3_qk_norm) {
    scratch s("qwen3");
    make_qwen3_folder(s.dir / "qwen3");
    const hf_folder folder = read_hf_folder(s.dir / "qwen3");
    decoder<families::llama> model(read_hf_folder_config(s.dir / "qwen3"));
    load_pretrained(model, s.dir / "qwen3");
    const model_config& c = model.config();
    BOOST_TEST_REQUIRE(c.qk_norm);
    BOOST_TEST(gguf_architecture(c) == "qwen3");
    for (const gguf_type t : all_types) {
        BOOST_TEST_CONTEXT("type " << to_string(t)) {
            const gg::reader r = export_and_read(model, folder, t, s.dir / (to_string(t) + ".gguf"));
            check_architecture(r, c, "qwen3", t);
            check_tensors(r, model, t, "qwen3");
            for (const char* norm : {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight"}) {
                BOOST_TEST(r.tensor(norm).dims == std::vector<std::uint64_t>{16}, norm);
                BOOST_TEST((r.tensor(norm).type == gg::ggml_type::f32), norm);
            }
            BOOST_TEST(r.tensor("blk.0.attn_q.weight").dims == (std::vector<std::uint64_t>{32, 64}));
            BOOST_TEST(r.at("qwen3.attention.key_length").as_uint() == 16u);
            BOOST_TEST(r.find_tensor("output.weight") == nullptr); // tied
        }
    }
    round_trip<families::llama>(model, folder, s.dir);
    // A Qwen3 file's weights do not fit a model without QK-norm (the tensors it lacks are named).
    model_config plain = c;
    plain.qk_norm = false;
    BOOST_TEST(tl_test::error_of([&] {
                   decoder<families::llama> other(plain);
                   load_pretrained(other, s.dir / "qwen3");
               }).find("QK-norm") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(llama_byte_fallback_and_rope_permutation) {
    scratch s("llama");
    make_llama_folder(s.dir / "llama");
    const hf_folder folder = read_hf_folder(s.dir / "llama");
    decoder<families::llama> model(read_hf_folder_config(s.dir / "llama"));
    load_pretrained(model, s.dir / "llama");
    const model_config& c = model.config();
    for (const gguf_type t : all_types) {
        BOOST_TEST_CONTEXT("type " << to_string(t)) {
            const gg::reader r = export_and_read(model, folder, t, s.dir / (to_string(t) + ".gguf"));
            check_architecture(r, c, "llama", t);
            check_tensors(r, model, t, "llama");
            BOOST_TEST(r.find_tensor("output.weight") != nullptr);
            BOOST_TEST(r.at("tokenizer.ggml.model").as_string() == "llama");
            BOOST_TEST(r.find("tokenizer.ggml.pre") == nullptr);
            BOOST_TEST(r.at("tokenizer.ggml.add_space_prefix").as_bool() == true);
            check_vocab(r, *folder.tokenizer, c);
            BOOST_TEST(r.at("tokenizer.ggml.bos_token_id").as_uint() == 1u);
            BOOST_TEST(r.at("tokenizer.ggml.eos_token_id").as_uint() == 2u);
            BOOST_TEST(r.at("tokenizer.ggml.unknown_token_id").as_uint() == 0u);
            // Scores: a merged token scores minus its merge's rank + 1, so llama.cpp merges in rank order.
            const auto& scores = r.at("tokenizer.ggml.scores").floats();
            const bpe_model& m = folder.tokenizer->model;
            for (std::size_t k = 0; k < m.merges.size(); ++k) {
                const token_t made =
                    m.find(m.tokens[std::size_t(m.merges[k].first)] + m.tokens[std::size_t(m.merges[k].second)]);
                BOOST_TEST(scores[std::size_t(made)] >= -double(k + 1));
            }
        }
    }
    // The permuted q/k rows under llama.cpp's adjacent-pair RoPE give the HF rotate-half RoPE of the HF rows,
    // in the order llama.cpp then reads them back (attention scores are dot products within a head: the same).
    const gg::reader r(s.dir / "f32.gguf");
    for (const char* which : {"attn_q", "attn_k"}) {
        const std::vector<float> w = r.read_f32(std::string("blk.1.") + which + ".weight");
        const std::string hf_name =
            std::string("model.layers.1.self_attn.") + (which[5] == 'q' ? "q" : "k") + "_proj.weight";
        const parameter_entry* e = nullptr;
        for (const auto& p : model.parameter_entries())
            if (p.name == hf_name) e = &p;
        BOOST_TEST_REQUIRE(e != nullptr);
        const std::int64_t d = c.head_dim(), rows = e->value.dim(0), cols = e->value.dim(1);
        std::vector<double> x(static_cast<std::size_t>(cols));
        for (std::size_t i = 0; i < x.size(); ++i)
            x[i] = std::sin(0.7 * double(i) + 0.3);
        for (std::int64_t h = 0; h < rows / d; ++h) {
            std::vector<double> q_hf(static_cast<std::size_t>(d)), q_gguf(static_cast<std::size_t>(d));
            for (std::int64_t j = 0; j < d; ++j)
                for (std::int64_t k = 0; k < cols; ++k) {
                    q_hf[std::size_t(j)] += double(e->value[(h * d + j) * cols + k]) * x[std::size_t(k)];
                    q_gguf[std::size_t(j)] += double(w[std::size_t((h * d + j) * cols + k)]) * x[std::size_t(k)];
                }
            const auto a = rope_half(q_hf, 5, c.rope_theta), b = rope_pairs(q_gguf, 5, c.rope_theta);
            for (std::int64_t j = 0; j < d; ++j)
                BOOST_TEST(b[std::size_t(j)] == a[std::size_t(hf_row(j, d))], boost::test_tools::tolerance(1e-9));
        }
    }
}

BOOST_AUTO_TEST_CASE(mixtral_experts_stacked) {
    scratch s("mixtral");
    make_mixtral_folder(s.dir / "mixtral");
    const hf_folder folder = read_hf_folder(s.dir / "mixtral");
    decoder<families::mixtral> model(read_hf_folder_config(s.dir / "mixtral"));
    load_pretrained(model, s.dir / "mixtral");
    for (const gguf_type t : {gguf_type::f32, gguf_type::q8_0}) {
        BOOST_TEST_CONTEXT("type " << to_string(t)) {
            const gg::reader r = export_and_read(model, folder, t, s.dir / (to_string(t) + ".gguf"));
            check_architecture(r, model.config(), "llama", t);
            check_tensors(r, model, t, "llama");
            BOOST_TEST(r.tensor("blk.0.ffn_gate_exps.weight").dims == (std::vector<std::uint64_t>{32, 48, 4}));
            BOOST_TEST(r.tensor("blk.0.ffn_down_exps.weight").dims == (std::vector<std::uint64_t>{48, 32, 4}));
            BOOST_TEST(r.find_tensor("blk.0.ffn_gate.weight") == nullptr);
            BOOST_TEST((r.tensor("blk.0.ffn_gate_inp.weight").type == gg::ggml_type::f32));
            check_vocab(r, *folder.tokenizer, model.config()); // 500 tokens padded to 512 embedding rows
            BOOST_TEST(r.at("tokenizer.ggml.pre").as_string() == "qwen2");
            BOOST_TEST(r.at("tokenizer.ggml.padding_token_id").as_uint() == 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(gpt2_split_pattern_and_sliding_window) {
    scratch s("gpt2");
    model_config c = test::mistral_window::value;
    c.vocab_size = 320;
    c.sliding_window = 16;
    decoder<families::llama> model(c, 9);
    hf_folder folder = read_hf_folder(qwen2_fixture);
    folder.tokenizer->pre.pattern = split_pattern::gpt2;
    const gg::reader r = export_and_read(model, folder, gguf_type::f16, s.dir / "m.gguf");
    BOOST_TEST(r.at("tokenizer.ggml.pre").as_string() == "gpt-2");
    BOOST_TEST(r.at("general.architecture").as_string() == "llama");
    BOOST_TEST(r.at("llama.context_length").as_uint() == 16u); // full attention equals the window up to 16
    folder.dir = qwen2_fixture.string() + "/"; // no name given: the folder's, with or without a trailing slash
    write_gguf(model, folder, {}, s.dir / "named.gguf");
    BOOST_TEST(gg::reader(s.dir / "named.gguf").at("general.name").as_string() == "qwen2_f16");
    BOOST_TEST(gg::reader(s.dir / "named.gguf").at("general.file_type").as_uint() == 1u); // f16 by default
}

BOOST_AUTO_TEST_CASE(llama3_rope_factors) {
    scratch s("rope");
    model_config c = test::llama_gqa::value;
    c.vocab_size = 320;
    c.rope_theta = 500000;
    c.rope_scaling = {.factor = 8, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position = 256};
    decoder<families::llama> model(c, 3);
    const hf_folder folder = read_hf_folder(qwen2_fixture);
    const gg::reader r = export_and_read(model, folder, gguf_type::f32, s.dir / "m.gguf");
    const std::vector<float> f = r.read_f32("rope_freqs.weight");
    BOOST_TEST_REQUIRE(f.size() == 4u);       // head_dim 8 / 2
    BOOST_TEST(f[0] == 1.0f);                 // wavelength 2 pi < 256 / 4: unscaled
    BOOST_TEST((f[1] > 1.0f && f[1] < 8.0f)); // 2 pi * 500000^(2/8) = 167, between 64 and 256: smoothed
    BOOST_TEST(f[3] == 8.0f);                 // 2 pi * 500000^(6/8) > 256: scaled by the factor
    check_tensors(r, model, gguf_type::f32, "llama");
    // Read back: the scaling is recognised from the factors, and the model gives the same logits.
    BOOST_TEST((gguf_model_config(r).rope_scaling == c.rope_scaling));
    decoder<families::llama> back(gguf_model_config(r));
    load_gguf_weights(back, r);
    const std::vector<token_t> prompt = {5, 17, 3, 200, 41, 9, 77, 12};
    const std::vector<float> got = last_logits(back, prompt), want = last_logits(model, prompt);
    for (std::size_t i = 0; i < want.size(); ++i) // the file keeps norm_eps in f32: 1e-5 comes back 1e-5 (1 + 2.5e-8)
        BOOST_TEST(got[i] == want[i], boost::test_tools::tolerance(1e-5f));
    // Factors that are no Llama 3 scaling are refused, naming the tensor.
    model_config other = c;
    other.rope_scaling.high_freq_factor = 3;
    decoder<families::llama> odd(other, 3);
    const gg::reader odd_file = export_and_read(odd, folder, gguf_type::f32, s.dir / "odd.gguf");
    BOOST_TEST(tl_test::error_of([&] {
                   gguf_model_config(odd_file);
               }).find("rope_freqs holds factors that are not Llama 3's rope scaling") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(read_back_into_a_decoder) {
    scratch s("readback");
    {
        const hf_folder folder = read_hf_folder(qwen2_fixture);
        decoder<families::qwen2> model(read_hf_folder_config(qwen2_fixture));
        load_pretrained(model, qwen2_fixture);
        round_trip<families::qwen2>(model, folder, s.dir);
    }
    make_llama_folder(s.dir / "llama");
    make_mixtral_folder(s.dir / "mixtral");
    {
        decoder<families::llama> model(read_hf_folder_config(s.dir / "llama"));
        load_pretrained(model, s.dir / "llama");
        round_trip<families::llama>(model, read_hf_folder(s.dir / "llama"), s.dir);
    }
    {
        decoder<families::mixtral> model(read_hf_folder_config(s.dir / "mixtral"));
        load_pretrained(model, s.dir / "mixtral");
        round_trip<families::mixtral>(model, read_hf_folder(s.dir / "mixtral"), s.dir);
    }
}

BOOST_AUTO_TEST_CASE(lora_adapter_merged_first) {
    scratch s("lora");
    const hf_folder folder = read_hf_folder(qwen2_fixture);
    model_config c = test::llama_gqa::value;
    c.vocab_size = 320;
    decoder<families::llama, default_backend, lora_r4> model(c, 4);
    std::mt19937 rng(2);
    std::normal_distribution<float> n(0.0f, 0.2f);
    for (const parameter_entry& e : model.parameter_entries())
        if (e.kind == param_kind::adapter)
            for (float& x : e.value)
                x = n(rng);
    const std::string unmerged = tl_test::error_of([&] { write_gguf(model, folder, {}, s.dir / "m.gguf"); });
    BOOST_TEST(unmerged.find("LoRA adapter is not merged") != std::string::npos, unmerged);
    const parameter_entry* q = nullptr;
    for (const parameter_entry& e : model.parameter_entries())
        if (e.name == "model.layers.0.self_attn.q_proj.weight") q = &e;
    BOOST_TEST_REQUIRE(q != nullptr);
    const float before = q->value[0];
    model.merge();
    BOOST_TEST(q->value[0] != before); // merging changed the base weights
    const gg::reader r = export_and_read(model, folder, gguf_type::f32, s.dir / "m.gguf");
    check_tensors(r, model, gguf_type::f32, "llama"); // the merged weights, no adapter tensors
    BOOST_TEST(r.tensors().size() == 3 + 9 * std::size_t(c.n_layers));
}

BOOST_AUTO_TEST_CASE(errors_name_the_problem) {
    scratch s("errors");
    using tl_test::error_of;
    BOOST_TEST(error_of([] { parse_gguf_type("q5_k"); }).find("unknown type \"q5_k\" (f32, f16, q8_0 or q4_0)") !=
               std::string::npos);
    const hf_folder folder = read_hf_folder(qwen2_fixture);
    decoder<families::qwen2> model(read_hf_folder_config(qwen2_fixture));
    const std::string unwritable =
        error_of([&] { write_gguf(model, folder, {}, s.dir / "no" / "such" / "dir" / "m.gguf"); });
    BOOST_TEST(unwritable.find("cannot create") != std::string::npos, unwritable);
    BOOST_TEST(!fs::exists(s.dir / "no"));

    decoder<families::llama> ministral(test::ministral_layers::value);
    const std::string arch = error_of([&] { write_gguf(ministral, folder, {}, s.dir / "m.gguf"); });
    BOOST_TEST(arch.find("unsupported architecture") != std::string::npos, arch);
    BOOST_TEST(arch.find("Ministral") != std::string::npos, arch);
    BOOST_TEST(!fs::exists(s.dir / "m.gguf"));

    hf_folder no_tok = folder;
    no_tok.tokenizer.reset();
    BOOST_TEST(error_of([&] { write_gguf(model, no_tok, {}, s.dir / "m.gguf"); }).find("has no tokenizer.json") !=
               std::string::npos);
    hf_folder no_split = folder;
    no_split.tokenizer->pre.pattern = split_pattern::none;
    BOOST_TEST(error_of([&] {
                   write_gguf(model, no_split, {}, s.dir / "m.gguf");
               }).find("without a split pattern has no llama.cpp pre-tokenizer") != std::string::npos);
    model_config small = model.config();
    small.vocab_size = 100;
    decoder<families::qwen2> small_model(small);
    BOOST_TEST(error_of([&] {
                   write_gguf(small_model, folder, {}, s.dir / "m.gguf");
               }).find("has 320 tokens, the model only 100 embedding rows") != std::string::npos);

    // Damaged files: the reader names the problem.
    write_gguf(model, folder, {.type = gguf_type::f32}, s.dir / "ok.gguf");
    std::string bytes;
    {
        std::ifstream in(s.dir / "ok.gguf", std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    write_file(s.dir / "bad_magic.gguf", "GGUX" + bytes.substr(4));
    write_file(s.dir / "truncated.gguf", bytes.substr(0, bytes.size() - 100));
    write_file(s.dir / "cut_header.gguf", bytes.substr(0, 200));
    std::string v9 = bytes;
    v9[4] = 9;
    write_file(s.dir / "v9.gguf", v9);
    BOOST_TEST(error_of([&] { gg::reader r(s.dir / "bad_magic.gguf"); }).find("does not start with GGUF") !=
               std::string::npos);
    BOOST_TEST(error_of([&] { gg::reader r(s.dir / "truncated.gguf"); }).find("lies outside the file") !=
               std::string::npos);
    BOOST_TEST(error_of([&] { gg::reader r(s.dir / "cut_header.gguf"); }).find("past the end of the file") !=
               std::string::npos);
    BOOST_TEST(error_of([&] { gg::reader r(s.dir / "v9.gguf"); }).find("has version 9") != std::string::npos);
    BOOST_TEST(error_of([&] { gg::reader r(s.dir / "missing.gguf"); }).find("cannot open") != std::string::npos);
    // A tensor whose dimensions (each plausible) multiply to more elements than the file holds bytes.
    std::string huge("GGUF", 4);
    auto put = [&](std::uint64_t v, int n) { huge.append(reinterpret_cast<const char*>(&v), std::size_t(n)); };
    put(3, 4), put(1, 8), put(0, 8);   // version, one tensor, no metadata
    put(1, 8), huge += "t", put(4, 4); // name "t", four dimensions
    for (int d = 0; d < 4; ++d)
        put(300, 8);
    put(0, 4), put(0, 8); // F32 at offset 0
    huge.resize(512, '\0');
    write_file(s.dir / "huge.gguf", huge);
    const std::string overflow = error_of([&] { gg::reader r(s.dir / "huge.gguf"); });
    BOOST_TEST(overflow.find("has more elements than the file could hold") != std::string::npos, overflow);
    // A type tinylm does not read, and rows that are not whole blocks of theirs: one 1-D tensor each.
    auto one_tensor = [&](const std::string& name, std::uint32_t type, std::uint64_t n) {
        std::string f("GGUF", 4);
        auto add = [&](std::uint64_t v, int bytes) { f.append(reinterpret_cast<const char*>(&v), std::size_t(bytes)); };
        add(3, 4), add(1, 8), add(0, 8), add(1, 8), f += "t", add(1, 4), add(n, 8), add(type, 4), add(0, 8);
        f.resize(4096, '\0');
        write_file(s.dir / name, f);
        return s.dir / name;
    };
    const std::string iq4_xs = error_of([&] { gg::reader r(one_tensor("iq4_xs.gguf", 23, 256)); });
    BOOST_TEST(iq4_xs.find("tensor t has ggml type IQ4_XS (23), which tinylm does not read (it reads F32, F16, Q4_0") !=
                   std::string::npos,
               iq4_xs);
    const std::string partial = error_of([&] { gg::reader r(one_tensor("partial.gguf", 12, 32)); });
    BOOST_TEST(partial.find("tensor t rows are not whole blocks of 256 (Q4_K)") != std::string::npos, partial);

    // Metadata of the wrong type, or describing no model: the message names the file and the key (fuzz_gguf found
    // the architecture check without the file). Files of metadata only: GGUF v3, no tensors.
    struct kv {
        std::string key;
        std::uint32_t type; // 4: u32, 8: string
        std::string bytes;
    };
    auto metadata_file = [&](const std::string& name, const std::vector<kv>& kvs) {
        std::string f("GGUF", 4);
        auto add = [&](std::uint64_t v, int n) { f.append(reinterpret_cast<const char*>(&v), std::size_t(n)); };
        add(3, 4), add(0, 8), add(kvs.size(), 8);
        for (const kv& e : kvs) {
            add(e.key.size(), 8), f += e.key, add(e.type, 4);
            if (e.type == 8) add(e.bytes.size(), 8);
            f += e.bytes;
        }
        write_file(s.dir / name, f);
        return s.dir / name;
    };
    const std::string four("\x04\0\0\0", 4), zero("\0\0\0\0", 4);
    const fs::path numeric_arch = metadata_file("numeric_arch.gguf", {{"general.architecture", 4, four}});
    std::string m = error_of([&] { gguf_model_config(gg::reader(numeric_arch)); });
    BOOST_TEST(m.find(numeric_arch.string() + ": general.architecture has value type 4, not a string") !=
                   std::string::npos,
               m);
    const fs::path gpt2 = metadata_file("gpt2.gguf", {{"general.architecture", 8, "gpt2"}});
    m = error_of([&] { gguf_model_config(gg::reader(gpt2)); });
    BOOST_TEST(m.find(gpt2.string() + ": architecture \"gpt2\" is not read") != std::string::npos, m);
    std::vector<kv> llama = {{"general.architecture", 8, "llama"},    {"llama.vocab_size", 4, four},
                             {"llama.embedding_length", 4, four},     {"llama.block_count", 4, four},
                             {"llama.attention.head_count", 4, zero}, {"llama.feed_forward_length", 4, four},
                             {"llama.context_length", 4, four}};
    llama.push_back({"llama.attention.layer_norm_rms_epsilon", 6, std::string("\0\0\x80\x3f", 4)}); // f32 1.0
    const fs::path no_heads = metadata_file("no_heads.gguf", llama);
    m = error_of([&] { gguf_model_config(gg::reader(no_heads)); });
    BOOST_TEST(m.find(no_heads.string() + " describes no valid model: model_config: n_heads and n_kv_heads must be "
                                          "positive") != std::string::npos,
               m);
}

// For the torch test gguf_python_reads_tinylm: with TINYLM_GGUF_EXPORT_DIR set, writes the Llama and Mixtral
// folders, every type of each model as <dir>/<model>-<type>.gguf, and <dir>/manifest.json.
BOOST_AUTO_TEST_CASE(export_for_python, *boost::unit_test::disabled()) {
    const char* out_env = std::getenv("TINYLM_GGUF_EXPORT_DIR");
    BOOST_TEST_REQUIRE(out_env != nullptr, "set TINYLM_GGUF_EXPORT_DIR");
    const fs::path out = out_env;
    fs::create_directories(out);
    make_llama_folder(out / "llama");
    make_mixtral_folder(out / "mixtral");
    make_qwen3_folder(out / "qwen3");
    nlohmann::json manifest = nlohmann::json::array();
    for (const auto& named :
         {std::pair{std::string("qwen2"), qwen2_fixture}, std::pair{std::string("llama"), out / "llama"},
          std::pair{std::string("mixtral"), out / "mixtral"}, std::pair{std::string("qwen3"), out / "qwen3"}}) {
        const std::string& name = named.first;
        const fs::path& dir = named.second;
        const hf_folder folder = read_hf_folder(dir);
        with_pretrained(dir, [&](auto& model) {
            for (const gguf_type t : all_types) {
                const fs::path file = out / (name + "-" + to_string(t) + ".gguf");
                write_gguf(model, folder, {.type = t, .name = name}, file);
                manifest.push_back(
                    {{"model", name}, {"folder", dir.string()}, {"type", to_string(t)}, {"file", file.string()}});
            }
            return 0;
        });
    }
    write_file(out / "manifest.json", manifest.dump(2));
}

// For the slow test gguf_llama_cpp_matches_tinylm: with TINYLM_GGUF_LLAMA_DIR set, writes the Llama folder (trained
// on the 200 lines) and the Mixtral folder,
// for them and the Qwen2 fixture (also with its tokenizer switched to the GPT-2 split), f32 and q8_0 files, tinylm's
// ids of 200 lines, and the greedy 32-token continuations of 10 prompts and the logits after each prompt, in
// <dir>/expected.json.
BOOST_AUTO_TEST_CASE(export_for_llama_cpp, *boost::unit_test::disabled()) {
    const char* out_env = std::getenv("TINYLM_GGUF_LLAMA_DIR");
    BOOST_TEST_REQUIRE(out_env != nullptr, "set TINYLM_GGUF_LLAMA_DIR");
    const fs::path out = out_env;
    fs::create_directories(out);
    const std::vector<std::string> lines = test_lines();
    BOOST_TEST_REQUIRE(lines.size() == 200u);
    make_llama_folder(out / "llama", lines);
    make_mixtral_folder(out / "mixtral");
    make_qwen3_folder(out / "qwen3");
    nlohmann::json expected = nlohmann::json::object();
    for (const auto& named :
         {std::pair{std::string("qwen2"), qwen2_fixture}, std::pair{std::string("llama"), out / "llama"},
          std::pair{std::string("mixtral"), out / "mixtral"}, std::pair{std::string("qwen3"), out / "qwen3"},
          std::pair{std::string("qwen2-gpt2-split"), qwen2_fixture},
          std::pair{std::string("qwen2-llama3-split"), qwen2_fixture}}) {
        const std::string& name = named.first;
        const fs::path& dir = named.second;
        hf_folder folder = read_hf_folder(dir);
        if (name.ends_with("gpt2-split")) folder.tokenizer->pre.pattern = split_pattern::gpt2;     // "gpt-2"
        if (name.ends_with("llama3-split")) folder.tokenizer->pre.pattern = split_pattern::llama3; // "llama-bpe"
        with_pretrained(dir, [&](auto& model) {
            nlohmann::json e;
            for (const gguf_type t : {gguf_type::f32, gguf_type::q8_0}) {
                const fs::path file = out / (name + "-" + to_string(t) + ".gguf");
                write_gguf(model, folder, {.type = t, .name = name}, file);
                e["files"][to_string(t)] = file.string();
            }
            e["lines"] = lines;
            for (const std::string& line : lines) {
                e["ids"].push_back(folder.tokenizer->encode(line));
                // Differences llama.cpp cannot avoid: it does not apply NFC, and it reads token texts as C strings
                // (a token holding a NUL byte becomes unreachable).
                e["not_nfc"].push_back(folder.tokenizer->norm.nfc && unicode::nfc(line) != line);
                e["has_nul"].push_back(line.find('\0') != std::string::npos);
                e["control_text"].push_back(has_control_looking_text(*folder.tokenizer, line));
            }
            for (std::size_t p = 0; p < 10; ++p) {
                std::vector<token_t> prompt = folder.tokenizer->encode(lines[p * 17], {.add_special_tokens = true});
                if (prompt.size() > 24) prompt.resize(24);
                generation_options greedy;
                greedy.max_new_tokens = 32;
                greedy.sampling.temperature = 0;
                const std::vector<token_t> cont = generate(model, prompt, greedy);
                e["prompts"].push_back(prompt);
                e["continuations"].push_back(cont);
                e["last_logits"].push_back(last_logits(model, prompt));
            }
            e["trained"] = name == "llama";
            expected[name] = e;
            return 0;
        });
    }
    // Real tokenizers of the shared data (Llama 2: 32,000 SentencePiece-style tokens with byte fallback; Qwen3:
    // 151,669 byte-level tokens with NFC), when present: tokenization only, on a tiny model of their vocabulary.
    for (const std::string real : {"llama2", "qwen3"}) {
        const fs::path src = tl_test::data_path(fs::path("tokenizers") / real / "tokenizer.json");
        if (src.empty()) continue;
        const fs::path file = out / (real + "-tokenizer-f32.gguf");
        const tokenizer tok = real_tokenizer_gguf(real, src, out / real, file);
        nlohmann::json e;
        e["files"]["f32"] = file.string();
        e["tokenizer_only"] = true;
        e["lines"] = lines;
        for (const std::string& line : lines) {
            e["ids"].push_back(tok.encode(line));
            e["not_nfc"].push_back(tok.norm.nfc && unicode::nfc(line) != line);
            e["has_nul"].push_back(line.find('\0') != std::string::npos);
            e["control_text"].push_back(has_control_looking_text(tok, line));
        }
        expected[real + "-tokenizer"] = e;
    }
    write_file(out / "expected.json", expected.dump());
}

// For ctest -L slow gguf_llama_quantize_read_by_tinylm (tests/reference/gguf/check_llama_quantize.py, llama.cpp's
// llama_model_quantize): in $TINYLM_GGUF_QUANTIZE_DIR, f32 files of a Llama (byte-fallback tokenizer), a Qwen2
// (byte-level, tied, biases) and a Qwen3 (QK-norm, heads of 128) of width 256 with random weights (rows of whole
// 256-value blocks: llama-quantize uses its K-quants) and of the Qwen2 fixture (width 64: its fallback types), and 4
// prompts each in prompts.json.
BOOST_AUTO_TEST_CASE(export_for_llama_quantize, *boost::unit_test::disabled()) {
    const char* out_env = std::getenv("TINYLM_GGUF_QUANTIZE_DIR");
    BOOST_TEST_REQUIRE(out_env != nullptr, "set TINYLM_GGUF_QUANTIZE_DIR");
    const fs::path out = out_env;
    fs::create_directories(out);
    const std::vector<std::string> lines = {"The quick brown fox", "Жили-были старик со старухой", "Hello, world! 123",
                                            "Сила войска зависит от его духа"};
    nlohmann::json prompts = nlohmann::json::object();
    auto add = [&](const std::string& name, const auto& model, const fs::path& folder) {
        const hf_folder f = read_hf_folder(folder);
        write_gguf(model, f, {.type = gguf_type::f32, .name = name}, out / (name + "-f32.gguf"));
        for (const std::string& line : lines)
            prompts[name].push_back(f.tokenizer->encode(line, {.add_special_tokens = true}));
    };
    model_config wide = llama_config();
    wide.d_model = 256, wide.d_ff = 512, wide.max_seq_len = 128;
    decoder<families::llama> llama(wide, 7);
    randomise(llama, 7, 0.0625f); // 1 / sqrt(width): products keep the scale, quantisation errors do not grow
    make_folder(llama, out / "llama_folder", tokenizer_refs / "trained_byte_fallback.json",
                {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}}, special_ids(1, 2));
    add("llama", llama, out / "llama_folder");
    model_config q = test::qwen2_tied::value;
    q.vocab_size = 512, q.d_model = 256, q.d_ff = 512, q.max_seq_len = 128;
    decoder<families::qwen2> qwen2(q, 8);
    randomise(qwen2, 8, 0.0625f);
    make_folder(qwen2, out / "qwen2_folder", tokenizer_refs / "trained_byte_level.json",
                {{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}}, special_ids(-1, 2));
    add("qwen2", qwen2, out / "qwen2_folder");
    model_config q3 = test::qwen3_qknorm::value; // heads of 128: a query width (512) twice d_model, as Qwen3-0.6B's
    q3.vocab_size = 512, q3.d_model = 256, q3.d_head = 128, q3.d_ff = 512, q3.max_seq_len = 128;
    decoder<families::llama> qwen3(q3, 9);
    randomise(qwen3, 9, 0.0625f);
    make_folder(qwen3, out / "qwen3_folder", tokenizer_refs / "trained_byte_level.json",
                {{"eos_token", "<|im_end|>"}, {"pad_token", "<|endoftext|>"}}, special_ids(-1, 2));
    add("qwen3", qwen3, out / "qwen3_folder");
    decoder<families::qwen2> fixture(read_hf_folder_config(qwen2_fixture));
    load_pretrained(fixture, qwen2_fixture);
    add("qwen2-fixture", fixture, qwen2_fixture);
    write_file(out / "prompts.json", prompts.dump());
}

// After check_llama_quantize.py: every file llama-quantize made (results.json) read by tinylm. Each tensor's values
// equal the gguf package's dequantisation (the .expected.gguf beside it) bit for bit; the model loads
// (gguf_model_config, load_gguf_weights) and its logits after each prompt are llama.cpp's on the same file within
// quantized_logit_bound of the largest. llama.cpp multiplies quantised weights with activations quantised to 8 bits,
// tinylm with f32 activations, so the two differ by that rounding: measured 0.021-0.044 on these models, where
// quantising itself moves llama.cpp's logits by 0.065-1.14 (both printed; docs/gguf.md, "Reading GGUF files").
BOOST_AUTO_TEST_CASE(read_llama_quantize_files, *boost::unit_test::disabled()) {
    constexpr double quantized_logit_bound = 0.1;
    const char* dir_env = std::getenv("TINYLM_GGUF_QUANTIZE_DIR");
    BOOST_TEST_REQUIRE(dir_env != nullptr, "set TINYLM_GGUF_QUANTIZE_DIR");
    std::ifstream in(fs::path(dir_env) / "results.json");
    BOOST_TEST_REQUIRE(bool(in), "no results.json: run check_llama_quantize.py first");
    const nlohmann::json results = nlohmann::json::parse(in);
    for (const auto& item : results.items()) { // (no structured binding: the lambdas below read it)
        const std::string file = item.key();
        const nlohmann::json& e = item.value();
        const gg::reader r(file), expected(e["expected"].get<std::string>());
        std::map<std::string, int> types;
        for (const gg::tensor_info& t : r.tensors()) {
            ++types[gg::type_name(t.type)];
            const std::vector<float> got = r.read_f32(t.name), want = expected.read_f32(t.name);
            BOOST_TEST_REQUIRE(got.size() == want.size(), file << ": " << t.name);
            BOOST_TEST(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0,
                       file << ": " << t.name << " (" << gg::type_name(t.type) << ") differs from the gguf package's");
        }
        std::string listed;
        for (const auto& [name, n] : types)
            listed += (listed.empty() ? "" : ", ") + std::to_string(n) + " " + name;
        // max |a - b| / max |b| over the prompts' logits
        auto distance = [](const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
            double worst = 0;
            for (std::size_t p = 0; p < a.size(); ++p) {
                double diff = 0, top = 0;
                for (std::size_t i = 0; i < a[p].size(); ++i)
                    diff = std::max(diff, std::fabs(double(a[p][i]) - b[p][i])),
                    top = std::max(top, std::fabs(double(b[p][i])));
                worst = std::max(worst, diff / top);
            }
            return worst;
        };
        const auto llama_cpp = e["logits"].get<std::vector<std::vector<float>>>();
        const auto llama_cpp_f32 = e["f32_logits"].get<std::vector<std::vector<float>>>();
        auto logits_of = [&](auto& model) {
            load_gguf_weights(model, r);
            std::vector<std::vector<float>> out;
            for (const auto& prompt : e["prompts"])
                out.push_back(last_logits(model, prompt.get<std::vector<token_t>>()));
            return out;
        };
        const model_config c = gguf_model_config(r);
        std::vector<std::vector<float>> tinylm;
        if (!c.qkv_bias) { // llama, qwen3
            decoder<families::llama> model(c);
            tinylm = logits_of(model);
        } else {
            decoder<families::qwen2> model(c);
            tinylm = logits_of(model);
        }
        const double apart = distance(tinylm, llama_cpp), moved = distance(llama_cpp, llama_cpp_f32);
        BOOST_TEST_MESSAGE(fs::path(file).filename().string()
                           << ": " << listed << "; logits: tinylm against llama.cpp " << apart
                           << ", llama.cpp against its f32 logits " << moved << " (max |a - b| / max |b|)");
        BOOST_TEST(apart <= quantized_logit_bound, file << ": " << apart);
    }
}

BOOST_AUTO_TEST_SUITE_END()
