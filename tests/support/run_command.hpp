// Runs a shell command for a test and returns its standard output; the test case stops (BOOST_TEST_REQUIRE) when
// the command cannot start or exits non-zero.
#pragma once

#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <string>

namespace tl_test {

inline std::string run_command(const std::string& command) {
    std::string out;
    FILE* p = popen(command.c_str(), "r");
    BOOST_TEST_REQUIRE(p != nullptr);
    char buf[4096];
    while (const std::size_t n = std::fread(buf, 1, sizeof buf, p))
        out.append(buf, n);
    const int status = pclose(p);
    BOOST_TEST_REQUIRE(status == 0, command << " exited with " << status);
    return out;
}

} // namespace tl_test
