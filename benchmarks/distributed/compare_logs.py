#!/usr/bin/env python3
"""Compare two runs' log.jsonl (tl::run_logger): the largest relative difference of the training losses and of the
validation losses over the steps both logged (docs/distributed.md: a recipe as N ranks against one process).

    python3 benchmarks/distributed/compare_logs.py RUN_A/log.jsonl RUN_B/log.jsonl
"""
import json
import sys


def losses(path):
    train, val = {}, {}
    for line in open(path, encoding="utf-8"):
        record = json.loads(line)
        if "loss" in record:
            train[record["step"]] = record["loss"]
        if "val_loss" in record:
            val[record["step"]] = record["val_loss"]
    return train, val


a, b = losses(sys.argv[1]), losses(sys.argv[2])
for name, x, y in (("training loss", a[0], b[0]), ("validation loss", a[1], b[1])):
    steps = sorted(set(x) & set(y))
    if not steps:
        print(f"{name}: no common steps")
        continue
    worst = max(abs(x[s] - y[s]) / abs(y[s]) for s in steps)
    last = steps[-1]
    print(f"{name}: {len(steps)} steps, largest relative difference {worst:.1e}; "
          f"step {last}: {x[last]:.6f} vs {y[last]:.6f}")
