// tinylm/cuda/encoder_step.hpp: forward and backward of a BERT-shaped encoder (tl::encoder's computation) over the
// buffers of plan_encoder_step (encoder_plan.hpp), written once against an executor of ops: gpu::cpu_ops (host
// memory, the CPU drivers of the kernels' arithmetic; checked against tl::encoder in test_encoder) or gpu::gpu_ops
// (device memory, tinylm::cuda's kernels and cuBLASLt).
//
// The order is tl::encoder's (model/encoder.hpp, model/block.hpp's post-norm block):
//   summed = word[ids] + (position[t] + type[type_ids]);  x_0 = LayerNorm_e(summed)   (t from its text's start)
//   per layer l: q, k, v = x_l W^T + b; attn = bidirectional attention (right padding: key_lengths; texts
//                packed into rows: doc_start, attention inside each text)
//                (attention.cu's row kernels, through products, or fused: encoder_plan_options::attention)
//                tmp = attn Wo^T + bo;  resid1 = x_l + tmp, normed1 = LayerNorm_1(resid1)        (fused)
//                up = normed1 Wu^T + bu; act = gelu(up); tmp = act Wd^T + bd
//                resid2 = normed1 + tmp, x_{l+1} = LayerNorm_2(resid2)                             (fused)
//   hidden = x_L
// The step returns hidden (rows * T, d) in Ex's memory; a loss outside (pooling, the ranking loss of embed/) hands
// d loss / d hidden back to backward(), which adds every parameter's gradient to "gradients" (zero_gradients
// clears it): in a post-norm block the LayerNorm's input gradient is the residual stream's and the sublayer's
// alike, so the backward runs each norm's backward into a buffer to which the sublayer's input gradient then adds.
//
// bf16 mixed precision, the optimizer (gradient_norm, clip_gradients, adamw_step) and determinism are
// decoder_step's: the weights' bf16 copy once per optimizer step, activation operands converted right before their
// products, everything else f32. BertModel's pooler is carried in "parameters" (a saved folder keeps it) but, as in
// tl::encoder, frozen: its gradient stays 0 and AdamW skips it.
//
// LoRA (encoder_plan_options::lora; decoder_step's block): each targeted projection adds
// scale (x A^T) B^T, scale = alpha / rank, with x A^T kept for the backward; the base is frozen, so the backward skips
// every base gradient (projections, biases, LayerNorms, the embedding tables and their LayerNorm, whose input
// gradient nothing needs) and computes t = dy B, dB += scale dy^T (x A^T), dA += scale t^T x, dx += scale t A.
// "gradients" and AdamW's moments then cover the adapter's block only, and AdamW decays every adapter matrix (as
// tl::adamw decays param_kind::adapter).
//
// QLoRA (lora.quantized_base): the frozen projection weights are held in NF4 (encoder_nf4_layout; set_quantized_weight
// takes tl::encoder's quantized_weight, double quantisation) and dequantised into scratch.nf4 right before each
// product that reads them (the forward's x W^T, the backward's dy W), decoder_step's way (nf4_row.hpp's arithmetic,
// tl::dequantize's values); biases, LayerNorms and embeddings stay f32 in "parameters".
//
// LoRA dropout (lora.dropout > 0): every forward is a training forward (the step keeps its activations for
// backward), so each counts one before it runs and each adapter reads dropout(x), tl::encoder's masks bit for bit as
// decoder_step draws tl::decoder's (lora_dropout.hpp's state, dropout_row.hpp's masks: the same key, training-forward
// count, layer, projection and element; the default key is tl::encoder(seed 0)'s): dropout(x) into scratch.lora.x for
// x A^T, drawn again in the backward for dA and for the masked input gradient scale (t A) * mask. The masks are keyed
// by each token's place in tl::encoder's (rows, T) batch: forward's dropout_positions gives it where the caller's
// CPU model lays the tokens out otherwise (the ranking step: sentence_encoder packs the texts end to end).
#pragma once

#include <tinylm/cuda/attention_products.hpp>
#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/blas.hpp>
#include <tinylm/cuda/encoder_plan.hpp>
#include <tinylm/cuda/flat_step.hpp>
#include <tinylm/cuda/lora_dropout.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/optim/adamw.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tl::gpu {

template <class Ex>
class encoder_step : public flat_step<Ex> {
    using base_t = flat_step<Ex>;
    using base_t::buf, base_t::f, base_t::linear, base_t::linear_dx, base_t::linear_dw, base_t::operand, base_t::run,
        base_t::ex_, base_t::plan_;
    template <class T>
    T* as(const std::string& name) const { // (a using-declaration does not make a dependent base's template usable)
        return base_t::template as<T>(name);
    }

public:
    // base: the start of plan.bytes() of Ex's memory (a device_arena's, or a host buffer for cpu_ops). Attention is
    // bidirectional: every query sees every key, so the products are whole (query block 0).
    encoder_step(const model_config& c, const encoder_plan_options& o, const arena_plan& plan, std::byte* base, Ex& ex)
        : base_t(plan, base, ex, o.bf16_weights), c_(c), o_(o), lora_(o.lora.rank > 0),
          nf4_(lora_ && o.lora.quantized_base), layout_(encoder_parameter_layout(c, nf4_)),
          adapter_layout_(encoder_adapter_layout(c, o.lora)),
          products_(ex, this->products_scratch(o.attention, o.attention_chunk(), 0)), rows_(o.batch),
          n_(o.batch * o.time) {
        if (nf4_) nf4_layout_ = encoder_nf4_layout(c), nf4_offsets_.assign(nf4_layout_.size(), 0.0f);
        this->zero_gradients(); // the pooler's stays 0
    }

    // The base's parameters ("parameters": BertModel's names), the adapter's with LoRA ("adapter": peft's names), and
    // those that train (the base's, or the adapter's with LoRA: "gradients", "adam.m", "adam.v" follow them).
    const std::vector<parameter_slice>& layout() const { return layout_; }
    const std::vector<parameter_slice>& adapter_layout() const { return adapter_layout_; }
    const std::vector<parameter_slice>& trainable_layout() const { return lora_ ? adapter_layout_ : layout_; }
    // The parameter (or the gradient of a trainable one) by name, in Ex's memory.
    float* parameter(const std::string& name) {
        if (float* p = find(layout_, "parameters", name)) return p;
        if (float* p = find(adapter_layout_, "adapter", name)) return p;
        fail("encoder_step: no parameter named '" + name + "'");
    }
    float* gradient(const std::string& name) {
        if (float* g = find(trainable_layout(), "gradients", name)) return g;
        fail("encoder_step: no trainable parameter named '" + name + "'" + (lora_ ? " (the base is frozen)" : ""));
    }
    // QLoRA: the NF4 projection weight `name` (BertModel's, e.g. encoder.layer.0.attention.self.query.weight), as
    // tl::encoder holds it (quantized_weight: double quantisation, the shape of the projection).
    void set_quantized_weight(const std::string& name, const nf4_tensor& q) {
        for (std::size_t i = 0; i < nf4_layout_.size(); ++i) {
            if (nf4_layout_[i].name != name) continue;
            this->upload_nf4(nf4_layout_[i], q, "encoder_step");
            nf4_offsets_[i] = q.offset;
            return;
        }
        fail("encoder_step: no NF4 weight named '" + name + "'" + (nf4_ ? "" : " (the base is not quantised)"));
    }
    // The NF4 weights' layout (QLoRA; empty otherwise): which of them set_quantized_weight must receive.
    const std::vector<nf4_slice>& quantized_layout() const { return nf4_layout_; }
    // The NF4 weight `name` as the products read it: its arrays in Ex's memory and its offset.
    nf4_weight quantized_weight(const std::string& name) const {
        for (std::size_t i = 0; i < nf4_layout_.size(); ++i)
            if (nf4_layout_[i].name == name) return this->nf4_view(nf4_layout_[i], nf4_offsets_[i]);
        fail("encoder_step: no NF4 weight named '" + name + "'" + (nf4_ ? "" : " (the base is not quantised)"));
    }
    // After writing parameters directly (a checkpoint, a test): their bf16 copy is made again before the next
    // products. adamw_step does this itself.
    void parameters_changed() { base_stale_ = adapter_stale_ = true; }

    // LoRA dropout's state, as tl::encoder's (model/projection_table.hpp), which a checkpoint saves and restores: the
    // masks' key (by default tl::encoder(seed 0)'s), the training forwards so far (forward counts one before it runs),
    // and the rows of the global batch before this process's (data parallel).
    std::uint64_t dropout_seed() const { return dropout_.seed; }
    void set_dropout_seed(std::uint64_t s) { dropout_.seed = s; }
    std::uint64_t dropout_calls() const { return dropout_.calls; }
    void set_dropout_calls(std::uint64_t n) { dropout_.calls = n; }
    void set_dropout_row_offset(long long rows) { dropout_.row0 = rows; }

    // The hidden states of the last forward (rows T, d), and a buffer of that shape in Ex's memory for a caller's
    // d loss / d hidden; both in the arena.
    const float* hidden() const { return f("hidden"); }
    float* dhidden_buffer() const { return f("dhidden"); }

    // ids (rows * T, host memory). key_lengths (rows, host, optional): row b holds key_lengths[b] real tokens, then
    // padding that no query attends to. type_ids (rows * T, host, optional): token types, 0 when absent.
    // doc_start (rows * T, host, optional): rows packed with several texts, as tl::encoder takes them: for each token
    // the index in its row of its text's first token; attention stays inside each text and positions restart at
    // each text's start. rows: the rows this batch fills (0: the plan's batch); only those are computed, forward and
    // backward, so a batch of fewer rows (texts packed end to end) costs only its rows. dropout_positions (rows * T,
    // host, optional; LoRA dropout only): for each token its index in the flat token layout of the CPU model whose
    // masks this forward draws (absent: its index here, as tl::encoder given these rows). Returns hidden() (rows T, d).
    const float* forward(const std::int32_t* ids, const std::int64_t* key_lengths = nullptr,
                         const std::int32_t* type_ids = nullptr, const std::int64_t* doc_start = nullptr,
                         long long rows = 0, const std::int64_t* dropout_positions = nullptr) {
        check(rows >= 0 && rows <= o_.batch, [&] {
            return "encoder_step: " + std::to_string(rows) + " rows, the plan has " + std::to_string(o_.batch);
        });
        rows_ = rows > 0 ? rows : o_.batch;
        n_ = rows_ * o_.time;
        const long long n = n_, T = o_.time;
        upload_groups("word", ids, c_.vocab_size);
        std::vector<std::int32_t> positions(static_cast<std::size_t>(n)), types(static_cast<std::size_t>(n), 0);
        for (long long i = 0; i < n; ++i) {
            const long long t = i % T, start = doc_start ? doc_start[i] : 0;
            check(!doc_start || (start >= 0 && start <= t && (t == 0 || start == t || start == doc_start[i - 1])), [&] {
                return "encoder_step: doc_start[" + std::to_string(i) + "] = " + std::to_string(start) +
                       " is not the start of the text holding token " + std::to_string(t) + " of its row";
            });
            positions[std::size_t(i)] = std::int32_t(t - start); // below T <= max_seq_len: the plan checked T
        }
        if (type_ids) {
            check(c_.type_vocab_size > 0, "encoder_step: type_ids given, but the model has no token types");
            std::copy_n(type_ids, n, types.begin());
        }
        upload_groups("position", positions.data(), c_.max_seq_len);
        if (c_.type_vocab_size > 0) upload_groups("type", types.data(), c_.type_vocab_size);
        ex_.upload(buf("ids"), ids, std::size_t(n) * sizeof(std::int32_t));
        ex_.upload(buf("position_ids"), positions.data(), positions.size() * sizeof(std::int32_t));
        ex_.upload(buf("type_ids"), types.data(), types.size() * sizeof(std::int32_t));
        packed_ = doc_start != nullptr;
        if (packed_) ex_.upload(buf("doc_start"), doc_start, std::size_t(n) * sizeof(std::int64_t));
        padded_ = key_lengths != nullptr;
        if (padded_) {
            for (long long b = 0; b < rows_; ++b)
                check(key_lengths[b] >= 1 && key_lengths[b] <= T, [&] {
                    std::string m = "encoder_step: key_lengths[";
                    m += std::to_string(b);
                    m += "] = ";
                    m += std::to_string(key_lengths[b]);
                    m += " is not in [1, ";
                    m += std::to_string(T);
                    m += "]";
                    return m;
                });
            ex_.upload(buf("key_lengths"), key_lengths, std::size_t(rows_) * sizeof(std::int64_t));
        }
        if (o_.bf16_weights) { // the weights' bf16 copies once per optimizer step, not per product
            if (base_stale_) convert_block("parameters");
            if (lora_ && adapter_stale_) convert_block("adapter");
            base_stale_ = adapter_stale_ = false;
        }
        mapped_dropout_ = dropping() && dropout_positions != nullptr;
        if (mapped_dropout_)
            ex_.upload(buf("dropout_positions"), dropout_positions, std::size_t(n) * sizeof(std::int64_t));
        if (dropping()) ++dropout_.calls; // as tl::encoder counts its training forwards
        run_forward();
        has_forward_ = true;
        return hidden();
    }

    // Adds d loss / d parameter given dhidden = d loss / d hidden (rows T, d: the last forward's rows) in Ex's
    // memory (dhidden_buffer() or any other) of the last forward.
    void backward(const float* dhidden) {
        check(has_forward_, "encoder_step::backward: call forward first");
        has_forward_ = false;
        run_backward(dhidden);
    }

    // AdamW's moments of the trainable parameter named (Ex's memory): with adamw_steps(), what a checkpoint saves
    // and restores (gpu::ranking_adamw, cuda/ranking_step.hpp). The frozen pooler has them too, always 0.
    float* first_moment(const std::string& name) { return moment("adam.m", name); }
    float* second_moment(const std::string& name) { return moment("adam.v", name); }

    // One AdamW step at learning rate lr, tl::adamw's update and decay rule by name: never LayerNorms or biases, the
    // three embedding tables unless decay_embeddings is off, every other matrix; the frozen pooler not at all.
    void adamw_step(double lr, const adamw_options& o) {
        if (lora_) { // every adapter matrix trains and decays
            this->adamw_over(adapter_layout_, "adapter", lr, o, [](const std::string&) { return adamw_rule{}; });
            adapter_stale_ = true;
            return;
        }
        this->adamw_over(layout_, "parameters", lr, o, [&](const std::string& name) {
            const bool is_norm = name.find("LayerNorm") != std::string::npos, is_bias = name.ends_with(".bias");
            const bool is_embedding = name.starts_with("embeddings.") && name.ends_with("_embeddings.weight");
            return adamw_rule{!name.starts_with("pooler."),
                              !is_norm && !is_bias && (!is_embedding || o.decay_embeddings)};
        });
        base_stale_ = true;
    }

private:
    float* layer(int l, std::string_view name) const {
        return f("layer." + std::to_string(l) + "." + std::string(name));
    }
    float* find(const std::vector<parameter_slice>& layout, const char* block, const std::string& name) const {
        for (const parameter_slice& s : layout)
            if (s.name == name) return f(block) + s.offset;
        return nullptr;
    }
    float* moment(const char* block, const std::string& name) const {
        if (float* m = find(trainable_layout(), block, name)) return m;
        fail("encoder_step: no trainable parameter named '" + name + "' has AdamW moments");
    }
    void convert_block(const std::string& block) {
        ex_.to_bf16(as<std::uint16_t>(block + ".bf16"), f(block),
                    (long long)plan_.at(block).bytes / (long long)sizeof(float));
    }
    // A LayerNorm's weight and bias gradients, or null when the base is frozen (LoRA): the kernels then skip them.
    float* norm_gradient(const std::string& name) { return lora_ ? nullptr : gradient(name); }
    // The positions of each index of `ids` (n, checked to lie in [0, range)) grouped by index, uploaded to
    // embedding.<table>.*: the deterministic scatter of the table's gradient.
    void upload_groups(const std::string& table, const std::int32_t* ids, long long range) {
        const token_groups g = group_positions_by_token(ids, n_, range);
        const std::string at = "embedding." + table + ".";
        ex_.upload(buf(at + "tokens"), g.tokens.data(), g.tokens.size() * sizeof(std::int32_t));
        ex_.upload(buf(at + "offsets"), g.offsets.data(), g.offsets.size() * sizeof(std::int32_t));
        ex_.upload(buf(at + "positions"), g.positions.data(), g.positions.size() * sizeof(std::int32_t));
        groups_[table == "word" ? 0 : table == "position" ? 1 : 2] = (long long)g.tokens.size();
    }
    void embedding_backward(const std::string& table, const std::string& name, const float* dsum) {
        const std::string at = "embedding." + table + ".";
        ex_.embedding_backward(gradient(name), as<std::int32_t>(at + "tokens"), as<std::int32_t>(at + "offsets"),
                               as<std::int32_t>(at + "positions"),
                               groups_[table == "word"       ? 0
                                       : table == "position" ? 1
                                                             : 2],
                               dsum, c_.d_model);
    }

    // A weight's operand: itself, or its place in the bf16 copy of its block (the base's or the adapter's).
    const void* weight_operand(const float* w) {
        if (!o_.bf16_weights) return w;
        const bool adapter = lora_ && w >= f("adapter") && w < f("adapter") + plan_.at("adapter").bytes / sizeof(float);
        return adapter ? as<std::uint16_t>("adapter.bf16") + (w - f("adapter"))
                       : as<std::uint16_t>("parameters.bf16") + (w - f("parameters"));
    }
    // Projection p's weight in layer l as a product's operand: its place in the base (or the base's bf16 copy), or
    // with QLoRA its NF4 form dequantised into scratch.nf4 (f32 or bf16, as the products read), right before its
    // product.
    const void* projection_weight(int l, proj p) {
        if (!nf4_) return weight_operand(parameter(bert_module(l, p) + ".weight"));
        static constexpr int slot[lora_target_count] = {0, 1, 2, 3, -1, 4, 5}; // q, k, v, o, (gate), up, down
        const std::size_t i = std::size_t(l) * 6 + std::size_t(slot[int(p)]);
        return this->dequantized_nf4(this->nf4_view(nf4_layout_[i], nf4_offsets_[i]));
    }
    bool targeted(proj p) const { return ((encoder_lora_targets(o_.lora) >> int(p)) & 1u) != 0; }
    float* adapter_input(int l, proj p) const { return layer(l, std::string("lora.") + lora_names[int(p)]); }
    float lora_scale() const { return o_.lora.alpha / float(o_.lora.rank); }

    // y (N, out) = x W^T + b (+ scale (x A^T) B^T with LoRA) of projection p in layer l; x an operand (N, in).
    void project(int l, proj p, float* y, const void* x) {
        const auto [in, out] = projection_shape(c_, p);
        const std::string m = bert_module(l, p);
        linear(y, x, projection_weight(l, p), n_, (long long)out, (long long)in);
        ex_.bias_add(y, parameter(m + ".bias"), n_, int(out));
        if (!targeted(p)) return;
        const long long r = o_.lora.rank;
        float* u = adapter_input(l, p);
        matmul_args g; // u (N, r) = x A^T (with dropout: dropout(x) A^T), kept for the backward
        g.trans_b = true, g.m = n_, g.n = r, g.k = (long long)in, g.a = dropping() ? dropped_input(l, p) : x;
        g.lda = (long long)in;
        g.b = weight_operand(parameter(m + ".lora_A.weight")), g.ldb = (long long)in, g.c = u, g.ldc = r;
        run(g);
        matmul_args h; // y += scale u B^T
        h.trans_b = true, h.m = n_, h.n = (long long)out, h.k = r, h.alpha = lora_scale();
        h.a = operand(u, n_ * r, "scratch.bf16.lora"), h.lda = r;
        h.b = weight_operand(parameter(m + ".lora_B.weight")), h.ldb = r, h.beta = 1, h.c = y, h.ldc = (long long)out;
        run(h);
    }
    // dx (N, in) = dy W (+ scale dy B A) + beta dx; and the gradients of what trains: dW += dy^T x and db += the
    // column sums of dy (a trained base), or the adapter's A and B (LoRA). dy in f32 and as an operand, x an operand.
    void project_backward(int l, proj p, float* dx, float beta, const float* dy, const void* dy_operand,
                          const void* x) {
        const auto [in, out] = projection_shape(c_, p);
        const std::string m = bert_module(l, p);
        linear_dx(dx, dy_operand, projection_weight(l, p), n_, (long long)out, (long long)in, beta);
        if (!lora_) {
            linear_dw(gradient(m + ".weight"), dy_operand, x, n_, (long long)out, (long long)in);
            ex_.bias_backward(gradient(m + ".bias"), dy, n_, int(out));
        }
        if (!targeted(p)) return;
        const long long r = o_.lora.rank;
        const float s = lora_scale();
        float* t = f("scratch.lora.t");
        matmul_args g; // t (N, r) = dy B
        g.m = n_, g.n = r, g.k = (long long)out, g.a = dy_operand, g.lda = (long long)out;
        g.b = weight_operand(parameter(m + ".lora_B.weight")), g.ldb = r, g.c = t, g.ldc = r;
        run(g);
        matmul_args db; // dB (out, r) += scale dy^T u
        db.trans_a = true, db.m = (long long)out, db.n = r, db.k = n_, db.alpha = s, db.a = dy_operand;
        db.lda = (long long)out, db.b = operand(adapter_input(l, p), n_ * r, "scratch.bf16.lora"), db.ldb = r;
        db.beta = 1, db.c = gradient(m + ".lora_B.weight"), db.ldc = r;
        run(db);
        const void* t_operand = operand(t, n_ * r, "scratch.bf16.lora"); // u's copy is done
        matmul_args da;                                                  // dA (r, in) += scale t^T x
        da.trans_a = true, da.m = r, da.n = (long long)in, da.k = n_, da.alpha = s, da.a = t_operand, da.lda = r;
        da.b = dropping() ? dropped_input(l, p) : x, da.ldb = (long long)in, da.beta = 1;
        da.c = gradient(m + ".lora_A.weight"), da.ldc = (long long)in;
        run(da);
        matmul_args dxa; // dx += scale t A (with dropout: its masked form, through scratch.lora.x, read by da above)
        dxa.m = n_, dxa.n = (long long)in, dxa.k = r, dxa.alpha = s, dxa.a = t_operand, dxa.lda = r;
        dxa.b = weight_operand(parameter(m + ".lora_A.weight")), dxa.ldb = (long long)in, dxa.beta = 1, dxa.c = dx;
        dxa.ldc = (long long)in;
        if (dropping()) dxa.beta = 0, dxa.c = f("scratch.lora.x");
        run(dxa);
        if (dropping()) ex_.dropout_backward(dx, f("scratch.lora.x"), n_ * (long long)in, dropout_mask_of(l, p));
    }

    // ---- LoRA dropout ----
    bool dropping() const { return lora_ && o_.lora.dropout > 0; }
    // The f32 input of projection p of layer l (its saved activation).
    const float* projection_input(int l, proj p) const {
        switch (p) {
        case proj::q:
        case proj::k:
        case proj::v:
            return layer(l, "x");
        case proj::o:
            return layer(l, "attn");
        case proj::up:
            return layer(l, "normed1");
        case proj::gate: // BERT has none (encoder_lora_targets drops it)
        case proj::down:
            break;
        }
        return layer(l, "act");
    }
    // tl::encoder's mask of projection p of layer l in this training forward.
    dropout_mask dropout_mask_of(int l, proj p) const {
        return dropout_.mask(o_.lora.dropout, c_.n_layers, l, p, projection_shape(c_, p).in,
                             mapped_dropout_ ? as<std::int64_t>("dropout_positions") : nullptr);
    }
    // dropout(input of p) into scratch.lora.x; returns its operand (bf16 products: its copy in scratch.bf16.lora_x).
    const void* dropped_input(int l, proj p) {
        const long long count = n_ * (long long)projection_shape(c_, p).in;
        ex_.dropout_forward(f("scratch.lora.x"), projection_input(l, p), count, dropout_mask_of(l, p));
        return operand(f("scratch.lora.x"), count, "scratch.bf16.lora_x");
    }

    attention_dims dims() const {
        attention_dims s{rows_, o_.time, c_.n_heads, c_.n_kv_heads, c_.head_dim(), 0};
        s.causal = false;
        return s;
    }
    attention_masks masks() const {
        return attention_masks(packed_ ? as<std::int64_t>("doc_start") : nullptr,
                               padded_ ? as<std::int64_t>("key_lengths") : nullptr);
    }
    void run_forward() {
        const long long n = n_;
        const int d = c_.d_model, q = c_.q_width(), ff = c_.d_ff, L = c_.n_layers;
        const float eps = float(c_.norm_eps);
        const bool types = c_.type_vocab_size > 0;
        ex_.embedding_sum_forward(f("embed.summed"), as<std::int32_t>("ids"),
                                  parameter("embeddings.word_embeddings.weight"), as<std::int32_t>("position_ids"),
                                  parameter("embeddings.position_embeddings.weight"),
                                  types ? as<std::int32_t>("type_ids") : nullptr,
                                  types ? parameter("embeddings.token_type_embeddings.weight") : nullptr, n, d);
        ex_.layernorm_forward(layer(0, "x"), f("embed.mean"), f("embed.rstd"), f("embed.summed"),
                              parameter("embeddings.LayerNorm.weight"), parameter("embeddings.LayerNorm.bias"), n, d,
                              eps);
        for (int l = 0; l < L; ++l) {
            const void* x = operand(layer(l, "x"), n * d, "scratch.bf16.a");
            project(l, proj::q, layer(l, "q"), x);
            project(l, proj::k, layer(l, "k"), x);
            project(l, proj::v, layer(l, "v"), x);
            if (o_.attention == attention_path::products)
                products_.forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                  masks(), dims());
            else if (o_.attention == attention_path::fused)
                ex_.attention_fused_forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"),
                                            layer(l, "v"), masks(), dims());
            else
                ex_.attention_forward(layer(l, "attn"), layer(l, "lse"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                      masks(), dims());
            project(l, proj::o, f("scratch.tmp"), operand(layer(l, "attn"), n * q, "scratch.bf16.a"));
            const std::string norm1 = bert_layer_norm(l, 1), norm2 = bert_layer_norm(l, 2);
            ex_.residual_layernorm_forward(layer(l, "resid1"), layer(l, "normed1"), layer(l, "mean1"),
                                           layer(l, "rstd1"), layer(l, "x"), f("scratch.tmp"),
                                           parameter(norm1 + ".weight"), parameter(norm1 + ".bias"), n, d, eps);
            project(l, proj::up, layer(l, "up"), operand(layer(l, "normed1"), n * d, "scratch.bf16.a"));
            ex_.gelu_forward(layer(l, "act"), layer(l, "up"), n * ff);
            project(l, proj::down, f("scratch.tmp"), operand(layer(l, "act"), n * ff, "scratch.bf16.a"));
            ex_.residual_layernorm_forward(layer(l, "resid2"), l + 1 < L ? layer(l + 1, "x") : f("hidden"),
                                           layer(l, "mean2"), layer(l, "rstd2"), layer(l, "normed1"), f("scratch.tmp"),
                                           parameter(norm2 + ".weight"), parameter(norm2 + ".bias"), n, d, eps);
        }
    }

    // dy: d loss / d x_{l+1}, the caller's dhidden first, then scratch.dx (d x_l) layer after layer.
    void run_backward(const float* dhidden) {
        const long long n = n_;
        const int d = c_.d_model, q = c_.q_width(), ff = c_.d_ff, L = c_.n_layers;
        float* dx = f("scratch.dx");
        float* dnormed = f("scratch.dnormed");
        const float* dy = dhidden;
        for (int l = L - 1; l >= 0; --l) {
            const std::string norm1 = bert_layer_norm(l, 1), norm2 = bert_layer_norm(l, 2);
            // LayerNorm_2: d resid2, which is d normed1 through the residual and d of the MLP's output
            ex_.layernorm_backward(dnormed, norm_gradient(norm2 + ".weight"), norm_gradient(norm2 + ".bias"), dy,
                                   layer(l, "resid2"), parameter(norm2 + ".weight"), layer(l, "mean2"),
                                   layer(l, "rstd2"), n, d);
            project_backward(l, proj::down, f("scratch.dact"), 0.0f, dnormed, operand(dnormed, n * d, "scratch.bf16.a"),
                             operand(layer(l, "act"), n * ff, "scratch.bf16.b"));
            ex_.gelu_backward(f("scratch.dup"), f("scratch.dact"), layer(l, "up"), n * ff);
            // d normed1 = d resid2 + the up projection's input gradient
            project_backward(l, proj::up, dnormed, 1.0f, f("scratch.dup"),
                             operand(f("scratch.dup"), n * ff, "scratch.bf16.a"),
                             operand(layer(l, "normed1"), n * d, "scratch.bf16.b"));
            // LayerNorm_1: d resid1, which is d x_l through the residual and d of attention's output
            ex_.layernorm_backward(dx, norm_gradient(norm1 + ".weight"), norm_gradient(norm1 + ".bias"), dnormed,
                                   layer(l, "resid1"), parameter(norm1 + ".weight"), layer(l, "mean1"),
                                   layer(l, "rstd1"), n, d);
            project_backward(l, proj::o, f("scratch.dattn"), 0.0f, dx, operand(dx, n * d, "scratch.bf16.a"),
                             operand(layer(l, "attn"), n * q, "scratch.bf16.b"));
            if (o_.attention == attention_path::products)
                products_.backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                                   f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"), layer(l, "attn"),
                                   layer(l, "lse"), masks(), dims());
            else if (o_.attention == attention_path::fused)
                ex_.attention_fused_backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                                             f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                             layer(l, "attn"), layer(l, "lse"), masks(), dims());
            else
                ex_.attention_backward(f("scratch.dq"), f("scratch.dk"), f("scratch.dv"), f("scratch.delta"),
                                       f("scratch.dattn"), layer(l, "q"), layer(l, "k"), layer(l, "v"),
                                       layer(l, "attn"), layer(l, "lse"), masks(), dims());
            // d x_l += the input gradients of q, k and v, in this order
            const void* x = operand(layer(l, "x"), n * d, "scratch.bf16.b");
            for (const auto& [p, grad] :
                 {std::pair{proj::q, "scratch.dq"}, {proj::k, "scratch.dk"}, {proj::v, "scratch.dv"}}) {
                const long long width = (long long)projection_shape(c_, p).out;
                project_backward(l, p, dx, 1.0f, f(grad), operand(f(grad), n * width, "scratch.bf16.a"), x);
            }
            dy = dx;
        }
        if (lora_) return; // the embeddings are frozen, and nothing below them needs a gradient
        // The embeddings' LayerNorm, then the three tables from d summed
        ex_.layernorm_backward(dnormed, gradient("embeddings.LayerNorm.weight"), gradient("embeddings.LayerNorm.bias"),
                               dy, f("embed.summed"), parameter("embeddings.LayerNorm.weight"), f("embed.mean"),
                               f("embed.rstd"), n, d);
        embedding_backward("word", "embeddings.word_embeddings.weight", dnormed);
        embedding_backward("position", "embeddings.position_embeddings.weight", dnormed);
        if (c_.type_vocab_size > 0) embedding_backward("type", "embeddings.token_type_embeddings.weight", dnormed);
    }

    model_config c_;
    encoder_plan_options o_;
    bool lora_, nf4_;
    std::vector<parameter_slice> layout_, adapter_layout_;
    std::vector<nf4_slice> nf4_layout_; // QLoRA
    std::vector<float> nf4_offsets_;    // each NF4 weight's mean scale (a host value the kernel takes)
    attention_products<Ex> products_;
    long long rows_ = 0, n_ = 0;      // the last forward's rows and tokens (rows_ T)
    long long groups_[3] = {0, 0, 0}; // distinct indices of the word, position and type groups
    bool base_stale_ = true, adapter_stale_ = true, padded_ = false, packed_ = false, has_forward_ = false;
    lora_dropout_state dropout_;
    bool mapped_dropout_ = false; // the last forward's masks keyed by dropout_positions
};

} // namespace tl::gpu
