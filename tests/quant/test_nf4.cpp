// NF4 quantisation (ops/nf4.hpp) and the frozen NF4 linear op (ops/nf4_linear.hpp).
//
// The bitsandbytes comparison reads tests/reference/quant/nf4_reference.safetensors, written by bitsandbytes
// 0.50.2 on CPU (tests/reference/quant/make_nf4_reference.py); TINYLM_NF4_REFERENCE overrides the file.
#include "../support/gradcheck.hpp"
#include "../support/random.hpp"

#include <tinylm/backend/default.hpp>
#include <tinylm/io/safetensors.hpp>
#include <tinylm/ops/linear.hpp>
#include <tinylm/ops/nf4.hpp>
#include <tinylm/ops/nf4_linear.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>

using namespace tl;
using namespace tl::test;

namespace {

std::filesystem::path reference_file() {
    if (const char* f = std::getenv("TINYLM_NF4_REFERENCE")) return f;
    return std::filesystem::path(TINYLM_SOURCE_DIR) / "tests" / "reference" / "quant" / "nf4_reference.safetensors";
}

const safetensors_reader& reference() {
    static const safetensors_reader r(reference_file());
    return r;
}

std::vector<std::uint8_t> read_bytes(const std::string& name) {
    const auto v = reference().read_all<std::int32_t>(name);
    return {v.begin(), v.end()};
}

// Number of positions where a and b differ (exact comparison; no NaN in these tensors).
template <class A, class B>
std::size_t count_different(const std::vector<A>& a, const std::vector<B>& b) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    std::size_t n = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        n += a[i] != b[i];
    return n;
}

std::vector<float> dequantized(const nf4_tensor& q) {
    owned<float> w(q.shape());
    dequantize(q, w);
    return w.data;
}

// The scale of every block as dequantisation uses it.
std::vector<float> scales(const nf4_tensor& q) {
    std::vector<float> s(std::size_t(q.n_blocks()));
    for (index_t b = 0; b < q.n_blocks(); ++b)
        s[std::size_t(b)] = q.block_scale(b);
    return s;
}

// Block absmax of the original weight.
std::vector<float> block_absmax(const std::vector<float>& w) {
    std::vector<float> a((w.size() + 63) / 64, 0.0f);
    for (std::size_t i = 0; i < w.size(); ++i)
        a[i / 64] = std::max(a[i / 64], std::abs(w[i]));
    return a;
}

struct error_stats {
    double mean_rel = 0, max_rel = 0; // |dq - w| / absmax of w's block
};
error_stats quantisation_error(const std::vector<float>& w, const std::vector<float>& dq) {
    const auto am = block_absmax(w);
    error_stats e;
    for (std::size_t i = 0; i < w.size(); ++i) {
        const double r = std::abs(double(dq[i]) - double(w[i])) / am[i / 64];
        e.mean_rel += r;
        e.max_rel = std::max(e.max_rel, r);
    }
    e.mean_rel /= double(w.size());
    return e;
}

// Half the widest gap between neighbouring NF4 values: the worst rounding error relative to the block absmax.
double max_half_gap() {
    double gap = 0;
    for (std::size_t i = 0; i + 1 < nf4_code.size(); ++i)
        gap = std::max(gap, double(nf4_code[i + 1]) - double(nf4_code[i]));
    return gap / 2;
}

const std::vector<std::string> reference_cases{"normal_16x128", "normal_48x352", "ragged_7x45", "heavy_33x100"};

} // namespace

BOOST_AUTO_TEST_SUITE(nf4)

// The published NF4 values (QLoRA, Dettmers et al. 2023, appendix E), as printed there.
BOOST_AUTO_TEST_CASE(code_book) {
    const double published[16] = {-1.0,
                                  -0.6961928009986877,
                                  -0.5250730514526367,
                                  -0.39491748809814453,
                                  -0.28444138169288635,
                                  -0.18477343022823334,
                                  -0.09105003625154495,
                                  0.0,
                                  0.07958029955625534,
                                  0.16093020141124725,
                                  0.24611230194568634,
                                  0.33791524171829224,
                                  0.44070982933044434,
                                  0.5626170039176941,
                                  0.7229568362236023,
                                  1.0};
    for (int i = 0; i < 16; ++i)
        BOOST_TEST(nf4_code[std::size_t(i)] == float(published[i]));
    // 7 negative values, an exact zero, 8 positive values: asymmetric by construction.
    BOOST_TEST(std::is_sorted(nf4_code.begin(), nf4_code.end()));
    BOOST_TEST(nf4_code[7] == 0.0f);
    // The same f32 values as bitsandbytes' get_4bit_type("nf4"), and its dynamic 8-bit code.
    const auto bnb_nf4 = reference().read_all<float>("nf4_code");
    BOOST_TEST(count_different(std::vector<float>(nf4_code.begin(), nf4_code.end()), bnb_nf4) == 0u);
    const auto bnb_dynamic = reference().read_all<float>("dynamic_code");
    BOOST_TEST(count_different(std::vector<float>(nf4_scale_code.begin(), nf4_scale_code.end()), bnb_dynamic) == 0u);
    BOOST_TEST(nf4_scale_code[127] == 0.0f);
    BOOST_TEST(nf4_scale_code[255] == 1.0f);
}

// Packed codes, scales and dequantised weights against bitsandbytes on the committed matrices.
BOOST_AUTO_TEST_CASE(matches_bitsandbytes) {
    const auto& ref = reference();
    BOOST_TEST_MESSAGE("reference written by " << ref.metadata().at("generator"));
    for (const std::string& name : reference_cases) {
        BOOST_TEST_CONTEXT(name) {
            shape s;
            const auto w = ref.read_all<float>(name + ".w", &s);
            const cview<float> wv{w.data(), s};

            // Without double quantisation: codes, f32 scales and dequantised weight, bit for bit.
            const nf4_tensor q = quantize_nf4(wv, false);
            BOOST_TEST(count_different(q.codes, read_bytes(name + ".packed")) == 0u);
            BOOST_TEST(count_different(q.absmax, ref.read_all<float>(name + ".absmax")) == 0u);
            BOOST_TEST(count_different(dequantized(q), ref.read_all<float>(name + ".dq")) == 0u);

            // With double quantisation and bitsandbytes' offset (torch's f32 mean): bit for bit against its
            // default (nearest-code) blockwise kernel.
            const float bnb_offset = ref.read_all<float>(name + ".dq_offset")[0];
            const nf4_tensor qd = quantize_nf4(wv, true, bnb_offset);
            BOOST_TEST(count_different(qd.codes, q.codes) == 0u);
            BOOST_TEST(count_different(qd.qabsmax, read_bytes(name + ".dqd_qabsmax")) == 0u);
            BOOST_TEST(count_different(qd.absmax2, ref.read_all<float>(name + ".dqd_absmax2")) == 0u);
            BOOST_TEST(count_different(dequantized(qd), ref.read_all<float>(name + ".dqd_nested")) == 0u);

            // bitsandbytes' own nested state (its native CPU kernel) dequantised by tinylm: bit for bit.
            nf4_tensor bnb = q;
            bnb.absmax.clear();
            bnb.double_quant = true;
            bnb.qabsmax = read_bytes(name + ".dq_qabsmax");
            bnb.absmax2 = ref.read_all<float>(name + ".dq_absmax2");
            bnb.offset = bnb_offset;
            BOOST_TEST(count_different(dequantized(bnb), ref.read_all<float>(name + ".dq_nested")) == 0u);

            // With tinylm's own mean (double sum): the offset within 2 ulp, the weights within 1e-5 of absmax.
            const nf4_tensor qt = quantize_nf4(wv, true);
            BOOST_TEST(std::abs(qt.offset - bnb_offset) <= 2 * std::numeric_limits<float>::epsilon() * bnb_offset);
            BOOST_TEST(rel_error(dequantized(qt), ref.read_all<float>(name + ".dq_nested")) < 1e-5);
        }
    }
}

// Double quantisation alone on 4096 scales: identical to bitsandbytes' default kernel; its native CPU kernel
// picks a neighbouring code for a few scales (reported, and bounded).
BOOST_AUTO_TEST_CASE(double_quant_matches_bitsandbytes) {
    const auto& ref = reference();
    const auto absmax = ref.read_all<float>("scales.absmax");
    const float offset = ref.read_all<float>("scales.offset")[0];
    std::vector<std::uint8_t> codes(absmax.size());
    std::vector<float> absmax2(absmax.size() / 256);
    quantize_scales(absmax, offset, codes, absmax2);
    BOOST_TEST(count_different(codes, read_bytes("scales.default_q")) == 0u);
    BOOST_TEST(count_different(absmax2, ref.read_all<float>("scales.default_absmax2")) == 0u);

    const auto native = read_bytes("scales.native_q");
    BOOST_TEST(count_different(absmax2, ref.read_all<float>("scales.native_absmax2")) == 0u);
    double worst = 0;
    for (std::size_t i = 0; i < codes.size(); ++i) {
        const float a2 = absmax2[i / 256];
        const double mine = detail::scale_from_code(codes[i], a2, offset);
        const double theirs = detail::scale_from_code(native[i], a2, offset);
        worst = std::max(worst, std::abs(mine - theirs) / absmax[i]);
    }
    const std::size_t n_diff = count_different(codes, native);
    BOOST_TEST_MESSAGE("double quant: bitsandbytes native CPU kernel differs in "
                       << n_diff << " of " << codes.size() << " codes; scale difference " << worst << " of the scale");
    BOOST_TEST(n_diff < codes.size() / 50);
    BOOST_TEST(worst < 0.01);
}

BOOST_AUTO_TEST_CASE(packing_order) {
    // 1.0 -> 15, -1.0 -> 0, 0 -> 7, 0.5 -> 12 (nearest is 0.4407); element 2i in the high nibble.
    const std::vector<float> w{1.0f, -1.0f, 0.0f, 0.5f};
    const nf4_tensor q = quantize_nf4({w.data(), {1, 4}}, false);
    BOOST_TEST(q.codes == (std::vector<std::uint8_t>{0xF0, 0x7C}), boost::test_tools::per_element());
    BOOST_TEST(q.code(0) == 15);
    BOOST_TEST(q.code(3) == 12);
    // An odd count pads the last low nibble with 7 (the code of 0.0).
    const std::vector<float> odd{-0.7f, 0.3f, 1.0f};
    const nf4_tensor qo = quantize_nf4({odd.data(), {3, 1}}, false);
    BOOST_TEST(qo.codes == (std::vector<std::uint8_t>{0x1B, 0xF7}), boost::test_tools::per_element());
    // A value exactly on a midpoint takes the lower code (torch.bucketize, right=False).
    const float mid = detail::nf4_bounds[10]; // between 0.2461 (10) and 0.3379 (11)
    const std::vector<float> tie{1.0f, mid};
    BOOST_TEST(quantize_nf4({tie.data(), {1, 2}}, false).code(1) == 10);
}

// Weights that are already NF4 values times their block's absmax come back exactly.
BOOST_AUTO_TEST_CASE(representable_round_trip) {
    const index_t out = 9, in = 70; // 630 weights: blocks straddle rows, a last block of 54
    std::vector<float> w(std::size_t(out * in));
    counter_rng rng(3, 1);
    for (std::size_t i = 0; i < w.size(); ++i) {
        const std::size_t b = i / 64;
        const float scale = 0.01f * float(b + 1) + 0.0037f;
        const int c = i % 64 == 5 ? 0 : int(rng.uniform() * 16.0) % 16; // every block holds -absmax
        w[i] = nf4_code[std::size_t(c)] * scale;
    }
    const nf4_tensor q = quantize_nf4({w.data(), {out, in}}, false);
    BOOST_TEST(count_different(dequantized(q), w) == 0u);

    // With double quantisation, exact when every block has the same scale (absmax - offset = 0).
    for (std::size_t i = 0; i < w.size(); ++i)
        w[i] = nf4_code[(i * 7 + i / 64) % 16] * 0.0421f;
    for (std::size_t b = 0; b < w.size(); b += 64)
        w[b] = -0.0421f;
    const nf4_tensor qd = quantize_nf4({w.data(), {out, in}}, true);
    BOOST_TEST(count_different(dequantized(qd), w) == 0u);
}

// Error on random normal weights, relative to the absmax of each weight's block.
BOOST_AUTO_TEST_CASE(error_on_normal_weights) {
    const auto w = random_tensor<float>({256, 1024}, 11, 0.02);
    const nf4_tensor q = quantize_nf4(w, false), qd = quantize_nf4(w, true);
    const error_stats e = quantisation_error(w.data, dequantized(q)), ed = quantisation_error(w.data, dequantized(qd));
    BOOST_TEST_MESSAGE("nf4 256x1024 N(0, 0.02): mean |dq - w| / block absmax "
                       << e.mean_rel << ", max " << e.max_rel << "; with double quant: mean " << ed.mean_rel << ", max "
                       << ed.max_rel);
    // No weight is further from its value than half the widest gap of the code (-1.0 .. -0.6962).
    BOOST_TEST(e.max_rel <= max_half_gap() * (1 + 1e-6));
    BOOST_TEST(e.mean_rel < 0.05);
    BOOST_TEST(ed.mean_rel < e.mean_rel * 1.01);

    // Double quantisation error of the scales themselves.
    const auto exact = scales(q), dq = scales(qd);
    double mean = 0, worst = 0;
    for (std::size_t i = 0; i < exact.size(); ++i) {
        const double r = std::abs(double(dq[i]) - double(exact[i])) / exact[i];
        mean += r;
        worst = std::max(worst, r);
    }
    mean /= double(exact.size());
    BOOST_TEST_MESSAGE("double quant of " << exact.size() << " scales: mean relative error " << mean << ", max "
                                          << worst);
    BOOST_TEST(worst < 0.01);
}

BOOST_AUTO_TEST_CASE(bytes_per_parameter) {
    const auto w = random_tensor<float>({1024, 1024}, 12, 0.02);
    const nf4_tensor q = quantize_nf4(w, false), qd = quantize_nf4(w, true);
    BOOST_TEST_MESSAGE("1024x1024 bytes/param: " << bytes_per_param(q) << " (f32 scales), " << bytes_per_param(qd)
                                                 << " (double quant); " << storage_bytes(qd) << " bytes");
    BOOST_TEST(storage_bytes(q) == 1024u * 1024u / 2 + 16384u * 4u);
    BOOST_TEST(storage_bytes(qd) == 1024u * 1024u / 2 + 16384u + 64u * 4u + 4u);
    BOOST_TEST(bytes_per_param(qd) <= 0.6);
    BOOST_TEST(bytes_per_param(q) <= 0.6);
}

// Shapes that are not multiples of 64 are supported as bitsandbytes supports them: the flattened weight is cut
// into blocks of 64 that may straddle rows, and the last block is shorter.
BOOST_AUTO_TEST_CASE(ragged_shapes) {
    for (const auto& [out, in] :
         std::vector<std::pair<index_t, index_t>>{{1, 1}, {1, 63}, {3, 65}, {5, 13}, {7, 300}}) {
        BOOST_TEST_CONTEXT(out << "x" << in) {
            const auto w = random_tensor<float>({out, in}, std::uint64_t(out * 1000 + in), 0.05);
            for (bool dq : {false, true}) {
                const nf4_tensor q = quantize_nf4(w, dq);
                BOOST_TEST(q.codes.size() == std::size_t((out * in + 1) / 2));
                BOOST_TEST(q.n_blocks() == (out * in + 63) / 64);
                const auto full = dequantized(q);
                const error_stats e = quantisation_error(w.data, full);
                BOOST_TEST(e.max_rel <= max_half_gap() * (dq ? 1.05 : 1 + 1e-6));
                // Any row range dequantises to the same values as the whole.
                for (index_t r0 = 0; r0 < out; ++r0)
                    for (index_t k = 1; r0 + k <= out; k += 2) {
                        owned<float> part({k, in});
                        dequantize_rows(q, r0, part.view());
                        BOOST_TEST(std::equal(part.data.begin(), part.data.end(), full.begin() + r0 * in));
                    }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(errors_name_the_problem) {
    const auto w = random_tensor<float>({4, 8}, 13);
    BOOST_CHECK_THROW(quantize_nf4(w.cv().reshaped({2, 2, 8})), tl::error);
    auto bad = w;
    bad.data[9] = std::numeric_limits<float>::quiet_NaN();
    BOOST_CHECK_EXCEPTION(quantize_nf4(bad), tl::error, [](const tl::error& e) {
        return std::string(e.what()).find("non-finite value at flat index 9") != std::string::npos;
    });
    nf4_tensor q = quantize_nf4(w);
    owned<float> out({4, 7});
    BOOST_CHECK_THROW(dequantize(q, out), tl::error);
    q.absmax2.clear();
    owned<float> full({4, 8});
    BOOST_CHECK_THROW(dequantize(q, full), tl::error);

    const nf4_tensor good = quantize_nf4(w);
    auto x = random_tensor<float>({3, 8}, 14);
    owned<float> y({3, 4}), scratch({2, 8}), scratch_bad({2, 7}), y_bad({3, 5}), dx({3, 8});
    BOOST_CHECK_THROW((nf4_linear_forward<reference_cpu, float>(y, x, good, {}, scratch_bad)), tl::error);
    BOOST_CHECK_THROW((nf4_linear_forward<reference_cpu, float>(y_bad, x, good, {}, scratch)), tl::error);
    auto x_bad = random_tensor<float>({3, 9}, 15);
    BOOST_CHECK_EXCEPTION(
        (nf4_linear_forward<reference_cpu, float>(y, x_bad, good, {}, scratch)), tl::error,
        [](const tl::error& e) { return std::string(e.what()).find("expects 8 input features") != std::string::npos; });
    BOOST_CHECK_THROW((nf4_linear_backward<reference_cpu, float>(dx, y_bad, good, scratch)), tl::error);
}

#ifdef TINYLM_HAS_ONEDNN
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu, onednn_cpu>;
#else
using all_backends = boost::mpl::list<reference_cpu, eigen_cpu>;
#endif

// nf4_linear equals linear on the dequantised weight, for every tile height (ragged last tiles included).
BOOST_AUTO_TEST_CASE_TEMPLATE(nf4_linear_matches_linear, B, all_backends) {
    const index_t n = 5, in = 200, out = 37; // 7400 weights: not a multiple of 64
    const auto w = random_tensor<float>({out, in}, 21, 0.02);
    const auto x = random_tensor<float>({n, in}, 22), b = random_tensor<float>({out}, 23),
               dy = random_tensor<float>({n, out}, 24);
    const nf4_tensor q = quantize_nf4(w, true);
    owned<float> wd({out, in});
    dequantize(q, wd);
    owned<float> y_ref({n, out}), dx_ref({n, in}), dw({out, in}), dx_add_ref({n, in}, 0.5f);
    linear_forward<B, float>(y_ref, x, wd, b);
    linear_backward<B, float>(dx_ref, dw, {}, dy, x, wd);
    linear_backward<B, float>(dx_add_ref, dw, {}, dy, x, wd, grad_write::add);
    double worst = 0;
    for (index_t tile : {index_t(1), index_t(8), index_t(37), index_t(100)}) {
        owned<float> scratch(nf4_scratch_shape(q, tile)), y({n, out}, 9.0f), dx({n, in}, 9.0f), dx_add({n, in}, 0.5f);
        nf4_linear_forward<B, float>(y, x, q, b, scratch);
        nf4_linear_backward<B, float>(dx, dy, q, scratch);
        nf4_linear_backward<B, float>(dx_add, dy, q, scratch, grad_write::add);
        BOOST_TEST_CONTEXT(B::name << " tile " << tile) {
            BOOST_TEST(rel_error(y.data, y_ref.data) < 1e-6);
            BOOST_TEST(rel_error(dx.data, dx_ref.data) < 1e-6);
            BOOST_TEST(rel_error(dx_add.data, dx_add_ref.data) < 1e-6);
        }
        worst = std::max({worst, rel_error(y.data, y_ref.data), rel_error(dx.data, dx_ref.data)});
        // Without bias.
        owned<float> y0({n, out}), y0_ref({n, out});
        nf4_linear_forward<B, float>(y0, x, q, {}, scratch);
        linear_forward<B, float>(y0_ref, x, wd);
        BOOST_TEST(rel_error(y0.data, y0_ref.data) < 1e-6);
    }
    BOOST_TEST_MESSAGE("nf4_linear vs linear on the dequantised weight, " << B::name << ": worst " << worst);
}

// Finite differences of sum(y * r) with respect to x, in double on the reference backend.
BOOST_AUTO_TEST_CASE(gradcheck_dx) {
    const index_t n = 3, in = 70, out = 5;
    const nf4_tensor q = quantize_nf4(random_tensor<float>({out, in}, 31, 0.1), true);
    auto x = random_tensor<double>({n, in}, 32), b = random_tensor<double>({out}, 33),
         r = random_tensor<double>({n, out}, 34);
    owned<double> y({n, out}), dx({n, in}), scratch(nf4_scratch_shape(q, 2));
    nf4_linear_backward<reference_cpu, double>(dx, r, q, scratch);
    const double err = gradcheck(
        [&] {
            nf4_linear_forward<reference_cpu, double>(y, x, q, b, scratch);
            return weighted_sum(y.data, r.data);
        },
        {{"x", &x.data, &dx.data}},
        [](const std::string& name, double e) { BOOST_TEST_MESSAGE("gradcheck nf4_linear d" << name << ": " << e); });
    BOOST_TEST(err < 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()
