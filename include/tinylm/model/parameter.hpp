// tinylm/model/parameter.hpp: one trainable tensor as optimizers, clipping, checkpoints and freezing see it.
//
// A model hands out a vector of parameter_entry (its walk, in a fixed order, with Hugging Face names). This
// header is all an optimizer needs: optimizers depend on entries, never on a model type.
#pragma once

#include <tinylm/core/tensor.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tl {

// How the optimizer treats a parameter (weight decay groups): decay weights, and by option embeddings.
// LoRA A/B matrices are `adapter` (decayed, as torch.optim.AdamW decays every parameter it is given).
enum class param_kind : std::uint8_t { weight, embedding, norm, bias, adapter };

// What part of the model a parameter belongs to: the unit of freezing (model.freeze(param_group::...)).
enum class param_group : std::uint8_t { embedding, head, norm, attention, mlp, adapter };

struct parameter_entry {
    std::string name;         // Hugging Face name (LoRA: peft's without "base_model.model.")
    tensor_view<float> value; // the parameter
    tensor_view<float> grad;  // its gradient, same shape; empty when the parameter can never train
    param_kind kind;
    bool trainable = true; // false: frozen; optimizers and clipping skip it
    param_group group = param_group::attention;
    // Rows that train (embedding and head only; nullptr: all). An optimizer leaves the other rows, and their
    // moments, untouched; clipping does not count them.
    const std::vector<std::uint8_t>* row_mask = nullptr;
};

} // namespace tl
