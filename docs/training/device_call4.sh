#!/usr/bin/env bash
# Device call 4 (H100, session 2): continue the UNet (+ text encoder) from the shipped model for 8 minutes with
# emoji composites mixed in (issue #3), then export fp16 + evaluate. Carry: .whl, .carry.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/train4.log"
python3 -m dragdiff.model.train --run-dir runs/model5 --phase unet --unet-minutes ${MINUTES:-8.0} \
  --init-from src/dragdiff/assets/model --emoji-pack .carry/emoji_pack.npz \
  --export runs/export --eval --eval-images 256 2>&1 | grep -v "Warning\|warn(\|\[transformers\]" | tee -a "$OUT/train4.log"
cp runs/model5/log.jsonl runs/model5/eval.json runs/model5/heldout_grid.png "$OUT/" 2>/dev/null
tar cf - -C runs export | split -b 15000000 - "$OUT/export.tar.part-"
ls -la "$OUT"
