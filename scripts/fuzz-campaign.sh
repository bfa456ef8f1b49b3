#!/usr/bin/env bash
# A fuzzing campaign (issue 21, docs/reliability.md): every libFuzzer target of a -DTINYLM_FUZZ=ON build for SECONDS
# each, LANES at a time, with the flags `ctest -L fuzz` uses. New inputs accumulate in BUILD/tests/fuzz/corpus_<t>
# (the committed seeds are read only); crash inputs go to OUT/artifacts_<t>/; each target's libFuzzer log is
# OUT/<t>.log and one line per target is appended to OUT/summary.txt (executions, peak RSS, crashes).
#   scripts/fuzz-campaign.sh BUILD SECONDS LANES OUT [TARGET...]     e.g. scripts/fuzz-campaign.sh build-fuzz 600 2 runs/fuzz
# A crash: replay it with BUILD/tests/fuzz/fuzz_replay TARGET FILE, fix, and add it to tests/regressions/<target>/.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "$1") seconds=$2 lanes=$3 out=$(realpath -m "$4")
shift 4
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(hf_config bpe_roundtrip safetensors jinja trainer_state adapter_config shards
                                      gguf tokenizer_json chat_template sft tasks run_log generation_config)
mkdir -p "$out"
cd "$build/tests/fuzz"
for t in "${targets[@]}"; do
  [[ -x fuzz_$t ]] || { echo "fuzz-campaign: $build/tests/fuzz/fuzz_$t is not built (-DTINYLM_FUZZ=ON, clang)"; exit 1; }
done
run() {
  local t=$1 dict=$src/tests/fuzz/dicts/json.dict
  case $t in jinja) dict=$src/tests/fuzz/dicts/jinja.dict ;; shards | gguf | bpe_roundtrip) dict= ;; esac
  mkdir -p "corpus_$t" "$out/artifacts_$t"
  local start rc=0
  start=$(date +%s)
  "./fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts_$t/" ${dict:+-dict=$dict} "corpus_$t" "$src/tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1 || rc=$?
  echo "$t rc=$rc seconds=$(($(date +%s) - start))" \
    "$(awk '/stat::number_of_executed_units/ {print "execs=" $2} /stat::peak_rss_mb/ {print "rss_mb=" $2}' "$out/$t.log" | tr '\n' ' ')" \
    "crashes=$(find "$out/artifacts_$t" -type f | wc -l)" >>"$out/summary.txt"
}
lane() { # each lane is a subshell: the queue position lives in a file, under a lock of the lane's own open file
  local i
  exec 9>>"$out/.queue.lock"
  while true; do
    flock 9
    i=$(cat "$out/.queue" 2>/dev/null || echo 0)
    echo $((i + 1)) >"$out/.queue"
    flock -u 9
    ((i < ${#targets[@]})) || return 0
    run "${targets[$i]}"
  done
}
rm -f "$out/.queue"
for ((l = 0; l < lanes; ++l)); do lane & done
wait
rm -f "$out/.queue" "$out/.queue.lock"
cat "$out/summary.txt"
