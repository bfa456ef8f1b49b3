#!/usr/bin/env python3
"""Checks the GGUF files tinylm writes (include/tinylm/io/gguf.hpp) with the `gguf` Python package, against the
Hugging Face folders they were made from, with no tinylm code in the loop.

    check_gguf.py DIR        DIR/manifest.json from `test_gguf --run_test=gguf_export/export_for_python`

For every file: the gguf package's GGUFReader parses it (version 3, aligned data); the set of metadata keys is
exactly the expected one and every value is right (architecture sizes from config.json; tokens, token types,
merges, scores, special ids and chat template from tokenizer.json / tokenizer_config.json); the set of tensors is
exactly the expected one, with llama.cpp's names, dimensions and types; every tensor equals the Hugging Face
weights mapped the way llama.cpp's converter maps them (q/k rows permuted for the `llama` architecture, experts
split and stacked): F32 and F16 exactly, Q8_0 and Q4_0 blocks byte for byte equal to gguf.quants.quantize (the
issue allows Q4_0 one quantisation step; tinylm's blocks are identical, so identity is what is checked).
Exits 1 on any difference, naming it.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import load_file

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}
WANT = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
failures: list[str] = []


def expect(ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: rows of each head reordered from rotate-half to adjacent pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(folder: str, cfg: dict, arch: str) -> dict[str, np.ndarray]:
    """GGUF name -> values in HF (row-major) layout, whose reversed shape is the GGUF dims."""
    weights: dict[str, np.ndarray] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            weights.update({k: v.astype(np.float32) for k, v in load_file(os.path.join(folder, name)).items()})
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    simple = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "mlp.gate.weight": "ffn_gate_inp.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
    }
    out: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = w
        elif name == "model.norm.weight":
            out["output_norm.weight"] = w
        elif name == "lm_head.weight":
            if not cfg.get("tie_word_embeddings", False):
                out["output.weight"] = w
        else:
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
            assert m, name
            blk, rest = f"blk.{m.group(1)}.", m.group(2)
            if rest == "mlp.experts.gate_up_proj":  # (E, 2F, d): gate rows first
                f = w.shape[1] // 2
                out[blk + "ffn_gate_exps.weight"] = np.ascontiguousarray(w[:, :f, :])
                out[blk + "ffn_up_exps.weight"] = np.ascontiguousarray(w[:, f:, :])
            elif rest == "mlp.experts.down_proj":
                out[blk + "ffn_down_exps.weight"] = w
            elif rest.endswith("rotary_emb.inv_freq"):
                continue
            else:
                gname = blk + simple[rest]
                if arch == "llama" and rest.startswith("self_attn.q_proj"):
                    w = permute(w, n_head)
                elif arch == "llama" and rest.startswith("self_attn.k_proj"):
                    w = permute(w, n_kv)
                out[gname] = w
    return out


def storage_type(name: str, w: np.ndarray, want: str) -> Q:
    """The converter's rule: 1-D, norms and the router in F32; a block type falls back to F16."""
    if w.ndim == 1 or name.endswith("_norm.weight") or "ffn_gate_inp" in name:
        return Q.F32
    t = WANT[want]
    if t in (Q.Q8_0, Q.Q4_0) and w.shape[-1] % 32 != 0:
        return Q.F16
    return t


def expected_metadata(entry: dict, cfg: dict, arch: str) -> dict:
    folder = entry["folder"]
    tj = read_json(os.path.join(folder, "tokenizer.json"))
    tc_path = os.path.join(folder, "tokenizer_config.json")
    tc = read_json(tc_path) if os.path.exists(tc_path) else {}
    gen_path = os.path.join(folder, "generation_config.json")
    gen = read_json(gen_path) if os.path.exists(gen_path) else {}
    n_vocab = cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    rope_theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
    context = cfg["max_position_embeddings"] if not window else min(window, cfg["max_position_embeddings"])
    a = arch + "."
    md = {
        "general.architecture": arch,
        "general.type": "model",
        "general.name": entry["model"],
        "general.alignment": 32,
        "general.file_type": FILE_TYPE[entry["type"]],
        "general.quantization_version": 2,
        a + "vocab_size": n_vocab,
        a + "context_length": context,
        a + "embedding_length": cfg["hidden_size"],
        a + "block_count": cfg["num_hidden_layers"],
        a + "feed_forward_length": cfg["intermediate_size"],
        a + "attention.head_count": cfg["num_attention_heads"],
        a + "attention.head_count_kv": cfg["num_key_value_heads"],
        a + "attention.key_length": head_dim,
        a + "attention.value_length": head_dim,
        a + "attention.layer_norm_rms_epsilon": float(np.float32(cfg["rms_norm_eps"])),
        a + "rope.dimension_count": head_dim,
        a + "rope.freq_base": float(np.float32(rope_theta)),
    }
    if cfg.get("num_local_experts"):
        md[a + "expert_count"] = cfg["num_local_experts"]
        md[a + "expert_used_count"] = cfg["num_experts_per_tok"]

    model = tj["model"]
    vocab = model["vocab"]
    byte_level = not model.get("byte_fallback", False)
    added = {t["id"]: t for t in tj["added_tokens"]}
    unk_text = model.get("unk_token")
    unk_id = vocab.get(unk_text, -1) if unk_text else -1
    id_to_tok = {i: t for t, i in vocab.items()}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(2 if i == unk_id else 3 if added[i]["special"] else 4)
        elif i in id_to_tok:
            t = id_to_tok[i]
            tokens.append(t)
            if byte_level:
                types.append(1)
            else:
                types.append(2 if i == unk_id else 6 if re.fullmatch(r"<0x[0-9A-F]{2}>", t) else 1)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(5)
    md["tokenizer.ggml.tokens"] = tokens
    md["tokenizer.ggml.token_type"] = types
    md["tokenizer.ggml.merges"] = merges
    if byte_level:
        md["tokenizer.ggml.model"] = "gpt2"
        pre = tj["pre_tokenizer"]
        parts = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
        regexes = [p["pattern"]["Regex"] for p in parts if p["type"] == "Split"]
        if regexes:
            md["tokenizer.ggml.pre"] = {QWEN2_PATTERN: "qwen2", GPT2_PATTERN: "gpt-2"}[regexes[0]]
        else:
            assert any(p["type"] == "ByteLevel" and p.get("use_regex", True) for p in parts)
            md["tokenizer.ggml.pre"] = "gpt-2"
    else:
        md["tokenizer.ggml.model"] = "llama"
        # Score: minus (1 + the rank of the first merge making the token); -1e9 for longer tokens no merge makes.
        scores = [0.0] * n_vocab
        made = set()
        for r, m in enumerate(merges):
            left, right = m.split(" ", 1)
            i = vocab.get(left + right)
            if i is not None and i not in made:
                made.add(i)
                scores[i] = -float(r + 1)
        for i in range(n_vocab):
            if i not in made and i not in added and types[i] == 1 and len(tokens[i]) > 1:
                scores[i] = -1e9
        md["tokenizer.ggml.scores"] = [float(np.float32(s)) for s in scores]
        norms = tj.get("normalizer") or {}
        norm_list = norms.get("normalizers", [norms]) if norms else []
        md["tokenizer.ggml.add_space_prefix"] = any(n.get("type") == "Prepend" for n in norm_list)

    def token_id(key):
        v = tc.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v is None:
            return None
        for i, t in added.items():
            if t["content"] == v:
                return i
        return vocab[v]

    def first(*values):
        for v in values:
            if isinstance(v, list):
                v = v[0] if v else None
            if v is not None:
                return v
        return None

    post = tj.get("post_processor") or {}
    prefix = []
    if post.get("type") == "TemplateProcessing":
        for item in post["single"]:
            if "Sequence" in item:
                break
            prefix.append(item)
    bos = first(token_id("bos_token"), prefix and post["special_tokens"][prefix[0]["SpecialToken"]["id"]]["ids"][0] or None,
                gen.get("bos_token_id"), cfg.get("bos_token_id"))
    eos = first(token_id("eos_token"), gen.get("eos_token_id"), cfg.get("eos_token_id"))
    pad = first(token_id("pad_token"), gen.get("pad_token_id"), cfg.get("pad_token_id"))
    unk = first(token_id("unk_token"), unk_id if unk_id >= 0 else None)
    for key, v in (("bos", bos), ("eos", eos), ("unknown", unk), ("padding", pad)):
        if v is not None:
            md[f"tokenizer.ggml.{key}_token_id"] = v
    md["tokenizer.ggml.add_bos_token"] = bool(prefix)
    md["tokenizer.ggml.add_eos_token"] = False
    norms = tj.get("normalizer") or {}
    md["tinylm.tokenizer.nfc"] = any(n.get("type") == "NFC" for n in norms.get("normalizers", [norms]) if n)
    template_path = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(template_path):
        with open(template_path, encoding="utf-8") as f:
            md["tokenizer.chat_template"] = f.read()
    elif tc.get("chat_template"):
        md["tokenizer.chat_template"] = tc["chat_template"]
    return md


def field_value(field: gguf.ReaderField):
    v = field.contents()
    if isinstance(v, float):
        return float(np.float32(v)) if field.types[0] == gguf.GGUFValueType.FLOAT32 else v
    if isinstance(v, list) and v and isinstance(v[0], float):
        return [float(np.float32(x)) for x in v]
    return v


def check_file(entry: dict) -> None:
    path = entry["file"]
    where = os.path.basename(path)
    cfg = read_json(os.path.join(entry["folder"], "config.json"))
    arch = cfg["model_type"] if cfg["model_type"] in ("qwen2", "qwen3") else "llama"
    r = gguf.GGUFReader(path)
    expect(int(r.fields["GGUF.version"].contents()) == 3, f"{where}: version")
    expect(r.alignment == 32 and r.data_offset % 32 == 0, f"{where}: alignment {r.alignment}, data at {r.data_offset}")

    md = expected_metadata(entry, cfg, arch)
    keys = {k for k in r.fields if not k.startswith("GGUF.")}
    expect(keys == set(md), f"{where}: keys missing {sorted(set(md) - keys)}, unexpected {sorted(keys - set(md))}")
    for k, want in md.items():
        if k in r.fields:
            got = field_value(r.fields[k])
            expect(got == want, f"{where}: {k} = {str(got)[:200]} != {str(want)[:200]}")

    want_tensors = expected_tensors(entry["folder"], cfg, arch)
    names = {t.name for t in r.tensors}
    expect(names == set(want_tensors), f"{where}: tensors missing {sorted(set(want_tensors) - names)}, "
                                       f"unexpected {sorted(names - set(want_tensors))}")
    for t in r.tensors:
        if t.name not in want_tensors:
            continue
        w = want_tensors[t.name]
        qt = storage_type(t.name, w, entry["type"])
        expect(t.tensor_type == qt, f"{where}: {t.name} is {t.tensor_type.name}, expected {qt.name}")
        expect(list(t.shape) == list(reversed(w.shape)), f"{where}: {t.name} dims {list(t.shape)} vs HF {list(w.shape)}")
        if t.tensor_type != qt or list(t.shape) != list(reversed(w.shape)):
            continue
        data = np.asarray(t.data)
        if qt == Q.F32:
            expect(np.array_equal(data.reshape(-1), w.reshape(-1)), f"{where}: {t.name} F32 values differ")
        elif qt == Q.F16:
            expect(np.array_equal(data.reshape(-1).view(np.uint16), w.reshape(-1).astype(np.float16).view(np.uint16)),
                   f"{where}: {t.name} F16 values differ")
        else:
            ref = gguf.quants.quantize(w, qt)
            expect(np.array_equal(data.reshape(-1), ref.reshape(-1)),
                   f"{where}: {t.name} {qt.name} blocks differ from gguf.quants.quantize")
    print(f"{where}: {len(keys)} metadata keys, {len(r.tensors)} tensors checked")


def main() -> int:
    out = sys.argv[1]
    manifest = read_json(os.path.join(out, "manifest.json"))
    for entry in manifest:
        check_file(entry)
    print(f"gguf {importlib.metadata.version('gguf')}: {len(manifest)} files")
    for f in failures[:50]:
        print("FAIL:", f)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print(f"{len(manifest)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
