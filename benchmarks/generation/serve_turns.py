#!/usr/bin/env python3
"""Multi-turn chats against `tinylm serve`, with and without its prompt cache (docs/tinylm.md, "Prompt cache").

  python3 benchmarks/generation/serve_turns.py --tinylm build/tools/tinylm --model DIR \\
      --clients 2 --turns 5 --words 60 --max-tokens 16 --rounds 3

Starts one server per setting (`--prompt-cache 0`, 1, and the default of 4 conversations; default environment) and, in
interleaved rounds, lets `--clients` threads each hold a conversation of `--turns` turns: every request resends the
whole conversation (as chat clients do) with a new message of `--words` Russian words and asks for `--max-tokens`
greedy tokens. The clients run at once, so their conversations interleave at the server. Each round gives its wall
time; per setting the medians over rounds are printed with the round values, the prompt tokens and those the server
reported as cached (usage.prompt_tokens_details.cached_tokens), and whether all settings gave the same answers.
Standard library only.
"""
import argparse
import json
import random
import statistics
import threading
import time
import urllib.request

from serve_bench import start

WORDS = ("дом лес река город поле небо солнце ветер дорога окно книга письмо старик девочка кошка собака утро вечер "
         "зима лето весна осень море берег гора сад хлеб вода огонь песня ночь звезда мост поезд школа учитель друг "
         "семья праздник история сказка слово время человек мир работа дело вопрос ответ жизнь день год рука глаз "
         "голова сердце душа земля").split()


def message(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def conversation(port, client, turns, words, max_tokens, seed):
    rng = random.Random(seed * 1000 + client)
    messages, answers, prompt_tokens, cached_tokens = [], [], 0, 0
    for _ in range(turns):
        messages.append({"role": "user", "content": message(rng, words)})
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.loads(r.read())
        answer = out["choices"][0]["message"]["content"]
        prompt_tokens += out["usage"]["prompt_tokens"]
        cached_tokens += out["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    return answers, prompt_tokens, cached_tokens


def one_round(port, a, seed):
    results = [None] * a.clients

    def run(c):
        results[c] = conversation(port, c, a.turns, a.words, a.max_tokens, seed)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], sum(r[1] for r in results), sum(r[2] for r in results)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tinylm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--words", type=int, default=60)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "q8_0", "q4_0"])
    p.add_argument("--out", default="")
    a = p.parse_args()
    settings = {"no cache (--prompt-cache 0)": ["--prompt-cache", "0"],
                "one conversation (--prompt-cache 1)": ["--prompt-cache", "1"], "prompt cache (default, 4)": []}
    servers = {}
    try:
        for name, extra in settings.items():
            servers[name] = start(a.tinylm, a.model, a.precision, extra)
        rows = {name: [] for name in settings}
        names = list(settings)
        for r in range(a.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rows[name].append(one_round(servers[name][1], a, r))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    first = next(iter(rows.values()))
    same = all(x[1] == y[1] for rr in rows.values() for x, y in zip(first, rr))
    print(f"{a.clients} clients x {a.turns} turns, {a.words}-word messages, {a.max_tokens} greedy tokens a turn\n")
    print("| server | wall, median | rounds | prompt tokens | from the cache |\n| --- | ---: | --- | ---: | ---: |")
    summary = {}
    for name, rr in rows.items():
        walls = [x[0] for x in rr]
        med = statistics.median(walls)
        summary[name] = {"wall_s": med, "rounds": walls, "prompt_tokens": rr[0][2], "cached_tokens": rr[0][3]}
        print(f"| {name} | {med:.2f} s | {', '.join(f'{w:.2f}' for w in walls)} | {rr[0][2]} | {rr[0][3]} |")
    print(f"\nthe same answers in every setting: {same}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "clients": a.clients, "turns": a.turns, "words": a.words,
                       "max_tokens": a.max_tokens, "precision": a.precision, "same_answers": same,
                       "results": summary}, f, indent=2)


if __name__ == "__main__":
    main()
