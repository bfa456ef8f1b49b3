// tinylm/io/hf_any.hpp: one call loads any Llama, Mistral, Ministral, Qwen2, Qwen3 or Mixtral folder, whatever
// its sizes, without a rebuild: config.json is read into a model_config (io/hf_config.hpp), its structure picks
// the family type (model/families.hpp) and the sizes are given at run time.
//
//   tl::with_pretrained(dir, [&](auto& model) { ... model.loss(...) ...; return 0; });
//   tl::with_pretrained(dir, f, tl::weights_to_load_for_inference); // no gradient memory: to decode or evaluate
//
// `f` is called with a decoder<families::llama | qwen2 | mixtral, B>&: write it as a generic lambda. Each
// family is instantiated once in the calling translation unit (three decoders' worth of compile time).
#pragma once

#include <tinylm/io/hf_checkpoint.hpp>
#include <tinylm/io/hf_config.hpp>
#include <tinylm/model/families.hpp>

#include <memory>

namespace tl {

// The configuration of a Hugging Face folder, from its config.json.
inline model_config read_hf_folder_config(const fs::path& dir) {
    const fs::path path = dir / "config.json";
    return read_hf_config(detail::read_json_file(path, "hf_any"), path.string());
}

template <Backend B = default_backend, class F>
decltype(auto) with_pretrained(const fs::path& dir, F&& f, weights_to_load_t how = weights_to_load) {
    const model_config c = read_hf_folder_config(dir);
    auto load = [&]<class Family>() -> decltype(auto) {
        auto model = std::make_unique<decoder<Family, B>>(c, how);
        load_pretrained(*model, dir);
        return f(*model);
    };
    return visit_family(c, load);
}

} // namespace tl
