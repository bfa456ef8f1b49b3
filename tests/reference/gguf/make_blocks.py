#!/usr/bin/env python3
"""Random blocks of every ggml type tinylm reads, with the values the `gguf` package dequantises them to.

    make_blocks.py OUT.gguf

For each type (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) the file holds a
tensor "<type>" of random bytes (2 rows of 512 values: 2 blocks of 256 or 16 of 32 a row), whose f16 scale fields
are replaced by finite random halves, and "<type>.expected", the F32 values gguf.quants.dequantize gives it.
test_gguf (gguf_quants/dequantisation_is_the_gguf_package) reads both with tinylm's reader and requires them equal bit
for bit. The committed fixture tests/reference/gguf/fixtures/blocks.gguf is this script's output (seed 20261207);
the torch test gguf_blocks_from_the_gguf_package regenerates it with the installed package and checks that copy.
"""

from __future__ import annotations

import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import dequantize

# Byte offsets of the f16 fields (scales and mins) inside a block of each type: ggml-common.h's block structs.
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCK = {T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22), T.Q5_1: (32, 24), T.Q8_0: (32, 34),
         T.IQ4_NL: (32, 18), T.Q2_K: (256, 84), T.Q3_K: (256, 110), T.Q4_K: (256, 144), T.Q5_K: (256, 176),
         T.Q6_K: (256, 210)}
ROWS, COLS = 2, 512


def main() -> None:
    rng = np.random.default_rng(20261207)
    w = GGUFWriter(sys.argv[1], "blocks")
    for qtype, (block, nbytes) in BLOCK.items():
        n_blocks = ROWS * COLS // block
        raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
        for at in HALF_FIELDS[qtype]:
            halves = rng.uniform(-2.0, 2.0, size=n_blocks).astype(np.float16)
            raw[:, at:at + 2] = halves.view(np.uint8).reshape(n_blocks, 2)
        raw = raw.reshape(ROWS, COLS // block * nbytes)
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", dequantize(raw, qtype).astype(np.float32))
    values = rng.standard_normal((ROWS, COLS)).astype(np.float32) * 3
    halves = values.astype(np.float16)
    w.add_tensor("F16", halves)
    w.add_tensor("F16.expected", halves.astype(np.float32))
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncated: any bit pattern of a finite bf16
    w.add_tensor("BF16", bf16.view(np.uint8).reshape(ROWS, COLS * 2), raw_dtype=T.BF16)
    w.add_tensor("BF16.expected", dequantize(bf16.view(np.uint8).reshape(ROWS, COLS * 2), T.BF16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
