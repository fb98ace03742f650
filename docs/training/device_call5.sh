#!/usr/bin/env bash
# Device call 5 (2×H100, session 2), two jobs side by side:
#   GPU 1: continue the UNet (+ text encoder) of the embedded model for $MINUTES minutes (emoji composites mixed
#          in), then export fp16 + evaluate (issue #3);
#   GPU 0: benchmarks/drag_sweep.py on the current embedded model: the bundled examples under a few settings.
# Carry: .whl, .carry/emoji_pack.npz, .carry/lpips (LPIPS weights for the eval).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips || exit 1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/train5.log"
RUN=runs/model6-$(date +%s)
( CUDA_VISIBLE_DEVICES=1 python3 -m dragdiff.model.train --run-dir $RUN --phase unet --unet-minutes ${MINUTES:-6.5} \
    --init-from src/dragdiff/assets/model --emoji-pack .carry/emoji_pack.npz --log-every 100 \
    --export $RUN/export --eval --eval-images 256 2>&1 | tr '\r' '\n' | grep -v "Warning\|warn(\|\[transformers\]\|^UNet:\|^VAE:" \
    >> "$OUT/train5.log" ) &
TRAIN=$!
mkdir -p runs/sweep
CUDA_VISIBLE_DEVICES=0 timeout ${SWEEP_S:-420} python3 benchmarks/drag_sweep.py --out runs/sweep --device cuda \
  --budget-s ${SWEEP_BUDGET:-330} 2>&1 | tr '\r' '\n' | grep -v "Warning\|warn(\|\[transformers\]\|it/s\]\|s/it\]" > runs/sweep/sweep.log
wait $TRAIN
cp runs/sweep/sweep.png "$OUT/" 2>/dev/null
cp $RUN/heldout_grid.png "$OUT/" 2>/dev/null
tar cf "$OUT/meta.tar" runs/sweep/sweep.json runs/sweep/sweep.log $RUN/log.jsonl $RUN/eval.json 2>/dev/null
tar cf - -C $RUN export | split -b 15000000 - "$OUT/export.tar.part-"
ls -la "$OUT"
