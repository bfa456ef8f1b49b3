#!/usr/bin/env python3
"""Side by side: tinylm's BPE (bench_tokenizer) against SentencePiece (spm_train, --model_type=bpe) and Hugging
Face `tokenizers` (BpeTrainer) on one corpus, in one run, interleaved so that every tool sees the same machine.

  python3 benchmarks/tokenizer/compare.py --bench build/benchmarks/tokenizer/bench_tokenizer \
      --corpus ../shared/data/russian_novels/corpus --vocab 3000 8000 --repeat 3 --threads 2

Reports medians over the repeats: training seconds and peak resident memory (each training in its own
process), encoding throughput in MB/s with 1 and 2 threads (tinylm: the whole corpus; the peers, which are slower,
the first --share of its lines), and the ratios to tinylm.
Needs spm_train on PATH (Debian package `sentencepiece`) and the Python packages of requirements.txt.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HF_TRAIN = r'''
import resource, sys, time
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers, Regex
path, vocab, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
t0 = time.perf_counter()
tok = Tokenizer(models.BPE())
tok.normalizer = normalizers.NFC()
tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), behavior="isolated"),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train([path], trainer)
seconds = time.perf_counter() - t0
tok.save(out)
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
'''

# Encoders of the peers take the first `share` of the lines (they are slow); MB/s is of the bytes they encoded.
HF_ENCODE = r'''
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8", newline="").read().splitlines(keepends=True)
lines = lines[:int(len(lines) * float(sys.argv[3]))]
nbytes = sum(len(x.encode("utf-8")) for x in lines)
encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
t0 = time.perf_counter()
n = sum(len(e.ids) for e in encode(lines, add_special_tokens=False))
print(time.perf_counter() - t0, nbytes)
'''

SPM_ENCODE = r'''
import sys, time
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8", newline="").read().splitlines(keepends=True)
lines = lines[:int(len(lines) * float(sys.argv[4]))]
nbytes = sum(len(x.encode("utf-8")) for x in lines)
threads = int(sys.argv[3])
t0 = time.perf_counter()
ids = sp.encode(lines, num_threads=threads)
print(time.perf_counter() - t0, nbytes)
'''


def run(cmd, env=None, want_stderr=False):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return (r.stdout, r.stderr) if want_stderr else r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vocab", type=int, nargs="+", default=[3000, 8000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--share", type=float, default=0.25, help="share of the lines the peers encode")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the raw measurements here")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="tinylm_tok_bench_")
    os.makedirs(work, exist_ok=True)

    # One file with exactly the bytes bench_tokenizer reads (files in name order, each ending in '\n').
    corpus = os.path.join(work, "corpus.txt")
    names = sorted(os.listdir(args.corpus)) if os.path.isdir(args.corpus) else [None]
    with open(corpus, "wb") as out:
        for n in names:
            data = open(os.path.join(args.corpus, n) if n else args.corpus, "rb").read()
            out.write(data if data.endswith(b"\n") else data + b"\n")
    mb = os.path.getsize(corpus) / 1e6
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    rows = []  # (tool, what, vocab, threads, seconds, peak_mb, mb_per_s)

    for rep in range(args.repeat):
        for v in args.vocab:
            # tinylm: training in a forked child (its own peak memory), then encoding with 1 and 2 threads.
            for line in run([args.bench, "--corpus", args.corpus, "--vocab", str(v), "--threads", str(args.threads),
                             "--repeat", "1", "--out", work]).splitlines():
                r = json.loads(line)
                if r["what"] == "train":
                    rows.append(("tinylm", "train", v, r["threads"], r["seconds"], r["peak_rss_mb"], None))
                else:
                    rows.append(("tinylm", "encode", v, r["threads"], r["seconds"], None, r["mb_per_s"]))
            # SentencePiece BPE (all sentences, long lines kept).
            prefix = os.path.join(work, f"spm_{v}")
            t0 = time.perf_counter()
            _, err = run(["/usr/bin/time", "-f", "peak_kb %M", "spm_train", f"--input={corpus}", f"--model_prefix={prefix}", f"--vocab_size={v}", "--model_type=bpe",
                 f"--num_threads={args.threads}", "--input_sentence_size=0", "--max_sentence_length=1000000",
                 "--minloglevel=2"], want_stderr=True)
            secs = time.perf_counter() - t0
            peak_kb = [float(x.split()[1]) for x in err.splitlines() if x.startswith("peak_kb")][-1]
            rows.append(("spm", "train", v, args.threads, secs, peak_kb / 1024.0, None))
            for th in (1, 2):
                s, nb = run([sys.executable, "-c", SPM_ENCODE, prefix + ".model", corpus, str(th), str(args.share)]).split()
                rows.append(("spm", "encode", v, th, float(s), None, float(nb) / 1e6 / float(s)))
            # Hugging Face tokenizers, the same pipeline as tinylm's byte-level trainer.
            hf_json = os.path.join(work, f"hf_{v}.json")
            s, peak = run([sys.executable, "-c", HF_TRAIN, corpus, str(v), hf_json], env=env).split()
            rows.append(("hf", "train", v, args.threads, float(s), float(peak), None))
            for th in (1, 2):
                s, nb = run([sys.executable, "-c", HF_ENCODE, hf_json, corpus, str(args.share)],
                            env=dict(os.environ, RAYON_NUM_THREADS=str(th))).split()
                rows.append(("hf", "encode", v, th, float(s), None, float(nb) / 1e6 / float(s)))
            print(f"repeat {rep + 1}/{args.repeat}, vocab {v} done", file=sys.stderr, flush=True)

    def med(tool, what, v, th, col):
        xs = [r[col] for r in rows if r[0] == tool and r[1] == what and r[2] == v and r[3] == th and r[col] is not None]
        return statistics.median(xs) if xs else float("nan")

    print(f"\nCorpus {args.corpus}: {mb:.1f} MB; medians of {args.repeat} runs; training with {args.threads} threads;"
          f" the peers encode the first {args.share:.0%} of the lines.\n")
    print("| vocab | tool | train s | peak MB | encode MB/s (1 thr) | encode MB/s (2 thr) | train: × tinylm | encode 2 thr: tinylm × |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in args.vocab:
        t_ours = med("tinylm", "train", v, args.threads, 4)
        e_ours = med("tinylm", "encode", v, 2, 6)
        for tool in ("tinylm", "spm", "hf"):
            t = med(tool, "train", v, args.threads, 4)
            peak = med(tool, "train", v, args.threads, 5)
            e1, e2 = med(tool, "encode", v, 1, 6), med(tool, "encode", v, 2, 6)
            print(f"| {v} | {tool} | {t:.2f} | {peak:.0f} | {e1:.1f} | {e2:.1f} | {t / t_ours:.1f} | {e_ours / e2:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mb": mb, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
