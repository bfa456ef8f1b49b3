// gpu::blas's bounded plan cache (tinylm/cuda/plan_cache.hpp): it never holds more than its capacity, forgets the
// least recently used entry first, keeps what it is asked for again, and stays unchanged when making a value throws.
#include <tinylm/cuda/plan_cache.hpp>

#include <boost/test/unit_test.hpp>

#include <memory>
#include <stdexcept>

using namespace tl;

BOOST_AUTO_TEST_SUITE(cuda_plan_cache)

BOOST_AUTO_TEST_CASE(holds_its_capacity_and_forgets_the_least_recently_used) {
    gpu::lru_cache<long long, long long> cache(3);
    int made = 0;
    const auto get = [&](long long key) {
        return cache.get(key, [&] {
            ++made;
            return std::make_unique<long long>(key * 10);
        });
    };
    BOOST_TEST(get(1) == 10);
    BOOST_TEST(get(2) == 20);
    BOOST_TEST(get(3) == 30);
    BOOST_TEST(made == 3);
    BOOST_TEST(get(1) == 10); // a hit: 1 is now the most recent, 2 the least
    BOOST_TEST(made == 3);
    BOOST_TEST(get(4) == 40); // full: 2 goes
    BOOST_TEST(cache.size() == 3u);
    BOOST_TEST(cache.evictions() == 1u);
    BOOST_TEST(!cache.contains(2));
    BOOST_TEST((cache.contains(1) && cache.contains(3) && cache.contains(4)));
    // Many distinct keys (an expert's row count changing every step): the size stays at the capacity, and the keys
    // used in between survive.
    for (long long m = 100; m < 200; ++m) {
        get(m);
        get(4);
        BOOST_TEST_REQUIRE(cache.size() <= 3u);
    }
    BOOST_TEST(cache.contains(4));
    BOOST_TEST(cache.contains(199));
    BOOST_TEST(cache.evictions() == 101u);
}

BOOST_AUTO_TEST_CASE(a_failed_make_changes_nothing) {
    gpu::lru_cache<int, int> cache(1);
    cache.get(1, [] { return std::make_unique<int>(1); });
    BOOST_CHECK_THROW(cache.get(2, []() -> std::unique_ptr<int> { throw std::runtime_error("no algorithm"); }),
                      std::runtime_error);
    BOOST_TEST(cache.contains(1));
    BOOST_TEST(cache.size() == 1u);
    BOOST_TEST(cache.evictions() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
