#!/usr/bin/env bash
# The issue-22 bar as a test (ctest -L slow): 11_topic_classifier with the fine-tuned encoder over the five
# held-out splits, then the fine-tuned classifier's mean accuracy and macro-F1 must both exceed the bag-of-words
# baseline's (the "mean of N split(s)" lines the program prints). Exit 2 (skipped) when the program reports its
# data or model absent.
#   finetuned_beats_baseline.sh PROGRAM OUT_DIR [more 11_topic_classifier options]
set -u
program=$1
out=$2
shift 2
log="$out.log"
mkdir -p "$(dirname "$out")"
"$program" --out "$out" --finetune-epochs 8 --threads 1 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || exit "$status"
mean() { # $1: the head's name at the line start; prints "accuracy macro-F1"
    awk -v head="$1" 'index($0, head) == 1 && /mean of/ {
        for (i = 1; i <= NF; ++i) { if ($i == "accuracy") a = $(i + 1); if ($i == "macro-F1") f = $(i + 1) }
        print a, f }' "$log"
}
read -r base_acc base_f1 <<<"$(mean 'bag of n-grams (baseline)')"
read -r tuned_acc tuned_f1 <<<"$(mean 'all-MiniLM-L6-v2 fine-tuned')"
if [ -z "${base_acc:-}" ] || [ -z "${tuned_acc:-}" ]; then
    echo "finetuned_beats_baseline: no 'mean of' lines for both heads in $log"
    exit 1
fi
echo "baseline accuracy $base_acc macro-F1 $base_f1; fine-tuned accuracy $tuned_acc macro-F1 $tuned_f1"
if awk -v a="$tuned_acc" -v b="$base_acc" -v f="$tuned_f1" -v g="$base_f1" 'BEGIN { exit !(a > b && f > g) }'; then
    echo "the fine-tuned classifier beats the bag-of-words baseline"
    exit 0
fi
echo "the fine-tuned classifier does not beat the bag-of-words baseline"
exit 1
