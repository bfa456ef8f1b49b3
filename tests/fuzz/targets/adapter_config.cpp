// A PEFT adapter's adapter_config.json, read by the code that loads an adapter into a LoRA model and by the
// code that merges one into a plain model.
#include "checkpoint_fixture.hpp"

using namespace tl_fuzz;

TINYLM_FUZZ_TARGET(adapter_config) {
    const auto& dir = checkpoint_dir();
    tl_fuzz::scratch::get().write("checkpoint/adapter_config.json", in);
    tl_fuzz::attempt([&] {
        plain_model base(3);
        (void)tl::merge_adapter(base, dir);
    });
    lora_model model(2);
    tl::load_adapter(model, dir);
}
