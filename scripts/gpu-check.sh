#!/usr/bin/env bash
# scripts/gpu-check.sh: the CUDA backend on a machine with an NVIDIA GPU (issue 20, docs/gpu.md). One command for
# the device tool's `run`, with `carry: [".gpu"]` (the bundle scripts/gpu-bundle.sh made on the build machine):
#
#   scripts/gpu-check.sh                 every stage below, in order
#   scripts/gpu-check.sh kernels bench   only the stages named (any of the names below; novels only so)
#
# With .gpu/ present it runs the bundled programs and builds nothing (the GPU machine's image lacks the Debian dev
# packages a build needs); without it, it configures and builds build-gpu as scripts/gpu-bundle.sh --build-only
# does and runs the programs from there. Every stage has its own time limit (seconds, GPU_CHECK_SCALE multiplies
# them all) and a failing stage does not stop the next; the summary comes last. Logs go under $OUT when it is set
# (the device tool brings back at most 8 files: this writes 3, and the novels stage 3 more), else gpu-check-logs/:
#   gpu-check.log   everything every stage printed, in order, each stage under a "=== stage" header
#   bench.jsonl     the JSON lines of bench_train and pytorch_peer.py
#   summary.txt     one line per stage (PASS / FAIL / TIMEOUT / SKIP, seconds), then the throughput comparison
# Exit status: 0 when every stage that ran passed.
#
# Stages (limit in seconds):
#   smi (20)       nvidia-smi: name, driver, memory, clocks; nvcc, torch and transformers versions
#   build (900)    only without .gpu/: configure and build build-gpu (scripts/gpu-bundle.sh --build-only)
#   ldd (10)       every library of every program resolves: the bundle's, the system's or CUDA's (found on the
#                  machine by scripts/gpu-env.sh: the loader's cache, /usr/local/cuda*, PyTorch's nvidia-* wheels;
#                  the bundle's libstdc++/libgomp only when the system's are missing or too old)
#   kernels (120)  test_cuda_kernels: every kernel and the whole step against the CPU, the step against
#                  transformers on the parity fixtures; must PASS (exit 77 =
#                  skipped = no device visible = a failure here)
#   math (20)      test_cuda_math (CPU: the kernels' arithmetic and the arena plans)
#   agree (40)     bench_train --device cuda against --device cpu on config a (1 x 256 tokens, f32, same weights
#                  and tokens): the losses of 3 steps within 1e-4 relative (the whole step and AdamW, end to end)
#   bench (300)    bench_train --device cuda --config 150m: batch 64 x 512, bf16 products, 2 warm-up + 5 timed
#                  steps (builds the 150M tl::decoder on the host first, a few seconds); then the same with
#                  --attention fused (flash_attention.cu)
#   peer (230)     pytorch_peer.py --device cuda --config 150m --compile: the same model and step in PyTorch (bf16
#                  autocast, SDPA, fused AdamW, clipping), 3 warm-up steps (the compilation) + 5 timed
#   lora (90)      bench_train --device cuda --config qwen0.5b --lora 16: LoRA rank 16 on the seven projections of
#                  the Qwen2.5-0.5B shape (random weights), batch 16 x 512, bf16 products, 2 warm-up + 5 timed
#   lorapeer (200) pytorch_peer.py --device cuda --config qwen0.5b --lora 16 --compile: the same with transformers'
#                  Qwen2 and peft, batch 16 x 512, 3 warm-up steps (the compilation) + 5 timed
#   qlora (60)     bench_train as lora with --qlora (the projections in NF4; quantised on the host first): tinylm
#                  only, last, when the budget leaves time for it
#   novels (180)   NOT in the default list, name it: 04_russian_novels $NOVELS_ARGS --out $NOVELS_OUT (default
#                  --preset 150m --device cuda --steps 50 --fresh; runs/gpu-check-novels), from the prepared data
#                  cache the bundle carries (GPU_BUNDLE_PREPARED: copied into NOVELS_OUT, and --data-dir /nonexistent
#                  so that the cache is what is read) or else the corpus (.gpu/data.tar.xz or TINYLM_DATA_DIR);
#                  NOVELS_LIMIT (seconds) replaces its limit; report.md, report_loss.svg and log.jsonl come back
#                  as novels-report.md, novels-report_loss.svg and novels-log.jsonl
# A budget keeps the whole script under the device tool's 600 s per call: GPU_CHECK_BUDGET seconds (default 585,
# counted from the script's start; 900 s more without .gpu/, for the build) cut each stage's limit to what is left
# (less 5 s for the summary), and a stage that would have under 20 s is not started (SKIP (budget)). The limits
# above add up to more than the budget (940 s with lora, lorapeer and qlora); most stages end far sooner, and the
# later ones get what the earlier ones left.
# To run only the LoRA stages on a warm machine: scripts/gpu-check.sh lora lorapeer qlora.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
out=${OUT:-$root/gpu-check-logs}
mkdir -p "$out"
log=$out/gpu-check.log
jsonl=$out/bench.jsonl
summary=$out/summary.txt
: >"$log"
: >"$jsonl"
: >"$summary"
scale=${GPU_CHECK_SCALE:-1}
bundle=$root/.gpu
build=${GPU_BUILD_DIR:-build-gpu}
wanted=" ${*:-smi build ldd kernels math agree bench peer lora lorapeer qlora} "
failures=0

say() { echo "$*" | tee -a "$log"; }
# stage NAME LIMIT COMMAND...: runs COMMAND with its output in the log (and on stdout), under `timeout`.
stage() {
  local name=$1 limit=$2
  shift 2
  [[ $wanted == *" $name "* ]] || return 0
  limit=$(awk -v a="$limit" -v s="$scale" 'BEGIN { v = int(a * s); printf "%d", v < 1 ? 1 : v }')
  local left=$((budget - SECONDS - 5))
  if [ "$left" -lt 20 ]; then
    printf '%-8s %-10s %4d s  %s\n' "$name" "SKIP" 0 "budget: $((budget - SECONDS)) s of ${budget} s left" |
      tee -a "$summary" | tee -a "$log"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "=== $name (limit ${limit} s): $*"
  local t0=$SECONDS rc
  # bash -c: the stages are functions of this script (exported below); timeout signals the whole process group.
  # STAGE_LIMIT: a stage that can stop in good order before it is killed does so (novels).
  STAGE_LIMIT=$limit timeout -k 10 "$limit" bash -c '"$@"' stage "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  local verdict=PASS
  case $rc in
    0) ;;
    124 | 137) verdict=TIMEOUT ;;
    77) verdict="SKIP (77)" ;;
    130) verdict="STOPPED" ;; # interrupted in good order at its time limit: checkpoint and report written
    *) verdict="FAIL ($rc)" ;;
  esac
  [ "$rc" -eq 0 ] || [ "$rc" -eq 130 ] || failures=$((failures + 1))
  local what="$*"
  printf '%-8s %-10s %4d s  %s\n' "$name" "$verdict" $((SECONDS - t0)) "${what:0:90}" | tee -a "$summary" >>"$log"
  return 0
}
skip() { printf '%-8s %-10s %4d s  %s\n' "$1" "SKIP" 0 "$2" | tee -a "$summary" | tee -a "$log"; }

# Where the programs are: the bundle, else the build tree (built by the build stage).
if [ -d "$bundle/bin" ]; then
  mode=bundle
  bin() { echo "$bundle/bin/$1"; }
else
  mode=build
  bin() { find "$root/$build" -type f -name "$1" -perm -u+x 2>/dev/null | head -1; }
fi

# The whole script's budget (seconds from its start; above): a build, without the bundle, adds its 900 s.
budget=${GPU_CHECK_BUDGET:-$([ "$mode" = bundle ] && echo 585 || echo 1485)}

# shellcheck source=scripts/gpu-env.sh
source "$root/scripts/gpu-env.sh"
setup_libraries() {
  [ "$mode" = bundle ] || return 0
  gpu_bundle_env "$bundle" > >(tee -a "$log") 2>&1 # in this shell, for its export
}

check_libraries() {
  local missing=0 exe
  [ "$mode" = bundle ] && cat "$bundle/MANIFEST"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  for exe in "$@"; do
    [ -x "$exe" ] || { echo "missing program: $exe"; missing=1; continue; }
    echo "--- $exe"
    ldd "$exe" 2>&1 | grep -E '=>|not found' | sed 's/ (0x[0-9a-f]*)//'
    ldd "$exe" 2>&1 | grep -q 'not found' && missing=1
  done
  return $missing
}

machine_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.sm,power.limit --format=csv || return 1
  nvidia-smi -L
  (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version) | tail -1
  python3 -c 'import torch, transformers as t; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "transformers", t.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no device")'
  echo "cores: $(nproc), $(. /etc/os-release && echo "$PRETTY_NAME"),"\
    "glibc $(ldd --version | head -1 | awk '{print $NF}')"
  echo "mode: $mode"
}

build_programs() {
  local nvcc
  nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  CUDACXX=$nvcc GPU_BUILD_DIR=$build JOBS=${JOBS:-$(nproc)} scripts/gpu-bundle.sh --build-only
}

kernels() {
  local rc
  "$(bin test_cuda_kernels)" --log_level=test_suite --report_level=short
  rc=$?
  [ "$rc" -eq 77 ] && echo "gpu-check: test_cuda_kernels was SKIPPED: no CUDA device visible to this process"
  return "$rc"
}

# The GPU step against tl::decoder on the CPU, end to end: config a, one sequence, f32, the same weights and tokens
# (same seed): the losses of 3 steps (the 2nd and 3rd after AdamW updates) within 1e-4 relative.
agree() {
  local cpu gpu
  cpu=$("$(bin bench_train)" --device cpu --config a --batch 1 --steps 2 --warmup 1 --no-ceiling) || return 1
  gpu=$("$(bin bench_train)" --device cuda --config a --batch 1 --steps 2 --warmup 1 --precision f32) || return 1
  python3 - "$cpu" "$gpu" <<'PY'
import json, sys
cpu, gpu = (json.loads(a.splitlines()[-1])["losses"] for a in sys.argv[1:3])
worst = max(abs(g - c) / abs(c) for c, g in zip(cpu, gpu))
print(f"losses, tl::decoder on the CPU: {cpu}\nlosses, gpu::decoder_step on the GPU: {gpu}\n"
      f"largest relative difference {worst:.2e}: {'AGREE' if worst < 1e-4 else 'DIFFER'} (bound 1e-4)")
sys.exit(0 if worst < 1e-4 and len(cpu) == len(gpu) else 1)
PY
}

bench() {
  "$(bin bench_train)" --device cuda --config 150m --steps 5 --warmup 2 | tee -a "$jsonl"
  [ "${PIPESTATUS[0]}" = 0 ] || return 1
  "$(bin bench_train)" --device cuda --config 150m --steps 5 --warmup 2 --attention fused | tee -a "$jsonl"
  return "${PIPESTATUS[0]}"
}

peer() {
  PYTHONUNBUFFERED=1 python3 benchmarks/train_throughput/pytorch_peer.py --device cuda --config 150m --steps 5 \
    --warmup 3 --compile | tee -a "$jsonl"
  return "${PIPESTATUS[0]}"
}

# LoRA on the Qwen2.5-0.5B shape (issue 20's "the same for LoRA"): rank 16 on the seven projections, alpha 32,
# batch 16 x 512 (the plan: 23.7 GiB with LoRA, 21.9 with QLoRA; docs/gpu.md), tinylm then PyTorch + peft.
# (A string, not an array: the stages run in a child bash, which gets exported variables only.)
LORA_ARGS=${LORA_ARGS:-"--config qwen0.5b --lora 16 --batch 16 --seq-len 512 --steps 5"}
# shellcheck disable=SC2086 # word splitting of LORA_ARGS is meant
lora() {
  "$(bin bench_train)" --device cuda $LORA_ARGS --warmup 2 | tee -a "$jsonl"
  return "${PIPESTATUS[0]}"
}
# shellcheck disable=SC2086
lorapeer() {
  PYTHONUNBUFFERED=1 python3 benchmarks/train_throughput/pytorch_peer.py --device cuda $LORA_ARGS --warmup 3 \
    --compile | tee -a "$jsonl"
  return "${PIPESTATUS[0]}"
}
# shellcheck disable=SC2086
qlora() {
  "$(bin bench_train)" --device cuda $LORA_ARGS --warmup 2 --qlora | tee -a "$jsonl"
  return "${PIPESTATUS[0]}"
}

# 04_russian_novels --device cuda: a run of the 150M preset (NOVELS_ARGS, without --out) in NOVELS_OUT, from the
# bundle's prepared data cache when there is one (NOVELS_DATA_FLAGS: --data-dir /nonexistent), else the corpus.
# 40 s before the stage's limit it gets SIGINT, on which the trainer finishes its step, saves the checkpoint and
# the report and exits with 130 (STOPPED): the same command on the still-warm machine resumes the run.
NOVELS_ARGS=${NOVELS_ARGS:-"--preset 150m --device cuda --steps 50 --fresh"}
NOVELS_OUT=${NOVELS_OUT:-$root/runs/gpu-check-novels}
NOVELS_DATA_FLAGS=
novels() {
  local rc=0 stop=()
  [ "${STAGE_LIMIT:-0}" -ge 80 ] && stop=(timeout --preserve-status -s INT -k 30 $((STAGE_LIMIT - 40)))
  # shellcheck disable=SC2086 # word splitting of the arguments is meant
  "${stop[@]}" "$(bin 04_russian_novels)" $NOVELS_ARGS $NOVELS_DATA_FLAGS --out "$NOVELS_OUT" || rc=$?
  for f in report.md report_loss.svg log.jsonl; do
    [ -e "$NOVELS_OUT/$f" ] && cp "$NOVELS_OUT/$f" "$out/novels-$f"
  done
  return $rc
}

export -f bin check_libraries machine_info build_programs kernels agree bench peer lora lorapeer qlora novels
export mode root bundle build jsonl out NOVELS_ARGS NOVELS_OUT LORA_ARGS

# The tree that runs may have no .git (the device tool copies files): the bundle's MANIFEST names its commit.
built_from=$(grep -m1 '^commit:' "$bundle/MANIFEST" 2>/dev/null ||
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo '?')")
say "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), $mode mode, $built_from, logs in $out"
stage smi 20 machine_info
if [ "$mode" = build ]; then
  stage build 900 build_programs
else
  built=$(grep -m1 '^built:' "$bundle/MANIFEST" | cut -d' ' -f2)
  [[ $wanted == *" build "* ]] && skip build "the bundle .gpu/ is here (built $built)"
fi
setup_libraries
# The tests' parity fixtures from this tree (kernels, math): the programs were built in another folder, which their
# TINYLM_SOURCE_DIR names.
export TINYLM_FIXTURE_DIR=${TINYLM_FIXTURE_DIR:-$PWD/tests/reference/fixtures}
programs=()
for p in test_cuda_kernels test_cuda_math bench_train 04_russian_novels; do
  exe=$(bin "$p")
  [ -n "$exe" ] && [ -x "$exe" ] && programs+=("$exe")
done
stage ldd 10 check_libraries "${programs[@]}"
stage kernels 120 kernels
stage math 20 "$(bin test_cuda_math)" --report_level=short
stage agree 40 agree
stage bench 300 bench
stage peer 230 peer
stage lora 90 lora
stage lorapeer 200 lorapeer
stage qlora 60 qlora
novels_exe=$(bin 04_russian_novels)
prepared_dir=${GPU_BUNDLE_UNPACKED:-/nonexistent}/prepared
if [[ $wanted != *" novels "* ]]; then
  :
elif [ -z "$novels_exe" ] || ! "$novels_exe" --help 2>/dev/null | grep -q -- '--device'; then
  skip novels "04_russian_novels is not bundled or takes no --device yet"
elif [ -d "$prepared_dir" ]; then
  mkdir -p "$NOVELS_OUT" && cp -r "$prepared_dir"/. "$NOVELS_OUT"/ # data_ctx512 (04 reads the cache there)
  NOVELS_DATA_FLAGS="--data-dir /nonexistent"
  export NOVELS_DATA_FLAGS
  stage novels "${NOVELS_LIMIT:-180}" novels
elif [ -z "${TINYLM_DATA_DIR:-}" ] && [ ! -d "${GPU_BUNDLE_UNPACKED:-/nonexistent}/data" ]; then
  skip novels "no data here: bundle a prepared cache (GPU_BUNDLE_PREPARED) or the corpus (GPU_BUNDLE_DATA), \
docs/gpu.md; or set TINYLM_DATA_DIR"
else
  [ -z "${TINYLM_DATA_DIR:-}" ] && export TINYLM_DATA_DIR=$GPU_BUNDLE_UNPACKED/data
  export NOVELS_DATA_FLAGS
  stage novels "${NOVELS_LIMIT:-180}" novels
fi

{
  echo
  echo "throughput (benchmarks/train_throughput/run.py --report):"
  [ -s "$jsonl" ] && python3 benchmarks/train_throughput/run.py --report "$jsonl" 2>&1
} | tee -a "$summary" >>"$log"
echo
echo "=== summary ($failures failed; logs: $log, $jsonl, $summary)"
cat "$summary"
[ "$failures" -eq 0 ]
