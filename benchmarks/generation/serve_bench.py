#!/usr/bin/env python3
"""Throughput of `tinylm serve`: requests/s and generated tokens/s with 1 and 4 concurrent clients (docs/tinylm.md).

  python3 benchmarks/generation/serve_bench.py --tinylm build/tools/tinylm --model runs/russian_novels/checkpoint \\
      --requests 16 --max-tokens 64 --rounds 3

Starts the server on a free port (default environment: no OMP_WAIT_POLICY), then, in interleaved rounds, sends
`--requests` chat requests (sampling at temperature 0.8, one seed each, `--max-tokens` new tokens, no stop) with
1 and with 4 client threads. Each round gives requests/s and completion tokens/s over its wall time; the medians
over rounds are printed with the per-round values and written as JSON to --out. `--precisions f32 bf16 q8_0` starts
one server per decoding precision (`tinylm serve --precision`), `--batches 1 4` one per number of requests decoded
together (`tinylm serve --batch`), and every round interleaves them. Standard library only.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def start(tinylm, model, precision="f32", extra=()):
    proc = subprocess.Popen([tinylm, "serve", "--model", model, "--port", "0", "--quiet", "--precision", precision,
                             *extra], stderr=subprocess.PIPE, text=True)
    while True:
        line = proc.stderr.readline()
        if not line:
            sys.exit("serve_bench: the server did not start")
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line)
        if m:
            return proc, int(m.group(1))


def ask(port, seed, max_tokens):
    body = {"messages": [{"role": "user", "content": "Расскажи историю номер %d." % seed}], "max_tokens": max_tokens,
            "temperature": 0.8, "seed": seed}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["usage"]["completion_tokens"]


def round_trip(port, clients, requests, max_tokens, seed0):
    seeds = list(range(seed0, seed0 + requests))
    tokens = []
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not seeds:
                    return
                seed = seeds.pop()
            n = ask(port, seed, max_tokens)
            with lock:
                tokens.append(n)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return requests / wall, sum(tokens) / wall


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tinylm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    p.add_argument("--precisions", nargs="+", default=["f32"], choices=["f32", "bf16", "q8_0", "q4_0"],
                   help="one server per decoding precision (tinylm serve --precision), interleaved")
    p.add_argument("--batches", type=int, nargs="+", default=[4],
                   help="one server per number of requests decoded together (tinylm serve --batch), interleaved")
    p.add_argument("--out", default="")
    a = p.parse_args()
    kinds = [(pr, b) for pr in a.precisions for b in a.batches]  # one server each
    servers = {}
    try:
        for pr, b in kinds:
            servers[pr, b] = start(a.tinylm, a.model, pr, ["--batch", str(b)])
            ask(servers[pr, b][1], 0, 4)  # warm-up
        results = {(pr, b, c): [] for pr, b in kinds for c in a.clients}
        for r in range(a.rounds):
            for pr, b in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                for c in a.clients:
                    results[pr, b, c].append(round_trip(servers[pr, b][1], c, a.requests, a.max_tokens, 1000 * r + 1))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    summary = {}
    print("| precision | batch | clients | requests/s | tokens/s | rounds (requests/s) |\n"
          "| --- | ---: | ---: | ---: | ---: | --- |")
    for (pr, b, c), rows in results.items():
        rps = statistics.median(x[0] for x in rows)
        tps = statistics.median(x[1] for x in rows)
        summary[f"{pr} batch {b} clients {c}"] = {"requests_per_s": rps, "tokens_per_s": tps, "rounds": rows}
        print(f"| {pr} | {b} | {c} | {rps:.2f} | {tps:.1f} | {', '.join(f'{x[0]:.2f}' for x in rows)} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "requests": a.requests, "max_tokens": a.max_tokens, "results": summary}, f,
                      indent=2)


if __name__ == "__main__":
    main()
