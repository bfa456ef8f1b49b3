#!/usr/bin/env python3
"""Tiny Hugging Face model folders written by `transformers` itself, for tinylm's folder loader
(include/tinylm/io/hf_folder.hpp, tests/lora/test_hf_folder.cpp).

    python make_hf_folders.py [--out DIR]      (default: fixtures/ next to this file)

Writes two folders, as `save_pretrained` lays them out, plus what transformers computes on them:

  qwen2_f16/            Qwen2ForCausalLM (q/k/v biases, tied embeddings: no lm_head.weight in the file), weights
                        in float16 in one model.safetensors; a byte-level BPE tokenizer trained here with
                        `tokenizers` (Qwen2 split pattern, <|endoftext|>, <|im_start|>, <|im_end|>) saved through
                        PreTrainedTokenizerFast with tinylm's built-in ChatML template (the Qwen2.5 one, read from
                        include/tinylm/tokenizer/chat_template.hpp); generation_config.json with two eos ids and
                        Qwen2.5-Instruct's sampling defaults.
  llama_bf16_sharded/   LlamaForCausalLM (GQA, untied head), bfloat16, cut into several shards with
                        model.safetensors.index.json; no tokenizer files.
  expected.safetensors  per folder: input_ids and the logits of the transformers model on them, computed in
                        float64 from the stored (f16 / bf16) weights: `<name>.logits`, `<name>.input_ids`.
  expected.json         the tokenizer's ids for a text, and apply_chat_template renderings.

Random weights use N(0, 0.2^2) (norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2)) so that every tensor matters.
Reruns write identical files (fixed seeds). Pinned packages: ../requirements.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Привет, мир! Как дела? Расскажи анекдот про программиста.",
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Москва — столица России. Казань — столица Татарстана.",
    "Она читала книгу, а он писал письмо. Они пили чай с вареньем.",
    "Machine learning models are trained on large text corpora.",
    "Ответь коротко: сколько будет два плюс два? Четыре.",
] * 4
TEXT = "Привет! Расскажи анекдот про кота.\nHello, tokenizer 2024."
MESSAGES = [
    {"role": "system", "content": "Ты полезный помощник."},
    {"role": "user", "content": "Привет!"},
    {"role": "assistant", "content": "Здравствуйте! Чем помочь?"},
    {"role": "user", "content": "Расскажи анекдот."},
]


def chatml_template() -> str:
    """tinylm's built-in ChatML (Qwen2.5) template, from the C++ header, so that both sides use one text."""
    src = open(os.path.join(ROOT, "include", "tinylm", "tokenizer", "chat_template.hpp"), encoding="utf-8").read()
    m = re.search(r'chatml = R"tmpl\((.*?)\)tmpl"', src, re.S)
    assert m, "chatml template not found in chat_template.hpp"
    return m.group(1)


def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def logits_f64(model_cls, folder: str, ids: torch.Tensor) -> torch.Tensor:
    """Reload the saved folder (so that the stored f16/bf16 values are what runs) and compute in float64."""
    model = model_cls.from_pretrained(folder, dtype=torch.float64, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.to(torch.float32)


def make_tokenizer(folder: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=64
    )
    fast.chat_template = chatml_template()
    fast.save_pretrained(folder)
    return fast


def qwen2_f16(out: str, tensors: dict, expected: dict) -> None:
    folder = os.path.join(out, "qwen2_f16")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    tok = make_tokenizer(folder)
    vocab = len(tok)
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    randomise(model, 1)
    model.generation_config = GenerationConfig(
        bos_token_id=None,
        eos_token_id=[eos, pad],
        pad_token_id=pad,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
        max_new_tokens=32,
    )
    model.to(torch.float16).save_pretrained(folder)
    ids = torch.tensor([tok(TEXT)["input_ids"][:12], tok(MESSAGES[2]["content"])["input_ids"][:12]])
    assert ids.shape == (2, 12), ids.shape
    tensors["qwen2_f16.input_ids"] = ids
    tensors["qwen2_f16.logits"] = logits_f64(Qwen2ForCausalLM, folder, ids)
    expected["qwen2_f16"] = {
        "vocab": vocab,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "text": TEXT,
        "ids": tok(TEXT)["input_ids"],
        "messages": MESSAGES,
        "chat": tok.apply_chat_template(MESSAGES, tokenize=False),
        "chat_generation_prompt": tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
    }


def llama_bf16_sharded(out: str, tensors: dict, expected: dict) -> None:
    folder = os.path.join(out, "llama_bf16_sharded")
    shutil.rmtree(folder, ignore_errors=True)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    randomise(model, 2)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, max_length=64)
    model.to(torch.bfloat16).save_pretrained(folder, max_shard_size="8KB")
    shards = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    assert len(shards) > 1 and os.path.exists(os.path.join(folder, "model.safetensors.index.json")), shards
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    tensors["llama_bf16_sharded.input_ids"] = ids
    tensors["llama_bf16_sharded.logits"] = logits_f64(LlamaForCausalLM, folder, ids)
    expected["llama_bf16_sharded"] = {"shards": shards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tensors: dict = {}
    expected: dict = {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    qwen2_f16(args.out, tensors, expected)
    llama_bf16_sharded(args.out, tensors, expected)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(args.out, "expected.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for root, _, files in sorted(os.walk(args.out)):
        for name in sorted(files):
            path = os.path.join(root, name)
            print(f"{os.path.relpath(path, args.out):55s} {os.path.getsize(path):8d} bytes")


if __name__ == "__main__":
    main()
