// tinylm/model/decoder.hpp: a decoder-only transformer (Llama / Qwen2 / Mistral / Mixtral family), composed
// from the parts in this folder, with a hand-written backward pass.
//
//   x = embed(ids);  x = block_l(x) for each layer (model/block.hpp);  h = norm(x)
//   loss = cross_entropy(head(h), targets), chunked over the vocabulary (+ the experts' balancing loss)
//   or any loss written outside the library from h: forward() returns h, backward_from_hidden(dh) trains it.
//
// Structure is compile-time: the configuration type C fixes norm and MLP kinds, q/k/v biases, experts, and
// the adapter type A fixes LoRA / QLoRA. Sizes are compile-time constants or read at run time: a field of
// C::value set to tl::dynamic is taken from the model_config given to the constructor (a Hugging Face
// config.json, io/hf_config.hpp), so one type serves every checkpoint of a family (docs/config.md).
//
// Memory: parameters and gradients in one arena (model/parameter_table.hpp; optimizers own their state),
// activations in a second one planned for the batch shape (plan(B, T)): a step allocates nothing. Names are
// Hugging Face's, weights (out, in). With an adapter the base is frozen and has no gradient memory (but for
// the embedding and head when the adapter's trainable_embeddings is set).
#pragma once

#include <tinylm/backend/default.hpp>
#include <tinylm/model/backward_hook.hpp>
#include <tinylm/model/block.hpp>
#include <tinylm/model/kv_cache.hpp>
#include <tinylm/model/parameter_table.hpp>
#include <tinylm/model/projection_table.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/ops/embedding.hpp>

#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

template <ModelConfig C, Backend B = default_backend, LoraAdapter A = no_adapter>
class decoder : public parameter_table,                     // entries, freezing, row masks, zero_grad
                public projection_table<projection<B, A>> { // LoRA merge and dropout, QLoRA's NF4 weights
    using projection_table<projection<B, A>>::adapter_;
    using projection_table<projection<B, A>>::projections_;

public:
    static constexpr model_config static_config = C::value; // fields may be tl::dynamic (read at run time)
    static_assert(validate_config<C>());
    static_assert(validate_adapter_for<C, A>());
    static_assert(static_config.positions == position_kind::rope,
                  "decoder: positions are rotary; learned position tables are the encoder's (model/encoder.hpp)");
    using backend = B;
    using adapter = A;
    static constexpr lora_config lora = A::value;
    static constexpr bool has_adapter = lora.rank > 0;
    static constexpr bool quantized_base = has_adapter && lora.quantized_base;
    static constexpr float lora_scale = has_adapter ? lora.alpha / float(lora.rank) : 0.0f;
    static constexpr bool is_moe = static_config.moe.n_experts != 0;
    using block_t = block<B, A, static_config.norm, static_config.mlp, is_moe, static_config.norm_position>;
    using projection_t = projection<B, A>;
    using kv_cache = tl::kv_cache<block_t>;

    // A configuration with every size fixed at compile time.
    explicit decoder(std::uint64_t seed = 0, index_t cross_entropy_chunk = 4096) requires(!has_dynamic_fields(C::value))
        : decoder(C::value, seed, cross_entropy_chunk) {}
    // Sizes from `runtime` where C leaves them dynamic; the fields C fixes must agree with it.
    explicit decoder(const model_config& runtime, std::uint64_t seed = 0, index_t cross_entropy_chunk = 4096)
        : decoder(runtime, cross_entropy_chunk, std::optional<std::uint64_t>(seed)) {}
    // For a loader to fill (load_pretrained, with_pretrained, load_text_model): the base starts at zero instead of
    // random (the normal draws a file then replaces took most of a load: ~15 s of a 0.5B model's); an adapter,
    // LoRA dropout and everything else as decoder(runtime, seed) makes them.
    // weights_to_load_for_inference: without the base's gradient memory (backward refuses).
    decoder(const model_config& runtime, weights_to_load_t load, std::uint64_t seed = 0,
            index_t cross_entropy_chunk = 4096)
        : decoder(runtime, cross_entropy_chunk, std::optional<std::uint64_t>(), seed, load.gradients) {}

private:
    // `init_seed`: the base's random weights, or none (at zero).
    decoder(const model_config& runtime, index_t cross_entropy_chunk, std::optional<std::uint64_t> init_seed,
            std::uint64_t adapter_seed = 0, bool base_gradients = true)
        : config_(resolve_config(C::value, runtime)), ce_chunk_(cross_entropy_chunk) {
        const std::uint64_t seed = init_seed.value_or(adapter_seed);
        trains_ = has_adapter || base_gradients;
        check(config_.type_vocab_size == 0, "decoder: token type embeddings are the encoder's (model/encoder.hpp)");
        adapter_.dropout_seed = mix64(seed ^ 0x4c6f5241ull);
        adapter_.n_layers = config_.n_layers;
        for (index_t l = 0; l < config_.n_layers; ++l)
            blocks_.emplace_back(config_, l);
        final_norm_.eps = config_.norm_eps;
        for (block_t& b : blocks_)
            this->add_layer(b);
        this->build([&](auto&& visit) { walk_base(visit); }, [&](auto&& visit) { walk_adapters(visit); },
                    has_adapter || !base_gradients, lora.trainable_embeddings);
        if (config_.tied_embeddings) head_ = embed_, dhead_ = dembed_;
        this->index_quantized(this->base_slots(), config_);
        if (init_seed) {
            init(seed);
        } else {
            this->zero_base();
            init_adapter(seed);
        }
        zero_grad();
    }

public:
    decoder(const decoder&) = delete;
    decoder& operator=(const decoder&) = delete;

    // The configuration in force (every size resolved).
    const model_config& config() const { return config_; }

    // ---- parameters ------------------------------------------------------------------------------------

    // Number of parameters of the model (the base; the adapter not counted), as parameter_count(config()).
    std::int64_t parameter_count() const { return tl::parameter_count(config_); }

    // Re-initialises the base: N(0, init_std^2) weights, unit norm weights, zero biases, one counter-based
    // stream per tensor in walk order (an NF4 projection draws in f32 and quantises); then init_adapter(seed).
    void init(std::uint64_t seed) {
        this->init_base(seed, config_.init_std);
        init_adapter(seed);
    }
    // The LoRA tensors only, as peft does: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0 (the output is unchanged).
    void init_adapter(std::uint64_t seed) {
        check(!adapter_.merged, "decoder::init_adapter: unmerge() the adapter first");
        this->for_each_projection([&](projection_t& p) { p.init_adapter(seed); });
    }

    // ---- activations -----------------------------------------------------------------------------------

    // Plans activation memory for batches of (batch, time). Allocates only when a larger shape than ever
    // before is planned: call it before the training loop so that steps never allocate.
    void plan(index_t batch, index_t time) {
        check_batch_shape("decoder", batch, time, config_.max_seq_len);
        if (batch == batch_ && time == time_) return;
        acts_ = plan_in(act_arena_, [&](arena& a) { return allocate_activations(a, batch, time); });
        batch_ = batch;
        time_ = time;
        rope_table(acts_.rope_cos, acts_.rope_sin, config_.rope_theta, 0, rope_scaling());
    }
    std::size_t activation_bytes() const { return act_arena_.capacity(); }
    // Gradient checkpointing per block: the forward keeps each layer's input and one layer's activations;
    // backward recomputes each layer's forward just before its backward (bit-identical gradients).
    void set_gradient_checkpointing(bool on) {
        if (on == checkpointing_) return;
        checkpointing_ = on;
        has_forward_ = false;
        const index_t b = batch_, t = time_;
        batch_ = time_ = 0;
        act_arena_ = arena();
        if (b > 0) plan(b, t);
    }
    bool gradient_checkpointing() const { return checkpointing_; }

    // ---- forward and backward --------------------------------------------------------------------------

    // doc_start (B, T), optional: packed rows of several documents (data/sft_batch.hpp); for each token, the
    // index in its row of its document's first token. Attention does not cross documents; RoPE restarts.
    // key_lengths (B), optional in forward(): right padding (a Hugging Face attention_mask of ones, then zeros).

    // Final hidden states (B * T, d), after the final norm, for a loss written outside the library.
    // `train`: LoRA dropout active and activations kept for backward_from_hidden().
    cview<float> forward(cview<token_t> ids, cview<index_t> doc_start = {}, bool train = true,
                         cview<index_t> key_lengths = {}) {
        run_forward(ids, doc_start, train, key_lengths);
        has_forward_ = train;
        return acts_.final_normed;
    }
    // Adds d(loss)/d(parameter) given dhidden = d(loss)/d(hidden states) (B * T, d) of the last forward().
    // Experts: the balancing loss's gradient is added with weight moe.aux_loss_weight.
    void backward_from_hidden(cview<float> dhidden, const backward_hook& hook = {}) {
        check_trains("decoder::backward_from_hidden");
        check(has_forward_, "decoder::backward_from_hidden: call forward() first");
        expect_shape("decoder::backward_from_hidden", "dhidden", dhidden, {batch_ * time_, config_.d_model});
        copy(dhidden, acts_.scratch.dnormed);
        backward_blocks(hook, 1.0);
    }

    // Logits (B, T, V) for ids (B, T), written to `out` (inference: all logits materialised).
    void logits(cview<token_t> ids, tensor_view<float> out, cview<index_t> doc_start = {}) {
        run_forward(ids, doc_start, false);
        has_forward_ = false;
        expect_shape("decoder::logits", "out", out, {batch_, time_, config_.vocab_size});
        linear_forward<B, float>(out.reshaped({batch_ * time_, config_.vocab_size}), acts_.final_normed, head_);
    }
    // Mean cross-entropy of targets (B, T) given ids (B, T); target -100 is not counted. Keeps the
    // activations for backward(). The vocabulary is processed in chunks.
    float loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start = {}) {
        return loss_impl(ids, targets, true, doc_start);
    }
    // The same loss without LoRA dropout and without advancing its masks: validation.
    float eval_loss(cview<token_t> ids, cview<token_t> targets, cview<index_t> doc_start = {}) {
        const float l = loss_impl(ids, targets, false, doc_start);
        if constexpr (projection_t::dropout) has_forward_ = false;
        return l;
    }
    index_t counted_targets() const { return loss_count_; }
    // Experts: the balancing loss of the last forward (unweighted) and the tokens each expert of `layer` got.
    double aux_loss() const { return aux_loss_; }
    std::vector<index_t> expert_counts(index_t layer) const {
        check(layer >= 0 && layer < index_t(expert_counts_.size()), "decoder::expert_counts: run a forward first");
        return expert_counts_[std::size_t(layer)];
    }

    // Adds d(loss * scale)/d(parameter) into the gradients, for the last call of loss(). `hook` (optional) is called
    // as gradients become final (model/backward_hook.hpp). Experts: `aux_scale` >= 0 scales the balancing loss's
    // gradient instead of `scale` (a data-parallel rank weights its cross-entropy by its share of the targets, but
    // the balancing loss of the global batch, set_balance_statistics(), by 1).
    void backward(double scale = 1.0, const backward_hook& hook = {}, double aux_scale = -1) {
        check_trains("decoder::backward");
        check(has_forward_ && has_targets_, "decoder::backward: call loss() first");
        auto& a = acts_;
        head_cross_entropy_backward<B, float>(a.scratch.dnormed, dhead_, a.ce, a.final_normed, head_, flat_targets(),
                                              a.ce_lse, scale); // no dW when frozen
        backward_blocks(hook, aux_scale >= 0 ? aux_scale : scale);
    }

    // Experts, data parallel: the balancing loss's statistics of the last forward (each balance's expert counts,
    // router probability sums and row count, packed), for the ranks to sum; set_balance_statistics() puts the sums
    // back, and aux_loss(), loss-level reporting and the next backward's balancing gradient are then those of the
    // global batch, as one process routing every rank's rows would have them. Empty without experts.
    std::vector<double> balance_statistics() const {
        std::vector<double> out;
        for (const moe_balance& b : acts_.balances) {
            out.insert(out.end(), b.counts.begin(), b.counts.end());
            out.insert(out.end(), b.prob_sum.begin(), b.prob_sum.end());
            out.push_back(b.rows);
        }
        return out;
    }
    void set_balance_statistics(std::span<const double> stats) {
        const std::size_t per = std::size_t(2 * config_.moe.n_experts + 1);
        check(stats.size() == per * acts_.balances.size(), [&] {
            return "decoder::set_balance_statistics: " + std::to_string(stats.size()) + " values, expected " +
                   std::to_string(per * acts_.balances.size()) + " (balance_statistics() of the same model)";
        });
        std::size_t at = 0;
        for (moe_balance& b : acts_.balances) {
            for (index_t e = 0; e < b.counts.numel(); ++e)
                b.counts[e] = stats[at++];
            for (index_t e = 0; e < b.prob_sum.numel(); ++e)
                b.prob_sum[e] = stats[at++];
            b.rows = stats[at++];
        }
        update_aux_loss();
    }

    // The stage of backward (backward_hook) whose call makes the gradient of the parameter `name` final: the layer
    // for model.layers.<l>.* (LoRA adapters included), n_layers for the final norm and an untied head, -1 for the
    // embedding and anything else: final only when backward returns (a tied head is the embedding).
    index_t backward_stage(std::string_view name) const {
        constexpr std::string_view layers = "model.layers.";
        if (name.starts_with(layers)) {
            index_t l = 0;
            std::size_t i = layers.size();
            for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i)
                l = l * 10 + index_t(name[i] - '0');
            return i > layers.size() && i < name.size() && name[i] == '.' && l < config_.n_layers ? l : -1;
        }
        if (name.starts_with("model.norm") || name.starts_with("lm_head")) return config_.n_layers;
        return -1;
    }

    // ---- inference with a KV cache ---------------------------------------------------------------------

    // A prompt runs through the blocks `chunk` positions per sequence at a time (0: 512 positions in all, as
    // llama.cpp's batch). Each chunk reads every weight once, so at 64 the weights' traffic bounded a prompt on a
    // 2-core machine: 512 instead gave 1.6x prompt tokens/s for a 0.5B model (docs/performance.md, "Prompts
    // (prefill)"). The chunk's activations are planned once: about 100 KB a position for a 0.5B model.
    // The caches' precision is the model's setting (kv_cache.hpp; f32 unless set_kv_precision said bf16), so that
    // generate, generate_batch, the continuous batch and the prompt cache all make the same kind.
    kv_cache make_cache(index_t batch, index_t capacity, index_t chunk = 0) const {
        if (chunk == 0) chunk = std::max<index_t>(16, 512 / std::max<index_t>(batch, 1));
        kv_cache c(blocks_.front(), config_, batch, capacity, chunk, kv_precision_);
        rope_table(c.rope_cos(), c.rope_sin(), config_.rope_theta, 0, rope_scaling());
        return c;
    }
    void set_kv_precision(kv_precision p) { kv_precision_ = p; }
    kv_precision kv_cache_precision() const { return kv_precision_; }
    // Appends ids (B, T) to the cache and writes the logits of the last new position, (B, V).
    void forward_cached(kv_cache& c, cview<token_t> ids, tensor_view<float> last_logits) const {
        expect_shape("decoder::forward_cached", "last_logits", last_logits, {c.batch(), config_.vocab_size});
        c.append(ids, embed_, blocks_, final_norm_, adapter_);
        linear_forward<B, float>(last_logits, c.last_normed(), head_);
    }

    // One token for each of several sequences, each in a cache of its own (make_cache(1, ...); any lengths):
    // one forward for all, logits (n, V). Sequences decoded together (a server's clients): each product reads the
    // weights once for all of them (kv_cache::append_each).
    void forward_each(std::span<kv_cache* const> caches, std::span<const token_t> ids,
                      tensor_view<float> logits) const {
        const index_t n = index_t(caches.size());
        expect_shape("decoder::forward_each", "logits", logits, {n, config_.vocab_size});
        std::vector<float> normed(std::size_t(n * config_.d_model));
        const tensor_view<float> normed_view{normed.data(), {n, config_.d_model}};
        kv_cache::append_each(caches, ids, embed_, blocks_, final_norm_, adapter_, normed_view);
        linear_forward<B, float>(logits, normed_view, head_);
    }

private:
    using norm_t = typename block_t::norm_t;
    struct activations {
        tensor_view<token_t> ids, targets;                 // (B, T)
        std::vector<tensor_view<float>> xs;                // residual stream (N, d), L + 1 of them
        std::vector<typename block_t::activations> layers; // L, or 1 under gradient checkpointing
        typename block_t::scratch scratch;                 // shared by the layers
        tensor_view<float> final_normed, dx;               // (N, d)
        typename norm_t::stats final_stats;
        tensor_view<float> ce_lse; // (N)
        cross_entropy_workspace<float> ce;
        tensor_view<float> rope_cos, rope_sin;     // (T, D/2)
        tensor_view<index_t> doc_start, positions; // (B, T): packed documents
        tensor_view<index_t> key_lengths;          // (B): right padding
        std::vector<moe_balance> balances;         // experts: per layer, or one for all
    };

    rope_llama3_scaling rope_scaling() const {
        const rope_scaling_config& r = config_.rope_scaling;
        return {r.factor, r.low_freq_factor, r.high_freq_factor, double(r.original_max_position)};
    }
    // The walk of the base (embedding, blocks, final norm, head), then of the adapters.
    template <class Visit>
    void walk_base(Visit&& visit) {
        const index_t vocab = config_.vocab_size, d = config_.d_model;
        visit(param_slot{
            "model.embed_tokens.weight", {vocab, d}, param_kind::embedding, param_group::embedding, &embed_, &dembed_});
        for (index_t l = 0; l < config_.n_layers; ++l)
            blocks_[std::size_t(l)].walk(visit, "model.layers." + std::to_string(l) + ".");
        final_norm_.walk(visit, "model.norm", d);
        if (!config_.tied_embeddings)
            visit(param_slot{"lm_head.weight", {vocab, d}, param_kind::weight, param_group::head, &head_, &dhead_});
    }
    template <class Visit>
    void walk_adapters(Visit&& visit) {
        for (index_t l = 0; l < config_.n_layers; ++l)
            for (projection_t* p : projections_[std::size_t(l)])
                if (p)
                    p->walk_adapter(visit, "model.layers." + std::to_string(l) + "." +
                                               projection_modules[std::size_t(p->which())]);
    }

    activations allocate_activations(arena& a, index_t batch, index_t time) const {
        const index_t n = batch * time, d = config_.d_model, half = config_.head_dim() / 2;
        activations s;
        s.ids = a.allocate<token_t>({batch, time});
        s.targets = a.allocate<token_t>({batch, time});
        for (int l = 0; l <= config_.n_layers; ++l)
            s.xs.push_back(a.allocate<float>({n, d}));
        for (int l = 0; l < (checkpointing_ ? 1 : config_.n_layers); ++l)
            s.layers.push_back(blocks_.front().allocate(a, batch, time, true));
        s.scratch = blocks_.front().allocate_scratch(a, batch, time, true);
        s.final_normed = a.allocate<float>({n, d});
        s.dx = a.allocate<float>({n, d});
        s.final_stats = norm_t::stats::allocate(a, n);
        s.ce_lse = a.allocate<float>({n});
        s.ce = cross_entropy_workspace<float>::allocate(a, n, std::min<index_t>(ce_chunk_, config_.vocab_size));
        s.rope_cos = a.allocate<float>({time, half});
        s.rope_sin = a.allocate<float>({time, half});
        s.doc_start = a.allocate<index_t>({batch, time});
        s.positions = a.allocate<index_t>({batch, time});
        s.key_lengths = a.allocate<index_t>({batch});
        if constexpr (is_moe) {
            s.balances.resize(config_.moe.balance_per_layer ? std::size_t(config_.n_layers) : 1);
            for (auto& b : s.balances)
                b = moe_balance::allocate(a, config_.moe.n_experts);
        }
        this->allocate_adapter_scratch(a, n, config_);
        return s;
    }

    float loss_impl(cview<token_t> ids, cview<token_t> targets, bool train, cview<index_t> doc_start) {
        run_forward(ids, doc_start, train);
        expect_same_shape("decoder::loss", "targets", targets, ids);
        copy(targets, acts_.targets);
        const auto r =
            head_cross_entropy_forward<B, float>(acts_.ce_lse, acts_.ce, acts_.final_normed, head_, flat_targets());
        loss_count_ = r.count;
        has_forward_ = has_targets_ = true;
        if constexpr (is_moe) return float(r.loss + config_.moe.aux_loss_weight * aux_loss_);
        return float(r.loss);
    }

    void run_forward(cview<token_t> ids, cview<index_t> doc_start, bool train, cview<index_t> key_lengths = {}) {
        check(ids.shape.rank == 2, [&] { return "decoder: ids must be (B, T), got " + ids.shape.str(); });
        plan(ids.dim(0), ids.dim(1));
        if constexpr (projection_t::dropout)
            if (train) ++adapter_.dropout_calls;
        forward_training_ = train;
        has_targets_ = false;
        auto& a = acts_;
        copy(ids, a.ids);
        documents_ = doc_start.data != nullptr;
        padded_ = key_lengths.data != nullptr;
        if (padded_) {
            expect_shape("decoder", "key_lengths", key_lengths, {batch_});
            copy(key_lengths, a.key_lengths);
        }
        if (documents_) {
            expect_same_shape("decoder", "doc_start", doc_start, ids);
            check_document_starts(doc_start, "decoder");
            copy(doc_start, a.doc_start);
            for (index_t i = 0; i < batch_ * time_; ++i)
                a.positions[i] = i % time_ - a.doc_start[i];
        }
        embedding_forward<float>(a.xs[0], a.ids.reshaped({batch_ * time_}), embed_);
        for (auto& b : a.balances)
            b.clear();
        for (index_t l = 0; l < config_.n_layers; ++l)
            layer_forward(l, false);
        update_aux_loss();
        final_norm_.forward(a.final_normed, a.final_stats, a.xs.back());
    }

    void update_aux_loss() {
        if constexpr (is_moe) {
            aux_loss_ = 0;
            for (const auto& b : acts_.balances)
                aux_loss_ += b.loss() / double(acts_.balances.size());
        }
    }

    attention_context context() const {
        return {.cos = acts_.rope_cos,
                .sin = acts_.rope_sin,
                .positions = documents_ ? cview<index_t>(acts_.positions) : cview<index_t>{},
                .doc_start = documents_ ? cview<index_t>(acts_.doc_start) : cview<index_t>{},
                .key_lengths = padded_ ? cview<index_t>(acts_.key_lengths) : cview<index_t>{}};
    }
    moe_balance* balance_of(index_t l) {
        return is_moe ? &acts_.balances[acts_.balances.size() == 1 ? 0 : std::size_t(l)] : nullptr;
    }
    typename block_t::activations& layer_acts(index_t l) { return acts_.layers[checkpointing_ ? 0 : std::size_t(l)]; }

    // `recompute`: gradient checkpointing's second forward of layer l (the same dropout masks; the balance
    // statistics and expert counts are not added again).
    void layer_forward(index_t l, bool recompute) {
        adapter_.train = forward_training_;
        auto& la = layer_acts(l);
        blocks_[std::size_t(l)].forward(acts_.xs[std::size_t(l) + 1], acts_.xs[std::size_t(l)], la, acts_.scratch,
                                        context(), adapter_, {.balance = recompute ? nullptr : balance_of(l)});
        adapter_.train = false;
        if constexpr (is_moe)
            if (!recompute)
                for (index_t e = 0; e < config_.moe.n_experts; ++e)
                    expert_counts_[std::size_t(l)][std::size_t(e)] = la.mlp.tokens_of(e);
    }

    // From d(loss)/d(final hidden states) in scratch.dnormed down to the embedding.
    // aux_scale: the weight of the experts' balancing loss in the gradient.
    void backward_blocks(const backward_hook& hook, double aux_scale) {
        check(!adapter_.merged, "decoder::backward: the adapter is merged; unmerge() it before training");
        has_forward_ = false;
        auto& a = acts_;
        final_norm_.backward(a.dx, a.scratch.dnormed, a.xs.back(), a.final_stats, grad_write::assign);
        if (hook) hook(config_.n_layers); // the head and the final norm
        const double daux =
            config_.moe.aux_loss_weight * aux_scale / double(std::max<std::size_t>(1, a.balances.size()));
        for (index_t l = config_.n_layers - 1; l >= 0; --l) {
            if (checkpointing_) layer_forward(l, true);
            adapter_.train = forward_training_; // the backward's dropout masks are the forward's
            blocks_[std::size_t(l)].backward(a.dx, a.xs[std::size_t(l)], layer_acts(l), a.scratch, context(), adapter_,
                                             {.balance = balance_of(l), .daux = daux});
            adapter_.train = false;
            if (hook) hook(l); // block l and its adapters
        }
        if (dembed_.data) embedding_backward<float>(dembed_, a.ids.reshaped({batch_ * time_}), a.dx);
    }

    cview<token_t> flat_targets() const { return acts_.targets.reshaped({batch_ * time_}); }

    model_config config_;
    std::vector<block_t> blocks_;
    norm_t final_norm_;
    tensor_view<float> embed_, dembed_, head_, dhead_; // head_ is embed_ when tied

    arena act_arena_;
    activations acts_;
    index_t batch_ = 0, time_ = 0, ce_chunk_ = 4096, loss_count_ = 0;
    bool has_forward_ = false, has_targets_ = false, forward_training_ = false, documents_ = false, padded_ = false,
         checkpointing_ = false;
    bool trains_ = true; // gradient memory (false: made with weights_to_load_for_inference, no adapter)
    kv_precision kv_precision_ = kv_precision::f32; // of the caches make_cache makes

    void check_trains(const char* who) const {
        check(trains_, [&] {
            return std::string(who) + ": this model has no gradient memory (made with weights_to_load_for_inference, "
                                      "to decode or evaluate); make it with weights_to_load to train";
        });
    }
    double aux_loss_ = 0; // experts: the balancing loss of the last forward
    // experts: tokens per expert of each layer in the last forward (apart from the activations, which
    // gradient checkpointing shares between layers)
    std::vector<std::vector<index_t>> expert_counts_ =
        std::vector<std::vector<index_t>>(std::size_t(std::max(0, config_.n_layers)),
                                          std::vector<index_t>(std::size_t(std::max(0, config_.moe.n_experts))));
};

} // namespace tl
