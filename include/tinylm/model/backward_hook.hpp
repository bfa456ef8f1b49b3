// tinylm/model/backward_hook.hpp: what a model's backward calls as its parameter gradients become final.
//
// A data-parallel trainer starts the all-reduce of a bucket of gradients as soon as backward has finished them,
// while backward computes the rest (dist/data_parallel.hpp). A decoder (model/decoder.hpp) calls the hook with a
// stage that falls as backward goes down: n_layers once the head and the final norm are done, then l after block l
// (l = n_layers - 1 down to 0); the embedding's gradient is final when backward returns (stage -1, no call).
// decoder::backward_stage(name) maps a parameter to the call that makes its gradient final. The hook runs on the
// thread that called backward, between ops.
#pragma once

#include <tinylm/core/shape.hpp>

#include <concepts>
#include <functional>
#include <string>

namespace tl {

using backward_hook = std::function<void(index_t stage)>;

// A model whose backward takes a hook (and, for experts, the balancing loss's own scale) and says which stage
// finishes each parameter: the decoder.
template <class M>
concept HookedBackward = requires(M& m, const backward_hook& hook, const std::string& name) {
    m.backward(1.0, hook, 1.0);
    { m.backward_stage(name) } -> std::convertible_to<index_t>;
};

} // namespace tl
