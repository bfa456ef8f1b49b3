#!/usr/bin/env python3
"""QLoRA parity: peft's LoRA on bitsandbytes' Linear4bit layers (CPU) against tinylm's QLoRA decoder.

    python check_qlora_peft.py DIR      (DIR written by `test_qlora --run_test=qlora/export_for_peft`)

DIR/base                  the base model (save_pretrained: embeddings, norms, head; projections dequantised)
DIR/nf4.safetensors       each projection's 4-bit state exactly as tinylm holds it: packed codes, 8-bit scale
                          codes, second-level scales, offset (bitsandbytes' layout, blocks 64 / 256)
DIR/adapter               the LoRA adapter (save_adapter)
DIR/expected.safetensors  input_ids, labels, and tinylm's logits, loss and LoRA gradients

Every q/k/v/o/gate/up/down nn.Linear of the transformers model becomes a bitsandbytes Linear4bit whose
Params4bit/QuantState hold tinylm's bytes (so both sides compute with the same 4-bit weights), then
peft.PeftModel.from_pretrained attaches the adapter (its LoRA layers call Linear4bit.forward). The script
compares logits, loss and the 28 LoRA gradients, and prints the errors; it exits non-zero above 1e-4
(relative to the largest value).
"""

from __future__ import annotations

import sys

import bitsandbytes as bnb
import bitsandbytes.functional as F
import peft
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def linear4bit_from_tinylm(linear: torch.nn.Linear, state: dict, name: str) -> bnb.nn.Linear4bit:
    out_f, in_f = linear.weight.shape
    codes = state[name + ".codes"].to(torch.uint8).reshape(-1, 1)
    code2 = F.create_dynamic_map(signed=True)  # the 8-bit code of the scales (tinylm's nf4_scale_code)
    state2 = F.QuantState(absmax=state[name + ".absmax2"], code=code2, blocksize=256, dtype=torch.float32)
    qs = F.QuantState(
        absmax=state[name + ".qabsmax"].to(torch.uint8),
        shape=torch.Size([out_f, in_f]),
        dtype=torch.float32,
        blocksize=64,
        code=F.get_4bit_type("nf4", device="cpu"),
        quant_type="nf4",
        offset=state[name + ".offset"].reshape(()),
        state2=state2,
    )
    layer = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(
        codes, requires_grad=False, quant_state=qs, blocksize=64, compress_statistics=True, quant_type="nf4",
        module=layer, bnb_quantized=True,
    )
    layer.quant_state = qs
    # On CPUs with AVX-512 BF16, bitsandbytes 0.50 repacks the weight of a Linear4bit in eval mode for a bf16 kernel
    # (_convert_weight_packed_for_cpu): bf16 products are no f32 reference, and on this hand-made state the repacked
    # matmul raised "shape '[32, 0]' is invalid" (AMD Zen 5). The portable path dequantises and multiplies in f32.
    layer.support_avx512bf16_for_cpu = False
    return layer


def dequantize_4bit_by_definition(A, absmax, blocksize, quant_type, shape, dtype):
    """bitsandbytes' default (pure torch) dequantize_4bit kernel, the definition and what devices without a native
    kernel run."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    return torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(keys, A, absmax, blocksize, quant_type, shape,
                                                                    dtype)


def main() -> None:
    d = sys.argv[1]
    state = load_file(f"{d}/nf4.safetensors")
    expected = load_file(f"{d}/expected.safetensors")
    model = AutoModelForCausalLM.from_pretrained(f"{d}/base", dtype=torch.float32, attn_implementation="eager")
    worst_weight = 0.0
    saved = []  # (name, Linear4bit, tinylm's dequantised weight)
    for i, layer in enumerate(model.model.layers):
        for parent in (layer.self_attn, layer.mlp):
            for p in PROJECTIONS:
                if not hasattr(parent, p):
                    continue
                name = f"model.layers.{i}.{'self_attn' if parent is layer.self_attn else 'mlp'}.{p}.weight"
                q = linear4bit_from_tinylm(getattr(parent, p), state, name)
                saved.append((name, q, getattr(parent, p).weight.data))
                setattr(parent, p, q)
    # bitsandbytes' native CPU dequantize_4bit is wrong on some CPUs (0.50.2 on an AMD Zen 5: most values of these
    # weights; tests/reference/quant/make_nf4_reference.py). The check runs on its default kernel, the definition
    # (Linear4bit.forward dequantises through it), and prints where the native kernel disagrees.
    native = [F.dequantize_4bit(q.weight.data, q.weight.quant_state) for _, q, _ in saved]
    torch.library.register_kernel("bitsandbytes::dequantize_4bit", "cpu", dequantize_4bit_by_definition)
    for (name, q, weight), dq_native in zip(saved, native):
        # bitsandbytes' dequantisation of tinylm's state is what tinylm saved (exactly).
        dq = F.dequantize_4bit(q.weight.data, q.weight.quant_state)
        worst_weight = max(worst_weight, rel(dq, weight))
        if wrong := int((dq != dq_native).sum()):
            print(f"{name}: bitsandbytes' native dequantize_4bit differs from its default kernel in {wrong} of "
                  f"{dq.numel()} values (a bitsandbytes bug on this CPU)")
    model = PeftModel.from_pretrained(model, f"{d}/adapter", is_trainable=True)
    model.eval()  # no dropout: tinylm's logits() has none either
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    # peft 0.21 on CPU wraps Linear4bit in its generic lora.Linear, whose forward calls the base layer
    # (bitsandbytes' Linear4bit.forward, dequantising on the fly) and adds the LoRA path.
    n_lora = sum(
        isinstance(m, peft.tuners.lora.LoraLayer) and isinstance(m.base_layer, bnb.nn.Linear4bit)
        for m in model.modules()
    )
    out = model(input_ids=expected["input_ids"], labels=expected["labels"])
    out.loss.backward()
    errors = {
        "dequantised weights (bitsandbytes vs tinylm's save)": worst_weight,
        "logits": rel(out.logits.detach(), expected["logits"]),
        "loss": rel(out.loss.detach().reshape(1), expected["loss"]),
    }
    worst_grad, n_grads = 0.0, 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = "grad." + name.replace(".default", "")
            worst_grad = max(worst_grad, rel(p.grad, expected[key]))
            n_grads += 1
    errors[f"worst of {n_grads} LoRA gradients"] = worst_grad
    print(f"peft {peft.__version__} + bitsandbytes {bnb.__version__}: {n4} Linear4bit layers, {n_lora} LoRA layers "
          f"over them")
    for k, v in errors.items():
        print(f"  {k}: {v:.3g}")
    bad = {k: v for k, v in errors.items() if v > 1e-4}
    if bad or n_grads == 0 or n_lora == 0:
        print("FAILED:", bad or "no LoRA layers", file=sys.stderr)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
