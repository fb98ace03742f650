#!/usr/bin/env bash
# The test command: sets up everything (venv, Chromium for the browser tests) and runs lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh dev
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
ruff check src tests benchmarks
mypy src
pytest -q "$@"
