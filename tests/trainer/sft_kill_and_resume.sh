#!/usr/bin/env bash
# An SFT run of the 07/08 recipe killed with SIGKILL between checkpoints and run again must end byte-identical to
# an uninterrupted run: the checkpoint's weights (with LoRA also the PEFT adapter), optimizer state and trainer
# state, and the adapter or model the recipe saves at the end.
# Usage: sft_kill_and_resume.sh <sft_tiny_run executable> [--full]
set -euo pipefail
# A 39k-parameter model gains nothing from threads, and on a loaded machine OpenMP's barriers make a 1 s run take
# a minute.
export OMP_NUM_THREADS=1
exe=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$exe" --work "$work" --out "$work/a" "$@" > "$work/a.log"

# Checkpoints every 5 steps: killed after step 12, the run must resume from step 10 and redo 11 and 12.
status=0
"$exe" --work "$work" --out "$work/b" --kill-after 12 "$@" > "$work/b1.log" || status=$?
if [ "$status" -ne 137 ]; then
  echo "expected the first run to die of SIGKILL (exit 137), got exit $status" >&2
  cat "$work/b1.log" >&2
  exit 1
fi
step=$(grep -o '"step": [0-9]*' "$work/b/checkpoint/trainer_state.json" | grep -o '[0-9]*')
if [ "$step" != 10 ] || [ -e "$work/b/adapter" ] || [ -e "$work/b/model" ]; then
  echo "the killed run should have left the checkpoint of step 10 and no final save (checkpoint step $step)" >&2
  exit 1
fi

"$exe" --work "$work" --out "$work/b" "$@" > "$work/b2.log"
grep -q "resuming from .* at step 10 of 16" "$work/b2.log"
grep -q "reloaded .*: .*OK" "$work/b2.log"

if [ "${1:-}" = "--full" ]; then
  files="checkpoint/model.safetensors model/model.safetensors"
else
  files="checkpoint/model.safetensors checkpoint/adapter_model.safetensors adapter/adapter_model.safetensors"
fi
for f in $files checkpoint/optimizer.safetensors checkpoint/trainer_state.json; do
  cmp "$work/a/$f" "$work/b/$f"
done
echo "killed after step 12, resumed from the checkpoint of step 10: byte-identical to the uninterrupted run ($files)"
