#!/usr/bin/env bash
# The main job: sets up the venv and drags the bundled sample with the embedded default model and the default
# method (warp): the red star is moved 20 px to the right by its five tips.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh ""  # no extras; explicit, or a bare `source` hands setup.sh this script's arguments
mkdir -p out
dragdiff edit examples/sample.png \
  --drag 47,39:67,39 --drag 24,56:44,56 --drag 71,56:91,56 --drag 33,84:53,84 --drag 62,84:82,84 \
  --mask examples/sample_mask.png --prompt "a red star on a white background" \
  -o out/sample_edited.png "$@"
echo "wrote out/sample_edited.png (+ .json record); exact target: examples/sample_moved.png"
