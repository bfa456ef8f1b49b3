// src/cuda/emulation/runtime.cpp: the host emulation's scheduler and runtime API (include/cuda_runtime.h).
//
// A grid runs block after block on the calling thread. Every thread of a block is a fiber (a stack of its own), run in
// turn until it ends or waits: at __syncthreads, or at a warp exchange (__shfl*_sync, __syncwarp) that not every lane
// of its mask has reached. The lane that completes an exchange hands each waiting lane its value and readies it, and
// the scheduler resumes those lanes at once: a warp runs ahead to its next barrier or its end before the next thread
// in the order starts (so a race between warps shows in one order or another). A round ends when each thread has
// reached the barrier or its end; all must have done the same. A block without barriers or exchanges is one round,
// its threads one after the other, each to its end. TINYLM_CUDA_EMULATION_ORDER=reverse runs the blocks and the
// threads in the opposite order, and =shuffle in an order drawn anew for every block and every round (seeded:
// TINYLM_CUDA_EMULATION_SEED, default 1, so a run repeats), so a kernel whose result depends on the order of its
// threads (a race, a missing barrier) gives another result. The forward and the reverse order each miss the races
// whose reader happens to run after its writer; a shuffle puts some reader before its writer in almost any round.
#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#define TINYLM_EMULATION_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TINYLM_EMULATION_ASAN 1
#endif
#endif
#if defined(TINYLM_EMULATION_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

uint3 threadIdx{};
uint3 blockIdx{};
dim3 blockDim{};
dim3 gridDim{};

namespace {

// ---- errors, as the runtime keeps them: the last one (cleared by cudaGetLastError), and a fault that stays ----
struct error_state {
    cudaError_t last = cudaSuccess;
    cudaError_t sticky = cudaSuccess;
    std::string detail; // what the emulation found, for cudaGetErrorString
};
error_state& errors() {
    static error_state e;
    return e;
}
cudaError_t result(cudaError_t e) {
    if (errors().sticky != cudaSuccess) return errors().sticky;
    if (e != cudaSuccess) errors().last = e;
    return e;
}
void fault(const std::string& what, cudaError_t kind = cudaErrorLaunchFailure) {
    if (errors().sticky != cudaSuccess) return;
    errors().sticky = errors().last = kind;
    errors().detail = what;
    std::fprintf(stderr, "tinylm CUDA emulation: %s\n", what.c_str());
}

// The order of the blocks of a grid and of the threads of a block (TINYLM_CUDA_EMULATION_ORDER, above).
enum class run_order { forward, reverse, shuffle };
run_order order_of_runs() {
    static const run_order order = [] {
        const char* v = std::getenv("TINYLM_CUDA_EMULATION_ORDER");
        const std::string name = v ? v : "";
        if (name.empty() || name == "forward") return run_order::forward;
        if (name == "reverse") return run_order::reverse;
        if (name == "shuffle") return run_order::shuffle;
        std::fprintf(stderr,
                     "tinylm CUDA emulation: TINYLM_CUDA_EMULATION_ORDER=%s is not forward, reverse or "
                     "shuffle\n",
                     name.c_str());
        std::exit(2);
    }();
    return order;
}
// The shuffle's generator: one sequence for the process, so a run with the same seed draws the same orders.
std::mt19937_64& shuffle_generator() {
    static std::mt19937_64 g([] {
        const char* v = std::getenv("TINYLM_CUDA_EMULATION_SEED");
        return v ? std::strtoull(v, nullptr, 10) : 1ULL;
    }());
    return g;
}
// Positions 0 .. n - 1 in the run order: forward, reverse, or a fresh shuffle.
void order_positions(std::vector<std::size_t>& positions, std::size_t n) {
    positions.resize(n);
    for (std::size_t i = 0; i < n; ++i)
        positions[i] = order_of_runs() == run_order::reverse ? n - 1 - i : i;
    if (order_of_runs() == run_order::shuffle) std::shuffle(positions.begin(), positions.end(), shuffle_generator());
}
// The i-th of a grid's `blocks` blocks to run. A shuffle walks them with a stride coprime with their count, from a
// random start: every block once, in an order other than the index's, without a table of millions of blocks.
unsigned long long block_in_order(unsigned long long i, unsigned long long blocks, unsigned long long stride,
                                  unsigned long long start) {
    switch (order_of_runs()) {
    case run_order::forward:
        return i;
    case run_order::reverse:
        return blocks - 1 - i;
    case run_order::shuffle:
        break;
    }
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(i) * stride + start) % blocks);
}

// ---- switching stacks ----
// On x86-64 Linux a switch of our own: the System V callee-saved registers, MXCSR and the x87 control word, then the
// stack pointer; a round trip costs a few nanoseconds. Elsewhere ucontext's swapcontext, which also saves the signal
// mask with a system call (about 600 ns a round trip on the machine this was written on): the kernels with barriers
// switch 256 threads at each of them, so that is the difference between seconds and minutes for the GPU tests.
#if defined(__x86_64__) && defined(__linux__)
extern "C" void tinylm_emulation_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl tinylm_emulation_switch
    .hidden tinylm_emulation_switch
    .type tinylm_emulation_switch, @function
tinylm_emulation_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw 12(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr 8(%rsp)
    fldcw 12(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tinylm_emulation_switch, .-tinylm_emulation_switch
)");

struct stack_context {
    void* sp = nullptr;
    const void* bottom = nullptr; // the stack's extent, for AddressSanitizer (below)
    std::size_t size = 0;
    void* fake = nullptr;
    // The first switch to it enters `entry` (which never returns) on [stack, stack + bytes): the frame that
    // tinylm_emulation_switch pops, built by hand, with the control registers' default values.
    void prepare(char* stack, std::size_t bytes, void (*entry)(), stack_context&) {
        auto* top =
            reinterpret_cast<std::uint64_t*>(reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t(15));
        std::uint64_t* frame = top - 10; // 16-aligned: after the `ret`, the stack is as a call leaves it
        frame[0] = 0;
        frame[1] = 0x1f80 | (std::uint64_t(0x037f) << 32); // MXCSR at +8, the x87 control word at +12
        for (int r = 2; r < 8; ++r)                        // r15, r14, r13, r12, rbx, rbp
            frame[r] = 0;
        frame[8] = reinterpret_cast<std::uint64_t>(entry);
        frame[9] = 0; // entry's return address: it never returns
        sp = frame;
        bottom = stack, size = bytes;
    }
    static void raw_jump(stack_context& from, stack_context& to) { tinylm_emulation_switch(&from.sp, to.sp); }
};
#else
struct stack_context {
    ucontext_t context{};
    const void* bottom = nullptr;
    std::size_t size = 0;
    void* fake = nullptr;
    void prepare(char* stack, std::size_t bytes, void (*entry)(), stack_context& back) {
        getcontext(&context);
        context.uc_stack.ss_sp = stack;
        context.uc_stack.ss_size = bytes;
        context.uc_link = &back.context;
        makecontext(&context, entry, 0);
        bottom = stack, size = bytes;
    }
    static void raw_jump(stack_context& from, stack_context& to) { swapcontext(&from.context, &to.context); }
};
#endif

// AddressSanitizer is told of every switch (the stack in use and its fake stacks), so that a sanitized build runs
// the kernels without false reports; a fiber's first switch in learns the scheduler's stack.
#if defined(TINYLM_EMULATION_ASAN)
void jump(stack_context& from, stack_context& to, bool from_ends = false) {
    __sanitizer_start_switch_fiber(from_ends ? nullptr : &from.fake, to.bottom, to.size);
    stack_context::raw_jump(from, to);
    __sanitizer_finish_switch_fiber(from.fake, nullptr, nullptr);
}
void entered(stack_context& back) { __sanitizer_finish_switch_fiber(nullptr, &back.bottom, &back.size); }
// A stack used again: the redzones of the frames its last thread left behind (it never returned from them) go.
void reuse(char* stack, std::size_t bytes) { __asan_unpoison_memory_region(stack, bytes); }
#else
void reuse(char*, std::size_t) {}
void jump(stack_context& from, stack_context& to, bool = false) { stack_context::raw_jump(from, to); }
void entered(stack_context&) {}
#endif

// ---- fibers ----
constexpr std::size_t stack_bytes = std::size_t(256) << 10; // the attention kernels keep rows of 256 floats

struct fiber_stack {
    char* base = nullptr; // a guard page, then the stack
    std::size_t bytes = 0;
};

struct fiber {
    enum class state { ready, waiting, at_warp, done }; // waiting: at __syncthreads
    stack_context context;
    uint3 index{};
    state st = state::ready;
    std::uint64_t warp_result = 0; // what its warp exchange handed it, set by the lane that completed it
    bool started = false;          // has a stack (start)
    std::size_t stack = 0;
};

// A warp exchange some lanes of `mask` have reached (tinylm_cuda_emulation.hpp, warp_exchange): what each passed.
struct pending_exchange {
    using warp_call = tl::gpu::emulation::warp_call;
    std::size_t warp = 0;
    unsigned mask = 0, arrived = 0, bytes = 0;
    warp_call call = warp_call::syncwarp;
    std::uint64_t bits[warpSize] = {};
    int operand[warpSize] = {}, width[warpSize] = {};
};

struct scheduler {
    stack_context main;
    std::vector<fiber_stack> stacks;
    std::vector<fiber> fibers;
    fiber* current = nullptr;
    std::size_t threads = 0; // of the block running
    // The exchanges some lanes wait at: one per mask of a warp (disjoint masks of one warp wait apart).
    std::vector<pending_exchange> exchanges;
    std::vector<std::size_t> woken;       // the lanes an exchange just completed readied, for run_block to resume
    std::vector<std::size_t> free_stacks; // of `stacks`, for the threads that start next
    // The first round starts the threads in the order *positions; next_start: the next to start. While chaining, a
    // thread that ends starts that one on its stack (fiber_main).
    const std::vector<std::size_t>* positions = nullptr;
    std::size_t next_start = 0;
    bool chaining = false;
    const std::function<void()>* body = nullptr;
    std::exception_ptr failure;

    ~scheduler() {
        for (fiber_stack& s : stacks)
            munmap(s.base, s.bytes);
    }
    void reserve(std::size_t n) {
        const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
        while (stacks.size() < n) {
            fiber_stack s;
            s.bytes = stack_bytes + page;
            void* p =
                mmap(nullptr, s.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) throw std::bad_alloc();
            s.base = static_cast<char*>(p);
            mprotect(s.base, page, PROT_NONE); // an overflow faults instead of writing into the next stack
            stacks.push_back(s);
        }
        if (fibers.size() < n) fibers.resize(n);
    }
};
scheduler runner; // one grid at a time: run_grid holds `launches`
std::mutex launches;

// A thread's whole life on its fiber: the kernel, then back to the scheduler for good.
// A thread's whole life on its fiber: the kernel, then back to the scheduler for good. While the scheduler starts the
// threads of a block's first round (runner.chaining), a thread that ends hands its stack to the next thread in the
// order, which runs at once, without a switch: a block without barriers or exchanges runs as plain calls on one
// stack, and a thread that waits is resumed on the stack it waits on.
void fiber_main() {
    entered(runner.main);
    for (;;) {
        try {
            (*runner.body)();
        } catch (...) {
            if (!runner.failure) runner.failure = std::current_exception();
        }
        fiber* self = runner.current;
        self->st = fiber::state::done;
        if (!runner.chaining || runner.failure || runner.next_start == runner.threads) break;
        fiber& next = runner.fibers[(*runner.positions)[runner.next_start++]];
        next.started = true, next.stack = self->stack;
        runner.current = &next;
        threadIdx = next.index;
    }
    jump(runner.current->context, runner.main, true);
}

// A thread gets a stack when it first runs (or the stack of the thread before it in a chain, fiber_main), and its last
// owner gives it back when it ends.
void start(std::size_t t) {
    fiber& f = runner.fibers[t];
    f.stack = runner.free_stacks.back();
    runner.free_stacks.pop_back();
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    reuse(runner.stacks[f.stack].base + page, stack_bytes);
    f.context.prepare(runner.stacks[f.stack].base + page, stack_bytes, fiber_main, runner.main);
    f.started = true;
}

void resume(std::size_t t) {
    fiber& f = runner.fibers[t];
    if (!f.started) start(t);
    runner.current = &f;
    threadIdx = f.index;
    jump(runner.main, f.context);
    const fiber* back = std::exchange(runner.current, nullptr); // f, or the last thread of its chain (fiber_main)
    if (back->st == fiber::state::done) runner.free_stacks.push_back(back->stack);
}

std::string where(uint3 thread) {
    return "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " +
           std::to_string(blockIdx.z) + "), thread (" + std::to_string(thread.x) + ", " + std::to_string(thread.y) +
           ", " + std::to_string(thread.z) + ")";
}

struct kernel_fault : std::runtime_error {
    using std::runtime_error::runtime_error;
};

const char* call_name(tl::gpu::emulation::warp_call call) {
    using tl::gpu::emulation::warp_call;
    switch (call) {
    case warp_call::shfl:
        return "__shfl_sync";
    case warp_call::shfl_up:
        return "__shfl_up_sync";
    case warp_call::shfl_down:
        return "__shfl_down_sync";
    case warp_call::shfl_xor:
        return "__shfl_xor_sync";
    case warp_call::syncwarp:
        break;
    }
    return "__syncwarp";
}
std::string hex(unsigned mask) {
    char text[16];
    std::snprintf(text, sizeof text, "0x%08x", mask);
    return text;
}
std::string describe(const pending_exchange& x) {
    return std::string(call_name(x.call)) + " (mask " + hex(x.mask) + ", " + std::to_string(x.bytes) +
           "-byte values) of warp " + std::to_string(x.warp);
}
// The lanes of `warp` that exist in a block of runner.threads threads: all but in a partial last warp.
unsigned lanes_present(std::size_t warp) {
    const std::size_t lanes = std::min<std::size_t>(warpSize, runner.threads - warp * warpSize);
    return lanes == warpSize ? ~0U : (1U << lanes) - 1;
}

// One block; throws kernel_fault when its threads disagree about a barrier or a warp exchange.
void run_block(std::size_t n) {
    static std::vector<std::size_t> positions; // one block runs at a time
    order_positions(positions, n);
    auto order = [&](std::size_t i) { return positions[i]; };
    for (std::size_t t = 0; t < n; ++t) {
        const unsigned flat = unsigned(t);
        runner.fibers[t].index = {flat % blockDim.x, flat / blockDim.x % blockDim.y, flat / (blockDim.x * blockDim.y)};
    }
    runner.threads = n;
    runner.exchanges.clear();
    runner.woken.clear();
    static std::vector<std::size_t> rank; // a thread's place in the order, drawn when an exchange first needs it
    bool ranked = false;
    auto in_run_order = [&](std::vector<std::size_t>& threads) {
        if (!ranked) {
            rank.resize(n);
            for (std::size_t i = 0; i < n; ++i)
                rank[order(i)] = i;
            ranked = true;
        }
        std::sort(threads.begin(), threads.end(), [&](std::size_t a, std::size_t b) { return rank[a] < rank[b]; });
    };
    // Resumes thread t, then the lanes each exchange it completes readies (in the run order), and theirs: its warp runs
    // ahead to its next barrier or end before the next thread in the order starts, as a thread without exchanges does,
    // so that a warp that reads what another writes before a barrier runs before the writer in one order or another.
    static std::vector<std::size_t> batch;
    auto run_ahead = [&](std::size_t t, bool chaining) {
        runner.chaining = chaining;
        resume(t);
        runner.chaining = false;
        while (!runner.woken.empty()) {
            batch.swap(runner.woken);
            runner.woken.clear();
            in_run_order(batch);
            for (const std::size_t u : batch)
                if (runner.fibers[u].st == fiber::state::ready) resume(u);
        }
    };
    runner.free_stacks.resize(n);
    for (std::size_t t = 0; t < n; ++t) { // every thread ready, to start on its first resume
        runner.free_stacks[t] = n - 1 - t;
        runner.fibers[t].st = fiber::state::ready, runner.fibers[t].started = false;
    }
    runner.positions = &positions, runner.next_start = 0;
    for (;;) {
        // One pass runs every thread to its barrier or its end: run_ahead resumes the lanes its exchanges ready. In the
        // first round the threads start in order, each run by the one before it when that one ended.
        while (runner.next_start < n && !runner.failure)
            run_ahead(order(runner.next_start++), true);
        for (std::size_t i = 0; i < n; ++i)
            if (runner.fibers[order(i)].st == fiber::state::ready) run_ahead(order(i), false);
        if (runner.failure) std::rethrow_exception(std::exchange(runner.failure, nullptr));
        if (!runner.exchanges.empty()) {
            // Nothing is ready, so a lane of the mask has ended or waits at __syncthreads.
            const pending_exchange& x = runner.exchanges.front();
            const unsigned missing = x.mask & lanes_present(x.warp) & ~x.arrived;
            const unsigned lane = unsigned(std::countr_zero(missing));
            const fiber& f = runner.fibers[x.warp * warpSize + lane];
            throw kernel_fault(describe(x) + " waits for lane " + std::to_string(lane) + ", " + where(f.index) +
                               (f.st == fiber::state::done ? ", which has ended" : ", which waits at __syncthreads") +
                               " (every lane named in the mask must reach the same call)");
        }
        std::size_t waiting = 0, done = 0;
        for (std::size_t t = 0; t < n; ++t)
            (runner.fibers[t].st == fiber::state::done ? done : waiting) += 1;
        if (waiting == 0) return;
        if (done > 0) {
            const auto ended = std::find_if(runner.fibers.begin(), runner.fibers.begin() + std::ptrdiff_t(n),
                                            [](const fiber& f) { return f.st == fiber::state::done; });
            throw kernel_fault("__syncthreads reached by some threads while " + where(ended->index) +
                               " has ended (a barrier must be reached by every thread of the block)");
        }
        for (std::size_t t = 0; t < n; ++t)
            runner.fibers[t].st = fiber::state::ready;
        if (order_of_runs() == run_order::shuffle) order_positions(positions, n), ranked = false;
    }
}

bool valid(dim3 grid, dim3 block) {
    const unsigned long long threads = 1ULL * block.x * block.y * block.z;
    return threads >= 1 && threads <= 1024 && block.x <= 1024 && block.y <= 1024 && block.z <= 64 && grid.x >= 1 &&
           grid.x <= 0x7fffffffU && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535;
}

// ---- device memory: host allocations, known by address, so copies can be checked against them ----
struct allocations {
    std::mutex lock;
    std::map<const char*, std::size_t> by_start;
    // Whether [p, p + bytes) lies inside one allocation.
    bool holds(const void* p, std::size_t bytes) {
        const std::lock_guard<std::mutex> hold(lock);
        const char* c = static_cast<const char*>(p);
        auto it = by_start.upper_bound(c);
        if (it == by_start.begin()) return false;
        --it;
        return c >= it->first && std::size_t(c - it->first) + bytes <= it->second;
    }
};
allocations& memory() {
    static allocations a;
    return a;
}

// ---- guard gaps (tinylm_cuda_emulation.hpp, guard_gap): [start, start + bytes) after the buffer `after` ----
// Each holds the canary: byte k of a gap is canary_byte(k), eight different bytes in turn, so no memset of one value
// and no small integer or ordinary float restores it by chance.
struct gap {
    std::size_t bytes = 0;
    std::string after;
};
struct guard_gaps {
    std::mutex lock;
    std::map<char*, gap> by_start;
    std::vector<unsigned char> canary; // canary_byte(k) for k < the widest gap
};
guard_gaps& gaps() {
    static guard_gaps g;
    return g;
}
unsigned char canary_byte(std::size_t k) {
    constexpr unsigned char pattern[8] = {0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed, 0xfa, 0xce};
    return pattern[k % 8];
}

#if defined(TINYLM_EMULATION_ASAN)
void poison(char* p, std::size_t bytes) { __asan_poison_memory_region(p, bytes); }
void unpoison(char* p, std::size_t bytes) { __asan_unpoison_memory_region(p, bytes); }
#else
void poison(char*, std::size_t) {}
void unpoison(char*, std::size_t) {}
#endif

// Writes the canary into a gap (unpoisoned around it: the copy is the runtime's own). g.lock held.
void fill(guard_gaps& g, char* start, std::size_t bytes) {
    while (g.canary.size() < bytes)
        g.canary.push_back(canary_byte(g.canary.size()));
    unpoison(start, bytes);
    std::memcpy(start, g.canary.data(), bytes);
    poison(start, bytes);
}
// The first byte of the gap that is not the canary, or `bytes` when none: a gap is read while AddressSanitizer has it
// poisoned, so this function is not instrumented (and calls nothing that is). The differences are or-ed first, one
// pass without a branch that the compiler vectorises: every launch checks every gap.
[[gnu::no_sanitize_address]] std::size_t first_changed(const char* start, std::size_t bytes,
                                                       const unsigned char* canary) {
    const auto* p = reinterpret_cast<const unsigned char*>(start);
    unsigned char any = 0;
    for (std::size_t k = 0; k < bytes; ++k)
        any |= static_cast<unsigned char>(p[k] ^ canary[k]);
    if (any == 0) return bytes;
    std::size_t k = 0;
    while (p[k] == canary[k])
        ++k;
    return k;
}

// The gap that [p, p + bytes) reaches into, if any (gaps are disjoint: the one starting last before its end). g.lock
// held.
const std::pair<char* const, gap>* overlapping(guard_gaps& g, const void* p, std::size_t bytes) {
    const char* c = static_cast<const char*>(p);
    auto it = g.by_start.lower_bound(const_cast<char*>(c + bytes));
    if (it == g.by_start.begin()) return nullptr;
    --it;
    return it->first + it->second.bytes > c ? &*it : nullptr;
}
// A copy or memset whose device range reaches into a gap, read or written: a fault naming the call and the buffer
// before the gap. Returns whether it does.
bool reaches_a_gap(const char* call, const void* p, std::size_t bytes, const char* reading_or_writing) {
    guard_gaps& g = gaps();
    const std::lock_guard<std::mutex> hold(g.lock);
    const auto* hit = overlapping(g, p, bytes);
    if (!hit) return false;
    fault(std::string(call) + " " + reading_or_writing + " " + std::to_string(bytes) +
              " bytes reaches into the guard gap after buffer '" + hit->second.after +
              "' (an access out of the bounds of the buffers planned in this allocation)",
          cudaErrorIllegalAddress);
    return true;
}

} // namespace

void __syncthreads() {
    fiber* self = runner.current;
    self->st = fiber::state::waiting;
    jump(self->context, runner.main);
}

namespace tl::gpu::emulation {

namespace {
// The lane whose value `lane` reads in exchange x, or `lane` itself where CUDA returns var unchanged: a shift past its
// segment of width lanes (up or down), or a butterfly into a later segment.
unsigned source_lane(const pending_exchange& x, unsigned lane) {
    const unsigned width = unsigned(x.width[lane]), base = lane & ~(width - 1), offset = unsigned(x.operand[lane]);
    switch (x.call) {
    case warp_call::shfl:
        return base + (offset & (width - 1));
    case warp_call::shfl_up:
        return lane - base >= offset ? lane - offset : lane;
    case warp_call::shfl_down:
        return offset < width - (lane - base) ? lane + offset : lane;
    case warp_call::shfl_xor: {
        const unsigned source = lane ^ (offset % warpSize);
        return source < base + width ? source : lane;
    }
    case warp_call::syncwarp:
        break;
    }
    return lane;
}
} // namespace

std::uint64_t warp_exchange(warp_call call, unsigned mask, std::uint64_t bits, unsigned bytes, int operand, int width) {
    fiber* self = runner.current;
    const std::size_t t = std::size_t(self - runner.fibers.data()), warp = t / warpSize;
    const unsigned lane = unsigned(t % warpSize);
    auto caller = [&] { // for a fault's message only: every shuffle of a kernel comes here
        return std::string(call_name(call)) + " by " + where(self->index) + " (lane " + std::to_string(lane) +
               " of warp " + std::to_string(warp) + ")";
    };
    if (!(mask >> lane & 1U)) throw kernel_fault(caller() + " with mask " + hex(mask) + ", which lacks its own lane");
    if (width < 1 || width > warpSize || (width & (width - 1)) != 0)
        throw kernel_fault(caller() + " with width " + std::to_string(width) + " (a power of 2, at most warpSize)");
    auto x = std::find_if(runner.exchanges.begin(), runner.exchanges.end(),
                          [&](const pending_exchange& p) { return p.warp == warp && (p.mask & mask) != 0; });
    if (x == runner.exchanges.end()) {
        runner.exchanges.emplace_back();
        x = std::prev(runner.exchanges.end());
        x->warp = warp, x->mask = mask, x->call = call, x->bytes = bytes;
    } else if (x->mask != mask || x->call != call || x->bytes != bytes) {
        throw kernel_fault(caller() + " with mask " + hex(mask) + " while other lanes of its mask wait at " +
                           describe(*x) + " (the lanes of a mask must reach the same call with the same mask)");
    }
    x->arrived |= 1U << lane;
    x->bits[lane] = bits, x->operand[lane] = operand, x->width[lane] = width;
    const unsigned named = x->mask & lanes_present(warp);
    if (x->arrived != named) { // not the last: wait for the lane that will be
        self->st = fiber::state::at_warp;
        jump(self->context, runner.main);
        return self->warp_result;
    }
    const pending_exchange complete = *x;
    runner.exchanges.erase(x);
    for (unsigned l = 0; l < warpSize; ++l) {
        if (!(named >> l & 1U)) continue;
        fiber& f = runner.fibers[warp * warpSize + l];
        const unsigned source = source_lane(complete, l);
        if (!(named >> source & 1U))
            throw kernel_fault(
                describe(complete) + ": lane " + std::to_string(l) + ", " + where(f.index) + ", reads lane " +
                std::to_string(source) +
                ((complete.mask >> source & 1U) ? ", past the block's last thread" : ", which is not in the mask") +
                " (undefined in CUDA)");
        f.warp_result = complete.bits[source];
        if (l != lane) f.st = fiber::state::ready, runner.woken.push_back(warp * warpSize + l);
    }
    return self->warp_result;
}

void run_grid(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& thread) {
    const std::lock_guard<std::mutex> one_at_a_time(launches);
    if (errors().sticky != cudaSuccess) return;
    if (!valid(grid, block)) {
        errors().last = cudaErrorInvalidConfiguration;
        errors().detail = std::string(kernel) + ": grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) +
                          ", " + std::to_string(grid.z) + "), block (" + std::to_string(block.x) + ", " +
                          std::to_string(block.y) + ", " + std::to_string(block.z) + ")";
        return;
    }
    const std::size_t n = std::size_t(block.x) * block.y * block.z;
    runner.reserve(n);
    gridDim = grid;
    blockDim = block;
    const std::function<void()>* outer = std::exchange(runner.body, &thread);
    const unsigned long long blocks = 1ULL * grid.x * grid.y * grid.z;
    try {
        unsigned long long stride = 1, start = 0;
        if (order_of_runs() == run_order::shuffle) {
            start = shuffle_generator()() % blocks;
            stride = shuffle_generator()() % blocks;
            while (std::gcd(stride, blocks) != 1)
                stride = (stride + 1) % blocks;
        }
        for (unsigned long long i = 0; i < blocks; ++i) {
            const unsigned long long b = block_in_order(i, blocks, stride, start);
            blockIdx = {unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / (1ULL * grid.x * grid.y))};
            run_block(n);
        }
    } catch (const std::exception& e) {
        fault(std::string(kernel) + ": " + e.what());
    }
    runner.body = outer;
    check_gaps(kernel);
}

void guard_gap(void* start, std::size_t bytes, const char* after) {
    if (bytes == 0) return;
    guard_gaps& g = gaps();
    const std::lock_guard<std::mutex> hold(g.lock);
    char* c = static_cast<char*>(start);
    g.by_start[c] = {bytes, after};
    fill(g, c, bytes);
}

void check_gaps(const char* call) {
    if (errors().sticky != cudaSuccess) return;
    guard_gaps& g = gaps();
    const std::lock_guard<std::mutex> hold(g.lock);
    for (auto& [start, gap] : g.by_start) {
        const std::size_t k = first_changed(start, gap.bytes, g.canary.data());
        if (k == gap.bytes) continue;
        fault(std::string(call) + " wrote past the end of buffer '" + gap.after + "': byte " + std::to_string(k) +
                  " of the " + std::to_string(gap.bytes) +
                  "-byte guard gap after it changed (or, near the gap's end, the next buffer was written before its "
                  "start)",
              cudaErrorIllegalAddress);
        fill(g, start, gap.bytes); // the canary back, for a test that goes on after forget_fault
        return;
    }
}

void forget_fault() { errors() = {}; }

} // namespace tl::gpu::emulation

const char* cudaGetErrorString(cudaError_t error) {
    thread_local std::string text;
    switch (error) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidDevicePointer:
        return "invalid device pointer";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorInvalidConfiguration:
        text = "invalid configuration argument (" + errors().detail + ")";
        break;
    case cudaErrorLaunchFailure:
        text = "unspecified launch failure (" + errors().detail + ")";
        break;
    case cudaErrorIllegalAddress:
        text = "an illegal memory access was encountered (" + errors().detail + ")";
        break;
    default:
        text = "unknown error " + std::to_string(int(error));
    }
    return text.c_str();
}

cudaError_t cudaGetLastError() {
    const cudaError_t e = errors().sticky != cudaSuccess ? errors().sticky : errors().last;
    errors().last = cudaSuccess;
    return e;
}

// The devices: one, or under a launcher one per process it started on this host (each process is its own emulated
// GPU, as mpirun -np N on a host of N GPUs: gpu::nccl_communicator then takes the device of its local rank);
// TINYLM_CUDA_EMULATION_DEVICES=n says how many instead. The current device is the calling thread's, as in CUDA.
namespace {
int emulated_devices() {
    static const int n = [] {
        for (const char* v : {"TINYLM_CUDA_EMULATION_DEVICES", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
            if (const char* text = std::getenv(v)) {
                const int count = std::atoi(text);
                if (count > 0) return count;
            }
        return 1;
    }();
    return n;
}
thread_local int current_device = 0;
} // namespace

cudaError_t cudaGetDeviceCount(int* count) {
    *count = emulated_devices();
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = current_device;
    return result(cudaSuccess);
}
cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= emulated_devices()) return result(cudaErrorInvalidDevice);
    current_device = device;
    return result(cudaSuccess);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device < 0 || device >= emulated_devices()) return result(cudaErrorInvalidDevice);
    *prop = {};
    std::snprintf(prop->name, sizeof prop->name, "%s", "tinylm CUDA emulation on the host (no GPU)");
    return result(cudaSuccess);
}

cudaError_t cudaMalloc(void** pointer, std::size_t bytes) {
    *pointer = nullptr;
    if (errors().sticky != cudaSuccess) return errors().sticky;
    if (bytes == 0) return cudaSuccess;
    // More than the host has is refused as a GPU refuses more than it has (and before the allocator, which a
    // sanitized build aborts on sizes it cannot serve).
    const std::size_t host = std::size_t(sysconf(_SC_PHYS_PAGES)) * std::size_t(sysconf(_SC_PAGESIZE));
    if (bytes > host) return result(cudaErrorMemoryAllocation);
    const std::size_t rounded = (bytes + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded);
    if (!p) return result(cudaErrorMemoryAllocation);
    std::memset(p, 0xff, rounded); // NaN as floats, -1 as integers: what is read before it is written shows
    {
        const std::lock_guard<std::mutex> hold(memory().lock);
        memory().by_start[static_cast<const char*>(p)] = bytes;
    }
    *pointer = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void* pointer) {
    if (!pointer) return cudaSuccess;
    std::size_t bytes = 0;
    {
        const std::lock_guard<std::mutex> hold(memory().lock);
        const auto it = memory().by_start.find(static_cast<const char*>(pointer));
        if (it == memory().by_start.end()) return result(cudaErrorInvalidDevicePointer);
        bytes = it->second;
        memory().by_start.erase(it);
    }
    {
        guard_gaps& g = gaps();
        const std::lock_guard<std::mutex> hold(g.lock);
        char* c = static_cast<char*>(pointer);
        g.by_start.erase(g.by_start.lower_bound(c), g.by_start.lower_bound(c + bytes));
        unpoison(c, bytes);
    }
    std::free(pointer);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
    if (errors().sticky != cudaSuccess) return errors().sticky;
    if (bytes == 0) return cudaSuccess;
    const bool device_dst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool device_src = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if ((device_dst && !memory().holds(dst, bytes)) || (device_src && !memory().holds(src, bytes)))
        return result(cudaErrorInvalidValue);
    if ((device_dst && reaches_a_gap("cudaMemcpy", dst, bytes, "writing")) ||
        (device_src && reaches_a_gap("cudaMemcpy", src, bytes, "reading")))
        return errors().sticky;
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t) {
    if (errors().sticky != cudaSuccess) return errors().sticky;
    if (bytes == 0) return cudaSuccess;
    if (!memory().holds(dst, bytes)) return result(cudaErrorInvalidValue);
    if (reaches_a_gap("cudaMemsetAsync", dst, bytes, "writing")) return errors().sticky;
    std::memset(dst, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return errors().sticky; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return errors().sticky; }
cudaError_t cudaStreamQuery(cudaStream_t) { return errors().sticky; }

bool tl::gpu::emulation::is_device_memory(const void* p, std::size_t bytes) { return memory().holds(p, bytes); }
