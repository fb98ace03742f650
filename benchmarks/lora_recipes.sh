#!/usr/bin/env bash
# Issue #6: does a cheaper identity-LoRA recipe keep the identity metric? The ground-truth suite (bench-gt,
# made by `dragdiff bench make-gt`) edited with the embedded model under several LoRA recipes, all runs at
# once on one GPU (the 128-px model leaves it mostly idle), plus the default recipe with another seed as the
# run-to-run noise floor. Writes $OUT/recipes.md (each run's "all" row) and $OUT/recipes.tar.gz (summaries +
# per-sample records).
#   carry: .whl, .carry/lpips, bench-gt
#   OUT=$OUT bash benchmarks/lora_recipes.sh
set -u
: "${OUT:?set OUT to the output folder}"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.carry/lpips
fi
BENCH=${BENCH:-bench-gt}
R=${RESULTS:-runs/recipes}
mkdir -p "$R"
declare -A RECIPES=(
    [base]=""
    [base-seed1]="--set seed=1"
    [s30-b4-lr1.5e-3]="--set lora.steps=30 --set lora.lr=0.0015"
    [s30-b4]="--set lora.steps=30"
    [s40-b2-lr1e-3]="--set lora.steps=40 --set lora.batch_size=2 --set lora.lr=0.001"
    [s80-b1]="--set lora.batch_size=1"
)
pids=()
for name in "${!RECIPES[@]}"; do
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=2 timeout "${RUN_S:-420}" python3 -m dragdiff.cli bench run "$BENCH" -o "$R/$name" \
        ${RECIPES[$name]} > "$R/$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
{
    echo "| recipe | $(head -1 "$R/base/summary.md" | cut -d'|' -f3- )"
    head -2 "$R/base/summary.md" | tail -1
    for name in base base-seed1 s30-b4-lr1.5e-3 s30-b4 s40-b2-lr1e-3 s80-b1; do
        [ -f "$R/$name/summary.md" ] && echo "| $name | $(grep '^| all ' "$R/$name/summary.md" | cut -d'|' -f3-)"
    done
} > "$OUT/recipes.md"
cat "$OUT/recipes.md"
tar czf "$OUT/recipes.tar.gz" --exclude=lora-cache --exclude='*.png' "$R"
