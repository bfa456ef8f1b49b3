// tinylm/io/gguf.hpp: a tinylm decoder and its Hugging Face folder as one GGUF file that llama.cpp (and the tools
// built on it: llama-cli, llama-server, ollama, LM Studio, llama-cpp-python) runs.
//
//   tl::hf_folder folder = tl::read_hf_folder(dir);             // tokenizer, special tokens, chat template
//   tl::with_pretrained(dir, [&](auto& model) {                  // io/hf_any.hpp: llama, qwen2, qwen3, mixtral
//       tl::write_gguf(model, folder, {.type = tl::gguf_type::q8_0}, "model-q8_0.gguf");
//       return 0;
//   });
//
//   write_gguf(model, folder, options, out)   GGUF v3, general.alignment 32, written to "<out>.tmp" and renamed.
//   parse_gguf_type("q8_0")                   f32 | f16 | q8_0 | q4_0, else tl::error listing them.
//   gguf_architecture(config)                 "llama", "qwen2" or "qwen3", else tl::error naming what does not map.
//   gguf_model_config(reader)                 reading back: the model_config of a llama / qwen2 / qwen3 file, and
//   load_gguf_weights(model, reader)          its tensors into a decoder of that config (every type of
//                                             io/gguf_types.hpp: the K-quants of llama-quantize too,
//                                             dequantised; tl::gguf::reader is io/gguf_file.hpp). No tokenizer.
//
// What the file holds (the layout of llama.cpp's own convert_hf_to_gguf.py, checked against llama.cpp's
// loader, src/llama-model.cpp and src/llama-vocab.cpp):
//  - Architecture. Llama and Mistral -> `llama`; Mixtral -> `llama` with experts (expert_count,
//    expert_used_count, blk.N.ffn_{gate,up,down}_exps stacked [.., .., n_experts]; router blk.N.ffn_gate_inp);
//    Qwen2 -> `qwen2` (q/k/v biases; tied embeddings: no output.weight, llama.cpp reuses token_embd).
//    Qwen3 -> `qwen3` (QK-norm: blk.N.attn_q_norm / attn_k_norm of the head width, F32).
//    Ministral's per-layer sliding window and q/k/v biases with a window have no llama.cpp architecture here:
//    tl::error. Mistral's window: llama.cpp's `llama` attends to the whole context, which equals the window
//    as long as the context is no longer than it, so context_length is written as min(max_seq_len, window).
//    Llama 3 rope_scaling: the per-frequency factors as rope_freqs.weight, as the converter computes them.
//  - The q/k permutation of `llama`: its RoPE rotates adjacent pairs (x0, x1), (x2, x3)...; Hugging Face
//    rotates halves (x_i, x_{i+D/2}). Rows of q_proj (per query head) and k_proj (per KV head) are reordered
//    so that row 2i + t of a head is HF row t * D/2 + i. `qwen2`/`qwen3` use NEOX RoPE (halves): no permutation.
//  - Dimensions fastest first: an HF (out, in) matrix is {in, out}; bytes are the same row-major data.
//  - Types: 1-D tensors, norms and the MoE router stay F32 (as the converter does); every other matrix takes
//    the requested type; a matrix whose rows are not whole 32-value blocks falls back to F16 for q8_0 / q4_0.
//    Blocks are ggml's reference quantisers' (io/gguf_quants.hpp), bit for bit.
//  - Tokenizer. Byte-level BPE -> tokenizer.ggml.model "gpt2": tokens in GPT-2's byte-to-character spelling,
//    merges "a b", tokenizer.ggml.pre "gpt-2", "qwen2" or "llama-bpe" (llama.cpp's split regexes for these names
//    equal tinylm's split_pattern::gpt2, ::qwen2 and ::llama3). Byte fallback with metaspace (Llama 2 style) ->
//    "llama": the SentencePiece tokenizer of llama.cpp, which merges the adjacent pair whose result has the highest
//    score; a token's score is minus the rank of the merge that makes it, so it merges in the order of the BPE merges.
//    Token types: normal, control (special added tokens), user-defined (other added tokens), byte
//    (<0xNN>), unknown (<unk>), unused (padding rows of an embedding larger than the vocabulary, named
//    [PAD<id>]). bos/eos/pad/unk ids, add_bos_token/add_eos_token from the post-processor, the chat template.
//    tinylm.tokenizer.nfc: whether the tokenizer applies NFC (llama.cpp ignores the key and applies none; tinylm
//    reading the file back applies it: io/gguf_folder.hpp).
//    Not representable (tl::error): byte-level BPE with no split pattern, normalizers other than NFC (bytes)
//    or the metaspace Prepend/Replace (llama). NFC is not applied by llama.cpp: same ids for NFC text.
#pragma once

#include <tinylm/io/gguf_file.hpp>
#include <tinylm/io/hf_config.hpp>
#include <tinylm/io/hf_folder.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numbers>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

enum class gguf_type { f32, f16, q8_0, q4_0 };

struct gguf_options {
    gguf_type type = gguf_type::f16;
    std::string name{}; // general.name; empty: the folder's name
};

inline gguf_type parse_gguf_type(std::string_view s) {
    if (s == "f32") return gguf_type::f32;
    if (s == "f16") return gguf_type::f16;
    if (s == "q8_0") return gguf_type::q8_0;
    if (s == "q4_0") return gguf_type::q4_0;
    fail("gguf: unknown type \"" + std::string(s) + "\" (f32, f16, q8_0 or q4_0)");
}
inline std::string to_string(gguf_type t) {
    switch (t) {
    case gguf_type::f32:
        return "f32";
    case gguf_type::f16:
        return "f16";
    case gguf_type::q8_0:
        return "q8_0";
    case gguf_type::q4_0:
        return "q4_0";
    }
    return "?";
}

// llama.cpp's architecture for a decoder configuration.
inline std::string gguf_architecture(const model_config& c) {
    std::string hf;
    try {
        hf = hf_architecture(c);
    } catch (const error& e) {
        fail(std::string("gguf: unsupported architecture: ") + e.what());
    }
    if (hf == "Qwen2ForCausalLM") {
        check(c.rope_scaling.factor <= 0, "gguf: unsupported architecture: Qwen2 with rope_scaling");
        check(c.q_width() == c.d_model, [&] {
            return "gguf: unsupported architecture: llama.cpp's qwen2 needs n_heads * head_dim == d_model (" +
                   std::to_string(c.q_width()) + " vs " + std::to_string(c.d_model) + ")";
        });
        return "qwen2";
    }
    if (hf == "Qwen3ForCausalLM") {
        check(c.rope_scaling.factor <= 0, "gguf: unsupported architecture: Qwen3 with rope_scaling");
        return "qwen3"; // q_width may differ from d_model (Qwen3-0.6B: 16 heads of 128 on 1024)
    }
    check(hf != "MinistralForCausalLM",
          "gguf: unsupported architecture: MinistralForCausalLM (a sliding window in some layers only) has no "
          "llama.cpp architecture here");
    return "llama"; // Llama, Mistral, Mixtral
}

namespace detail::gguf_export {

namespace gg = tl::gguf;

inline gg::ggml_type element_type(gguf_type t) {
    switch (t) {
    case gguf_type::f32:
        return gg::ggml_type::f32;
    case gguf_type::f16:
        return gg::ggml_type::f16;
    case gguf_type::q8_0:
        return gg::ggml_type::q8_0;
    case gguf_type::q4_0:
        return gg::ggml_type::q4_0;
    }
    return gg::ggml_type::f32;
}
// llama.cpp's general.file_type (llama_ftype): ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7.
inline std::uint32_t file_type(gguf_type t) {
    switch (t) {
    case gguf_type::f32:
        return 0;
    case gguf_type::f16:
        return 1;
    case gguf_type::q4_0:
        return 2;
    case gguf_type::q8_0:
        return 7;
    }
    return 0;
}

// The type a tensor is stored in: what the converter keeps in F32 stays F32; rows that are not whole blocks
// fall back to F16.
inline gg::ggml_type storage_type(const std::string& name, const std::vector<std::uint64_t>& dims, gguf_type want) {
    if (dims.size() == 1 || name.ends_with("_norm.weight") || name.find("ffn_gate_inp") != std::string::npos)
        return gg::ggml_type::f32;
    const gg::ggml_type t = element_type(want);
    if ((t == gg::ggml_type::q8_0 || t == gg::ggml_type::q4_0) && dims[0] % gg::quant_block != 0)
        return gg::ggml_type::f16;
    return t;
}

// Hugging Face name -> GGUF name for the tensors that map one to one ("" for the others).
inline std::string tensor_name(const std::string& hf) {
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    const std::string_view prefix = "model.layers.";
    if (!hf.starts_with(prefix)) return {};
    const std::size_t dot = hf.find('.', prefix.size());
    if (dot == std::string::npos) return {};
    const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
    const std::string rest = hf.substr(dot + 1);
    static const std::map<std::string, std::string> names{
        {"input_layernorm.weight", "attn_norm.weight"},    {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},      {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.weight", "attn_k.weight"},      {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.weight", "attn_v.weight"},      {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},           {"mlp.down_proj.weight", "ffn_down.weight"},
        {"mlp.gate.weight", "ffn_gate_inp.weight"},        {"self_attn.q_norm.weight", "attn_q_norm.weight"},
        {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    };
    const auto it = names.find(rest);
    return it == names.end() ? std::string() : "blk." + layer + "." + it->second;
}

// Copies `rows` rows of width `cols` from src to dst, permuting the rows of each head of width d for llama's
// adjacent-pair RoPE: dst row h*d + 2i + t = src row h*d + t*d/2 + i.
inline void permute_rope_rows(const float* src, float* dst, std::int64_t rows, std::int64_t cols, std::int64_t d) {
    const std::int64_t half = d / 2;
    for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t h = r / d, j = r % d, i = j / 2, t = j % 2;
        const float* from = src + (h * d + t * half + i) * cols;
        std::copy(from, from + cols, dst + r * cols);
    }
}

// Llama 3 RoPE factors per frequency (convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors).
inline std::vector<float> llama3_rope_factors(const model_config& c) {
    const int dim = c.head_dim();
    const rope_scaling_config& r = c.rope_scaling;
    const double low_wavelen = r.original_max_position / r.low_freq_factor;
    const double high_wavelen = r.original_max_position / r.high_freq_factor;
    std::vector<float> f;
    for (int i = 0; i < dim; i += 2) {
        const float freq = 1.0f / std::pow(float(c.rope_theta), float(i) / float(dim));
        const double wavelen = 2 * std::numbers::pi / double(freq);
        if (wavelen < high_wavelen)
            f.push_back(1.0f);
        else if (wavelen > low_wavelen)
            f.push_back(float(r.factor));
        else {
            const double smooth =
                (r.original_max_position / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
            f.push_back(float(1 / ((1 - smooth) / r.factor + smooth)));
        }
    }
    return f;
}

// The Llama 3 rope_scaling whose factors (llama3_rope_factors) a file's rope_freqs holds: factor the largest, and the
// low and high frequency factors (1 and 4) and original context (a power of two, 16 to 1,048,576) of every
// Llama 3.x tried in turn; the one that gives every factor within 1e-6 (relative) is it, else tl::error.
inline rope_scaling_config llama3_scaling_of(model_config c, const std::vector<float>& f, const std::string& where) {
    check(f.size() == std::size_t(c.head_dim() / 2), [&] {
        return where + ": rope_freqs has " + std::to_string(f.size()) +
               " factors, not head_dim / 2 = " + std::to_string(c.head_dim() / 2);
    });
    const float largest = *std::max_element(f.begin(), f.end());
    for (int original = 16; original <= (1 << 20); original *= 2) {
        c.rope_scaling = {
            .factor = largest, .low_freq_factor = 1, .high_freq_factor = 4, .original_max_position = original};
        const std::vector<float> g = llama3_rope_factors(c);
        bool same = true;
        for (std::size_t i = 0; i < f.size() && same; ++i)
            same = std::fabs(double(f[i]) - double(g[i])) <= 1e-6 * std::fabs(double(g[i]));
        if (same) return c.rope_scaling;
    }
    fail(where + ": rope_freqs holds factors that are not Llama 3's rope scaling (factor " + std::to_string(largest) +
         ", low/high frequency factors 1/4, original context a power of two)");
}

inline std::vector<std::uint64_t> gguf_dims(const shape& s) {
    std::vector<std::uint64_t> d;
    for (int i = s.rank - 1; i >= 0; --i)
        d.push_back(static_cast<std::uint64_t>(s[i]));
    return d;
}

// Token spelling, type and score tables of tokenizer.ggml.* for `tok`, padded to `n_vocab` rows.
struct vocab_tables {
    std::string model, pre;
    std::vector<std::string> tokens, merges;
    std::vector<std::int64_t> types;
    std::vector<double> scores; // "llama" only
    bool add_space_prefix = false;
};

// llama.cpp's token types (llama_token_type).
enum token_type : std::int64_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

inline bool more_than_one_char(std::string_view s) {
    std::size_t i = 0;
    if (!s.empty()) unicode::next(s, i);
    return i < s.size();
}

inline vocab_tables vocab_of(const tokenizer& tok, std::int64_t n_vocab, const std::string& where) {
    vocab_tables v;
    const bpe_model& m = tok.model;
    auto refuse = [&](const std::string& why) { fail("gguf: tokenizer of " + where + ": " + why); };
    if (m.byte_level) {
        v.model = "gpt2";
        if (tok.pre.pattern == split_pattern::gpt2)
            v.pre = "gpt-2";
        else if (tok.pre.pattern == split_pattern::qwen2)
            v.pre = "qwen2";
        else if (tok.pre.pattern == split_pattern::llama3)
            v.pre = "llama-bpe";
        else
            refuse("byte-level BPE without a split pattern has no llama.cpp pre-tokenizer");
        if (!tok.norm.prepend.empty() || !tok.norm.replace.empty() || tok.pre.metaspace_replace)
            refuse("byte-level BPE with Prepend/Replace normalizers has no llama.cpp equivalent");
    } else {
        v.model = "llama";
        if (tok.pre.pattern != split_pattern::none) refuse("a splitting pattern without the byte-level model");
        for (const auto& [from, to] : tok.norm.replace)
            if (from != " " || to != metaspace) refuse("the normalizer replaces \"" + from + "\" by \"" + to + "\"");
        if (!tok.norm.prepend.empty() && tok.norm.prepend != metaspace)
            refuse("the normalizer prepends \"" + tok.norm.prepend + "\"");
        v.add_space_prefix = !tok.norm.prepend.empty() || tok.pre.metaspace_prepend;
    }
    const auto n_tok = static_cast<std::int64_t>(tok.vocab_size());
    check(n_tok <= n_vocab, [&] {
        return "gguf: the tokenizer of " + where + " has " + std::to_string(n_tok) + " tokens, the model only " +
               std::to_string(n_vocab) + " embedding rows";
    });
    const byte_level_map& bl = byte_level_map::get();
    // Score of a merged token: minus the rank of the first merge that makes it.
    std::vector<double> score(static_cast<std::size_t>(n_vocab), 0.0);
    std::vector<bool> made(static_cast<std::size_t>(n_vocab), false);
    for (std::size_t r = 0; r < m.merges.size(); ++r) {
        const auto [a, b] = m.merges[r];
        const std::string& ta = m.tokens[static_cast<std::size_t>(a)];
        const std::string& tb = m.tokens[static_cast<std::size_t>(b)];
        v.merges.push_back(m.byte_level ? bl.encode(ta) + " " + bl.encode(tb) : ta + " " + tb);
        const token_t id = m.find(ta + tb);
        if (id >= 0 && !made[static_cast<std::size_t>(id)]) {
            made[static_cast<std::size_t>(id)] = true;
            score[static_cast<std::size_t>(id)] = -double(r + 1);
        }
    }
    for (std::int64_t id = 0; id < n_vocab; ++id) {
        const auto i = static_cast<std::size_t>(id);
        if (const added_token* t = tok.added.find(token_t(id))) {
            v.tokens.push_back(t->content);
            v.types.push_back(id == m.unk ? unknown : t->special ? control : user_defined);
        } else if (i < m.tokens.size()) {
            const std::string& bytes = m.tokens[i];
            if (m.byte_level) {
                v.tokens.push_back(bl.encode(bytes));
                v.types.push_back(normal);
            } else {
                v.tokens.push_back(bytes);
                v.types.push_back(id == m.unk ? unknown : m.fallback_byte(token_t(id)) >= 0 ? byte : normal);
                // A token no merge makes and longer than one character: merge it after every real merge.
                if (!made[i] && v.types.back() == normal && more_than_one_char(bytes)) score[i] = -1e9;
            }
        } else {
            v.tokens.push_back("[PAD" + std::to_string(id) + "]");
            v.types.push_back(unused);
        }
    }
    if (v.model == "llama") v.scores = score;
    return v;
}

} // namespace detail::gguf_export

// Writes `model` (a decoder of the llama (qwen3 too), qwen2 or mixtral family; a LoRA adapter must be merged, else
// tl::error) with the tokenizer, special tokens and chat template of `folder` as a GGUF file at `out`. See the top of
// this file.
template <class Model>
void write_gguf(const Model& model, const hf_folder& folder, const gguf_options& options, const fs::path& out) {
    static_assert(!has_quantized_base<Model>, "write_gguf: a QLoRA model's base is NF4; merge into an f32 model");
    namespace ex = detail::gguf_export;
    namespace gg = tl::gguf;
    const model_config& c = model.config();
    const std::string arch = gguf_architecture(c);
    const std::string where = folder.dir.string();
    check(folder.tokenizer.has_value(),
          [&] { return "gguf: " + where + " has no tokenizer.json; llama.cpp needs the vocabulary in the file"; });
    const tokenizer& tok = *folder.tokenizer;
    bool adapter = false;
    for (const parameter_entry& e : model.parameter_entries())
        adapter = adapter || e.kind == param_kind::adapter;
    if constexpr (requires { model.merged(); })
        check(!adapter || model.merged(),
              "gguf: the model's LoRA adapter is not merged: merge() it first (the file holds the base weights only)");
    const ex::vocab_tables vocab = ex::vocab_of(tok, c.vocab_size, where);

    gg::writer w;
    const std::string a = arch + ".";
    w.add("general.architecture", gg::value::str(arch));
    w.add("general.type", gg::value::str("model"));
    const fs::path dir = folder.dir.filename().empty() ? folder.dir.parent_path() : folder.dir; // "dir/" too
    w.add("general.name", gg::value::str(!options.name.empty() ? options.name : dir.filename().string()));
    w.add("general.alignment", gg::value::u32(w.alignment()));
    w.add("general.file_type", gg::value::u32(ex::file_type(options.type)));
    w.add("general.quantization_version", gg::value::u32(2));
    const int context = c.sliding_window > 0 ? std::min(c.max_seq_len, c.sliding_window) : c.max_seq_len;
    w.add(a + "vocab_size", gg::value::u32(std::uint32_t(c.vocab_size)));
    w.add(a + "context_length", gg::value::u32(std::uint32_t(context)));
    w.add(a + "embedding_length", gg::value::u32(std::uint32_t(c.d_model)));
    w.add(a + "block_count", gg::value::u32(std::uint32_t(c.n_layers)));
    w.add(a + "feed_forward_length", gg::value::u32(std::uint32_t(c.d_ff)));
    w.add(a + "attention.head_count", gg::value::u32(std::uint32_t(c.n_heads)));
    w.add(a + "attention.head_count_kv", gg::value::u32(std::uint32_t(c.n_kv_heads)));
    w.add(a + "attention.key_length", gg::value::u32(std::uint32_t(c.head_dim())));
    w.add(a + "attention.value_length", gg::value::u32(std::uint32_t(c.head_dim())));
    w.add(a + "attention.layer_norm_rms_epsilon", gg::value::f32(c.norm_eps));
    w.add(a + "rope.dimension_count", gg::value::u32(std::uint32_t(c.head_dim())));
    w.add(a + "rope.freq_base", gg::value::f32(c.rope_theta));
    if (c.moe.n_experts > 0) {
        w.add(a + "expert_count", gg::value::u32(std::uint32_t(c.moe.n_experts)));
        w.add(a + "expert_used_count", gg::value::u32(std::uint32_t(c.moe.top_k)));
    }

    w.add("tokenizer.ggml.model", gg::value::str(vocab.model));
    if (!vocab.pre.empty()) w.add("tokenizer.ggml.pre", gg::value::str(vocab.pre));
    w.add("tokenizer.ggml.tokens", gg::value::strings(vocab.tokens));
    if (!vocab.scores.empty()) w.add("tokenizer.ggml.scores", gg::value::f32s(vocab.scores));
    w.add("tokenizer.ggml.token_type", gg::value::i32s(vocab.types));
    w.add("tokenizer.ggml.merges", gg::value::strings(vocab.merges));
    if (vocab.model == "llama") w.add("tokenizer.ggml.add_space_prefix", gg::value::boolean(vocab.add_space_prefix));
    const hf_special_tokens& sp = folder.special;
    const hf_generation_config& gen = folder.generation;
    const token_t bos = sp.bos_id >= 0               ? sp.bos_id
                        : !tok.prefix_tokens.empty() ? tok.prefix_tokens.front()
                                                     : gen.bos_token_id;
    const token_t eos = sp.eos_id >= 0 ? sp.eos_id : !gen.eos_token_ids.empty() ? gen.eos_token_ids.front() : -1;
    const token_t pad = sp.pad_id >= 0 ? sp.pad_id : gen.pad_token_id;
    const token_t unk = sp.unk_id >= 0 ? sp.unk_id : tok.model.unk;
    auto id_key = [&](const char* key, token_t id) {
        if (id < 0) return;
        check(id < c.vocab_size,
              [&] { return "gguf: " + where + ": " + key + " " + std::to_string(id) + " is outside the vocabulary"; });
        w.add(std::string("tokenizer.ggml.") + key, gg::value::u32(std::uint32_t(id)));
    };
    id_key("bos_token_id", bos);
    id_key("eos_token_id", eos);
    id_key("unknown_token_id", unk);
    id_key("padding_token_id", pad);
    w.add("tokenizer.ggml.add_bos_token", gg::value::boolean(!tok.prefix_tokens.empty()));
    w.add("tokenizer.ggml.add_eos_token", gg::value::boolean(!tok.suffix_tokens.empty()));
    w.add("tinylm.tokenizer.nfc", gg::value::boolean(tok.norm.nfc)); // for reading back (io/gguf_folder.hpp)
    if (folder.chat) w.add("tokenizer.chat_template", gg::value::str(folder.chat->source()));

    // Tensors, in the model's order; experts split from transformers' fused gate_up.
    const bool permute = arch == "llama";
    if (c.rope_scaling.factor > 0) {
        const std::vector<float> f = ex::llama3_rope_factors(c);
        w.add_tensor("rope_freqs.weight", {f.size()}, gg::ggml_type::f32,
                     [f](std::span<float> out) { std::copy(f.begin(), f.end(), out.begin()); });
    }
    for (const parameter_entry& e : model.parameter_entries()) {
        if (e.kind == param_kind::adapter) continue;
        const tensor_view<const float> v = e.value;
        const std::string& hf = e.name;
        if (hf.ends_with("mlp.experts.gate_up_proj") || hf.ends_with("mlp.experts.down_proj")) {
            const std::string layer = hf.substr(0, hf.find(".mlp."));
            const std::string blk = "blk." + layer.substr(layer.rfind('.') + 1) + ".";
            const std::int64_t n_exp = v.dim(0), rows = v.dim(1), cols = v.dim(2);
            if (hf.ends_with("down_proj")) {
                const std::vector<std::uint64_t> dims{std::uint64_t(cols), std::uint64_t(rows), std::uint64_t(n_exp)};
                w.add_tensor(blk + "ffn_down_exps.weight", dims,
                             ex::storage_type(blk + "ffn_down_exps.weight", dims, options.type),
                             [v](std::span<float> out) { std::copy(v.data, v.data + v.numel(), out.begin()); });
                continue;
            }
            const std::int64_t f = rows / 2; // gate in rows [0, F), up in [F, 2F) of each expert
            for (const int part : {0, 1}) {
                const std::string name = blk + (part == 0 ? "ffn_gate_exps.weight" : "ffn_up_exps.weight");
                const std::vector<std::uint64_t> dims{std::uint64_t(cols), std::uint64_t(f), std::uint64_t(n_exp)};
                w.add_tensor(name, dims, ex::storage_type(name, dims, options.type),
                             [v, part, f, cols, n_exp](std::span<float> out) {
                                 for (std::int64_t x = 0; x < n_exp; ++x) {
                                     const float* src = v.data + (x * 2 * f + part * f) * cols;
                                     std::copy(src, src + f * cols, out.begin() + x * f * cols);
                                 }
                             });
            }
            continue;
        }
        const std::string name = ex::tensor_name(hf);
        check(!name.empty(), [&] { return "gguf: no GGUF name for the tensor " + hf; });
        const std::vector<std::uint64_t> dims = ex::gguf_dims(v.shape);
        const bool is_q = name.find(".attn_q.") != std::string::npos, is_k = name.find(".attn_k.") != std::string::npos;
        const std::int64_t d = c.head_dim();
        w.add_tensor(name, dims, ex::storage_type(name, dims, options.type),
                     [v, permute, is_q, is_k, d](std::span<float> out) {
                         if (permute && (is_q || is_k)) {
                             const std::int64_t rows = v.shape[0], cols = v.shape.rank > 1 ? v.shape[1] : 1;
                             ex::permute_rope_rows(v.data, out.data(), rows, cols, d);
                         } else {
                             std::copy(v.data, v.data + v.numel(), out.begin());
                         }
                     });
    }
    w.save(out);
}

// ---- reading back (llama.cpp files of architecture llama, qwen2 or qwen3, every type of io/gguf_types.hpp) -------

// The decoder configuration a GGUF file describes: sizes from the architecture's keys, q/k/v biases for qwen2,
// QK-norm for qwen3, tied embeddings when there is no output.weight, experts from expert_count, Llama 3 rope scaling
// recognised from rope_freqs (llama3_scaling_of).
inline model_config gguf_model_config(const gguf::reader& r) {
    const std::string arch = r.at("general.architecture").as_string();
    check(arch == "llama" || arch == "qwen2" || arch == "qwen3", [&] {
        return "gguf: " + r.path().string() + ": architecture \"" + arch +
               "\" is not read (llama, qwen2 and qwen3 are)";
    });
    const std::string a = arch + ".";
    auto u = [&](const std::string& key) {
        const std::uint64_t v = r.at(a + key).as_uint();
        check(v <= 1u << 30, [&] {
            return "gguf: " + r.path().string() + ": " + a + key + " = " + std::to_string(v) + " is out of range";
        });
        return static_cast<int>(v);
    };
    model_config c;
    c.vocab_size =
        r.find(a + "vocab_size") ? u("vocab_size") : static_cast<int>(r.at("tokenizer.ggml.tokens").strings().size());
    c.d_model = u("embedding_length");
    c.n_layers = u("block_count");
    c.n_heads = u("attention.head_count");
    c.n_kv_heads = r.find(a + "attention.head_count_kv") ? u("attention.head_count_kv") : c.n_heads;
    const int even_split = c.n_heads > 0 ? c.d_model / c.n_heads : 0;
    const int head = r.find(a + "attention.key_length") ? u("attention.key_length") : even_split;
    c.d_head = head == even_split ? 0 : head;
    c.d_ff = u("feed_forward_length");
    c.max_seq_len = u("context_length");
    if (const gguf::value* v = r.find(a + "rope.freq_base")) c.rope_theta = v->as_float();
    c.norm_eps = r.at(a + "attention.layer_norm_rms_epsilon").as_float();
    c.qkv_bias = arch == "qwen2";
    c.qk_norm = arch == "qwen3";
    c.tied_embeddings = r.find_tensor("output.weight") == nullptr;
    if (r.find(a + "expert_count") && u("expert_count") > 0) {
        c.moe.n_experts = u("expert_count");
        c.moe.top_k = u("expert_used_count");
    }
    if (r.find_tensor("rope_freqs.weight") && c.n_heads > 0 && c.head_dim() > 0)
        c.rope_scaling =
            detail::gguf_export::llama3_scaling_of(c, r.read_f32("rope_freqs.weight"), "gguf: " + r.path().string());
    try {
        check_config(c);
    } catch (const error& e) {
        std::string why = e.what();
        if (why.starts_with("tinylm: ")) why.erase(0, 8);
        fail("gguf: " + r.path().string() + " describes no valid model: " + why);
    }
    return c;
}

// Reads the tensors of `r` into `model` (built with gguf_model_config(r)): names mapped back, llama's q/k rows
// un-permuted, experts fused into transformers' gate_up layout; quantised tensors dequantised as ggml does.
template <class Model>
void load_gguf_weights(Model& model, const gguf::reader& r) {
    namespace ex = detail::gguf_export;
    const model_config& c = model.config();
    const bool permute = r.at("general.architecture").as_string() == "llama";
    auto values = [&](const std::string& name, std::int64_t n) {
        std::vector<float> v = r.read_f32(name);
        check(std::int64_t(v.size()) == n, [&] {
            return "gguf: tensor " + name + " has " + std::to_string(v.size()) + " values, the model expects " +
                   std::to_string(n);
        });
        return v;
    };
    for (const parameter_entry& e : model.parameter_entries()) {
        if (e.kind == param_kind::adapter) continue;
        const tensor_view<float> v = e.value;
        const std::string& hf = e.name;
        if (hf.ends_with("mlp.experts.gate_up_proj") || hf.ends_with("mlp.experts.down_proj")) {
            const std::string layer = hf.substr(0, hf.find(".mlp."));
            const std::string blk = "blk." + layer.substr(layer.rfind('.') + 1) + ".";
            if (hf.ends_with("down_proj")) {
                const std::vector<float> d = values(blk + "ffn_down_exps.weight", v.numel());
                std::copy(d.begin(), d.end(), v.data);
                continue;
            }
            const std::int64_t n_exp = v.dim(0), f = v.dim(1) / 2, cols = v.dim(2);
            const std::vector<float> gate = values(blk + "ffn_gate_exps.weight", n_exp * f * cols);
            const std::vector<float> up = values(blk + "ffn_up_exps.weight", n_exp * f * cols);
            for (std::int64_t x = 0; x < n_exp; ++x) {
                std::copy_n(gate.begin() + x * f * cols, f * cols, v.data + x * 2 * f * cols);
                std::copy_n(up.begin() + x * f * cols, f * cols, v.data + (x * 2 * f + f) * cols);
            }
            continue;
        }
        const std::string name = ex::tensor_name(hf);
        check(!name.empty(), [&] { return "gguf: no GGUF name for the tensor " + hf; });
        const std::vector<float> src = values(name, v.numel());
        const bool qk = name.find(".attn_q.") != std::string::npos || name.find(".attn_k.") != std::string::npos;
        if (permute && qk) {
            const std::int64_t rows = v.shape[0], cols = v.shape.rank > 1 ? v.shape[1] : 1, d = c.head_dim();
            for (std::int64_t row = 0; row < rows; ++row) { // GGUF row h*d + 2i + t holds HF row h*d + t*d/2 + i
                const std::int64_t h = row / d, j = row % d, hf_row = h * d + (j % 2) * (d / 2) + j / 2;
                std::copy_n(src.begin() + row * cols, cols, v.data + hf_row * cols);
            }
        } else {
            std::copy(src.begin(), src.end(), v.data);
        }
    }
}

} // namespace tl
