// core/: shapes and views, bf16 rounding, arenas, the counter-based RNG, xtensor adaptors.
#include "../support/random.hpp"

#include <tinylm/core/arena.hpp>
#include <tinylm/core/dtype.hpp>
#include <tinylm/core/rng.hpp>
#include <tinylm/core/tensor.hpp>
#include <tinylm/core/xtensor.hpp>

#include <boost/test/unit_test.hpp>

#include <bit>
#include <cmath>
#include <limits>
#include <set>

using namespace tl;

BOOST_AUTO_TEST_SUITE(core)

BOOST_AUTO_TEST_CASE(shapes_and_views) {
    constexpr shape s{2, 3, 4};
    static_assert(s.numel() == 24 && s.rows() == 6 && s.cols() == 4);
    BOOST_TEST(s.str() == "[2, 3, 4]");
    std::vector<float> buf(24);
    tensor_view<float> v{buf.data(), s};
    v.reshaped({6, 4}).row(2)[1] = 5.0f;
    BOOST_TEST(buf[9] == 5.0f);
    BOOST_CHECK_THROW(v.reshaped({5, 5}), tl::error);
    try {
        expect_shape("op", "x", v, {2, 3, 5});
        BOOST_FAIL("expected an error");
    } catch (const tl::error& e) {
        BOOST_TEST(std::string(e.what()) == "tinylm: op: x has shape [2, 3, 4] but expected [2, 3, 5]");
    }
}

BOOST_AUTO_TEST_CASE(bf16_rounds_to_nearest_even) {
    auto bits = [](float f) { return bf16(f).bits; };
    BOOST_TEST(bits(1.0f) == 0x3f80);
    // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    BOOST_TEST(bits(std::bit_cast<float>(0x3f808000u)) == 0x3f80);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to even.
    BOOST_TEST(bits(std::bit_cast<float>(0x3f818000u)) == 0x3f82);
    // Just above halfway rounds up, just below rounds down.
    BOOST_TEST(bits(std::bit_cast<float>(0x3f808001u)) == 0x3f81);
    BOOST_TEST(bits(std::bit_cast<float>(0x3f807fffu)) == 0x3f80);
    BOOST_TEST(bits(-2.5f) == 0xc020);
    BOOST_TEST(bits(std::numeric_limits<float>::infinity()) == 0x7f80);
    BOOST_TEST(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
    // The largest float rounds to infinity, as IEEE round-to-nearest requires.
    BOOST_TEST(bits(std::numeric_limits<float>::max()) == 0x7f80);
    // Round trip of every bf16 value that is not NaN.
    for (std::uint32_t b = 0; b < 0x10000; ++b) {
        const bf16 x = bf16::from_bits(std::uint16_t(b));
        if (std::isnan(float(x))) continue;
        BOOST_TEST_REQUIRE(bf16(float(x)).bits == b);
    }
}

BOOST_AUTO_TEST_CASE(arena_measures_then_allocates_aligned) {
    auto plan = [](arena& a) {
        auto x = a.allocate<float>({3, 5});
        auto y = a.allocate<double>({7});
        return std::pair{x, y};
    };
    arena m = arena::measuring();
    plan(m);
    BOOST_TEST(m.used() == 128u); // 60 and 56 bytes, each rounded up to 64
    arena a(m.used());
    auto [x, y] = plan(a);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(x.data) % arena::alignment == 0u);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(y.data) % arena::alignment == 0u);
    BOOST_TEST(a.used() == a.capacity());
    BOOST_CHECK_THROW(a.allocate<float>({1}), tl::error);
    a.reset();
    BOOST_TEST(a.allocate<float>({1}).data == x.data);
}

BOOST_AUTO_TEST_CASE(rng_is_counter_based_and_deterministic) {
    counter_rng a(123, 4), b(123, 4), other_stream(123, 5);
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 1000; ++i) {
        const auto v = a.next_u64();
        BOOST_TEST_REQUIRE(v == b.next_u64());
        BOOST_TEST_REQUIRE(v == counter_rng(123, 4).at(std::uint64_t(i))); // positional: any element on demand
        seen.insert(v);
        seen.insert(other_stream.next_u64());
    }
    BOOST_TEST(seen.size() == 2000u);
    // Moments of the normal sampler over 200k draws.
    counter_rng n(9);
    double s1 = 0, s2 = 0;
    const int count = 200000;
    for (int i = 0; i < count; ++i) {
        const double x = n.normal();
        s1 += x;
        s2 += x * x;
    }
    BOOST_TEST(std::abs(s1 / count) < 0.01);
    BOOST_TEST(std::abs(s2 / count - 1.0) < 0.01);
    counter_rng u(10);
    int low = 0;
    for (int i = 0; i < count; ++i)
        low += u.below(10) < 3;
    BOOST_TEST(std::abs(double(low) / count - 0.3) < 0.01);
}

BOOST_AUTO_TEST_CASE(xtensor_adaptor_shares_memory) {
    std::vector<float> buf{1, 2, 3, 4, 5, 6};
    tensor_view<float> v{buf.data(), {2, 3}};
    auto x = as_xtensor(v);
    BOOST_TEST(x.dimension() == 2u);
    BOOST_TEST(x(1, 2) == 6.0f);
    x(0, 1) = 20.0f;
    BOOST_TEST(buf[1] == 20.0f);
}

BOOST_AUTO_TEST_SUITE_END()
