#!/usr/bin/env python3
"""Expected token ids for tinylm's tokenizer tests, from Hugging Face `tokenizers` (the reference).

  make_reference.py [--data-dir DIR] [--out DIR]      ids of texts.json for the real tokenizer.json files
                                                       (DIR/tokenizers/{qwen3,llama2}) and for the tokenizers
                                                       tinylm trained (trained_*.json here) -> expected_*.json
  make_reference.py --check TOKENIZER_JSON IDS_JSON    HF loads a tokenizer.json written by tinylm and must give
                                                       the ids tinylm gave (IDS_JSON: {"name": [ids...]}); exit 1
                                                       on any difference

The real tokenizer files are not committed; the data directory is TINYLM_DATA_DIR or ../shared/data next to
the repository.
"""
import argparse
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def load_texts():
    with open(os.path.join(HERE, "texts.json"), encoding="utf-8") as f:
        return json.load(f)


def encode_all(tok, texts, add_special_tokens=False):
    out = {}
    for t in texts:
        enc = tok.encode(t["text"], add_special_tokens=add_special_tokens)
        out[t["name"]] = enc.ids
    return out


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("TINYLM_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--check", nargs=2, metavar=("TOKENIZER_JSON", "IDS_JSON"))
    args = ap.parse_args()
    texts = load_texts()

    if args.check:
        tok = Tokenizer.from_file(args.check[0])
        with open(args.check[1], encoding="utf-8") as f:
            ours = json.load(f)
        theirs = encode_all(tok, texts)
        bad = [name for name in ours if ours[name] != theirs.get(name)]
        for name in bad:
            print(f"{name}: tinylm {ours[name][:20]}... HF {theirs.get(name, [])[:20]}...")
        print(f"checked {len(ours)} texts with tokenizers {tokenizers.__version__}: {len(bad)} differ")
        return 1 if bad else 0

    os.makedirs(args.out, exist_ok=True)
    for name in ("qwen3", "llama2"):
        path = os.path.join(args.data_dir, "tokenizers", name, "tokenizer.json")
        if not os.path.exists(path):
            print(f"skip {name}: {path} not found")
            continue
        tok = Tokenizer.from_file(path)
        result = {"tokenizers_version": tokenizers.__version__, "ids": encode_all(tok, texts),
                  "ids_with_special": encode_all(tok, texts, add_special_tokens=True)}
        dump(os.path.join(args.out, f"expected_{name}.json"), result)
        print(f"wrote expected_{name}.json")
    for fname in sorted(os.listdir(HERE)):
        if fname.startswith("trained_") and fname.endswith(".json"):
            tok = Tokenizer.from_file(os.path.join(HERE, fname))
            dump(os.path.join(args.out, "expected_" + fname), {"tokenizers_version": tokenizers.__version__,
                                                               "ids": encode_all(tok, texts)})
            print(f"wrote expected_{fname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
