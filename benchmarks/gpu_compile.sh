#!/usr/bin/env bash
# Issue #18 on one GPU: does `torch.compile` pay inside the CUDA graphs?
#   PART=steps (default): what a CLI process pays for imports; the GPU tests; the LoRA step (batch 4) and an
#     optimisation iteration (batch 1) of the SD-1.5 architecture, eager-graphed and compiled-then-graphed
#     (the convolution blocks as `runtime.compile` does, then the whole UNet), with each compile's time.
#   PART=core: the least that decides it, in one call: the regional compile against eager-graphed for the
#     LoRA step and the iteration on SD-1.5 and on the embedded model, then the GPU tests.
#   PART=edits: `speed.py --compile` (first edit = compile, then warm and repeat) on SD-1.5; the embedded
#     model's LoRA step / iteration the same way; the SD-1.5 regional LoRA compile again in a fresh process
#     (Inductor's on-disk cache warm).
#   carry: .carry/gpu (whl/: diffusers 0.42.1 + peft 0.21.2)
#   OUT=$OUT PART=steps bash benchmarks/gpu_compile.sh
set -u
: "${OUT:?set OUT to the output folder}"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .carry/gpu/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)
step() {  # step NAME LIMIT CMD...: the command's output in $OUT/NAME.log, its tail and time on stdout
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: rc=$? in $(( $(date +%s) - t0 )) s (call at $(( $(date +%s) - start )) s)"
  tail -"${TAIL:-8}" "$OUT/$name.log"
}
R="compile-regional-lora,compile-regional-drag"
if [ "${PART:-steps}" = core ]; then
  step compile_sd15 "${SD15_S:-270}" python3 benchmarks/lora_step_gpu.py --compile \
      --only "hooked-native,drag-native,$R" --out "$OUT/compile_sd15.json"
  step compile_embedded "${EMB_S:-120}" python3 benchmarks/lora_step_gpu.py --model src/dragdiff/assets/model \
      --compile --only "hooked-native,drag-native,$R" --out "$OUT/compile_embedded.json"
  [ "${TESTS_S:-110}" -gt 0 ] && step gpu_tests "${TESTS_S:-110}" python3 -m pytest -q -m gpu tests/test_cuda_graphs.py
elif [ "${PART:-steps}" = steps ]; then
  step compile_sd15 "${SD15_S:-420}" python3 benchmarks/lora_step_gpu.py --compile \
      --only "${VARIANTS:-hooked-native,drag-native,$R,compile-lora,compile-drag}" --out "$OUT/compile_sd15.json"
  [ "${TESTS_S:-150}" -gt 0 ] && step gpu_tests "${TESTS_S:-150}" python3 -m pytest -q -m gpu tests/test_cuda_graphs.py
  for i in 1 2 3; do  # what a CLI process pays before any work: interpreter + imports (wall)
    for what in "import torch" "import torch, diffusers.utils" "import dragdiff.editor" \
        "import dragdiff.editor; from diffusers import UNet2DConditionModel"; do
      t0=$(date +%s%N); python3 -c "$what" 2>/dev/null
      echo "imports: $what: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    done
  done | tee "$OUT/imports.txt"
  python3 -X importtime -c "import dragdiff.editor; from diffusers import UNet2DConditionModel" 2> "$OUT/importtime.txt"
else
  step speed_compile "${SPEED_S:-300}" python3 benchmarks/speed.py --compile --only first,graphs,repeat \
      --out "$OUT/speed_compile.json"
  step compile_embedded "${EMB_S:-120}" python3 benchmarks/lora_step_gpu.py --model src/dragdiff/assets/model \
      --compile --only "hooked-native,drag-native,$R,compile-lora,compile-drag" --out "$OUT/compile_embedded.json"
  step compile_sd15_cached "${CACHED_S:-120}" python3 benchmarks/lora_step_gpu.py --compile \
      --only "hooked-native,compile-regional-lora" --out "$OUT/compile_sd15_cached.json"
fi
echo "== done in $(( $(date +%s) - start )) s"
