#!/usr/bin/env bash
# The Tatar recipe in one command: installs missing dependencies, builds, cleans the Tatar corpus, trains the
# BPE tokenizer, trains the dense, mixture-of-experts and sliding-window variants at equal compute, and keeps
# the best as runs/tatar/model. Arguments go to the example (see --help), e.g. --smoke, --steps N,
# --leipzig tat_wikipedia_2021_100K-sentences.txt; run it again to resume an interrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Threads sleep at barriers instead of spinning: on a shared 2-core machine spinning halves throughput.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
build=${TINYLM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target 05_tatar
"$build/examples/05_tatar/05_tatar" "$@"
