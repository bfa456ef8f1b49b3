#!/usr/bin/env python3
"""tinylm's retrieval metrics and ranking loss against sentence-transformers on the same embeddings.

Reads DIR/inputs.json, written by `test_embed --run_test=retrieval/export_for_sentence_transformers` with
TINYLM_EMBED_EXPORT_DIR=DIR: query and corpus embeddings with the relevant documents, and anchor / positive /
negative embeddings, each with tinylm's results. Runs

  * InformationRetrievalEvaluator.compute_all_metrics on the precomputed embeddings (cosine), with corpus ids
    that sort like the corpus rows (ties then break the same way as in tinylm), and
  * MultipleNegativesRankingLoss / MultipleNegativesSymmetricRankingLoss on the embeddings in float64, with the
    gradients from autograd,

and compares: metrics to 1e-6 (absolute), loss and gradients to 1e-4 (relative to the largest element).
--write-fixture PATH also writes the metrics and losses as the fixture the default suite checks
(tests/reference/embed/expected.json). Exit status 1 on a mismatch.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import cos_sim

VARIANTS = ("plain", "symmetric", "hard_negatives", "symmetric_hard_negatives")


class PrecomputedEvaluator(InformationRetrievalEvaluator):
    """The evaluator with the query embeddings looked up instead of encoded (the corpus ones are passed in)."""

    def __init__(self, query_embeddings, **kwargs):
        super().__init__(**kwargs)
        self.query_embeddings = query_embeddings

    def embed_inputs(self, model, sentences, **kwargs):
        return torch.stack([self.query_embeddings[int(s[1:])] for s in sentences])


def st_metrics(inputs):
    queries = torch.tensor(inputs["queries"], dtype=torch.float32)
    corpus = torch.tensor(inputs["corpus"], dtype=torch.float32)
    query_ids = {f"q{i:04d}": f"q{i:04d}" for i in range(len(queries))}
    corpus_ids = {f"d{i:06d}": f"d{i:06d}" for i in range(len(corpus))}
    relevant = {f"q{i:04d}": {f"d{d:06d}" for d in docs} for i, docs in enumerate(inputs["relevant"]) if docs}
    evaluator = PrecomputedEvaluator(
        queries,
        queries=query_ids,
        corpus=corpus_ids,
        relevant_docs=relevant,
        score_functions={"cosine": cos_sim},
        show_progress_bar=False,
        corpus_chunk_size=17,  # several chunks, as tinylm's search
    )
    scores = evaluator.compute_all_metrics(model=None, corpus_embeddings=corpus)["cosine"]
    out = {}
    for metric in ("accuracy", "precision", "recall", "mrr", "ndcg", "map"):
        for k, value in scores[metric + "@k"].items():
            out[f"{metric}@{k}"] = float(value)
    return out


def st_loss(inputs, variant):
    """Loss and gradients of the unnormalised embeddings, in float64."""
    anchors = torch.tensor(inputs["anchors"], dtype=torch.float64, requires_grad=True)
    positives = torch.tensor(inputs["positives"], dtype=torch.float64, requires_grad=True)
    h = inputs["negatives_per_anchor"] if variant.endswith("negatives") else 0
    negatives = torch.tensor(inputs["negatives"], dtype=torch.float64)[: h * len(anchors)].clone().requires_grad_(True)
    # tinylm lays out the negatives (B*H, d), anchor b's at rows b*H..; sentence-transformers takes one (B, d)
    # column per negative.
    columns = [negatives.view(len(anchors), h, -1)[:, j, :] for j in range(h)]
    if variant.startswith("symmetric"):
        # What MultipleNegativesSymmetricRankingLoss is (a deprecated alias of exactly these arguments).
        loss_fn = MultipleNegativesRankingLoss(
            model=None, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
        )
    else:
        loss_fn = MultipleNegativesRankingLoss(model=None)  # scale 20, cos_sim: the defaults
    loss = loss_fn.compute_loss_from_embeddings([anchors, positives, *columns], None)
    loss.backward()
    grads = {"d_anchors": anchors.grad, "d_positives": positives.grad, "d_negatives": negatives.grad}
    return loss.item(), grads


def rel_error(got, want):
    got = torch.tensor(got, dtype=torch.float64).reshape(want.shape)
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / scale if scale > 0 else (got - want).abs().max().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--write-fixture", type=Path)
    args = parser.parse_args()
    inputs = json.loads((args.dir / "inputs.json").read_text())

    ok = True
    metrics = st_metrics(inputs)
    for name, want in metrics.items():
        got = inputs["metrics"].get(name)
        good = got is not None and abs(got - want) <= 1e-6
        ok &= good
        print(f"{'ok ' if good else 'BAD'} {name:14s} tinylm {got} sentence-transformers {want}")

    losses = {}
    for variant in VARIANTS:
        loss, grads = st_loss(inputs, variant)
        losses[variant] = loss
        mine = inputs["tinylm_loss"][variant]
        err = abs(mine["loss"] - loss) / abs(loss)
        good = err <= 1e-4
        ok &= good
        print(f"{'ok ' if good else 'BAD'} {variant} loss tinylm {mine['loss']:.8f} torch {loss:.8f} (rel {err:.2e})")
        for name, want in grads.items():
            if want is None:
                continue
            e = rel_error(mine[name], want) if want.numel() else 0.0
            good = e <= 1e-4
            ok &= good
            print(f"{'ok ' if good else 'BAD'} {variant} {name} rel {e:.2e}")

    if args.write_fixture:
        fixture = {
            "note": "sentence-transformers' InformationRetrievalEvaluator and MultipleNegatives(Symmetric)RankingLoss "
            "on the inputs of tests/embed/test_retrieval.cpp; written by tests/reference/embed/compare_st.py",
            "metrics": metrics,
            "loss": losses,
        }
        args.write_fixture.write_text(json.dumps(fixture, indent=1) + "\n")
        print(f"wrote {args.write_fixture}")
    print("all match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
