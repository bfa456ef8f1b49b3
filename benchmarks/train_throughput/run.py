#!/usr/bin/env python3
"""Training throughput, tinylm against PyTorch, side by side in one run (issue 6, docs/performance.md).

For each config, runs `repeats` rounds; each round runs bench_train (tinylm), pytorch_peer.py (eager) and, unless left
out, pytorch_peer.py --compile, one after another (interleaved, so that the machine's load hits all alike). Every
process measures its own GEMM ceiling (oneDNN sgemm / torch.matmul at the model's shapes and at 2048^3) and its
peak memory (VmHWM). Prints per config: median tokens/s over rounds (each round: the median step), model FLOPs per
token (6N + attention, tl::flops_per_token), achieved GFLOP/s, MFU against the ceilings, peak memory, and the
tinylm/PyTorch ratio (median of the per-round ratios).

  export OMP_WAIT_POLICY=PASSIVE
  /work/venv/bin/python benchmarks/train_throughput/run.py --build build-speed --configs a b --repeats 3 \
      --out runs/speed/train.json
  /work/venv/bin/python benchmarks/train_throughput/run.py --build build-speed --configs 150m --repeats 1 \
      --steps 1 --batch 1 --variants tinylm eager
  /work/venv/bin/python benchmarks/train_throughput/run.py --build build-speed --check   (same model? config a)

On a GPU (issue 20, docs/gpu.md): bench_train --device cuda and pytorch_peer.py --device cuda (bf16 autocast, SDPA,
torch.compile, fused AdamW) on the same GPU, one after the other; prints both tokens/s and MFUs (against the GPU's
dense bf16 peak) and the ratio of the medians. scripts/gpu-check.sh runs the two as separate stages, each with its
own time limit, and then only the report (--report, over the JSON lines they printed):

  source scripts/gpu-env.sh && gpu_bundle_env .gpu     (the bundle's libraries; docs/gpu.md)
  python3 benchmarks/train_throughput/run.py --device cuda --exe .gpu/bin/bench_train --configs 150m --repeats 1 \
      --steps 10 --warmup 2
  python3 benchmarks/train_throughput/run.py --report bench-cuda.jsonl

LoRA on the Qwen2.5-0.5B shape (issue 20; bench_train's device path and pytorch_peer.py with peft): --lora R passes
to both, --qlora to tinylm only (PyTorch's peer has no NF4 base), --seq-len to both; the report groups runs by
config and adapter ("qwen0.5b lora16") and takes the MFU from step_flops_per_token (what a LoRA step computes: no
weight gradients of the frozen base), printing flops_per_token (6N + attention) beside it:

  python3 benchmarks/train_throughput/run.py --device cuda --exe .gpu/bin/bench_train --configs qwen0.5b \
      --lora 16 --batch 16 --seq-len 512 --repeats 1 --steps 5 --warmup 2
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd, env):
    print("$ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run.py: {cmd[0]} failed with status {p.returncode}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def machine():
    info = {"cpu": "", "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
        info["avx512f"] = "avx512f" in flags
        info["avx512_bf16"] = "avx512_bf16" in flags
        info["avx2"] = "avx2" in flags
    except (OSError, StopIteration):
        pass
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-speed", help="build directory with benchmarks/train_throughput")
    ap.add_argument("--configs", nargs="+", default=["a", "b"], choices=["a", "b", "150m", "qwen0.5b"],
                    help="qwen0.5b: --device cuda only (bench_train's device path)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per process (compiled: +1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="sequences per step (default: the config's, a 16, b 8, 150m 4)")
    ap.add_argument("--variants", nargs="+", default=["tinylm", "eager", "compiled"],
                    choices=["tinylm", "eager", "compiled", "tinylm-ckpt", "eager-ckpt", "tinylm-bf16", "eager-bf16"],
                    help="-ckpt: with gradient checkpointing per block (bench_train/pytorch_peer.py --checkpointing); "
                         "-bf16: bf16 products (bench_train --precision bf16; pytorch_peer.py --autocast-bf16)")
    ap.add_argument("--seq-len", type=int, default=0, help="--device cuda: tokens per sequence, to both")
    ap.add_argument("--lora", type=int, default=0, metavar="R",
                    help="--device cuda: LoRA of rank R on the seven projections, in both (peft in the peer)")
    ap.add_argument("--qlora", action="store_true", help="with --lora: tinylm's base in NF4 (QLoRA); the peer's "
                                                         "stays bf16 autocast over f32 (it has no NF4 base)")
    ap.add_argument("--out", type=Path, help="write every process's JSON here")
    ap.add_argument("--check", action="store_true", help="only check that both build the same model (config a)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: bench_train --device cuda beside pytorch_peer.py --device cuda (variants tinylm, "
                         "eager, compiled; default tinylm and compiled)")
    ap.add_argument("--exe", type=Path, help="bench_train to run (default: BUILD/benchmarks/train_throughput/...)")
    ap.add_argument("--report", type=Path, nargs="+", metavar="JSONL",
                    help="run nothing: report the JSON lines of bench_train and pytorch_peer.py runs in these files")
    args = ap.parse_args()

    if args.report:
        return report_from_files(args.report)
    cuda = args.device == "cuda"
    if not cuda and ("qwen0.5b" in args.configs or args.lora or args.qlora or args.seq_len):
        raise SystemExit("run.py: --configs qwen0.5b, --lora, --qlora and --seq-len are for --device cuda")
    if args.qlora and not args.lora:
        raise SystemExit("run.py: --qlora needs --lora R")
    if cuda and args.variants == ap.get_default("variants"):
        args.variants = ["tinylm", "compiled"]
    if cuda and any(v.endswith(("-ckpt", "-bf16")) for v in args.variants):
        raise SystemExit("run.py: --device cuda runs the variants tinylm, eager and compiled (bf16 on both sides)")
    exe = args.exe or Path(args.build) / "benchmarks" / "train_throughput" / "bench_train"
    peer = [sys.executable, HERE / "pytorch_peer.py"]
    env = dict(os.environ)
    coretype = env.pop("OPENBLAS_CORETYPE", None)  # must be unset for the peer; recorded below
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    if args.check:
        with tempfile.TemporaryDirectory() as d:
            run_json([exe, "--config", "a", "--steps", "1", "--warmup", "0", "--no-ceiling", "--save-init", d], env)
            return subprocess.run([str(c) for c in peer + ["--config", "a", "--check", d]], env=env).returncode

    m = machine()
    print(f"machine: {m}; OPENBLAS_CORETYPE in the caller's environment: {coretype!r} (unset for the runs); "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}")
    results = []
    for config in args.configs:
        for r in range(args.repeats):
            common = ["--config", config, "--steps", args.steps] + (["--batch", args.batch] if args.batch else [])
            if cuda:
                common += ["--device", "cuda"]
                common += (["--seq-len", args.seq_len] if args.seq_len else []) + \
                    (["--lora", args.lora] if args.lora else [])
            for v in args.variants:
                ckpt = ["--checkpointing"] if v.endswith("-ckpt") else []
                if v.startswith("tinylm"):
                    bf16 = ["--precision", "bf16"] if v == "tinylm-bf16" else []
                    res = run_json([exe, *common, "--warmup", args.warmup, *ckpt, *bf16,
                                    *(["--qlora"] if args.qlora else [])], env)
                elif v.startswith("eager"):
                    bf16 = ["--autocast-bf16"] if v == "eager-bf16" else []
                    res = run_json(peer + [*common, "--warmup", args.warmup, "--threads", args.threads, *ckpt, *bf16],
                                   env)
                else:
                    res = run_json(peer + [*common, "--warmup", args.warmup + 1, "--threads", args.threads,
                                           "--compile"], env)
                res["round"] = r
                res["key"] = run_key(res, v)
                results.append(res)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": m, "openblas_coretype": coretype, "runs": results}, indent=1))
    if cuda:
        report_cuda(results)
    else:
        report(results, args.variants)
    return 0


def run_key(r, variant):
    """The variant's name in the report: tinylm's QLoRA runs apart from its LoRA runs."""
    return variant + "-qlora" if r.get("qlora") else variant


def group(r):
    """The report's row group: the config, and the adapter when there is one (qwen0.5b lora16)."""
    return r["config"] + (f" lora{r['lora_rank']}" if r.get("lora_rank") else "")


def report_from_files(paths):
    results = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                r.setdefault("round", len([x for x in results if x["impl"] == r["impl"]]))
                r.setdefault("key", run_key(r, "tinylm" if r["impl"] == "tinylm" else r["variant"]))
                results.append(r)
    if any(r.get("device") == "cuda" for r in results):
        report_cuda(results)
    else:
        report(results, list(dict.fromkeys(r["key"] for r in results)))
    return 0


def report_cuda(results):
    """Per config (and adapter): tokens/s (median over rounds of each run's median step), MFU against the dense bf16
    peak from the FLOPs the step computes (step_flops_per_token: under LoRA without the frozen base's weight
    gradients; full training's flops_per_token otherwise, and for older JSON lines), and tinylm / PyTorch, the ratio
    of the medians."""
    print(f"\n{'config':<15} {'impl':<18} {'GPU':<24} {'prec':<5} {'batch':>5} {'seq':>5} {'tokens/s':>10} "
          f"{'6N MF/t':>8} {'step MF/t':>9} {'TFLOP/s':>8} {'peak':>6} {'MFU':>6} {'runs':>4}")
    for config in dict.fromkeys(group(r) for r in results):
        medians = {}
        for key in dict.fromkeys(r["key"] for r in results if group(r) == config):
            runs = [r for r in results if group(r) == config and r["key"] == key]
            tok = statistics.median(r["tokens_per_step"] / statistics.median(r["step_seconds"]) for r in runs)
            full = runs[0]["flops_per_token"]
            f, peak = runs[0].get("step_flops_per_token", full), runs[0].get("peak_tflops") or 0
            medians[key] = tok
            mfu = f"{100 * f * tok / (peak * 1e12):5.1f}%" if peak else "    -"
            name = key if key.startswith("tinylm") else f"pytorch {key}"
            print(f"{config:<15} {name:<18} {runs[0].get('device_name', '')[:24]:<24} "
                  f"{runs[0].get('precision', ''):<5} {runs[0]['batch']:>5} {runs[0].get('seq_len', '-'):>5} "
                  f"{tok:>10.0f} {full * 1e-6:>8.1f} {f * 1e-6:>9.1f} {tok * f * 1e-12:>8.1f} {peak:>6.0f} {mfu:>6} "
                  f"{len(runs):>4}")
        for mine in ("tinylm", "tinylm-qlora"):
            for peer in ("compiled", "eager"):
                if mine in medians and peer in medians:
                    print(f"{config:<15} ratio {mine} / pytorch {peer}: {medians[mine] / medians[peer]:.3f} "
                          f"(goal, issue 20: >= 1.0 against compiled, MFU >= 45%)")


def report(results, variants):
    configs = list(dict.fromkeys(r["config"] for r in results))
    print(f"\n{'config':<6} {'impl':<16} {'tokens/s':>9} {'MFLOP/tok':>9} {'GFLOP/s':>8} {'ceil shapes':>11} "
          f"{'ceil 2048':>9} {'MFU shp':>7} {'MFU sq':>7} {'VmHWM MiB':>9} {'act MiB':>7} {'rounds':>6}")
    for config in configs:
        rows = {}
        for v in variants:
            runs = [r for r in results if r["config"] == config and r["key"] == v]
            if not runs:
                continue
            tps = [r["tokens_per_step"] / statistics.median(r["step_seconds"]) for r in runs]
            f = runs[0]["flops_per_token"]
            shapes = statistics.median(r["gemm_model_shapes_gflops"] for r in runs)
            square = statistics.median(r["gemm_square_gflops"] for r in runs)
            tok = statistics.median(tps)
            gf = tok * f * 1e-9
            rows[v] = {r["round"]: t for r, t in zip(runs, tps)}
            name = v if v.startswith("tinylm") else f"pytorch {v}"
            print(f"{config:<6} {name:<16} {tok:>9.1f} {f * 1e-6:>9.1f} {gf:>8.1f} {shapes:>11.1f} {square:>9.1f} "
                  f"{100 * gf / shapes if shapes else 0:>6.1f}% {100 * gf / square if square else 0:>6.1f}% "
                  f"{statistics.median(r['peak_rss_mib'] for r in runs):>9.0f} "
                  f"{runs[0]['activation_mib'] if 'activation_mib' in runs[0] else '-':>7} {len(runs):>6}")
        for mine, v in (("tinylm", "eager"), ("tinylm", "compiled"), ("tinylm-ckpt", "eager-ckpt"),
                        ("tinylm-bf16", "tinylm"), ("tinylm-bf16", "eager-bf16"), ("eager-bf16", "eager")):
            if mine in rows and v in rows:
                common = sorted(set(rows[mine]) & set(rows[v]))
                ratios = [rows[mine][k] / rows[v][k] for k in common]
                print(f"{config:<6} ratio {mine} / {v if v.startswith('tinylm') else 'pytorch ' + v}: {statistics.median(ratios):.3f} "
                      f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    sys.exit(main())
