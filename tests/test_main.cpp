// The Boost.Test entry point, compiled once and linked into every test executable. A run whose only
// shortfall is test cases skipped for missing data (tests/support/data.hpp) exits with 77, which ctest
// reports as skipped (SKIP_RETURN_CODE); failures keep Boost's own exit codes.
#define BOOST_TEST_MODULE tinylm
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include "support/data.hpp"

#include <cstdio>

int main(int argc, char* argv[]) {
    const int rc = boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
    if (rc != 0 || tl_test::data_skips() == 0) return rc;
    std::printf("%d test case(s) skipped: their data (or the device they need) is not here\n", tl_test::data_skips());
    return tl_test::skip_exit_code;
}
