"""NF4 reference for tests/quant/test_nf4.cpp, written by bitsandbytes itself on CPU.

For a few random f32 matrices (fixed numpy seed) this stores what
`bitsandbytes.functional.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=...)` produces
and what `dequantize_4bit` gives back, with and without double quantisation of the absmax scales:

  <case>.w            f32 (out, in)   the weight
  <case>.packed       I32 (numel/2)   packed 4-bit codes (bytes 0..255; the reader has no U8)
  <case>.absmax       f32 (blocks)    first-level scales (compress_statistics=False)
  <case>.dq           f32 (out, in)   dequantize_4bit without double quantisation
  <case>.dq_qabsmax   I32 (blocks)    8-bit codes of (absmax - offset) (compress_statistics=True)
  <case>.dq_absmax2   f32 (blocks/256) second-level scales
  <case>.dq_offset    f32 (1)         mean of the first-level scales
  <case>.dq_nested    f32 (out, in)   dequantize_4bit with double quantisation
  <case>.dqd_*        the same three codes/scales and the dequantised weight when the scales are quantised by
                      bitsandbytes' "default" (pure torch) quantize_blockwise kernel instead of its native CPU one
  scales.*            double quantisation alone on 4096 scales (a 262144-parameter weight): absmax, offset,
                      native_q/native_absmax2 (public API, native CPU kernel), default_q/default_absmax2
  nf4_code f32 (16), dynamic_code f32 (256): the two code books as bitsandbytes holds them.

Why two nested variants: bitsandbytes' native CPU quantize_blockwise (libbitsandbytes_cpu, a BinSearch
"Direct2" table lookup plus one neighbour check) does not always pick the nearest code: 0.0 becomes code 131
(+2.1e-5) instead of 127 (0.0), and about 1% of inputs near a midpoint go to the other neighbour. Its
"default" kernel (the one bitsandbytes runs on devices without a native kernel) is exact nearest-code
rounding, `torch.bucketize` against the f32 midpoints of the sorted code, ties to the lower code; tinylm
implements that one. The 4-bit codes have no native CPU quantiser, so quantize_4bit always runs the default
kernel and both variants share `<case>.packed`.

Reruns give byte-identical files (one metadata key, so no dict order in the header).

Usage: python make_nf4_reference.py [--out tests/reference/quant/nf4_reference.safetensors]
"""

import argparse
import os

import numpy as np
import torch
from safetensors.torch import save_file

import bitsandbytes
import bitsandbytes.functional as F

# name -> (shape, generator); sizes chosen for ragged edges: rows that straddle 64-blocks, an odd element
# count (padding nibble), a partial last 64-block and a partial last 256-block of scales.
CASES = {
    "normal_16x128": ((16, 128), "normal"),
    "normal_48x352": ((48, 352), "normal"),  # 264 blocks: nested blocks of 256 + 8
    "ragged_7x45": ((7, 45), "normal"),  # 315 elements: odd, last block of 59
    "heavy_33x100": ((33, 100), "student"),  # outliers; 3300 = 51 blocks + 36
}


def make_weight(rng, shape, kind):
    if kind == "normal":
        w = rng.standard_normal(shape) * 0.02
    else:
        w = rng.standard_t(3, size=shape) * 0.02
    return torch.from_numpy(w.astype(np.float32))


def dequantize_4bit(packed, st, name):
    """bitsandbytes' dequantize_4bit, checked against its default (pure torch) kernel on the same scales.

    The native CPU kernel is wrong on some CPUs: bitsandbytes 0.50.2 on an AMD Zen 5 (AVX-512) gave normal_48x352
    wrong from element 384 on (rows whose length is not a multiple of the 64-block). Where the two disagree, the
    default kernel's result is stored (the definition, and what bitsandbytes runs on devices without a native
    kernel), and the disagreement is printed."""
    dq = F.dequantize_4bit(packed, st)
    absmax = F.dequantize_blockwise(st.absmax, st.state2) + st.offset if st.nested else st.absmax
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    default = torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(
        keys, packed, absmax.float(), st.blocksize, st.quant_type, st.shape, st.dtype)
    wrong = (dq != default).reshape(-1).nonzero()
    if wrong.numel() > 0:
        print(f"{name}: bitsandbytes' native dequantize_4bit differs from its default kernel in {wrong.numel()} of "
              f"{dq.numel()} values (first at {wrong[0].item()}): a bitsandbytes bug on this CPU; the default "
              f"kernel's values are stored")
        return default
    return dq


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "nf4_reference.safetensors"))
    args = ap.parse_args()

    rng = np.random.default_rng(20230523)
    tensors = {}
    for name, (shape, kind) in CASES.items():
        w = make_weight(rng, shape, kind)
        packed, st = F.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=False)
        dq = dequantize_4bit(packed, st, name)
        packed2, st2 = F.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)
        assert torch.equal(packed, packed2)
        dq2 = dequantize_4bit(packed2, st2, name + " (nested)")
        # The same double quantisation, through bitsandbytes' default (exact nearest-code) kernel.
        offset = st.absmax.mean()
        assert torch.equal(offset, st2.offset)
        keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
        qd, absmax2d = torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(
            keys, st.absmax - offset, st2.state2.code, 256)
        state2d = F.QuantState(absmax=absmax2d, code=st2.state2.code, blocksize=256, dtype=torch.float32)
        std = F.QuantState(absmax=qd, shape=w.shape, dtype=w.dtype, blocksize=64, code=st2.code,
                           quant_type="nf4", offset=offset, state2=state2d)
        dqd = dequantize_4bit(packed, std, name + " (nested, default scales)")
        tensors[f"{name}.dqd_qabsmax"] = qd.reshape(-1).to(torch.int32)
        tensors[f"{name}.dqd_absmax2"] = absmax2d.float()
        tensors[f"{name}.dqd_nested"] = dqd.float()
        n_diff = int((qd != st2.absmax).sum())
        tensors[f"{name}.w"] = w
        tensors[f"{name}.packed"] = packed.reshape(-1).to(torch.int32)
        tensors[f"{name}.absmax"] = st.absmax.float()
        tensors[f"{name}.dq"] = dq.float()
        tensors[f"{name}.dq_qabsmax"] = st2.absmax.reshape(-1).to(torch.int32)
        tensors[f"{name}.dq_absmax2"] = st2.state2.absmax.float()
        tensors[f"{name}.dq_offset"] = st2.offset.reshape(1).float()
        tensors[f"{name}.dq_nested"] = dq2.float()
        assert st2.state2.blocksize == 256
        tensors["dynamic_code"] = st2.state2.code.float()
        rel = ((dq - w).abs().mean() / w.abs().max()).item()
        print(f"{name}: {tuple(shape)} packed {packed.numel()} bytes, {st.absmax.numel()} blocks, "
              f"mean |dq - w| / absmax {rel:.4g}, native vs default nested codes differ in {n_diff}")
    # Double quantisation alone, on enough scales for the two kernels to disagree somewhere.
    scales = torch.from_numpy((np.abs(rng.standard_normal((4096, 64))).max(axis=1) * 0.02).astype(np.float32))
    offset = scales.mean()
    nq, nst = F.quantize_blockwise(scales - offset, blocksize=256)
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    dq_, dabs = torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(keys, scales - offset, nst.code, 256)
    tensors["scales.absmax"] = scales
    tensors["scales.offset"] = offset.reshape(1)
    tensors["scales.native_q"] = nq.to(torch.int32)
    tensors["scales.native_absmax2"] = nst.absmax.float()
    tensors["scales.default_q"] = dq_.to(torch.int32)
    tensors["scales.default_absmax2"] = dabs.float()
    print(f"scales: 4096, native vs default codes differ in {int((nq != dq_).sum())}")
    tensors["nf4_code"] = F.get_4bit_type("nf4", device="cpu").float()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    generator = f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}"
    save_file(tensors, args.out, metadata={"generator": generator})
    print(f"wrote {args.out} (bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
