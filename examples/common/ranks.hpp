// examples/common/ranks.hpp: the recipes under `mpirun -np N` (docs/distributed.md). Every rank runs the whole
// program; the trainer makes the training data parallel, and these helpers keep everything else on rank 0:
//
//   tl::dist::communicator& world = recipes::join_world(); // stdout silenced on ranks other than 0
//   const bool root = world.is_root();
//   recipes::root_only(world, [&] { prepare_out_dir(...); });  // rank 0 writes, every rank waits for it
//   auto data = recipes::root_first(world, [&] { return prepare_data(...); }); // rank 0 builds the cache, the
//                                                             // others then read it (the same call reuses it)
//
// Rank 0 alone prints, writes files (data caches, logs, reports, the model) and samples; the other ranks take part
// in the collectives only (training, validation). An error on rank 0 inside root_only/root_first ends the whole job
// with its message (communicator::abort): the others would otherwise wait at the barrier forever. In a world of one
// (no mpirun, or built without MPI) both helpers just call the function.
#pragma once

#include <tinylm/core/error.hpp>
#include <tinylm/dist/communicator.hpp>

#include <cstdio>
#include <exception>
#include <type_traits>

namespace recipes {

// The job this process belongs to; on ranks other than 0 standard output goes to /dev/null (errors still reach
// standard error).
inline tl::dist::communicator& join_world() {
    tl::dist::communicator& world = tl::dist::world();
    if (!world.is_root() && !std::freopen("/dev/null", "w", stdout)) throw tl::error("tinylm: cannot silence stdout");
    return world;
}

// f() on rank 0, then a barrier: when it returns, what rank 0 wrote is there for every rank.
template <class F>
void root_only(tl::dist::communicator& world, F&& f) {
    if (world.size() == 1) {
        f();
        return;
    }
    if (world.is_root()) {
        try {
            f();
        } catch (const std::exception& e) {
            world.abort(e.what());
        }
    }
    world.barrier();
}

// f() on rank 0 first, then on the other ranks: for a stage that caches its output (the data preparation), so
// that the other ranks read rank 0's files instead of writing their own.
template <class F>
auto root_first(tl::dist::communicator& world, F&& f) -> std::invoke_result_t<F&> {
    if (world.size() == 1) return f();
    if (world.is_root()) {
        try {
            auto result = f();
            world.barrier();
            return result;
        } catch (const std::exception& e) {
            world.abort(e.what());
        }
    }
    world.barrier();
    return f();
}

} // namespace recipes
