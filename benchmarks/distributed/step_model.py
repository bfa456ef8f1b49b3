#!/usr/bin/env python3
"""Step-time model of data-parallel training on K machines (docs/distributed.md).

Weak scaling (each machine keeps its per-machine batch; the global batch grows with K):
    t_step(K) = t_compute + t_exposed(K),  t_allreduce(K, S) = 2 (K - 1) / K * S / bw + 2 (K - 1) * latency
(a ring all-reduce of S bytes of f32 gradients), and efficiency(K) = t_compute / t_step(K). Without overlap
(--overlap 0) t_exposed = t_allreduce of all gradients. With the all-reduce started inside backward (tinylm's
default, trainer_options::overlap_reduce), a fraction --overlap of the compute (backward's share of the step) can
hide it, but the last bucket (--last-bucket-params: the embedding, final only when backward returns) never is:
    t_exposed = max(t_allreduce(S_last), t_allreduce(S) - overlap * t_compute).

    python3 benchmarks/distributed/step_model.py --params 4.7e6 --compute-s 0.95
    python3 benchmarks/distributed/step_model.py --params 1.32e8 --compute-s 1.0 --overlap 0.6 \
        --last-bucket-params 6.55e6
"""
import argparse

p = argparse.ArgumentParser()
p.add_argument("--params", type=float, required=True, help="trained parameters (gradient floats)")
p.add_argument("--compute-s", type=float, required=True, help="measured forward+backward+step seconds per machine")
p.add_argument("--latency-us", type=float, default=50.0, help="per-message latency of the network")
p.add_argument("--overlap", type=float, default=0.0, help="share of the compute that hides the all-reduce (0: none)")
p.add_argument("--last-bucket-params", type=float, default=0.0, help="parameters of the bucket reduced after backward")
a = p.parse_args()
size = 4 * a.params
print(f"gradients {size / 2**20:.1f} MiB, compute {a.compute_s:.3f} s per step, overlap {a.overlap:.2f}")
print("| machines | 10 Gbit/s: exposed all-reduce s | efficiency | 100 Gbit/s: exposed all-reduce s | efficiency |")
print("|---|---|---|---|---|")


def allreduce(k, nbytes, bw):
    return 2 * (k - 1) / k * nbytes / bw + 2 * (k - 1) * a.latency_us * 1e-6


for k in (2, 8, 32):
    row = [str(k)]
    for gbit in (10, 100):
        bw = gbit * 1e9 / 8
        t = allreduce(k, size, bw)
        if a.overlap > 0:
            t = max(allreduce(k, 4 * a.last_bucket_params, bw), t - a.overlap * a.compute_s)
        row += [f"{t:.3f}", f"{a.compute_s / (a.compute_s + t):.0%}"]
    print("| " + " | ".join(row) + " |")
