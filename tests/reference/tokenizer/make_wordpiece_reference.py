#!/usr/bin/env python3
"""Expected ids for tinylm's WordPiece tokenizer, from Hugging Face `tokenizers` (the reference), on the
all-MiniLM-L6-v2 tokenizer.json (BERT uncased).

  make_wordpiece_reference.py [--tokenizer PATH] [--out FILE]
      our own texts (hand-written lines and deterministic mixtures of them, random code points from chosen
      Unicode blocks): ids plain and with [CLS]/[SEP], truncated, pairs, padded batches, decode
      -> expected_wordpiece_minilm.json (committed)
  make_wordpiece_reference.py --shared-data DIR --out FILE
      the same for lines of DIR/tatar and DIR/russian_novels (not committed: made at test time)

The tokenizer is found under TINYLM_MODELS_DIR or ~/.cache/tinylm/models (scripts/fetch-models.sh).
"""
import argparse
import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.environ.get("TINYLM_MODELS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tinylm", "models")

HAND_WRITTEN = [
    "Hello, World!", "The quick brown fox jumps over the lazy dog.", "unaffable unbelievably tokenization",
    "I don't think it's what you've said; we're sure they'd've known.", "e-mail: someone@example.com, http://x.y/z?q=1&r=2",
    "Привет, мир! Как дела?", "Мастер и Маргарита — роман Михаила Булгакова.", "ЁЛКА ёлка Ёжик", "съешь же ещё этих мягких французских булок",
    "Татарстан Республикасы башкаласы — Казан.", "Мин татарча сөйләшәм, әни өйдә.", "җил, ңа, һава, үзе, өмет, әкият",
    "café naïve Ångström résumé jalapeño façade coöperate", "CAFÉ NAÏVE ÅNGSTRÖM", "Zürich Straße Fußball STRASSE ß ẞ",
    "İstanbul ıspanak İI ıi", "Σίσυφος ΣΑΣ ΌΣΟΣ αβγ", "ﬁ ﬂ ﬀ ligatures", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ　１２３！？", "ｶﾀｶﾅ ﾊﾝｶｸ",
    "中文文本，包括标点。", "日本語のテキストです。カタカナ、ひらがな。", "한국어 텍스트입니다.", "混合 mixed 文本 text",
    "emoji 👍 👍🏽 👨‍👩‍👧 🇷🇺 🇹🇹 ❤️ 🥰 🫠 🪿", "control\x00chars\x01here\x7f\x85and\u0085more", "tab\tnew\nline\r\ncr\rff\x0cvt\x0b",
    "zero\u200bwidth\u200cjoin\u200dbom\ufeffword", "replacement \ufffd char", "soft\u00adhyphen", "rtl\u202emark\u202c",
    "e\u0301 a\u0308 o\u0302 n\u0303 И\u0306 и\u0306", "Z\u0351\u0352\u0353a\u0354\u0355l\u0356\u0357g\u0358o\u0359",
    "!!!???...,,,;;;:::---———«»„“”‘’…‹›", "$100 €50 ₽300 £20 ¥1000 ₹5", "∑∫√∞≠≤≥±×÷", "a+b=c; x<y>z; a|b^c~d`e",
    "[CLS] already has [SEP] special [MASK] tokens [UNK] and [PAD]", "[cls] lowercase [sep] is not special",
    "[MASK][MASK]no spaces[SEP]", "partial [MAS and [SE", "x" * 100, "y" * 101, "supercalifragilistic" * 6,
    "Антидисэстаблишментарианство" * 4, "a" * 99 + " " + "b" * 150, "word" + "\u0301" * 120,
    "العربية نص", "עברית טקסט", "हिन्दी पाठ", "ภาษาไทย", "ქართული", "Հայերեն", "Ελληνικά",
    "1234567890 3.14159 1,000,000 10^6 1e-9", "C++ and C# and F# and .NET", "#hashtag @mention $ticker",
    "   leading and trailing spaces   ", "\n\n\n", "", " ", "\t", "a", ".", "[SEP]",
    "U+A7CB \ua7cb \ua7cc new letters 𐵐 \U00016ea0", "private \ue000\uf8ff\U000f0000 use", "DIVES \U00011938 AKURU",
    "math 𝐀𝐁𝐂 𝕏 𝔸", "superscript ² ³ ¹ ⁴ subscript ₁ ₂", "roman Ⅻ ⅻ ⅷ", "circled ① ② Ⓐ ⓐ",
    "ǅungla ǈ ǋ Ǳ", "ﬀﬁﬂﬃﬄﬅﬆ", "ＡＢＣａｂｃ", "Ǆ ǅ ǆ", "K Å Ω", "ΐ ΰ ŉ ǰ",
]

WORDS = {
    "en": "the of and to in is was for on that with as by this are be from at or it an have not which but they all "
          "tokenizer sentence encoder retrieval embeddings similarity running jumped happily unbelievable".split(),
    "ru": "и в не на я что он с как а это по но к из у за от о так же то все она вы ты мы были было "
          "вероятно соответствующий токенизация предложение".split(),
    "tt": "һәм бу бер дә да ул мин син без сез алар әйе юк бик яхшы кеше көн ел өй су тел китап укый "
          "сөйләшә белән өчен".split(),
    "accents": "café naïve résumé déjà façade piñata crème brûlée über Ärger Öl Ægir øre Łódź Čech Şeker Ğ".split(),
    "cjk": ["中", "文", "日本", "語", "漢字", "한국", "ひらがな", "カタカナ", "𠀀", "𪜀", "豈", "丽"],
    "emoji": ["😀", "👍🏽", "🎉", "🔥", "🇺🇸", "👩‍💻", "🥲", "🫶", "⭐", "✨"],
    "punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["«", "»", "—", "–", "…", "¿", "¡", "·", "、", "。", "「", "」"],
    "odd": ["\x00", "\x01", "\x1f", "\x7f", "\u0085", "\u00ad", "\u200b", "\u200d", "\u2028", "\u3000", "\ufeff",
            "\ufffd", "\t", "\n", "\r", "\u00a0", "\u2009"],
    "special": ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]"],
}

BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x530, 0x58F),
          (0x5D0, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x2100, 0x22FF),
          (0x3000, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAC80), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF),
          (0x1F900, 0x1FAFF), (0xE000, 0xE010), (0x10D40, 0x10D8F), (0x16EA0, 0x16EDF), (0x11900, 0x1195F)]


def our_texts():
    rng = random.Random(15)
    texts = list(HAND_WRITTEN)
    keys = list(WORDS)
    seps = [" ", " ", " ", "", "\t", "\n", ", ", ". ", "  ", "-"]
    while len(texts) < 900:
        n = rng.randint(1, 12)
        parts = []
        for _ in range(n):
            kind = rng.choice(keys)
            w = rng.choice(WORDS[kind])
            if rng.random() < 0.15:
                w = w.upper()
            elif rng.random() < 0.1:
                w = w.capitalize()
            parts.append(w)
            parts.append(rng.choice(seps))
        texts.append("".join(parts))
    while len(texts) < 1150:
        lo, hi = rng.choice(BLOCKS)
        s = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.2:
                s.append(" ")
            else:
                s.append(chr(rng.randint(lo, hi)))
        texts.append("".join(s))
    # Long words around max_input_chars_per_word (100 characters).
    for n in (98, 99, 100, 101, 102, 150):
        texts.append("ab" * (n // 2) + "c" * (n % 2))
        texts.append("é" * n)
        texts.append("中" * n)
    return texts


def shared_texts(data_dir):
    texts = []
    for rel, n in (("tatar/apertium_tat_rus.tat.txt", 400), ("tatar/ntrex128.rus.txt", 200),
                   ("tatar/ntrex128.eng.txt", 200)):
        path = os.path.join(data_dir, rel)
        if not os.path.exists(path):
            print(f"skip {rel}: not found")
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [l.rstrip("\n") for l in f]
        texts += lines[:n]
    return texts


def reference(tok_path, texts):
    tok = Tokenizer.from_file(tok_path)
    tok.no_padding()
    tok.no_truncation()
    rng = random.Random(16)
    out = {"tokenizers_version": tokenizers.__version__, "texts": texts}
    plain = tok.encode_batch(texts, add_special_tokens=False)
    special = tok.encode_batch(texts, add_special_tokens=True)
    out["ids"] = [e.ids for e in plain]
    out["decode"] = [tok.decode(e.ids) for e in special]
    out["decode_keep_special"] = [tok.decode(e.ids, skip_special_tokens=False) for e in special[:200]]
    n = len(texts)
    out["truncated"] = []
    for _ in range(300):
        i, max_length = rng.randrange(n), rng.choice([3, 4, 5, 8, 16, 32])
        tok.enable_truncation(max_length)
        e = tok.encode(texts[i])
        out["truncated"].append({"text": i, "max_length": max_length, "ids": e.ids, "cut": len(e.overflowing) > 0})
    out["pairs"] = []
    for _ in range(300):
        i, j, max_length = rng.randrange(n), rng.randrange(n), rng.choice([0, 5, 6, 8, 11, 16, 32, 64])
        if max_length:
            tok.enable_truncation(max_length)
        else:
            tok.no_truncation()
        e = tok.encode(texts[i], texts[j])
        out["pairs"].append({"a": i, "b": j, "max_length": max_length, "ids": e.ids, "type_ids": e.type_ids,
                             "cut": len(e.overflowing) > 0})
    out["batches"] = []
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    for k in range(80):
        rows = [rng.randrange(n) for _ in range(rng.randint(1, 8))]
        max_length = rng.choice([4, 8, 16, 32, 128, 512])
        tok.enable_truncation(max_length)
        if k % 2:
            pairs = [rng.randrange(n) for _ in rows]
            enc = tok.encode_batch([(texts[a], texts[b]) for a, b in zip(rows, pairs)])
        else:
            pairs = None
            enc = tok.encode_batch([texts[a] for a in rows])
        out["batches"].append({"rows": rows, "pairs": pairs, "max_length": max_length, "ids": [e.ids for e in enc],
                               "type_ids": [e.type_ids for e in enc],
                               "lengths": [sum(e.attention_mask) for e in enc],
                               "mask_is_prefix": all(e.attention_mask == sorted(e.attention_mask, reverse=True)
                                                     for e in enc),
                               "cut": sum(len(e.overflowing) > 0 for e in enc)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(MODELS, "all-MiniLM-L6-v2", "tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "expected_wordpiece_minilm.json"))
    ap.add_argument("--shared-data", help="texts from this data dir instead of our own")
    args = ap.parse_args()
    texts = shared_texts(args.shared_data) if args.shared_data else our_texts()
    result = reference(args.tokenizer, texts)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(texts)} texts, tokenizers {tokenizers.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
