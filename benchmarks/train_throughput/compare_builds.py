#!/usr/bin/env python3
"""Training throughput of tinylm against tinylm: two builds (e.g. this commit and the one before a change) and
compile-time against run-time sizes, interleaved round by round so that the machine's load hits all alike.

Each round runs every variant once per config (bench_train, --no-ceiling); a variant's figure for a round is its
median step. Prints per config the median tokens/s over rounds and, against the first variant, the median of
the per-round ratios (docs/performance.md, "run-time sizes").

  export OMP_WAIT_POLICY=PASSIVE
  python3 benchmarks/train_throughput/compare_builds.py --rounds 3 --configs a b \\
      --variant before=/tmp/base/build/benchmarks/train_throughput/bench_train \\
      --variant static=build/benchmarks/train_throughput/bench_train \\
      --variant runtime=build/benchmarks/train_throughput/bench_train:--runtime-sizes
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True,
                    help="NAME=PATH[:extra flags separated by commas]; the first is the reference")
    ap.add_argument("--configs", nargs="+", default=["a", "b"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", help="write every measurement as JSON here")
    args = ap.parse_args()
    variants = []
    for v in args.variant:
        name, rest = v.split("=", 1)
        path, _, flags = rest.partition(":")
        variants.append((name, path, [f for f in flags.split(",") if f]))

    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    results = {c: {name: [] for name, _, _ in variants} for c in args.configs}
    for r in range(args.rounds):
        for config in args.configs:
            for name, path, flags in variants:
                cmd = [path, "--config", config, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--no-ceiling"] + flags
                print(f"round {r + 1}: {name} {config}: " + " ".join(cmd), file=sys.stderr, flush=True)
                p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"compare_builds: {cmd} failed with status {p.returncode}")
                j = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
                results[config][name].append(j["tokens_per_step"] / statistics.median(j["step_seconds"]))

    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}; "
          f"{args.rounds} rounds x {args.steps} timed steps")
    ref = variants[0][0]
    print(f"| config | variant | tokens/s (median of rounds) | ratio to {ref} (median of per-round ratios) |")
    print("| --- | --- | --- | --- |")
    for config in args.configs:
        for name, _, _ in variants:
            tps = results[config][name]
            ratios = [a / b for a, b in zip(tps, results[config][ref])]
            print(f"| {config} | {name} | {statistics.median(tps):,.0f} | {statistics.median(ratios):.3f} "
                  f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)}) |")
    print()
    print("Every pair (median over rounds of the per-round ratio row / column):")
    names = [n for n, _, _ in variants]
    print("| config | variant | " + " | ".join(f"/ {n}" for n in names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    for config in args.configs:
        for a in names:
            cells = [statistics.median(x / y for x, y in zip(results[config][a], results[config][b])) for b in names]
            print(f"| {config} | {a} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"cpu": cpu_name(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
