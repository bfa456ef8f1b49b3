#!/usr/bin/env python3
"""all-MiniLM-L6-v2 through sentence-transformers (and peft), the oracle of tinylm's sentence-encoder tests.

  minilm_reference.py fixture --model DIR --out FILE
      embeddings of TEXTS (below) by SentenceTransformer(DIR).encode, written as safetensors ("embeddings",
      (len(TEXTS), 384)); the default-suite test compares tinylm's with these (tests/model/test_encoder.cpp)
  minilm_reference.py check --model DIR --work DIR
      reads what tests/model/sentence_check wrote into --work (texts.txt and, for each of base, full, lora,
      lora_merged, <name>.safetensors with tinylm's embeddings) and compares:
        base         SentenceTransformer(--model)                           tinylm on the same folder
        full         SentenceTransformer(work/full_model)                   tinylm's fine-tuned encoder (saved there)
        lora         peft.PeftModel(BertModel(--model), work/lora_adapter)  tinylm's LoRA encoder
                     mean-pooled and normalised as the sentence-transformers pipeline does
        lora_merged  SentenceTransformer(work/lora_model)                   the same, merged and saved by tinylm
      max |difference| <= 1e-5 for each; exit status 1 otherwise.
"""
import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

# Varied texts: languages, scripts, accents, emoji, control characters, long and empty-ish inputs.
TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog!",
    "Ångström, naïve café, résumé — diacritics everywhere.",
    "Привет, мир! Как дела?",
    "Казань — башкала Татарстана.",
    "Мин татарча сөйләшәм, ә син?",
    "東京は日本の首都です。",
    "北京欢迎你",
    "Emoji 🎉🚀 and symbols ©®™ ±×÷",
    "tab\tseparated\tvalues and\nnew lines",
    "control\x07chars\x1b[0m here",
    "ALL CAPS SHOUTING TEXT",
    "numbers 3.14159, 2,718 and 1e-9",
    "URLs like https://example.com/path?q=1&r=2",
    "a",
    "   leading and trailing spaces   ",
    "ŞİŞLİ İstanbul'da ıslak ğ ü ö ç",
    "Straße, Fußgänger und Größe",
    "Ελληνικά γράμματα και τόνοι",
    "עברית מימין לשמאל",
    "العربية من اليمين إلى اليسار",
    "supercalifragilisticexpialidocious " * 3,
    " ".join(["long"] * 300),
    "zero\u200bwidth\u200cjoiners\u200d",
]


def fixture(args):
    model = SentenceTransformer(args.model, device="cpu")
    e = model.encode(TEXTS, batch_size=8, convert_to_tensor=True, normalize_embeddings=False)
    save_file({"embeddings": e.float().contiguous()}, args.out)
    Path(args.out).with_suffix(".txt").write_text("".join(t.replace("\n", "\\n") + "\n" for t in TEXTS),
                                                 encoding="utf-8")
    print(f"wrote {args.out}: {tuple(e.shape)}, max_seq_length {model.max_seq_length}")


def peft_embeddings(base, adapter, texts, max_length):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            f = tok(texts[i:i + 16], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**f).last_hidden_state
            m = f["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1))
    return torch.cat(out)


def check(args):
    work = Path(args.work)
    texts = [t.replace("\\n", "\n") for t in (work / "texts.txt").read_text(encoding="utf-8").split("\n")[:-1]]
    base = SentenceTransformer(args.model, device="cpu")
    failures = 0
    for name, folder in (("base", args.model), ("full", work / "full_model"), ("lora", None),
                         ("lora_merged", work / "lora_model")):
        mine = load_file(str(work / f"{name}.safetensors"))["embeddings"]
        if folder is None:
            theirs = peft_embeddings(args.model, str(work / "lora_adapter"), texts, base.max_seq_length)
            who = "peft.PeftModel on BertModel"
        else:
            model = SentenceTransformer(str(folder), device="cpu")
            theirs = model.encode(texts, batch_size=16, convert_to_tensor=True)
            who = f"SentenceTransformer({folder})"
        diff = (mine - theirs.float()).abs().max().item()
        ok = diff <= 1e-5
        failures += not ok
        print(f"{name:<12} {who}: {len(texts)} texts, max |tinylm - reference| = {diff:.2e} {'OK' if ok else 'FAIL'}")
    if failures == 0:
        print("all embeddings agree")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fixture", "check"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.what == "fixture":
        fixture(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
