// tinylm/cuda/arena_plan.hpp: the offsets of every buffer in one device allocation, planned before it is made.
//
// As on the CPU (core/arena.hpp), a training step allocates nothing: the model, its gradients, the optimizer's
// moments and every activation get an offset here first, then tl::gpu::device_arena (device.hpp) makes a single
// cudaMalloc of bytes() and hands out pointers at those offsets. Planning is plain C++ (tested on the CPU); only
// the allocation needs the CUDA runtime.
//
// Every buffer is followed by a guard gap of at least guard_bytes that no buffer owns (its `guard`, the padding to
// the next buffer's alignment included; the last buffer's too), on the GPU as in the host emulation, so both run the
// same offsets. A kernel that writes (or, under AddressSanitizer, reads) a little past its buffer then touches the
// gap instead of its neighbour, and the host emulation, which fills the gaps with a canary and checks them after
// every launch (src/cuda/emulation/runtime.cpp), names the buffer it overran; one allocation hides that from the
// runtime and from AddressSanitizer otherwise. Code must never treat consecutive buffers as one span: each block
// that is used as one (the parameters, the gradients, ...) is one entry.
#pragma once

#include <tinylm/core/error.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tl::gpu {

// 256 bytes: cudaMalloc's own alignment, enough for any vector load and for cuBLASLt's operands.
inline constexpr std::size_t default_alignment = 256;
// The least gap after every buffer: one alignment unit, 64 floats. Its cost is nothing to speak of: the 150M
// preset's step (267 buffers, 29.8 GiB) grows by 68,352 bytes (docs/gpu.md, "Guard gaps in the device arena").
inline constexpr std::size_t guard_bytes = 256;

class arena_plan {
public:
    struct entry {
        std::string name;
        std::size_t offset = 0, bytes = 0;
        std::size_t guard = 0; // the gap after it, [offset + bytes, offset + bytes + guard): at least guard_bytes
    };

    // Reserves `bytes` aligned to `alignment` (a power of two), then a guard gap, and returns their offset.
    std::size_t add(std::string name, std::size_t bytes, std::size_t alignment = default_alignment) {
        check(alignment != 0 && (alignment & (alignment - 1)) == 0, [&] {
            std::string m = "arena_plan: alignment ";
            m += std::to_string(alignment);
            m += " of '";
            m += name;
            m += "' is not a power of two";
            return m;
        });
        const std::size_t offset = (end_ + alignment - 1) & ~(alignment - 1);
        check(offset >= end_ && offset + bytes >= offset && offset + bytes + guard_bytes >= offset + bytes, [&] {
            std::string m = "arena_plan: '";
            m += name;
            m += "' overflows the address range";
            return m;
        });
        if (!entries_.empty()) entries_.back().guard += offset - end_; // the alignment's padding widens the gap
        end_ = offset + bytes + guard_bytes;
        entries_.push_back({std::move(name), offset, bytes, guard_bytes});
        return offset;
    }
    template <class T>
    std::size_t add_array(std::string name, std::size_t count, std::size_t alignment = default_alignment) {
        check(count <= ~std::size_t(0) / sizeof(T), [&] {
            std::string m = "arena_plan: '";
            m += name;
            m += "' has too many elements";
            return m;
        });
        return add(std::move(name), count * sizeof(T), alignment < alignof(T) ? alignof(T) : alignment);
    }

    // The buffer planned under `name` (the first, if several share it); an error names a missing one.
    const entry& at(std::string_view name) const {
        for (const entry& e : entries_)
            if (e.name == name) return e;
        std::string m = "arena_plan: no buffer named '";
        m += name;
        m += "'";
        fail(m);
    }

    // Total bytes to allocate (the end of the last buffer's gap).
    std::size_t bytes() const { return end_; }
    const std::vector<entry>& entries() const { return entries_; }

private:
    std::size_t end_ = 0;
    std::vector<entry> entries_;
};

} // namespace tl::gpu
