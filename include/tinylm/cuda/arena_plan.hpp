// tinylm/cuda/arena_plan.hpp: the offsets of every buffer in one device allocation, planned before it is made.
//
// As on the CPU (core/arena.hpp), a training step allocates nothing: the model, its gradients, the optimizer's
// moments and every activation get an offset here first, then tl::gpu::device_arena (device.hpp) makes a single
// cudaMalloc of bytes() and hands out pointers at those offsets. Planning is plain C++ (tested on the CPU); only
// the allocation needs the CUDA runtime.
#pragma once

#include <tinylm/core/error.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tl::gpu {

// 256 bytes: cudaMalloc's own alignment, enough for any vector load and for cuBLASLt's operands.
inline constexpr std::size_t default_alignment = 256;

class arena_plan {
public:
    struct entry {
        std::string name;
        std::size_t offset = 0, bytes = 0;
    };

    // Reserves `bytes` aligned to `alignment` (a power of two) and returns their offset.
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
        check(offset >= end_ && offset + bytes >= offset, [&] {
            std::string m = "arena_plan: '";
            m += name;
            m += "' overflows the address range";
            return m;
        });
        end_ = offset + bytes;
        entries_.push_back({std::move(name), offset, bytes});
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

    // Total bytes to allocate (the end of the last buffer).
    std::size_t bytes() const { return end_; }
    const std::vector<entry>& entries() const { return entries_; }

private:
    std::size_t end_ = 0;
    std::vector<entry> entries_;
};

} // namespace tl::gpu
