// A Hugging Face generation_config.json (sampling defaults a checkpoint carries).
#include "../fuzz_target.hpp"

#include <tinylm/io/hf_folder.hpp>

TINYLM_FUZZ_TARGET(generation_config) {
    const auto path = tl_fuzz::scratch::get().write("generation_config.json", in);
    (void)tl::read_generation_config(path);
}
