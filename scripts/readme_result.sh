#!/usr/bin/env bash
# Regenerates the README's before/after figure (docs/images/readme_result.png): the demo and two emoji edits
# with the default method on the embedded model, then the figure. Extra arguments go to every edit
# (e.g. --preset dragdiffusion to see the paper's method on the same instructions).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh ""  # no extras; explicit, or a bare `source` hands setup.sh this script's arguments
bash scripts/demo.sh "$@"
E=(--drag 51,64:71,64 --drag 24,64:44,64 --drag 78,64:98,64 --drag 51,37:71,37 --drag 51,91:71,91
   --mask examples/emoji_mask.png)
dragdiff edit examples/emoji_star.png "${E[@]}" --prompt "a star emoji on a striped blue background" \
  -o out/emoji_star.png "$@"
dragdiff edit examples/emoji.png "${E[@]}" \
  --prompt "a smiling face with sunglasses emoji on a striped blue background" -o out/emoji_face.png "$@"
python scripts/readme_figure.py docs/images/readme_result.png \
  examples/sample.png examples/sample_mask.png "47,39;24,56;71,56;33,84;62,84" "67,39;44,56;91,56;53,84;82,84" \
    out/sample_edited.png examples/sample_moved.png -- \
  examples/emoji_star.png examples/emoji_mask.png "51,64;24,64;78,64;51,37;51,91" "71,64;44,64;98,64;71,37;71,91" \
    out/emoji_star.png -- \
  examples/emoji.png examples/emoji_mask.png "51,64;24,64;78,64;51,37;51,91" "71,64;44,64;98,64;71,37;71,91" \
    out/emoji_face.png
echo "wrote docs/images/readme_result.png"
