#!/usr/bin/env bash
# A folder of Qwen3-0.6B's architecture (tl::presets::qwen3_0_6b: QK-norm, 16 query heads of 128 over 8 key/value
# heads, tied; random weights: no real weights are reachable here) with the real Qwen3 tokenizer, through tinylm and
# its peers (docs/tinylm.md, "A Qwen3-0.6B-shaped folder, end to end"):
#   random_checkpoint -> tinylm info -> tinylm generate -> transformers and llama.cpp continue it greedily alike
#
#   scripts/qwen3-0.6b-check.sh [BUILD] [OUT]      defaults: build, /tmp/tinylm-qwen3
#
# Needs the Qwen3 tokenizer (../shared/data/tokenizers/qwen3, or $TINYLM_DATA_DIR), $TINYLM_PYTHON (default python3)
# with transformers and torch, and the llama-cpp-python wheel tests/reference/gguf/llama_cpp_wheel.sh builds or finds.
# 4.8 GB of disk under OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
out=${2:-/tmp/tinylm-qwen3}
python=${TINYLM_PYTHON:-python3}
data=${TINYLM_DATA_DIR:-$root/../shared/data}
tokenizer=$data/tokenizers/qwen3/tokenizer.json
[ -f "$tokenizer" ] || { echo "qwen3-0.6b-check: no $tokenizer (set TINYLM_DATA_DIR)" >&2; exit 1; }
mkdir -p "$out"
set -x
"$build/examples/06_evaluate/random_checkpoint" --preset qwen3_0_6b --tokenizer "$tokenizer" --out "$out/folder"
"$build/tools/tinylm" info "$out/folder"
"$build/tools/tinylm" generate --model "$out/folder" --prompt "Сила войска зависит от его духа" --max-tokens 12 \
    --temperature 0
"$build/tools/tinylm" export-gguf --model "$out/folder" --type f32 --out "$out/qwen3-f32.gguf"
"$build/tools/tinylm" export-gguf --model "$out/folder" --type q8_0 --out "$out/qwen3-q8_0.gguf"
site=$(bash "$root/tests/reference/gguf/llama_cpp_wheel.sh" "$python")
PYTHONPATH="$site" "$python" "$root/tests/reference/qwen3/check_greedy.py" "$build/tools/tinylm" "$out/folder" \
    "$out/qwen3-f32.gguf" "$out/qwen3-q8_0.gguf"
