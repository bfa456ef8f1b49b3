// A Hugging Face config.json: read into a model_config; a config that reads is written back and reads the same.
#include "../fuzz_target.hpp"

#include <tinylm/core/json_field.hpp>
#include <tinylm/io/hf_config.hpp>

TINYLM_FUZZ_TARGET(hf_config) {
    const std::string where = "fuzz-input/config.json";
    const auto j = tl::parse_json_text(tl_fuzz::text(in), where);
    const tl::model_config c = tl::read_hf_config(j, where);
    tl::check_hf_config(j, c, where);
    const tl::model_config again = tl::read_hf_config(tl::hf_config_json(c), where);
    tl_fuzz::require(again == c, "config.json written by hf_config_json does not read back the same");
}
