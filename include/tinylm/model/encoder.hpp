// tinylm/model/encoder.hpp: a bidirectional transformer encoder (BERT and its kin), composed from the decoder's
// parts (model/block.hpp), with a hand-written backward pass.
//
//   e = word[ids] + position[t] (learned positions) + type[type_ids] (type_vocab_size > 0)
//   post-norm (BERT):  x = norm_e(e);  x = block_l(x) for each layer;  h = x
//   pre-norm:          x = e;          x = block_l(x) for each layer;  h = final_norm(x)
//
// forward() returns the hidden states h (B * T, d) of right-padded rows (key_lengths: the real tokens of each
// row; padding keys are never attended to); a loss written outside (pooling: ops/pooling.hpp, the ranking loss:
// embed/) hands d(loss)/dh to backward_from_hidden(). Memory as in the decoder: parameters and gradients in one
// arena (parameter_table), activations in a second one planned for the batch shape.
//
// Names: a post-norm encoder with learned positions is Hugging Face's BertModel and carries its names
// (embeddings.word_embeddings.weight, encoder.layer.N.attention.self.query.weight, ..., pooler.dense.weight):
// io/hf_encoder.hpp reads and writes those folders. The pooler (tanh(dense(h[CLS])), BertModel's default
// second output) is carried so that a saved folder loads without missing weights; it is frozen and nothing in
// tinylm computes it (sentence-transformers does not use it either). A pre-norm encoder has no Hugging Face
// class and keeps the decoder's names (model.layers.N.self_attn.q_proj.weight, model.norm.weight).
#pragma once

#include <tinylm/backend/default.hpp>
#include <tinylm/model/backward_hook.hpp>
#include <tinylm/model/block.hpp>
#include <tinylm/model/parameter_table.hpp>
#include <tinylm/model/projection_table.hpp>
#include <tinylm/ops/embedding.hpp>

#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

// The BertModel name of a block tensor's decoder-style name ("model.layers.3.self_attn.q_proj.weight" ->
// "encoder.layer.3.attention.self.query.weight"); LoRA tensors follow their projection.
inline std::string bert_tensor_name(const std::string& name) {
    static constexpr std::string_view prefix = "model.layers.";
    static constexpr std::pair<std::string_view, std::string_view> parts[] = {
        {"input_layernorm", "attention.output.LayerNorm"}, // post-norm: norm1(x + attention(x))
        {"self_attn.q_proj", "attention.self.query"},
        {"self_attn.k_proj", "attention.self.key"},
        {"self_attn.v_proj", "attention.self.value"},
        {"self_attn.o_proj", "attention.output.dense"},
        {"post_attention_layernorm", "output.LayerNorm"}, // post-norm: norm2(h + mlp(h))
        {"mlp.up_proj", "intermediate.dense"},
        {"mlp.down_proj", "output.dense"},
    };
    check(name.starts_with(prefix), [&] { return "bert_tensor_name: not a block tensor: " + name; });
    const std::size_t dot = name.find('.', prefix.size());
    const std::string layer = name.substr(prefix.size(), dot - prefix.size());
    const std::string_view rest = std::string_view(name).substr(dot + 1);
    for (const auto& [ours, theirs] : parts)
        if (rest.starts_with(ours) && (rest.size() == ours.size() || rest[ours.size()] == '.'))
            return "encoder.layer." + layer + "." + std::string(theirs) + std::string(rest.substr(ours.size()));
    fail("bert_tensor_name: no BertModel name for " + name);
}

template <ModelConfig C, Backend B = default_backend, LoraAdapter A = no_adapter>
class encoder : public parameter_table,                     // entries, freezing, zero_grad
                public projection_table<projection<B, A>> { // LoRA merge and dropout, QLoRA's NF4 weights
    using projection_table<projection<B, A>>::adapter_;
    using projection_table<projection<B, A>>::projections_;

public:
    static constexpr model_config static_config = C::value; // fields may be tl::dynamic (read at run time)
    static_assert(validate_config<C>());
    static_assert(validate_adapter_for<C, A>());
    static_assert(static_config.attention == attention_kind::bidirectional,
                  "encoder: the configuration must have attention = attention_kind::bidirectional");
    static_assert(static_config.moe.n_experts == 0, "encoder: mixture-of-experts MLPs are decoder-only here");
    static_assert(!A::value.trainable_embeddings,
                  "encoder: lora_config::trainable_embeddings (a grown vocabulary under LoRA) is decoder-only here");
    using backend = B;
    using adapter = A;
    static constexpr lora_config lora = A::value;
    static constexpr bool has_adapter = lora.rank > 0;
    static constexpr bool quantized_base = has_adapter && lora.quantized_base;
    static constexpr bool post_norm = static_config.norm_position == norm_placement::post;
    static constexpr bool learned_positions = static_config.positions == position_kind::learned;
    // A BertModel: post-norm with learned positions; it carries BERT's names and pooler.
    static constexpr bool bert_layout = post_norm && learned_positions;
    using block_t = block<B, A, static_config.norm, static_config.mlp, false, static_config.norm_position>;
    using projection_t = projection<B, A>;
    using norm_t = typename block_t::norm_t;

    explicit encoder(std::uint64_t seed = 0) requires(!has_dynamic_fields(C::value)) : encoder(C::value, seed) {}
    explicit encoder(const model_config& runtime, std::uint64_t seed = 0) : config_(resolve_config(C::value, runtime)) {
        adapter_.dropout_seed = mix64(seed ^ 0x4c6f5241ull);
        adapter_.n_layers = config_.n_layers;
        for (index_t l = 0; l < config_.n_layers; ++l)
            blocks_.emplace_back(config_, l);
        norm_.eps = config_.norm_eps;
        for (block_t& b : blocks_)
            this->add_layer(b);
        this->build([&](auto&& visit) { walk_base(visit); }, [&](auto&& visit) { walk_adapters(visit); }, has_adapter);
        this->index_quantized(this->base_slots(), config_);
        init(seed);
        if constexpr (bert_layout) this->set_trainable("pooler.", false); // computed by nothing here
        zero_grad();
    }
    encoder(const encoder&) = delete;
    encoder& operator=(const encoder&) = delete;

    const model_config& config() const { return config_; }
    index_t hidden_size() const { return config_.d_model; }

    // Number of base parameters (the adapter and BERT's unused pooler not counted).
    std::int64_t parameter_count() const {
        std::int64_t n = 0;
        for (const param_slot& s : this->base_slots())
            if (!s.name.starts_with("pooler.")) n += s.shape.numel();
        return n;
    }

    // N(0, init_std^2) weights and embeddings, unit norm weights, zero biases (BERT's initialisation; one
    // counter-based stream per tensor in walk order), then init_adapter(seed).
    void init(std::uint64_t seed) {
        this->init_base(seed, config_.init_std);
        init_adapter(seed);
    }
    void init_adapter(std::uint64_t seed) {
        check(!adapter_.merged, "encoder::init_adapter: unmerge() the adapter first");
        this->for_each_projection([&](projection_t& p) { p.init_adapter(seed); });
    }

    // Plans activation memory for batches of (batch, time); allocates only for a larger shape than ever before.
    void plan(index_t batch, index_t time) {
        check_batch_shape("encoder", batch, time, config_.max_seq_len);
        plan_shape(batch, time);
    }
    std::size_t activation_bytes() const { return act_arena_.capacity(); }

    // Hidden states (B * T, d) of ids (B, T). key_lengths (B), optional: row b holds key_lengths[b] real tokens
    // then padding (a Hugging Face attention_mask of ones, then zeros). type_ids (B, T), optional: token types
    // (all 0 when absent, as transformers does). `train`: LoRA dropout on, activations kept for backward.
    // doc_start (B, T), optional: rows packed with several texts (no padding computed): for each token, the index
    // in its row of its text's first token. Attention stays within a text and positions restart at each text, so
    // a row may be longer than max_seq_len; each text may not.
    cview<float> forward(cview<token_t> ids, cview<index_t> key_lengths = {}, cview<token_t> type_ids = {},
                         bool train = true, cview<index_t> doc_start = {}) {
        check(ids.shape.rank == 2, [&] { return "encoder: ids must be (B, T), got " + ids.shape.str(); });
        documents_ = doc_start.data != nullptr;
        if (documents_) {
            expect_same_shape("encoder", "doc_start", doc_start, ids);
            check_document_starts(doc_start, "encoder");
            check_batch_shape("encoder", ids.dim(0), ids.dim(1), std::numeric_limits<index_t>::max());
            plan_shape(ids.dim(0), ids.dim(1));
            copy(doc_start, acts_.doc_start);
            for (index_t i = 0; i < batch_ * time_; ++i) {
                acts_.positions[i] = i % time_ - acts_.doc_start[i];
                check(acts_.positions[i] < config_.max_seq_len, [&] {
                    return "encoder: a packed text is longer than max_seq_len = " + std::to_string(config_.max_seq_len);
                });
            }
        } else {
            plan(ids.dim(0), ids.dim(1));
        }
        return run_forward(ids, key_lengths, type_ids, train);
    }

    // Adds d(loss)/d(parameter) given dhidden = d(loss)/d(hidden states) (B * T, d) of the last forward(train).
    // `hook` (optional, model/backward_hook.hpp) is called as gradients become final, as the decoder does: with
    // n_layers once the final norm is done (pre-norm; a post-norm encoder has none), then l after block l; the
    // embeddings (and BERT's embedding LayerNorm) are final when backward returns. A data-parallel step starts the
    // all-reduce of the finished buckets there (dist/data_parallel.hpp).
    void backward_from_hidden(cview<float> dhidden, const backward_hook& hook = {}) {
        check(has_forward_, "encoder::backward_from_hidden: call forward(..., train = true) first");
        check(!adapter_.merged, "encoder::backward: the adapter is merged; unmerge() it before training");
        expect_shape("encoder::backward_from_hidden", "dhidden", dhidden, {batch_ * time_, config_.d_model});
        has_forward_ = false;
        auto& a = acts_;
        if constexpr (post_norm)
            copy(dhidden, a.dx);
        else
            norm_.backward(a.dx, dhidden, a.xs.back(), a.norm_stats, grad_write::assign);
        if (hook) hook(config_.n_layers);   // the final norm
        adapter_.train = forward_training_; // the backward's dropout masks are the forward's
        for (index_t l = config_.n_layers - 1; l >= 0; --l) {
            blocks_[std::size_t(l)].backward(a.dx, a.xs[std::size_t(l)], a.layers[std::size_t(l)], a.scratch, context(),
                                             adapter_, {});
            if (hook) hook(l); // block l and its adapters
        }
        adapter_.train = false;
        embed_backward();
    }

    // The stage of backward (backward_hook) whose call makes the gradient of the parameter `name` final: the layer
    // of a block tensor (BertModel's "encoder.layer.N." or the decoder-style "model.layers.N.", LoRA tensors
    // included), n_layers for the final norm, -1 (final only when backward returns) for the embeddings and the rest.
    index_t backward_stage(std::string_view name) const {
        for (const std::string_view prefix : {std::string_view("encoder.layer."), std::string_view("model.layers.")}) {
            if (!name.starts_with(prefix)) continue;
            index_t l = 0;
            std::size_t i = prefix.size();
            for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i)
                l = l * 10 + index_t(name[i] - '0');
            return i > prefix.size() && i < name.size() && name[i] == '.' && l < config_.n_layers ? l : -1;
        }
        if (name.starts_with("model.norm")) return config_.n_layers;
        return -1;
    }

private:
    void plan_shape(index_t batch, index_t time) {
        if (batch == batch_ && time == time_) return;
        acts_ = plan_in(act_arena_, [&](arena& a) { return allocate_activations(a, batch, time); });
        batch_ = batch;
        time_ = time;
        if constexpr (!learned_positions) rope_table(acts_.rope_cos, acts_.rope_sin, config_.rope_theta, 0);
    }

    cview<float> run_forward(cview<token_t> ids, cview<index_t> key_lengths, cview<token_t> type_ids, bool train) {
        if constexpr (projection_t::dropout)
            if (train) ++adapter_.dropout_calls;
        auto& a = acts_;
        copy(ids, a.ids);
        padded_ = key_lengths.data != nullptr;
        if (padded_) {
            expect_shape("encoder", "key_lengths", key_lengths, {batch_});
            for (index_t b = 0; b < batch_; ++b)
                check(key_lengths[b] >= 1 && key_lengths[b] <= time_, [&] {
                    return "encoder: key_lengths[" + std::to_string(b) + "] = " + std::to_string(key_lengths[b]) +
                           " is not in [1, " + std::to_string(time_) + "]";
                });
            copy(key_lengths, a.key_lengths);
        }
        if (type_ids.data) {
            check(config_.type_vocab_size > 0, "encoder: type_ids given, but the model has no token types");
            expect_same_shape("encoder", "type_ids", type_ids, ids);
            copy(type_ids, a.type_ids);
        } else {
            a.type_ids.fill(0);
        }
        embed_forward();
        adapter_.train = train;
        for (index_t l = 0; l < config_.n_layers; ++l)
            blocks_[std::size_t(l)].forward(a.xs[std::size_t(l) + 1], a.xs[std::size_t(l)], a.layers[std::size_t(l)],
                                            a.scratch, context(), adapter_, {});
        adapter_.train = false;
        forward_training_ = train;
        has_forward_ = train;
        if constexpr (post_norm) return a.xs.back();
        norm_.forward(a.hidden, a.norm_stats, a.xs.back());
        return a.hidden;
    }

    struct activations {
        tensor_view<token_t> ids, type_ids;                // (B, T)
        tensor_view<index_t> key_lengths;                  // (B)
        tensor_view<index_t> doc_start, positions;         // (B, T): packed texts
        tensor_view<float> summed;                         // (N, d) the embeddings' sum, before norm_e
        typename norm_t::stats embed_stats, norm_stats;    // norm_e (post-norm), final norm (pre-norm)
        std::vector<tensor_view<float>> xs;                // residual stream (N, d), L + 1 of them
        std::vector<typename block_t::activations> layers; // L
        typename block_t::scratch scratch;                 // shared by the layers
        tensor_view<float> hidden, dx, dsummed;            // (N, d)
        tensor_view<float> rope_cos, rope_sin;             // (T, D/2): rotary positions only
    };

    // The base walk: embeddings, blocks, then the pooler (BERT) or the final norm (pre-norm).
    template <class Visit>
    void walk_base(Visit&& visit) {
        const index_t d = config_.d_model;
        const std::string e = bert_layout ? "embeddings." : "model.";
        visit(param_slot{e + (bert_layout ? "word_embeddings.weight" : "embed_tokens.weight"),
                         {config_.vocab_size, d},
                         param_kind::embedding,
                         param_group::embedding,
                         &word_,
                         &dword_});
        if (learned_positions)
            visit(param_slot{e + "position_embeddings.weight",
                             {config_.max_seq_len, d},
                             param_kind::embedding,
                             param_group::embedding,
                             &position_,
                             &dposition_});
        if (config_.type_vocab_size > 0)
            visit(param_slot{e + "token_type_embeddings.weight",
                             {config_.type_vocab_size, d},
                             param_kind::embedding,
                             param_group::embedding,
                             &type_,
                             &dtype_});
        if (post_norm) norm_.walk(visit, e + "LayerNorm", d);
        for (index_t l = 0; l < config_.n_layers; ++l)
            blocks_[std::size_t(l)].walk(named(visit), "model.layers." + std::to_string(l) + ".");
        if (!post_norm) norm_.walk(visit, "model.norm", d);
        if (bert_layout) {
            visit(param_slot{
                "pooler.dense.weight", {d, d}, param_kind::weight, param_group::head, &pooler_w_, &dpooler_w_});
            visit(param_slot{"pooler.dense.bias", {d}, param_kind::bias, param_group::head, &pooler_b_, &dpooler_b_});
        }
    }
    template <class Visit>
    void walk_adapters(Visit&& visit) {
        for (index_t l = 0; l < config_.n_layers; ++l)
            for (projection_t* p : projections_[std::size_t(l)])
                if (p)
                    p->walk_adapter(named(visit), "model.layers." + std::to_string(l) + "." +
                                                      projection_modules[std::size_t(p->which())]);
    }
    // The visitor that gives block tensors their BertModel names (BERT layout) or keeps the decoder's.
    template <class Visit>
    auto named(Visit& visit) {
        return [&visit](param_slot s) {
            if constexpr (bert_layout) s.name = bert_tensor_name(s.name);
            visit(s);
        };
    }

    activations allocate_activations(arena& a, index_t batch, index_t time) const {
        const index_t n = batch * time, d = config_.d_model;
        activations s;
        s.ids = a.allocate<token_t>({batch, time});
        s.type_ids = a.allocate<token_t>({batch, time});
        s.key_lengths = a.allocate<index_t>({batch});
        s.doc_start = a.allocate<index_t>({batch, time});
        s.positions = a.allocate<index_t>({batch, time});
        s.summed = a.allocate<float>({n, d});
        s.embed_stats = norm_t::stats::allocate(a, n);
        s.norm_stats = norm_t::stats::allocate(a, n);
        for (int l = 0; l <= config_.n_layers; ++l)
            s.xs.push_back(a.allocate<float>({n, d}));
        for (int l = 0; l < config_.n_layers; ++l)
            s.layers.push_back(blocks_.front().allocate(a, batch, time, true));
        s.scratch = blocks_.front().allocate_scratch(a, batch, time, true);
        s.hidden = a.allocate<float>({n, d});
        s.dx = a.allocate<float>({n, d});
        s.dsummed = a.allocate<float>({n, d});
        if constexpr (!learned_positions) {
            s.rope_cos = a.allocate<float>({time, config_.head_dim() / 2});
            s.rope_sin = a.allocate<float>({time, config_.head_dim() / 2});
        }
        this->allocate_adapter_scratch(a, n, config_);
        return s;
    }

    attention_context context() const {
        return {.cos = acts_.rope_cos,
                .sin = acts_.rope_sin,
                .positions = documents_ ? cview<index_t>(acts_.positions) : cview<index_t>{},
                .doc_start = documents_ ? cview<index_t>(acts_.doc_start) : cview<index_t>{},
                .key_lengths = padded_ ? cview<index_t>(acts_.key_lengths) : cview<index_t>{}};
    }

    // summed = word[ids] + position[t] + type[type_ids];  xs[0] = norm_e(summed) (post-norm) or summed.
    void embed_forward() {
        auto& a = acts_;
        const index_t n = batch_ * time_, d = config_.d_model;
        const tensor_view<float> out = post_norm ? a.summed : a.xs[0];
        embedding_forward<float>(out, a.ids.reshaped({n}), word_);
        for (index_t b = 0; b < batch_; ++b)
            for (index_t t = 0; t < time_; ++t) {
                float* row = out.row(b * time_ + t);
                const token_t type = a.type_ids[b * time_ + t];
                check(type >= 0 && type < std::max(1, config_.type_vocab_size), [&] {
                    return "encoder: token type " + std::to_string(type) + " is outside [0, " +
                           std::to_string(config_.type_vocab_size) + ")";
                });
                const index_t p = documents_ ? a.positions[b * time_ + t] : t; // restarts at each packed text
                const float* pos = learned_positions ? position_.row(p) : nullptr;
                const float* typ = config_.type_vocab_size > 0 ? type_.row(type) : nullptr;
                for (index_t j = 0; j < d; ++j)
                    row[j] += (pos ? pos[j] : 0.0f) + (typ ? typ[j] : 0.0f);
            }
        if constexpr (post_norm) norm_.forward(a.xs[0], a.embed_stats, a.summed);
    }
    // From d(loss)/d(xs[0]) in dx to the three embedding tables (and norm_e's weights).
    void embed_backward() {
        auto& a = acts_;
        const index_t n = batch_ * time_, d = config_.d_model;
        cview<float> dsum = a.dx;
        if constexpr (post_norm) {
            norm_.backward(a.dsummed, a.dx, a.summed, a.embed_stats, grad_write::assign);
            dsum = a.dsummed;
        }
        if (dword_.data) embedding_backward<float>(dword_, a.ids.reshaped({n}), dsum);
        if (learned_positions && dposition_.data)
            for (index_t i = 0; i < n; ++i) {
                float* dst = dposition_.row(documents_ ? a.positions[i] : i % time_);
                const float* src = dsum.row(i);
                for (index_t j = 0; j < d; ++j)
                    dst[j] += src[j];
            }
        if (config_.type_vocab_size > 0 && dtype_.data)
            embedding_backward<float>(dtype_, a.type_ids.reshaped({n}), dsum);
    }

    model_config config_;
    std::vector<block_t> blocks_;
    norm_t norm_; // the embeddings' norm (post-norm) or the final norm (pre-norm)
    tensor_view<float> word_, dword_, position_, dposition_, type_, dtype_;
    tensor_view<float> pooler_w_, dpooler_w_, pooler_b_, dpooler_b_;

    arena act_arena_;
    activations acts_;
    index_t batch_ = 0, time_ = 0;
    bool has_forward_ = false, forward_training_ = false, padded_ = false, documents_ = false;
};

} // namespace tl
