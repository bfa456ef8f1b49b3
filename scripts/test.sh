#!/usr/bin/env bash
# The test command of the README: installs missing dependencies, configures, builds and runs the default
# ctest selection (everything except the labels slow, torch and cuda). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} # no spinning at barriers: tests share 2 cores with ctest -j
build=${TINYLM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -LE "slow|torch|cuda" "$@"
