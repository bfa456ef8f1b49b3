#!/usr/bin/env python3
"""Batch-1 generation: tinylm under several OpenMP wait policies against Hugging Face generate, interleaved rounds
in one run (docs/performance.md, issue 17).

  /work/venv/bin/python benchmarks/generation/run.py --build build --rounds 5 --out runs/speed/generation.json

Contenders (each round runs every contender once, in a rotated order, so that a busy stretch of the machine does
not land on one of them):
  tinylm           bench_generate with the caller's environment less OMP_WAIT_POLICY: what a user program gets
  tinylm-ACTIVE    the same with OMP_WAIT_POLICY=ACTIVE (threads spin between parallel regions)
  tinylm-PASSIVE   the same with OMP_WAIT_POLICY=PASSIVE (threads sleep between parallel regions)
  pytorch          generation_peer.py (HF generate, use_cache, greedy), OMP_WAIT_POLICY unset
  --baseline NAME=PATH[:flags] adds another bench_generate (a build of an earlier commit) with the default
  environment, given the extra flags (separated by commas, e.g. before-bf16=/tmp/b/bench_generate:--precision,bf16);
  --single-thread adds tinylm-1-thread (OMP_NUM_THREADS=1: no parallel regions, nothing to wake).
  --bf16 adds tinylm-bf16 (bench_generate --precision bf16: the decoding steps read bf16 copies of the weights,
  default environment) and pytorch-bf16 (generation_peer.py --dtype bf16: the model in bfloat16).
  --q8 adds tinylm-q8_0 (bench_generate --precision q8_0: q8_0 copies of the weights, f32 activations).
--isa avx2|baseline runs every tinylm process with the kernels an older CPU gets (bench_generate --isa; a baseline
build must take the flag too). --policies chooses which of the tinylm wait policies run; --no-peer leaves PyTorch out. OPENBLAS_CORETYPE is unset
for every process. To add another measurement (a server, say), append a contender in contenders(): a name and a
function of the round that returns a dict with "decode_tokens_per_s_median".

Prints decode tokens/s (median over rounds; a round's number is the median of that process's generations), the
ratios of the medians (with the per-round ratios), whether every tinylm process generated the same tokens, and the
fraction of the memory bandwidth (STREAM-style triad measured inside bench_generate) that the decode reaches.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLICIES = {"default": None, "ACTIVE": "ACTIVE", "PASSIVE": "PASSIVE"}


def run_json(cmd, env):
    print("$ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run.py: {cmd[0]} failed with status {p.returncode}")
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def environment(base, threads, wait_policy):
    env = dict(base)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


def contenders(args, base_env):
    """(name, run) pairs; run() returns the process's JSON line as a dict."""
    common = ["--config", args.config, "--new-tokens", args.new_tokens, "--repeats", args.repeats]
    tinylm_common = [*common, "--isa", args.isa] if args.isa != "best" else common
    exe = Path(args.build) / "benchmarks" / "generation" / "bench_generate"
    out = []

    def tinylm(path, policy, threads=args.threads, flags=()):
        return lambda: run_json([path, *tinylm_common, *flags], environment(base_env, threads, POLICIES[policy]))

    for policy in args.policies:
        out.append(("tinylm" if policy == "default" else f"tinylm-{policy}", tinylm(exe, policy)))
    if args.single_thread:
        out.append(("tinylm-1-thread", tinylm(exe, "default", 1)))
    if args.bf16:
        out.append(("tinylm-bf16", tinylm(exe, "default", flags=("--precision", "bf16"))))
    if args.q8:
        out.append(("tinylm-q8_0", tinylm(exe, "default", flags=("--precision", "q8_0"))))
    for spec in args.baseline:
        name, _, rest = spec.partition("=")
        path, _, flags = rest.partition(":")
        out.append((name, tinylm(path, "default", flags=tuple(f for f in flags.split(",") if f))))
    if not args.no_peer:
        peer = [sys.executable, HERE / "generation_peer.py", *common, "--threads", args.threads, "--loop",
                args.peer_loop]
        out.append(("pytorch", lambda: run_json(peer, environment(base_env, args.threads, None))))
        if args.bf16:
            out.append(("pytorch-bf16", lambda: run_json([*peer, "--dtype", "bf16"],
                                                         environment(base_env, args.threads, None))))
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--config", default="b", choices=["a", "b", "qwen3-0.6b"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="generations per process after one warm-up")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES),
                    help="OMP_WAIT_POLICY of the tinylm processes (default: unset)")
    ap.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH",
                    help="another bench_generate binary, run with the default environment")
    ap.add_argument("--single-thread", action="store_true",
                    help="also tinylm with OMP_NUM_THREADS=1 (no parallel regions at all)")
    ap.add_argument("--isa", choices=["best", "avx2", "baseline"], default="best",
                    help="the kernels' copies every tinylm process runs (bench_generate --isa)")
    ap.add_argument("--no-peer", action="store_true", help="leave PyTorch out")
    ap.add_argument("--bf16", action="store_true", help="add tinylm-bf16 and pytorch-bf16 (bf16 weights)")
    ap.add_argument("--q8", action="store_true", help="add tinylm-q8_0 (q8_0 copies of the weights)")
    ap.add_argument("--peer-loop", choices=["generate", "manual"], default="generate",
                    help="generation_peer.py --loop: HF generate, or a hand-written greedy loop")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    base_env = dict(os.environ)
    coretype = base_env.pop("OPENBLAS_CORETYPE", None)
    print(f"OPENBLAS_CORETYPE in the caller's environment: {coretype!r} (unset for the runs); OMP_WAIT_POLICY in "
          f"the caller's environment: {base_env.get('OMP_WAIT_POLICY')!r} (replaced per contender)")
    runs = contenders(args, base_env)
    results = {name: [] for name, _ in runs}
    for r in range(args.rounds):
        k = r % len(runs)
        for name, run in runs[k:] + runs[:k]:
            results[name].append(run())
            print(f"round {r + 1}: {name} {results[name][-1]['decode_tokens_per_s_median']:.1f} tokens/s",
                  file=sys.stderr, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"openblas_coretype": coretype, "args": {k: str(v) for k, v in vars(args).items()},
                                        "results": results}, indent=1))

    tps = {name: [x["decode_tokens_per_s_median"] for x in rs] for name, rs in results.items()}
    first = next(iter(results.values()))[0]
    tl_runs = [x for rs in results.values() for x in rs if x.get("impl") == "tinylm"]
    print(f"config {args.config}, batch 1, {first['prompt_tokens']}-token prompt, {args.new_tokens} new tokens, "
          f"greedy, {args.threads} threads, {args.rounds} rounds (each process: median of {args.repeats} "
          f"generations after a warm-up)")
    if tl_runs:
        bw = med([x["triad_gb_per_s"] for x in tl_runs])
        bytes_tok = tl_runs[0]["bytes_per_token"]
        same = all(len({x["tokens_fnv1a"] for x in tl_runs if x.get("precision", "f32") == p}) <= 1
                   for p in ("f32", "bf16", "q8_0"))
        print(f"memory bandwidth (triad, median): {bw:.1f} GB/s; bytes read per decoded token: {bytes_tok / 1e6:.1f} "
              f"MB (f32 weights); every tinylm process of a precision generated the same tokens: {same}")
    for name, rs in results.items():
        m = med(tps[name])
        b = rs[0].get("bytes_per_token", bytes_tok) if tl_runs else 0
        frac = f"  bandwidth fraction {100 * m * b / (bw * 1e9):5.1f}%" if tl_runs and rs[0].get("impl") == "tinylm" else ""
        print(f"{name:<16} decode {m:8.1f} tokens/s  ({', '.join(f'{x:.1f}' for x in tps[name])}){frac}  "
              f"VmHWM {med([x['peak_rss_mib'] for x in rs]):.0f} MiB")
    names = list(results)
    baselines = [spec.partition("=")[0] for spec in args.baseline]
    pairs = [(a, "tinylm-ACTIVE") for a in names if a not in ("tinylm-ACTIVE", "pytorch")]
    pairs += [(a, "pytorch") for a in names if a not in ("pytorch", "pytorch-bf16")]
    pairs += [(a, b) for b in baselines for a in ("tinylm", "tinylm-bf16")]
    pairs += [("tinylm-bf16", "tinylm"), ("tinylm-bf16", "pytorch-bf16"), ("pytorch-bf16", "pytorch")]
    pairs += [("tinylm-q8_0", "tinylm"), ("tinylm-q8_0", "tinylm-bf16"), ("tinylm-q8_0", "pytorch-bf16")]
    for a, b in pairs:
        if a not in tps or b not in tps:
            continue
        per_round = [x / y for x, y in zip(tps[a], tps[b])]
        print(f"ratio {a} / {b}: {med(tps[a]) / med(tps[b]):.3f} of the medians (rounds: "
              f"{', '.join(f'{x:.3f}' for x in per_round)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
