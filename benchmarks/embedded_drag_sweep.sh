#!/usr/bin/env bash
# Issue #3: which settings let DragDiffusion carry content on the embedded model? The four-kind ground-truth
# suite (24 cases, `dragdiff bench make-gt bench-gt24 --count 24 --seed 0`, made before the suite had eight
# kinds; now `... --kinds move,move_multi,stretch,resize` rebuilds it) edited under several variants of the
# dragdiffusion preset, all at once on one GPU (the 128-px model leaves it mostly idle), then the bundled
# examples under the same variants (benchmarks/drag_sweep.py). Writes $OUT/sweep_gt.md (each run's "all" row),
# $OUT/sweep_gt.tar.gz (records, contact sheets, the examples' pictures and JSON), $OUT/examples_sweep.png.
#   carry: .whl, .carry/lpips, bench-gt24
#   OUT=$OUT bash benchmarks/embedded_drag_sweep.sh
set -u
: "${OUT:?set OUT to the output folder}"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips
fi
BENCH=${BENCH:-bench-gt24}
R=${RESULTS:-runs/drag-sweep-$(date +%s)}  # a warm machine keeps ignored folders
mkdir -p "$R"
declare -A VARIANTS=(
    [base]=""
    [no-lora]="--set lora.enabled=false"
    [rank4]="--set lora.rank=4"
    [strength0.8]="--set inversion.strength=0.8"
    [strength0.6]="--set inversion.strength=0.6"
    [feature-block1]="--set drag.feature_up_block=1"
    [r_m2]="--set drag.r_m=2"
    [it160]="--set drag.max_iterations=160"
    [no-ref-ctrl]="--set denoise.reference_control=false"
    [ctrl-levels1]="--set denoise.control_levels=1"
)
ORDER="base no-lora rank4 strength0.8 strength0.6 feature-block1 r_m2 it160 no-ref-ctrl ctrl-levels1"
pids=()
for name in $ORDER; do
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 timeout "${RUN_S:-400}" python3 -m dragdiff.cli bench run "$BENCH" -o "$R/$name" \
        ${VARIANTS[$name]} > "$R/$name.log" 2>&1 &
    pids+=($!)
done
OMP_NUM_THREADS=1 python3 benchmarks/drag_sweep.py --out "$R/examples" --device cuda --budget-s 360 \
    --variants default "recon (0 it)" "no lora" "rank 4" "strength 0.8" "strength 0.5" "feature block 1" "r_m 2" \
    "160 it" "no ref ctrl" "ctrl levels 1" > "$OUT/examples.log" 2>&1 &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
for name in $ORDER; do
    [ -f "$R/$name/summary.md" ] || python3 -m dragdiff.cli bench summarize "$R/$name" >> "$R/$name.log" 2>&1
done
{
    echo "| variant | $(head -1 "$R/base/summary.md" | cut -d'|' -f3- )"
    head -2 "$R/base/summary.md" | tail -1
    for name in $ORDER; do
        [ -f "$R/$name/summary.md" ] && echo "| $name | $(grep '^| all ' "$R/$name/summary.md" | cut -d'|' -f3-)"
    done
} > "$OUT/sweep_gt.md"
cat "$OUT/sweep_gt.md"
cp "$R/examples/sweep.png" "$OUT/examples_sweep.png" 2>/dev/null  # at most 8 files come back from $OUT
tar czf "$OUT/sweep_gt.tar.gz" --exclude=lora-cache --exclude='images' "$R"
