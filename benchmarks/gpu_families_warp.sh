#!/usr/bin/env bash
# Issues #19 and #16 on the GPU machine, in one call: the family speed table (SDXL 1024², SD-2.1 768-v; warp and
# dragdiffusion, CUDA graphs on as a user runs them) and the warp edit's speed at 512².
#   carry: .carry/gpu (whl/: diffusers 0.42.1 + peft 0.21.2)
#   OUT=$OUT bash benchmarks/gpu_families_warp.sh
set -u
: "${OUT:?set OUT to the output folder}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .carry/gpu/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout "${FAMILY_S:-400}" python3 benchmarks/family_speed.py --budget-s "${FAMILY_BUDGET_S:-300}" \
    --out "$OUT/family_speed.json" > "$OUT/family_speed.log" 2>&1
tail -8 "$OUT/family_speed.log"
timeout "${WARP_S:-120}" python3 benchmarks/warp_speed.py --repeats 5 --json "$OUT/warp_speed.json" \
    > "$OUT/warp_speed.log" 2>&1
tail -8 "$OUT/warp_speed.log"
