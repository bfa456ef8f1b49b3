#!/usr/bin/env bash
# scripts/gpu-check.sh: the CUDA backend on a machine with an NVIDIA GPU (issue 20, docs/gpu.md), once per change
# of src/cuda or tinylm/cuda. Configures a build with TINYLM_WITH_CUDA=ON, builds tinylm::cuda and the CUDA tests,
# and runs `ctest -L cuda` (which must pass, not skip, here) plus the CPU test of the kernels' arithmetic.
#
#   scripts/gpu-check.sh [build-dir]        (default build-gpu; CUDA_ARCHS=90 by default: H100/H200)
#
# Exit status: ctest's. Prints nvidia-smi's view of the device first, so that the log says what ran.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
archs=${CUDA_ARCHS:-90}
jobs=${JOBS:-$(nproc)}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
"$nvcc" --version | tail -1

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTINYLM_WERROR=ON -DTINYLM_WITH_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$archs" -DTINYLM_BUILD_EXAMPLES=OFF \
  -DTINYLM_BUILD_TOOLS=OFF >"$build.configure.log" 2>&1 || { tail -30 "$build.configure.log"; exit 1; }
cmake --build "$build" -j"$jobs" --target tinylm_cuda test_cuda_kernels test_cuda_math
# --no-tests=error: a build without the CUDA tests must not pass as "nothing to run"; a skip (no device) fails
# here, because this script exists to run them on a GPU.
set +e
ctest --test-dir "$build" -L cuda --no-tests=error --output-on-failure 2>&1 | tee "$build.ctest-cuda.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || exit "$rc"
if grep -q "Skipped" "$build.ctest-cuda.log"; then
  echo "gpu-check: the CUDA tests were skipped: no CUDA device visible to this process" >&2
  exit 1
fi
ctest --test-dir "$build" -R '^test_cuda_math$' --output-on-failure
