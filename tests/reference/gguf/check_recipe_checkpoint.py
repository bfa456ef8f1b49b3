"""A recipe checkpoint (04_russian_novels, its own trained BPE tokenizer) in llama.cpp: tokenization of 200 corpus
lines and greedy 32-token continuations of 10 prompts, against tinylm (docs/gguf.md).

  PYTHONPATH=$(bash tests/reference/gguf/llama_cpp_wheel.sh /work/venv/bin/python) /work/venv/bin/python \\
      tests/reference/gguf/check_recipe_checkpoint.py build/tools/tinylm CHECKPOINT ../shared/data/russian_novels/corpus

tinylm's ids are those of Hugging Face `tokenizers` on the same tokenizer.json (id-identical, tests/tokenizer);
its continuations come from `tinylm generate --temperature 0 --json`.
"""
import glob
import json
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama
from tokenizers import Tokenizer


def main(tinylm, model, corpus):
    gguf = tempfile.mkdtemp() + "/model-f32.gguf"
    subprocess.run([tinylm, "export-gguf", "--model", model, "--type", "f32", "--out", gguf], check=True,
                   capture_output=True)
    tok = Tokenizer.from_file(model + "/tokenizer.json")
    llm = Llama(gguf, n_ctx=256, n_batch=64, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)
    lines = []
    for f in sorted(glob.glob(corpus + "/*"))[:20]:  # ten lines of 20-300 characters from each of 20 novels
        with open(f, encoding="utf-8", errors="ignore") as fh:
            taken = 0
            for line in fh:
                line = line.strip()
                if 20 < len(line) < 300 and taken < 10:
                    lines.append(line)
                    taken += 1
    same = sum(llm.tokenize(l.encode(), add_bos=False, special=True) == tok.encode(l, add_special_tokens=False).ids
               for l in lines)
    print(f"tokenization: {same}/{len(lines)} lines give tinylm's ids")
    prompts = ["Сила войска зависит от его духа", "Что бы ни случилось, я всегда буду", "Чтобы жить честно",
               "Он вошёл в комнату и", "Весна в тот год", "— Послушайте, — сказал", "Москва", "Наташа посмотрела",
               "Было холодно, и", "В деревне"]
    agree = 0
    for p in prompts:
        ours = json.loads(subprocess.run([tinylm, "generate", "--model", model, "--prompt", p, "--max-tokens", "32",
                                          "--temperature", "0", "--json", "--quiet"], capture_output=True, text=True,
                                         check=True).stdout)["tokens"]
        llm.reset()
        llm.eval(tok.encode(p, add_special_tokens=False).ids)
        theirs = []
        for _ in range(32):
            theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([theirs[-1]])
        agree += ours == theirs
    print(f"greedy 32-token continuations: {agree}/{len(prompts)} identical")
    return 0 if same == len(lines) and agree == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
