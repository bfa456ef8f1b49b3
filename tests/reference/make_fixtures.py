#!/usr/bin/env python3
"""Generate reference fixtures for tinylm with Hugging Face `transformers`.

For each configuration below, this builds a tiny causal LM, fills every
parameter with seeded random values, and runs a forward pass, the loss, the
backward pass and one AdamW step, all in float64. It writes inputs, logits,
loss, parameters, gradients and updated parameters as float32 into
`<out>/<name>.safetensors`.

Usage:  python make_fixtures.py [--out DIR] [--only NAME ...]   (default: fixtures/ next to this file)

`llama_gqa_lora` is the llama_gqa model wrapped by `peft` (LoRA r=4, alpha=8 on all seven projections, B
random instead of zero): base weights, LoRA weights under PEFT's names, logits, loss, LoRA gradients and the
LoRA weights after one AdamW step on the LoRA parameters only.

Float64 oracle: in float64, stock transformers still does some steps in
float32: RMSNorm, RoPE cos/sin (with float32 inv_freq), the eager-attention
softmax, and the causal-LM loss (`logits.float()`). While the oracle runs, the
script patches those steps so that they keep float64 when the input is float64.
The math does not change, only the precision. Float32 runs are not patched. The
script checks the oracle against stock HF float32 and against HF's own loss.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MinistralConfig,
    MinistralForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.models.llama import modeling_llama
from transformers.models.ministral import modeling_ministral
from transformers.models.mistral import modeling_mistral
from transformers.models.mixtral import modeling_mixtral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

B, T = 2, 12
IGNORE_INDEX = -100
ADAMW = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}

COMMON = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    hidden_act="silu",
    max_position_embeddings=64,
    attention_dropout=0.0,
    initializer_range=0.02,
    pad_token_id=None,
)

# name -> (config class, model class, config kwargs, seed)
CONFIGS = {
    "llama_gqa": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, head_dim=8, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False), 1001),
    "llama_mha": (LlamaConfig, LlamaForCausalLM, dict(
        COMMON, head_dim=8, num_key_value_heads=4, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False), 1002),
    "mistral_window": (MistralConfig, MistralForCausalLM, dict(
        COMMON, head_dim=8, num_key_value_heads=1, rms_norm_eps=1e-5, sliding_window=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False), 1003),
    # Qwen2Config has no head_dim field; the model uses hidden_size // num_attention_heads = 8.
    "qwen2_tied": (Qwen2Config, Qwen2ForCausalLM, dict(
        COMMON, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, use_sliding_window=False), 1004),
    # QK-norm (Qwen3): an RMSNorm of each query and key head before RoPE. head_dim 16 with 4 heads on hidden 32 (the
    # query width 64 is not hidden_size, as Qwen3-0.6B's 16 x 128 on 1024); tied embeddings, as the small Qwen3s.
    "qwen3_qknorm": (Qwen3Config, Qwen3ForCausalLM, dict(
        COMMON, head_dim=16, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, attention_bias=False, use_sliding_window=False), 1007),
    # Mixture of experts: 4 SwiGLU experts of width 48, top-2 routing with renormalised weights. With
    # output_router_logits=True, HF's loss is cross-entropy + router_aux_loss_coef * load-balancing loss.
    # Seed 1013: no top-k near-tie (margin 2e-3) and no gradient element near AdamW's eps (smallest |g| 3.5e-7;
    # with seed 1005 one expert weight had |g| = 1.2e-8, where the first step lr * g / (|g| + eps) is
    # ill-conditioned: stock HF in float32 itself then misses the oracle's step by 0.34 lr).
    "mixtral_moe": (MixtralConfig, MixtralForCausalLM, dict(
        COMMON, head_dim=8, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, sliding_window=None, num_local_experts=4, num_experts_per_tok=2,
        router_aux_loss_coef=0.02, output_router_logits=True, router_jitter_noise=0.0), 1013),
    # Sliding window in some layers only: Ministral honours layer_types (Mistral ignores them). Three layers,
    # tinylm's full_attention_every = 2: windowed, full, windowed.
    "ministral_layers": (MinistralConfig, MinistralForCausalLM, dict(
        COMMON, num_hidden_layers=3, head_dim=8, num_key_value_heads=2, rms_norm_eps=1e-5, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False), 1006),
}


# ----------------------------------------------------------------------------
# float64 patches (active only inside `float64_oracle()` and only for fp64 input)
# ----------------------------------------------------------------------------
_RMSNORM_CLASSES = [modeling_llama.LlamaRMSNorm, modeling_mistral.MistralRMSNorm, modeling_qwen2.Qwen2RMSNorm,
                    modeling_mixtral.MixtralRMSNorm]
_ROPE_CLASSES = [modeling_llama.LlamaRotaryEmbedding, modeling_mistral.MistralRotaryEmbedding,
                 modeling_qwen2.Qwen2RotaryEmbedding, modeling_mixtral.MixtralRotaryEmbedding]
_RMSNORM_CLASSES.append(modeling_ministral.MinistralRMSNorm)
_ROPE_CLASSES.append(modeling_ministral.MinistralRotaryEmbedding)
_RMSNORM_CLASSES.append(modeling_qwen3.Qwen3RMSNorm)
_ROPE_CLASSES.append(modeling_qwen3.Qwen3RotaryEmbedding)


def _make_rmsnorm_forward(orig):
    def forward(self, hidden_states):
        if hidden_states.dtype != torch.float64:
            return orig(self, hidden_states)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))
    return forward


def _make_rope_forward(orig):
    @torch.no_grad()
    def forward(self, x, position_ids):
        if x.dtype != torch.float64:
            return orig(self, x, position_ids)
        rp = self.config.rope_parameters
        assert rp["rope_type"] == "default" and self.attention_scaling == 1.0
        dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads
        inv_freq = 1.0 / (float(rp["rope_theta"]) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()
    return forward


def _make_router_forward(orig):
    # MixtralTopKRouter takes the softmax of `router_logits.float()`; keep float64 instead.
    def forward(self, hidden_states):
        if hidden_states.dtype != torch.float64:
            return orig(self, hidden_states)
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = torch.nn.functional.linear(hidden_states, self.weight)
        router_probs = torch.nn.functional.softmax(router_logits, dim=-1)
        router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
        router_top_value = router_top_value / router_top_value.sum(dim=-1, keepdim=True)
        return router_logits, router_top_value, router_indices
    return forward


@contextlib.contextmanager
def float64_oracle():
    saved = []
    for cls in _RMSNORM_CLASSES:
        saved.append((cls, "forward", cls.forward))
        cls.forward = _make_rmsnorm_forward(cls.forward)
    for cls in _ROPE_CLASSES:
        saved.append((cls, "forward", cls.forward))
        cls.forward = _make_rope_forward(cls.forward)
    router = modeling_mixtral.MixtralTopKRouter
    saved.append((router, "forward", router.forward))
    router.forward = _make_router_forward(router.forward)
    orig_softmax = torch.nn.functional.softmax

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if input.dtype == torch.float64 and dtype == torch.float32:
            dtype = torch.float64
        return orig_softmax(input, dim=dim, dtype=dtype)

    saved.append((torch.nn.functional, "softmax", orig_softmax))
    torch.nn.functional.softmax = softmax
    try:
        yield
    finally:
        for obj, attr, val in reversed(saved):
            setattr(obj, attr, val)


# ----------------------------------------------------------------------------
def causal_lm_loss(logits, labels):
    """Same as HF ForCausalLMLoss (shift, ignore -100, mean), kept in the dtype of the logits."""
    V = logits.shape[-1]
    shift_labels = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="mean")


def load_balancing_loss(router_logits, num_experts, top_k):
    """transformers' load_balancing_loss_func (no attention mask), kept in the dtype of the logits.

    Over all layers' rows together: f_e = share of top-k assignments that go to expert e, P_e = mean router
    probability of e; loss = num_experts * sum_e f_e * P_e. (HF accumulates in float32.)
    """
    probs = torch.cat([torch.nn.functional.softmax(g, dim=-1) for g in router_logits], dim=0)
    _, selected = torch.topk(probs, top_k, dim=-1)
    counts = torch.nn.functional.one_hot(selected, num_experts).sum(dim=(0, 1)).to(probs.dtype)
    rows = probs.shape[0]
    return num_experts * torch.sum((counts / rows) * (probs.sum(dim=0) / rows))


def is_moe(model):
    return getattr(model.config, "num_local_experts", 0) > 0


def topk_margin(router_logits, top_k):
    """Smallest gap between the k-th and (k+1)-th router probability of any row (near-ties flip in f32)."""
    probs = torch.cat([torch.nn.functional.softmax(g.double(), dim=-1) for g in router_logits], dim=0)
    top = torch.topk(probs, top_k + 1, dim=-1).values
    return (top[:, top_k - 1] - top[:, top_k]).min().item()


def build_model(cfg_cls, model_cls, kwargs, seed):
    torch.manual_seed(seed)
    config = cfg_cls(**kwargs)
    config._attn_implementation = "eager"
    if getattr(config, "num_local_experts", 0) > 0:
        config._experts_implementation = "eager"  # the per-expert loop of MixtralExperts.forward
    model = model_cls(config)
    assert model.config._attn_implementation == "eager"
    model.double()
    model.eval()  # dropout is 0 anyway
    assert model.model.embed_tokens.padding_idx is None

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            leaf = name.rsplit(".", 1)[1]
            if isinstance(owner, torch.nn.Embedding):
                std, mean = 0.2, 0.0
            elif isinstance(owner, torch.nn.Linear) and leaf == "weight":
                std, mean = 1.0 / math.sqrt(owner.in_features), 0.0
            elif isinstance(owner, modeling_mixtral.MixtralTopKRouter) and leaf == "weight":
                std, mean = 1.0 / math.sqrt(owner.hidden_dim), 0.0
            elif isinstance(owner, modeling_mixtral.MixtralExperts) and leaf in ("gate_up_proj", "down_proj"):
                std, mean = 1.0 / math.sqrt(p.shape[-1]), 0.0  # (E, out, in): 1 / sqrt(fan_in)
            elif leaf == "bias":
                std, mean = 0.1, 0.0
            elif leaf == "weight" and "RMSNorm" in type(owner).__name__:
                std, mean = 0.1, 1.0
            else:
                raise RuntimeError(f"unexpected parameter {name} ({type(owner).__name__})")
            p.copy_(mean + std * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    if config.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight

    input_ids = torch.randint(0, config.vocab_size, (B, T), generator=gen, dtype=torch.int64)
    labels = input_ids.clone()
    labels[0, 3] = IGNORE_INDEX
    labels[1, 7] = IGNORE_INDEX
    return model, input_ids, labels


def forward_backward_step(model, input_ids, labels):
    """Returns logits, loss, grads, params after one AdamW step. Uses the dtype of the model."""
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, labels=labels, use_cache=False)
    loss = causal_lm_loss(out.logits, labels)
    aux = None
    if is_moe(model):
        c = model.config
        aux = load_balancing_loss(out.router_logits, c.num_local_experts, c.num_experts_per_tok)
        assert abs(out.aux_loss.double().item() - aux.item()) <= 1e-5 * abs(aux.item()), (out.aux_loss, aux)
        loss = loss + c.router_aux_loss_coef * aux
    # HF's own loss (computed in float32 by transformers; with the aux term for MoE) must agree.
    hf_loss = out.loss.double().item()
    assert abs(hf_loss - loss.item()) <= 1e-5 * abs(loss.item()), (hf_loss, loss.item())
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    # Matrices decay (the (E, out, in) expert stacks too); norms and biases do not.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": ADAMW["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"],
        foreach=False, fused=False)
    opt.step()
    stepped = {n: p.detach().clone() for n, p in model.named_parameters()}
    extra = {}
    if aux is not None:
        extra = {"aux_loss": aux.detach().clone(), "router_logits": [g.detach().clone() for g in out.router_logits]}
    return out.logits.detach().clone(), loss.detach().clone(), grads, stepped, extra


def canonical_safetensors(tensors, metadata):
    """safetensors bytes with a byte-reproducible header.

    The safetensors library writes `__metadata__` from a Rust HashMap, so its key order (and therefore
    the file hash) changes from run to run. Re-serialise the header with sorted metadata keys; the
    tensor layout and data bytes are left exactly as the library wrote them.
    """
    raw = save(tensors, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    ordered = {"__metadata__": header.pop("__metadata__")}
    ordered.update(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]))
    hb = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + raw[8 + n:]


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def rel(a, b):
    """max |a-b| / max |b|"""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def check_sliding_window(model, input_ids, window):
    """Evidence for the exact masking rule, plus check that the window changes the logits."""
    with torch.no_grad(), float64_oracle():
        out = model(input_ids=input_ids, output_attentions=True, use_cache=False)
        visible = out.attentions[0][0, 0] > 0  # layer 0, batch 0, head 0: (T, T)
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        rule_lt = (i - j >= 0) & (i - j < window)
        rule_le = (i - j >= 0) & (i - j <= window)
        assert all(torch.equal(a[b, h] > 0, visible) for a in out.attentions
                   for b in range(B) for h in range(a.shape[1]))
        assert torch.equal(visible, rule_lt) and not torch.equal(visible, rule_le)

        full = copy.deepcopy(model)
        full.config.sliding_window = None
        out_full = full(input_ids=input_ids, use_cache=False)
        diff = (out.logits - out_full.logits).abs().max().item()
        assert diff > 1e-3, f"sliding window had no effect on logits (max diff {diff})"
    print(f"  sliding_window={window}: visible(i,j) == (0 <= i-j < {window}) confirmed on every "
          f"layer/batch/head; row i=11 sees j={visible[11].nonzero().flatten().tolist()}; "
          f"max |logits(window) - logits(no window)| = {diff:.4f}")
    return visible


def check_layer_types(model, input_ids, window):
    """Per-layer window (layer_types): each layer's attention pattern, and the window changes the logits."""
    types = model.config.layer_types
    with torch.no_grad(), float64_oracle():
        out = model(input_ids=input_ids, output_attentions=True, use_cache=False)
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        sliding, causal = (i - j >= 0) & (i - j < window), i - j >= 0
        for layer, (kind, att) in enumerate(zip(types, out.attentions)):
            want = sliding if kind == "sliding_attention" else causal
            assert all(torch.equal(att[b, h] > 0, want) for b in range(B) for h in range(att.shape[1])), layer

        full = copy.deepcopy(model)
        full.config.layer_types = ["full_attention"] * len(types)
        out_full = full(input_ids=input_ids, use_cache=False)
        diff = (out.logits - out_full.logits).abs().max().item()
        assert diff > 1e-3, f"the sliding layers had no effect on logits (max diff {diff})"
    print(f"  layer_types={types}, sliding_window={window}: sliding layers see 0 <= i-j < {window}, full layers "
          f"0 <= i-j; max |logits(layer_types) - logits(all full)| = {diff:.4f}")


def make_one(name, out_dir):
    cfg_cls, model_cls, kwargs, seed = CONFIGS[name]
    model, input_ids, labels = build_model(cfg_cls, model_cls, kwargs, seed)
    model32 = copy.deepcopy(model).float()
    model64_stock = copy.deepcopy(model)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    print(f"[{name}] {model_cls.__name__}")

    if getattr(model.config, "sliding_window", None) is not None:
        if len(set(getattr(model.config, "layer_types", None) or ["sliding_attention"])) > 1:
            check_layer_types(model, input_ids, model.config.sliding_window)
        else:
            check_sliding_window(model, input_ids, model.config.sliding_window)

    with float64_oracle():
        logits, loss, grads, stepped, extra = forward_backward_step(model, input_ids, labels)

    # Precision floors: stock-HF fp32 and stock-HF fp64 (with its internal fp32 steps) vs the fp64 oracle.
    logits32, loss32, grads32, stepped32, _ = forward_backward_step(model32, input_ids, labels)
    with torch.no_grad():
        logits64s = model64_stock(input_ids=input_ids, use_cache=False).logits
    stats = {
        "fp32_logits_rel": rel(logits32, logits),
        "fp32_logits_abs": (logits32.double() - logits).abs().max().item(),
        "fp32_loss_rel": abs(loss32.item() - loss.item()) / abs(loss.item()),
        "fp32_grad_rel_worst": max(rel(grads32[n], grads[n]) for n in grads),
        "fp32_adamw_abs_worst": max((stepped32[n].double() - stepped[n]).abs().max().item() for n in grads),
        "stock_fp64_logits_rel": rel(logits64s, logits),
    }
    if extra:
        stats["topk_margin"] = topk_margin(extra["router_logits"], model.config.num_experts_per_tok)
        assert stats["topk_margin"] > 1e-3, stats  # no near-ties: f32 and f64 pick the same experts
    assert stats["fp32_logits_rel"] < 1e-4, stats

    tensors = {"input_ids": input_ids.contiguous(), "labels": labels.contiguous(),
               "logits": f32(logits), "loss": f32(loss.reshape(1))}
    for n in init:
        tensors[f"param.{n}"] = f32(init[n])
        tensors[f"grad.{n}"] = f32(grads[n])
        tensors[f"adamw.{n}"] = f32(stepped[n])
    if extra:
        tensors["aux_loss"] = f32(extra["aux_loss"].reshape(1))
        tensors["router_logits"] = f32(torch.stack(extra["router_logits"]))  # (layers, B*T, experts)
    if model.config.tie_word_embeddings:
        assert not any(k.endswith("lm_head.weight") for k in tensors)

    metadata = {
        "config": model.config.to_json_string(),
        "architecture": model_cls.__name__,
        "adamw": json.dumps(ADAMW, sort_keys=True),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if extra:
        metadata["aux_loss_rule"] = ("loss = cross_entropy + router_aux_loss_coef * aux_loss; aux_loss = "
                                     "num_experts * sum_e f_e * P_e over all layers' rows")
    if getattr(model.config, "sliding_window", None) is not None:
        metadata["sliding_window_rule"] = "key j visible from query i iff 0 <= i-j < sliding_window"
    path = os.path.join(out_dir, f"{name}.safetensors")
    with open(path, "wb") as fh:
        fh.write(canonical_safetensors(tensors, metadata))
    return path, stats


def verify(path, stats):
    t = load_file(path)
    with safe_open(path, "pt") as f:
        md = f.metadata()
    for k, v in t.items():
        want = torch.int64 if k in ("input_ids", "labels") else torch.float32
        assert v.dtype == want and v.is_contiguous(), k
    for k in ("config", "architecture", "adamw", "torch", "transformers"):
        assert k in md, k
    json.loads(md["config"]), json.loads(md["adamw"])
    name = os.path.basename(path)
    print(f"  {name}: loss={t['loss'].item():.6f}  max|logit|={t['logits'].abs().max().item():.4f}  "
          f"tensors={len(t)}  size={os.path.getsize(path)} B")
    print(f"    fp32-vs-fp64 logits: max rel (max|d|/max|ref|) = {stats['fp32_logits_rel']:.3e}, "
          f"max abs = {stats['fp32_logits_abs']:.3e}; loss rel = {stats['fp32_loss_rel']:.3e}; "
          f"worst grad rel = {stats['fp32_grad_rel_worst']:.3e}; worst adamw abs = "
          f"{stats['fp32_adamw_abs_worst']:.3e}; stock-HF-fp64 logits rel = {stats['stock_fp64_logits_rel']:.3e}")
    if "aux_loss" in t:
        print(f"    aux_loss={t['aux_loss'].item():.6f}  smallest top-k probability margin = {stats['topk_margin']:.3e}")


# ----------------------------------------------------------------------------
# LoRA (peft): the llama_gqa model with an adapter on all seven projections
# ----------------------------------------------------------------------------
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# name -> (base configuration, LoraConfig kwargs, seed for the adapter weights)
LORA_CASES = {
    "llama_gqa_lora": ("llama_gqa", dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS), 2001),
}


def peft_saved_name(n):
    """PeftModel parameter name -> the name in adapter_model.safetensors (no adapter name)."""
    return n.replace(".default.", ".")


def make_lora(name, out_dir):
    """Base weights, LoRA weights (PEFT names), logits, loss, LoRA gradients, LoRA weights after one AdamW step.

    B is set to small random values instead of PEFT's zeros so that every gradient is non-zero. AdamW runs
    on the LoRA parameters only (the base is frozen), all of them with weight decay.
    """
    import peft

    base_name, lora_kwargs, lora_seed = LORA_CASES[name]
    cfg_cls, model_cls, kwargs, seed = CONFIGS[base_name]
    base, input_ids, labels = build_model(cfg_cls, model_cls, kwargs, seed)
    base_params = {n: p.detach().clone() for n, p in base.named_parameters()}
    lcfg = peft.LoraConfig(task_type="CAUSAL_LM", bias="none", **lora_kwargs)
    model = peft.get_peft_model(base, lcfg)
    model.double()
    model.eval()
    gen = torch.Generator().manual_seed(lora_seed)
    lora = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(p.shape[1]))
            elif "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(p.shape[1]))
            else:
                assert not p.requires_grad, n
                continue
            lora[n] = p
    assert len(lora) == 2 * len(LORA_TARGETS) * kwargs["num_hidden_layers"], len(lora)
    print(f"[{name}] peft {peft.__version__} LoRA r={lcfg.r} alpha={lcfg.lora_alpha} on {base_name}")

    def run(m):
        m.zero_grad(set_to_none=True)
        out = m(input_ids=input_ids, labels=labels, use_cache=False)
        loss = causal_lm_loss(out.logits, labels)
        assert abs(out.loss.double().item() - loss.item()) <= 1e-5 * abs(loss.item())
        loss.backward()
        params = [p for p in m.parameters() if p.requires_grad]
        grads = {peft_saved_name(n): p.grad.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
        opt = torch.optim.AdamW(params, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"],
                                weight_decay=ADAMW["weight_decay"], foreach=False, fused=False)
        opt.step()
        stepped = {peft_saved_name(n): p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
        return out.logits.detach().clone(), loss.detach().clone(), grads, stepped

    init = {peft_saved_name(n): p.detach().clone() for n, p in lora.items()}
    model32 = copy.deepcopy(model).float()
    with float64_oracle():
        logits, loss, grads, stepped = run(model)
    logits32, loss32, grads32, _ = run(model32)
    stats = {
        "fp32_logits_rel": rel(logits32, logits),
        "fp32_logits_abs": (logits32.double() - logits).abs().max().item(),
        "fp32_loss_rel": abs(loss32.item() - loss.item()) / abs(loss.item()),
        "fp32_grad_rel_worst": max(rel(grads32[n], grads[n]) for n in grads),
        "fp32_adamw_abs_worst": 0.0,
        "stock_fp64_logits_rel": 0.0,
    }
    assert stats["fp32_logits_rel"] < 1e-4, stats
    assert min(g.abs().min().item() for g in grads.values()) > 0, "a LoRA gradient element is zero"
    for n, p in model.named_parameters():  # the base did not move
        if not p.requires_grad:
            key = n.replace("base_model.model.", "", 1).replace(".base_layer.", ".")
            assert torch.equal(p, base_params[key]), n

    tensors = {"input_ids": input_ids.contiguous(), "labels": labels.contiguous(),
               "logits": f32(logits), "loss": f32(loss.reshape(1))}
    for n, p in base_params.items():
        tensors[f"param.{n}"] = f32(p)
    for n in init:
        tensors[f"lora.{n}"] = f32(init[n])
        tensors[f"grad.{n}"] = f32(grads[n])
        tensors[f"adamw.{n}"] = f32(stepped[n])
    metadata = {
        "config": model.base_model.model.config.to_json_string(),
        "architecture": model_cls.__name__,
        "adamw": json.dumps(ADAMW, sort_keys=True),
        "lora": json.dumps({"r": lcfg.r, "lora_alpha": lcfg.lora_alpha, "lora_dropout": lcfg.lora_dropout,
                            "target_modules": LORA_TARGETS}, sort_keys=True),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    path = os.path.join(out_dir, f"{name}.safetensors")
    with open(path, "wb") as fh:
        fh.write(canonical_safetensors(tensors, metadata))
    return path, stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS) + list(LORA_CASES), help="subset of configurations")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # reproducible reductions
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
    names = args.only or list(CONFIGS) + list(LORA_CASES)
    results = [make_lora(n, args.out) if n in LORA_CASES else make_one(n, args.out) for n in names]
    print("verification (reloaded from disk):")
    for path, stats in results:
        verify(path, stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
