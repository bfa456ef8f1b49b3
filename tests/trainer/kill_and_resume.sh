#!/usr/bin/env bash
# SIGKILL at a random step, then resume: the final weights and optimizer state must equal those of an
# uninterrupted run, byte for byte. Usage: kill_and_resume.sh <01_train_tiny executable>
set -euo pipefail
exe=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--steps 160 --batch 2 --checkpoint-every 10)

"$exe" "${args[@]}" --out "$work/a" --fresh > "$work/a.log"

# Wait until the checkpoint of a random step in 10..130 exists, then kill without warning: the process is
# somewhere in the steps after it.
target=$((10 * (1 + RANDOM % 13)))
"$exe" "${args[@]}" --out "$work/b" --fresh > "$work/b1.log" &
pid=$!
state="$work/b/checkpoint/trainer_state.json"
step_of() { grep -o '"step": [0-9]*' "$1" 2>/dev/null | grep -o '[0-9]*' || echo 0; }
while kill -0 "$pid" 2>/dev/null && [ "$(step_of "$state")" -lt "$target" ]; do sleep 0.02; done
kill -9 "$pid" 2>/dev/null || true
status=0
wait "$pid" || status=$?
if [ "$status" -ne 137 ]; then
  echo "the first run ended by itself (exit $status) before the kill; nothing to resume" >&2
  exit 1
fi
killed_after=$(step_of "$state")
"$exe" "${args[@]}" --out "$work/b" > "$work/b2.log"
grep -q "validation loss" "$work/b2.log"
for f in model.safetensors optimizer.safetensors trainer_state.json; do
  cmp "$work/a/checkpoint/$f" "$work/b/checkpoint/$f"
done
echo "killed after the checkpoint of step $killed_after; the resumed run is byte-identical to the uninterrupted one"
