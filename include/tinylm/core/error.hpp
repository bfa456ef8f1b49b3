// tinylm/core/error.hpp: the one exception type of tinylm and shape-naming checks.
//
// Every failure a user can cause (a wrong shape, a malformed file, a bad config at run time) throws
// tl::error with a message that names the thing and the problem, e.g.
//   "linear: x has shape [4, 32] but the weight expects 64 input features".
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tl {

class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const std::string& message) { throw error("tinylm: " + message); }

// Throws when `condition` is false; `message` is built only on failure.
template <class MessageFn>
inline void check(bool condition, MessageFn&& message) requires requires {
    std::string(message());
}
{
    if (!condition) fail(message());
}

inline void check(bool condition, std::string_view message) {
    if (!condition) fail(std::string(message));
}

} // namespace tl
