#!/usr/bin/env bash
# Issue #6, on a 2-GPU machine: the CUDA-graph tests (incl. an editor on the second device), then at once the
# `fast` preset's speed (GPU 0, with the default row as the same-process baseline) and its identity on the
# ground-truth suite with the embedded model (GPU 1).
#   carry: .whl (with .whl/test), .carry/lpips, bench-gt;   OUT=$OUT bash benchmarks/gpu_fast_preset_check.sh
set -u
: "${OUT:?set OUT to the output folder}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .whl/test/*.whl
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips
nvidia-smi --query-gpu=index,name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 200 python3 -m pytest -q -m gpu tests/test_cuda_graphs.py -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1
tail -2 "$OUT/gpu_tests.log"
CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/speed.py --only graphs,repeat,fast-recipe \
    --out "$OUT/speed_fast_preset.json" > "$OUT/speed_fast_preset.log" 2>&1 &
speed=$!
CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=4 timeout 300 python3 -m dragdiff.cli bench run bench-gt \
    -o runs/gt-fast-preset --preset fast > "$OUT/gt_fast_preset.log" 2>&1 &
bench=$!
wait $speed $bench
tail -6 "$OUT/speed_fast_preset.log"
cp runs/gt-fast-preset/summary.md "$OUT/gt_fast_preset_summary.md" && grep "^| all " "$OUT/gt_fast_preset_summary.md"
