#!/usr/bin/env python3
"""llama.cpp's quantiser makes the files tinylm then reads (ctest -L slow: gguf_llama_quantize_read_by_tinylm).

    check_llama_quantize.py DIR   DIR/<name>-f32.gguf and DIR/prompts.json from
                                  `test_gguf --run_test=gguf_export/export_for_llama_quantize`

For every model and every llama-quantize type below: llama_cpp.llama_model_quantize makes DIR/<name>-<type>.gguf
(K-quant mixes as llama-quantize chooses them: Q4_K_M holds Q4_K and Q6_K tensors, and the width-64 fixture gets the
fallback types of rows that are not whole 256-value blocks); the `gguf` package dequantises every tensor of it into
DIR/<name>-<type>.expected.gguf (F32, same names); llama.cpp runs the quantised file and its logits after each prompt
go to DIR/results.json, with its logits on the f32 file (the size of what quantising moves), which `test_gguf --run_test=gguf_export/read_llama_quantize_files` then checks tinylm against.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import llama_cpp
import numpy as np
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize
from llama_cpp import Llama

FTYPES = {  # llama-quantize's names and llama_ftype numbers (llama.h)
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
    "Q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "Q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "IQ4_NL": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
}


def quantize(src: Path, dst: Path, ftype: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed on {src} -> {dst}")


def write_expected(quantized: Path, out: Path) -> dict[str, int]:
    """Every tensor of `quantized` as the gguf package dequantises it, as F32 in `out`; returns the type counts."""
    r = GGUFReader(quantized)
    w = GGUFWriter(out, "expected")
    types: dict[str, int] = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def last_logits(path: Path, prompts: list[list[int]]) -> list[list[float]]:
    llm = Llama(str(path), n_ctx=64, n_batch=64, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)
    out = []
    for p in prompts:
        llm.reset()
        llm.eval(p)
        out.append([float(x) for x in llm.scores[llm.n_tokens - 1]])
    del llm
    return out


def main() -> int:
    d = Path(sys.argv[1])
    prompts = json.loads((d / "prompts.json").read_text(encoding="utf-8"))
    results = {}
    for name, ps in prompts.items():
        f32_logits = last_logits(d / f"{name}-f32.gguf", ps)
        for label, ftype in FTYPES.items():
            q = d / f"{name}-{label}.gguf"
            quantize(d / f"{name}-f32.gguf", q, ftype)
            expected = d / f"{name}-{label}.expected.gguf"
            types = write_expected(q, expected)
            results[str(q)] = {"expected": str(expected), "prompts": ps, "logits": last_logits(q, ps),
                               "f32_logits": f32_logits}
            print(f"{q.name}: {', '.join(f'{n} {t}' for t, n in sorted(types.items()))}")
    (d / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
