#!/usr/bin/env python3
"""The tokenizer study of docs/tatar.md (analysis only; the recipe itself needs no Python).

  tokenizer_study.py split CLEAN_JSONL DIR   one text file per source file of the cleaned corpus, so that the
                                             tokenizer lab holds out the end of every source, not only the last
  tokenizer_study.py heldout DIR LAB V...    per vocabulary V: characters and bytes per token, tokens per
                                             whitespace word, and how many vocabulary entries the held-out text
                                             uses 1-4 times or never (the lab's tokenizer_V.json, read by
                                             Hugging Face `tokenizers`, which also cross-checks the lab)

The held-out text is what 02_tokenizer_lab holds out: from the first line end after 90% of each file's bytes.
"""
import collections
import glob
import json
import os
import sys


def split(clean_jsonl, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    files, sizes = {}, collections.Counter()
    for line in open(clean_jsonl, encoding="utf-8"):
        r = json.loads(line)
        src = os.path.basename(r["source"].split(":")[0])
        if src not in files:
            files[src] = open(os.path.join(out_dir, src), "w", encoding="utf-8")
        files[src].write(r["text"] + "\n")
        sizes[src] += len(r["text"].encode()) + 1
    for name, n in sizes.most_common():
        print(f"{name}: {n} bytes")


def heldout(corpus_dir, lab_dir, vocabs):
    from tokenizers import Tokenizer

    held = []
    for f in sorted(glob.glob(os.path.join(corpus_dir, "*"))):
        data = open(f, "rb").read()
        cut = data.find(b"\n", int(len(data) * 0.9))
        cut = len(data) if cut < 0 else cut + 1
        held += [line for line in data[cut:].decode("utf-8").split("\n") if line]
    text = "\n".join(held)
    chars, nbytes, words = len(text), len(text.encode()), len(text.split())
    print(f"held-out: {len(held)} lines, {chars} characters, {nbytes} bytes, {words} whitespace words")
    print("| vocabulary | chars/token | bytes/token | tokens/word | entries used 1-4 times | entries never used |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in vocabs:
        tok = Tokenizer.from_file(os.path.join(lab_dir, f"tokenizer_{v}.json"))
        ids = [i for enc in tok.encode_batch(held) for i in enc.ids]
        counts = collections.Counter(ids)
        size = tok.get_vocab_size()
        rare = sum(1 for i in range(size) if 1 <= counts[i] <= 4)
        unused = sum(1 for i in range(size) if counts[i] == 0)
        n = len(ids)
        print(f"| {v} | {chars / n:.2f} | {nbytes / n:.2f} | {n / words:.3f} | {rare} ({100 * rare / size:.1f}%) "
              f"| {unused} ({100 * unused / size:.1f}%) |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5 and sys.argv[1] == "heldout":
        heldout(sys.argv[2], sys.argv[3], [int(v) for v in sys.argv[4:]])
    else:
        sys.exit(__doc__)
