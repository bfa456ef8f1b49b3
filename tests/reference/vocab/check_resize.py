"""transformers' resize_token_embeddings(mean_resizing=True) against tinylm's resize_vocabulary (hf_mean).

Usage: check_resize.py DIR   (DIR/<model>/{original,resized,expected.safetensors}, written by
       test_vocab --run_test=resize_vocabulary/export_for_transformers_resize with TINYLM_RESIZE_EXPORT_DIR=DIR)

For each model: transformers loads tinylm's original checkpoint and resizes it; tinylm's resized checkpoint must
have the old rows bit-identical to it; without the noise (resized_mean) the new rows within 1e-6 of transformers'
mean of the old rows; with it, the mean of the new rows within 1e-6 of that mean, each element within 6 noise
standard deviations, and the noise variance (covariance 1e-9 Σ) that of transformers' own new rows within a factor
of 3; and the same logits on old tokens as transformers' resized model (and as tinylm computed).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

TOLERANCE = 1e-4  # max |hf - tinylm| / max |tinylm| for logits


def load(path):
    m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def main(root: Path) -> int:
    failed = 0
    for folder in sorted(p for p in root.iterdir() if (p / "original").exists()):
        torch.manual_seed(0)
        original = load(folder / "original")
        n_old = original.get_input_embeddings().weight.shape[0]
        hf = load(folder / "original")
        hf.resize_token_embeddings(310, mean_resizing=True)
        tl = load(folder / "resized")
        tl_mean = load(folder / "resized_mean")
        problems = []
        tied = tl.config.tie_word_embeddings
        if tied != hf.config.tie_word_embeddings:
            problems.append("tie_word_embeddings differs")
        pairs = [("embed_tokens", original.get_input_embeddings().weight, hf.get_input_embeddings().weight,
                  tl.get_input_embeddings().weight, tl_mean.get_input_embeddings().weight)]
        if not tied:
            pairs.append(("lm_head", original.get_output_embeddings().weight, hf.get_output_embeddings().weight,
                          tl.get_output_embeddings().weight, tl_mean.get_output_embeddings().weight))
        for name, old, h, t, t_mean in pairs:
            if t.shape != h.shape:
                problems.append(f"{name}: shape {tuple(t.shape)} != transformers' {tuple(h.shape)}")
                continue
            if not torch.equal(t[:n_old], old) or not torch.equal(h[:n_old], old):
                problems.append(f"{name}: old rows differ")
            if not torch.equal(t_mean[:n_old], old):
                problems.append(f"{name}: old rows differ (resized_mean)")
            mean = old.to(torch.float32).mean(0)  # as transformers computes it
            dev_mean = (t_mean[n_old:] - mean).abs().max().item()
            if dev_mean > 1e-6:
                problems.append(f"{name}: noiseless new rows {dev_mean:.2e} from transformers' mean")
            dev_avg = (t[n_old:].mean(0) - mean).abs().max().item()
            if dev_avg > 1e-6:
                problems.append(f"{name}: the mean of the new rows is {dev_avg:.2e} from transformers' mean")
            var_tl = (t[n_old:] - mean).pow(2).mean().item()
            var_hf = (h[n_old:] - mean).pow(2).mean().item()
            dev_tl = (t[n_old:] - mean).abs().max().item()
            if dev_tl > 6 * var_hf ** 0.5:
                problems.append(f"{name}: a new element {dev_tl:.2e} from the mean (noise std {var_hf ** 0.5:.1e})")
            if not (var_hf / 3 < var_tl < var_hf * 3):
                problems.append(f"{name}: noise variance {var_tl:.2e} against transformers' {var_hf:.2e}")
            print(f"{folder.name}/{name}: old rows identical; noiseless new rows max |x - mean| {dev_mean:.1e}; with "
                  f"noise: mean of new rows {dev_avg:.1e} from the mean, max element {dev_tl:.1e}, noise variance "
                  f"tinylm {var_tl:.2e} transformers {var_hf:.2e}")
        expected = load_file(folder / "expected.safetensors")
        with torch.no_grad():
            for who, model in (("transformers-resized", hf), ("tinylm-resized in transformers", tl)):
                logits = model(input_ids=expected["input_ids"]).logits
                err = ((logits - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
                print(f"{folder.name}: logits of {who} against tinylm's: relative error {err:.2e}")
                if err > TOLERANCE:
                    problems.append(f"logits of {who}: {err:.2e}")
        print(f"{folder.name}: {'OK' if not problems else 'FAIL ' + '; '.join(problems)}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
