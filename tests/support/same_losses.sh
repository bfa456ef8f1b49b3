#!/usr/bin/env bash
# Two training runs' logs (log.jsonl, train/jsonl_log.hpp) agree: for each FIELD (loss, val_loss, grad_norm, ...),
# the values of the steps both logs have differ by at most TOLERANCE relative, and at least one step is shared.
# Prints every compared step; exit 1 on a difference, a field with no shared step or a missing log.
#   same_losses.sh TOLERANCE REFERENCE_LOG LOG FIELD...
set -u
if [ $# -lt 4 ]; then
  echo "usage: same_losses.sh TOLERANCE REFERENCE_LOG LOG FIELD..." >&2
  exit 1
fi
tolerance=$1 reference=$2 mine=$3
shift 3
for log in "$reference" "$mine"; do
  [ -s "$log" ] || { echo "same_losses: FAILED: no log $log"; exit 1; }
done
# "step":S,...,"FIELD":V (the log writes the step first) as "S V", by step.
values() { sed -nE "s/.*\"step\":([0-9]+),(.*,)?\"$1\":([-0-9.eE+]+).*/\\1 \\3/p" "$2" | sort -n; }
for field in "$@"; do
  joined=$(join <(values "$field" "$reference") <(values "$field" "$mine"))
  [ -n "$joined" ] || { echo "same_losses: FAILED: no step with $field in both logs"; exit 1; }
  if ! printf '%s\n' "$joined" | awk -v field="$field" -v tol="$tolerance" '{
        d = $2 - $3; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2);
        printf "step %s: %s %s and %s (relative difference %.1e)\n", $1, field, $2, $3, r;
        if (r > tol) bad = 1 } END { exit bad }'; then
    echo "same_losses: FAILED: $field differs by more than $tolerance relative ($reference, $mine)"
    exit 1
  fi
done
