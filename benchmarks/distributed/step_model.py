#!/usr/bin/env python3
"""Step-time model of data-parallel training on K machines (docs/distributed.md).

Weak scaling (each machine keeps its per-machine batch; the global batch grows with K):
    t_step(K) = t_compute + t_allreduce(K),  t_allreduce(K) = 2 (K - 1) / K * S / bw + 2 (K - 1) * latency
(a ring all-reduce of S bytes of f32 gradients; tinylm starts it after backward, so nothing overlaps it), and
    efficiency(K) = t_compute / t_step(K).

    python3 benchmarks/distributed/step_model.py --params 4.7e6 --compute-s 0.95
"""
import argparse

p = argparse.ArgumentParser()
p.add_argument("--params", type=float, required=True, help="trained parameters (gradient floats)")
p.add_argument("--compute-s", type=float, required=True, help="measured forward+backward+step seconds per machine")
p.add_argument("--latency-us", type=float, default=50.0, help="per-message latency of the network")
a = p.parse_args()
size = 4 * a.params
print(f"gradients {size / 2**20:.1f} MiB, compute {a.compute_s:.3f} s per step")
print("| machines | 10 Gbit/s: all-reduce s | efficiency | 100 Gbit/s: all-reduce s | efficiency |")
print("|---|---|---|---|---|")
for k in (2, 8, 32):
    row = [str(k)]
    for gbit in (10, 100):
        bw = gbit * 1e9 / 8
        t = 2 * (k - 1) / k * size / bw + 2 * (k - 1) * a.latency_us * 1e-6
        row += [f"{t:.3f}", f"{a.compute_s / (a.compute_s + t):.0%}"]
    print("| " + " | ".join(row) + " |")
