#!/usr/bin/env bash
# Issue #18 on one GPU, one call: LoRA-step variants (+ profile), speed.py rows, the embedded model in a
# process and from the CLI, and `dragdiff edit` on a saved SD-1.5-architecture model from a cold process.
# Run from the repository root of the code to measure, with diffusers importable; results go to $OUT.
#   OUT=... BUDGET_S=300 SPEED_ROWS=first,graphs,repeat bash benchmarks/gpu_issue18.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
BUDGET_S=${BUDGET_S:-300}
SPEED_ROWS=${SPEED_ROWS-first,graphs,repeat}
start=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - start))); }
run() {  # run NAME TIMEOUT CMD...: skipped when the budget cannot hold it
  local name=$1 limit=$2; shift 2
  if [ "$(left)" -lt 15 ]; then echo "== $name: skipped (budget)"; return; fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  echo "== $name (limit ${limit}s, $(left)s left)"
  local t0=$(date +%s%N)
  timeout "$limit" "$@"
  echo "== $name: rc=$? in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
nvidia-smi -L; python3 -c "import torch, diffusers; print(torch.__version__, diffusers.__version__)"
cat COMMIT 2>/dev/null || true
[ "${LORA_S:-100}" -gt 0 ] && run lora-steps "${LORA_S:-100}" python3 benchmarks/lora_step_gpu.py ${LORA_ARGS:---profile} --out "$OUT/lora_steps.json"
[ -n "$SPEED_ROWS" ] && run speed "${SPEED_S:-110}" python3 benchmarks/speed.py --only "$SPEED_ROWS" --out "$OUT/speed.json"
[ -n "${SPEED2_ARGS:-}" ] && run speed2 "${SPEED_S:-110}" python3 benchmarks/speed.py $SPEED2_ARGS --out "$OUT/speed2.json"
[ "${EMBEDDED:-1}" = 1 ] && run embedded-in-process 60 python3 benchmarks/cold_cli.py embedded "$OUT/embedded.json"
DEMO=(examples/sample.png --preset dragdiffusion --mask examples/sample_mask.png
  --prompt "a red star on a white background" --drag 47,39:67,39 --drag 24,56:44,56 --drag 71,56:91,56
  --drag 33,84:53,84 --drag 62,84:82,84)
run embedded-cli 40 python3 benchmarks/cold_cli.py cli "$OUT/cli_embedded.json" -- "${DEMO[@]}" --lora-cache /tmp/lc-emb-$$
run save-sd15 60 python3 benchmarks/cold_cli.py save /tmp/sd15
python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from edit_sd15 import test_picture
img, ins = test_picture(512); img.save("/tmp/disc.png")
import numpy as np; from PIL import Image
Image.fromarray(np.asarray(ins.mask, np.uint8) * 255).save("/tmp/disc_mask.png")
PY
SD=(/tmp/disc.png --model /tmp/sd15 --preset dragdiffusion --mask /tmp/disc_mask.png --set drag.stop_distance=0
  --prompt "a yellow disc on a gradient" --drag 180,256:300,256 --roi full)
run sd15-cli-cold 70 python3 benchmarks/cold_cli.py cli "$OUT/cli_sd15.json" -- "${SD[@]}" --lora-cache /tmp/lc-sd-$$
[ -n "${EXTRA:-}" ] && run extra "$(left)" bash -c "$EXTRA"
echo "== done in $(( $(date +%s) - start )) s"
