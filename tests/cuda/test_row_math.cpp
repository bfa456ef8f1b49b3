// The arithmetic of the CUDA kernels (tinylm/cuda/row_math.hpp), run on the CPU: RMSNorm forward and backward
// against tinylm's op in f64, the fused softmax cross-entropy against f64 (and its online log-sum-exp in any
// split), AdamW bit for bit against tl::adamw; embedding, fused residual + RMSNorm, SwiGLU, GELU, LayerNorm, RoPE
// and attention (GQA, sliding window, documents, padding, bidirectional), forward and backward, against the ops. The
// same functions run in src/cuda; test_cuda_kernels then compares the GPU with these CPU drivers.
#include "../support/random.hpp"

#include <tinylm/core/dtype.hpp>
#include <tinylm/cuda/attention_fused.hpp>
#include <tinylm/cuda/attention_products.hpp>
#include <tinylm/cuda/attention_row.hpp>
#include <tinylm/cuda/cpu_ops.hpp>
#include <tinylm/cuda/dropout_row.hpp>
#include <tinylm/cuda/lora_dropout.hpp>
#include <tinylm/cuda/nf4_row.hpp>
#include <tinylm/cuda/row_math.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/embedding.hpp>
#include <tinylm/ops/layernorm.hpp>
#include <tinylm/ops/residual.hpp>
#include <tinylm/ops/rmsnorm.hpp>
#include <tinylm/ops/rope.hpp>
#include <tinylm/optim/adamw.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

using namespace tl;
using tl::test::random_tensor;

namespace {

std::vector<double> to_f64(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// max |a - b| / max |b|: the error relative to the tensor's scale (a sum that cancels to near zero has an
// f32 error of the size of its terms, not of its result). Infinite where a holds a NaN or an infinity.
double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i])) return INFINITY;
        err = std::max(err, std::abs(double(a[i]) - b[i]));
        scale = std::max(scale, std::abs(b[i]));
    }
    return err / scale;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cuda_row_math)

BOOST_AUTO_TEST_CASE(rmsnorm_forward_and_backward_match_the_op_in_f64) {
    const index_t n = 7, d = 300; // d not a multiple of the kernels' 256 threads
    const float eps = 1e-5f;
    const auto x = random_tensor<float>({n, d}, 1), w = random_tensor<float>({d}, 2, 0.5, 1.0);
    const auto dy = random_tensor<float>({n, d}, 3);
    std::vector<float> y(std::size_t(n * d)), rstd(static_cast<std::size_t>(n)), dx(std::size_t(n * d)),
        dw(static_cast<std::size_t>(d), 0.25f);
    gpu::rmsnorm_rows(y.data(), rstd.data(), x.data.data(), w.data.data(), n, int(d), eps);
    gpu::rmsnorm_backward_rows(dx.data(), dw.data(), dy.data.data(), x.data.data(), w.data.data(), rstd.data(), n,
                               int(d));

    std::vector<double> x64 = to_f64(x.data), w64 = to_f64(w.data), dy64 = to_f64(dy.data);
    std::vector<double> y64(x64.size()), rstd64(static_cast<std::size_t>(n)), dx64(x64.size()),
        dw64(static_cast<std::size_t>(d), 0.25);
    rmsnorm_forward<double>({y64.data(), {n, d}}, {rstd64.data(), {n}}, {x64.data(), {n, d}}, {w64.data(), {d}}, eps);
    rmsnorm_backward<double>({dx64.data(), {n, d}}, {dw64.data(), {d}}, {dy64.data(), {n, d}}, {x64.data(), {n, d}},
                             {w64.data(), {d}}, {rstd64.data(), {n}});
    BOOST_TEST(max_rel(y, y64) < 1e-5);
    BOOST_TEST(max_rel(rstd, rstd64) < 1e-5);
    BOOST_TEST(max_rel(dx, dx64) < 1e-5);
    BOOST_TEST(max_rel(dw, dw64) < 1e-5);
}

BOOST_AUTO_TEST_CASE(online_log_sum_exp_is_the_same_in_any_split) {
    const auto row = random_tensor<float>({1000}, 4, 3.0);
    double m = -INFINITY;
    for (float v : row.data)
        m = std::max(m, double(v));
    double s = 0;
    for (float v : row.data)
        s += std::exp(double(v) - m);
    const double lse64 = m + std::log(s);
    for (int parts : {1, 2, 7, 256}) { // as the kernel's threads: element j goes to part j % parts, then a tree
        std::vector<gpu::softmax_state> st(static_cast<std::size_t>(parts));
        for (std::size_t j = 0; j < row.data.size(); ++j)
            st[j % std::size_t(parts)] = gpu::softmax_push(st[j % std::size_t(parts)], row.data[j]);
        gpu::softmax_state all;
        for (const auto& p : st)
            all = gpu::softmax_merge(all, p);
        BOOST_TEST(std::abs(gpu::softmax_lse(all) - lse64) < 1e-5 * std::abs(lse64), "parts " << parts);
    }
    // a part that saw no element (fewer elements than threads) merges as nothing
    gpu::softmax_state one = gpu::softmax_push({}, 2.0f);
    BOOST_TEST(gpu::softmax_lse(gpu::softmax_merge(one, {})) == 2.0f);
    BOOST_TEST(gpu::softmax_lse(gpu::softmax_merge({}, one)) == 2.0f);
}

BOOST_AUTO_TEST_CASE(softmax_cross_entropy_forward_and_backward_match_f64) {
    const index_t n = 5, v = 777;
    const auto logits = random_tensor<float>({n, v}, 5, 4.0);
    const std::vector<std::int32_t> targets = {3, -100, 776, 0, 400};
    std::vector<float> loss(static_cast<std::size_t>(n)), lse(static_cast<std::size_t>(n)), grad = logits.data;
    const long long count = gpu::xent_rows(loss.data(), lse.data(), logits.data.data(), targets.data(), n, v);
    BOOST_TEST(count == 4);
    const float scale = 1.0f / float(count); // the mean over counted rows
    gpu::xent_backward_rows(grad.data(), lse.data(), targets.data(), n, v, scale);

    std::vector<double> loss64(static_cast<std::size_t>(n)), grad64(std::size_t(n * v));
    for (index_t r = 0; r < n; ++r) {
        const float* row = logits.data.data() + r * v;
        double m = -INFINITY, s = 0;
        for (index_t j = 0; j < v; ++j)
            m = std::max(m, double(row[j]));
        for (index_t j = 0; j < v; ++j)
            s += std::exp(double(row[j]) - m);
        const double l = m + std::log(s);
        const bool counted = targets[std::size_t(r)] >= 0;
        loss64[std::size_t(r)] = counted ? l - row[targets[std::size_t(r)]] : 0.0;
        for (index_t j = 0; j < v; ++j)
            grad64[std::size_t(r * v + j)] =
                counted ? (std::exp(double(row[j]) - l) - (j == targets[std::size_t(r)])) / double(count) : 0.0;
    }
    BOOST_TEST(max_rel(loss, loss64) < 1e-5);
    BOOST_TEST(loss[1] == 0.0f);
    double worst = 0; // gradients: absolute against the largest (1 / count), as most are tiny probabilities
    for (std::size_t i = 0; i < grad.size(); ++i)
        worst = std::max(worst, std::abs(double(grad[i]) - grad64[i]));
    BOOST_TEST(worst < 1e-6);
    for (index_t j = 0; j < v; ++j) // the ignored row gets no gradient
        BOOST_TEST_REQUIRE(grad[std::size_t(v + j)] == 0.0f);
}

// Three steps of gpu::adamw_element against tl::adamw on the same parameters: the same bits (the kernel compiles
// the same double expression without contraction, so the GPU gives these bits too).
BOOST_AUTO_TEST_CASE(adamw_element_is_tl_adamw_bit_for_bit) {
    const index_t n = 1000;
    auto p = random_tensor<float>({n}, 6, 0.1);
    auto g = random_tensor<float>({n}, 7, 0.01);
    std::vector<float> p_gpu = p.data, m(static_cast<std::size_t>(n)), v(static_cast<std::size_t>(n));
    std::vector<parameter_entry> entries;
    entries.push_back({"w", p.view(), g.view(), param_kind::weight});
    const adamw_options o{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    adamw opt(entries, o);
    for (long long t = 1; t <= 3; ++t) {
        const double lr = 1e-3 * double(t);
        opt.step(lr);
        gpu::adamw_elements(p_gpu.data(), g.data.data(), m.data(), v.data(), n,
                            gpu::adamw_step_coeffs(lr, o.beta1, o.beta2, o.eps, o.weight_decay, t, true));
        BOOST_TEST_REQUIRE(std::memcmp(p_gpu.data(), p.data.data(), sizeof(float) * std::size_t(n)) == 0, "step " << t);
        for (std::size_t i = 0; i < g.data.size(); ++i) // a new gradient each step
            g.data[i] = -0.5f * g.data[i] + 1e-3f;
    }
}

BOOST_AUTO_TEST_CASE(bf16_bits_round_as_tl_bf16) {
    const auto x = random_tensor<float>({4096}, 8, 100.0);
    std::vector<float> special = {0.0f,
                                  -0.0f,
                                  1.0f,
                                  1.00390625f /* a tie */,
                                  1.01171875f,
                                  3.4e38f,
                                  -3.4e38f,
                                  std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::denorm_min(),
                                  std::numeric_limits<float>::quiet_NaN()};
    special.insert(special.end(), x.data.begin(), x.data.end());
    for (float f : special)
        BOOST_TEST_REQUIRE(gpu::bf16_bits(f) == bf16(f).bits, "value " << f);
}

BOOST_AUTO_TEST_CASE(embedding_gather_and_deterministic_scatter_match_the_op) {
    const index_t vocab = 50, d = 33, n = 40;
    const auto weight = random_tensor<float>({vocab, d}, 9);
    const auto dout = random_tensor<float>({n, d}, 10);
    std::vector<token_t> ids(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) // repeats (i % 7 == 3 -> token 5) and a spread of others
        ids[std::size_t(i)] = i % 7 == 3 ? 5 : token_t((i * 13) % vocab);
    std::vector<float> out(std::size_t(n * d)), out_ref(out.size());
    gpu::embedding_gather_rows(out.data(), ids.data(), weight.data.data(), n, int(d));
    embedding_forward<float>({out_ref.data(), {n, d}}, {ids.data(), {n}}, weight);
    BOOST_TEST(out == out_ref);

    const gpu::token_groups g = gpu::group_positions_by_token(ids.data(), n, vocab);
    BOOST_TEST_REQUIRE(g.offsets.size() == g.tokens.size() + 1);
    BOOST_TEST(g.offsets.back() == n);
    for (std::size_t t = 0; t < g.tokens.size(); ++t)
        for (std::int32_t p = g.offsets[t]; p < g.offsets[t + 1]; ++p) {
            BOOST_TEST_REQUIRE(ids[std::size_t(g.positions[std::size_t(p)])] == g.tokens[t]);
            if (p > g.offsets[t]) BOOST_TEST_REQUIRE(g.positions[std::size_t(p)] > g.positions[std::size_t(p - 1)]);
        }
    // f64 oracle: the op's scatter in double; the grouped sum is f32, so within f32 rounding
    std::vector<float> dw(std::size_t(vocab * d), 0.5f);
    std::vector<double> dw64(dw.size(), 0.5), dout64 = to_f64(dout.data);
    gpu::embedding_scatter_add_rows(dw.data(), g, dout.data.data(), int(d));
    embedding_backward<double>({dw64.data(), {vocab, d}}, {ids.data(), {n}}, {dout64.data(), {n, d}});
    BOOST_TEST(max_rel(dw, dw64) < 1e-6);
    // token 5 appears 6 times: its row is the sum of 6 rows, every other row touched once or not at all
    BOOST_TEST(std::abs(dw[5 * d] - dw64[std::size_t(5 * d)]) < 1e-5);

    ids[3] = token_t(vocab);
    BOOST_CHECK_EXCEPTION(gpu::group_positions_by_token(ids.data(), n, vocab), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("token id 50 at position 3") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(residual_rmsnorm_fused_matches_residual_then_rmsnorm_in_f64) {
    const index_t n = 6, d = 300;
    const float eps = 1e-6f;
    const auto x = random_tensor<float>({n, d}, 11), a = random_tensor<float>({n, d}, 12);
    const auto w = random_tensor<float>({d}, 13, 0.5, 1.0), dy = random_tensor<float>({n, d}, 14);
    const auto dresid_in = random_tensor<float>({n, d}, 15); // the gradient already on the residual stream
    std::vector<float> resid(std::size_t(n * d)), y(resid.size()), rstd(static_cast<std::size_t>(n));
    std::vector<float> dresid = dresid_in.data, dw(static_cast<std::size_t>(d), 0.0f);
    gpu::residual_rmsnorm_rows(resid.data(), y.data(), rstd.data(), x.data.data(), a.data.data(), w.data.data(), n,
                               int(d), eps);
    gpu::residual_rmsnorm_backward_rows(dresid.data(), dw.data(), dy.data.data(), resid.data(), w.data.data(),
                                        rstd.data(), n, int(d));

    std::vector<double> x64 = to_f64(x.data), a64 = to_f64(a.data), w64 = to_f64(w.data), dy64 = to_f64(dy.data);
    std::vector<double> r64(x64.size()), y64(x64.size()), rstd64(static_cast<std::size_t>(n)),
        dr64 = to_f64(dresid_in.data), dw64(static_cast<std::size_t>(d), 0.0);
    residual_forward<double>({r64.data(), {n, d}}, {x64.data(), {n, d}}, {a64.data(), {n, d}});
    rmsnorm_forward<double>({y64.data(), {n, d}}, {rstd64.data(), {n}}, {r64.data(), {n, d}}, {w64.data(), {d}}, eps);
    rmsnorm_backward<double>({dr64.data(), {n, d}}, {dw64.data(), {d}}, {dy64.data(), {n, d}}, {r64.data(), {n, d}},
                             {w64.data(), {d}}, {rstd64.data(), {n}}, grad_write::add);
    BOOST_TEST(max_rel(resid, r64) < 1e-7); // one f32 addition
    BOOST_TEST(max_rel(y, y64) < 1e-5);
    BOOST_TEST(max_rel(rstd, rstd64) < 1e-5);
    BOOST_TEST(max_rel(dresid, dr64) < 1e-5);
    BOOST_TEST(max_rel(dw, dw64) < 1e-5);
}

BOOST_AUTO_TEST_CASE(swiglu_forward_and_backward_match_the_op_in_f64) {
    const index_t n = 5000;
    const auto g = random_tensor<float>({n}, 16, 4.0), u = random_tensor<float>({n}, 17),
               dh = random_tensor<float>({n}, 18);
    std::vector<float> h(static_cast<std::size_t>(n)), dg(h.size()), du(h.size());
    gpu::swiglu_rows(h.data(), g.data.data(), u.data.data(), n);
    gpu::swiglu_backward_rows(dg.data(), du.data(), dh.data.data(), g.data.data(), u.data.data(), n);
    std::vector<double> g64 = to_f64(g.data), u64 = to_f64(u.data), dh64 = to_f64(dh.data);
    std::vector<double> h64(g64.size()), dg64(g64.size()), du64(g64.size());
    swiglu_forward<double>({h64.data(), {n}}, {g64.data(), {n}}, {u64.data(), {n}});
    swiglu_backward<double>({dg64.data(), {n}}, {du64.data(), {n}}, {dh64.data(), {n}}, {g64.data(), {n}},
                            {u64.data(), {n}});
    BOOST_TEST(max_rel(h, h64) < 1e-6);
    BOOST_TEST(max_rel(dg, dg64) < 1e-6);
    BOOST_TEST(max_rel(du, du64) < 1e-6);
}

// The same double arithmetic as ops/rope.hpp: the same bits, with and without per-token positions.
BOOST_AUTO_TEST_CASE(rope_is_the_op_bit_for_bit) {
    const index_t batch = 2, time = 9, heads = 3, D = 16, half = D / 2, table = 20;
    test::owned<float> cos({table, half}), sin({table, half});
    rope_table<float>(cos, sin, 10000.0);
    const auto x = random_tensor<float>({batch, time, heads, D}, 19);
    std::vector<index_t> positions(std::size_t(batch * time));
    for (index_t i = 0; i < batch * time; ++i)
        positions[std::size_t(i)] = (i * 7) % table;
    for (const bool with_positions : {false, true})
        for (const double direction : {1.0, -1.0}) {
            auto expected = x;
            std::vector<float> got = x.data;
            const cview<index_t> pv =
                with_positions ? cview<index_t>{positions.data(), {batch, time}} : cview<index_t>{};
            const cview<float> cv = with_positions ? cos.cv() : cview<float>{cos.data.data(), {time, half}};
            const cview<float> sv = with_positions ? sin.cv() : cview<float>{sin.data.data(), {time, half}};
            if (direction > 0)
                rope_forward<float>(expected, cv, sv, pv);
            else
                rope_backward<float>(expected, cv, sv, pv);
            gpu::rope_rows(got.data(), cos.data.data(), sin.data.data(), with_positions ? positions.data() : nullptr,
                           batch, time, int(heads), int(D), direction);
            BOOST_TEST(std::memcmp(got.data(), expected.data.data(), got.size() * sizeof(float)) == 0,
                       "positions " << with_positions << " direction " << direction);
        }
}

// Causal attention row by row (online softmax over key tiles; backward by query rows and by key rows) against
// tl::attention_*_reference in f64: GQA (4 query heads on 2 key/value heads), 70 positions (three key tiles,
// the last partial), full, a sliding window, packed documents with and without a window, right padding with and
// without them; bidirectional (an encoder's), alone and with documents and padding.
BOOST_AUTO_TEST_CASE(attention_rows_match_the_reference_in_f64) {
    const index_t B = 2, T = 70, Hq = 4, Hkv = 2, D = 16;
    const auto q = random_tensor<float>({B, T, Hq, D}, 20), k = random_tensor<float>({B, T, Hkv, D}, 21);
    const auto v = random_tensor<float>({B, T, Hkv, D}, 22), dout = random_tensor<float>({B, T, Hq, D}, 23);
    std::vector<index_t> docs(std::size_t(B * T));
    for (index_t b = 0; b < B; ++b) // row 0: documents at 0, 25, 60; row 1: at 0 and 41
        for (index_t t = 0; t < T; ++t)
            docs[std::size_t(b * T + t)] = b == 0 ? (t >= 60 ? 60 : t >= 25 ? 25 : 0) : (t >= 41 ? 41 : 0);
    // Right padding: row 0 has 61 valid keys, row 1 has 45 (its second document, from 41, ends in padding; with
    // the window, padded queries there see no valid key of their own and fall back to all valid keys).
    std::vector<index_t> lengths = {61, 45};
    struct variant {
        int window;
        bool documents, padding, causal = true;
    };
    for (const variant c : {variant{0, false, false}, variant{20, false, false}, variant{0, true, false},
                            variant{12, true, false}, variant{0, false, true}, variant{12, true, true},
                            variant{0, false, false, false}, variant{0, true, true, false}}) {
        const gpu::attention_dims s{B, T, int(Hq), int(Hkv), int(D), c.window, c.causal};
        const gpu::attention_masks ds(c.documents ? docs.data() : nullptr, c.padding ? lengths.data() : nullptr);
        std::vector<float> out(q.data.size()), lse(std::size_t(B * Hq * T)), delta(lse.size());
        std::vector<float> dq(q.data.size()), dk(k.data.size()), dv(v.data.size());
        gpu::attention_forward_rows(out.data(), lse.data(), q.data.data(), k.data.data(), v.data.data(), ds, s);
        gpu::attention_backward_rows(dq.data(), dk.data(), dv.data(), delta.data(), dout.data.data(), q.data.data(),
                                     k.data.data(), v.data.data(), out.data(), lse.data(), ds, s);

        std::vector<double> q64 = to_f64(q.data), k64 = to_f64(k.data), v64 = to_f64(v.data), do64 = to_f64(dout.data);
        std::vector<double> out64(q64.size()), lse64(lse.size()), dq64(q64.size()), dk64(k64.size()), dv64(v64.size());
        const cview<index_t> dv_docs = c.documents ? cview<index_t>{docs.data(), {B, T}} : cview<index_t>{};
        const cview<index_t> dv_lengths = c.padding ? cview<index_t>{lengths.data(), {B}} : cview<index_t>{};
        attention_forward_reference<double>({out64.data(), {B, T, Hq, D}}, {lse64.data(), {B, Hq, T}},
                                            {q64.data(), {B, T, Hq, D}}, {k64.data(), {B, T, Hkv, D}},
                                            {v64.data(), {B, T, Hkv, D}}, c.window, 0, dv_docs, c.causal, dv_lengths);
        attention_backward_reference<double>({dq64.data(), {B, T, Hq, D}}, {dk64.data(), {B, T, Hkv, D}},
                                             {dv64.data(), {B, T, Hkv, D}}, {do64.data(), {B, T, Hq, D}},
                                             {q64.data(), {B, T, Hq, D}}, {k64.data(), {B, T, Hkv, D}},
                                             {v64.data(), {B, T, Hkv, D}}, {out64.data(), {B, T, Hq, D}},
                                             {lse64.data(), {B, Hq, T}}, c.window, dv_docs, c.causal, dv_lengths);
        std::string what = "window " + std::to_string(c.window);
        what += c.documents ? ", documents" : "";
        what += c.padding ? ", padding" : "";
        what += c.causal ? "" : ", bidirectional";
        BOOST_TEST(max_rel(out, out64) < 1e-5, what);
        BOOST_TEST(max_rel(lse, lse64) < 1e-5, what);
        BOOST_TEST(max_rel(dq, dq64) < 1e-5, what);
        BOOST_TEST(max_rel(dk, dk64) < 1e-5, what);
        BOOST_TEST(max_rel(dv, dv64) < 1e-5, what);

        // The same through products (attention_products.hpp on the CPU executor): f32 in chunks of one sequence
        // and of the whole batch, within the same 1e-5; bf16 operands (q, k, v, dout, p, ds rounded to 8 bits of
        // mantissa) within 2e-2 (measured: at most 7.5e-3). Query blocks of 0 (whole products), 7, 9 and 32 (70 is
        // a multiple of none; windows 12 and 20 start k0 past 0, and 20 in blocks of 9 puts r0 - w + 1 one key
        // before a block's start) and the default 128 (> T: one block). The scores' scratch starts as stale values
        // of an earlier step, NaN in chunks of one sequence and 1e30 in chunks of the batch: the blocks must
        // neither read the tiles they skip (the results) nor write them (the same values after the backward: a
        // NaN that a kernel reads and writes back is no change, 1e30 is), and give the whole products' results
        // within 1e-6.
        std::vector<float> whole_out, whole_dq, whole_dk, whole_dv; // query block 0, f32, this chunk
        for (const bool bf16 : {false, true})
            for (const long long chunk : {1LL, (long long)B})
                for (const long long query_block : {0LL, 7LL, 9LL, 32LL, gpu::attention_default_query_block}) {
                    const float stale = chunk == 1 ? NAN : 1e30f;
                    std::vector<float> scores(std::size_t(chunk * Hq * T * T), stale), dscores(scores.size(), stale);
                    std::vector<std::uint16_t> q16(q.data.size()), k16(k.data.size()), v16(v.data.size()),
                        do16(q.data.size()), p16(scores.size(), std::uint16_t(0x7fc0)); // bf16 NaN
                    gpu::attention_scratch x;
                    x.scores = scores.data(), x.dscores = dscores.data(), x.chunk = chunk, x.query_block = query_block;
                    if (bf16)
                        x.q = q16.data(), x.k = k16.data(), x.v = v16.data(), x.dout = do16.data(), x.p = p16.data();
                    gpu::cpu_ops ex;
                    gpu::attention_products<gpu::cpu_ops> products(ex, x);
                    std::fill(out.begin(), out.end(), NAN);
                    std::fill(dk.begin(), dk.end(), NAN); // the products assign, never read, what they write
                    std::fill(dv.begin(), dv.end(), NAN);
                    products.forward(out.data(), lse.data(), q.data.data(), k.data.data(), v.data.data(), ds, s);
                    products.backward(dq.data(), dk.data(), dv.data(), delta.data(), dout.data.data(), q.data.data(),
                                      k.data.data(), v.data.data(), out.data(), lse.data(), ds, s);
                    const double bound = bf16 ? 2e-2 : 1e-5;
                    const std::string how = what + (bf16 ? ", products in bf16" : ", products") + ", chunks of " +
                                            std::to_string(chunk) + ", query block " + std::to_string(query_block);
                    double worst = 0;
                    for (const auto& [got, want] :
                         {std::pair{&out, &out64}, std::pair{&lse, &lse64}, std::pair{&dq, &dq64},
                          std::pair{&dk, &dk64}, std::pair{&dv, &dv64}}) {
                        BOOST_TEST(max_rel(*got, *want) < bound, how);
                        worst = std::max(worst, max_rel(*got, *want));
                    }
                    // The tiles outside the computed ones were not touched: still stale in both scratches.
                    const auto untouched = [&](float x) { return std::isnan(stale) ? std::isnan(x) : x == stale; };
                    long long written_outside = 0, computed = 0;
                    for (long long r = 0; r < chunk * Hq * T; ++r) {
                        const long long i = r % T;
                        const gpu::attention_span keys = gpu::attention_computed_keys(i, s, c.padding, query_block);
                        for (long long j = 0; j < T; ++j) {
                            const bool inside = j >= keys.first && j <= keys.last;
                            computed += inside;
                            written_outside += !inside && !(untouched(scores[std::size_t(r * T + j)]) &&
                                                            untouched(dscores[std::size_t(r * T + j)]));
                        }
                    }
                    BOOST_TEST(written_outside == 0, how);
                    const bool skips = c.causal && query_block > 0 && query_block < T;
                    BOOST_TEST((computed < chunk * Hq * T * T) == skips, how << ": computed " << computed);
                    if (!bf16 && query_block == 0) whole_out = out, whole_dq = dq, whole_dk = dk, whole_dv = dv;
                    if (!bf16 && query_block > 0) {
                        double off = 0;
                        for (const auto& [got, want] : {std::pair{&out, &whole_out}, std::pair{&dq, &whole_dq},
                                                        std::pair{&dk, &whole_dk}, std::pair{&dv, &whole_dv}})
                            off = std::max(off, max_rel(*got, to_f64(*want)));
                        BOOST_TEST(off < 1e-6, how << ": against the whole products " << off);
                        BOOST_TEST_MESSAGE(how << ": against the whole products " << off);
                    }
                    BOOST_TEST_MESSAGE(how << ": largest difference " << worst);
                }
    }
}

// Fused attention's CPU driver (attention_fused.hpp: gpu::cpu_ops's attention_fused_*, the arithmetic of
// flash_attention.cu's kernels: q, k, v, dout, p and ds rounded to bf16, f32 sums, the online softmax over key tiles
// at multiples of 32) against tl::attention_*_reference in f64: head widths 64 and 128, GQA 4 on 2, 70 positions (three
// key tiles, the last partial), every mask variant of attention_rows_match_the_reference_in_f64. Within the bf16
// products' bound there, 2e-2 (measured: at most 9.96e-3 over both widths); not the f32 rows' result (p, ds rounded:
// above 1e-4); and the same bits in the forward from inputs rounded to bf16 beforehand (the operands are rounded
// first).
BOOST_AUTO_TEST_CASE(attention_fused_rows_match_the_reference_in_f64) {
    const index_t B = 2, T = 70, Hq = 4, Hkv = 2;
    std::vector<index_t> docs(std::size_t(B * T));
    for (index_t b = 0; b < B; ++b) // row 0: documents at 0, 25, 60; row 1: at 0 and 41
        for (index_t t = 0; t < T; ++t)
            docs[std::size_t(b * T + t)] = b == 0 ? (t >= 60 ? 60 : t >= 25 ? 25 : 0) : (t >= 41 ? 41 : 0);
    const std::vector<index_t> lengths = {61, 45};
    struct variant {
        int window;
        bool documents, padding, causal = true;
    };
    double worst = 0;
    for (const index_t D : {index_t(64), index_t(128)}) {
        const auto q = random_tensor<float>({B, T, Hq, D}, 30), k = random_tensor<float>({B, T, Hkv, D}, 31);
        const auto v = random_tensor<float>({B, T, Hkv, D}, 32), dout = random_tensor<float>({B, T, Hq, D}, 33);
        for (const variant c : {variant{0, false, false}, variant{20, false, false}, variant{0, true, false},
                                variant{12, true, false}, variant{0, false, true}, variant{12, true, true},
                                variant{0, false, false, false}, variant{0, true, true, false}}) {
            const gpu::attention_dims s{B, T, int(Hq), int(Hkv), int(D), c.window, c.causal};
            const gpu::attention_masks ds(c.documents ? docs.data() : nullptr, c.padding ? lengths.data() : nullptr);
            std::vector<float> out(q.data.size(), NAN), lse(std::size_t(B * Hq * T), NAN), delta(lse.size());
            std::vector<float> dq(q.data.size(), NAN), dk(k.data.size(), NAN), dv(v.data.size(), NAN);
            gpu::cpu_ops ex;
            ex.attention_fused_forward(out.data(), lse.data(), q.data.data(), k.data.data(), v.data.data(), ds, s);
            ex.attention_fused_backward(dq.data(), dk.data(), dv.data(), delta.data(), dout.data.data(), q.data.data(),
                                        k.data.data(), v.data.data(), out.data(), lse.data(), ds, s);

            std::vector<double> q64 = to_f64(q.data), k64 = to_f64(k.data), v64 = to_f64(v.data),
                                do64 = to_f64(dout.data);
            std::vector<double> out64(q64.size()), lse64(lse.size()), dq64(q64.size()), dk64(k64.size()),
                dv64(v64.size());
            const cview<index_t> dv_docs = c.documents ? cview<index_t>{docs.data(), {B, T}} : cview<index_t>{};
            const cview<index_t> dv_lengths = c.padding ? cview<index_t>{lengths.data(), {B}} : cview<index_t>{};
            attention_forward_reference<double>(
                {out64.data(), {B, T, Hq, D}}, {lse64.data(), {B, Hq, T}}, {q64.data(), {B, T, Hq, D}},
                {k64.data(), {B, T, Hkv, D}}, {v64.data(), {B, T, Hkv, D}}, c.window, 0, dv_docs, c.causal, dv_lengths);
            attention_backward_reference<double>({dq64.data(), {B, T, Hq, D}}, {dk64.data(), {B, T, Hkv, D}},
                                                 {dv64.data(), {B, T, Hkv, D}}, {do64.data(), {B, T, Hq, D}},
                                                 {q64.data(), {B, T, Hq, D}}, {k64.data(), {B, T, Hkv, D}},
                                                 {v64.data(), {B, T, Hkv, D}}, {out64.data(), {B, T, Hq, D}},
                                                 {lse64.data(), {B, Hq, T}}, c.window, dv_docs, c.causal, dv_lengths);
            // The forward's operands are rounded to bf16 as the kernel's shared tiles hold them: q, k, v rounded
            // beforehand give the same bits. (Not the backward's: delta = dout . out is f32 of the unrounded dout.)
            const auto rounded = [](std::vector<float> x) {
                for (float& e : x)
                    e = gpu::bf16_rounded(e);
                return x;
            };
            std::vector<float> out16(out.size()), lse16(lse.size());
            ex.attention_fused_forward(out16.data(), lse16.data(), rounded(q.data).data(), rounded(k.data).data(),
                                       rounded(v.data).data(), ds, s);
            BOOST_TEST(std::memcmp(out16.data(), out.data(), out.size() * sizeof(float)) == 0);
            BOOST_TEST(std::memcmp(lse16.data(), lse.data(), lse.size() * sizeof(float)) == 0);

            std::string what = "fused, head width " + std::to_string(D) + ", window " + std::to_string(c.window);
            what += c.documents ? ", documents" : "";
            what += c.padding ? ", padding" : "";
            what += c.causal ? "" : ", bidirectional";
            for (const auto& [name, got, want] :
                 {std::tuple{"out", &out, &out64}, std::tuple{"lse", &lse, &lse64}, std::tuple{"dq", &dq, &dq64},
                  std::tuple{"dk", &dk, &dk64}, std::tuple{"dv", &dv, &dv64}}) {
                const double e = max_rel(*got, *want);
                BOOST_TEST(e < 2e-2, what << ": " << name << " " << e);
                if (std::string(name) != "lse") BOOST_TEST(e > 1e-4, what << ": " << name << " " << e);
                worst = std::max(worst, e);
            }
        }
    }
    BOOST_TEST_MESSAGE("fused attention on the CPU executor: at most " << worst << " from f64");
}

// The query blocks of the products (attention_row.hpp's attention_block_of, attention_products.hpp's
// attention_query_blocks): each block's queries see only its computed keys (every mask variant's keys inside
// them), the transposed view of a key block covers every query that sees one of its keys and reads computed tiles
// only, and the multiply-add count: causal T = 512 in blocks of 128 computes 128^2 (1 + 2 + 3 + 4) scores.
BOOST_AUTO_TEST_CASE(attention_query_blocks_cover_exactly_the_keys_queries_see) {
    const long long T = 70;
    std::vector<std::int64_t> docs(static_cast<std::size_t>(T)), lengths = {45};
    for (long long t = 0; t < T; ++t)
        docs[std::size_t(t)] = t >= 41 ? 41 : t >= 20 ? 20 : 0;
    for (const int window : {0, 1, 6, 7, 12, 69})
        for (const bool padding : {false, true})
            for (const long long block : {1LL, 7LL, 16LL, 69LL, 70LL}) {
                const gpu::attention_dims s{1, T, 2, 1, 8, window, true};
                const gpu::attention_masks m(docs.data(), padding ? lengths.data() : nullptr);
                const gpu::attention_query_blocks blocks(s, padding, block);
                const std::string how = "window " + std::to_string(window) + ", padding " + std::to_string(padding) +
                                        ", block " + std::to_string(block);
                long long next = 0;
                for (std::size_t n = 0; n < blocks.size(); ++n) {
                    const gpu::attention_block& b = blocks[n];
                    BOOST_TEST((b.r0 == next && b.r1 > b.r0 && b.k0 % block == 0 && b.k0 <= b.r0), how);
                    next = b.r1;
                    for (long long i = b.r0; i < b.r1; ++i) // the queries' keys inside the block's tiles
                        for (const gpu::attention_masks mm : {m, gpu::attention_masks(nullptr, m.key_lengths)}) {
                            const gpu::attention_span keys = gpu::attention_keys(0, i, s, mm);
                            BOOST_TEST((keys.first >= b.k0 && keys.last < b.r1), how << ", query " << i);
                        }
                    // Key block n (keys r0 .. r1 - 1): every query that sees one of them lies in r0 .. Q1 - 1, and
                    // each of those queries' blocks computed the whole key block.
                    const long long q1 = blocks.queries_seeing(n);
                    for (long long i = 0; i < T; ++i) {
                        bool sees = false;
                        for (long long j = b.r0; j < b.r1; ++j)
                            sees = sees || gpu::attention_sees(0, i, j, s, m);
                        if (sees) BOOST_TEST((i >= b.r0 && i < q1), how << ", query " << i << " of key block " << n);
                        if (i >= b.r0 && i < q1) {
                            const gpu::attention_span c = gpu::attention_computed_keys(i, s, padding, block);
                            BOOST_TEST((c.first <= b.r0 && c.last >= b.r1 - 1), how << ", query " << i);
                        }
                    }
                }
                BOOST_TEST(next == T, how);
            }
    // The work: bidirectional or no blocks T^2; causal T = 512, blocks of 128: 163840 scores, 62.5 %; with a
    // window of 128 the blocks k0 = r0 - 128: 128 128 + 3 (128 256) = 114688.
    const gpu::attention_dims causal{1, 512, 1, 1, 64, 0, true}, window{1, 512, 1, 1, 64, 128, true},
        both_ways{1, 512, 1, 1, 64, 0, false};
    BOOST_TEST(gpu::attention_products_work(causal, false, 0).computed_scores == 512 * 512);
    BOOST_TEST(gpu::attention_products_work(both_ways, false, 128).computed_scores == 512 * 512);
    const gpu::attention_product_work w = gpu::attention_products_work(causal, false, 128);
    BOOST_TEST(w.computed_scores == 128 * 128 * 10);
    BOOST_TEST(w.forward == 2LL * 163840 * 64);
    BOOST_TEST(w.backward == 5LL * 163840 * 64);
    BOOST_TEST(gpu::attention_products_work(window, false, 128).computed_scores == 128 * 128 + 3 * 128 * 256);
    BOOST_TEST(gpu::attention_products_work(window, true, 128).computed_scores == 163840); // padding: k0 = 0
}

// The products' multiply-adds with and without query blocks (docs/gpu.md's table; printed with
// --log_level=message): per (sequence, query head), forward plus backward, 7 A D, as a fraction of no blocks;
// beside it the fraction the masks need (the scores some query sees), which no block size goes below.
BOOST_AUTO_TEST_CASE(attention_products_work_table) {
    BOOST_TEST_MESSAGE("| T | window | needed | block 64 | block 128 | block 256 | 7 A D, no blocks, D = 64 |");
    for (const int window : {0, 256})
        for (const long long T : {512LL, 1024LL, 2048LL}) {
            const gpu::attention_dims s{1, T, 1, 1, 64, window, true};
            const auto whole = gpu::attention_products_work(s, false, 0);
            BOOST_TEST(whole.computed_scores == T * T);
            const long long needed = T * (T + 1) / 2 - (window ? (T - window) * (T - window + 1) / 2 : 0);
            char cell[96];
            std::snprintf(cell, sizeof cell, "| %lld | %s | %.3f |", T,
                          window ? std::to_string(window).c_str() : "none", double(needed) / double(T * T));
            std::string row = cell;
            for (const long long block : {64LL, 128LL, 256LL}) {
                const auto w = gpu::attention_products_work(s, false, block);
                BOOST_TEST(w.computed_scores < whole.computed_scores);
                BOOST_TEST(w.computed_scores >= needed);
                std::snprintf(cell, sizeof cell, " %.3f |",
                              double(w.forward + w.backward) / double(whole.forward + whole.backward));
                row += cell;
            }
            std::snprintf(cell, sizeof cell, " %.3g |", double(whole.forward + whole.backward));
            BOOST_TEST_MESSAGE(row + cell);
        }
}

// NF4 dequantisation (QLoRA's frozen base) element by element as the kernel does it, against tl::dequantize bit
// for bit: 37 x 53 weights (an odd count: a padded last byte, a short last block, blocks across rows), with and
// without double quantisation of the scales.
BOOST_AUTO_TEST_CASE(nf4_dequantization_is_tl_dequantize_bit_for_bit) {
    const auto w = random_tensor<float>({37, 53}, 28, 0.3);
    for (const bool double_quant : {false, true}) {
        const nf4_tensor q = quantize_nf4(w.cv(), double_quant);
        std::vector<float> expected(w.data.size()), got(w.data.size(), NAN);
        dequantize(q, {expected.data(), {37, 53}});
        gpu::nf4_dequantize_elements(got.data(), gpu::nf4_weight_of(q));
        BOOST_TEST(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0,
                   "double quantisation " << double_quant);
    }
}

BOOST_AUTO_TEST_CASE(gelu_and_layernorm_match_the_ops_in_f64) {
    const index_t n = 6, d = 300, count = n * d;
    const auto x = random_tensor<float>({n, d}, 24, 2.0, 0.5), dy = random_tensor<float>({n, d}, 25);
    const auto w = random_tensor<float>({d}, 26, 0.5, 1.0), b = random_tensor<float>({d}, 27, 0.1);
    std::vector<double> x64 = to_f64(x.data), dy64 = to_f64(dy.data), w64 = to_f64(w.data), b64 = to_f64(b.data);

    std::vector<float> y(x.data.size()), dx(x.data.size());
    gpu::gelu_rows(y.data(), x.data.data(), count);
    gpu::gelu_backward_rows(dx.data(), dy.data.data(), x.data.data(), count);
    std::vector<double> y64(x64.size()), dx64(x64.size());
    gelu_forward<double>({y64.data(), {count}}, {x64.data(), {count}});
    gelu_backward<double>({dx64.data(), {count}}, {dy64.data(), {count}}, {x64.data(), {count}});
    BOOST_TEST(max_rel(y, y64) < 1e-6);
    BOOST_TEST(max_rel(dx, dx64) < 1e-6);

    std::vector<float> mean(static_cast<std::size_t>(n)), rstd(mean.size()), dw(static_cast<std::size_t>(d), 0.5f),
        db(dw.size(), -0.5f);
    gpu::layernorm_rows(y.data(), mean.data(), rstd.data(), x.data.data(), w.data.data(), b.data.data(), n, int(d),
                        1e-5f);
    gpu::layernorm_backward_rows(dx.data(), dw.data(), db.data(), dy.data.data(), x.data.data(), w.data.data(),
                                 mean.data(), rstd.data(), n, int(d));
    std::vector<double> mean64(mean.size()), rstd64(mean.size()), dw64(dw.size(), 0.5), db64(dw.size(), -0.5);
    layernorm_forward<double>({y64.data(), {n, d}}, {mean64.data(), {n}}, {rstd64.data(), {n}}, {x64.data(), {n, d}},
                              {w64.data(), {d}}, {b64.data(), {d}}, 1e-5);
    layernorm_backward<double>({dx64.data(), {n, d}}, {dw64.data(), {d}}, {db64.data(), {d}}, {dy64.data(), {n, d}},
                               {x64.data(), {n, d}}, {w64.data(), {d}}, {mean64.data(), {n}}, {rstd64.data(), {n}});
    BOOST_TEST(max_rel(y, y64) < 1e-5);
    BOOST_TEST(max_rel(mean, mean64) < 1e-5);
    BOOST_TEST(max_rel(rstd, rstd64) < 1e-5);
    BOOST_TEST(max_rel(dx, dx64) < 1e-5);
    BOOST_TEST(max_rel(dw, dw64) < 1e-5);
    BOOST_TEST(max_rel(db, db64) < 1e-5);
}

// The post-norm block's fused step: resid = x + a exactly as one f32 addition, then LayerNorm of resid (the same
// driver as layernorm_rows, so bit for bit as the two steps apart) within f32 rounding of f64.
BOOST_AUTO_TEST_CASE(residual_layernorm_fused_matches_residual_then_layernorm) {
    const index_t n = 6, d = 300;
    const auto x = random_tensor<float>({n, d}, 31), a = random_tensor<float>({n, d}, 32);
    const auto w = random_tensor<float>({d}, 33, 0.5, 1.0), b = random_tensor<float>({d}, 34, 0.1);
    std::vector<float> resid(std::size_t(n * d)), y(resid.size()), mean(static_cast<std::size_t>(n)), rstd(mean.size());
    gpu::residual_layernorm_rows(resid.data(), y.data(), mean.data(), rstd.data(), x.data.data(), a.data.data(),
                                 w.data.data(), b.data.data(), n, int(d), 1e-12f);
    std::vector<float> sum(resid.size()), y_apart(resid.size()), mean_apart(mean.size()), rstd_apart(mean.size());
    for (std::size_t i = 0; i < sum.size(); ++i)
        sum[i] = x.data[i] + a.data[i];
    gpu::layernorm_rows(y_apart.data(), mean_apart.data(), rstd_apart.data(), sum.data(), w.data.data(), b.data.data(),
                        n, int(d), 1e-12f);
    BOOST_TEST(resid == sum);
    BOOST_TEST(y == y_apart);
    BOOST_TEST(mean == mean_apart);
    BOOST_TEST(rstd == rstd_apart);
    std::vector<double> sum64(sum.size()), y64(sum.size()), mean64(mean.size()), rstd64(mean.size());
    for (std::size_t i = 0; i < sum.size(); ++i)
        sum64[i] = double(x.data[i]) + double(a.data[i]);
    std::vector<double> w64 = to_f64(w.data), b64 = to_f64(b.data);
    layernorm_forward<double>({y64.data(), {n, d}}, {mean64.data(), {n}}, {rstd64.data(), {n}}, {sum64.data(), {n, d}},
                              {w64.data(), {d}}, {b64.data(), {d}}, 1e-12);
    BOOST_TEST(max_rel(y, y64) < 1e-5);
}

// BERT's embeddings: word[id] + (position[p] + type[t]) per element, as tl::encoder adds them (bit for bit), and
// without token types word + position.
BOOST_AUTO_TEST_CASE(embedding_sum_is_word_plus_position_plus_type) {
    const index_t vocab = 20, positions = 9, types = 2, d = 17, n = 12;
    const auto word = random_tensor<float>({vocab, d}, 41), position = random_tensor<float>({positions, d}, 42);
    const auto type = random_tensor<float>({types, d}, 43);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n)), pos(ids.size()), typ(ids.size());
    for (index_t i = 0; i < n; ++i) {
        ids[std::size_t(i)] = std::int32_t((i * 7) % vocab);
        pos[std::size_t(i)] = std::int32_t(i % positions);
        typ[std::size_t(i)] = std::int32_t(i % 3 == 1);
    }
    std::vector<float> out(std::size_t(n * d)), plain(out.size());
    gpu::embedding_sum_rows(out.data(), ids.data(), word.data.data(), pos.data(), position.data.data(), typ.data(),
                            type.data.data(), n, int(d));
    gpu::embedding_sum_rows(plain.data(), ids.data(), word.data.data(), pos.data(), position.data.data(), nullptr,
                            nullptr, n, int(d));
    index_t off = 0, off_plain = 0;
    for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < d; ++j) {
            const std::size_t at = std::size_t(i * d + j);
            const float w = word.data[std::size_t(ids[std::size_t(i)] * d + j)];
            const float p = position.data[std::size_t(pos[std::size_t(i)] * d + j)];
            const float t = type.data[std::size_t(typ[std::size_t(i)] * d + j)];
            off += out[at] != w + (p + t);
            off_plain += plain[at] != w + p;
        }
    BOOST_TEST(off == 0);
    BOOST_TEST(off_plain == 0);
}

// LoRA dropout's masks (dropout_row.hpp) against model/projection.hpp's rule, keep element i when
// double(counter_rng(seed, stream).at(row0 * in + i) >> 11) * 2^-53 >= p: the integer threshold sits exactly at p
// (the largest dropped value just below it), the masks agree element for element at several p (with a row offset),
// the kept elements are x / (1 - p) and the backward adds g / (1 - p) there only.
BOOST_AUTO_TEST_CASE(lora_dropout_masks_are_the_projections) {
    for (const float p : {0.1f, 0.25f, 0.5f, 1e-12f, 0.999f}) {
        const gpu::dropout_mask m = gpu::make_dropout_mask(77, gpu::lora_dropout_stream(3, 2, 1, 5, 7), p, 9 * 40);
        BOOST_TEST(double(m.threshold) * 0x1.0p-53 >= double(p), p);
        BOOST_TEST(double(m.threshold - 1) * 0x1.0p-53 < double(p), p);
        const counter_rng rng(77, (3 * 2 + 1) * 7 + 5);
        const long long n = 20000;
        const auto x = random_tensor<float>({index_t(n)}, 61), g = random_tensor<float>({index_t(n)}, 62);
        std::vector<float> out(static_cast<std::size_t>(n)), dx(out.size(), 0.5f);
        gpu::dropout_rows(out.data(), x.data.data(), n, m);
        gpu::dropout_backward_rows(dx.data(), g.data.data(), n, m);
        const float scale = float(1.0 / (1.0 - double(p)));
        long long off = 0, kept = 0;
        for (long long i = 0; i < n; ++i) {
            const std::size_t at = std::size_t(i);
            const bool keep = double(rng.at(std::uint64_t(9 * 40 + i)) >> 11) * 0x1.0p-53 >= double(p);
            kept += keep;
            off += gpu::dropout_keeps(m, i) != keep;
            off += out[at] != (keep ? x.data[at] * scale : 0.0f);
            off += dx[at] != (keep ? 0.5f + g.data[at] * scale : 0.5f);
        }
        BOOST_TEST(off == 0, p);
        BOOST_TEST(std::abs(double(kept) / double(n) - (1.0 - double(p))) < 0.02, p); // 20000 draws: sd < 0.004
    }
}

// The masks of a step whose rows hold the tokens elsewhere than the CPU model's layout (the device ranking step,
// encoder_step's dropout_positions): lora_dropout_state's mask of (calls 3, layer 1 of 2, projection up) with each of
// 50 rows of 40 elements given its row in the CPU's layout (a permutation, some rows sharing one: padding) draws,
// element for element, the counter RNG at the CPU's position row0 in + position in + column (projection.hpp's test), in
// the forward and the backward; without positions, the state's mask is make_dropout_mask's of tl's stream.
BOOST_AUTO_TEST_CASE(lora_dropout_masks_follow_the_token_positions) {
    const long long rows = 50, in = 40, n = rows * in;
    std::vector<std::int64_t> positions(static_cast<std::size_t>(rows));
    for (long long t = 0; t < rows; ++t)
        positions[std::size_t(t)] = t < 45 ? (t * 17 + 5) % 45 : 0; // 45 real rows permuted, 5 padding rows
    gpu::lora_dropout_state state;
    state.seed = 77, state.calls = 3, state.row0 = 9;
    const float p = 0.25f;
    const gpu::dropout_mask plain = state.mask(p, 2, 1, proj::up, std::size_t(in));
    const gpu::dropout_mask flat = gpu::make_dropout_mask(77, gpu::lora_dropout_stream(3, 2, 1, 5, 7), p, 9 * 40);
    BOOST_TEST((plain.seed == flat.seed && plain.stream == flat.stream && plain.threshold == flat.threshold &&
                plain.first == flat.first && plain.scale == flat.scale && plain.token_positions == nullptr));
    const gpu::dropout_mask m = state.mask(p, 2, 1, proj::up, std::size_t(in), positions.data());
    const counter_rng rng(77, (3 * 2 + 1) * 7 + 5);
    const auto x = random_tensor<float>({index_t(n)}, 63), g = random_tensor<float>({index_t(n)}, 64);
    std::vector<float> out(static_cast<std::size_t>(n)), dx(out.size(), 0.5f);
    gpu::dropout_rows(out.data(), x.data.data(), n, m);
    gpu::dropout_backward_rows(dx.data(), g.data.data(), n, m);
    const float scale = float(1.0 / (1.0 - double(p)));
    long long off = 0, differs_from_flat = 0;
    for (long long i = 0; i < n; ++i) {
        const std::size_t at = std::size_t(i);
        const long long t = i / in, column = i % in;
        const std::uint64_t position = std::uint64_t(9 * in + positions[std::size_t(t)] * in + column);
        const bool keep = double(rng.at(position) >> 11) * 0x1.0p-53 >= double(p);
        off += gpu::dropout_keeps(m, i) != keep;
        off += out[at] != (keep ? x.data[at] * scale : 0.0f);
        off += dx[at] != (keep ? 0.5f + g.data[at] * scale : 0.5f);
        differs_from_flat += gpu::dropout_keeps(flat, i) != keep;
    }
    BOOST_TEST(off == 0);
    BOOST_TEST(differs_from_flat > n / 10); // the positions matter: about 2 p (1 - p) of the elements differ
}

BOOST_AUTO_TEST_SUITE_END()
