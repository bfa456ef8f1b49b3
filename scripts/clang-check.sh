#!/usr/bin/env bash
# The clang step of CI: every translation unit of the library, tests, examples and benchmarks is compiled with
# clang++ -fsyntax-only (parsing and template instantiation, where clang and GCC disagree; no code generation,
# so it costs a fraction of a second build), then a chosen subset of tests is built and run with clang: the
# hostile-input, chat-template and data tests (fast to build, and the code most exposed to undefined behaviour a
# second compiler may expose). A full second build would double CI's 15 minutes on two cores.
#   scripts/clang-check.sh            uses clang++ from PATH, build dir build-clang (TINYLM_CLANG_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TINYLM_CLANG_BUILD_DIR:-build-clang}
cxx=${TINYLM_CLANG:-clang++}
jobs=${TINYLM_JOBS:-$(nproc)}
CXX=$cxx cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON -DTINYLM_BUILD_BENCHMARKS=ON \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
python3 - "$build/compile_commands.json" "$jobs" <<'PY'
import json, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
entries = json.load(open(sys.argv[1]))
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
print(f"clang-check: {len(entries)} translation units, {failed} failed")
sys.exit(1 if failed else 0)
PY
cmake --build "$build" -j "$jobs" --target test_core test_chat test_data
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} ctest --test-dir "$build" --output-on-failure -R "^(test_core|test_chat|test_data)$"
