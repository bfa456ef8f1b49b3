#!/usr/bin/env python3
"""Sentence-encoder throughput, tinylm against sentence-transformers on the same model, interleaved rounds.

  /work/venv/bin/python benchmarks/encoder/run.py --build build --model ~/.cache/tinylm/models/all-MiniLM-L6-v2 \
      --rounds 3 --out runs/encoder.json

Texts: sentences of the data dir (NTREX-128 English and Russian, XQuAD questions), 2,048 for encode; pairs
(English -> Russian sentence) for train. Both processes get OMP_NUM_THREADS = --threads and the same
OMP_WAIT_POLICY; OPENBLAS_CORETYPE is unset. Prints the medians of each side and the ratio of medians, with the CPU.
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
ROOT = HERE.parent.parent


def run_json(cmd, env):
    print("$ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run.py: {cmd[0]} failed with status {p.returncode}")
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default=str(Path.home() / ".cache/tinylm/models/all-MiniLM-L6-v2"))
    ap.add_argument("--data-dir", default=os.environ.get("TINYLM_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--wait-policy", choices=["ACTIVE", "PASSIVE"], default="PASSIVE")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    env = dict(os.environ)
    coretype = env.pop("OPENBLAS_CORETYPE", None)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(a.threads)
    env["OMP_WAIT_POLICY"] = a.wait_policy

    data = Path(a.data_dir)
    eng = (data / "tatar/ntrex128.eng.txt").read_text(encoding="utf-8").splitlines()
    rus = (data / "tatar/ntrex128.rus.txt").read_text(encoding="utf-8").splitlines()
    tmp = Path(tempfile.mkdtemp(prefix="tinylm_bench_encoder_"))
    texts = tmp / "texts.txt"
    texts.write_text("\n".join((eng + rus)[:2048]) + "\n", encoding="utf-8")
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": e, "positive": r}, ensure_ascii=False) + "\n"
                             for e, r in zip(eng, rus) if e and r), encoding="utf-8")

    exe = Path(a.build) / "benchmarks" / "encoder" / "bench_encoder"
    peer = [sys.executable, HERE / "st_peer.py"]
    common = ["--model", a.model, "--threads", a.threads, "--max-length", a.max_length]
    results = {"encode": [], "train": []}
    for r in range(a.rounds):
        for mode, file, batch in (("encode", texts, a.batch), ("train", pairs, a.train_batch)):
            args = [*common, "--mode", mode, "--texts", file, "--batch", batch]
            t = run_json([exe, *args], env)
            p = run_json([*peer, *args], env)
            results[mode].append((t, p))
    print(f"CPU: {cpu_name()}, {a.threads} threads, OMP_WAIT_POLICY={a.wait_policy}, "
          f"OPENBLAS_CORETYPE unset (was {coretype!r}), {a.rounds} interleaved rounds")
    summary = {}
    for mode, key, unit in (("encode", "sentences_per_s", "sentences/s"), ("train", "tokens_per_s", "tokens/s")):
        tl = [t[key] for t, _ in results[mode]]
        st = [p[key] for _, p in results[mode]]
        ratio = statistics.median(tl) / statistics.median(st)
        summary[mode] = {"tinylm": statistics.median(tl), "sentence_transformers": statistics.median(st), "ratio": ratio}
        batch = a.batch if mode == "encode" else a.train_batch
        print(f"{mode:<7} batch {batch:>3}: tinylm {statistics.median(tl):9.1f} {unit}  "
              f"sentence-transformers {statistics.median(st):9.1f} {unit}  ratio {ratio:.2f}  "
              f"(rounds tinylm {', '.join(f'{x:.1f}' for x in tl)}; peer {', '.join(f'{x:.1f}' for x in st)})")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"cpu": cpu_name(), "summary": summary, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
