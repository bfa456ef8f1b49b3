"""transformers loads the checkpoints tinylm wrote and reproduces tinylm's logits.

Usage: check_hf_checkpoint.py DIR   (DIR holds one folder per model, written by
       test_trainer --run_test=trainer_loop/export_for_transformers with TINYLM_HF_EXPORT_DIR=DIR)
Each folder: config.json, generation_config.json, model.safetensors (save_pretrained), and
expected.safetensors (input_ids, logits computed by tinylm in f32) and/or tokenizer.json (a recipe
checkpoint: AutoTokenizer must load it, round-trip text, and generate with the model).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

TOLERANCE = 1e-4  # max |hf - tinylm| / max |tinylm|


def main(root: Path) -> int:
    folders = sorted(p for p in root.iterdir() if (p / "config.json").exists())
    if not folders:
        print(f"no checkpoints under {root}")
        return 1
    failed = 0
    for folder in folders:
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager")
        model.eval()
        if (folder / "expected.safetensors").exists():
            expected = load_file(folder / "expected.safetensors")
            with torch.no_grad():
                logits = model(input_ids=expected["input_ids"]).logits
            err = ((logits - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
            ok = err <= TOLERANCE
            failed += not ok
            print(f"{folder.name}: {type(model).__name__} loaded, logits relative error {err:.2e} "
                  f"{'OK' if ok else 'FAIL'}")
        if (folder / "tokenizer.json").exists():
            # A recipe checkpoint: AutoTokenizer loads tinylm's tokenizer.json and the pair generates text.
            tok = AutoTokenizer.from_pretrained(folder)
            text = "Сила войска зависит от его духа"
            ids = tok(text)["input_ids"]
            bos = model.config.bos_token_id
            out = model.generate(torch.tensor([[bos] + ids]), max_new_tokens=8, do_sample=False)
            ok = tok.decode(ids) == text and len(tok) == model.config.vocab_size and out.shape[1] > len(ids) + 1
            failed += not ok
            print(f"{folder.name}: AutoTokenizer ({type(tok).__name__}, {len(tok)} tokens) round-trips, "
                  f"generated {tok.decode(out[0][len(ids) + 1:])!r} {'OK' if ok else 'FAIL'}")
        if (folder / "tokenizer_config.json").exists():
            # The checkpoint's metadata (issue 17): special tokens known to AutoTokenizer, sampling defaults that
            # generate() uses without arguments, a model card.
            tok = AutoTokenizer.from_pretrained(folder)
            gen = model.generation_config
            checks = {
                "bos": tok.bos_token == "<bos>" and tok.bos_token_id == model.config.bos_token_id,
                "eos": tok.eos_token == "<eos>" and tok.eos_token_id == gen.eos_token_id,
                "max_length": tok.model_max_length == model.config.max_position_embeddings,
                "sampling defaults": gen.do_sample and gen.temperature == 0.8 and gen.top_k == 50
                and gen.top_p == 0.95 and gen.repetition_penalty == 1.1,
                "model card": "validation loss" in (folder / "README.md").read_text(encoding="utf-8"),
            }
            ids = tok("Сила войска зависит от его духа", return_tensors="pt")
            samples = []
            for seed in (1, 1, 2):
                torch.manual_seed(seed)
                samples.append(model.generate(**ids, max_new_tokens=12)[0].tolist())  # the saved defaults
            checks["generate() samples"] = samples[0] == samples[1] and samples[0] != samples[2]
            ok = all(checks.values())
            failed += not ok
            print(f"{folder.name}: tokenizer_config, generation_config, README: "
                  + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in checks.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
