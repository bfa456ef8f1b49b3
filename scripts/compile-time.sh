#!/usr/bin/env bash
# CPU seconds GCC (or the build's compiler) spends on one translation unit at several optimisation levels, taken
# from a configured build's compile_commands.json: the figures behind TINYLM_TEST_OPTIMIZATION (docs/testing.md).
#   scripts/compile-time.sh BUILD_DIR SOURCE [LEVELS...]      e.g. scripts/compile-time.sh build examples/08_jokes_lora/main.cpp -O3 -O1
# BUILD_DIR must have been configured with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON. CPU (user) time is reported,
# not wall time: it depends less on what else the machine runs.
set -euo pipefail
build=$1 source=$(realpath "$2")
shift 2
levels=("$@")
[[ ${#levels[@]} -gt 0 ]] || levels=(-O3 -O2 -O1 -fsyntax-only)
python3 - "$build/compile_commands.json" "$source" "${levels[@]}" <<'PY'
import json, os, resource, shlex, subprocess, sys, tempfile
db, source, levels = sys.argv[1], sys.argv[2], sys.argv[3:]
entry = next((e for e in json.load(open(db)) if os.path.realpath(e["file"]) == source), None)
if entry is None:
    sys.exit(f"compile-time.sh: {source} is not in {db}")
args, skip = [], False
for a in shlex.split(entry["command"]):
    if skip:
        skip = False
    elif a == "-o":
        skip = True
    elif not (a.startswith("-O") and len(a) <= 3):  # the build's own level is replaced
        args.append(a)
out = tempfile.mktemp(suffix=".o")
for level in levels:
    flags = ["-O3", "-fsyntax-only"] if level == "-fsyntax-only" else [level, "-o", out]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args + flags, cwd=entry["directory"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{os.path.relpath(source)} {level}: {after.ru_utime - before.ru_utime:.1f} s CPU", flush=True)
if os.path.exists(out):
    os.remove(out)
PY
