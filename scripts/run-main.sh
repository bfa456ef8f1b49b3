#!/usr/bin/env bash
# The main job of the README: installs missing dependencies, builds, and runs the Russian-novels recipe
# (clean the corpus, train a 3k BPE tokenizer, write token shards, pretrain, continue the course's ten
# prompts). Arguments go to the example (see --help); run it again to resume an interrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Threads sleep at barriers instead of spinning: on a shared 2-core machine spinning halves throughput.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
build=${TINYLM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target 04_russian_novels
"$build/examples/04_russian_novels/04_russian_novels" "$@"
