"""peft loads an adapter tinylm wrote and reproduces tinylm's logits.

Usage: check_peft_adapter.py DIR   (written by test_lora --run_test=lora/export_for_peft with
       TINYLM_PEFT_EXPORT_DIR=DIR): DIR/base (save_pretrained), DIR/adapter (save_adapter),
       DIR/expected.safetensors (input_ids, logits computed by tinylm in f32 with the adapter).
Then peft saves the loaded adapter again into DIR/peft_saved (peft's own writer), which
test_lora --run_test=lora/load_adapter_saved_by_peft reads back.
"""
import sys
from pathlib import Path

import peft
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

TOLERANCE = 1e-4  # max |peft - tinylm| / max |tinylm|


def main(root: Path) -> int:
    base = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32, attn_implementation="eager")
    model = peft.PeftModel.from_pretrained(base, root / "adapter")
    model.eval()
    cfg = model.peft_config["default"]
    expected = load_file(root / "expected.safetensors")
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"]).logits
    err = ((logits - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
    n_lora = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
    with torch.no_grad(), model.disable_adapter():
        base_logits = model(input_ids=expected["input_ids"]).logits
    effect = ((base_logits - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
    ok = err <= TOLERANCE and effect > 100 * TOLERANCE
    print(f"peft {peft.__version__}: PeftModel.from_pretrained loaded r={cfg.r} alpha={cfg.lora_alpha} "
          f"targets={sorted(cfg.target_modules)} ({n_lora} LoRA tensors); logits relative error {err:.2e} "
          f"(adapter disabled: {effect:.2e}) {'OK' if ok else 'FAIL'}")
    model.save_pretrained(root / "peft_saved")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
