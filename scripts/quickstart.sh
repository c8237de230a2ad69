#!/usr/bin/env bash
# Set up samalign and run the main job offline, with no model weights and no GPU: build a tiny
# base model, build training data for every stage from bundled CoNLL04 sentences, train one peft
# LoRA adapter per stage, run the joint entity + relation graph in-process on those sentences,
# print each sentence's stage-by-stage flow and score it (runs/demo/demo_report.json).
# Usage: bash scripts/quickstart.sh        (about 5-10 minutes on 2 CPU cores)
# The same job against a real vLLM server (CPU build): bash scripts/server_quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${SAMALIGN_DEV_VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0" -e ".[local]"

"$VENV/bin/samalign" demo --out runs/demo
