// tools/tinylm/interrupt.hpp: Ctrl-C stops the current answer instead of killing the program.
#pragma once

#include <atomic>
#include <csignal>

namespace tinylm_cli {

inline std::atomic<bool>& interrupted() {
    static std::atomic<bool> flag{false};
    return flag;
}

// From now on SIGINT sets interrupted() (the generating loop checks it); a second Ctrl-C within the same answer
// ends the program as usual.
inline void catch_interrupts() {
    struct sigaction action {};
    action.sa_handler = [](int) {
        if (interrupted().exchange(true)) {
            std::signal(SIGINT, SIG_DFL);
            std::raise(SIGINT);
        }
    };
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
}

} // namespace tinylm_cli
