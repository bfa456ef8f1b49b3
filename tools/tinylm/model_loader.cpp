// The one translation unit that instantiates the decoder families (Llama, Qwen2, Mixtral): every subcommand
// reaches the model through tl::text_model.
#include "common.hpp"

#include <tinylm/io/gguf.hpp>

#include <chrono>
#include <cstdio>

namespace tinylm_cli {

std::unique_ptr<tl::text_model> open_model(const model_flags& flags) {
    const fs::path &model = flags.model, &adapter = flags.adapter;
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<tl::text_model> m = tl::load_text_model(model, adapter);
    const tl::decoding_format format = tl::parse_decoding_format(flags.precision);
    const std::size_t copy_bytes = m->use_decoding_weights(format);
    m->use_kv_precision(tl::parse_kv_precision(flags.kv_cache));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const tl::model_config& c = m->config();
    std::fprintf(stderr, "loaded %s: %s, %.1fM parameters, %d layers, context %d, vocabulary %d (%.1f s)%s%s\n",
                 model.string().c_str(), tl::hf_architecture(c).c_str(), double(m->parameter_count()) / 1e6,
                 int(c.n_layers), int(c.max_seq_len), int(c.vocab_size), seconds,
                 adapter.empty() ? "" : "; adapter: ", adapter.empty() ? "" : m->adapter().summary().c_str());
    if (copy_bytes > 0)
        std::fprintf(stderr,
                     "decoding reads %s copies of the weights (%.1f MiB more memory; prompts over 8 tokens read f32)\n",
                     tl::to_string(format), double(copy_bytes) / (1 << 20));
    if (flags.kv_cache != "f32") std::fprintf(stderr, "KV caches keep keys and values in %s\n", flags.kv_cache.c_str());
    return m;
}

void export_gguf(const fs::path& model, const fs::path& adapter, const std::string& type, const std::string& name,
                 const fs::path& out) {
    tl::check(fs::is_directory(model),
              [&] { return "--model: export-gguf writes a model folder as GGUF; " + model.string() + " is a file"; });
    const tl::gguf_options options{.type = tl::parse_gguf_type(type), .name = name};
    const tl::hf_folder folder = tl::read_hf_folder(model);
    tl::with_pretrained(
        model,
        [&](auto& m) {
            if (!adapter.empty())
                std::fprintf(stderr, "adapter %s: %s\n", adapter.c_str(),
                             tl::merge_adapter(m, adapter).summary().c_str());
            tl::write_gguf(m, folder, options, out);
            return 0;
        },
        tl::weights_to_load_for_inference);
}

} // namespace tinylm_cli
