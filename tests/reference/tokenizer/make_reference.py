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
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = QWEN2_REGEX.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
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
    # The words of each splitting regex (GPT-2, Qwen2, Llama 3: Qwen2's with \p{N}{1,3}), as a Split pre-tokenizer
    # (behavior Isolated) cuts the texts and some digit runs: tinylm's scanners must cut them alike.
    from tokenizers import Regex, pre_tokenizers
    digits = ["1234567 89 0.5 12,345,678", "2024-12-07 at 10:30", "x1y22z333w4444", "٣٤٥٦٧ ١٢", "ⅫⅣ 1²³ 12345678901"]
    splits = {"tokenizers_version": tokenizers.__version__, "extra_texts": digits}
    for name, regex in (("gpt2", GPT2_REGEX), ("qwen2", QWEN2_REGEX), ("llama3", LLAMA3_REGEX)):
        pre = pre_tokenizers.Split(Regex(regex), behavior="isolated")
        splits[name] = {t["name"]: [w for w, _ in pre.pre_tokenize_str(t["text"])] for t in texts}
        splits[name].update({f"extra_{i}": [w for w, _ in pre.pre_tokenize_str(d)] for i, d in enumerate(digits)})
    dump(os.path.join(args.out, "expected_splits.json"), splits)
    print("wrote expected_splits.json")
    for fname in sorted(os.listdir(HERE)):
        if fname.startswith("trained_") and fname.endswith(".json"):
            tok = Tokenizer.from_file(os.path.join(HERE, fname))
            dump(os.path.join(args.out, "expected_" + fname), {"tokenizers_version": tokenizers.__version__,
                                                               "ids": encode_all(tok, texts)})
            print(f"wrote expected_{fname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
