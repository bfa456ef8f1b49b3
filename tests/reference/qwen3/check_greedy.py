#!/usr/bin/env python3
"""transformers and llama.cpp continue a prompt greedily as `tinylm generate` does (scripts/qwen3-0.6b-check.sh).

    check_greedy.py TINYLM FOLDER [FILE.gguf ...]

tinylm's greedy continuation (`TINYLM generate --model FOLDER --temperature 0 --json`, 24 tokens) against
transformers' AutoModelForCausalLM on FOLDER (f32, `generate(do_sample=False)`) and against llama.cpp
(llama-cpp-python, f32 KV cache, argmax of each step's logits) on each GGUF file, with the prompt ids each
tokenizer makes. Prints the counts of equal tokens; exits 1 when transformers or an f32 file differs anywhere (a
quantised file's count is printed, not required).
"""
import json
import subprocess
import sys

import numpy as np

PROMPT = "Сила войска зависит от его духа"
NEW = 24


def tinylm_greedy(tinylm: str, model: str) -> dict:
    out = subprocess.run([tinylm, "generate", "--model", model, "--prompt", PROMPT, "--max-tokens", str(NEW),
                          "--temperature", "0", "--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    tinylm, folder, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    want = tinylm_greedy(tinylm, folder)["tokens"]
    print(f"tinylm {folder}: {want}")
    failures = 0

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    ids = AutoTokenizer.from_pretrained(folder)(PROMPT, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model.generate(ids, max_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = got[0, ids.shape[1]:].tolist()
    same = sum(a == b for a, b in zip(got, want))
    print(f"transformers {type(model).__name__}: prompt {ids.shape[1]} tokens; greedy tokens equal: {same}/{NEW}")
    failures += same != NEW
    del model

    from llama_cpp import Llama
    for path in files:
        llm = Llama(model_path=path, n_ctx=128, n_batch=64, n_threads=2, logits_all=True, verbose=False, type_k=0,
                    type_v=0)
        prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        llm.eval(prompt)
        got = []
        for _ in range(NEW):
            got.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([got[-1]])
        same = sum(a == b for a, b in zip(got, want))
        from_file = tinylm_greedy(tinylm, path)["tokens"]
        print(f"llama.cpp {path}: prompt {len(prompt)} tokens; greedy tokens equal: {same}/{NEW}; "
              f"tinylm on the file equal to the folder's: {from_file == want}")
        failures += ("f32" in path and same != NEW) + (from_file != want and "f32" in path)
        del llm
    print("passed" if failures == 0 else f"{failures} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
