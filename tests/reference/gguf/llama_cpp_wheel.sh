#!/bin/bash
# Builds llama-cpp-python from PyPI's source (it compiles llama.cpp) once, caches the wheel in
# ${TINYLM_WHEEL_CACHE:-~/.cache/tinylm/wheels} and unpacks it into <cache>/llama_cpp_site, which the slow test
# gguf_llama_cpp_matches_tinylm puts on PYTHONPATH (the Python environment itself is left alone).
#   llama_cpp_wheel.sh PYTHON      prints the site folder; builds first when the wheel is missing (about 10
#                                  minutes on 2 cores, one compile job at a time, niced)
# llama.cpp is built for AVX2 (no -march=native): a native build on a CPU that reports AMX but runs in a VM
# that does not enable it dies with SIGILL in the Q8_0 kernels.
set -euo pipefail
python=${1:-python3}
version=$(sed -n 's/^llama-cpp-python==//p' "$(dirname "$0")/requirements-llama-cpp.txt")
cache=${TINYLM_WHEEL_CACHE:-$HOME/.cache/tinylm/wheels}
site=$cache/llama_cpp_site
mkdir -p "$cache"
wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  start=$(date +%s)
  echo "building llama-cpp-python $version (llama.cpp from source)..." >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=1 nice -n 19 "$python" -m pip wheel --no-cache-dir --no-deps -w "$cache" "llama-cpp-python==$version" >&2
  echo "built in $(( $(date +%s) - start )) s" >&2
  wheel=$(ls "$cache"/llama_cpp_python-"$version"-*.whl | head -1)
  rm -rf "$site"
fi
if [ ! -d "$site/llama_cpp" ]; then
  "$python" -m pip install --no-deps --target "$site" "$wheel" >&2
  "$python" -m pip install --target "$site" diskcache >&2   # llama_cpp imports it
fi
echo "$site"
