// A training checkpoint's trainer_state.json, read by the code that resumes training (load_training_checkpoint
// on a LoRA model: step counters, data position, dropout state, history).
#include "checkpoint_fixture.hpp"

using namespace tl_fuzz;

TINYLM_FUZZ_TARGET(trainer_state) {
    const auto& dir = checkpoint_dir();
    tl_fuzz::scratch::get().write("checkpoint/trainer_state.json", in);
    lora_model model(2);
    tl::adamw opt(model);
    const tl::training_state state = tl::load_training_checkpoint(model, opt, dir);
    tl_fuzz::require(state.step >= 0, "a negative step was accepted");
}
