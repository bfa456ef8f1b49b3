// The tiled attention kernels (ops/attention.hpp) against the straightforward reference kernels on random
// inputs: sequence lengths that are not a multiple of the tile, MHA, GQA and MQA, windows smaller and larger
// than a tile, packed documents, causal and bidirectional, right padding (key_lengths), and the KV-cache forms
// (one decoded query, a prefill chunk at q_start > 0). Each in every copy of the tiles the build has: AVX-512,
// AVX2 and baseline x86-64 (simd.hpp), where the CPU runs them.
#include "../support/random.hpp"

#include <tinylm/ops/attention.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <tuple>
#include <vector>

using namespace tl;
using namespace tl::test;

BOOST_AUTO_TEST_SUITE(attention_tiles)

namespace {
using real_types = boost::mpl::list<float, double>;

// Runs f with each copy of the tiles allowed in turn (the best the CPU has, then AVX2 at most, then baseline).
template <class F>
void for_each_copy(F&& f) {
    struct copy {
        const char* name;
        bool avx512, avx2;
    };
    for (const copy c : {copy{"avx512", true, true}, copy{"avx2", false, true}, copy{"baseline", false, false}}) {
        detail::allow_avx512_clones = c.avx512;
        detail::allow_avx2_clones = c.avx2;
        f(c.name);
    }
    detail::allow_avx512_clones = detail::allow_avx2_clones = true;
}

template <class T>
double tolerance() {
    return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

struct attention_case {
    std::string name;
    index_t batch, time, q_heads, kv_heads, head_dim, window;
    std::vector<index_t> doc_lengths; // empty: one document per row; else lengths repeated to fill each row
    bool causal = true;
    std::vector<index_t> key_lengths = {}; // empty: no padding; else key_lengths[b % size] for row b
};

// key_lengths (B) from a list cycled over the rows.
owned<index_t> key_lengths_of(index_t batch, const std::vector<index_t>& lengths) {
    owned<index_t> out({batch});
    for (index_t b = 0; b < batch; ++b)
        out.data[std::size_t(b)] = lengths[std::size_t(b) % lengths.size()];
    return out;
}

// doc_start (B, T) from document lengths, shifted by the row so that rows differ.
owned<index_t> document_starts(index_t batch, index_t time, const std::vector<index_t>& lengths) {
    owned<index_t> starts({batch, time});
    for (index_t b = 0; b < batch; ++b) {
        index_t start = 0, next = 0;
        std::size_t which = std::size_t(b);
        for (index_t t = 0; t < time; ++t) {
            if (t == next) {
                start = t;
                next = t + lengths[which++ % lengths.size()];
            }
            starts.data[std::size_t(b * time + t)] = start;
        }
    }
    return starts;
}

template <class T>
void compare_training(const attention_case& c, std::uint64_t seed, const char* copy) {
    const shape qs{c.batch, c.time, c.q_heads, c.head_dim}, ks{c.batch, c.time, c.kv_heads, c.head_dim};
    auto q = random_tensor<T>(qs, seed), k = random_tensor<T>(ks, seed + 1), v = random_tensor<T>(ks, seed + 2);
    auto dout = random_tensor<T>(qs, seed + 3);
    owned<index_t> docs =
        c.doc_lengths.empty() ? owned<index_t>({0, 0}) : document_starts(c.batch, c.time, c.doc_lengths);
    const cview<index_t> doc_view = c.doc_lengths.empty() ? cview<index_t>{} : docs.cv();
    owned<index_t> lengths = key_lengths_of(c.batch, c.key_lengths.empty() ? std::vector<index_t>{1} : c.key_lengths);
    const cview<index_t> len_view = c.key_lengths.empty() ? cview<index_t>{} : lengths.cv();
    owned<T> out(qs), lse({c.batch, c.q_heads, c.time}), dq(qs), dk(ks), dv(ks);
    owned<T> out_ref(qs), lse_ref({c.batch, c.q_heads, c.time}), dq_ref(qs), dk_ref(ks), dv_ref(ks);
    // Outputs start as garbage: the kernels must assign every element.
    for (auto* t : {&out, &dq, &dk, &dv})
        std::fill(t->data.begin(), t->data.end(), T(7));
    attention_forward<T>(out, lse, q, k, v, c.window, 0, doc_view, c.causal, len_view);
    attention_forward_reference<T>(out_ref, lse_ref, q, k, v, c.window, 0, doc_view, c.causal, len_view);
    attention_backward<T>(dq, dk, dv, dout, q, k, v, out, lse, c.window, doc_view, c.causal, len_view);
    attention_backward_reference<T>(dq_ref, dk_ref, dv_ref, dout, q, k, v, out_ref, lse_ref, c.window, doc_view,
                                    c.causal, len_view);
    BOOST_TEST(rel_error(out.data, out_ref.data) < tolerance<T>(),
               c.name << " [" << copy << "] out " << rel_error(out.data, out_ref.data));
    BOOST_TEST(rel_error(lse.data, lse_ref.data) < tolerance<T>(), c.name << " [" << copy << "] lse");
    BOOST_TEST(rel_error(dq.data, dq_ref.data) < tolerance<T>(),
               c.name << " [" << copy << "] dq " << rel_error(dq.data, dq_ref.data));
    BOOST_TEST(rel_error(dk.data, dk_ref.data) < tolerance<T>(),
               c.name << " [" << copy << "] dk " << rel_error(dk.data, dk_ref.data));
    BOOST_TEST(rel_error(dv.data, dv_ref.data) < tolerance<T>(),
               c.name << " [" << copy << "] dv " << rel_error(dv.data, dv_ref.data));
}
} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(training_kernels_match_reference, T, real_types) {
    const std::vector<attention_case> cases = {
        {"one tile, MHA", 2, 37, 2, 2, 16, 0, {}},
        {"T not a multiple of the tile, GQA", 2, 150, 4, 2, 16, 0, {}},
        {"MQA, odd head width", 1, 129, 3, 1, 13, 0, {}},
        {"window smaller than a tile", 2, 140, 4, 2, 8, 5, {}},
        {"window larger than a tile", 1, 200, 2, 1, 8, 70, {}},
        {"window = 1 (each query sees itself)", 1, 90, 2, 2, 8, 1, {}},
        {"documents", 2, 170, 4, 2, 8, 0, {3, 40, 1, 70, 9, 100}},
        {"documents and a window", 2, 170, 2, 1, 8, 20, {65, 2, 30}},
        {"head width 64 (config B)", 1, 130, 2, 1, 64, 0, {}},
        {"a last block of one query (the row kernel), head width 64", 1, 65, 2, 1, 64, 0, {}},
        {"a last block of one query, GQA, key lengths", 2, 129, 4, 2, 16, 0, {}, true, {129, 70}},
        {"bidirectional, one tile", 2, 37, 2, 2, 16, 0, {}, false},
        {"bidirectional, GQA", 2, 150, 4, 2, 16, 0, {}, false},
        {"bidirectional, MQA, odd head width", 1, 129, 3, 1, 13, 0, {}, false},
        {"bidirectional, head width 64", 1, 130, 2, 1, 64, 0, {}, false},
        {"bidirectional, key lengths", 3, 170, 4, 2, 8, 0, {}, false, {100, 170, 65}},
        {"bidirectional, key lengths 1 and a tile", 2, 150, 2, 1, 8, 0, {}, false, {1, 64}},
        {"bidirectional, documents", 2, 170, 4, 2, 8, 0, {3, 40, 1, 70, 9, 100}, false},
        {"bidirectional, documents and key lengths", 2, 170, 2, 1, 8, 0, {65, 2, 30}, false, {120, 97}},
        {"causal, key lengths", 3, 150, 4, 2, 16, 0, {}, true, {1, 77, 150}},
        {"causal, window and key lengths (padded queries fall back)", 2, 200, 2, 1, 8, 20, {}, true, {30, 130}},
        {"causal, documents and key lengths", 2, 170, 4, 2, 8, 0, {3, 40, 1, 70, 9, 100}, true, {150, 66}},
    };
    for_each_copy([&](const char* copy) {
        std::uint64_t seed = 100;
        for (const auto& c : cases)
            compare_training<T>(c, seed += 10, copy);
    });
}

namespace {
template <class T>
void check_cache_forward(index_t Hq, index_t Hkv, index_t D) {
    const index_t B = 2, capacity = 260;
    const shape ks{B, capacity, Hkv, D};
    auto k = random_tensor<T>(ks, 200), v = random_tensor<T>(ks, 201);
    struct step {
        const char* name;
        index_t q_start, time, window;
        bool with_lse, with_docs, causal = true, with_lengths = false;
    };
    owned<index_t> lengths({B}); // valid cache positions of each row
    lengths.data = {180, 250};
    for_each_copy([&](const char* copy) {
        for (const step st :
             {step{"decode one query", 199, 1, 0, false, false}, step{"decode with a window", 199, 1, 40, false, false},
              step{"decode with key lengths, lse", 199, 1, 0, true, false, true, true},
              step{"decode with documents", 60, 1, 0, true, true}, step{"prefill chunk", 70, 100, 0, true, false},
              step{"prefill chunk with a window", 70, 100, 30, false, false},
              step{"prefill chunk with documents", 10, 90, 0, true, true},
              step{"bidirectional chunk", 70, 100, 0, true, false, false},
              step{"bidirectional chunk with key lengths", 70, 100, 0, true, false, false, true},
              step{"bidirectional chunk with documents and key lengths", 10, 90, 0, true, true, false, true},
              step{"causal chunk with a window and key lengths", 150, 100, 30, true, false, true, true}}) {
            const shape qs{B, st.time, Hq, D};
            auto q = random_tensor<T>(qs, 202 + std::uint64_t(st.time));
            owned<T> out(qs, T(7)), out_ref(qs), lse({B, Hq, st.time}), lse_ref({B, Hq, st.time});
            owned<index_t> docs({B, st.time});
            for (index_t b = 0; b < B; ++b) // the chunk's first tokens continue a document started at key 3
                for (index_t i = 0; i < st.time; ++i)
                    docs.data[std::size_t(b * st.time + i)] = i < 25 + b ? 3 : st.q_start + 25 + b;
            const cview<index_t> doc_view = st.with_docs ? docs.cv() : cview<index_t>{};
            const tensor_view<T> lse_view = st.with_lse ? lse.view() : tensor_view<T>{};
            const cview<index_t> len_view = st.with_lengths ? lengths.cv() : cview<index_t>{};
            attention_forward<T>(out, lse_view, q, k, v, st.window, st.q_start, doc_view, st.causal, len_view);
            attention_forward_reference<T>(out_ref, st.with_lse ? lse_ref.view() : tensor_view<T>{}, q, k, v, st.window,
                                           st.q_start, doc_view, st.causal, len_view);
            BOOST_TEST(rel_error(out.data, out_ref.data) < tolerance<T>(),
                       st.name << ", " << Hq << " heads over " << Hkv << " (" << copy << ")");
            if (st.with_lse)
                BOOST_TEST(rel_error(lse.data, lse_ref.data) < tolerance<T>(),
                           st.name << ", " << Hq << " heads over " << Hkv << " (" << copy << ")");
        }
    });
}
} // namespace

// Runs f with every decoding group of 2 heads or more taking the group path (decodes_by_group's thresholds at their
// lowest), then restores them.
template <class F>
void with_every_group_together(F&& f) {
    const index_t saved_group = detail::min_long_context_group, saved_keys = detail::min_group_keys;
    detail::min_long_context_group = 2, detail::min_group_keys = 0;
    f();
    detail::min_long_context_group = saved_group, detail::min_group_keys = saved_keys;
}

// KV cache: k and v are the cache (capacity > the positions written), queries start at q_start. Decoding in groups
// of 4 heads or more runs a group's heads together (attention_forward_group), smaller ones a head at a time (the row
// kernel) over these few keys, and together too where every group is made to (decodes_by_group): groups of 2, 3, 7
// (Qwen2.5-0.5B: 14 heads over 2, head width 64), 4 (MQA, an odd head width) and 2 over key rows 4 KB apart in f32
// (Qwen3-0.6B: 16 over 8 of 128; tile_nt transposes those 8 rows at a time).
BOOST_AUTO_TEST_CASE_TEMPLATE(cache_forward_matches_reference, T, real_types) {
    const auto every_shape = [] {
        for (const auto& [Hq, Hkv, D] :
             {std::tuple<index_t, index_t, index_t>{4, 2, 16}, {6, 2, 64}, {14, 2, 64}, {4, 1, 13}, {16, 8, 128}})
            check_cache_forward<T>(Hq, Hkv, D);
    };
    every_shape();
    with_every_group_together(every_shape);
}

// Which path a decoding step takes: groups of 4 or more always together, groups of 3 from min_group_keys visible keys
// (a window counts its keys), never groups of 2, a head alone (1) or a prefill chunk.
BOOST_AUTO_TEST_CASE(decoding_groups_go_together_where_they_pay) {
    const auto by_group = [](index_t hq, index_t hkv, index_t time, index_t q_start, index_t window = 0) {
        const attention_shape s = detail::attention_shape_of({1, time, hq, 64}, {1, 5000, hkv, 64}, window, q_start);
        return detail::decodes_by_group(s, q_start);
    };
    const index_t keys = detail::min_group_keys;
    BOOST_TEST(keys > 1);
    BOOST_TEST(by_group(14, 2, 1, 10));
    BOOST_TEST(by_group(8, 2, 1, 10));
    BOOST_TEST(!by_group(12, 4, 1, keys - 2)); // keys - 1 keys seen
    BOOST_TEST(by_group(12, 4, 1, keys - 1));
    BOOST_TEST(!by_group(12, 4, 1, keys + 100, 100)); // a window sees 100 keys
    BOOST_TEST(!by_group(8, 4, 1, keys + 100));
    BOOST_TEST(!by_group(16, 8, 1, 4000));
    BOOST_TEST(!by_group(8, 8, 1, keys + 100));
    BOOST_TEST(!by_group(14, 2, 2, keys + 100));
}

// A bf16 KV cache (model/kv_cache.hpp): attention_forward<float, bf16> reads each key and value widened exactly, so
// it gives what the f32 kernels give on the widened cache, to f32 rounding (the same sums; the vectoriser may pick
// another width for 16-bit loads, and so another order; up to 4e-7 apart here), in every copy of the tiles: one decoded
// query (the row kernel, groups of 2 heads; attention_forward_group, groups of 4, and of 2 when every group is made
// to go together; head widths that are and are not a multiple of a register, and one whose key rows lie 4 KB apart,
// which tile_nt transposes 8 rows at a time), prefill chunks (the tiles), a window; and attention_forward_rows,
// several caches at once.
BOOST_AUTO_TEST_CASE(bf16_cache_forward_is_the_f32_forward_of_the_widened_cache) {
    const index_t B = 2, Hkv = 2, capacity = 200;
    for (const std::pair<index_t, index_t>& heads_and_width :
         {std::pair<index_t, index_t>{4, 64}, {4, 13}, {8, 64}, {8, 13}, {4, 1024}}) {
        const index_t Hq = heads_and_width.first, D = heads_and_width.second; // captured below: not a binding
        const shape ks{B, capacity, Hkv, D};
        const owned<float> k = random_tensor<float>(ks, 300 + std::uint64_t(D + Hq)),
                           v = random_tensor<float>(ks, 301 + std::uint64_t(D + Hq));
        owned<bf16> k16(ks), v16(ks);
        owned<float> kw(ks), vw(ks); // the bf16 cache widened
        for (std::size_t i = 0; i < k.data.size(); ++i) {
            k16.data[i] = bf16(k.data[i]), v16.data[i] = bf16(v.data[i]);
            kw.data[i] = float(k16.data[i]), vw.data[i] = float(v16.data[i]);
        }
        BOOST_TEST(rel_error(kw.data, k.data) > 1e-4); // the cache was rounded: the test compares something
        const auto both_paths = [](auto&& f) {         // groups of 2 by the row kernel, then together
            f();
            with_every_group_together(f);
        };
        for_each_copy([&](const char* copy) {
            both_paths([&] {
                for (const auto& [name, q_start, time, window] :
                     {std::tuple{"decode one query", index_t(150), index_t(1), index_t(0)},
                      std::tuple{"decode with a window", index_t(150), index_t(1), index_t(40)},
                      std::tuple{"prefill chunk", index_t(30), index_t(100), index_t(0)},
                      std::tuple{"prefill chunk with a window", index_t(30), index_t(100), index_t(30)}}) {
                    const shape qs{B, time, Hq, D};
                    const owned<float> q = random_tensor<float>(qs, 302 + std::uint64_t(time));
                    owned<float> got(qs, 7.0f), want(qs, 7.0f), lse({B, Hq, time}), lse_want({B, Hq, time});
                    attention_forward<float, bf16>(got, lse, q, k16, v16, window, q_start);
                    attention_forward<float>(want, lse_want, q, kw, vw, window, q_start);
                    BOOST_TEST(rel_error(got.data, want.data) < 1e-6, name << ", " << Hq << " heads, D " << D << " ("
                                                                           << copy << ") "
                                                                           << rel_error(got.data, want.data));
                    BOOST_TEST(rel_error(lse.data, lse_want.data) < 1e-6,
                               name << ", " << Hq << " heads, D " << D << " (" << copy << ")");
                }
                // attention_forward_rows: row r is sequence r of the caches, at position 150 + 20 r.
                const shape one{1, capacity, Hkv, D}, qs{B, 1, Hq, D};
                std::vector<tensor_view<bf16>> rows_k16, rows_v16;
                std::vector<tensor_view<float>> rows_kw, rows_vw;
                for (index_t b = 0; b < B; ++b) {
                    const index_t at = b * capacity * Hkv * D;
                    rows_k16.push_back({k16.data.data() + at, one}), rows_v16.push_back({v16.data.data() + at, one});
                    rows_kw.push_back({kw.data.data() + at, one}), rows_vw.push_back({vw.data.data() + at, one});
                }
                const std::vector<index_t> starts{150, 170};
                const owned<float> q = random_tensor<float>(qs, 310);
                owned<float> got(qs), want(qs);
                attention_forward_rows<float, bf16>(got, q, rows_k16, rows_v16, starts, 40);
                attention_forward_rows<float>(want, q, rows_kw, rows_vw, starts, 40);
                BOOST_TEST(rel_error(got.data, want.data) < 1e-6,
                           "attention_forward_rows, " << Hq << " heads, D " << D << " (" << copy << ")");
            });
        });
    }
}

// Scores far apart (large activations): the online maximum must rescale without overflow or underflow.
BOOST_AUTO_TEST_CASE(large_scores_stay_finite) {
    const index_t B = 1, T = 150, H = 2, D = 8;
    auto q = random_tensor<float>({B, T, H, D}, 300, 12.0), k = random_tensor<float>({B, T, H, D}, 301, 12.0);
    auto v = random_tensor<float>({B, T, H, D}, 302), dout = random_tensor<float>({B, T, H, D}, 303);
    owned<float> out(q.shape), lse({B, H, T}), dq(q.shape), dk(k.shape), dv(v.shape);
    owned<float> out_ref(q.shape), lse_ref({B, H, T}), dq_ref(q.shape), dk_ref(k.shape), dv_ref(v.shape);
    attention_forward<float>(out, lse, q, k, v);
    attention_forward_reference<float>(out_ref, lse_ref, q, k, v);
    attention_backward<float>(dq, dk, dv, dout, q, k, v, out, lse);
    attention_backward_reference<float>(dq_ref, dk_ref, dv_ref, dout, q, k, v, out_ref, lse_ref);
    BOOST_TEST(rel_error(out.data, out_ref.data) < 1e-5);
    BOOST_TEST(rel_error(lse.data, lse_ref.data) < 1e-5);
    BOOST_TEST(rel_error(dq.data, dq_ref.data) < 1e-4);
    BOOST_TEST(rel_error(dk.data, dk_ref.data) < 1e-4);
    BOOST_TEST(rel_error(dv.data, dv_ref.data) < 1e-4);
}

// The vectorised exp of the float tiles against std::exp over the range the kernels use.
BOOST_AUTO_TEST_CASE(tile_exp_is_accurate) {
    double worst = 0;
    for (int i = 0; i <= 200000; ++i) {
        const float x = -90.0f + 90.5f * float(i) / 200000.0f;
        const double expected = std::exp(double(x)), got = double(detail::fast_exp(x));
        if (x > -87.0f)
            worst = std::max(worst, std::abs(got - expected) / expected);
        else
            BOOST_TEST(got >= 0.0);
    }
    BOOST_TEST(worst < 4e-7, "worst relative error " << worst);
    BOOST_TEST(detail::fast_exp(0.0f) == 1.0f);
    BOOST_TEST(detail::fast_exp(-1000.0f) == 0.0f);
}

BOOST_AUTO_TEST_SUITE_END()
