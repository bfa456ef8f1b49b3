// tinylm eval: what 06_evaluate does (bits per byte, multiple choice with lm-eval's rules, paraphrase QA), for any
// checkpoint with an adapter merged in. The subcommands and their options are examples/common/evaluate_commands.hpp.
#include "common.hpp"
#include "evaluate_commands.hpp"

#include <tinylm/io/gguf_folder.hpp>
#include <tinylm/io/hf_any.hpp>
#include <tinylm/tokenizer/hf_json.hpp>

namespace tinylm_cli {

void add_eval(CLI::App& app, command& chosen) {
    struct eval_flags {
        recipes::evaluate::settings s;
        fs::path adapter;
    };
    auto f = std::make_shared<eval_flags>();
#ifdef TINYLM_SOURCE_DIR
    f->s.qa_set_path = fs::path(TINYLM_SOURCE_DIR) / "benchmarks/tatar_qa/facts.jsonl";
#endif
    CLI::App* sub = app.add_subcommand(
        "eval", "evaluate a model: bpb, mc (multiple choice), qa (paraphrase QA), generations (repetition)");
    sub->require_subcommand(1);
    recipes::evaluate::add_commands(*sub, f->s, [f](CLI::App* cmd) {
        cmd->add_option("--model", f->s.model.checkpoint,
                        "model folder, or a GGUF file (llama, qwen2 or qwen3: its tokenizer from the file, its weights "
                        "dequantised to f32; what a llama.cpp quantisation costs in bits per byte)")
            ->required()
            ->check(existing_model_path());
        cmd->add_option("--adapter", f->adapter, "PEFT LoRA adapter, merged at load")->check(CLI::ExistingDirectory);
        cmd->add_option("--tokenizer", f->s.model.tokenizer, "tokenizer.json (empty: the model's)");
        cmd->add_option("--seed", f->s.model.seed, "initialisation seed of the untrained floor (qa --floors)");
    });
    add_eval_generations(*sub, chosen); // its own callback sets `chosen`
    sub->callback([f, sub, &chosen] {
        f->s.command = sub->get_subcommands().front()->get_name();
        if (f->s.command == "generations") return;
        chosen = [f] {
            const recipes::evaluate::settings& s = f->s;
            std::optional<tl::gguf::reader> file;
            if (fs::is_regular_file(s.model.checkpoint)) file.emplace(s.model.checkpoint);
            const tl::tokenizer tok = !s.model.tokenizer.empty() ? tl::load_tokenizer_json(s.model.tokenizer.string())
                                      : file
                                          ? tl::gguf_tokenizer(*file)
                                          : tl::load_tokenizer_json((s.model.checkpoint / "tokenizer.json").string());
            auto evaluate = [&](auto& model) {
                std::string name = s.model.checkpoint.string();
                if (!f->adapter.empty()) {
                    std::fprintf(s.json ? stderr : stdout, "adapter %s: %s\n", f->adapter.c_str(),
                                 tl::merge_adapter(model, f->adapter).summary().c_str());
                    name += " + " + f->adapter.string();
                }
                return recipes::evaluate::run(model, s, tok, name);
            };
            if (file) return tl::with_gguf(*file, evaluate, tl::weights_to_load_for_inference);
            return tl::with_pretrained(s.model.checkpoint, evaluate, tl::weights_to_load_for_inference);
        };
    });
}

} // namespace tinylm_cli
