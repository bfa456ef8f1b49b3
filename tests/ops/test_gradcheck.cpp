// Every op's backward against central finite differences, in double on the reference backend.
#include "../support/gradcheck.hpp"

#include <tinylm/backend/reference.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/ops/embedding.hpp>
#include <tinylm/ops/layernorm.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/pooling.hpp>
#include <tinylm/ops/residual.hpp>
#include <tinylm/ops/rmsnorm.hpp>
#include <tinylm/ops/rope.hpp>

#include <boost/test/unit_test.hpp>

using namespace tl;
using namespace tl::test;
using ref = reference_cpu;
using vec = std::vector<double>;

namespace {
constexpr double tolerance = 1e-6;

void report(const std::string& op, const std::string& input, double err) {
    BOOST_TEST_MESSAGE("gradcheck " << op << " d" << input << ": " << err);
}
double check(const std::string& op, const std::function<double()>& loss, const std::vector<grad_input>& inputs) {
    return gradcheck(loss, inputs, [&](const std::string& n, double e) { report(op, n, e); });
}
} // namespace

BOOST_AUTO_TEST_SUITE(gradcheck)

BOOST_AUTO_TEST_CASE(embedding) {
    auto w = random_tensor<double>({7, 5}, 1);
    owned<token_t> ids({6});
    ids.data = {3, 0, 6, 3, 1, 3}; // repeated ids must accumulate
    auto r = random_tensor<double>({6, 5}, 2);
    owned<double> out({6, 5}), dw({7, 5});
    embedding_backward<double>(dw, ids, r);
    const double err = check("embedding",
                             [&] {
                                 embedding_forward<double>(out, ids, w);
                                 return weighted_sum(out.data, r.data);
                             },
                             {{"weight", &w.data, &dw.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(linear_with_and_without_bias) {
    for (bool with_bias : {true, false}) {
        auto x = random_tensor<double>({5, 4}, 3), w = random_tensor<double>({3, 4}, 4),
             b = random_tensor<double>({3}, 5);
        auto r = random_tensor<double>({5, 3}, 6);
        owned<double> y({5, 3}), dx({5, 4}), dw({3, 4}), db({3});
        const cview<double> bias = with_bias ? b.cv() : cview<double>{};
        linear_forward<ref, double>(y, x, w, bias);
        linear_backward<ref, double>(dx, dw, with_bias ? db.view() : tensor_view<double>{}, r, x, w);
        std::vector<grad_input> inputs{{"x", &x.data, &dx.data}, {"weight", &w.data, &dw.data}};
        if (with_bias) inputs.push_back({"bias", &b.data, &db.data});
        const double err = check(
            with_bias ? "linear+bias" : "linear",
            [&] {
                linear_forward<ref, double>(y, x, w, with_bias ? b.cv() : cview<double>{});
                return weighted_sum(y.data, r.data);
            },
            inputs);
        BOOST_TEST(err < tolerance);
    }
}

BOOST_AUTO_TEST_CASE(rmsnorm) {
    auto x = random_tensor<double>({4, 6}, 7), w = random_tensor<double>({6}, 8, 0.3, 1.0),
         r = random_tensor<double>({4, 6}, 9);
    owned<double> y({4, 6}), rstd({4}), dx({4, 6}), dw({6});
    rmsnorm_forward<double>(y, rstd, x, w, 1e-5);
    rmsnorm_backward<double>(dx, dw, r, x, w, rstd);
    const double err = check("rmsnorm",
                             [&] {
                                 rmsnorm_forward<double>(y, rstd, x, w, 1e-5);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"x", &x.data, &dx.data}, {"weight", &w.data, &dw.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(layernorm) {
    auto x = random_tensor<double>({4, 6}, 10, 1.0, 0.5), w = random_tensor<double>({6}, 11, 0.3, 1.0);
    auto b = random_tensor<double>({6}, 12), r = random_tensor<double>({4, 6}, 13);
    owned<double> y({4, 6}), mean({4}), rstd({4}), dx({4, 6}), dw({6}), db({6});
    layernorm_forward<double>(y, mean, rstd, x, w, b, 1e-5);
    layernorm_backward<double>(dx, dw, db, r, x, w, mean, rstd);
    const double err = check("layernorm",
                             [&] {
                                 layernorm_forward<double>(y, mean, rstd, x, w, b, 1e-5);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"x", &x.data, &dx.data}, {"weight", &w.data, &dw.data}, {"bias", &b.data, &db.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(rope) {
    const shape s{2, 5, 3, 8};
    auto x = random_tensor<double>(s, 14), r = random_tensor<double>(s, 15);
    owned<double> cos({5, 4}), sin({5, 4});
    rope_table<double>(cos, sin, 100.0, 3); // a small theta and an offset so that angles are large
    owned<double> dx = r;
    rope_backward<double>(dx, cos, sin);
    const double err = check("rope",
                             [&] {
                                 owned<double> y = x;
                                 rope_forward<double>(y, cos, sin);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"x", &x.data, &dx.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(attention_variants) {
    struct variant {
        const char* name;
        index_t q_heads, kv_heads, window;
    };
    for (const variant v : {variant{"mha", 4, 4, 0}, variant{"gqa", 4, 2, 0}, variant{"mqa", 4, 1, 0},
                            variant{"gqa+window3", 4, 2, 3}, variant{"mha+window1", 2, 2, 1}}) {
        const index_t B = 2, T = 7, D = 4;
        auto q = random_tensor<double>({B, T, v.q_heads, D}, 16), k = random_tensor<double>({B, T, v.kv_heads, D}, 17);
        auto val = random_tensor<double>({B, T, v.kv_heads, D}, 18),
             r = random_tensor<double>({B, T, v.q_heads, D}, 19);
        owned<double> out({B, T, v.q_heads, D}), lse({B, v.q_heads, T});
        owned<double> dq(q.shape), dk(k.shape), dv(val.shape);
        attention_forward<double>(out, lse, q, k, val, v.window);
        attention_backward<double>(dq, dk, dv, r, q, k, val, out, lse, v.window);
        const double err = check(std::string("attention ") + v.name,
                                 [&] {
                                     attention_forward<double>(out, lse, q, k, val, v.window);
                                     return weighted_sum(out.data, r.data);
                                 },
                                 {{"q", &q.data, &dq.data}, {"k", &k.data, &dk.data}, {"v", &val.data, &dv.data}});
        BOOST_TEST(err < tolerance, v.name);
    }
}

// Bidirectional attention (an encoder) and right padding (key_lengths), with GQA; the padded keys get no
// gradient, the padded queries' gradients flow as any other's.
BOOST_AUTO_TEST_CASE(attention_bidirectional_and_padding) {
    struct variant {
        const char* name;
        bool causal;
        index_t window;
        std::vector<index_t> key_lengths; // empty: no padding
        bool with_documents;
    };
    const index_t B = 2, T = 7, D = 4, hq = 4, hkv = 2;
    owned<index_t> doc_start({B, T});
    doc_start.data = {0, 0, 0, 3, 3, 3, 6, /* row 1 */ 0, 1, 1, 1, 4, 4, 4};
    for (const variant& v :
         {variant{"bidirectional", false, 0, {}, false}, variant{"bidirectional+key_lengths", false, 0, {4, 7}, false},
          variant{"bidirectional+key_lengths 1", false, 0, {1, 5}, false},
          variant{"causal+key_lengths", true, 0, {5, 3}, false},
          variant{"causal+window2+key_lengths", true, 2, {3, 6}, false},
          variant{"bidirectional+documents", false, 0, {}, true},
          variant{"bidirectional+documents+key_lengths", false, 0, {5, 6}, true}}) {
        owned<index_t> lengths({B});
        if (!v.key_lengths.empty()) lengths.data = v.key_lengths;
        const cview<index_t> len_view = v.key_lengths.empty() ? cview<index_t>{} : lengths.cv();
        const cview<index_t> doc_view = v.with_documents ? doc_start.cv() : cview<index_t>{};
        auto q = random_tensor<double>({B, T, hq, D}, 46), k = random_tensor<double>({B, T, hkv, D}, 47);
        auto val = random_tensor<double>({B, T, hkv, D}, 48), r = random_tensor<double>({B, T, hq, D}, 49);
        owned<double> out({B, T, hq, D}), lse({B, hq, T}), dq(q.shape), dk(k.shape), dv(val.shape);
        attention_forward<double>(out, lse, q, k, val, v.window, 0, doc_view, v.causal, len_view);
        attention_backward<double>(dq, dk, dv, r, q, k, val, out, lse, v.window, doc_view, v.causal, len_view);
        const double err =
            check(std::string("attention ") + v.name,
                  [&] {
                      attention_forward<double>(out, lse, q, k, val, v.window, 0, doc_view, v.causal, len_view);
                      return weighted_sum(out.data, r.data);
                  },
                  {{"q", &q.data, &dq.data}, {"k", &k.data, &dk.data}, {"v", &val.data, &dv.data}});
        BOOST_TEST(err < tolerance, v.name);
    }
}

// Packed rows (data/sft_batch.hpp): doc_start keeps queries inside their document, positions restart RoPE.
BOOST_AUTO_TEST_CASE(attention_and_rope_with_documents) {
    const index_t B = 2, T = 7, D = 4;
    owned<index_t> doc_start({B, T});
    doc_start.data = {0, 0, 0, 3, 3, 3, 6, /* row 1 */ 0, 1, 1, 1, 4, 4, 4};
    for (const index_t window : {index_t(0), index_t(2)}) {
        const index_t hq = 4, hkv = 2;
        auto q = random_tensor<double>({B, T, hq, D}, 40), k = random_tensor<double>({B, T, hkv, D}, 41);
        auto val = random_tensor<double>({B, T, hkv, D}, 42), r = random_tensor<double>({B, T, hq, D}, 43);
        owned<double> out({B, T, hq, D}), lse({B, hq, T}), dq(q.shape), dk(k.shape), dv(val.shape);
        attention_forward<double>(out, lse, q, k, val, window, 0, doc_start);
        attention_backward<double>(dq, dk, dv, r, q, k, val, out, lse, window, doc_start);
        const double err = check("attention+documents",
                                 [&] {
                                     attention_forward<double>(out, lse, q, k, val, window, 0, doc_start);
                                     return weighted_sum(out.data, r.data);
                                 },
                                 {{"q", &q.data, &dq.data}, {"k", &k.data, &dk.data}, {"v", &val.data, &dv.data}});
        BOOST_TEST(err < tolerance);
        // The first token of a document sees only itself: its output is its own value row.
        for (const index_t t : {index_t(3), index_t(6)})
            for (index_t c = 0; c < D; ++c)
                BOOST_TEST(out.data[std::size_t(((0 * T + t) * hq + 1) * D + c)] ==
                           val.data[std::size_t(((0 * T + t) * hkv + 0) * D + c)]);
    }
    owned<index_t> positions({B, T});
    for (index_t i = 0; i < B * T; ++i)
        positions.data[std::size_t(i)] = i % T - doc_start.data[std::size_t(i)];
    const shape s{B, T, 3, 8};
    auto x = random_tensor<double>(s, 44), r = random_tensor<double>(s, 45);
    owned<double> cos({T, 4}), sin({T, 4});
    rope_table<double>(cos, sin, 100.0, 3);
    owned<double> dx = r;
    rope_backward<double>(dx, cos, sin, positions);
    const double err = check("rope+positions",
                             [&] {
                                 owned<double> y = x;
                                 rope_forward<double>(y, cos, sin, positions);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"x", &x.data, &dx.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(swiglu) {
    auto g = random_tensor<double>({3, 8}, 20, 2.0), u = random_tensor<double>({3, 8}, 21),
         r = random_tensor<double>({3, 8}, 22);
    owned<double> h({3, 8}), dg({3, 8}), du({3, 8});
    swiglu_backward<double>(dg, du, r, g, u);
    const double err = check("swiglu",
                             [&] {
                                 swiglu_forward<double>(h, g, u);
                                 return weighted_sum(h.data, r.data);
                             },
                             {{"gate", &g.data, &dg.data}, {"up", &u.data, &du.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(gelu) {
    auto x = random_tensor<double>({3, 8}, 23, 2.0), r = random_tensor<double>({3, 8}, 24);
    owned<double> y({3, 8}), dx({3, 8});
    gelu_backward<double>(dx, r, x);
    const double err = check("gelu",
                             [&] {
                                 gelu_forward<double>(y, x);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"x", &x.data, &dx.data}});
    BOOST_TEST(err < tolerance);
}

// Sentence-embedding pooling over right-padded rows: padding must get no gradient (and not move the output).
BOOST_AUTO_TEST_CASE(pooling_modes_with_padding) {
    const index_t B = 3, T = 5, d = 4;
    owned<index_t> lengths({B});
    lengths.data = {5, 2, 1};
    for (pooling_mode mode : {pooling_mode::mean, pooling_mode::cls, pooling_mode::max}) {
        auto h = random_tensor<double>({B, T, d}, 40), r = random_tensor<double>({B, d}, 41);
        owned<double> out({B, d}), dh({B, T, d});
        owned<index_t> arg({B, d});
        pool_forward<double>(mode, out, arg, h, lengths);
        pool_backward<double>(mode, dh, r, arg, lengths);
        const double err = check(std::string("pool ") + pooling_name(mode),
                                 [&] {
                                     pool_forward<double>(mode, out, arg, h, lengths);
                                     return weighted_sum(out.data, r.data);
                                 },
                                 {{"hidden", &h.data, &dh.data}});
        BOOST_TEST(err < tolerance);
        for (index_t b = 0; b < B; ++b) // padded positions: zero gradient
            for (index_t t = lengths.data[std::size_t(b)]; t < T; ++t)
                for (index_t j = 0; j < d; ++j)
                    BOOST_TEST(dh.data[std::size_t((b * T + t) * d + j)] == 0.0);
    }
}

BOOST_AUTO_TEST_CASE(l2_normalize) {
    auto x = random_tensor<double>({4, 6}, 42), r = random_tensor<double>({4, 6}, 43);
    owned<double> y({4, 6}), norms({4}), dx({4, 6});
    l2_normalize_forward<double>(y, norms, x);
    l2_normalize_backward<double>(dx, r, y, norms);
    const double err = check("l2_normalize",
                             [&] {
                                 l2_normalize_forward<double>(y, norms, x);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"x", &x.data, &dx.data}});
    BOOST_TEST(err < tolerance);
    for (index_t i = 0; i < 4; ++i) { // unit rows
        double sq = 0;
        for (index_t j = 0; j < 6; ++j)
            sq += y.data[std::size_t(i * 6 + j)] * y.data[std::size_t(i * 6 + j)];
        BOOST_TEST(std::abs(sq - 1.0) < 1e-12);
    }
}

BOOST_AUTO_TEST_CASE(residual) {
    auto a = random_tensor<double>({3, 5}, 25), b = random_tensor<double>({3, 5}, 26),
         r = random_tensor<double>({3, 5}, 27);
    owned<double> y({3, 5}), da({3, 5}), db({3, 5});
    residual_backward<double>(da, db, r);
    const double err = check("residual",
                             [&] {
                                 residual_forward<double>(y, a, b);
                                 return weighted_sum(y.data, r.data);
                             },
                             {{"a", &a.data, &da.data}, {"b", &b.data, &db.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_CASE(head_cross_entropy_in_chunks) {
    const index_t N = 6, d = 5, V = 11;
    auto h = random_tensor<double>({N, d}, 28), w = random_tensor<double>({V, d}, 29);
    owned<token_t> targets({N});
    targets.data = {3, 10, ignore_index, 0, 7, 4};
    arena a(1 << 16);
    const auto ws = cross_entropy_workspace<double>::allocate(a, N, 4); // 4 does not divide 11: a ragged chunk
    owned<double> lse({N}), dh({N, d}), dw({V, d});
    const auto r = head_cross_entropy_forward<ref, double>(lse, ws, h, w, targets);
    BOOST_TEST(r.count == 5);
    head_cross_entropy_backward<ref, double>(dh, dw, ws, h, w, targets, lse);
    const double err =
        check("cross_entropy", [&] { return head_cross_entropy_forward<ref, double>(lse, ws, h, w, targets).loss; },
              {{"h", &h.data, &dh.data}, {"weight", &w.data, &dw.data}});
    BOOST_TEST(err < tolerance);
}

BOOST_AUTO_TEST_SUITE_END()
