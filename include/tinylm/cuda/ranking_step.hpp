// tinylm/cuda/ranking_step.hpp: one training step of a sentence encoder with the multiple-negatives ranking loss
// on the device (embed/ranking_loss.hpp, embed/sentence_encoder.hpp, embed/cached_ranking.hpp's plain step), over
// encoder_step (cuda/encoder_step.hpp) and one arena, written once against an executor: gpu::cpu_ops (host memory;
// checked against tl::encoder + sentence_encoder + ranking_step in test_encoder) or gpu::gpu_ops (the GPU).
//
//   gpu::ranking_step<gpu::gpu_ops> step(config, sentence, {.pairs = 32, .negatives = 0});   // plans and allocates
//   step.load_from(host_encoder);                       // the initial weights, by BertModel's names
//   step.zero_gradients();
//   double loss = step.forward_backward(tokens, pairs, {.scale = 20});   // tokens: the tokenizer's token_batch
//   step.clip_gradients(1.0); step.adamw_step(lr, adamw_options);
//   step.store_into(host_encoder);                      // evaluation and saving on the CPU
//
// Checkpoints: gpu::ranking_adamw (below) is the Optimizer of train/checkpoint.hpp over the step's moments, under
// tl::adamw's names, so a device run's checkpoint and a CPU run's are the same files.
// LoRA (ranking_step_shape::lora, encoder_step's adapters): the base frozen, the adapter trained; load_from and
// store_into then also carry the adapter's matrices, by tl::encoder's names, from and to a tl::encoder with the same
// lora_config, and AdamW (and a checkpoint's moments) covers the adapter only, as tl::adamw on that encoder.
// LoRA dropout (lora.dropout > 0): the masks of tl::encoder under the CPU's sentence_encoder with the same
// sentence_config (its texts end to end in one row when sentence_config::pack, else its (texts, tokens.time) rows):
// each real token draws the mask of its place there (encoder_step's dropout_positions), so the device's padded or
// first-fit rows change nothing; padding, which reaches no text's embedding and gets no gradient, draws any. load_from
// and store_into carry the masks' key and training-forward count, so a checkpoint resumes with the same masks. This is
// the plain step's dropout (embed::ranking_step with mini_batch_size 0): the gradient cache embeds each text twice, and
// with dropout the two passes differ.
// QLoRA (lora.quantized_base): load_from also copies the host encoder's NF4 projection weights (its quantized_entries)
// to the device, which dequantises them for each product; store_into writes back the adapter and the f32 rest only.
//
// The batch: anchors, then positives, then hard negatives (H per anchor), tokenized as one padded batch (the
// texts of embed::ranking_step's plain step, in its order). On the device:
//   hidden = encoder(ids, lengths, types[, doc_start])    (rows of the plan's time, max_length: a text per row,
//                                                          padded, or texts packed end to end: ranking_step_shape)
//   e = pool(hidden, each text's segment) [ e = e / |e| ] (sentence_config: mean, cls or max; normalize)
//   u = e / |e|;  S (B, M) = scale u_a u_c^T              (the ranking loss's own normalisation; a product)
//   loss = mean_i (lse_j S_ij - S_ii) [symmetric: + the column term, / 2]   (row kernels; the terms summed here)
// and back: dS (a kernel), du_a = scale dS u_c and du_c = scale dS^T u_a (products), each normalisation's backward,
// the pooling's backward into d hidden, then encoder_step::backward. The loss's products are f32 even when the
// encoder's are bf16: they are small beside the encoder's, and the loss is a difference of nearby log-sum-exps.
// Only the rows the batch fills are computed (fewer pairs than planned, or packed texts, cost fewer rows).
//
// No gradient cache: the whole batch's activations stay on the device (all-MiniLM-L6-v2 at 64 texts x 128 tokens
// plans 1.94 GiB), so one forward suffices; the parameter gradients are those of the cached step. Packed, the
// encoder's hidden states of a text are those of its own padded row (the same positions, the same keys seen), up
// to the order of the products' sums: test_encoder checks packed against unpacked and the CPU encoder.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/shape.hpp>
#include <tinylm/cuda/device_decoder.hpp> // step_memory
#include <tinylm/cuda/encoder_plan.hpp>
#include <tinylm/cuda/encoder_step.hpp>
#include <tinylm/cuda/ranking_row.hpp>
#include <tinylm/embed/ranking_loss.hpp>
#include <tinylm/embed/sentence_encoder.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/optim/optimizer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace tl::gpu {

// The largest batch a step takes: `pairs` anchors with `negatives` hard negatives each (texts = pairs (2 +
// negatives)), each text at most sentence_config::max_length tokens.
// Unpacked (packed = false): every text in a row of its own, padded to max_length. Packed: the texts laid end to end
// into rows of max_length tokens (pack_texts below), attention kept inside each text and positions restarting at
// each (encoder_step's doc_start), so the encoder computes only the rows the texts fill. rows: the rows the plan
// holds when packed; 0 plans the worst case (one text per row: every batch fits, the arena is the unpacked one's),
// fewer saves memory and a batch that needs more is refused with its count.
struct ranking_step_shape {
    long long pairs = 1, negatives = 0;
    bool bf16 = false; // the encoder's products in bf16 (the loss's stay f32)
    attention_path attention = attention_path::products;
    lora_config lora{}; // LoRA on the encoder (encoder_plan_options::lora): the base frozen, the adapter trains
    bool packed = false;
    long long rows = 0; // packed: the planned rows (0: texts())
    long long texts() const { return pairs * (2 + negatives); }
    long long planned_rows() const { return packed && rows > 0 ? rows : texts(); }
};

// Where each text of a batch goes: text b's tokens are row[b]'s offset[b] .. offset[b] + length_b - 1. Packed:
// first fit in the batch's order (each text into the first row with room for all of it, else a new row), so the
// layout depends only on the lengths; a text never spans rows. Unpacked: text b in row b.
struct text_packing {
    long long rows = 0, time = 0;
    std::vector<std::int64_t> row, offset, used; // per text, per text, per row (tokens filled)
    long long tokens() const { return rows * time; }
};
inline text_packing pack_texts(const std::int64_t* lengths, long long n, long long time, bool packed) {
    text_packing p;
    p.time = time;
    p.row.resize(std::size_t(n)), p.offset.resize(std::size_t(n));
    for (long long b = 0; b < n; ++b) {
        const std::int64_t len = lengths[b];
        check(len >= 1 && len <= time, [&] {
            return "gpu::pack_texts: text " + std::to_string(b) + " has " + std::to_string(len) +
                   " tokens, not in [1, " + std::to_string(time) + "]";
        });
        std::size_t r = packed ? 0 : p.used.size();
        while (r < p.used.size() && p.used[r] + len > time)
            ++r;
        if (r == p.used.size()) p.used.push_back(0);
        p.row[std::size_t(b)] = std::int64_t(r), p.offset[std::size_t(b)] = p.used[r];
        p.used[r] += len;
    }
    p.rows = (long long)p.used.size();
    return p;
}

// The encoder step's options of a ranking step: the planned rows of max_length tokens.
inline encoder_plan_options ranking_encoder_options(index_t max_length, const ranking_step_shape& s) {
    encoder_plan_options o;
    o.batch = s.planned_rows(), o.time = max_length, o.bf16_weights = s.bf16, o.attention = s.attention;
    o.lora = s.lora;
    return o;
}

// The encoder's plan (plan_encoder_step) and the loss's buffers after it:
//   rank.starts, rank.lengths (int64 texts: each text's first token and count), rank.owner (int32 per planned token:
//   the text holding it, -1 on padding), rank.pooled, rank.embedded, rank.unit, rank.dunit (f32 texts x d), rank.arg
//   (int32 texts x d: max pooling's), rank.embedded_norm, rank.unit_norm (double texts), rank.scores (f32 pairs x
//   texts), rank.row_lse, rank.col_lse (double pairs), rank.terms (double 2 pairs)
inline arena_plan plan_ranking_step(const model_config& c, index_t max_length, const ranking_step_shape& s) {
    check(s.pairs >= 1 && s.negatives >= 0 && s.rows >= 0, [&] {
        return "gpu::plan_ranking_step: pairs " + std::to_string(s.pairs) + " must be positive, negatives " +
               std::to_string(s.negatives) + " and rows " + std::to_string(s.rows) + " at least 0";
    });
    arena_plan plan = plan_encoder_step(c, ranking_encoder_options(max_length, s));
    const auto n = std::size_t(s.texts()), d = std::size_t(c.d_model), b = std::size_t(s.pairs);
    plan.add_array<std::int64_t>("rank.starts", n);
    plan.add_array<std::int64_t>("rank.lengths", n);
    plan.add_array<std::int32_t>("rank.owner", std::size_t(s.planned_rows() * max_length));
    for (const char* name : {"rank.pooled", "rank.embedded", "rank.unit", "rank.dunit"})
        plan.add_array<float>(name, n * d);
    plan.add_array<std::int32_t>("rank.arg", n * d);
    plan.add_array<double>("rank.embedded_norm", n);
    plan.add_array<double>("rank.unit_norm", n);
    plan.add_array<float>("rank.scores", b * n);
    plan.add_array<double>("rank.row_lse", b);
    plan.add_array<double>("rank.col_lse", b);
    plan.add_array<double>("rank.terms", 2 * b);
    return plan;
}

template <class Ex>
class ranking_step {
public:
    ranking_step(const model_config& c, const embed::sentence_config& sentence, const ranking_step_shape& shape)
        : config_(c), sentence_(sentence), shape_(shape), options_(ranking_encoder_options(sentence.max_length, shape)),
          plan_(plan_ranking_step(c, sentence.max_length, shape)), memory_(plan_), base_(memory_.base()),
          encoder_(c, options_, plan_, base_, memory_.ex) {} // the plan refuses a max_length over max_seq_len
    ranking_step(const ranking_step&) = delete;              // encoder_ keeps references to plan_ and memory_
    ranking_step& operator=(const ranking_step&) = delete;

    const model_config& config() const { return config_; }
    const ranking_step_shape& shape() const { return shape_; }
    std::size_t arena_bytes() const { return plan_.bytes(); }
    encoder_step<Ex>& encoder() { return encoder_; }
    Ex& executor() { return memory_.ex; }

    // The parameters of a host encoder (tl::encoder or a model with its parameter_entries), by name; every one of
    // the device's must be there (with LoRA the adapter's too: a tl::encoder with the same lora_config; with QLoRA
    // also its NF4 projection weights, quantized_entries, copied as they are).
    template <class Model>
    void load_from(const Model& model) {
        std::size_t copied = 0, quantized = 0;
        for (const parameter_entry& e : model.parameter_entries()) {
            check_size("load_from", e);
            memory_.ex.upload(encoder_.parameter(e.name), e.value.data, std::size_t(e.value.numel()) * sizeof(float));
            ++copied;
        }
        if constexpr (requires { model.quantized_entries(); })
            for (const auto& q : model.quantized_entries()) {
                encoder_.set_quantized_weight(q.name, model.quantized_weight(q.layer, q.target));
                ++quantized;
            }
        check(copied == encoder_.layout().size() + encoder_.adapter_layout().size() &&
                  quantized == encoder_.quantized_layout().size(),
              "gpu::ranking_step::load_from: the host model lacks some parameters of the device encoder (another "
              "configuration, LoRA or QLoRA?)");
        if constexpr (requires { model.dropout_calls(); }) { // LoRA dropout's key and count (a checkpoint's)
            encoder_.set_dropout_seed(model.dropout_seed());
            encoder_.set_dropout_calls(model.dropout_calls());
        }
        encoder_.parameters_changed();
    }
    // The device's parameters into the host model's entries of the same names.
    template <class Model>
    void store_into(Model& model) {
        for (const parameter_entry& e : model.parameter_entries()) {
            check_size("store_into", e);
            memory_.ex.download(e.value.data, encoder_.parameter(e.name), std::size_t(e.value.numel()) * sizeof(float));
        }
        if constexpr (requires { model.set_dropout_calls(std::uint64_t{}); }) {
            model.set_dropout_seed(encoder_.dropout_seed());
            model.set_dropout_calls(encoder_.dropout_calls());
        }
    }

    void zero_gradients() { encoder_.zero_gradients(); }
    float* gradient(const std::string& name) { return encoder_.gradient(name); }
    float* parameter(const std::string& name) { return encoder_.parameter(name); }
    double clip_gradients(double max_norm) { return encoder_.clip_gradients(max_norm); }
    double gradient_norm() { return encoder_.gradient_norm(); }
    void adamw_step(double lr, const adamw_options& o) { encoder_.adamw_step(lr, o); }
    long long adamw_steps() const { return encoder_.adamw_steps(); }
    void set_adamw_steps(long long t) { encoder_.set_adamw_steps(t); }

    // The embeddings (texts, d) of the last forward_backward, as the sentence encoder returns them, in Ex's memory.
    const float* embeddings() const { return sentence_.normalize ? f("rank.embedded") : f("rank.pooled"); }

    // Loss of one batch and its parameter gradients added (zero_gradients clears them). tokens: `pairs` anchors,
    // `pairs` positives, then the hard negatives (the same number per anchor), right-padded rows as the tokenizer
    // gives them (tokens.time <= max_length).
    double forward_backward(const embed::token_batch& tokens, index_t pairs, const embed::ranking_loss_options& loss) {
        const long long n = tokens.batch, b = pairs, N = shape_.texts(), T = options_.time;
        const int d = config_.d_model;
        check(b >= 1 && b <= shape_.pairs && n >= 2 * b && (n - 2 * b) % b == 0 && n <= N && tokens.time <= T &&
                  std::int64_t(tokens.ids.size()) == n * tokens.time && std::int64_t(tokens.lengths.size()) == n,
              [&] {
                  return "gpu::ranking_step: a batch of " + std::to_string(n) + " texts x " +
                         std::to_string(tokens.time) + " tokens with " + std::to_string(b) +
                         " pairs does not fit the planned " + std::to_string(shape_.pairs) + " pairs (" +
                         std::to_string(N) + " texts) x " + std::to_string(T) +
                         " tokens, or is not anchors, positives and the same number of negatives per anchor";
              });
        check(loss.scale > 0, "gpu::ranking_step: scale must be positive");
        const long long m = n - b; // candidates: positives, then negatives
        repack(tokens);
        const float* hidden =
            encoder_.forward(ids_.data(), key_lengths_.data(), types_.empty() ? nullptr : types_.data(),
                             shape_.packed ? doc_start_.data() : nullptr, packing_.rows, dropout_positions_.data());
        Ex& ex = memory_.ex;
        ex.upload(buf("rank.starts"), starts_.data(), starts_.size() * sizeof(std::int64_t));
        ex.upload(buf("rank.lengths"), lengths_.data(), lengths_.size() * sizeof(std::int64_t));
        ex.upload(buf("rank.owner"), owner_.data(), owner_.size() * sizeof(std::int32_t));
        const auto* starts = as<std::int64_t>("rank.starts");
        const auto* lengths = as<std::int64_t>("rank.lengths");
        const pool_kind mode = pool_kind(int(sentence_.pooling));
        ex.pool_forward(mode, f("rank.pooled"), as<std::int32_t>("rank.arg"), hidden, starts, lengths, n, d);
        const float* e = f("rank.pooled");
        if (sentence_.normalize) {
            ex.normalize_rows(f("rank.embedded"), as<double>("rank.embedded_norm"), e, n, d, true);
            e = f("rank.embedded");
        }
        float* unit = f("rank.unit");
        ex.normalize_rows(unit, as<double>("rank.unit_norm"), e, n, d, false);
        float* scores = f("rank.scores");
        matmul_args g; // S (b, m) = scale u_a u_c^T
        g.trans_b = true, g.m = b, g.n = m, g.k = d, g.alpha = float(loss.scale), g.a = unit, g.lda = d;
        g.b = unit + b * d, g.ldb = d, g.c = scores, g.ldc = m;
        ex.matmul(g);
        ex.ranking_lse(as<double>("rank.row_lse"), as<double>("rank.col_lse"), as<double>("rank.terms"), scores, b, m,
                       loss.symmetric);
        terms_.resize(std::size_t(2 * b));
        ex.download(terms_.data(), buf("rank.terms"), terms_.size() * sizeof(double));
        double forward = 0, backward = 0; // embed::ranking_loss_forward's order
        for (long long i = 0; i < b; ++i)
            forward += terms_[std::size_t(i)];
        for (long long j = 0; j < b; ++j)
            backward += terms_[std::size_t(b + j)];
        const double value = loss.symmetric ? (forward + backward) / (2.0 * double(b)) : forward / double(b);

        // Backward: dS, then d u of anchors and candidates, the normalisations, the pooling, the encoder.
        ex.ranking_dscores(scores, as<double>("rank.row_lse"), as<double>("rank.col_lse"), b, m,
                           1.0 / double(b) * (loss.symmetric ? 0.5 : 1.0), loss.symmetric);
        float* dunit = f("rank.dunit");
        matmul_args da; // du_a (b, d) = scale dS u_c
        da.m = b, da.n = d, da.k = m, da.alpha = float(loss.scale), da.a = scores, da.lda = m, da.b = unit + b * d;
        da.ldb = d, da.c = dunit, da.ldc = d;
        ex.matmul(da);
        matmul_args dc; // du_c (m, d) = scale dS^T u_a
        dc.trans_a = true, dc.m = m, dc.n = d, dc.k = b, dc.alpha = float(loss.scale), dc.a = scores, dc.lda = m;
        dc.b = unit, dc.ldb = d, dc.c = dunit + b * d, dc.ldc = d;
        ex.matmul(dc);
        ex.normalize_rows_backward(dunit, unit, as<double>("rank.unit_norm"), n, d);
        if (sentence_.normalize)
            ex.normalize_rows_backward(dunit, f("rank.embedded"), as<double>("rank.embedded_norm"), n, d);
        float* dhidden = encoder_.dhidden_buffer();
        ex.pool_backward(mode, dhidden, dunit, as<std::int32_t>("rank.arg"), as<std::int32_t>("rank.owner"), starts,
                         lengths, packing_.tokens(), d); // every token of the rows computed: 0 on padding
        encoder_.backward(dhidden);
        return value;
    }

private:
    std::byte* buf(const std::string& name) const { return base_ + plan_.at(name).offset; }
    template <class T>
    T* as(const std::string& name) const {
        return reinterpret_cast<T*>(buf(name));
    }
    float* f(const std::string& name) const { return as<float>(name); }
    void check_size(const char* who, const parameter_entry& e) {
        for (const auto* layout : {&encoder_.layout(), &encoder_.adapter_layout()})
            for (const parameter_slice& s : *layout)
                if (s.name == e.name) {
                    check(s.size() == std::size_t(e.value.numel()), [&] {
                        return std::string("gpu::ranking_step::") + who + ": " + e.name + " has " +
                               std::to_string(e.value.numel()) + " elements, the device encoder " +
                               std::to_string(s.size());
                    });
                    return;
                }
        fail(std::string("gpu::ranking_step::") + who + ": the device encoder has no parameter named '" + e.name +
             "' (LoRA on the host model but not in the step's shape, or another configuration?)");
    }
    // The tokenizer's rows (n x time) into the rows of the plan's time (pack_texts: one per text, or packed end to
    // end), padding id 0 and type 0: the encoder's ids, types, key_lengths (each row's tokens filled) and doc_start
    // (a text's first token in its row; padding after the last text is a text of its own that no text sees), and the
    // pooling's segments: each text's first token and length, and each token's text (-1 on padding); and each token's
    // place in the CPU sentence_encoder's layout, which keys its LoRA dropout mask (0 on padding).
    void repack(const embed::token_batch& t) {
        const long long T = options_.time, n = t.batch, tt = t.time;
        packing_ = pack_texts(t.lengths.data(), n, T, shape_.packed);
        const long long R = packing_.rows, P = shape_.planned_rows();
        check(R <= P, [&] {
            return "gpu::ranking_step: the batch's " + std::to_string(n) + " texts pack into " + std::to_string(R) +
                   " rows of " + std::to_string(T) + " tokens, the plan holds " + std::to_string(P) +
                   " (ranking_step_shape::rows; 0 plans one row per text, which always fits)";
        });
        const auto tokens = std::size_t(R * T);
        ids_.assign(tokens, 0);
        const bool types = config_.type_vocab_size > 0 && !t.type_ids.empty();
        types_.assign(types ? tokens : 0, 0);
        owner_.assign(tokens, -1);
        doc_start_.resize(tokens);
        key_lengths_.assign(packing_.used.begin(), packing_.used.end());
        starts_.resize(std::size_t(n)), lengths_.resize(std::size_t(n));
        dropout_positions_.assign(tokens, 0);
        long long cpu_at = 0; // sentence_encoder's place of text b's first token
        for (long long b = 0; b < n; ++b) {
            const auto i = std::size_t(b);
            const long long len = std::int64_t(t.lengths[i]), row = packing_.row[i], at = row * T + packing_.offset[i];
            starts_[i] = at, lengths_[i] = len;
            std::copy_n(t.ids.begin() + b * tt, len, ids_.begin() + at);
            if (types) std::copy_n(t.type_ids.begin() + b * tt, len, types_.begin() + at);
            std::fill_n(owner_.begin() + at, len, std::int32_t(b));
            std::fill_n(doc_start_.begin() + at, len, packing_.offset[i]);
            if (!sentence_.pack) cpu_at = b * tt; // its (texts, tokens.time) rows; packed: end to end
            std::iota(dropout_positions_.begin() + at, dropout_positions_.begin() + at + len, cpu_at);
            cpu_at += len;
        }
        for (long long r = 0; r < R; ++r) // the padding after a row's last text
            std::fill(doc_start_.begin() + r * T + packing_.used[std::size_t(r)], doc_start_.begin() + (r + 1) * T,
                      packing_.used[std::size_t(r)]);
    }

    model_config config_;
    embed::sentence_config sentence_;
    ranking_step_shape shape_;
    encoder_plan_options options_;
    arena_plan plan_;
    step_memory<Ex> memory_;
    std::byte* base_;
    encoder_step<Ex> encoder_; // after plan_ and memory_: it keeps references to them
    text_packing packing_;
    std::vector<std::int32_t> ids_, types_, owner_;
    std::vector<std::int64_t> doc_start_, key_lengths_, starts_, lengths_, dropout_positions_;
    std::vector<double> terms_;
};

// AdamW over a ranking_step's encoder (encoder_step::adamw_step: tl::adamw's update and decay rule), an Optimizer
// (optim/optimizer.hpp) for train/checkpoint.hpp, as gpu::device_adamw is a device_decoder's: its state is the
// step's moments, copied through the host under tl::adamw's names ("exp_avg.<name>", "exp_avg_sq.<name>") and
// tl::encoder's shapes, for every parameter that trains (with LoRA the adapter's; otherwise all but the frozen
// pooler, which tl::adamw never steps), so a device run's
// checkpoint holds a CPU run's files and either resumes the other. Like tl::adamw it has no state before its first
// step: a checkpoint of step 0 holds no moments, one of a later step all of them.
//
//   gpu::ranking_adamw<Ex> opt(step, options);
//   opt.step(lr);                                                   // after clip_gradients
//   step.store_into(model); save_training_checkpoint(model, opt, state, dir);
//   state = load_training_checkpoint(model, opt, dir); step.load_from(model);   // the moments go to the step
template <class Ex>
class ranking_adamw {
public:
    explicit ranking_adamw(ranking_step<Ex>& step, adamw_options options = {}) : step_(&step), options_(options) {}

    void step(double lr) {
        step_->adamw_step(lr, options_);
        has_state_ = true;
    }
    long long steps() const { return step_->adamw_steps(); }
    void set_steps(long long t) { step_->set_adamw_steps(t); }
    const adamw_options& options() const { return options_; }

    // f(name, cview<float>) for each moment, copied to the host (saving).
    template <class F>
    void visit_state(F&& f) const {
        if (!has_state_) return;
        std::vector<float> host;
        for (const parameter_slice& s : trained())
            for (int kind = 0; kind < 2; ++kind) {
                host.resize(s.size());
                step_->executor().download(host.data(), moment(kind, s.name), s.size() * sizeof(float));
                f(kind_name(kind) + s.name, cview<float>{host.data(), shape_of(s)});
            }
    }
    // f(name, tensor_view<float>) fills each moment on the host, which then goes to the step (loading).
    template <class F>
    void visit_state(F&& f) {
        if (!has_state_) return;
        std::vector<float> host;
        for (const parameter_slice& s : trained())
            for (int kind = 0; kind < 2; ++kind) {
                host.resize(s.size());
                f(kind_name(kind) + s.name, tensor_view<float>{host.data(), shape_of(s)});
                step_->executor().upload(moment(kind, s.name), host.data(), s.size() * sizeof(float));
            }
    }
    // Zero moments; the state exists (visit_state visits it) when the checkpoint holds moments.
    template <class Has>
    void reset_state(Has&& has) {
        has_state_ = false;
        for (const parameter_slice& s : step_->encoder().trainable_layout()) {
            for (int kind = 0; kind < 2; ++kind)
                step_->executor().zero(moment(kind, s.name), s.size() * sizeof(float));
            has_state_ = has_state_ || (trains(s.name) && has(kind_name(0) + s.name));
        }
    }

private:
    static std::string kind_name(int kind) { return kind == 0 ? "exp_avg." : "exp_avg_sq."; }
    static bool trains(const std::string& name) { return !name.starts_with("pooler."); } // encoder_step's rule
    // tl::encoder's shape of a parameter: LayerNorms' weights and biases are vectors, the rest matrices.
    static shape shape_of(const parameter_slice& s) {
        const bool vector = s.name.ends_with(".bias") || s.name.find("LayerNorm") != std::string::npos;
        return vector ? shape{index_t(s.size())} : shape{index_t(s.rows), index_t(s.cols)};
    }
    std::vector<parameter_slice> trained() const {
        std::vector<parameter_slice> out;
        for (const parameter_slice& s : step_->encoder().trainable_layout())
            if (trains(s.name)) out.push_back(s);
        return out;
    }
    float* moment(int kind, const std::string& name) const {
        return kind == 0 ? step_->encoder().first_moment(name) : step_->encoder().second_moment(name);
    }

    ranking_step<Ex>* step_;
    adamw_options options_;
    bool has_state_ = false;
};
static_assert(Optimizer<ranking_adamw<cpu_ops>>);

} // namespace tl::gpu
