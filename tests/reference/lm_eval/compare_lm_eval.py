"""lm-evaluation-harness scores tinylm's exported checkpoint on a local task; the numbers must be tinylm's.

Usage: compare_lm_eval.py DIR
DIR is written by `test_eval --run_test=eval/export_for_lm_eval` (TINYLM_LM_EVAL_DIR=DIR):
  DIR/model/                 config.json, model.safetensors, tokenizer.json (save_pretrained + save_tokenizer_json)
  DIR/tasks/*.yaml, *.jsonl  tinylm_mc_0shot and tinylm_mc_2shot (multiple choice, dev split for the shots)
  DIR/tinylm_results.json    tinylm's contexts, per-choice log-likelihoods, acc and acc_norm
lm_eval runs the Hugging Face model on CPU in float32 with --log_samples; the prompts must be identical,
the per-choice log-likelihoods equal within TOLERANCE, and acc / acc_norm / acc_bytes equal, per document and
over the task.
"""
import json
import os
import sys
from pathlib import Path

TOLERANCE = 1e-4  # |lm_eval - tinylm| / max(1, |tinylm|) per log-likelihood
METRICS = ("acc", "acc_norm", "acc_bytes")


def main(root: Path) -> int:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_CACHE", str(root / "hf_datasets_cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:  # not in tests/reference/requirements.txt: a test that cannot run is skipped, not failed
        print("skipped: lm_eval is not installed in this Python (pip install lm-eval)")
        return 77

    expected = json.loads((root / "tinylm_results.json").read_text())
    tasks = sorted(expected)
    # tinylm writes tokenizer.json without a tokenizer_config.json, so transformers knows no bos/eos token;
    # lm-eval needs one (it decodes its prefix token), so it is named here: <bos> from tokenizer.json.
    added = json.loads((root / "model" / "tokenizer.json").read_text())["added_tokens"]
    bos = next(t["id"] for t in added if t["content"] == "<bos>")
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={root / 'model'},dtype=float32,device=cpu,prefix_token_id={bos}",
        tasks=tasks,
        task_manager=TaskManager(include_path=str(root / "tasks")),
        batch_size=1,
        log_samples=True,
    )
    failed = 0
    for task in tasks:
        ours = expected[task]
        res = out["results"][task]
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        worst = 0.0
        prompts_equal = True
        per_doc_equal = True
        for s, doc in zip(samples, ours["docs"], strict=True):
            per_doc_equal &= all(float(s[m]) == float(doc[m]) for m in METRICS)
            for (ctx, cont), resp, ll_ours in zip(s["arguments"], s["resps"], doc["logprobs"], strict=True):
                prompts_equal &= ctx == doc["context"]
                ll_theirs = float(resp[0][0])
                worst = max(worst, abs(ll_theirs - ll_ours) / max(1.0, abs(ll_ours)))
        same_scores = all(abs(res[f"{m},none"] - ours[m]) < 1e-12 for m in METRICS)
        ok = prompts_equal and worst <= TOLERANCE and same_scores and per_doc_equal
        failed += not ok
        theirs = ", ".join(f"{m} {res[m + ',none']:.4f}" for m in METRICS)
        mine = ", ".join(f"{m} {ours[m]:.4f}" for m in METRICS)
        print(f"{task} ({len(samples)} documents): lm_eval {theirs}; tinylm {mine}; per-document metrics "
              f"{'equal' if per_doc_equal else 'DIFFER'}; prompts {'identical' if prompts_equal else 'DIFFER'}; "
              f"max log-likelihood difference {worst:.2e} {'OK' if ok else 'FAIL'}")
        if not prompts_equal:
            for s, doc in zip(samples, ours["docs"]):
                if s["arguments"][0][0] != doc["context"]:
                    print(f"  doc {s['doc_id']}: lm_eval {s['arguments'][0][0]!r}\n           tinylm  {doc['context']!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
