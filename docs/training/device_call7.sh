#!/usr/bin/env bash
# Device call 4 of session 5 (1×H100), issue #3: while a last UNet (+ text encoder) chunk trains from the model
# in the tree (batch 1024, Min-SNR-5, lr annealed linearly to $LR_FINAL over the chunk), check that model on
# the 24-case ground-truth suite and the demo drags (benchmarks/demo_drags.py); then check the new export the
# same way.
#   carry: .whl, .carry/lpips, .carry/emoji_pack.npz, bench-gt24
#   OUT=$OUT MINUTES=5.5 bash docs/training/device_call7.sh
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips || exit 1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/train.log"
RUN=runs/model-s5c4-$(date +%s)
CHECK=runs/check-$(date +%s)
check() {  # $1 = model folder, $2 = name
    mkdir -p $CHECK/$2
    ( timeout "${GT_S:-300}" python3 -m dragdiff.cli bench run bench-gt24 -o $CHECK/$2/gt --model "$1" \
        > $CHECK/$2/gt.log 2>&1; python3 -m dragdiff.cli bench summarize $CHECK/$2/gt >> $CHECK/$2/gt.log 2>&1 ) &
    timeout "${GT_S:-300}" python3 benchmarks/demo_drags.py --out $CHECK/$2/demo --models "$1" --device cuda \
        > $CHECK/$2/demo.log 2>&1
    wait
    echo "== $2: $1" >> "$OUT/train.log"
    grep "^| all" $CHECK/$2/gt/summary.md >> "$OUT/train.log"
    grep -A20 "^model " $CHECK/$2/demo.log >> "$OUT/train.log"
}
check src/dragdiff/assets/model before > /dev/null 2>&1 &
BEFORE=$!
python3 -m dragdiff.model.train --run-dir $RUN --phase unet --unet-minutes "${MINUTES:-5.5}" \
    --init-from src/dragdiff/assets/model --emoji-pack .carry/emoji_pack.npz \
    --unet-batch 1024 --refresh 64 --unet-lr "${LR:-4e-4}" --unet-lr-final "${LR_FINAL:-2e-5}" --unet-warmup 200 \
    --min-snr-gamma 5 --log-every 50 --sample-every 0 --export $RUN/export --eval --eval-images 256 2>&1 \
    | tr '\r' '\n' | grep -v "Warning\|warn(\|\[transformers\]\|^UNet:\|^VAE:\|it/s\]\|s/it\]" >> "$OUT/train.log"
wait $BEFORE
check $RUN/export after
cp $RUN/heldout_grid.png "$OUT/" 2>/dev/null
tar cf "$OUT/meta.tar" --exclude=lora-cache --exclude=images $RUN/log.jsonl $RUN/eval.json $CHECK 2>/dev/null
tar cf - -C $RUN export | split -b 15000000 - "$OUT/export.tar.part-"
ls -la "$OUT"
