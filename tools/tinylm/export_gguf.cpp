// tinylm export-gguf: a model folder (and a LoRA adapter merged into it) as one GGUF file that llama.cpp runs
// (include/tinylm/io/gguf.hpp; docs/gguf.md).
#include "common.hpp"

#include <chrono>
#include <cstdio>

namespace tinylm_cli {

void add_export_gguf(CLI::App& app, command& chosen) {
    struct export_flags {
        model_flags model;
        std::string type = "f16", name;
        fs::path out;
    };
    auto f = std::make_shared<export_flags>();
    CLI::App* sub = app.add_subcommand("export-gguf", "write the model as a GGUF file for llama.cpp");
    add_model_options(*sub, f->model);
    sub->add_option("--type", f->type, "tensor type of the matrices")
        ->check(CLI::IsMember({"f32", "f16", "q8_0", "q4_0"}));
    sub->add_option("--name", f->name, "general.name in the file (default: the folder's name)");
    sub->add_option("--out", f->out, "the .gguf file to write")->required();
    sub->callback([f, &chosen] {
        chosen = [f] {
            const auto start = std::chrono::steady_clock::now();
            recipes::prepare_out_dir(f->out.has_parent_path() ? f->out.parent_path() : fs::path("."), "--out");
            export_gguf(f->model.model, f->model.adapter, f->type, f->name, f->out);
            std::fprintf(stderr, "wrote %s (%s, %.1f MB) in %.1f s; run it with llama.cpp: llama-cli -m %s\n",
                         f->out.c_str(), f->type.c_str(), double(fs::file_size(f->out)) / 1e6,
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                         f->out.c_str());
            return 0;
        };
    });
}

} // namespace tinylm_cli
