// tinylm/core/arena.hpp: one aligned block, handed out by bumping an offset.
//
// tinylm keeps two arenas per model: one for parameters, gradients and optimizer state (allocated once,
// at construction), one for activations (planned for a batch shape before training starts). Nothing is
// allocated inside a training step. An arena built with `arena::measuring()` hands out null views and only
// records how many bytes a sequence of allocations needs: the planner runs the same allocation code twice,
// first to measure, then for real, so the two can never disagree.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/core/memory_budget.hpp>
#include <tinylm/core/tensor.hpp>

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tl {

class arena {
public:
    static constexpr std::size_t alignment = 64; // one cache line; also AVX-512 alignment

    // The pages behind a block: the system's, or (pages::huge) transparent huge pages asked for, for a block that is
    // read whole again and again (a model's weights: allocate_block).
    enum class pages { base, huge };

    arena() = default;
    explicit arena(std::size_t capacity_bytes, pages kind = pages::base) : capacity_(round_up(capacity_bytes)) {
        if (capacity_ > 0) {
            check_fits_in_memory(double(capacity_), "arena: the planned block (parameters or activations)",
                                 "a smaller batch, context or model needs less");
            block_.reset(static_cast<std::byte*>(allocate_block(capacity_, kind)));
        }
    }
    static arena measuring() {
        arena a;
        a.measuring_ = true;
        return a;
    }

    template <class T>
    tensor_view<T> allocate(shape s) {
        static_assert(alignof(T) <= alignment);
        const std::size_t bytes = round_up(std::size_t(s.numel()) * sizeof(T));
        if (measuring_) {
            used_ += bytes;
            return {nullptr, s};
        }
        check(used_ + bytes <= capacity_, [&] {
            return "arena: allocating " + s.str() + " (" + std::to_string(bytes) + " bytes) exceeds capacity " +
                   std::to_string(capacity_) + " (used " + std::to_string(used_) + ")";
        });
        T* p = reinterpret_cast<T*>(block_.get() + used_);
        used_ += bytes;
        return {p, s};
    }
    template <class T>
    tensor_view<T> allocate_zeroed(shape s) {
        auto v = allocate<T>(s);
        if (v.data) v.fill(T{});
        return v;
    }

    void reset() { used_ = 0; }
    std::size_t used() const { return used_; }
    std::size_t capacity() const { return capacity_; }
    std::byte* base() const { return block_.get(); }
    bool is_measuring() const { return measuring_; }

    static constexpr std::size_t round_up(std::size_t n) { return (n + alignment - 1) / alignment * alignment; }
    // pages::huge blocks of 8 MB and more start on a 2 MB boundary and ask Linux for transparent huge pages, which it
    // gives only to memory that asks where THP is "madvise" (Debian's default): decoding streams every weight once a
    // token, and with 4 KB pages each page is a TLB miss. Config B f32 decode, 6 interleaved A/B runs: 2-8% more
    // tokens/s (docs/performance.md, "Huge pages"), the same peak memory. Not for every block: a KV cache is touched
    // a position at a time, and a 2 MB page per layer's keys would make a short conversation hold ~100 MB.
    static void* allocate_block(std::size_t bytes, pages kind) {
        constexpr std::size_t huge_page = std::size_t(2) << 20;
        const bool huge = kind == pages::huge && bytes >= 4 * huge_page;
        const std::size_t whole = (bytes + huge_page - 1) / huge_page * huge_page;
        void* p = huge ? std::aligned_alloc(huge_page, whole) : std::aligned_alloc(alignment, bytes);
        if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
        if (huge) madvise(p, whole, MADV_HUGEPAGE); // a hint: where it fails, the pages stay 4 KB
#endif
        return p;
    }

private:
    struct free_deleter {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::unique_ptr<std::byte, free_deleter> block_;
    std::size_t capacity_ = 0;
    std::size_t used_ = 0;
    bool measuring_ = false;
};

// Runs allocate(arena&) once on a measuring arena to size `memory` (grown only when it is too small, so planning
// the same or a smaller shape again allocates nothing), then on `memory` itself, from its start; returns what
// that second call returns. The activations of a batch shape are planned this way.
template <class Allocate>
auto plan_in(arena& memory, Allocate&& allocate) {
    arena measure = arena::measuring();
    allocate(measure);
    if (measure.used() > memory.capacity()) memory = arena(measure.used());
    memory.reset();
    return allocate(memory);
}

} // namespace tl
