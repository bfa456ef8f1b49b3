// The message of the tl::error a call throws, for the tests of error messages.
#pragma once

#include <tinylm/core/error.hpp>

#include <string>

namespace tl_test {

inline constexpr const char* no_error = "(no error)";

// The message of the tl::error that f throws, or no_error when it throws nothing; any other exception escapes and
// fails the test.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const tl::error& e) {
        return e.what();
    }
    return no_error;
}

} // namespace tl_test
