#!/usr/bin/env python3
"""The PyTorch peer of bench_train (issue 6, docs/performance.md): the same Llama architecture, shapes, threads and
step (zero_grad, forward, cross-entropy, backward, AdamW) on random tokens, plus torch.matmul's GEMM ceiling at the
model's shapes, measured in the same process. Prints one JSON line like bench_train's.

The model is transformers' LlamaForCausalLM, built from the same fields tinylm writes to config.json (the learning
check's model-building path: `--check DIR` loads DIR/init, written by `bench_train --save-init DIR`, with
AutoModelForCausalLM exactly as benchmarks/learning_check/pytorch_reference.py does, and checks that the first loss
on the same batch equals tinylm's).

What is tuned (and printed in the JSON under "settings"):
  OMP_NUM_THREADS / MKL_NUM_THREADS = --threads (set before torch is imported), torch.set_num_threads(--threads),
  torch.set_num_interop_threads(1); float32 matmul precision "highest" (no TF32/bf16 shortcuts: fp32 like tinylm);
  attention "sdpa" (PyTorch's fused CPU flash attention; "eager" selectable); AdamW fused=True (one kernel for
  all parameters; foreach selectable); zero_grad(set_to_none=True); optionally torch.compile (inductor, CPU) of the
  model's forward (--compile); the optimizer stays eager.

On a GPU (--device cuda, issue 20, docs/gpu.md): the model on the GPU with f32 weights, forward and loss under
torch.autocast('cuda', bfloat16) (bf16 products with f32 accumulation, as bench_train --device cuda), attention
"sdpa" (transformers calls F.scaled_dot_product_attention with is_causal: FlashAttention on Hopper), fused AdamW,
clipping to norm 1 (bench_train's GPU step clips too), torch.compile with --compile; every step is timed between
two torch.cuda.synchronize(); batch 64 by default; MFU against the GPU's dense bf16 peak (by its name, or
--peak-tflops). No GEMM ceiling there.

LoRA (--lora R, issue 20's "the same for LoRA on a Qwen2.5-0.5B-shaped model", with --config qwen0.5b: transformers'
Qwen2ForCausalLM with tl::presets::qwen2_5_0_5b's fields, q/k/v biases, tied head): peft's LoraConfig(r=R,
lora_alpha=2R, lora_dropout=0, the seven projections, bias "none", init_lora_weights=False so that B is random, as
bench_train's adapter), only the adapter in AdamW and in the clipping. "flops_per_token" is full training's count
(6N + attention); "step_flops_per_token" what a LoRA step computes (no weight gradients of the frozen base: 4 per
base matrix weight + 6 per adapter parameter + attention, bench_train's formula, device_step.hpp) and the MFU is
from it.

Usage: pytorch_peer.py --config b --steps 3 --warmup 1 [--compile]
       pytorch_peer.py --device cuda --config 150m --steps 10 --warmup 3 --compile
       pytorch_peer.py --device cuda --config qwen0.5b --lora 16 --batch 16 --seq-len 512 --compile
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["a", "b", "150m", "qwen0.5b"], default="a")
    ap.add_argument("--batch", type=int, default=0,
                    help="default: a 16, b 8, 150m 4, qwen0.5b 1 (as bench_train); cuda: 64, qwen0.5b 16")
    ap.add_argument("--seq-len", type=int, default=0,
                    help="tokens per sequence (default: the config's max_position_embeddings, at most 512)")
    ap.add_argument("--lora", type=int, default=0, metavar="R",
                    help="peft LoRA of rank R on the seven projections (alpha 2R, dropout 0); the base frozen")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["f32", "bf16"],
                    help="cuda: bf16 autocast (the default) or f32 throughout; on the CPU see --autocast-bf16")
    ap.add_argument("--clip", type=float, help="clip the gradient norm to this before AdamW (default: cuda 1.0, "
                                               "cpu none, as bench_train's steps)")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="cuda: the dense bf16 peak for the MFU (default: by the GPU's name)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (with --compile: at least 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    ap.add_argument("--checkpointing", action="store_true",
                    help="transformers' gradient_checkpointing_enable (per decoder layer, use_reentrant=False)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    ap.add_argument("--optimizer", choices=["fused", "foreach"], default="fused")
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--autocast-bf16", action="store_true",
                    help="forward and loss under torch.autocast('cpu', bfloat16), fp32 weights (docs/precision.md)")
    ap.add_argument("--check", metavar="DIR", help="load DIR/init and DIR/batch.safetensors; compare the first loss")
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args()


args = None
if __name__ == "__main__":  # imported by generation_peer.py for CONFIGS and llama_config
    args = parse()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

import torch  # noqa: E402  (after the thread variables)
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

CONFIGS = {  # bench_configs.hpp and tl::presets::russian_novels_150m
    "a": dict(vocab_size=3000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=768, max_position_embeddings=256, batch=16),
    "b": dict(vocab_size=8000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
              intermediate_size=1536, max_position_embeddings=512, batch=8),
    "150m": dict(vocab_size=3000, hidden_size=1024, num_hidden_layers=16, num_attention_heads=16,
                 num_key_value_heads=8, intermediate_size=1536, max_position_embeddings=512, batch=4),
    # tl::presets::qwen2_5_0_5b (Qwen2: q/k/v biases, tied embeddings); bench_train's device path only
    "qwen0.5b": dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=32768, batch=1,
                     family="qwen2"),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def flops_per_token(c, T):
    """tl::flops_per_token (model/config.hpp): 6 x matmul weights + 12 x layers x q_width x average keys."""
    d, ff, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    q = d
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    weights = L * (d * q + 2 * d * kv + q * d + 3 * d * ff) + V * d
    return 6 * weights + 6 * 2 * L * q * (T + 1) / 2


def step_flops_per_token(c, T, adapter_parameters):
    """bench_train's step_flops_per_token (device_step.hpp): full training's count without LoRA; with it, the frozen
    base's weight gradients left out (- 2 per matrix weight) and 6 per adapter parameter (x A^T, u B^T forward; dy B,
    dB, dA, dx += t A backward)."""
    if not adapter_parameters:
        return flops_per_token(c, T)
    d, ff, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    weights = L * (d * d + 2 * d * kv + d * d + 3 * d * ff) + V * d
    return flops_per_token(c, T) - 2 * weights + 6 * adapter_parameters


def dense_bf16_peak_tflops(name):
    """bench_train's table (device_step.hpp): dense bf16 tensor-core peak by the GPU's name; 0 when unknown."""
    for key, tflops in (("H200", 989.4), ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H100", 989.4),
                        ("A100", 312.0)):
        if key in name:
            return tflops
    return 0.0


def qwen2_config(c, attn):
    """transformers' Qwen2 with tl::presets::qwen2_5_0_5b's fields (Qwen2 always has q/k/v biases)."""
    from transformers import Qwen2Config
    fields = {k: v for k, v in c.items() if k not in ("batch", "family")}
    cfg = Qwen2Config(**fields, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                      use_sliding_window=False, hidden_act="silu")
    cfg._attn_implementation = attn
    return cfg


def build_model(c, attn):
    if c.get("family") == "qwen2":
        from transformers import Qwen2ForCausalLM
        return Qwen2ForCausalLM(qwen2_config(c, attn))
    return LlamaForCausalLM(llama_config(c, attn))


def llama_config(c, attn):
    fields = {k: v for k, v in c.items() if k != "batch"}
    cfg = LlamaConfig(**fields, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      attention_bias=False, mlp_bias=False, hidden_act="silu")
    cfg._attn_implementation = attn
    return cfg


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def gemm_ceiling(c, rows, reps=3):
    """As gemm_ceiling.hpp: forward, input-gradient and weight-gradient products of every projection, weighted by
    how often a step runs them, and one 2048^3 product; median of reps after one untimed run."""
    d, ff, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    projs = [(d, d, L), (kv, d, 2 * L), (d, d, L), (ff, d, 2 * L), (d, ff, L), (V, d, 1)]

    def timed(fn):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        return ts[len(ts) // 2]

    flops = seconds = 0.0
    with torch.no_grad():
        for out, inp, count in projs:
            x = torch.rand(rows, inp) - 0.5
            dy = torch.rand(rows, out) - 0.5
            w = torch.rand(out, inp) - 0.5
            dw = torch.zeros(out, inp)
            y = torch.empty(rows, out)
            dx = torch.empty(rows, inp)
            t = timed(lambda: torch.matmul(x, w.t(), out=y)) + timed(lambda: torch.matmul(dy, w, out=dx)) + \
                timed(lambda: dw.addmm_(dy.t(), x))
            seconds += count * t
            flops += count * 3 * 2.0 * rows * out * inp
        s = 2048
        a, b = torch.rand(s, s), torch.rand(s, s)
        cm = torch.empty(s, s)
        square = 2.0 * s ** 3 / timed(lambda: torch.matmul(a, b, out=cm)) * 1e-9
    return flops / seconds * 1e-9, square, seconds


def random_batch(B, T, V, step, seed):
    g = torch.Generator().manual_seed(seed * 100003 + step)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def mean_ce(model, ids, targets):
    logits = model(input_ids=ids).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def check(directory):
    from pathlib import Path
    from safetensors.torch import load_file
    d = Path(directory)
    model = AutoModelForCausalLM.from_pretrained(d / "init", dtype=torch.float32, attn_implementation=args.attn)
    ours = llama_config(CONFIGS[args.config], args.attn)
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(model.config, field) == getattr(ours, field), f"{field}: {getattr(model.config, field)} vs " \
                                                                      f"{getattr(ours, field)}"
    batch = load_file(d / "batch.safetensors")
    with torch.no_grad():
        loss = float(mean_ce(model, batch["ids"].long(), batch["targets"].long()))
    ref = json.loads((d / "tinylm_loss.json").read_text())["loss"]
    rel = abs(loss - ref) / abs(ref)
    ok = rel < 1e-4
    print(f"check: config {args.config}, {sum(p.numel() for p in model.parameters())} parameters; first loss tinylm "
          f"{ref:.6f}, pytorch {loss:.6f}, relative difference {rel:.1e}: {'SAME MODEL' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


def main():
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_float32_matmul_precision("highest")
    hf_logging.disable_progress_bar()
    if args.check:
        return check(args.check)
    c = CONFIGS[args.config]
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("pytorch_peer.py: --device cuda, but torch sees no CUDA device")
    B = args.batch or ((16 if args.config == "qwen0.5b" else 64) if cuda else c["batch"])
    T, V = args.seq_len or min(c["max_position_embeddings"], 512), c["vocab_size"]
    if T > c["max_position_embeddings"]:
        raise SystemExit(f"pytorch_peer.py: --seq-len {T} is longer than the config's {c['max_position_embeddings']}")
    autocast = (args.precision != "f32") if cuda else args.autocast_bf16
    clip = args.clip if args.clip is not None else (1.0 if cuda else 0.0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(args.seed)
    model = build_model(c, args.attn).float().to(device)
    model.train()
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=args.lora, lora_alpha=2 * args.lora, lora_dropout=0.0,
                                                 target_modules=LORA_TARGETS, bias="none",
                                                 init_lora_weights=False))
    trained = [p for p in model.parameters() if p.requires_grad]
    adapter_parameters = sum(p.numel() for p in trained) if args.lora else 0
    opt = torch.optim.AdamW(trained, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            **({"fused": True} if args.optimizer == "fused" else {"foreach": True}))
    forward = torch.compile(model) if args.compile else model

    steps, losses, compile_seconds = [], [], None
    for step in range(args.warmup + args.steps):
        ids, targets = (x.to(device) for x in random_batch(B, T, V, step, args.seed))
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=autocast):
            loss = mean_ce(forward, ids, targets)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(trained, clip, foreach=True)
        opt.step()
        sync()
        t = time.perf_counter() - t0
        if step == 0 and args.compile:
            compile_seconds = t
        losses.append(float(loss.detach()))
        if step >= args.warmup:
            steps.append(t)
        print(f"pytorch{' compiled' if args.compile else ''} {args.config} step {step}: loss {losses[-1]:.5f}, "
              f"{t:.3f} s", file=sys.stderr)
    rss = peak_rss_mib()
    shapes, square, shape_seconds = (0.0, 0.0, 0.0) if args.no_ceiling or cuda else gemm_ceiling(c, B * T)
    fpt, step_fpt = flops_per_token(c, T), step_flops_per_token(c, T, adapter_parameters)
    tokens_per_second = B * T / statistics.median(steps) if steps else 0.0
    name = torch.cuda.get_device_name() if cuda else (platform.processor() or "cpu")
    peak = args.peak_tflops or (dense_bf16_peak_tflops(name) if cuda else 0.0)
    print(json.dumps({
        "impl": "pytorch", "variant": "compiled" if args.compile else "eager", "config": args.config, "batch": B,
        "device": args.device, "device_name": name, "precision": "bf16" if autocast else "f32",
        "tokens_per_second": tokens_per_second, "peak_tflops": peak,
        "mfu": step_fpt * tokens_per_second / (peak * 1e12) if peak else None,
        "lora_rank": args.lora, "lora_alpha": 2 * args.lora, "qlora": False,
        "adapter_parameters": adapter_parameters, "attention": args.attn,
        "cuda_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "checkpointing": args.checkpointing,
        "seq_len": T, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()) - adapter_parameters,
        "flops_per_token": fpt, "step_flops_per_token": step_fpt, "mfu_flops": "step_flops_per_token",
        "tokens_per_step": B * T, "step_seconds": steps, "losses": losses,
        "peak_rss_mib": rss, "gemm_model_shapes_gflops": shapes, "gemm_square_gflops": square,
        "gemm_model_shapes_seconds": shape_seconds, "compile_first_step_seconds": compile_seconds,
        "settings": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "interop_threads": torch.get_num_interop_threads(), "attn": args.attn,
                     "optimizer": args.optimizer, "compile": args.compile, "autocast_bf16": autocast,
                     "clip_grad_norm": clip, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version() if cuda else None,
                     "checkpointing": args.checkpointing,
                     "matmul_precision": torch.get_float32_matmul_precision(),
                     "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
                     "mkl": torch.backends.mkl.is_available(),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                     "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
                     "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                     "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
