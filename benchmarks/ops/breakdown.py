#!/usr/bin/env python3
"""Where a config-B training step's wall time goes, from bench_ops timings (issue 6, docs/performance.md).

Multiplies each op's measured time by how often one training step of config B (8 layers, batch 8 x 512) runs it and
prints the shares, next to the measured step time when one is given (what is left over is everything not benched:
RoPE, residual adds, embedding, the AdamW step, zeroing gradients).

  build-speed/benchmarks/ops/bench_ops --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_format=json > runs/speed/ops.json
  python3 benchmarks/ops/breakdown.py runs/speed/ops.json --step-seconds 9.1
"""
import argparse
import json

LAYERS = 8
# (benchmark name as bench_ops registers it, calls per step, group)
CALLS = [
    ("bm_linear_forward/512/512", 2 * LAYERS, "GEMM: projections"),    # q, o
    ("bm_linear_forward/256/512", 2 * LAYERS, "GEMM: projections"),    # k, v
    ("bm_linear_forward/1536/512", 2 * LAYERS, "GEMM: projections"),   # gate, up
    ("bm_linear_forward/512/1536", 1 * LAYERS, "GEMM: projections"),   # down
    ("bm_linear_backward/512/512", 2 * LAYERS, "GEMM: projections"),
    ("bm_linear_backward/256/512", 2 * LAYERS, "GEMM: projections"),
    ("bm_linear_backward/1536/512", 2 * LAYERS, "GEMM: projections"),
    ("bm_linear_backward/512/1536", 1 * LAYERS, "GEMM: projections"),
    ("bm_attention_forward", LAYERS, "attention"),
    ("bm_attention_backward", LAYERS, "attention"),
    ("bm_rmsnorm_forward", 2 * LAYERS + 1, "rmsnorm"),
    ("bm_rmsnorm_backward", 2 * LAYERS + 1, "rmsnorm"),
    ("bm_swiglu_forward", LAYERS, "swiglu"),
    ("bm_swiglu_backward", LAYERS, "swiglu"),
    ("bm_cross_entropy_forward", 1, "head + cross-entropy"),
    ("bm_cross_entropy_backward", 1, "head + cross-entropy"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="bench_ops --benchmark_format=json output")
    ap.add_argument("--step-seconds", type=float, help="measured config-B step time (bench_train), for the rest")
    args = ap.parse_args()
    data = json.load(open(args.json))
    seconds = {}
    for b in data["benchmarks"]:
        name = b.get("run_name", b["name"]).removesuffix("/real_time")
        if b.get("aggregate_name", "median") != "median":
            continue
        unit = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[b["time_unit"]]
        seconds[name] = b["real_time"] * unit
    groups, ops = {}, []
    for name, calls, group in CALLS:
        t = seconds[name] * calls
        groups[group] = groups.get(group, 0.0) + t
        ops.append((name, calls, seconds[name], t))
    total = sum(groups.values())
    ref = args.step_seconds or total
    print(f"{'op':<30} {'calls':>5} {'ms/call':>9} {'s/step':>7} {'share':>6}")
    for name, calls, each, t in ops:
        print(f"{name:<30} {calls:>5} {each * 1e3:>9.2f} {t:>7.3f} {100 * t / ref:>5.1f}%")
    print(f"\n{'group':<30} {'s/step':>7} {'share':>6}")
    for g, t in sorted(groups.items(), key=lambda x: -x[1]):
        print(f"{g:<30} {t:>7.3f} {100 * t / ref:>5.1f}%")
    print(f"{'sum of benched ops':<30} {total:>7.3f} {100 * total / ref:>5.1f}%")
    if args.step_seconds:
        rest = args.step_seconds - total
        print(f"{'rest (not benched)':<30} {rest:>7.3f} {100 * rest / ref:>5.1f}%   (measured step {ref:.3f} s)")


if __name__ == "__main__":
    main()
