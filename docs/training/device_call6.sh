#!/usr/bin/env bash
# Device calls of session 5 (1×H100), issue #3: continue the embedded model's UNet (+ text encoder) at batch
# 1024 (2.9× the samples/s of batch 256 on this model: benchmarks/train_speed.py, session 5 call 1) with
# Min-SNR-5 weighting, from the model in $INIT (default: the shipped one); export fp16 + evaluate; then drag
# the bundled examples and the 24-case ground-truth suite with the new export (dragdiffusion preset).
#   carry: .whl, .carry/emoji_pack.npz, .carry/lpips, .carry/cache, bench-gt24
#   OUT=$OUT MINUTES=6.3 bash docs/training/device_call6.sh
# (Calls 2-3 used a fixed runs/check folder; call 3 on the warm machine then reported call 2's GT row. Fixed.)
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips || exit 1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/train.log"
RUN=runs/model-s5-$(date +%s)
python3 -m dragdiff.model.train --run-dir $RUN --phase unet --unet-minutes "${MINUTES:-6.3}" \
    --init-from "${INIT:-src/dragdiff/assets/model}" --emoji-pack .carry/emoji_pack.npz \
    --unet-batch 1024 --refresh 64 --unet-lr "${LR:-4e-4}" --unet-warmup 200 --min-snr-gamma 5 \
    --log-every 50 --sample-every 0 --export $RUN/export --eval --eval-images 256 2>&1 | tr '\r' '\n' \
    | grep -v "Warning\|warn(\|\[transformers\]\|^UNet:\|^VAE:" >> "$OUT/train.log"
CHECK=runs/check-$(date +%s)  # a warm machine keeps ignored folders: a fresh name per call
mkdir -p $CHECK
( timeout "${GT_S:-110}" python3 -m dragdiff.cli bench run bench-gt24 -o $CHECK/gt --model $RUN/export \
    > $CHECK/gt.log 2>&1; python3 -m dragdiff.cli bench summarize $CHECK/gt >> $CHECK/gt.log 2>&1 ) &
GT=$!
timeout "${GT_S:-110}" python3 benchmarks/drag_sweep.py --out $CHECK/examples --model $RUN/export --device cuda \
    --variants default "recon (0 it)" > $CHECK/examples.log 2>&1
wait $GT
grep "^| all" $CHECK/gt/summary.md >> "$OUT/train.log"; tail -6 $CHECK/examples.log >> "$OUT/train.log"
cp $RUN/heldout_grid.png "$OUT/" 2>/dev/null
tar cf "$OUT/meta.tar" --exclude=lora-cache --exclude=images $RUN/log.jsonl $RUN/eval.json $CHECK 2>/dev/null
tar cf - -C $RUN export | split -b 15000000 - "$OUT/export.tar.part-"
ls -la "$OUT"
