#!/usr/bin/env python3
"""Batch-1 greedy decoding of one model folder in tinylm (f32, and q8_0 copies) and in llama.cpp (the same model exported to GGUF
f32 and q8_0 by `tinylm export-gguf`), interleaved rounds, medians (issue 18: the number to beat).

  python3 benchmarks/generation/llama_cpp_peer.py --tinylm build/tools/tinylm --model DIR --new-tokens 256 --rounds 3

llama.cpp comes from llama-cpp-python built from source (tests/reference/gguf/llama_cpp_wheel.sh caches it; pass
its site folder with --llama-site). Both sides use 2 threads, a short prompt and greedy decoding of --new-tokens
tokens; tinylm's time is `tinylm generate --json`'s "seconds" (prefill and decoding, after loading), llama.cpp's the
same span around llama_cpp.Llama.eval calls (K/V cache f32 for the f32 file, llama.cpp's default f16 otherwise).
tinylm q8_0 is `tinylm generate --precision q8_0` (the decoding steps read q8_0 copies of the f32 weights, with f32
activations and an f32 K/V cache; llama.cpp's q8_0 also rounds the activations to 8 bits).
--half adds tinylm bf16 (`tinylm generate --precision bf16`: the decoding steps read bf16 copies of the weights)
and llama.cpp f16 (the GGUF in f16, f16 K/V cache): the two 2-bytes-a-weight paths.
--q4 adds tinylm q4_0 (`--precision q4_0`: q4_0 copies of every matrix, f32 scales, f32 activations) and llama.cpp
q4_0 (`export-gguf --type q4_0`: every matrix in Q4_0, as `llama-quantize --pure`; f16 scales, activations rounded to
8 bits, f16 K/V cache).

--prefill N measures the prompt instead (llama-bench's "pp"): a prompt of about N tokens (a Russian text repeated)
and one new token; prompt tokens/s is prompt tokens over the same spans (tinylm: `generate --max-tokens 1`;
llama.cpp: one eval of the prompt with n_batch 512, its default, then one step, as tinylm also takes).

--context N measures decoding after a long prompt: a prompt of about N tokens (the same text), --new-tokens tokens,
and decode tokens/s counts the tokens after the first over the time after it (tinylm: `generate --json`'s "seconds"
less its "first_token_seconds"; llama.cpp: the same span of its steps). It adds tinylm q8_0 with a bf16 KV cache
(`--kv-cache bf16`), the like of llama.cpp q8_0's default f16 cache; the f32 rows keep f32 caches on both sides.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def tinylm_run(tinylm, model, prompt, n, precision="f32", kv_cache="f32"):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)  # the default environment
    out = subprocess.run([tinylm, "generate", "--model", model, "--prompt", prompt, "--max-tokens", str(n),
                          "--temperature", "0", "--json", "--quiet", "--precision", precision, "--kv-cache",
                          kv_cache], env=env, capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    return j["seconds"], j["tokens"], j["first_token_seconds"]


def llama_run(llm, prompt_ids, n):
    import numpy as np
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt_ids)
    out = []
    first = 0.0
    for _ in range(n):
        if llm._logits_all:
            last = llm.scores[llm.n_tokens - 1]
        else:  # only the last position's logits were computed; eval() no longer copies them into scores
            last = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        nxt = int(np.argmax(last))
        out.append(nxt)
        if len(out) == 1:
            first = time.perf_counter() - start
        llm.eval([nxt])
    return time.perf_counter() - start, out, first


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tinylm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--llama-site", default=str(Path.home() / ".cache/tinylm/wheels/llama_cpp_site"))
    p.add_argument("--prompt", default="Сила войска зависит от его духа")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", default="/tmp/tinylm_llama_cpp_peer")
    p.add_argument("--out", default="")
    p.add_argument("--half", action="store_true", help="add tinylm bf16 and llama.cpp f16")
    p.add_argument("--q4", action="store_true", help="add tinylm q4_0 and llama.cpp q4_0")
    p.add_argument("--prefill", type=int, default=0, help="prompt tokens/s with a prompt of about this many tokens")
    p.add_argument("--context", type=int, default=0,
                   help="decode tokens/s after a prompt of about this many tokens (and tinylm q8_0 --kv-cache bf16)")
    a = p.parse_args()
    if a.prefill or a.context:  # a text repeated to about that many tokens in the model's tokenizer
        text = ("Князь Андрей смотрел на небо и думал о том, как странно устроена жизнь: всё то, что казалось ему "
                "важным вчера, сегодня стало пустым и ненужным, а то, чего он не замечал, открылось ему вдруг. ")
        per_copy = json.loads(subprocess.run(
            [a.tinylm, "generate", "--model", a.model, "--prompt", text * 4, "--max-tokens", "1", "--json",
             "--quiet"], capture_output=True, text=True, check=True).stdout)["prompt_tokens"] / 4
        a.prompt = text * max(1, round((a.prefill or a.context) / per_copy))
        if a.prefill:
            a.new_tokens = 1
    sys.path.insert(0, a.llama_site)
    from llama_cpp import Llama

    os.makedirs(a.work, exist_ok=True)
    files = {}
    for t in ("f32", "q8_0") + (("f16",) if a.half else ()) + (("q4_0",) if a.q4 else ()):
        files[t] = os.path.join(a.work, f"model-{t}.gguf")
        subprocess.run([a.tinylm, "export-gguf", "--model", a.model, "--type", t, "--out", files[t]], check=True,
                       capture_output=True)
    long_prompt = a.prefill or a.context
    ctx = 64 + a.new_tokens + 2 * long_prompt  # room for the other tokenizer's count
    llms = {t: Llama(files[t], n_ctx=ctx, n_batch=512 if long_prompt else 64, n_threads=2, verbose=False,
                     logits_all=not long_prompt,
                     **({"type_k": 0, "type_v": 0} if t == "f32" else {})) for t in files}
    prompt_ids = json.loads(subprocess.run([a.tinylm, "generate", "--model", a.model, "--prompt", a.prompt,
                                            "--max-tokens", "1", "--json", "--quiet"], capture_output=True,
                                           text=True, check=True).stdout)["prompt_tokens"]
    names = ["tinylm f32", "llama.cpp f32", "tinylm q8_0", "llama.cpp q8_0"]
    if a.half:
        names += ["tinylm bf16", "llama.cpp f16"]
    if a.q4:
        names += ["tinylm q4_0", "llama.cpp q4_0"]
    if a.context:
        names += ["tinylm q8_0 kv bf16"]
    results = {name: [] for name in names}
    same = None
    for r in range(a.rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        for name in order:
            if name.startswith("tinylm"):
                kv = "bf16" if name.endswith("kv bf16") else "f32"
                seconds, toks, first = tinylm_run(a.tinylm, a.model, a.prompt, a.new_tokens, name.split()[1], kv)
                if name == "tinylm f32":
                    ours = toks
            else:
                t = name.split()[-1]
                ids = llms[t].tokenize(a.prompt.encode(), add_bos=False, special=True)
                seconds, toks, first = llama_run(llms[t], ids, a.new_tokens)
                if t == "f32":
                    theirs = toks
                    their_prompt = len(ids)
            if a.prefill:
                results[name].append(prompt_ids / seconds)
            elif a.context:  # the steps after the first token
                results[name].append((a.new_tokens - 1) / (seconds - first))
            else:
                results[name].append(a.new_tokens / seconds)
        same = ours == theirs
    print(f"prompt {prompt_ids} tokens ({their_prompt} in llama.cpp's tokenizer), {a.new_tokens} new tokens, "
          f"{a.rounds} rounds; tinylm and llama.cpp f32 greedy tokens {'identical' if same else 'DIFFERENT'}")
    what = "prompt tokens/s" if a.prefill else ("decode tokens/s after the first" if a.context else "decode tokens/s")
    print(f"| | {what} (median) | rounds | / llama.cpp f32 |\n| --- | ---: | --- | ---: |")
    base = statistics.median(results["llama.cpp f32"])
    summary = {}
    for name, rows in results.items():
        m = statistics.median(rows)
        summary[name] = {"median": m, "rounds": rows}
        print(f"| {name} | {m:.1f} | {', '.join(f'{x:.1f}' for x in rows)} | {m / base:.2f} |")
    if a.out:
        json.dump({"model": a.model, "new_tokens": a.new_tokens, "prompt_tokens": prompt_ids, "measured": what,
                   "same_greedy_tokens": same, "results": summary},
                  open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
