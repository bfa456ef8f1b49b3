"""tokenizer_config.json as transformers writes it, and transformers loading the folders tinylm writes.

  --out DIR    save_pretrained of the cases below into DIR/<case>/ (the committed copies are in config/;
               tinylm's tl::write_tokenizer_config must give the same bytes: test_tokenizer checks it)
  --check DIR  AutoTokenizer.from_pretrained(DIR/<case>) for each folder tinylm wrote (test_tokenizer's
               export_for_transformers_tokenizer_config): special tokens, length limit, chat template and ids
               must be what the case asked for, the ids those of `tokenizers` itself.

The cases must match tests/tokenizer/test_tokenizer_config.cpp (config_cases()).
"""
import argparse
import json
import os

from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CASES = {
    # name: (tokenizer file, special tokens, model_max_length or None, chat template or None)
    "byte_level_chat": ("trained_byte_level.json", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, 512,
                        CHATML + "{# привет #}"),
    "byte_fallback_plain": ("trained_byte_fallback.json",
                            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, None, None),
    "byte_fallback_all": ("trained_byte_fallback.json",
                          {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
                          4096, "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"),
}

TEXTS = ["Привет, мир! Hello world.", "<|im_start|>user\nхорошо<|im_end|>", "<s> a </s> b"]


def save_reference(out):
    for name, (file, special, max_len, template) in CASES.items():
        kwargs = dict(special)
        if max_len is not None:
            kwargs["model_max_length"] = max_len
        t = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(os.path.join(HERE, file)), **kwargs)
        if template is not None:
            t.chat_template = template
        t.save_pretrained(os.path.join(out, name))
        print("wrote", os.path.join(out, name))


def check(root):
    failures = 0
    for name, (file, special, max_len, template) in CASES.items():
        for style in ("transformers5", "transformers4"):
            d = os.path.join(root, style, name)
            t = AutoTokenizer.from_pretrained(d)
            raw = Tokenizer.from_file(os.path.join(HERE, file))
            got = {k: getattr(t, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
            want = {k: special.get(k) for k in got}
            problems = []
            if got != want:
                problems.append(f"special tokens {got} != {want}")
            want_len = max_len if max_len is not None else int(1e30)
            if t.model_max_length != want_len:
                problems.append(f"model_max_length {t.model_max_length} != {want_len}")
            if t.chat_template != template:
                problems.append(f"chat_template {t.chat_template!r} != {template!r}")
            for k, v in want.items():
                if v is not None and getattr(t, k + "_id") != raw.token_to_id(v):
                    problems.append(f"{k}_id {getattr(t, k + '_id')} != {raw.token_to_id(v)}")
            for text in TEXTS:
                ids = t(text, add_special_tokens=False).input_ids
                if ids != raw.encode(text, add_special_tokens=False).ids:
                    problems.append(f"ids of {text!r} differ")
            if template is not None:
                msgs = [{"role": "user", "content": "хорошо"}]
                if t.apply_chat_template(msgs, tokenize=False) == "":
                    problems.append("empty chat rendering")
            print(f"{style}/{name}: {'ok' if not problems else 'FAIL ' + '; '.join(problems)}")
            failures += bool(problems)
    if failures:
        raise SystemExit(f"{failures} folder(s) differ")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--check")
    a = ap.parse_args()
    if a.out:
        save_reference(a.out)
    if a.check:
        check(a.check)
