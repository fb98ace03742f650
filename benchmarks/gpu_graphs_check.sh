#!/usr/bin/env bash
# Issue #6 on the GPU machine, in one call: the CUDA-graph equivalence tests, the speed table (all rows), and
# graphs vs eager on the SD-1.5-architecture pipeline under deterministic settings.
#   carry: .whl (diffusers + pytest wheels in .whl/test), .carry/lpips (LPIPS weights for the comparisons)
#   OUT=$OUT bash benchmarks/gpu_graphs_check.sh
set -u
: "${OUT:?set OUT to the output folder}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .whl/test/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout "${TESTS_S:-170}" python3 -m pytest -q -m gpu tests/test_cuda_graphs.py -p no:cacheprovider \
    > "$OUT/gpu_tests.log" 2>&1
tail -3 "$OUT/gpu_tests.log"
timeout "${SPEED_S:-300}" python3 benchmarks/speed.py --out "$OUT/speed.json" > "$OUT/speed.log" 2>&1
tail -14 "$OUT/speed.log"
timeout "${DET_S:-200}" python3 benchmarks/speed.py --deterministic --only fast,graphs \
    --out "$OUT/speed_deterministic.json" > "$OUT/speed_deterministic.log" 2>&1
tail -6 "$OUT/speed_deterministic.log"
timeout "${PROFILE_S:-120}" python3 benchmarks/profile_gpu.py --out "$OUT/profile.md" > /dev/null 2>&1; grep "^## " "$OUT/profile.md"
