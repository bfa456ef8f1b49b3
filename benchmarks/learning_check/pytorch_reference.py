#!/usr/bin/env python3
"""The PyTorch half of the equal-budget learning check (issue 5, docs/learning-check.md).

Repeats the run that learning_check (C++) recorded in OUT, with Hugging Face transformers and torch.optim:
  - the initial weights OUT/init, written by tl::save_pretrained, loaded with AutoModelForCausalLM (float32, eager
    attention);
  - the batches OUT/batches.safetensors ("ids", "targets": (steps * grad_accum, batch, seq_len)), in order;
  - torch.optim.AdamW with tinylm's parameter groups (include/tinylm/optim/adamw.hpp: weight decay on weights and,
    unless decay_embeddings is false, the embedding; none on norm weights and biases);
  - tinylm's learning-rate schedule (include/tinylm/optim/schedule.hpp), lr_at(step) with step counted from 0;
  - gradient accumulation as tl::trainer does it: each micro-batch loss is a mean over its targets, and its gradient
    is scaled by 1 / grad_accum; the logged step loss is the mean of the micro-batch losses;
  - torch.nn.utils.clip_grad_norm_ on all parameters;
  - validation on OUT/val.safetensors as trainer::evaluate computes it: the mean cross-entropy over all target tokens
    (targets == -100 not counted), in chunks of batch_size windows.
Prints the per-step train losses and the validation losses of both side by side, the final validation losses, their
ratio, and writes OUT/pytorch.json. Exits 1 when the final validation losses differ by more than --bar (2%).

Usage: /work/venv/bin/python benchmarks/learning_check/pytorch_reference.py runs/lc-tiny
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging


def lr_at(step, t):
    """tl::lr_schedule::lr_at: linear warmup from 0, then cosine/linear/constant decay to min_lr at max_steps."""
    peak, min_lr, warmup, total = t["peak_lr"], t["min_lr"], t["warmup_steps"], t["max_steps"]
    if step < warmup:
        return peak * (step + 1) / warmup
    if t["decay"] == "constant":
        return peak
    span = max(1, total - warmup)
    progress = min(max((step - warmup) / span, 0.0), 1.0)
    factor = 0.5 * (1.0 + math.cos(math.pi * progress)) if t["decay"] == "cosine" else 1.0 - progress
    return min_lr + (peak - min_lr) * factor


def param_kind(name):
    """tinylm's param_kind for a Hugging Face parameter name (model/decoder.hpp, build_entries)."""
    if name.endswith(".bias"):
        return "bias"
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        return "norm"
    if name == "model.embed_tokens.weight":
        return "embedding"
    return "weight"


def parameter_groups(model, adamw):
    decay, no_decay, kinds = [], [], {}
    for name, p in model.named_parameters():
        kind = param_kind(name)
        kinds[kind] = kinds.get(kind, 0) + p.numel()
        decays = kind == "weight" or (kind == "embedding" and adamw["decay_embeddings"])
        (decay if decays else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": adamw["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return groups, kinds, sum(p.numel() for p in decay), sum(p.numel() for p in no_decay)


def mean_ce(model, ids, targets):
    logits = model(input_ids=ids).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=-100)


@torch.no_grad()
def evaluate(model, val_ids, val_targets, batch_size):
    """trainer::evaluate: sum over chunks of (chunk mean * counted targets) / all counted targets."""
    was_training = model.training
    model.eval()
    total, counted = 0.0, 0
    for w0 in range(0, val_ids.shape[0], batch_size):
        ids, targets = val_ids[w0 : w0 + batch_size], val_targets[w0 : w0 + batch_size]
        n = int((targets != -100).sum())
        total += float(mean_ce(model, ids, targets)) * n
        counted += n
    model.train(was_training)
    return total / counted


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the learning_check output directory")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--every", type=int, default=50, help="print the train losses every N steps (default 50)")
    ap.add_argument("--bar", type=float, default=0.02, help="allowed relative difference of the final val loss")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                    help="float32 (the check) or float64 (a control: how far float32 rounding alone moves the run); "
                         "float64 writes OUT/pytorch_float64.json instead of OUT/pytorch.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # nothing here is random; set anyway

    ref = json.loads((args.out / "tinylm.json").read_text())
    t, adamw = ref["trainer"], ref["adamw"]
    B, T, accum, steps = t["batch_size"], t["seq_len"], t["grad_accum"], t["max_steps"]

    model = AutoModelForCausalLM.from_pretrained(args.out / "init", dtype=getattr(torch, args.dtype),
                                                 attn_implementation="eager")
    model.train()
    batches = load_file(args.out / "batches.safetensors")
    val = load_file(args.out / "val.safetensors")
    train_ids, train_targets = batches["ids"].long(), batches["targets"].long()
    val_ids, val_targets = val["ids"].long(), val["targets"].long()
    assert train_ids.shape == (steps * accum, B, T), f"batches.safetensors has {tuple(train_ids.shape)}"

    groups, kinds, n_decay, n_no_decay = parameter_groups(model, adamw)
    opt = torch.optim.AdamW(groups, lr=t["peak_lr"], betas=(adamw["beta1"], adamw["beta2"]), eps=adamw["eps"])
    print(f"pytorch {torch.__version__} ({args.dtype}), {type(model).__name__}, {sum(kinds.values())} parameters "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); decay on {n_decay}, none on {n_no_decay}")
    print(f"{steps} steps of {accum} x ({B}, {T}), lr {t['peak_lr']:g} -> {t['min_lr']:g} (warmup {t['warmup_steps']}, "
          f"{t['decay']}), AdamW betas ({adamw['beta1']}, {adamw['beta2']}) eps {adamw['eps']:g} "
          f"wd {adamw['weight_decay']:g}, clip {t['clip']:g}, {args.threads} threads")

    eval_steps = {e["step"] for e in ref["val"]}
    val_curve = [{"step": 0, "val_loss": evaluate(model, val_ids, val_targets, B)}]
    curve = []
    start = time.time()
    for step in range(steps):  # counted from 0, as the trainer's state_.step before the update
        opt.zero_grad(set_to_none=False)
        loss = 0.0
        for micro in range(accum):
            k = step * accum + micro
            micro_loss = mean_ce(model, train_ids[k], train_targets[k])
            (micro_loss / accum).backward()
            loss += float(micro_loss.detach())
        loss /= accum
        params = [p for g in groups for p in g["params"]]
        if t["clip"] > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, t["clip"]))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        lr = lr_at(step, t)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        curve.append({"step": step + 1, "loss": loss, "lr": lr, "grad_norm": norm})
        if step + 1 in eval_steps:
            val_curve.append({"step": step + 1, "val_loss": evaluate(model, val_ids, val_targets, B)})
    seconds = time.time() - start

    # Side by side.
    tl_steps = {s["step"]: s for s in ref["steps"]}
    lr_err = max(abs(c["lr"] - tl_steps[c["step"]]["lr"]) / tl_steps[c["step"]]["lr"] for c in curve)
    print(f"learning rates: largest relative difference from tinylm's over {steps} steps {lr_err:.1e}")
    print(f"step 1 (same weights, same batch): train loss tinylm {tl_steps[1]['loss']:.6f} pytorch "
          f"{curve[0]['loss']:.6f}; gradient norm tinylm {tl_steps[1]['grad_norm']:.6f} pytorch {curve[0]['grad_norm']:.6f}")
    print(f"\n{'step':>6} {'lr':>10} {'tinylm loss':>12} {'pytorch loss':>13} {'diff %':>8}")
    for c in curve:
        s = c["step"]
        if s == 1 or s % args.every == 0 or s == steps:
            a, b = tl_steps[s]["loss"], c["loss"]
            print(f"{s:>6} {c['lr']:>10.3e} {a:>12.5f} {b:>13.5f} {100 * (a - b) / b:>+8.3f}")
    tl_val = {e["step"]: e["val_loss"] for e in ref["val"]}
    print(f"\n{'step':>6} {'tinylm val':>12} {'pytorch val':>12} {'diff %':>8}")
    for e in val_curve:
        a, b = tl_val[e["step"]], e["val_loss"]
        print(f"{e['step']:>6} {a:>12.5f} {b:>12.5f} {100 * (a - b) / b:>+8.3f}")

    tl_final, pt_final = ref["final_val_loss"], val_curve[-1]["val_loss"]
    ratio = tl_final / pt_final
    ok = abs(ratio - 1) <= args.bar
    print(f"\nfinal validation loss after {steps} steps: tinylm {tl_final:.5f}, pytorch {pt_final:.5f} nats/token; "
          f"ratio {ratio:.5f} ({100 * (ratio - 1):+.3f}%); bar ±{100 * args.bar:g}%: {'PASS' if ok else 'FAIL'}")
    print(f"(pytorch training took {seconds:.0f} s)")
    json_name = "pytorch.json" if args.dtype == "float32" else f"pytorch_{args.dtype}.json"
    (args.out / json_name).write_text(json.dumps({
        "torch": torch.__version__, "dtype": args.dtype, "threads": args.threads, "steps": curve, "val": val_curve,
        "final_val_loss": pt_final, "tinylm_final_val_loss": tl_final, "ratio": ratio, "bar": args.bar, "pass": ok,
        "max_lr_relative_difference": lr_err, "parameter_kinds": kinds}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
