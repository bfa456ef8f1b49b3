#!/usr/bin/env python3
"""The PyTorch peer of bench_generate: batch-1 greedy generation with the KV cache, Hugging Face generate
(use_cache=True, do_sample=False, no end-of-sequence token so that all new tokens are produced), LlamaForCausalLM of
the same shape as tinylm's config (benchmarks/train_throughput/pytorch_peer.py builds it; --config qwen3-0.6b:
Qwen3ForCausalLM with tl::presets::qwen3_0_6b's fields), float32 (--dtype bf16: the
model in bfloat16), sdpa attention,
torch.inference_mode, --threads threads. A streamer timestamps every new token, so decode tokens/s is measured as in
bench_generate: new tokens after the first over the time between the first and the last. One JSON line on stdout.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--config", choices=["a", "b", "qwen3-0.6b"], default="b")
ap.add_argument("--prompt", type=int, default=16)
ap.add_argument("--new-tokens", type=int, default=256)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                help="the model's weights and compute: float32, or the whole model in bfloat16 (model.to(bfloat16))")
ap.add_argument("--loop", choices=["generate", "manual"], default="generate",
                help="model.generate with a timestamping streamer, or a hand-written greedy loop over model() with "
                     "the KV cache and logits_to_keep=1 (no logits processors, no streamer)")
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import torch  # noqa: E402
from transformers import LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train_throughput"))
import pytorch_peer  # noqa: E402

# tl::presets::qwen3_0_6b (huggingface.co/Qwen/Qwen3-0.6B/config.json)
QWEN3_0_6B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, attention_bias=False, use_sliding_window=False)


def build_model():
    if args.config == "qwen3-0.6b":
        cfg = Qwen3Config(**QWEN3_0_6B)
        cfg._attn_implementation = args.attn
        return QWEN3_0_6B, Qwen3ForCausalLM(cfg)
    c = pytorch_peer.CONFIGS[args.config]
    return c, LlamaForCausalLM(pytorch_peer.llama_config(c, args.attn))


class Stamps(BaseStreamer):
    def __init__(self):
        self.times = []
        self.calls = 0

    def put(self, value):
        self.calls += 1
        if self.calls > 1:  # the first call carries the prompt
            self.times.append(time.perf_counter())

    def end(self):
        pass


def main():
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1)
    c, model = build_model()
    model = model.float().eval()
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    g = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, c["vocab_size"], (1, args.prompt), generator=g)
    tps, prefill = [], []
    for r in range(args.repeats + 1):
        s = Stamps()
        t0 = time.perf_counter()
        with torch.inference_mode():
            if args.loop == "generate":
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                                     do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0, streamer=s)
            else:
                step = model(prompt, use_cache=True, logits_to_keep=1)
                tokens = [step.logits[:, -1].argmax(-1, keepdim=True)]
                s.times.append(time.perf_counter())
                for _ in range(args.new_tokens - 1):
                    step = model(tokens[-1], past_key_values=step.past_key_values, use_cache=True, logits_to_keep=1)
                    tokens.append(step.logits[:, -1].argmax(-1, keepdim=True))
                    s.times.append(time.perf_counter())
                out = torch.cat([prompt, *tokens], dim=1)
        n = out.shape[1] - args.prompt
        assert n == args.new_tokens and len(s.times) == n, f"generated {n} tokens, stamped {len(s.times)}"
        if r == 0:
            continue
        prefill.append(s.times[0] - t0)
        tps.append((n - 1) / (s.times[-1] - s.times[0]))
    tps_sorted = sorted(tps)
    print(json.dumps({"impl": "pytorch", "config": args.config, "threads": torch.get_num_threads(),
                      "prompt_tokens": args.prompt, "new_tokens": args.new_tokens, "decode_tokens_per_s": tps,
                      "decode_tokens_per_s_median": tps_sorted[len(tps) // 2] if len(tps) % 2 else
                      0.5 * (tps_sorted[len(tps) // 2 - 1] + tps_sorted[len(tps) // 2]),
                      "prefill_seconds": prefill, "peak_rss_mib": pytorch_peer.peak_rss_mib(),
                      "settings": {"torch": torch.__version__, "attn": args.attn, "dtype": args.dtype, "inference_mode": True, "loop": args.loop,
                                   "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                   "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
