#!/usr/bin/env python3
"""sentence-transformers' side of benchmarks/encoder (run.py): the same measurements as bench_encoder.

  encode  sentences/s of SentenceTransformer.encode(texts, batch_size) (tokenize, forward, pool, normalise)
  train   tokens/s of MultipleNegativesRankingLoss steps on (anchor, positive) pairs: forward, backward, AdamW
Prints one JSON line.
"""
import argparse
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer, losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--mode", choices=["encode", "train"], default="encode")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")
    model.max_seq_length = a.max_length
    out = {"what": a.mode, "batch": a.batch, "threads": a.threads, "max_length": a.max_length,
           "torch": torch.__version__}
    if a.mode == "encode":
        texts = open(a.texts, encoding="utf-8").read().split("\n")
        if texts and texts[-1] == "":
            texts.pop()
        model.encode(texts, batch_size=a.batch)  # warm-up
        rates = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model.encode(texts, batch_size=a.batch)
            rates.append(len(texts) / (time.perf_counter() - t0))
        out.update(sentences=len(texts), sentences_per_s=statistics.median(rates), rounds=rates)
    else:
        pairs = []
        for line in open(a.texts, encoding="utf-8"):
            if line.strip():
                row = json.loads(line)
                pairs.append((row["anchor"], row["positive"]))
        model.train()
        loss_fn = losses.MultipleNegativesRankingLoss(model)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
        rates, nxt = [], 0
        for k in range(a.steps + 1):
            batch = [pairs[(nxt + i) % len(pairs)] for i in range(a.batch)]
            nxt = (nxt + a.batch) % len(pairs)
            fa = model.tokenize([p[0] for p in batch])
            fp = model.tokenize([p[1] for p in batch])
            tokens = fa["input_ids"].numel() + fp["input_ids"].numel()
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn([fa, fp], None)
            loss.backward()
            opt.step()
            if k > 0:
                rates.append(tokens / (time.perf_counter() - t0))
        out.update(tokens_per_s=statistics.median(rates), rounds=rates)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
