#!/usr/bin/env python3
"""Batch-1 generation, tinylm against Hugging Face generate, interleaved rounds in one run (docs/performance.md).

  /work/venv/bin/python benchmarks/generation/run.py --build build-speed --rounds 3 --out runs/speed/generation.json

Both processes run with the same OMP_WAIT_POLICY (--wait-policy, default ACTIVE): at batch 1 a token is ~100 short
parallel regions, and PASSIVE threads sleep between them (3x slower decode on 2 cores, docs/performance.md).

Prints decode tokens/s (median over rounds; each round's number is the median of its generations), the ratio, and
the fraction of the memory bandwidth (STREAM-style triad measured inside bench_generate) that tinylm's decode reaches
and that PyTorch's would reach reading the same bytes per token.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd, env):
    print("$ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run.py: {cmd[0]} failed with status {p.returncode}")
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-speed")
    ap.add_argument("--config", default="b", choices=["a", "b"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="generations per process after one warm-up")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-policy", choices=["ACTIVE", "PASSIVE"], default="ACTIVE",
                    help="OMP_WAIT_POLICY for both processes")
    ap.add_argument("--peer-loop", choices=["generate", "manual"], default="generate",
                    help="generation_peer.py --loop: HF generate, or a hand-written greedy loop")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    env = dict(os.environ)
    coretype = env.pop("OPENBLAS_CORETYPE", None)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    env["OMP_WAIT_POLICY"] = args.wait_policy
    print(f"OPENBLAS_CORETYPE in the caller's environment: {coretype!r} (unset for the runs); "
          f"OMP_WAIT_POLICY={args.wait_policy}")
    exe = Path(args.build) / "benchmarks" / "generation" / "bench_generate"
    common = ["--config", args.config, "--new-tokens", args.new_tokens, "--repeats", args.repeats]
    runs = []
    for r in range(args.rounds):
        t = run_json([exe, *common], env)
        p = run_json([sys.executable, HERE / "generation_peer.py", *common, "--threads", args.threads,
                                                                   "--loop", args.peer_loop], env)
        runs.append((t, p))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"openblas_coretype": coretype, "omp_wait_policy": args.wait_policy, "runs": [list(x) for x in runs]}, indent=1))
    tl_tps = [t["decode_tokens_per_s_median"] for t, _ in runs]
    pt_tps = [p["decode_tokens_per_s_median"] for _, p in runs]
    bw = statistics.median(t["triad_gb_per_s"] for t, _ in runs)
    bytes_tok = runs[0][0]["bytes_per_token"]
    ratios = [a / b for a, b in zip(tl_tps, pt_tps)]
    print(f"config {args.config}, batch 1, {runs[0][0]['prompt_tokens']}-token prompt, {args.new_tokens} new tokens, "
          f"greedy, {args.threads} threads, {args.rounds} rounds")
    print(f"memory bandwidth (triad, median of rounds): {bw:.1f} GB/s; bytes read per decoded token: "
          f"{bytes_tok / 1e6:.1f} MB")
    for name, tps, rss in (("tinylm", tl_tps, [t["peak_rss_mib"] for t, _ in runs]),
                           ("pytorch", pt_tps, [p["peak_rss_mib"] for _, p in runs])):
        m = statistics.median(tps)
        print(f"{name:<8} decode {m:8.1f} tokens/s  ({', '.join(f'{x:.1f}' for x in tps)})  bandwidth fraction "
              f"{100 * m * bytes_tok / (bw * 1e9):5.1f}%  VmHWM {statistics.median(rss):.0f} MiB")
    print(f"ratio tinylm / pytorch: {statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
