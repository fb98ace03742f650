#!/usr/bin/env bash
# Device call 6 (2×H100, session 2): the issue-#6 speed comparison on GPU 0, then the issue-#7 multi-GPU
# benchmark on both GPUs. Carry: .whl, .carry/lpips. Results in $OUT: speed.json, speed.log, multi_gpu.*.
set -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips || exit 1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader > "$OUT/speed.log"
CUDA_VISIBLE_DEVICES=0 timeout ${SPEED_S:-200} python3 benchmarks/speed.py --out "$OUT/speed.json" 2>&1 \
  | tr '\r' '\n' | grep -v "Warning\|warn(\|\[transformers\]\|it/s\]\|s/it\]" >> "$OUT/speed.log"
BUDGET_S=${MULTI_S:-330} bash benchmarks/multi_gpu.sh
ls -la "$OUT"
