#!/usr/bin/env bash
# Issue #18 quality check on one GPU: the ground-truth suite with the embedded model, preset dragdiffusion,
# run by the code before issue #18 (OLD_SRC) and by this code (NEW_SRC) at once, in two processes.
#   OUT=... OLD_SRC=... NEW_SRC=... GT=bench-gt LPIPS_PATH=... LIMIT_S=150 bash benchmarks/gpu_gt_quality.sh
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=6
for side in old new; do
  src=OLD_SRC; [ $side = new ] && src=NEW_SRC
  PYTHONPATH="$PYTHONPATH:${!src}:$LPIPS_PATH" timeout "${LIMIT_S:-150}" python3 -m dragdiff bench run "$GT" \
    -o "/tmp/gt-$side-$$" --preset dragdiffusion --lora-cache "/tmp/lc-$side-$$" > "$OUT/gt_$side.log" 2>&1 &
  pids="${pids:-} $!"
done
for pid in $pids; do wait "$pid"; echo "pid $pid rc=$?"; done
for side in old new; do
  d=/tmp/gt-$side-$$; ls "$d" | head -20
  for f in "$d"/summary.json "$d"/summary.md; do [ -f "$f" ] && cp "$f" "$OUT/gt_${side}_$(basename "$f")"; done
  [ -d "$d/samples" ] && tar -czf "$OUT/gt_${side}_samples.tar.gz" -C "$d" samples
done
ls "$OUT"
