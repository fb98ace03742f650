#!/usr/bin/env bash
# Regenerates the README's photograph figure (docs/images/readme_photo.webp): one drag on a real photograph
# (examples/photo/grace_hopper.jpg, a public-domain US Navy portrait from matplotlib's sample data) with the
# default method on the embedded model, then before/after with 1:1 crops of the edited region.
# Extra arguments go to the edit (e.g. --roi full to see what editing the whole picture at 128 px does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh ""  # no extras; explicit, or a bare `source` hands setup.sh this script's arguments
mkdir -p out
dragdiff edit examples/photo/grace_hopper.jpg --drag 388,507:388,470 --mask examples/photo/grace_hopper_mask.png \
  -o out/grace_hopper_edited.jpg "$@"
python scripts/readme_photo.py docs/images/readme_photo.webp examples/photo/grace_hopper.jpg \
  examples/photo/grace_hopper_mask.png out/grace_hopper_edited.jpg out/grace_hopper_edited.json
echo "wrote docs/images/readme_photo.webp"
