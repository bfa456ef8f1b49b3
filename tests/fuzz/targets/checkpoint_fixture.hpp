// The training checkpoint the trainer_state and adapter_config targets read: valid weights written once per
// process by a tiny LoRA model, so every input reaches the JSON readers.
#pragma once

#include "../fuzz_target.hpp"

#include "../../model/fixture_configs.hpp"

#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/peft.hpp>
#include <tinylm/io/peft_merge.hpp>
#include <tinylm/model/decoder.hpp>
#include <tinylm/optim/adamw.hpp>
#include <tinylm/train/checkpoint.hpp>

namespace tl_fuzz {
struct lora_r2 {
    static constexpr tl::lora_config value{.rank = 2, .alpha = 4, .dropout = 0.1f, .targets = tl::lora_q | tl::lora_v};
};
using lora_model = tl::decoder<tl::test::llama_gqa, tl::eigen_cpu, lora_r2>;
using plain_model = tl::decoder<tl::test::llama_gqa, tl::eigen_cpu>;

// The checkpoint folder, written once; each input replaces one JSON file in it.
inline const std::filesystem::path& checkpoint_dir() {
    static const std::filesystem::path dir = [] {
        const auto d = tl_fuzz::scratch::get().dir() / "checkpoint";
        lora_model model(1);
        tl::adamw opt(model);
        tl::save_training_checkpoint(model, opt, {.step = 3, .data_position = 5}, d);
        return d;
    }();
    return dir;
}
} // namespace tl_fuzz
