// tinylm/ops/common.hpp: shared vocabulary of the ops.
//
// Shape legend used in every op header:
//   N = rows (batch * time), B = batch, T = time, H = heads, D = head width, d = model width,
//   F = MLP width, V = vocabulary.
//
// The gradient rule (docs/conventions.md): parameter gradients accumulate (+=), so that gradient
// accumulation and tied weights work; activation gradients are assigned (=), unless the caller asks to add
// (the residual stream, and inputs that feed several consumers, such as the normed input of q, k and v).
#pragma once

#include <tinylm/core/tensor.hpp>
#include <tinylm/core/token.hpp>

#include <cstdint>

namespace tl {

enum class grad_write { assign, add };

constexpr token_t ignore_index = -100;

template <class T>
inline void write_grad(T& dst, T value, grad_write mode) {
    if (mode == grad_write::add)
        dst += value;
    else
        dst = value;
}

} // namespace tl
