#!/usr/bin/env python3
"""Hugging Face's behaviour after `add_tokens`, the reference for tinylm's tl::add_tokens (issue 16).

  --out FILE            for each tokenizer below, add TOKENS as transformers does
                        (PreTrainedTokenizerFast.add_tokens, tokenizers' AddedToken flags) and record the
                        "added_tokens" section save_pretrained writes to tokenizer.json, the tokenizer_config.json
                        text, the ids and decoded text of TEXTS (+ texts.json) -> expected_added_tokens.json
  --check DIR           DIR/<tokenizer>/ holds what tinylm wrote after tl::add_tokens (tokenizer.json,
                        tokenizer_config.json, ids.json); Hugging Face must find the same added tokens, the same
                        config bytes and give tinylm's ids when it loads tinylm's file; exit 1 on a difference

The real tokenizers (qwen3, llama2) come from the data directory (TINYLM_DATA_DIR or ../shared/data beside the
repository) and are skipped without it; the trained ones are committed here. The tokens and texts must match
tests/tokenizer/test_add_tokens.cpp (new_tokens()).
"""
import argparse
import json
import os
import sys
import tempfile

from tokenizers import AddedToken, Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

# (content, flags): every flag of AddedToken, normal and special tokens, a word with a space, Latin-1 letters.
TOKENS = [
    ("нейросеть", {}),
    ("дипфейк", {}),
    ("краш", {"single_word": True, "lstrip": True}),
    ("кринж", {"rstrip": True}),
    ("хайп", {"normalized": False}),
    ("Нью Йорк", {}),
    ("café", {}),
    ("<новое>", {"special": True}),
    ("вайб", {"single_word": True}),
]

TEXTS = {
    "words": "нейросеть и дипфейк: нейросети, дипфейки, нейросетьб",
    "single_word": " краш  краши  краш, вайбы вайб вайб. вайб",
    "strip": "кринж   и кринж\tкринж",
    "not_normalized": "хайп, ХАЙП, мега-хайп",
    "space_inside": "Нью Йорк и Нью  Йорк, НьюЙорк",
    "latin1": "Мой кафе café! Café",
    "special": "<новое> слово<новое>",
    "start_and_end": "нейросеть",
}


def tokenizer_files(data_dir):
    files = {
        "trained_byte_level": os.path.join(HERE, "trained_byte_level.json"),
        "trained_byte_fallback": os.path.join(HERE, "trained_byte_fallback.json"),
    }
    for name in ("qwen3", "llama2"):
        p = os.path.join(data_dir, "tokenizers", name, "tokenizer.json")
        if os.path.exists(p):
            files[name] = p
        else:
            print(f"note: {p} not found; {name} skipped", file=sys.stderr)
    return files


def all_texts():
    with open(os.path.join(HERE, "texts.json"), encoding="utf-8") as f:
        texts = {t["name"]: t["text"] for t in json.load(f)}
    texts.update(TEXTS)
    return texts


def with_added(path):
    t = PreTrainedTokenizerFast(tokenizer_file=path)
    for content, flags in TOKENS:
        flags = dict(flags)
        special = flags.pop("special", False)
        # transformers' add_tokens: a plain word is normalized unless special (AddedToken's default is True).
        tok = AddedToken(content, normalized=flags.pop("normalized", not special), special=special, **flags)
        n = t.add_tokens([tok], special_tokens=special)
        assert n == 1, f"{content} was not added"
    return t


def saved(t):
    with tempfile.TemporaryDirectory() as d:
        t.save_pretrained(d)
        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            added = json.load(f)["added_tokens"]
        with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
            config = f.read()
    return added, config


def reference(path):
    t = with_added(path)
    added, config = saved(t)
    ids, decoded = {}, {}
    for name, text in all_texts().items():
        ids[name] = t(text, add_special_tokens=False).input_ids
        decoded[name] = t.decode(ids[name])
    return {"added_tokens": added, "tokenizer_config": config, "ids": ids, "decoded": decoded}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("TINYLM_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    ap.add_argument("--out")
    ap.add_argument("--check")
    a = ap.parse_args()
    files = tokenizer_files(a.data_dir)
    if a.out:
        out = {name: reference(p) for name, p in files.items()}
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.write("\n")
        print("wrote", a.out)
    if a.check:
        bad = 0
        for name, p in files.items():
            d = os.path.join(a.check, name)
            if not os.path.isdir(d):
                print(f"{name}: tinylm wrote nothing (skipped there too?)")
                bad += 1
                continue
            ref = reference(p)
            problems = []
            with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
                if json.load(f)["added_tokens"] != ref["added_tokens"]:
                    problems.append("added_tokens differ")
            with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
                if f.read() != ref["tokenizer_config"]:
                    problems.append("tokenizer_config.json differs")
            with open(os.path.join(d, "ids.json"), encoding="utf-8") as f:
                tl_ids = json.load(f)
            # transformers loading tinylm's folder encodes as tinylm did, and as HF's own add_tokens does.
            hf = AutoTokenizer.from_pretrained(d)
            raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            for text_name, text in all_texts().items():
                for who, ids in (("AutoTokenizer", hf(text, add_special_tokens=False).input_ids),
                                 ("tokenizers", raw.encode(text, add_special_tokens=False).ids),
                                 ("reference", ref["ids"][text_name])):
                    if ids != tl_ids[text_name]:
                        problems.append(f"{text_name}: {who} {ids} != tinylm {tl_ids[text_name]}")
            print(f"{name}: {'ok' if not problems else 'FAIL ' + '; '.join(problems[:5])}")
            bad += bool(problems)
        if bad:
            sys.exit(1)


if __name__ == "__main__":
    main()
