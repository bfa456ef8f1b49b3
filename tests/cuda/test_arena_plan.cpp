// The device arena's plan (tinylm/cuda/arena_plan.hpp): aligned, disjoint offsets in one allocation.
#include <tinylm/cuda/arena_plan.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdint>

using namespace tl;

BOOST_AUTO_TEST_SUITE(cuda_arena_plan)

BOOST_AUTO_TEST_CASE(offsets_are_aligned_disjoint_and_in_order) {
    gpu::arena_plan plan;
    const std::size_t a = plan.add("a", 10);
    const std::size_t b = plan.add_array<float>("b", 100);
    const std::size_t c = plan.add("c", 1, 1024);
    const std::size_t d = plan.add_array<double>("d", 3, 8);
    BOOST_TEST(a == 0u);
    BOOST_TEST(b == 256u); // 10 bytes, then the next multiple of 256
    BOOST_TEST(c == 1024u);
    BOOST_TEST(d == 1032u); // right after c's byte, at the next multiple of 8
    BOOST_TEST(plan.bytes() == 1032u + 24u);
    BOOST_TEST_REQUIRE(plan.entries().size() == 4u);
    for (std::size_t i = 1; i < plan.entries().size(); ++i) {
        const auto& prev = plan.entries()[i - 1];
        BOOST_TEST(plan.entries()[i].offset >= prev.offset + prev.bytes, plan.entries()[i].name);
    }
    BOOST_TEST(plan.entries()[1].bytes == 400u);
}

BOOST_AUTO_TEST_CASE(refuses_bad_alignments_and_overflow) {
    gpu::arena_plan plan;
    BOOST_CHECK_THROW(plan.add("x", 8, 3), tl::error);
    BOOST_CHECK_THROW(plan.add("x", 8, 0), tl::error);
    BOOST_CHECK_THROW(plan.add_array<double>("huge", SIZE_MAX / 4), tl::error);
    plan.add("big", SIZE_MAX - 100, 1);
    BOOST_CHECK_THROW(plan.add("after", 1), tl::error);      // rounding up to 256 would wrap around
    BOOST_CHECK_THROW(plan.add("after", 200, 1), tl::error); // the end would wrap around
}

BOOST_AUTO_TEST_SUITE_END()
