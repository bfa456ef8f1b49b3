// tinylm: talk to a model (generate, chat, serve over an OpenAI-compatible HTTP API), evaluate it, describe it.
//
//   tinylm generate --model runs/russian_novels/checkpoint --prompt "Жили-были" --max-tokens 40
//   tinylm chat --model DIR [--adapter DIR] [--system TEXT]
//   tinylm serve --model DIR [--adapter DIR] --port 8080
//   tinylm eval bpb --model DIR --text held_out.txt
//   tinylm eval generations --model DIR --corpus train.txt --temperatures 0.7,1.0,1.3
//   tinylm synth --model DIR --topics topics.txt --per-topic 8 --out synth.jsonl
//   tinylm info DIR
//   tinylm export-gguf --model DIR [--adapter DIR] --type q8_0 --out model.gguf
//
// Any Llama, Mistral, Qwen2, Qwen3 or Mixtral folder in the Hugging Face layout loads, whatever its sizes; a PEFT LoRA
// adapter is merged at load. `tinylm <command> --help` lists every option with its default. docs/tinylm.md.
#include "common.hpp"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    CLI::App app{
        "tinylm: generate, chat, serve (OpenAI-compatible), evaluate, inspect and synthesise with language models"};
    app.option_defaults()->always_capture_default();
    recipes::one_line_errors(app);
    app.require_subcommand(1);
    app.set_version_flag("--version", "tinylm 0.1.0");
    tinylm_cli::command chosen;
    tinylm_cli::add_generate(app, chosen);
    tinylm_cli::add_chat(app, chosen);
    tinylm_cli::add_serve(app, chosen);
    tinylm_cli::add_eval(app, chosen);
    tinylm_cli::add_info(app, chosen);
    tinylm_cli::add_export_gguf(app, chosen);
    tinylm_cli::add_synth(app, chosen);
    CLI11_PARSE(app, argc, argv);
    try {
        return chosen ? chosen() : 0;
    } catch (const std::exception& e) {
        return recipes::report_error(e); // one line "error: ..."
    }
}
