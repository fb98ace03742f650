#!/usr/bin/env bash
# Device call 1 (H100): VAE 3 min -> latent rescale -> UNet + text encoder ~4.6 min -> fp16 export + eval.
# Run from the repo root on the device machine after installing the carried wheels (see docs/training/log.md).
# Results go to $OUT (at most 8 files): the log, loss log, eval, grids, the exported folder as a split tar.
set -o pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m dragdiff.model.train --run-dir runs/model --phase all --vae-minutes 3.0 --unet-minutes 4.6 \
  --export runs/export --eval --eval-images 512 2>&1 | grep -v "Warning\|warn(\|\[transformers\]" | tee "$OUT/train1.log"
cp runs/model/log.jsonl runs/model/eval.json runs/model/heldout_grid.png "$OUT/" 2>/dev/null
last=$(ls runs/model/samples/*.png 2>/dev/null | tail -1); [ -n "$last" ] && cp "$last" "$OUT/samples_last.png"
tar cf - -C runs export | split -b 15000000 - "$OUT/export.tar.part-"
ls -la "$OUT"
