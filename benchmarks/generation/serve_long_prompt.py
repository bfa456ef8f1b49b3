#!/usr/bin/env python3
"""A long prompt joining a running stream in `tinylm serve`: how long the stream stalls, and the prompt's time to its
first token, with the prompt run whole or in parts (`--prompt-chunk`, docs/tinylm.md "Throughput").

  python3 benchmarks/generation/serve_long_prompt.py --tinylm build-x/tools/tinylm --model q05 \\
      --chunks 0 256 --prompt-words 1000 --rounds 3

One server per `--prompt-chunk` setting (`--batch 4`, `--precision` as given, no prompt cache), interleaved in every
round. In a round, client A streams a completion of `--stream-tokens` sampled tokens; once it has received 16, client
B sends a prompt of about `--prompt-words` words (a Russian sentence repeated) for 8 greedy tokens, streamed. Per
round: A's longest gap between two tokens (the stall), A's median gap, and B's time to its first token. Medians over
rounds are printed with the per-round values and written as JSON to --out. Standard library only.
"""
import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request

sys.path.insert(0, __import__("os").path.dirname(__file__))
from serve_bench import start  # noqa: E402


def stream(port, body, on_event):
    """POSTs a streaming completion; on_event(time, event) for each data event; returns the usage."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    usage = None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            if event["choices"]:
                on_event(time.perf_counter(), event)
    return usage


def one_round(port, stream_tokens, prompt, seed):
    a_times, b_first = [], []
    started = threading.Event()

    def client_a():
        def seen(t, event):
            a_times.append(t)
            if len(a_times) == 16:
                started.set()
        stream(port, {"prompt": "Жили-были", "max_tokens": stream_tokens, "temperature": 0.8, "seed": seed}, seen)
        started.set()

    a = threading.Thread(target=client_a)
    a.start()
    started.wait()
    sent = time.perf_counter()
    usage = stream(port, {"prompt": prompt, "max_tokens": 8, "temperature": 0},
                   lambda t, e: b_first.append(t) if not b_first and e["choices"][0]["text"] else None)
    a.join()
    gaps = [y - x for x, y in zip(a_times, a_times[1:])]
    return {"stall_s": max(gaps), "median_gap_s": statistics.median(gaps),
            "b_first_token_s": (b_first[0] if b_first else time.perf_counter()) - sent,
            "b_prompt_tokens": usage["prompt_tokens"] if usage else None, "a_tokens": len(a_times)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tinylm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 256], help="tinylm serve --prompt-chunk settings")
    p.add_argument("--precision", default="q8_0", choices=["f32", "bf16", "q8_0", "q4_0"])
    p.add_argument("--prompt-words", type=int, default=1000)
    p.add_argument("--stream-tokens", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="")
    a = p.parse_args()
    sentence = "Старик ловил неводом рыбу, а старуха пряла свою пряжу. "
    words = len(sentence.split())
    prompt = sentence * max(1, a.prompt_words // words)
    servers = {}
    try:
        for c in a.chunks:
            servers[c] = start(a.tinylm, a.model, a.precision,
                               ["--batch", "4", "--prompt-cache", "0", "--prompt-chunk", str(c)])
        results = {c: [] for c in a.chunks}
        for r in range(a.rounds):
            for c in a.chunks[r % len(a.chunks):] + a.chunks[:r % len(a.chunks)]:
                results[c].append(one_round(servers[c][1], a.stream_tokens, prompt, 1000 + r))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    print("| --prompt-chunk | B's prompt tokens | A's longest gap (s) | A's median gap (s) | B's first token (s) |"
          " rounds (longest gap; first token) |\n| ---: | ---: | ---: | ---: | ---: | --- |")
    summary = {}
    for c, rows in results.items():
        med = {k: statistics.median(x[k] for x in rows) for k in ("stall_s", "median_gap_s", "b_first_token_s")}
        summary[str(c)] = dict(med, rounds=rows)
        per = ", ".join(f"{x['stall_s']:.2f}; {x['b_first_token_s']:.2f}" for x in rows)
        print(f"| {c} | {rows[0]['b_prompt_tokens']} | {med['stall_s']:.2f} | {med['median_gap_s']:.3f} | "
              f"{med['b_first_token_s']:.2f} | {per} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "precision": a.precision, "results": summary}, f, indent=2)


if __name__ == "__main__":
    main()
