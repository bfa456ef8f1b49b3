#!/usr/bin/env python3
"""A full-size Qwen2.5-0.5B-shaped checkpoint with random weights, written by `transformers` from the real
configuration (huggingface.co/Qwen/Qwen2.5-0.5B/config.json, written out below), for tinylm's slow load test
(tests/lora/test_qwen_full_size.cpp, ctest label "slow;torch").

    python make_qwen2_5_0_5b.py --out DIR

DIR/model/     config.json, generation_config.json, model-0000k-of-0000n.safetensors (bfloat16, shards of at
               most 300 MB) and model.safetensors.index.json, as save_pretrained writes them
DIR/expected.safetensors   input_ids (1, 8); transformers' logits (1, 8, 151936) on the stored (bfloat16)
               weights computed in float64 (`logits`, the oracle) and in float32 (`logits_f32`); the 4 tokens
               its greedy generate() picks after the ids (float32)
Skips what exists: the model folder (when its index is there) and expected.safetensors (delete DIR to rebuild).
Needs about 6 GB of memory.
"""

from __future__ import annotations

import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

# Qwen/Qwen2.5-0.5B config.json (transformers 4.40 era fields; rope_theta is read into rope_parameters by v5).
QWEN2_5_0_5B = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 896,
    "initializer_range": 0.02,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
NEW_TOKENS = 4


def write_model(folder: str) -> None:
    torch.manual_seed(0)
    config = Qwen2Config(**{k: v for k, v in QWEN2_5_0_5B.items() if k != "architectures"})
    config.architectures = QWEN2_5_0_5B["architectures"]
    model = Qwen2ForCausalLM(config)  # transformers' own init: N(0, 0.02^2) weights, zero biases, unit norms
    with torch.no_grad():  # random q/k/v biases, so that loading them is tested
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.02)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Qwen2.5-0.5B-shaped model: {n_params:,} parameters")
    model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=151643, do_sample=False)
    model.to(torch.bfloat16).save_pretrained(folder, max_shard_size="300MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    expected = os.path.join(args.out, "expected.safetensors")
    if os.path.exists(expected):
        print(f"{expected} exists: nothing to do")
        return
    folder = os.path.join(args.out, "model")
    if not os.path.exists(os.path.join(folder, "model.safetensors.index.json")):
        os.makedirs(folder, exist_ok=True)
        write_model(folder)
    ids = torch.randint(0, 151643, (1, 8), generator=torch.Generator().manual_seed(1))
    tensors = {"input_ids": ids}
    # The stored bfloat16 weights, upcast exactly: float64 is the oracle, float32 shows transformers' own drift.
    for dtype, key in ((torch.float64, "logits"), (torch.float32, "logits_f32")):
        model = Qwen2ForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
        model.eval()
        with torch.no_grad():
            tensors[key] = model(input_ids=ids).logits.to(torch.float32).contiguous()
            if dtype == torch.float32:
                out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                                     pad_token_id=0)
                tensors["greedy"] = out[:, ids.shape[1]:].contiguous()
        del model
    drift = ((tensors["logits_f32"] - tensors["logits"]).abs().max() / tensors["logits"].abs().max()).item()
    print(f"transformers float32 vs float64 logits: {drift:.3g} (max abs error / max abs logit)")
    save_file(tensors, expected, metadata={"format": "pt"})
    for name in sorted(os.listdir(folder)):
        print(f"model/{name:40s} {os.path.getsize(os.path.join(folder, name)):12,d} bytes")


if __name__ == "__main__":
    main()
