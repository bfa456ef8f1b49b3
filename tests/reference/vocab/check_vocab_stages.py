"""transformers and peft load the staged checkpoints of a grown vocabulary that tinylm wrote.

Usage: check_vocab_stages.py DIR   (DIR/<model>/..., written by
       test_vocab --run_test=vocab_lora/export_for_hf_vocab_stages with TINYLM_VOCAB_STAGES_DIR=DIR)

For each model (a Llama-like untied and a Qwen2-like tied one, grown by three words):
  stage0 (resized), stage1, stage2, stage3_full: AutoTokenizer gives tinylm's ids for probe.txt (a text holding the
      new words, so they must come out as the new ids) and AutoModelForCausalLM has the grown vocabulary and gives
      tinylm's logits within 1e-4 (max |hf - tinylm| / max |tinylm|);
  stage3_lora_modules (modules_to_save), stage3_lora_tokens (trainable_token_indices): peft.PeftModel.from_pretrained
      on the stage-2 checkpoint (the resized base) gives tinylm's logits within 1e-4, and the same model with the
      adapter disabled does not (the adapter, embeddings included, must matter); peft then saves it again
      (<stage>_peft_saved), for test_vocab --run_test=vocab_lora/load_vocab_adapters_saved_by_peft.
  tokenizer.json of stage0 holds the same JSON value as transformers' PreTrainedTokenizerFast on the original
      tokenizer + add_tokens(the same words) + save_pretrained, but for the post_processor transformers 5 adds
      (a TemplateProcessing that adds nothing); the bytes differ in layout (tinylm indents by one space).
"""
import json
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

TOLERANCE = 1e-4
ORIGINAL_TOKENIZER = Path(__file__).resolve().parents[1] / "tokenizer" / "trained_byte_level.json"


def tokenizer_json_problems(stage0: Path) -> list:
    """transformers adds the words tinylm added to the original tokenizer; the saved JSON values must agree."""
    ours = json.loads((stage0 / "tokenizer.json").read_text(encoding="utf-8"))
    original = json.loads(ORIGINAL_TOKENIZER.read_text(encoding="utf-8"))
    n_old = len(original["added_tokens"])
    words = [t["content"] for t in ours["added_tokens"][n_old:]]
    hf = PreTrainedTokenizerFast(tokenizer_file=str(ORIGINAL_TOKENIZER))
    hf.add_tokens(words)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        theirs = json.loads((Path(d) / "tokenizer.json").read_text(encoding="utf-8"))
    problems = [f"tokenizer.json: {k} differs from transformers'" for k in theirs
                if k != "post_processor" and theirs[k] != ours.get(k)]
    if set(theirs) != set(ours):
        problems.append(f"tokenizer.json keys {sorted(ours)} != transformers' {sorted(theirs)}")
    return problems


def load(path):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def rel_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def main(root: Path) -> int:
    failed = 0
    for folder in sorted(p for p in root.iterdir() if (p / "stage0").exists()):
        probe = (folder / "probe.txt").read_text(encoding="utf-8")
        for stage in ["stage0", "stage1", "stage2", "stage3_full"]:
            d = folder / stage
            expected = load_file(str(d / "expected.safetensors"))
            ids = expected["input_ids"]
            tok = AutoTokenizer.from_pretrained(d)
            hf_ids = tok(probe, add_special_tokens=False)["input_ids"]
            model = load(d)
            vocab = model.get_input_embeddings().weight.shape[0]
            err = rel_error(logits_of(model, ids), expected["logits"])
            problems = []
            if hf_ids != ids[0].tolist():
                problems.append(f"ids {hf_ids} != tinylm's {ids[0].tolist()}")
            if len(tok) != vocab or vocab != expected["logits"].shape[-1]:
                problems.append(f"tokenizer {len(tok)} tokens, model {vocab} rows")
            if err > TOLERANCE:
                problems.append(f"logits relative error {err:.2e}")
            if stage == "stage0":
                problems += tokenizer_json_problems(d)
            status = "OK" if not problems else "FAIL: " + "; ".join(problems)
            print(f"{folder.name}/{stage}: {vocab} tokens, new ids {sorted(set(hf_ids) & set(range(vocab - 3, vocab)))}, "
                  f"logits relative error {err:.2e} {status}")
            failed += bool(problems)
        for stage in ["stage3_lora_modules", "stage3_lora_tokens"]:
            d = folder / stage
            expected = load_file(str(d / "expected.safetensors"))
            ids = expected["input_ids"]
            base = load(folder / "stage2")
            model = PeftModel.from_pretrained(base, d)
            model.eval()
            err = rel_error(logits_of(model, ids), expected["logits"])
            with model.disable_adapter():
                err_off = rel_error(logits_of(model, ids), expected["logits"])
            cfg = model.peft_config["default"]
            form = (f"modules_to_save={cfg.modules_to_save}" if cfg.modules_to_save else
                    f"trainable_token_indices={cfg.trainable_token_indices}")
            ok = err <= TOLERANCE and err_off > 100 * TOLERANCE
            model.save_pretrained(folder / (stage + "_peft_saved"))
            print(f"{folder.name}/{stage}: peft loaded r={cfg.r} {form}; logits relative error {err:.2e} "
                  f"(adapter disabled: {err_off:.2e}) {'OK' if ok else 'FAIL'}")
            failed += not ok
    if not any(root.iterdir()):
        print(f"nothing under {root}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
