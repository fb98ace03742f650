#!/usr/bin/env bash
# Issue #18 on one GPU: `dragdiff edit` from a cold process, measured as a user meets it, and two checks.
#   The packages are installed the way pip installs them for a user (bytecode compiled; earlier calls used
#   --no-compile, so their first process compiled diffusers' and peft's bytecode inside the timing). Each CLI
#   call is a new process with its own empty LoRA cache (a new image, as far as the edit knows); the first
#   call after the install also meets a cold page cache, the later ones do not. Then the compiled-edit GPU
#   test (the `fresh_warmups` fix) and, with what is left, the whole-UNet compile of the LoRA step.
#   carry: .carry/gpu (whl/: diffusers 0.42.1 + peft 0.21.2)
#   OUT=$OUT bash benchmarks/gpu_cold.sh
set -u
: "${OUT:?set OUT to the output folder}"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
t_install=$(date +%s%N)
python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .carry/gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
python3 -m compileall -q src > /dev/null
echo "install (bytecode compiled): $(( ($(date +%s%N) - t_install) / 1000000 )) ms"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)
step() {  # step NAME LIMIT CMD...: output in $OUT/NAME.log, its tail and time on stdout
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: rc=$? in $(( ($(date +%s%N) - t0) / 1000000 )) ms (call at $(( $(date +%s) - start )) s)"
  tail -"${TAIL:-4}" "$OUT/$name.log" | cut -c1-600
}
DEMO=(examples/sample.png --preset dragdiffusion --mask examples/sample_mask.png
  --prompt "a red star on a white background" --drag 47,39:67,39 --drag 24,56:44,56 --drag 71,56:91,56
  --drag 33,84:53,84 --drag 62,84:82,84)
for i in 1 2 3; do  # a process that only imports what the CLI imports, then the embedded model's edit
  t0=$(date +%s%N); python3 -c "import dragdiff.editor; from diffusers import UNet2DConditionModel"
  echo "imports $i: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  IMPORTTIME=0 step "cli_embedded_$i" 60 python3 benchmarks/cold_cli.py cli "$OUT/cli_embedded_$i.json" -- \
      "${DEMO[@]}" --lora-cache "/tmp/lc-emb-$i"
done
IMPORTTIME=0 step cli_embedded_nographs 60 python3 benchmarks/cold_cli.py cli "$OUT/cli_embedded_nographs.json" \
    -- "${DEMO[@]}" --lora-cache /tmp/lc-emb-ng --set runtime.cuda_graphs=false
IMPORTTIME=0 step cli_embedded_warp 60 python3 benchmarks/cold_cli.py cli "$OUT/cli_embedded_warp.json" \
    -- examples/sample.png --drag 47,39:67,39
step save_sd15 90 python3 benchmarks/cold_cli.py save /tmp/sd15
python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from edit_sd15 import test_picture
img, ins = test_picture(512); img.save("/tmp/disc.png")
import numpy as np; from PIL import Image
Image.fromarray(np.asarray(ins.mask, np.uint8) * 255).save("/tmp/disc_mask.png")
PY
SD=(/tmp/disc.png --model /tmp/sd15 --preset dragdiffusion --mask /tmp/disc_mask.png --set drag.stop_distance=0
  --prompt "a yellow disc on a gradient" --drag 180,256:300,256 --roi full)
for i in 1 2; do
  IMPORTTIME=0 step "cli_sd15_$i" 90 python3 benchmarks/cold_cli.py cli "$OUT/cli_sd15_$i.json" -- "${SD[@]}" \
      --lora-cache "/tmp/lc-sd-$i"
done
TAIL=6 step gpu_test_compiled "${TESTS_S:-200}" python3 -m pytest -q -m gpu tests/test_cuda_graphs.py -k compiled
[ "${WHOLE_S:-0}" -gt 0 ] && step compile_whole "$WHOLE_S" python3 benchmarks/lora_step_gpu.py --compile \
    --only hooked-native,compile-lora --out "$OUT/compile_whole.json"
echo "== done in $(( $(date +%s) - start )) s"
