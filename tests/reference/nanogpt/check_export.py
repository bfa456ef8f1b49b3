"""Reads a nanoGPT export of tinylm (03_corpus --export-nanogpt) the way nanoGPT's train.py does and checks it
against Hugging Face `tokenizers`: np.memmap with the dtype of meta.json, every id below vocab_size, and each
cleaned document of clean.jsonl, encoded by tokenizers from the same tokenizer.json, found as one contiguous run
of the exported tokens (document tokens left out), with nothing else in them. Special tokens spelled out in the
text are text (tokenizers' encode_special_tokens, tiktoken's encode_ordinary).

usage: check_export.py CORPUS_DIR NANOGPT_DIR    (CORPUS_DIR holds clean.jsonl; NANOGPT_DIR the export)
"""
import json
import os
import sys
from collections import OrderedDict

import numpy as np
from tokenizers import Tokenizer


def main(corpus_dir, nano_dir):
    meta = json.load(open(f"{nano_dir}/meta.json"))
    dtype = {"uint16": np.uint16, "uint32": np.uint32}[meta["dtype"]]
    vocab = meta["vocab_size"]
    assert (dtype == np.uint16) == (vocab <= 65536), meta
    bos, eos = meta["bos"], meta["eos"]
    tok = Tokenizer.from_file(f"{nano_dir}/tokenizer.json")
    tok.encode_special_tokens = True  # tinylm encodes special tokens spelled in the text as text (encode_ordinary)
    assert tok.get_vocab_size(with_added_tokens=True) == vocab, (tok.get_vocab_size(), vocab)

    docs = OrderedDict()
    for line in open(f"{corpus_dir}/clean.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        docs.setdefault(rec["doc"], []).append(rec["text"])
    streams = []
    total = 0
    for split in ("train", "val"):
        # nanoGPT memory-maps the file; numpy cannot map an empty one
        path = f"{nano_dir}/{split}.bin"
        ids = np.memmap(path, dtype=dtype, mode="r") if os.path.getsize(path) else np.zeros(0, dtype)
        assert len(ids) == meta[f"{split}_tokens"], (split, len(ids))
        assert int(ids.max(initial=0)) < vocab
        inner = [int(t) for t in ids if t != eos and t != bos]
        streams.append(inner)
        total += len(inner)
    found = 0
    for doc, paragraphs in docs.items():
        text = "".join(p + "\n" for p in paragraphs)
        want = tok.encode(text, add_special_tokens=False).ids
        # (no decode check here: a text that holds "▁" itself decodes to a space with Llama-2, here as in tinylm)
        hit = any(
            s[i : i + len(want)] == want for s in streams for i in range(len(s) - len(want) + 1) if s[i] == want[0]
        )
        assert hit, f"document {doc}: its {len(want)} ids are not a run of the export"
        found += len(want)
    assert found == total, (found, total)
    print(f"nanoGPT export OK: {len(docs)} documents, {total} tokens, {meta['dtype']}, vocabulary {vocab}")


if __name__ == "__main__":
    main(*sys.argv[1:])
