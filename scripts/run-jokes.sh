#!/usr/bin/env bash
# The jokes demo of docs/fine-tuning.md: installs Debian's fortunes-ru when missing (optional data; the example
# runs on ../shared/data/jokes alone without it), builds examples/08_jokes_lora and fine-tunes our pretrained
# Russian model (runs/russian_novels/checkpoint, from scripts/run-main.sh) with LoRA. Arguments go to the
# example (see --help), e.g. --steps 100 or --base /path/to/TinyLlama-1.1B-Chat-v1.0 (its config.json gives the shape).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/games/fortunes/ru ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y fortunes-ru || echo "run-jokes: fortunes-ru not installed; using ../shared/data/jokes alone"
fi
# Threads sleep at barriers instead of spinning: on a shared 2-core machine spinning halves throughput.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
build=${TINYLM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target 08_jokes_lora
"$build/examples/08_jokes_lora/08_jokes_lora" "$@"
