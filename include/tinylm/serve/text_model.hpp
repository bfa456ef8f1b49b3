// tinylm/serve/text_model.hpp: a model folder loaded for talking to: the decoder (any Llama, Mistral, Qwen2, Qwen3 or
// Mixtral folder, sizes read at run time, or a llama / qwen2 / qwen3 GGUF file), a LoRA adapter merged in, the
// tokenizer, the chat template and the sampling defaults of generation_config.json, behind one small interface. The
// `tinylm` command's generate, chat and serve share it, and code that only talks to a model (a server, a REPL) compiles
// without a decoder.
//
//   std::unique_ptr<tl::text_model> m = tl::load_text_model("runs/russian_novels/checkpoint");
//   auto ids = m->tokenizer().encode("Жили-были");
//   tl::text_completion c = m->complete(ids, {.generation = m->folder().generation.options(32)}, print);
//
// load_text_model instantiates the three decoder families (io/hf_any.hpp): call it from one translation unit.
#pragma once

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/eval/continuous_batch.hpp>
#include <tinylm/eval/generate_batch.hpp>
#include <tinylm/eval/text_generation.hpp>
#include <tinylm/io/gguf_folder.hpp>
#include <tinylm/io/hf_any.hpp>
#include <tinylm/io/hf_folder.hpp>
#include <tinylm/io/peft_merge.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace tl {

// Sampling settings a user gives (command-line flags, fields of an HTTP request); what is not given comes from the
// model's generation_config.json.
struct sampling_overrides {
    std::optional<double> temperature{}, top_p{}, min_p{}, repetition_penalty{};
    std::optional<int> top_k{}, max_tokens{};
    std::uint64_t seed = 0;
    std::vector<std::string> stop{};
};

class text_model {
public:
    using on_text_fn = std::function<bool(std::string_view)>;
    virtual ~text_model() = default;

    virtual const model_config& config() const = 0;
    virtual std::int64_t parameter_count() const = 0;
    // Generates from `prompt` (ids), calling on_text with each piece of decoded text; false from it stops. May be
    // called from several threads at once: up to batch_rows() generations are decoded together, one forward a step
    // for all of them, the others wait their turn (eval/continuous_batch.hpp).
    virtual text_completion complete(std::span<const token_t> prompt, const text_generation_options& options,
                                     const on_text_fn& on_text) const = 0;
    // Generations complete() decodes together (default 1: one after another). Not while complete() runs.
    virtual void set_batch_rows(int rows) = 0;
    virtual int batch_rows() const = 0;
    // Prompt tokens a generation joining others runs a step while they decode (default 256; 0: all at once).
    virtual void set_prompt_chunk(int tokens) = 0;
    // complete()'s decoding steps so far (steps, generations decoded, the most at once).
    virtual batch_counts batch_stats() const = 0;
    // `count` continuations of one prompt decoded together (eval/generate_batch.hpp): row r samples with the
    // options' seed + r.
    virtual std::vector<text_completion> complete_batch(std::span<const token_t> prompt, int count,
                                                        const text_generation_options& options) const = 0;
    // From now on the decoding steps (complete's, also of several generations together) read copies of the weights
    // in `format`: bf16 (half the bytes), q8_0 (about a quarter), q4_0 (about a sixth) or f32 (the weights
    // themselves, no copies)
    // (backend/decoding_weights.hpp: products of up to 8 rows; prompts longer than that read f32). Returns the
    // copies' bytes.
    virtual std::size_t use_decoding_weights(decoding_format format) = 0;
    // From now on the generations' KV caches keep keys and values in `precision` (model/kv_cache.hpp: bf16 halves
    // their memory and the bytes a long context's token reads).
    virtual void use_kv_precision(kv_precision precision) = 0;
    // slots > 0: complete() keeps its KV caches for the next calls, one conversation per slot (a generation
    // running beside others takes a slot they do not hold, or a cache of its own when none is free); a call runs
    // only the part of its prompt after the longest prefix a slot holds (a chat's earlier turns;
    // text_completion::cached_tokens counts the rest; eval/generate.hpp, prompt_cache, says which slot a prompt
    // takes). Those positions were computed as they were then, so logits can differ from a fresh prefill's by f32
    // rounding. 0 (the default): every call starts from an empty cache.
    virtual void keep_prompt_cache(int slots) = 0;

    const hf_folder& folder() const { return folder_; }
    const tl::tokenizer& tokenizer() const { return *folder_.tokenizer; }
    const fs::path& adapter_dir() const { return adapter_dir_; }
    const merge_report& adapter() const { return adapter_; }
    // The name clients see (OpenAI's "model"): the folder's name, with the adapter's.
    std::string name() const {
        std::string n = fs::absolute(folder_.dir).lexically_normal().filename().string();
        if (n.empty()) n = fs::absolute(folder_.dir).lexically_normal().parent_path().filename().string();
        if (!adapter_dir_.empty()) {
            n += '+';
            n += fs::absolute(adapter_dir_).lexically_normal().filename().string();
        }
        return n;
    }
    // Default options of this model: generation_config.json's sampling, its end tokens, `max_new_tokens`.
    text_generation_options default_options(int max_new_tokens = 0, std::uint64_t seed = 0) const {
        return {.generation = folder_.generation.options(max_new_tokens, seed), .stop = {}, .skip_special = true};
    }
    // The defaults with what the user gave on top. A temperature > 0 for a model that decodes greedily by default
    // (do_sample false) turns sampling on with the file's top-k/top-p/min-p, as transformers' do_sample=True.
    text_generation_options options_with(const sampling_overrides& u) const {
        text_generation_options o = default_options(u.max_tokens.value_or(0), u.seed);
        sampling_options& s = o.generation.sampling;
        const hf_generation_config& g = folder_.generation;
        if (u.temperature) {
            if (s.temperature == 0 && *u.temperature > 0) {
                s.top_k = g.top_k;
                s.top_p = g.top_p;
                s.min_p = g.min_p;
            }
            s.temperature = *u.temperature;
        }
        if (u.top_k) s.top_k = *u.top_k;
        if (u.top_p) s.top_p = *u.top_p;
        if (u.min_p) s.min_p = *u.min_p;
        if (u.repetition_penalty) s.repetition_penalty = *u.repetition_penalty;
        o.stop.insert(o.stop.end(), u.stop.begin(), u.stop.end());
        return o;
    }

protected:
    hf_folder folder_;
    fs::path adapter_dir_;
    merge_report adapter_{};
};

namespace detail {
template <class Model>
class text_model_of final : public text_model {
public:
    text_model_of(std::unique_ptr<Model> model, hf_folder folder, fs::path adapter_dir, merge_report adapter)
        : model_(std::move(model)) {
        folder_ = std::move(folder);
        adapter_dir_ = std::move(adapter_dir);
        adapter_ = adapter;
        batch_.emplace(*model_, tokenizer());
    }
    const model_config& config() const override { return model_->config(); }
    std::int64_t parameter_count() const override { return model_->parameter_count(); }
    text_completion complete(std::span<const token_t> prompt, const text_generation_options& options,
                             const on_text_fn& on_text) const override {
        return batch_->complete(prompt, options, on_text);
    }
    void set_batch_rows(int rows) override { batch_->set_rows(rows); }
    int batch_rows() const override { return batch_->rows(); }
    void set_prompt_chunk(int tokens) override { batch_->set_prompt_chunk(tokens); }
    batch_counts batch_stats() const override { return batch_->stats(); }
    std::vector<text_completion> complete_batch(std::span<const token_t> prompt, int count,
                                                const text_generation_options& options) const override {
        return generate_text_batch(*model_, tokenizer(), prompt, count, options);
    }
    void keep_prompt_cache(int slots) override {
        batch_->use_prompt_cache(nullptr);
        cache_.reset();
        if (slots > 0) cache_.emplace(slots);
        batch_->use_prompt_cache(cache_ ? &*cache_ : nullptr);
    }
    std::size_t use_decoding_weights(decoding_format format) override {
        if (cache_) cache_->clear(); // its positions were computed with the weights in force then
        copies_.reset();
        if (format != decoding_format::f32) copies_.emplace(model_->parameter_entries(), format);
        return copies_ ? copies_->bytes() : 0;
    }
    void use_kv_precision(kv_precision precision) override {
        if (cache_) cache_->clear(); // caches of the other precision
        model_->set_kv_precision(precision);
    }

private:
    std::unique_ptr<Model> model_;
    std::optional<decoding_weights> copies_; // after model_: gone before the weights it copied
    // complete() is const to callers; the batch orders their calls (its own lock).
    mutable std::optional<prompt_cache<Model>> cache_;
    mutable std::optional<continuous_batch<Model>> batch_; // made once the folder's tokenizer is in place
};
} // namespace detail

// Loads `dir` (config.json, weights, tokenizer.json required; tokenizer_config.json, generation_config.json and
// a chat template used when present), or a GGUF file of architecture llama, qwen2 or qwen3 (io/gguf_folder.hpp: the
// tokenizer rebuilt from the file, the weights dequantised to f32), and merges the adapter in `adapter_dir` when
// one is given.
template <Backend B = default_backend>
std::unique_ptr<text_model> load_text_model(const fs::path& dir, const fs::path& adapter_dir = {}) {
    std::optional<gguf::reader> file;
    if (fs::is_regular_file(dir)) file.emplace(dir);
    hf_folder folder = file ? read_gguf_folder(*file) : read_hf_folder(dir);
    check(folder.tokenizer.has_value(), [&] { return "text_model: " + dir.string() + " has no tokenizer.json"; });
    if (folder.generation.eos_token_ids.empty() && folder.special.eos_id >= 0)
        folder.generation.eos_token_ids.push_back(folder.special.eos_id);
    const model_config c = file ? gguf_model_config(*file) : read_hf_folder_config(dir);
    check(index_t(folder.tokenizer->vocab_size()) <= c.vocab_size, [&] {
        return "text_model: " + (file ? dir : dir / "tokenizer.json").string() + " has " +
               std::to_string(folder.tokenizer->vocab_size()) + " tokens, more than the model's vocabulary of " +
               std::to_string(c.vocab_size);
    });
    auto load = [&]<class Family>() -> std::unique_ptr<text_model> {
        using model_t = decoder<Family, B>;
        auto model = std::make_unique<model_t>(c, weights_to_load_for_inference);
        if (file)
            load_gguf_weights(*model, *file);
        else
            load_pretrained(*model, dir);
        merge_report merged{};
        if (!adapter_dir.empty()) merged = merge_adapter(*model, adapter_dir);
        return std::make_unique<detail::text_model_of<model_t>>(std::move(model), std::move(folder), adapter_dir,
                                                                merged);
    };
    return visit_family(c, load);
}

} // namespace tl
