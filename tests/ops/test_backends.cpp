// Fast backends against the reference on random inputs, the gradient accumulation rule, and each generic
// op in f32 against the same op in f64.
#include "../support/random.hpp"

#include <tinylm/backend/decoding_weights.hpp>
#include <tinylm/backend/default.hpp>
#include <tinylm/io/gguf_quants.hpp>
#include <tinylm/ops/activation.hpp>
#include <tinylm/ops/attention.hpp>
#include <tinylm/ops/cross_entropy.hpp>
#include <tinylm/ops/embedding.hpp>
#include <tinylm/ops/layernorm.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/rmsnorm.hpp>
#include <tinylm/ops/rope.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

using namespace tl;
using namespace tl::test;

#ifdef TINYLM_HAS_ONEDNN
using fast_backends = boost::mpl::list<eigen_cpu, onednn_cpu>;
#else
using fast_backends = boost::mpl::list<eigen_cpu>;
#endif

namespace {
constexpr double f32_tolerance = 2e-5;
// The kernels a product runs: 512 the AVX-512 ones (where the CPU has them), 2 the AVX2 ones, 0 the baseline.
constexpr int isas[] = {512, 2, 0};
void use_isa(int isa) { detail::allow_avx2_clones = isa > 0, detail::allow_avx512_clones = isa == 512; }
std::size_t isa_slot(int isa) { return isa == 512 ? 2 : isa == 2 ? 1 : 0; }
} // namespace

BOOST_AUTO_TEST_SUITE(backends)

// Odd sizes and padded row strides; m = 1 and 5 are the decoding path (backend/gemv.hpp: n over several of its
// 64-row blocks and a tail of fewer than 4 rows), m = 1 run with its fastest kernel and its baseline copy.
BOOST_AUTO_TEST_CASE_TEMPLATE(gemm_matches_reference, B, fast_backends) {
    const index_t k = 45, pad = 3;
    struct size {
        index_t m, n;
        bool avx2;
    };
    for (const size sz :
         {size{37, 29, true}, size{1, 29, true}, size{1, 150, true}, size{1, 150, false}, size{5, 150, true}}) {
        const index_t m = sz.m, n = sz.n;
        detail::allow_avx2_clones = sz.avx2;
        for (bool ta : {false, true})
            for (bool tb : {false, true})
                for (float beta : {0.0f, 1.0f, -0.5f}) {
                    const index_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
                    auto a = random_tensor<float>({(ta ? k : m), lda}, 1),
                         b = random_tensor<float>({(tb ? n : k), ldb}, 2);
                    auto c0 = random_tensor<float>({m, ldc}, 3);
                    if (beta == 0.0f) c0.data.assign(c0.data.size(), std::numeric_limits<float>::quiet_NaN());
                    auto c_ref = c0, c_fast = c0;
                    const gemm_args<float> g{.trans_a = ta,
                                             .trans_b = tb,
                                             .m = m,
                                             .n = n,
                                             .k = k,
                                             .alpha = 0.75f,
                                             .a = a.data.data(),
                                             .lda = lda,
                                             .b = b.data.data(),
                                             .ldb = ldb,
                                             .beta = beta,
                                             .c = nullptr,
                                             .ldc = ldc};
                    auto g_ref = g, g_fast = g;
                    g_ref.c = c_ref.data.data();
                    g_fast.c = c_fast.data.data();
                    reference_cpu::gemm(g_ref);
                    B::gemm(g_fast);
                    // Compare only the m x n block; the padding must be untouched.
                    double diff = 0, scale = 0;
                    bool padding_kept = true;
                    for (index_t i = 0; i < m; ++i)
                        for (index_t j = 0; j < ldc; ++j) {
                            const std::size_t at = std::size_t(i * ldc + j);
                            if (j >= n)
                                padding_kept &= (c_fast.data[at] == c0.data[at]) || std::isnan(c0.data[at]);
                            else {
                                diff = std::max(diff, double(std::abs(c_fast.data[at] - c_ref.data[at])));
                                scale = std::max(scale, double(std::abs(c_ref.data[at])));
                            }
                        }
                    BOOST_TEST(diff / scale < f32_tolerance,
                               B::name << " m=" << m << " n=" << n << " ta=" << ta << " tb=" << tb << " beta=" << beta);
                    BOOST_TEST(padding_kept);
                }
    }
    detail::allow_avx2_clones = true;
}

// Products run together (q, k, v of one token: one parallel region) give exactly what gemm gives each: the
// rows of the 64-row blocks are summed the same way whichever call computes them. Several block counts, a tail of
// fewer than 4 rows, bias (beta = 1) and none; m = 1 (gemv_nt_group) and m = 3 (one gemm at a time).
BOOST_AUTO_TEST_CASE_TEMPLATE(gemm_group_equals_gemm_one_by_one, B, fast_backends) {
    const index_t k = 77;
    const std::vector<index_t> widths = {150, 29, 64, 3};
    for (const index_t m : {index_t(1), index_t(3)})
        for (const bool avx2 : {true, false}) {
            detail::allow_avx2_clones = avx2;
            const auto a = random_tensor<float>({m, k}, 11);
            std::vector<owned<float>> weights, c_one, c_group;
            std::vector<gemm_args<float>> one, group;
            for (std::size_t i = 0; i < widths.size(); ++i) {
                const index_t n = widths[i];
                weights.push_back(random_tensor<float>({n, k}, 12 + std::uint64_t(i)));
                c_one.push_back(random_tensor<float>({m, n}, 20 + std::uint64_t(i)));
                c_group.push_back(c_one.back());
            }
            for (std::size_t i = 0; i < widths.size(); ++i) {
                gemm_args<float> g{.trans_b = true,
                                   .m = m,
                                   .n = widths[i],
                                   .k = k,
                                   .a = a.data.data(),
                                   .lda = k,
                                   .b = weights[i].data.data(),
                                   .ldb = k,
                                   .beta = i % 2 ? 1.0f : 0.0f,
                                   .c = c_one[i].data.data(),
                                   .ldc = widths[i]};
                B::gemm(g);
                g.c = c_group[i].data.data();
                group.push_back(g);
            }
            gemm_each<B, float>(std::span<const gemm_args<float>>(group));
            for (std::size_t i = 0; i < widths.size(); ++i)
                BOOST_TEST(c_group[i].data == c_one[i].data,
                           B::name << " m=" << m << " avx2=" << avx2 << " product " << i << " (n=" << widths[i] << ")");
        }
    detail::allow_avx2_clones = true;
}

// f32 products of 2 to max_gemv_rows rows on AVX2 and AVX-512 CPUs (gemv_f32.hpp): every row summed exactly as a
// product of that row alone (sequences decoded together get the logits each gets alone), with bias (beta = 1) and a
// padded stride, and close to f64. Odd k (a tail after the last full register), rows of c over several 64-row blocks.
BOOST_AUTO_TEST_CASE_TEMPLATE(f32_products_of_a_few_rows_sum_each_row_as_alone, B, fast_backends) {
    const index_t n = 150, k = 45, ld = 48, many = detail::max_gemv_rows;
    const auto w = random_tensor<float>({n, ld}, 51), x = random_tensor<float>({many, ld}, 52),
               c0 = random_tensor<float>({many, n}, 53);
    // c = x B^T + beta c0 for `m` rows of x from row `x0`.
    auto product = [&](index_t m, index_t x0, float beta) {
        std::vector<float> c(c0.data.begin() + x0 * n, c0.data.begin() + (x0 + m) * n);
        B::gemm(gemm_args<float>{.trans_b = true,
                                 .m = m,
                                 .n = n,
                                 .k = k,
                                 .a = x.data.data() + x0 * ld,
                                 .lda = ld,
                                 .b = w.data.data(),
                                 .ldb = ld,
                                 .beta = beta,
                                 .c = c.data(),
                                 .ldc = n});
        return c;
    };
    for (const int isa : isas) {
        use_isa(isa);
        if (!detail::gemv_f32_has_kernel()) continue; // the baseline: the GEMM library's products
        for (const float beta : {0.0f, 1.0f})
            for (index_t m = 2; m <= many; ++m) {
                std::vector<float> alone;
                for (index_t i = 0; i < m; ++i)
                    for (const float v : product(1, i, beta))
                        alone.push_back(v);
                const std::vector<float> together = product(m, 0, beta);
                BOOST_TEST(together == alone, B::name << " isa=" << isa << " m=" << m << " beta=" << beta);
                double worst = 0, scale = 0;
                for (index_t i = 0; i < m; ++i)
                    for (index_t j = 0; j < n; ++j) {
                        double s = beta * double(c0.data[std::size_t(i * n + j)]);
                        for (index_t p = 0; p < k; ++p)
                            s += double(x.data[std::size_t(i * ld + p)]) * double(w.data[std::size_t(j * ld + p)]);
                        worst = std::max(worst, std::abs(double(together[std::size_t(i * n + j)]) - s));
                        scale = std::max(scale, std::abs(s));
                    }
                BOOST_TEST(worst / scale < f32_tolerance, B::name << " isa=" << isa << " m=" << m);
            }
    }
    use_isa(512);
}

// bf16_decoding_weights (backend/decoding_weights.hpp): while it lives, a one-row product whose weights lie in a
// copied tensor reads their bf16 copy (the f32 sums of the bf16-rounded weights, against f64), also through a
// pointer into the middle of the tensor with a padded stride, and in a group; products of up to max_gemv_rows rows
// read it too, each row exactly as alone (sequences decoded together); more rows, and weights it did not copy, read
// f32; after it, the f32 results come back bit for bit. One copy per weight.
BOOST_AUTO_TEST_CASE_TEMPLATE(bf16_decoding_weights_serve_one_row_products, B, fast_backends) {
    const index_t rows = 150, k = 45, ld = 48; // a tensor (rows, ld); products read k of each row
    auto w = random_tensor<float>({rows, ld}, 31), other = random_tensor<float>({rows, ld}, 32);
    const index_t many = detail::max_gemv_rows + 1; // rows of x: one more than the copies serve
    const auto x = random_tensor<float>({many, k}, 33);
    struct entry {
        tensor_view<float> value;
    };
    const std::vector<entry> entries{{{w.data.data(), {rows, ld}}}, {{nullptr, {rows, ld}}}}; // NF4: no value
    // c = x B^T over `n` weight rows from row `row0` of `weights`, `m` rows of x from row `x0`.
    auto product = [&](owned<float>& weights, index_t row0, index_t n, index_t m, index_t x0 = 0) {
        std::vector<float> c(std::size_t(m * n), 0.0f);
        B::gemm(gemm_args<float>{.trans_b = true,
                                 .m = m,
                                 .n = n,
                                 .k = k,
                                 .a = x.data.data() + x0 * k,
                                 .lda = k,
                                 .b = weights.data.data() + row0 * ld,
                                 .ldb = ld,
                                 .c = c.data(),
                                 .ldc = n});
        return c;
    };
    auto worst_against_f64 = [&](const std::vector<float>& c, owned<float>& weights, index_t row0, bool rounded) {
        double worst = 0, scale = 0;
        const index_t n = index_t(c.size());
        for (index_t j = 0; j < n; ++j) {
            double s = 0;
            for (index_t p = 0; p < k; ++p) {
                const float wv = weights.data[std::size_t((row0 + j) * ld + p)];
                s += double(x.data[std::size_t(p)]) * (rounded ? double(float(bf16(wv))) : double(wv));
            }
            worst = std::max(worst, std::abs(double(c[std::size_t(j)]) - s));
            scale = std::max(scale, std::abs(s));
        }
        return worst / scale;
    };
    const std::vector<float> f32_all = product(w, 0, rows, 1), f32_mid = product(w, 10, 100, 1),
                             f32_other = product(other, 0, rows, 1);
    std::vector<float> f32_many[3], f32_other_copy[3]; // [isa_slot]: each kernel sums in its own order
    for (const int isa : isas) {
        use_isa(isa);
        f32_many[isa_slot(isa)] = product(w, 0, rows, many), f32_other_copy[isa_slot(isa)] = product(other, 0, rows, 1);
    }
    {
        const bf16_decoding_weights copies(entries);
        BOOST_TEST(copies.tensors() == 1u);
        BOOST_TEST(copies.bytes() == std::size_t(rows * ld * 2));
        BOOST_CHECK_THROW(bf16_decoding_weights{entries}, std::runtime_error); // the same weights again
        for (const int isa : isas) {
            use_isa(isa);
            const std::vector<float> all = product(w, 0, rows, 1), mid = product(w, 10, 100, 1);
            BOOST_TEST(worst_against_f64(all, w, 0, true) < f32_tolerance, B::name << " isa=" << isa);
            BOOST_TEST(worst_against_f64(mid, w, 10, true) < f32_tolerance, B::name << " isa=" << isa);
            BOOST_TEST(worst_against_f64(all, w, 0, false) > 10 * f32_tolerance); // it did read bf16
            for (const index_t m : {index_t(3), many - 1}) {                      // rows of x together: each as alone
                std::vector<float> alone;
                for (index_t i = 0; i < m; ++i)
                    for (const float v : product(w, 10, 100, 1, i))
                        alone.push_back(v);
                BOOST_TEST(product(w, 10, 100, m) == alone, B::name << " isa=" << isa << " m=" << m);
            }
            BOOST_TEST(product(w, 0, rows, many) == f32_many[isa_slot(isa)]);        // more rows: the f32 weights
            BOOST_TEST(product(other, 0, rows, 1) == f32_other_copy[isa_slot(isa)]); // not copied
        }
        detail::allow_avx2_clones = detail::allow_avx512_clones = true;
        // In a group (q, k, v of one token): what each product gives alone.
        std::vector<float> c0(static_cast<std::size_t>(rows)), c1(100), c2(static_cast<std::size_t>(rows));
        const std::vector<gemm_args<float>> group{{.trans_b = true,
                                                   .m = 1,
                                                   .n = rows,
                                                   .k = k,
                                                   .a = x.data.data(),
                                                   .lda = k,
                                                   .b = w.data.data(),
                                                   .ldb = ld,
                                                   .c = c0.data(),
                                                   .ldc = rows},
                                                  {.trans_b = true,
                                                   .m = 1,
                                                   .n = 100,
                                                   .k = k,
                                                   .a = x.data.data(),
                                                   .lda = k,
                                                   .b = w.data.data() + 10 * ld,
                                                   .ldb = ld,
                                                   .c = c1.data(),
                                                   .ldc = 100},
                                                  {.trans_b = true,
                                                   .m = 1,
                                                   .n = rows,
                                                   .k = k,
                                                   .a = x.data.data(),
                                                   .lda = k,
                                                   .b = other.data.data(),
                                                   .ldb = ld,
                                                   .c = c2.data(),
                                                   .ldc = rows}};
        gemm_each<B, float>(std::span<const gemm_args<float>>(group));
        BOOST_TEST(c0 == product(w, 0, rows, 1));
        BOOST_TEST(c1 == product(w, 10, 100, 1));
        BOOST_TEST(c2 == f32_other);
    }
    BOOST_TEST(product(w, 0, rows, 1) == f32_all);
    BOOST_TEST(product(w, 10, 100, 1) == f32_mid);
    BOOST_TEST(worst_against_f64(f32_all, w, 0, false) < f32_tolerance);
}

// The q8_0 copies round as std::lround (half away from zero), in vectorisable steps: the halves, the floats next to
// them (0.49999997 must not round up, as x + 0.5 would), the ends of the code range, random values.
BOOST_AUTO_TEST_CASE(q8_0_rounding_is_lround) {
    std::vector<float> xs = {0.0f,
                             -0.0f,
                             0.5f,
                             -0.5f,
                             1.5f,
                             -1.5f,
                             2.5f,
                             -2.5f,
                             126.5f,
                             -126.5f,
                             127.0f,
                             -127.0f,
                             std::nextafter(0.5f, 0.0f),
                             std::nextafter(-0.5f, 0.0f),
                             std::nextafter(1.5f, 1.0f),
                             std::nextafter(1.5f, 2.0f),
                             std::nextafter(127.0f, 128.0f),
                             1e-30f};
    counter_rng rng(9);
    for (int i = 0; i < 10000; ++i)
        xs.push_back(float(254.0 * rng.uniform() - 127.0));
    for (float x : xs)
        BOOST_TEST(detail::round_half_away(x) == std::lround(x), "x = " << x);
}

// What a q8_0 copy stands for, by its definition: d = max |w| / 127 over a row's block of 32, d round(w / d).
std::vector<double> q8_0_by_definition(const std::vector<float>& w, index_t rows, index_t cols) {
    std::vector<double> out(w.size());
    for (index_t r = 0; r < rows; ++r)
        for (index_t p0 = r * cols; p0 < (r + 1) * cols; p0 += 32) {
            const index_t p1 = std::min((r + 1) * cols, p0 + 32);
            double largest = 0;
            for (index_t p = p0; p < p1; ++p)
                largest = std::max(largest, std::abs(double(w[std::size_t(p)])));
            const double d = largest / 127;
            for (index_t p = p0; p < p1; ++p)
                out[std::size_t(p)] = d == 0 ? 0.0 : d * std::round(double(w[std::size_t(p)]) / d);
        }
    return out;
}

// What a q4_0 copy stands for: m the block's weight of largest magnitude (the first), d = m / -8,
// q = min(15, floor(w / d + 8.5)), d (q - 8). In f64; w / d + 8.5 lands on an integer for none of the random weights.
std::vector<double> q4_0_by_definition(const std::vector<float>& w, index_t rows, index_t cols) {
    std::vector<double> out(w.size());
    for (index_t r = 0; r < rows; ++r)
        for (index_t p0 = r * cols; p0 < (r + 1) * cols; p0 += 32) {
            const index_t p1 = std::min((r + 1) * cols, p0 + 32);
            double m = 0;
            for (index_t p = p0; p < p1; ++p)
                if (std::abs(double(w[std::size_t(p)])) > std::abs(m)) m = w[std::size_t(p)];
            const double d = double(float(m) / -8.0f);
            for (index_t p = p0; p < p1; ++p)
                out[std::size_t(p)] =
                    d == 0 ? 0.0 : d * (std::min(15.0, std::floor(double(w[std::size_t(p)]) / d + 8.5)) - 8);
        }
    return out;
}

// Copies in `format` (q8_0 or q4_0) of rows of 80 weights (blocks of 32, 32 and 16; an all-zero block), products
// reading 75 of them (the last block in part): every kernel (AVX-512, AVX2, baseline) within f32 rounding of the
// product with the weights the copy stands for (`by_definition`) and far from the f32 weights' (it read the copy);
// products not starting at a block, or of more rows than max_gemv_rows, read the f32 weights; rows of x together
// get what each gets alone, also in a group of products; the f32 results again once the copies are gone.
// `check_layout` looks at the copy of the whole weight.
template <class B, class Layout>
void check_quantized_copies_serve_products(decoding_format format,
                                           std::vector<double> (*by_definition)(const std::vector<float>&, index_t,
                                                                                index_t),
                                           std::size_t bytes, Layout check_layout) {
    const index_t rows = 150, cols = 80;
    auto w = random_tensor<float>({rows, cols}, 41);
    const index_t many = detail::max_gemv_rows + 1; // rows of x: one more than the copies serve
    const auto x = random_tensor<float>({many, cols}, 43);
    w.data[5] = 0.0f;
    for (index_t p = 32; p < 64; ++p) // an all-zero block: scale 0
        w.data[std::size_t(7 * cols + p)] = 0.0f;
    struct entry {
        tensor_view<float> value;
    };
    const std::vector<entry> entries{{{w.data.data(), {rows, cols}}}};
    // c = x B^T over `n` weight rows from row `row0`, columns [col0, col0 + k), `m` rows of x from row `x0`.
    auto product = [&](index_t row0, index_t col0, index_t n, index_t k, index_t m, index_t x0 = 0) {
        std::vector<float> c(std::size_t(m * n), 0.0f);
        B::gemm(gemm_args<float>{.trans_b = true,
                                 .m = m,
                                 .n = n,
                                 .k = k,
                                 .a = x.data.data() + x0 * cols,
                                 .lda = cols,
                                 .b = w.data.data() + row0 * cols + col0,
                                 .ldb = cols,
                                 .c = c.data(),
                                 .ldc = n});
        return c;
    };
    const std::vector<double> dequantized = by_definition(w.data, rows, cols);
    auto worst_against_f64 = [&](const std::vector<float>& c, index_t row0, index_t col0, index_t k, bool copied) {
        double worst = 0, scale = 0;
        for (index_t j = 0; j < index_t(c.size()); ++j) {
            double s = 0;
            for (index_t p = 0; p < k; ++p) {
                const std::size_t at = std::size_t((row0 + j) * cols + col0 + p);
                s += double(x.data[std::size_t(p)]) * (copied ? dequantized[at] : double(w.data[at]));
            }
            worst = std::max(worst, std::abs(double(c[std::size_t(j)]) - s));
            scale = std::max(scale, std::abs(s));
        }
        return worst / scale;
    };
    const std::vector<float> f32_all = product(0, 0, rows, 75, 1);
    std::vector<float> f32_many[3], f32_unaligned[3]; // [isa_slot]: each kernel sums in its own order
    for (const int isa : isas) {
        use_isa(isa);
        f32_many[isa_slot(isa)] = product(0, 0, rows, 75, many),
        f32_unaligned[isa_slot(isa)] = product(0, 5, rows, 40, 1);
    }
    use_isa(512);
    const std::string name = std::string(B::name) + " " + to_string(format);
    {
        const decoding_weights copies(entries, format);
        BOOST_TEST(copies.tensors() == 1u);
        BOOST_TEST(copies.bytes() == bytes);
        BOOST_CHECK_THROW(bf16_decoding_weights{entries}, std::runtime_error); // the same weights again
        const detail::decoding_copy whole = detail::decoding_copy_of(w.data.data(), rows, cols, cols);
        BOOST_REQUIRE((whole.format == format));
        BOOST_TEST(whole.scales_ld == 3);
        BOOST_TEST(whole.scales[7 * 3 + 1] == 0.0f);
        check_layout(w.data, whole);
        for (const int isa : isas) {
            use_isa(isa);
            const std::vector<float> all = product(0, 0, rows, 75, 1);
            BOOST_TEST(worst_against_f64(all, 0, 0, 75, true) < f32_tolerance, name << " isa=" << isa);
            BOOST_TEST(worst_against_f64(all, 0, 0, 75, false) > 10 * f32_tolerance); // it did read the copy
            BOOST_TEST(worst_against_f64(product(10, 0, 100, 75, 1), 10, 0, 75, true) < f32_tolerance);
            BOOST_TEST(worst_against_f64(product(0, 32, rows, 48, 1), 0, 32, 48, true) < f32_tolerance); // block 1 on
            BOOST_TEST(worst_against_f64(product(3, 64, 1, 16, 1), 3, 64, 16, true) < f32_tolerance);    // one row
            BOOST_TEST(product(0, 5, rows, 40, 1) == f32_unaligned[isa_slot(isa)]); // not at a block: the f32 weights
            for (const index_t m : {index_t(2), index_t(7), many - 1}) {            // rows of x together: each as alone
                std::vector<float> alone;
                for (index_t i = 0; i < m; ++i)
                    for (const float v : product(10, 0, 101, 75, 1, i))
                        alone.push_back(v);
                BOOST_TEST(product(10, 0, 101, 75, m) == alone, name << " isa=" << isa << " m=" << m);
            }
            BOOST_TEST(product(0, 0, rows, 75, many) == f32_many[isa_slot(isa)]); // more rows: the f32 weights
        }
        detail::allow_avx2_clones = detail::allow_avx512_clones = true;
        // In a group (q, k, v of one token): what each product gives alone.
        std::vector<float> c0(static_cast<std::size_t>(rows)), c1(100);
        auto one_row = [&](index_t row0, index_t n, float* c) {
            return gemm_args<float>{.trans_b = true,
                                    .m = 1,
                                    .n = n,
                                    .k = 75,
                                    .a = x.data.data(),
                                    .lda = cols,
                                    .b = w.data.data() + row0 * cols,
                                    .ldb = cols,
                                    .c = c,
                                    .ldc = n};
        };
        const std::vector<gemm_args<float>> group{one_row(0, rows, c0.data()), one_row(10, 100, c1.data())};
        gemm_each<B, float>(std::span<const gemm_args<float>>(group));
        BOOST_TEST(c0 == product(0, 0, rows, 75, 1));
        BOOST_TEST(c1 == product(10, 0, 100, 75, 1));
    }
    BOOST_TEST(product(0, 0, rows, 75, 1) == f32_all); // the copies gone: f32 again, bit for bit
}

BOOST_AUTO_TEST_CASE_TEMPLATE(q8_0_decoding_weights_serve_one_row_products, B, fast_backends) {
    struct entry {
        tensor_view<float> value;
    };
    BOOST_CHECK_THROW(decoding_weights(std::vector<entry>{}, decoding_format::f32), std::runtime_error);
    BOOST_CHECK_THROW(parse_decoding_format("q4_1"), std::runtime_error);
    BOOST_TEST((parse_decoding_format("q8_0") == decoding_format::q8_0));
    // The copy's layout: codes element for element, a scale per block, |w - d q| <= d / 2, max |q| = 127.
    auto layout = [](const std::vector<float>& w, const detail::decoding_copy& whole) {
        BOOST_TEST(whole.codes_ld == 80);
        const auto* codes = static_cast<const std::int8_t*>(whole.data);
        for (index_t r = 0; r < 150; ++r)
            for (index_t b = 0; b < 3; ++b) {
                const float d = whole.scales[r * 3 + b];
                int largest = 0;
                for (index_t p = r * 80 + b * 32; p < r * 80 + std::min(index_t(80), (b + 1) * 32); ++p) {
                    largest = std::max(largest, std::abs(int(codes[p])));
                    BOOST_TEST(std::abs(double(w[std::size_t(p)]) - double(d) * codes[p]) <= 0.5001 * d);
                }
                BOOST_TEST(largest == (d == 0.0f ? 0 : 127));
            }
    };
    check_quantized_copies_serve_products<B>(decoding_format::q8_0, q8_0_by_definition, 150 * 80 + 150 * 3 * 4, layout);
}

// q4_0: 16 bytes a block (a partial last block too), weight i of a block in byte i's low nibble, weight i + 16 in its
// high one; the weight of largest magnitude exact (code 0), every other within |d| / 2 of its own, or |d| where the
// code clips at 15.
BOOST_AUTO_TEST_CASE_TEMPLATE(q4_0_decoding_weights_serve_one_row_products, B, fast_backends) {
    BOOST_TEST((parse_decoding_format("q4_0") == decoding_format::q4_0));
    BOOST_TEST(std::string(to_string(decoding_format::q4_0)) == "q4_0");
    auto layout = [](const std::vector<float>& w, const detail::decoding_copy& whole) {
        BOOST_TEST(whole.codes_ld == 48);
        const auto* codes = static_cast<const std::uint8_t*>(whole.data);
        for (index_t r = 0; r < 150; ++r)
            for (index_t b = 0; b < 3; ++b) {
                const float d = whole.scales[r * 3 + b];
                const index_t first = r * 80 + b * 32, n = std::min(index_t(32), 80 - b * 32);
                float m = 0;
                for (index_t p = 0; p < n; ++p)
                    if (std::abs(w[std::size_t(first + p)]) > std::abs(m)) m = w[std::size_t(first + p)];
                BOOST_TEST(d == m / -8.0f);
                for (index_t p = 0; p < 32; ++p) {
                    const std::uint8_t byte = codes[r * 48 + b * 16 + p % 16];
                    const int q = p < 16 ? byte & 0x0f : byte >> 4;
                    if (p >= n) {
                        BOOST_TEST(q == 8); // past the row: zero
                        continue;
                    }
                    const double v = w[std::size_t(first + p)], error = std::abs(v - double(d) * (q - 8));
                    if (v == m) BOOST_TEST(error == 0.0);
                    BOOST_TEST(error <= (q == 15 ? 1.0001 : 0.5001) * std::abs(double(d)), "r " << r << " p " << p);
                }
            }
    };
    check_quantized_copies_serve_products<B>(decoding_format::q4_0, q4_0_by_definition, 150 * 48 + 150 * 3 * 4, layout);
}

// Weights that a Q4_0 GGUF file held (gguf::quantize_q4_0, then its dequantisation: d (q - 8) with d the file's f16
// scale) get the same codes and scale back in a q4_0 copy, so decoding such a model in q4_0 reads the file's values.
BOOST_AUTO_TEST_CASE(q4_0_copies_of_q4_0_weights_are_the_same_values) {
    const index_t rows = 20, cols = 96;
    const auto w = random_tensor<float>({rows, cols}, 47);
    std::vector<std::uint8_t> file(std::size_t(rows * cols / 32 * gguf::q4_0_bytes));
    gguf::quantize_q4_0(w.data, file.data());
    std::vector<float> from_file(w.data.size());
    gguf::dequantize_q4_0(file.data(), from_file);
    struct entry {
        tensor_view<float> value;
    };
    const std::vector<entry> entries{{{from_file.data(), {rows, cols}}}};
    const decoding_weights copies(entries, decoding_format::q4_0);
    const detail::decoding_copy whole = detail::decoding_copy_of(from_file.data(), rows, cols, cols);
    BOOST_REQUIRE((whole.format == decoding_format::q4_0));
    const auto* codes = static_cast<const std::uint8_t*>(whole.data);
    for (index_t b = 0; b < rows * cols / 32; ++b) {
        BOOST_TEST(whole.scales[b] == gguf::detail::get_half(file.data() + b * gguf::q4_0_bytes));
        for (index_t i = 0; i < 16; ++i)
            BOOST_TEST(codes[b * 16 + i] == file[std::size_t(b * gguf::q4_0_bytes + 2 + i)], "block " << b);
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(linear_matches_reference, B, fast_backends) {
    auto x = random_tensor<float>({9, 16}, 4), w = random_tensor<float>({12, 16}, 5), b = random_tensor<float>({12}, 6);
    auto dy = random_tensor<float>({9, 12}, 7);
    owned<float> y_ref({9, 12}), y({9, 12}), dx_ref({9, 16}), dx({9, 16}), dw_ref({12, 16}), dw({12, 16}), db_ref({12}),
        db({12});
    linear_forward<reference_cpu, float>(y_ref, x, w, b);
    linear_forward<B, float>(y, x, w, b);
    linear_backward<reference_cpu, float>(dx_ref, dw_ref, db_ref, dy, x, w);
    linear_backward<B, float>(dx, dw, db, dy, x, w);
    BOOST_TEST(rel_error(y.data, y_ref.data) < f32_tolerance);
    BOOST_TEST(rel_error(dx.data, dx_ref.data) < f32_tolerance);
    BOOST_TEST(rel_error(dw.data, dw_ref.data) < f32_tolerance);
    BOOST_TEST(rel_error(db.data, db_ref.data) < f32_tolerance);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(cross_entropy_matches_reference_and_direct_formula, B, fast_backends) {
    const index_t N = 10, d = 8, V = 50;
    auto h = random_tensor<float>({N, d}, 8), w = random_tensor<float>({V, d}, 9);
    owned<token_t> targets({N});
    targets.data = {1, 49, 7, ignore_index, 0, 33, 21, ignore_index, 48, 5};
    // The direct formula, in double, from full logits.
    double expected = 0;
    for (index_t r = 0; r < N; ++r) {
        if (targets.data[r] == ignore_index) continue;
        std::vector<double> z(V);
        for (index_t v = 0; v < V; ++v)
            for (index_t c = 0; c < d; ++c)
                z[v] += double(h.data[r * d + c]) * w.data[v * d + c];
        double m = *std::max_element(z.begin(), z.end()), s = 0;
        for (double zi : z)
            s += std::exp(zi - m);
        expected += m + std::log(s) - z[targets.data[r]];
    }
    expected /= 8;
    arena a(1 << 20);
    for (index_t chunk : {index_t(7), index_t(16), V}) {
        a.reset();
        const auto ws = cross_entropy_workspace<float>::allocate(a, N, chunk);
        owned<float> lse({N}), dh({N, d}), dw({V, d}), lse_ref({N}), dh_ref({N, d}), dw_ref({V, d});
        const auto r = head_cross_entropy_forward<B, float>(lse, ws, h, w, targets);
        const auto r_ref = head_cross_entropy_forward<reference_cpu, float>(lse_ref, ws, h, w, targets);
        BOOST_TEST(std::abs(r.loss - expected) / expected < 1e-6, "chunk " << chunk);
        BOOST_TEST(std::abs(r_ref.loss - expected) / expected < 1e-6);
        head_cross_entropy_backward<B, float>(dh, dw, ws, h, w, targets, lse);
        head_cross_entropy_backward<reference_cpu, float>(dh_ref, dw_ref, ws, h, w, targets, lse_ref);
        BOOST_TEST(rel_error(dh.data, dh_ref.data) < f32_tolerance);
        BOOST_TEST(rel_error(dw.data, dw_ref.data) < f32_tolerance);
    }
}

// Parameter gradients accumulate; activation gradients are assigned (docs/conventions.md).
BOOST_AUTO_TEST_CASE(accumulation_rule) {
    auto x = random_tensor<float>({4, 6}, 10), w = random_tensor<float>({5, 6}, 11),
         dy = random_tensor<float>({4, 5}, 12);
    owned<float> dx({4, 6}, 99.0f), dw({5, 6}), db({5});
    linear_backward<reference_cpu, float>(dx, dw, db, dy, x, w);
    const auto dx1 = dx.data, dw1 = dw.data, db1 = db.data;
    linear_backward<reference_cpu, float>(dx, dw, db, dy, x, w);
    BOOST_TEST(rel_error(dx.data, dx1) == 0.0); // assigned: the 99s and the first call are overwritten
    auto doubled = [](const std::vector<float>& now, const std::vector<float>& once) {
        std::vector<float> twice(once.size());
        for (std::size_t i = 0; i < once.size(); ++i)
            twice[i] = 2 * once[i];
        return rel_error(now, twice) < 1e-6; // f32 rounding of the second sum
    };
    BOOST_TEST(doubled(dw.data, dw1));
    BOOST_TEST(doubled(db.data, db1));
    // grad_write::add adds instead of assigning.
    linear_backward<reference_cpu, float>(dx, dw, db, dy, x, w, grad_write::add);
    for (std::size_t i = 0; i < dx.data.size(); ++i)
        BOOST_TEST(std::abs(dx.data[i] - 2 * dx1[i]) <= 1e-6f * std::abs(dx1[i]) + 1e-7f);

    auto nw = random_tensor<float>({6}, 13, 0.2, 1.0);
    owned<float> y({4, 6}), rstd({4}), ndx({4, 6}, 7.0f), ndw({6});
    auto ndy = random_tensor<float>({4, 6}, 14);
    rmsnorm_forward<float>(y, rstd, x, nw, 1e-5);
    rmsnorm_backward<float>(ndx, ndw, ndy, x, nw, rstd);
    const auto ndx1 = ndx.data, ndw1 = ndw.data;
    rmsnorm_backward<float>(ndx, ndw, ndy, x, nw, rstd);
    BOOST_TEST(rel_error(ndx.data, ndx1) == 0.0);
    BOOST_TEST(doubled(ndw.data, ndw1));

    owned<token_t> ids({4});
    ids.data = {2, 0, 2, 1};
    owned<float> edw({3, 6});
    embedding_backward<float>(edw, ids, x);
    const auto edw1 = edw.data;
    embedding_backward<float>(edw, ids, x);
    BOOST_TEST(doubled(edw.data, edw1));
}

// The generic ops run the same code for every backend; check that f32 stays close to f64.
BOOST_AUTO_TEST_CASE(generic_ops_f32_close_to_f64) {
    const index_t B = 2, T = 9, H = 4, Hkv = 2, D = 8;
    auto q = random_tensor<double>({B, T, H, D}, 20), k = random_tensor<double>({B, T, Hkv, D}, 21);
    auto v = random_tensor<double>({B, T, Hkv, D}, 22), dout = random_tensor<double>({B, T, H, D}, 23);
    owned<double> cos({T, D / 2}), sin({T, D / 2});
    rope_table<double>(cos, sin, 10000.0);
    auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v), doutf = cast<float>(dout);
    auto cosf = cast<float>(cos), sinf = cast<float>(sin);
    rope_forward<double>(q, cos, sin);
    rope_forward<float>(qf, cosf, sinf);
    BOOST_TEST(rel_error(qf.data, q.data) < 1e-6);
    for (index_t window : {index_t(0), index_t(4)}) {
        owned<double> out(q.shape), lse({B, H, T}), dq(q.shape), dk(k.shape), dv(v.shape);
        owned<float> outf(q.shape), lsef({B, H, T}), dqf(q.shape), dkf(k.shape), dvf(v.shape);
        attention_forward<double>(out, lse, q, k, v, window);
        attention_forward<float>(outf, lsef, qf, kf, vf, window);
        attention_backward<double>(dq, dk, dv, dout, q, k, v, out, lse, window);
        attention_backward<float>(dqf, dkf, dvf, doutf, qf, kf, vf, outf, lsef, window);
        BOOST_TEST(rel_error(outf.data, out.data) < 1e-6);
        BOOST_TEST(rel_error(dqf.data, dq.data) < 1e-5);
        BOOST_TEST(rel_error(dkf.data, dk.data) < 1e-5);
        BOOST_TEST(rel_error(dvf.data, dv.data) < 1e-5);
    }
    auto g = random_tensor<double>({6, 10}, 24, 2.0), u = random_tensor<double>({6, 10}, 25);
    auto gf = cast<float>(g), uf = cast<float>(u);
    owned<double> h({6, 10});
    owned<float> hf({6, 10});
    swiglu_forward<double>(h, g, u);
    swiglu_forward<float>(hf, gf, uf);
    BOOST_TEST(rel_error(hf.data, h.data) < 1e-6);
    gelu_forward<double>(h, g);
    gelu_forward<float>(hf, gf);
    BOOST_TEST(rel_error(hf.data, h.data) < 1e-6);
    auto lw = random_tensor<double>({10}, 26, 0.2, 1.0), lb = random_tensor<double>({10}, 27);
    auto lwf = cast<float>(lw), lbf = cast<float>(lb);
    owned<double> mean({6}), rstd({6});
    owned<float> meanf({6}), rstdf({6});
    layernorm_forward<double>(h, mean, rstd, g, lw, lb, 1e-5);
    layernorm_forward<float>(hf, meanf, rstdf, gf, lwf, lbf, 1e-5);
    BOOST_TEST(rel_error(hf.data, h.data) < 1e-6);
}

BOOST_AUTO_TEST_CASE(attention_window_masks_distant_keys) {
    // With window 2, queries 4 and 5 must not depend on keys 0..2: changing them leaves their output unchanged.
    const index_t T = 6, D = 4;
    auto q = random_tensor<float>({1, T, 1, D}, 30), k = random_tensor<float>({1, T, 1, D}, 31),
         v = random_tensor<float>({1, T, 1, D}, 32);
    owned<float> out1(q.shape), out2(q.shape), lse({1, 1, T});
    attention_forward<float>(out1, lse, q, k, v, 2);
    for (index_t j = 0; j < 3; ++j)
        for (index_t c = 0; c < D; ++c)
            k.data[j * D + c] += 5.0f, v.data[j * D + c] -= 3.0f;
    attention_forward<float>(out2, lse, q, k, v, 2);
    for (index_t c = 0; c < D; ++c) {
        BOOST_TEST(out1.data[5 * D + c] == out2.data[5 * D + c]);
        BOOST_TEST(out1.data[4 * D + c] == out2.data[4 * D + c]);
    }
    BOOST_TEST(out1.data[3 * D] != out2.data[3 * D]); // query 3 sees key 2 (changed) and key 3
}

// Bidirectional attention sees later keys, causal does not; padded keys (key_lengths) change nothing and get
// no gradient. T = 70 spans two tiles; the tiled kernels (attention_forward / attention_backward) are checked.
BOOST_AUTO_TEST_CASE(attention_bidirectional_and_padding_masks) {
    const index_t B = 2, T = 70, H = 4, Hkv = 2, D = 8;
    const shape qs{B, T, H, D}, ks{B, T, Hkv, D};
    auto q = random_tensor<float>(qs, 50), k = random_tensor<float>(ks, 51), v = random_tensor<float>(ks, 52),
         dout = random_tensor<float>(qs, 53);
    auto at = [&](index_t b, index_t t, index_t h, index_t heads) {
        return std::size_t(((b * T + t) * heads + h) * D);
    };
    struct result {
        owned<float> out, lse, dq, dk, dv;
    };
    auto run = [&](const owned<float>& kk, const owned<float>& vv, bool causal, cview<index_t> lengths) {
        result r{owned<float>(qs), owned<float>({B, H, T}), owned<float>(qs), owned<float>(ks), owned<float>(ks)};
        attention_forward<float>(r.out, r.lse, q, kk, vv, 0, 0, {}, causal, lengths);
        attention_backward<float>(r.dq, r.dk, r.dv, dout, q, kk, vv, r.out, r.lse, 0, {}, causal, lengths);
        return r;
    };
    // Changing v at the last position changes out at position 0 in bidirectional attention only.
    auto v_last = v;
    for (index_t b = 0; b < B; ++b)
        for (index_t c = 0; c < Hkv * D; ++c) // both key/value heads
            v_last.data[at(b, T - 1, 0, Hkv) + std::size_t(c)] += 1.0f;
    for (const bool causal : {false, true}) {
        const result a = run(k, v, causal, {}), b = run(k, v_last, causal, {});
        for (index_t bb = 0; bb < B; ++bb)
            for (index_t h = 0; h < H; ++h) {
                bool same = true;
                for (index_t c = 0; c < D; ++c)
                    same = same &&
                           a.out.data[at(bb, 0, h, H) + std::size_t(c)] == b.out.data[at(bb, 0, h, H) + std::size_t(c)];
                BOOST_TEST(same == causal, (causal ? "causal" : "bidirectional") << " row " << bb << " head " << h);
            }
        if (causal) // causal: only the last position sees the changed value
            for (index_t t = 0; t + 1 < T; ++t)
                BOOST_TEST(a.out.data[at(1, t, 3, H)] == b.out.data[at(1, t, 3, H)]);
    }
    // Bidirectional documents (positions 0..29 and 30..69 in both rows): a query sees its own document both
    // ways and nothing of the other.
    owned<index_t> docs({B, T});
    for (index_t i = 0; i < B * T; ++i)
        docs.data[std::size_t(i)] = i % T < 30 ? 0 : 30;
    for (const index_t changed : {index_t(29), index_t(30)}) {
        auto v_doc = v;
        for (index_t c = 0; c < Hkv * D; ++c)
            v_doc.data[at(1, changed, 0, Hkv) + std::size_t(c)] += 1.0f;
        owned<float> out_a(qs), out_b(qs), lse_ab({B, H, T});
        attention_forward<float>(out_a, lse_ab, q, k, v, 0, 0, docs, false);
        attention_forward<float>(out_b, lse_ab, q, k, v_doc, 0, 0, docs, false);
        for (index_t t = 0; t < T; ++t) {
            const bool same_document = (t < 30) == (changed < 30);
            BOOST_TEST((out_a.data[at(1, t, 1, H)] != out_b.data[at(1, t, 1, H)]) == same_document,
                       "value " << changed << " query " << t);
        }
    }
    // Padding: row 0 has 41 valid keys, row 1 all of them. Changing k and v at padded positions changes
    // nothing, bit for bit, and their dk and dv are zero; the padded queries' outputs stay finite.
    owned<index_t> lengths({B});
    lengths.data = {41, T};
    auto k_pad = k, v_pad = v;
    for (index_t t = 41; t < T; ++t)
        for (index_t c = 0; c < Hkv * D; ++c) {
            k_pad.data[at(0, t, 0, Hkv) + std::size_t(c)] += 3.0f;
            v_pad.data[at(0, t, 0, Hkv) + std::size_t(c)] -= 2.0f;
        }
    for (const bool causal : {false, true}) {
        const result a = run(k, v, causal, lengths), b = run(k_pad, v_pad, causal, lengths);
        BOOST_TEST(a.out.data == b.out.data);
        BOOST_TEST(a.lse.data == b.lse.data);
        BOOST_TEST(a.dq.data == b.dq.data);
        BOOST_TEST(a.dk.data == b.dk.data);
        BOOST_TEST(a.dv.data == b.dv.data);
        bool zero = true, finite = true;
        for (index_t t = 41; t < T; ++t)
            for (index_t c = 0; c < Hkv * D; ++c)
                zero = zero && a.dk.data[at(0, t, 0, Hkv) + std::size_t(c)] == 0.0f &&
                       a.dv.data[at(0, t, 0, Hkv) + std::size_t(c)] == 0.0f;
        for (const float x : a.out.data)
            finite = finite && std::isfinite(x);
        for (const float x : a.dq.data)
            finite = finite && std::isfinite(x);
        BOOST_TEST(zero, (causal ? "causal" : "bidirectional"));
        BOOST_TEST(finite, (causal ? "causal" : "bidirectional"));
        // Full lengths are no padding: the same bits as without key_lengths.
        owned<index_t> full({B});
        full.data = {T, T};
        const result c = run(k, v, causal, full), d = run(k, v, causal, {});
        BOOST_TEST(c.out.data == d.out.data);
        BOOST_TEST(c.dk.data == d.dk.data);
    }
    // A window needs causal attention; key_lengths must be (B) in 1 .. Tk.
    owned<float> out(qs), lse({B, H, T});
    BOOST_CHECK_THROW(attention_forward<float>(out, lse, q, k, v, 4, 0, {}, false), tl::error);
    owned<index_t> bad({B});
    for (const std::vector<index_t>& values : {std::vector<index_t>{0, T}, std::vector<index_t>{T + 1, 5}}) {
        bad.data = values;
        BOOST_CHECK_THROW(attention_forward<float>(out, lse, q, k, v, 0, 0, {}, false, bad), tl::error);
        BOOST_CHECK_THROW(attention_forward_reference<float>(out, lse, q, k, v, 0, 0, {}, true, bad), tl::error);
    }
    owned<index_t> wrong({B + 1});
    wrong.data = {T, T, T};
    BOOST_CHECK_THROW(attention_forward<float>(out, lse, q, k, v, 0, 0, {}, false, wrong), tl::error);
}

BOOST_AUTO_TEST_CASE(errors_name_the_shapes) {
    auto x = random_tensor<float>({4, 6}, 40), w = random_tensor<float>({5, 7}, 41);
    owned<float> y({4, 5});
    try {
        linear_forward<reference_cpu, float>(y, x, w);
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        const std::string msg = e.what();
        BOOST_TEST(msg.find("[4, 6]") != std::string::npos, msg);
        BOOST_TEST(msg.find("[5, 7]") != std::string::npos, msg);
    }
    owned<token_t> ids({2});
    ids.data = {0, 9};
    owned<float> emb({2, 7});
    BOOST_CHECK_THROW(embedding_forward<float>(emb, ids, w), tl::error);
}

BOOST_AUTO_TEST_SUITE_END()
