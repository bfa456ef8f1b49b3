#!/usr/bin/env bash
# The clang step of CI: every translation unit of the library, tests, examples and benchmarks is compiled with
# clang++ -fsyntax-only (parsing and template instantiation, where clang and GCC disagree; no code generation,
# so it costs a fraction of a second build), then a chosen subset of tests is built with clang under
# AddressSanitizer and UndefinedBehaviorSanitizer and run: the fuzz targets' replay of every seed and regression
# input (tests/fuzz, every parser of untrusted input), and the hostile-input, chat-template and data tests (fast
# to build, and the code most exposed to memory errors and undefined behaviour). A full second build, sanitized
# or not, would double CI's build time on two cores (docs/reliability.md).
#   scripts/clang-check.sh            uses clang++ from PATH, build dir build-clang (TINYLM_CLANG_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TINYLM_CLANG_BUILD_DIR:-build-clang}
cxx=${TINYLM_CLANG:-clang++}
jobs=${TINYLM_JOBS:-$(nproc)}
CXX=$cxx cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON -DTINYLM_BUILD_BENCHMARKS=ON \
  -DTINYLM_SANITIZE=address,undefined -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
python3 - "$build/compile_commands.json" "$jobs" <<'PY'
import json, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
# The sanitized subset below compiles its own translation units with clang anyway; the .cu files of tinylm::cuda
# are nvcc's (its host compiler is GCC); the C++ that uses them is checked here.
built_below = ("/test_core.dir/", "/test_chat.dir/", "/test_data.dir/", "/fuzz_replay.dir/")
entries = [e for e in json.load(open(sys.argv[1]))
           if not e["file"].endswith(".cu") and not any(t in e["command"] for t in built_below)]
def check(e):
    args = shlex.split(e["command"])
    out, skip = [], False
    for a in args:  # drop the output: -o FILE and -c
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif a != "-c":
            out.append(a)
    r = subprocess.run(out + ["-fsyntax-only"], cwd=e["directory"], capture_output=True, text=True)
    return e["file"], r.returncode, r.stderr
failed = 0
with ThreadPoolExecutor(int(sys.argv[2])) as pool:
    for f, rc, err in pool.map(check, entries):
        if rc != 0 or err:
            print(err, end="")
        failed += rc != 0
print(f"clang-check: {len(entries)} translation units (and the sanitized ones below), {failed} failed")
sys.exit(1 if failed else 0)
PY
cmake --build "$build" -j "$jobs" --target test_core test_chat test_data fuzz_replay
# halt_on_error: the first report fails the test; detect_leaks stays on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} ctest --test-dir "$build" --output-on-failure \
  -R "^(test_core|test_chat|test_data|fuzz_replay_.*)$"
