#!/usr/bin/env bash
# Device call 3 (H100, session 1): the SD-1.5-architecture engine benchmark (issue #2), then a short UNet
# continuation from the shipped model with emoji composites mixed in (issue #3). Carry: .whl, .carry.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/bench_sd15.log"
timeout 170 python3 benchmarks/edit_sd15.py --out "$OUT/bench_sd15.json" 2>&1 \
  | grep -v "Warning\|warn(\|\[transformers\]" | tee -a "$OUT/bench_sd15.log"
python3 -m dragdiff.model.train --run-dir runs/model4 --phase unet --unet-minutes 3.4 \
  --init-from src/dragdiff/assets/model --emoji-pack .carry/emoji_pack.npz \
  --export runs/export --eval --eval-images 256 2>&1 | grep -v "Warning\|warn(\|\[transformers\]" | tee "$OUT/train3.log"
cp runs/model4/log.jsonl runs/model4/eval.json runs/model4/heldout_grid.png "$OUT/" 2>/dev/null
tar cf - -C runs export | split -b 15000000 - "$OUT/export.tar.part-"
ls -la "$OUT"
