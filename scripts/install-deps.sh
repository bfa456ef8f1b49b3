#!/usr/bin/env bash
# Installs every Debian package tinylm needs to build, test and run its examples. Idempotent: packages
# already present are left alone, and apt is not touched when nothing is missing.
set -euo pipefail

packages=(
  build-essential cmake git pkg-config
  libeigen3-dev          # tinylm::core (Eigen backend)
  libdnnl-dev            # tinylm::onednn (oneDNN matrix products: 2.6 here, 3.x accepted too)
  ocl-icd-opencl-dev     # oneDNN's CMake package asks for OpenCL
  libxtensor-dev         # tinylm::xtensor adaptors
  nlohmann-json3-dev     # tokenizer.json, safetensors headers, config.json
  libcli11-dev           # command lines of the examples
  libutf8proc-dev        # Unicode normalisation (tokenizer, corpus)
  libboost-test-dev      # tests
  libbenchmark-dev       # benchmarks (Google Benchmark)
  sentencepiece          # spm_train, the peer of benchmarks/tokenizer/compare.py
  clang libomp-dev       # the clang step of CI (scripts/clang-check.sh); OpenMP for clang
  libcpp-httplib-dev     # tinylm serve (OpenAI-compatible HTTP server)
  libedit-dev            # tinylm chat (line editing)
  openmpi-bin libopenmpi-dev # tinylm::mpi: data-parallel training under mpirun (tests labelled mpi)
  strace                 # the recipes under mpirun: rank 1 must write nothing (tests/dist/recipe_under_mpi.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages are installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
