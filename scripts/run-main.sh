#!/usr/bin/env bash
# The main job of the README: installs missing dependencies, builds, and trains the tiny model on Russian
# prose, printing its loss and a sample. Arguments go to the example (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${TINYLM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target 01_train_tiny
"$build/examples/01_train_tiny" "$@"
