// tinylm/core/memory_budget.hpp: refuse an allocation larger than the machine's memory before making it.
//
// A batch of 100,000,000 sequences asks for terabytes: without a check the program dies with std::bad_alloc
// (or, with overcommit, is killed by the kernel while it touches the pages). The arenas and the trainer's token
// buffers check their size here first and say how much they need and how much there is.
#pragma once

#include <tinylm/core/error.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace tl {

// The machine's physical memory in bytes (0 when the system does not say).
inline std::size_t physical_memory_bytes() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? std::size_t(pages) * std::size_t(page) : 0;
}

inline std::string gib_text(double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(1ull << 30));
    return buf;
}

// Throws when `bytes` exceed the machine's physical memory: "<what> needs 47.7 GiB; this machine has 23.4 GiB of
// memory (<advice>)".
inline void check_fits_in_memory(double bytes, std::string_view what, std::string_view advice) {
    const std::size_t have = physical_memory_bytes();
    if (have == 0 || bytes <= double(have)) return;
    std::string m(what);
    m += " needs ";
    m += gib_text(bytes);
    m += "; this machine has ";
    m += gib_text(double(have));
    m += " of memory (";
    m += advice;
    m += ")";
    fail(m);
}

} // namespace tl
