#!/usr/bin/env bash
# The main job: sets up the venv and drags the bundled sample with the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
mkdir -p out
dragdiff edit examples/sample.png --drag 48,64:78,64 --mask examples/sample_mask.png \
  --prompt "a red star on a white background" --animation out/sample_edited.gif \
  -o out/sample_edited.png "$@"
echo "wrote out/sample_edited.png (+ .json record, .gif of the optimisation)"
