// tinylm/model/slot.hpp: how a part of the model declares its tensors.
//
// Every part (norm, projection, attention half, MLP half, block) has a `walk(visit, prefix, ...)` that calls
// visit(param_slot{...}) once per tensor, in the Hugging Face order. The decoder runs the same walk to
// allocate values, then gradients, then to build its parameter_entry list: one walk, so names, order,
// memory layout and initialisation streams cannot disagree.
#pragma once

#include <tinylm/core/tensor.hpp>
#include <tinylm/model/parameter.hpp>
#include <tinylm/ops/nf4.hpp>

#include <string>

namespace tl {

struct param_slot {
    std::string name;  // Hugging Face name
    tl::shape shape;   // (out, in) for weights
    param_kind kind;   // weight decay group
    param_group group; // freezing unit
    tensor_view<float>* value = nullptr;
    tensor_view<float>* grad = nullptr;
    nf4_tensor* quantized = nullptr; // QLoRA: a frozen base weight stored in NF4 instead of `value`
};

} // namespace tl
