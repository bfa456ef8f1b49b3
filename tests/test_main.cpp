// The Boost.Test entry point, compiled once and linked into every test executable.
#define BOOST_TEST_MODULE tinylm
#include <boost/test/unit_test.hpp>
