"""transformers reproduces tinylm's logits on a packed row when given the same documents.

Usage: check_packed_logits.py DIR   (DIR holds one folder per model, written by
       test_sft --run_test=sft_packing/export_for_transformers with TINYLM_SFT_EXPORT_DIR=DIR)
Each folder: a checkpoint (save_pretrained) and packed.safetensors with input_ids, doc_start, position_ids and
tinylm's logits (1, T, V). The model runs with position_ids (restarting at each document) and a block-diagonal
causal 4D mask: key j is visible from query i iff doc_start[i] <= j <= i (and, with a sliding window W, i - j < W).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

TOLERANCE = 1e-4  # max |hf - tinylm| / max |tinylm|


def packed_mask(doc_start: torch.Tensor, window, dtype) -> torch.Tensor:
    t = doc_start.shape[-1]
    i = torch.arange(t).view(t, 1)
    j = torch.arange(t).view(1, t)
    visible = (j <= i) & (j >= doc_start.view(t, 1))
    if window:
        visible &= (i - j) < window
    mask = torch.full((t, t), torch.finfo(dtype).min, dtype=dtype)
    mask[visible] = 0
    return mask.view(1, 1, t, t)


def main(root: Path) -> int:
    folders = sorted(p for p in root.iterdir() if (p / "packed.safetensors").exists())
    if not folders:
        print(f"no exports under {root}")
        return 1
    failed = 0
    for folder in folders:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        x = load_file(folder / "packed.safetensors")
        window = getattr(model.config, "sliding_window", None) if getattr(model.config, "use_sliding_window", True) else None
        mask = packed_mask(x["doc_start"][0], window, torch.float32)
        with torch.no_grad():
            packed = model(input_ids=x["input_ids"], position_ids=x["position_ids"], attention_mask=mask).logits
            plain = model(input_ids=x["input_ids"]).logits  # one document per row: must differ
        err = ((packed - x["logits"]).abs().max() / x["logits"].abs().max()).item()
        mixed = ((plain - x["logits"]).abs().max() / x["logits"].abs().max()).item()
        ok = err <= TOLERANCE and mixed > 100 * TOLERANCE
        failed += not ok
        print(f"{folder.name}: {type(model).__name__}, packed row of {x['input_ids'].shape[1]} tokens, "
              f"logits relative error {err:.2e} (without the document mask: {mixed:.2e}) {'OK' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
