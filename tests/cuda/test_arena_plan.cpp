// The device arena's plan (tinylm/cuda/arena_plan.hpp): aligned, disjoint offsets in one allocation; the plan of
// a whole decoder training step (tinylm/cuda/decoder_plan.hpp) against the sizes its header states, and an encoder's
// (tinylm/cuda/encoder_plan.hpp).
#include <tinylm/cuda/arena_plan.hpp>
#include <tinylm/cuda/decoder_plan.hpp>
#include <tinylm/cuda/encoder_plan.hpp>
#include <tinylm/model/families.hpp>
#include <tinylm/model/presets.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

using namespace tl;

BOOST_AUTO_TEST_SUITE(cuda_arena_plan)

BOOST_AUTO_TEST_CASE(offsets_are_aligned_disjoint_and_in_order) {
    gpu::arena_plan plan;
    const std::size_t a = plan.add("a", 10);
    const std::size_t b = plan.add_array<float>("b", 100);
    const std::size_t c = plan.add("c", 1, 1024);
    const std::size_t d = plan.add_array<double>("d", 3, 8);
    BOOST_TEST(a == 0u);
    BOOST_TEST(b == 512u);  // 10 bytes, the 256-byte gap, then the next multiple of 256
    BOOST_TEST(c == 2048u); // b ends at 912, its gap at 1168: the next multiple of 1024
    BOOST_TEST(d == 2312u); // c's byte and the gap end at 2305, then the next multiple of 8
    BOOST_TEST(plan.bytes() == 2312u + 24u + 256u);
    BOOST_TEST_REQUIRE(plan.entries().size() == 4u);
    for (std::size_t i = 1; i < plan.entries().size(); ++i) {
        const auto& prev = plan.entries()[i - 1];
        BOOST_TEST(plan.entries()[i].offset >= prev.offset + prev.bytes, plan.entries()[i].name);
    }
    BOOST_TEST(plan.entries()[1].bytes == 400u);
}

// Every buffer is followed by its gap, at least guard_bytes, the padding to the next buffer's alignment included,
// and the last one's gap ends the plan: a write one element past any buffer lands in a gap, never in a neighbour.
BOOST_AUTO_TEST_CASE(every_buffer_is_followed_by_its_guard_gap) {
    static_assert(gpu::guard_bytes == gpu::default_alignment);
    gpu::arena_plan plan;
    plan.add("a", 10);
    plan.add_array<float>("b", 100);
    plan.add("c", 1, 1024);
    plan.add_array<double>("d", 3, 8);
    plan.add("empty", 0);
    plan.add("e", 256);
    const auto& e = plan.entries();
    BOOST_TEST_REQUIRE(e.size() == 6u);
    const std::size_t gaps[] = {502, 1136, 263, 480, 256, 256}; // written out: b at 512, c at 2048, d at 2312
    for (std::size_t i = 0; i < e.size(); ++i) {
        BOOST_TEST(e[i].guard == gaps[i], e[i].name);
        BOOST_TEST(e[i].guard >= gpu::guard_bytes, e[i].name);
        const std::size_t next = i + 1 < e.size() ? e[i + 1].offset : plan.bytes();
        BOOST_TEST(e[i].offset + e[i].bytes + e[i].guard == next, e[i].name);
    }
    BOOST_TEST(plan.at("empty").offset == 2816u); // d's gap ends at 2336 + 256 = 2592: the next multiple of 256
    BOOST_TEST(plan.at("e").offset == 3072u);     // an empty buffer has its gap too
    BOOST_TEST(plan.bytes() == 3072u + 256u + 256u);
}

BOOST_AUTO_TEST_CASE(refuses_bad_alignments_and_overflow) {
    gpu::arena_plan plan;
    BOOST_CHECK_THROW(plan.add("x", 8, 3), tl::error);
    BOOST_CHECK_THROW(plan.add("x", 8, 0), tl::error);
    BOOST_CHECK_THROW(plan.add_array<double>("huge", SIZE_MAX / 4), tl::error);
    BOOST_CHECK_THROW(plan.add("big", SIZE_MAX - 100, 1), tl::error); // its gap would wrap around
    plan.add("big", SIZE_MAX - 300, 1);                               // ends with its gap at SIZE_MAX - 44
    BOOST_CHECK_THROW(plan.add("after", 1), tl::error);               // rounding up to 256 would wrap around
    BOOST_CHECK_THROW(plan.add("after", 200, 1), tl::error);          // the end would wrap around
    BOOST_CHECK_THROW(plan.add("after", 0, 1), tl::error);            // the gap would wrap around
}

namespace {

// Every buffer starts on a 256-byte boundary and ends a guard gap (at least guard_bytes) before the next one starts
// (sorted by offset: the plan must not rely on its own order).
void expect_aligned_and_disjoint(const gpu::arena_plan& plan) {
    std::vector<gpu::arena_plan::entry> e = plan.entries();
    std::sort(e.begin(), e.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
    for (std::size_t i = 0; i < e.size(); ++i) {
        BOOST_TEST_REQUIRE(e[i].offset % 256 == 0u, e[i].name);
        if (i > 0)
            BOOST_TEST_REQUIRE(e[i].offset >= e[i - 1].offset + e[i - 1].bytes + gpu::guard_bytes,
                               e[i - 1].name << " / " << e[i].name);
    }
    BOOST_TEST(plan.bytes() == e.back().offset + e.back().bytes + e.back().guard);
}

// The sum of decoder_plan.hpp's table, in bytes, written out from the config without the plan.
// products: attention through products, with the scores of `chunk` sequences.
std::size_t table_bytes(const model_config& c, std::size_t batch, std::size_t time, std::size_t logits_rows, bool bf16,
                        bool products, std::size_t chunk, bool checkpointing = false) {
    const std::size_t n = batch * time, d = std::size_t(c.d_model), q = std::size_t(c.n_heads * c.head_dim()),
                      kv = std::size_t(c.n_kv_heads * c.head_dim()), f = std::size_t(c.d_ff),
                      h = std::size_t(c.n_heads), v = std::size_t(c.vocab_size), p = std::size_t(parameter_count(c));
    std::size_t floats = 4 * p; // parameters, gradients, m, v
    const std::size_t layer_set = 3 * n * d + 2 * n * q + 2 * n * kv + 3 * n * f + 2 * n + h * n; // but x
    floats += std::size_t(c.n_layers) * (n * d + (checkpointing ? 0 : layer_set)) + (checkpointing ? layer_set : 0);
    floats += 2 * n * d + 3 * n + std::min(n, logits_rows) * v;       // final, cross-entropy, logits
    floats += 3 * n * d + 2 * n * q + 2 * n * kv + 3 * n * f + h * n; // scratch
    floats += 2 * time * std::size_t(c.head_dim() / 2);               // rope tables
    std::size_t bytes =
        4 * floats + 4 * (2 * n) + 8 * (2 * n) + 4 * (3 * n + 1) + 8 * (256 + 1) + gpu::blas_workspace_bytes;
    if (bf16) bytes += 2 * p + 2 * 2 * std::max(n * std::max({d, q, f}), std::min(n, logits_rows) * v);
    const std::size_t scores = chunk * h * time * time;
    if (products) bytes += 4 * 2 * scores + (bf16 ? 2 * (2 * n * q + 2 * n * kv + scores) : 0);
    return bytes;
}

} // namespace

BOOST_AUTO_TEST_CASE(decoder_step_plan_holds_the_stated_buffers_disjoint) {
    const model_config c = presets::tiny::value;
    for (const bool products : {false, true})
        for (const bool bf16 : {false, true}) {
            gpu::decoder_plan_options o;
            o.batch = 3, o.time = 17, o.logits_rows = 20, o.bf16_weights = bf16;
            o.attention = products ? gpu::attention_path::products : gpu::attention_path::rows;
            o.attention_sequences = 2;          // scores of two sequences at a time (products)
            o.checkpointing = products && bf16; // one layer's activations (work.*) and each layer's input
            const gpu::arena_plan plan = gpu::plan_decoder_step(c, o);
            expect_aligned_and_disjoint(plan);
            const std::size_t stated = table_bytes(c, 3, 17, 20, bf16, products, 2, o.checkpointing);
            BOOST_TEST(plan.bytes() >= stated);
            BOOST_TEST(plan.bytes() < stated + 2 * 256 * plan.entries().size()); // padding and gap
            const std::size_t n = 3 * 17;
            BOOST_TEST(plan.at("parameters").bytes == 4 * std::size_t(parameter_count(c)));
            BOOST_TEST(plan.at("adam.v").bytes == 4 * std::size_t(parameter_count(c)));
            BOOST_TEST(plan.at(o.checkpointing ? "work.gate" : "layer.1.gate").bytes == 4 * n * std::size_t(c.d_ff));
            BOOST_TEST(plan.at(o.checkpointing ? "work.k" : "layer.0.k").bytes == 4 * n * std::size_t(c.kv_width()));
            BOOST_TEST(plan.at("layer.1.x").bytes == 4 * n * std::size_t(c.d_model));
            BOOST_TEST(plan.at("logits").bytes == 4 * 20 * std::size_t(c.vocab_size)); // a chunk, not N x V
            BOOST_TEST(plan.at("doc_start").bytes == 8 * n);
            if (bf16) {
                BOOST_TEST(plan.at("parameters.bf16").bytes == 2 * std::size_t(parameter_count(c)));
                // the widest activation operand: N x d_ff here (51 x 176), more than a logits chunk (20 x 256)
                BOOST_TEST(plan.at("scratch.bf16.b").bytes == 2 * n * std::size_t(c.d_ff));
            } else
                BOOST_CHECK_THROW(plan.at("parameters.bf16"), tl::error);
            if (products) {
                BOOST_TEST(plan.at("attention.scores").bytes == 4 * 2 * std::size_t(c.n_heads) * 17 * 17);
                if (bf16) BOOST_TEST(plan.at("attention.bf16.p").bytes == 2 * 2 * std::size_t(c.n_heads) * 17 * 17);
            } else
                BOOST_CHECK_THROW(plan.at("attention.scores"), tl::error);
        }
}

// The course's 150M model at context 512, batch 64 (docs/gpu.md quotes the size; --log_level=message prints it).
BOOST_AUTO_TEST_CASE(decoder_step_plan_of_the_150m_preset) {
    const model_config c = presets::russian_novels_150m::value;
    for (const bool checkpointing : {false, true}) {
        gpu::decoder_plan_options o;
        o.batch = 64, o.time = 512, o.checkpointing = checkpointing;
        const gpu::arena_plan plan = gpu::plan_decoder_step(c, o);
        expect_aligned_and_disjoint(plan);
        // bf16 products, attention through products with one chunk of scores
        const std::size_t stated = table_bytes(c, 64, 512, 4096, true, true, 64, checkpointing);
        BOOST_TEST(plan.bytes() >= stated);
        BOOST_TEST(plan.bytes() < stated + 2 * 256 * plan.entries().size()); // padding and gap
        std::size_t gaps = 0; // the guard gaps, with the alignment's padding they take in
        for (const auto& e : plan.entries())
            gaps += e.guard;
        BOOST_TEST(gaps < 2 * 256 * plan.entries().size());
        BOOST_TEST_MESSAGE("150M preset, batch 64 x 512"
                           << (checkpointing ? ", checkpointing" : "") << ": " << plan.entries().size() << " buffers, "
                           << plan.bytes() << " bytes (" << double(plan.bytes()) / double(1ull << 30) << " GiB), "
                           << gaps << " bytes of guard gaps");
    }
}

// LoRA and QLoRA (rank 16 on all seven projections) of Qwen2.5-0.5B at batch 16 x 512: the frozen base without
// gradients or moments, and in NF4 the projections at about half a byte per weight (docs/gpu.md quotes the sizes).
BOOST_AUTO_TEST_CASE(decoder_step_plan_of_qwen2_5_0_5b_with_lora) {
    const model_config c = presets::qwen2_5_0_5b::value;
    std::size_t bytes[2] = {};
    for (const bool quantized : {false, true}) {
        gpu::decoder_plan_options o;
        o.batch = 16, o.time = 512;
        o.lora = {.rank = 16, .alpha = 32, .targets = lora_all, .quantized_base = quantized};
        const gpu::arena_plan plan = gpu::plan_decoder_step(c, o);
        expect_aligned_and_disjoint(plan);
        bytes[quantized] = plan.bytes();
        std::size_t adapter = 0;
        for (const gpu::parameter_slice& s : gpu::adapter_layout(c, o.lora))
            adapter += s.size();
        BOOST_TEST(plan.at("gradients").bytes == 4 * adapter);
        if (quantized) // about 0.52 byte per projection weight (codes and double-quantised scales)
            BOOST_TEST(double(plan.at("nf4.codes").bytes + plan.at("nf4.qabsmax").bytes) <
                       0.52 * double(parameter_count(c) - std::size_t(c.vocab_size * c.d_model)));
        BOOST_TEST_MESSAGE("Qwen2.5-0.5B, " << (quantized ? "QLoRA" : "LoRA")
                                            << " rank 16, batch 16 x 512: " << plan.entries().size() << " buffers, "
                                            << plan.bytes() << " bytes (" << double(plan.bytes()) / double(1ull << 30)
                                            << " GiB), adapter " << adapter << " parameters");
    }
    BOOST_TEST(bytes[1] < bytes[0]);
}

BOOST_AUTO_TEST_CASE(decoder_step_plan_refuses_what_the_kernels_lack) {
    gpu::decoder_plan_options o;
    model_config c = presets::tiny::value;
    c.norm = norm_kind::layernorm;
    BOOST_CHECK_EXCEPTION(gpu::plan_decoder_step(c, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("pre-norm RMSNorm") != std::string::npos;
    });
    c = presets::tiny::value;
    c.qkv_bias = true; // q, k, v biases are planned (Qwen2), the others are not
    BOOST_CHECK_NO_THROW(gpu::plan_decoder_step(c, o));
    c.dense_bias = true;
    BOOST_CHECK_THROW(gpu::plan_decoder_step(c, o), tl::error);
    o.lora = {.rank = 4, .alpha = 8, .dropout = 1.0f, .targets = lora_all};
    BOOST_CHECK_EXCEPTION(gpu::plan_decoder_step(presets::tiny::value, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("LoRA dropout must be in [0, 1)") != std::string::npos;
    });
    // Dropout: one projection's dropped input at the widest targeted input (d_ff: down), f32 and a bf16 copy.
    o.lora.dropout = 0.1f;
    const gpu::arena_plan dropping = gpu::plan_decoder_step(presets::tiny::value, o);
    const std::size_t widest = std::size_t(o.batch * o.time * presets::tiny::value.d_ff);
    BOOST_TEST(dropping.at("scratch.lora.x").bytes == 4 * widest);
    BOOST_TEST(dropping.at("scratch.bf16.lora_x").bytes == 2 * widest);
    o.lora.targets = lora_q | lora_v; // inputs of width d_model only
    BOOST_TEST(gpu::plan_decoder_step(presets::tiny::value, o).at("scratch.lora.x").bytes ==
               4 * std::size_t(o.batch * o.time * presets::tiny::value.d_model));
    o.lora.targets = lora_all, o.lora.dropout = 0;
    const gpu::arena_plan lora = gpu::plan_decoder_step(presets::tiny::value, o);
    BOOST_TEST(lora.at("gradients").bytes == lora.at("adapter").bytes); // the adapter trains, not the base
    BOOST_TEST(lora.at("layer.1.lora.down").bytes == 4 * std::size_t(o.batch * o.time) * 4);
    BOOST_CHECK_THROW(lora.at("scratch.lora.x"), tl::error); // nothing for dropout without it
    o.lora = {};
    o.batch = 0;
    BOOST_CHECK_EXCEPTION(gpu::plan_decoder_step(presets::tiny::value, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("batch 0") != std::string::npos;
    });
    o.batch = 2, o.attention_sequences = -1;
    BOOST_CHECK_EXCEPTION(gpu::plan_decoder_step(presets::tiny::value, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("attention_sequences -1") != std::string::npos;
    });
    o.attention_sequences = 0, o.attention_query_block = -1;
    BOOST_CHECK_EXCEPTION(gpu::plan_decoder_step(presets::tiny::value, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("attention_query_block -1") != std::string::npos;
    });
    BOOST_CHECK_EXCEPTION(gpu::arena_plan{}.at("nothing"), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("no buffer named 'nothing'") != std::string::npos;
    });
}

// An encoder step's plan: BertModel's parameters (counted here from BERT's shapes), the buffers its header names,
// aligned and disjoint; what the kernels lack refused by name. The size for all-MiniLM-L6-v2's shape (the
// contrastive recipe's model) at batch 64 x 128 is printed for docs/gpu.md.
BOOST_AUTO_TEST_CASE(encoder_step_plan_holds_bert_and_refuses_what_the_kernels_lack) {
    model_config c = families::bert::value;
    c.vocab_size = 30522, c.d_model = 384, c.n_layers = 6, c.n_heads = c.n_kv_heads = 12, c.d_head = 0;
    c.d_ff = 1536, c.max_seq_len = 512, c.type_vocab_size = 2, c.norm_eps = 1e-12, c.init_std = 0.02;
    c.rope_theta = 10000;
    const std::size_t d = 384, f = 1536, L = 6;
    const std::size_t layer = 4 * (d * d + d) + 2 * 2 * d + (f * d + f) + (d * f + d);
    const std::size_t parameters = (30522 + 512 + 2) * d + 2 * d + L * layer + d * d + d; // 22.7M with the pooler
    std::size_t laid_out = 0;
    for (const gpu::parameter_slice& s : gpu::encoder_parameter_layout(c)) {
        BOOST_TEST(s.offset == laid_out, s.name);
        laid_out += s.size();
    }
    BOOST_TEST(laid_out == parameters);
    gpu::encoder_plan_options o;
    o.batch = 64, o.time = 128;
    const gpu::arena_plan plan = gpu::plan_encoder_step(c, o);
    expect_aligned_and_disjoint(plan);
    const std::size_t n = 64 * 128;
    BOOST_TEST(plan.at("parameters").bytes == 4 * parameters);
    BOOST_TEST(plan.at("parameters.bf16").bytes == 2 * parameters);
    BOOST_TEST(plan.at("layer.5.act").bytes == 4 * n * f);
    BOOST_TEST(plan.at("hidden").bytes == 4 * n * d);
    BOOST_TEST(plan.at("key_lengths").bytes == 8 * 64);
    BOOST_TEST(plan.at("doc_start").bytes == 8 * n); // packed texts (ranking_step_shape::packed)
    BOOST_TEST(plan.at("attention.scores").bytes == 4 * 64 * 12 * 128 * 128);
    BOOST_TEST_MESSAGE("all-MiniLM-L6-v2's shape, batch 64 x 128: "
                       << plan.entries().size() << " buffers, " << plan.bytes() << " bytes ("
                       << double(plan.bytes()) / double(1ull << 30) << " GiB)");

    o.time = 513;
    BOOST_CHECK_EXCEPTION(gpu::plan_encoder_step(c, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("time 513") != std::string::npos;
    });
    o.time = 128;
    c.norm_position = norm_placement::pre;
    BOOST_CHECK_EXCEPTION(gpu::plan_encoder_step(c, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("post-norm LayerNorm") != std::string::npos;
    });
    BOOST_CHECK_THROW(gpu::plan_encoder_step(presets::tiny::value, o), tl::error); // a causal decoder
}

// With LoRA (09_retrieval's adapter: rank 8 on every projection) the base is frozen: gradients and AdamW's moments
// cover the adapter's block (laid out by encoder_adapter_layout under tl::encoder's names), x A^T is kept per
// targeted projection. LoRA dropout adds one projection's dropped input (the widest targeted input: d_ff, down's),
// its bf16 copy and the tokens' places in the CPU's layout; a rate of 1 is refused. QLoRA moves the projection
// weights into NF4 blocks. The sizes at 09's device shape are printed.
BOOST_AUTO_TEST_CASE(encoder_step_plan_with_lora_trains_the_adapter_only) {
    model_config c = families::bert::value;
    c.vocab_size = 30522, c.d_model = 384, c.n_layers = 6, c.n_heads = c.n_kv_heads = 12, c.d_head = 0;
    c.d_ff = 1536, c.max_seq_len = 512, c.type_vocab_size = 2, c.norm_eps = 1e-12, c.init_std = 0.02;
    const std::size_t d = 384, f = 1536, L = 6, r = 8;
    const std::size_t adapter = L * r * (4 * (d + d) + (d + f) + (f + d)); // A (r, in) and B (out, r) per projection
    gpu::encoder_plan_options o;
    o.batch = 64, o.time = 128;
    o.lora = {.rank = 8, .alpha = 16, .dropout = 0, .targets = lora_all}; // the gate bit: BERT has none
    std::size_t laid_out = 0;
    const auto layout = gpu::encoder_adapter_layout(c, o.lora);
    BOOST_TEST(layout.size() == L * 6 * 2);
    for (const gpu::parameter_slice& s : layout) {
        BOOST_TEST(s.offset == laid_out, s.name);
        laid_out += s.size();
    }
    BOOST_TEST(laid_out == adapter);
    BOOST_TEST(layout.front().name == "encoder.layer.0.attention.self.query.lora_A.weight");
    BOOST_TEST(layout.back().name == "encoder.layer.5.output.dense.lora_B.weight");
    const gpu::arena_plan plan = gpu::plan_encoder_step(c, o);
    expect_aligned_and_disjoint(plan);
    const std::size_t n = 64 * 128;
    for (const char* name : {"adapter", "gradients", "adam.m", "adam.v"})
        BOOST_TEST(plan.at(name).bytes == 4 * adapter, name);
    BOOST_TEST(plan.at("adapter.bf16").bytes == 2 * adapter);
    BOOST_TEST(plan.at("layer.5.lora.down").bytes == 4 * n * r);
    BOOST_TEST(plan.at("scratch.lora.t").bytes == 4 * n * r);
    BOOST_TEST(std::none_of(plan.entries().begin(), plan.entries().end(),
                            [](const auto& e) { return e.name.find("lora.gate") != std::string::npos; }));
    BOOST_TEST_MESSAGE("all-MiniLM-L6-v2's shape with LoRA r8, batch 64 x 128: "
                       << plan.entries().size() << " buffers, " << plan.bytes() << " bytes ("
                       << double(plan.bytes()) / double(1ull << 30) << " GiB), adapter " << adapter << " parameters");
    BOOST_CHECK_THROW(plan.at("scratch.lora.x"), tl::error); // nothing for dropout without it
    BOOST_CHECK_THROW(plan.at("dropout_positions"), tl::error);
    o.lora.dropout = 0.1f;
    const gpu::arena_plan dropping = gpu::plan_encoder_step(c, o);
    expect_aligned_and_disjoint(dropping);
    BOOST_TEST(dropping.at("scratch.lora.x").bytes == 4 * n * f);
    BOOST_TEST(dropping.at("scratch.bf16.lora_x").bytes == 2 * n * f);
    BOOST_TEST(dropping.at("dropout_positions").bytes == 8 * n);
    BOOST_TEST_MESSAGE("with LoRA dropout: " << dropping.entries().size() << " buffers, "
                                             << double(dropping.bytes()) / double(1ull << 30) << " GiB");
    o.lora.dropout = 1.0f;
    BOOST_CHECK_EXCEPTION(gpu::plan_encoder_step(c, o), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("LoRA dropout must be in [0, 1)") != std::string::npos;
    });
    // QLoRA: the six projection weights of each layer leave "parameters" for the NF4 blocks (4 bits a weight, an 8-bit
    // scale per 64, an f32 scale per 256 scales, per weight), dequantised one at a time into scratch.nf4 (bf16: the
    // widest, up or down); the adapter's blocks as with LoRA.
    o.lora.dropout = 0, o.lora.quantized_base = true;
    const gpu::arena_plan q = gpu::plan_encoder_step(c, o);
    expect_aligned_and_disjoint(q);
    const std::size_t projections = L * (4 * d * d + 2 * d * f);
    BOOST_TEST(q.at("parameters").bytes == plan.at("parameters").bytes - 4 * projections);
    BOOST_TEST(q.at("nf4.codes").bytes == projections / 2);
    BOOST_TEST(q.at("nf4.qabsmax").bytes == projections / 64);
    BOOST_TEST(q.at("nf4.absmax2").bytes == 4 * L * (4 * (d * d / 64 / 256) + 2 * (d * f / 64 / 256)));
    BOOST_TEST(q.at("scratch.nf4").bytes == 2 * d * f);
    for (const char* name : {"adapter", "gradients", "adam.m", "adam.v"})
        BOOST_TEST(q.at(name).bytes == 4 * adapter, name);
    const auto nf4 = gpu::encoder_nf4_layout(c);
    BOOST_TEST(nf4.size() == L * 6);
    BOOST_TEST(nf4.front().name == "encoder.layer.0.attention.self.query.weight");
    BOOST_TEST(nf4.back().name == "encoder.layer.5.output.dense.weight");
    const auto base = gpu::encoder_parameter_layout(c, true);
    BOOST_TEST(std::none_of(base.begin(), base.end(), [&](const gpu::parameter_slice& s) {
        return std::any_of(nf4.begin(), nf4.end(), [&](const gpu::nf4_slice& w) { return w.name == s.name; });
    }));
    BOOST_TEST(base.size() == gpu::encoder_parameter_layout(c).size() - nf4.size()); // the biases stay
    BOOST_TEST_MESSAGE("the same with QLoRA r8: " << q.entries().size() << " buffers, " << q.bytes() << " bytes ("
                                                  << double(q.bytes()) / double(1ull << 30) << " GiB)");
}

BOOST_AUTO_TEST_SUITE_END()
