// tinylm/cuda/lora_dropout.hpp: the LoRA dropout state of a device training step (decoder_step, encoder_step), as
// tl's models carry it (model/projection.hpp's adapter_state, model/projection_table.hpp's accessors): the masks' key,
// the training forwards so far, the rows of the global batch before this process's; and the mask of one projection in
// the current training forward (dropout_row.hpp's, which the kernels and cpu_ops draw). One place for both steps, so
// that the decoder's and the encoder's masks are keyed alike, as tl::decoder's and tl::encoder's are.
#pragma once

#include <tinylm/core/counter_hash.hpp>
#include <tinylm/cuda/dropout_row.hpp>
#include <tinylm/model/config.hpp>

#include <cstddef>
#include <cstdint>

namespace tl::gpu {

struct lora_dropout_state {
    std::uint64_t seed = mix64(0x4c6f5241ull); // tl::decoder(seed 0)'s and tl::encoder(seed 0)'s key
    std::uint64_t calls = 0;                   // training forwards so far (a step counts one before its forward)
    long long row0 = 0;                        // rows of the global batch before this process's (data parallel)

    // The mask at rate p of projection `which` (input width `in`) of layer `layer` of n_layers in the current
    // training forward. token_positions (optional, the executor's memory): each row's row in the CPU model's layout
    // (dropout_row.hpp).
    dropout_mask mask(float p, int n_layers, int layer, proj which, std::size_t in,
                      const std::int64_t* token_positions = nullptr) const {
        const std::uint64_t stream = lora_dropout_stream(calls, std::uint64_t(n_layers), std::uint64_t(layer),
                                                         std::uint64_t(which), lora_target_count);
        dropout_mask m = make_dropout_mask(seed, stream, p, std::uint64_t(row0) * in);
        m.token_positions = token_positions, m.width = token_positions ? std::uint64_t(in) : 0;
        return m;
    }
};

} // namespace tl::gpu
