#!/usr/bin/env bash
# The GPU measurements of the speed issue, in one short run (run it from the repository root on
# a CUDA machine with the 'local' extra installed; ~10 minutes on one H200):
#
#   1. a randomly initialised model of Llama-3-8B's shape in bf16 with one rank-8 LoRA adapter
#      per stage (6), written to $WORK/llama3-8b-shape (~16 GB);
#   2. the in-process transformers backend on it, joint graph over CoNLL04 dev sentences
#      (constrained mentions, every relation decoder asked, 32-token budget): sentences/s at
#      concurrency 1, 16 and 64 with the prefix cache off and on, and GPU memory with the six
#      adapters loaded (after loading, and the peak while serving);
#   3. LoRA training tokens/s of that shape with and without gradient checkpointing.
#
# Each step prints one JSON object to $OUT (default: ./gpu-results).
set -euo pipefail
PY=${PY:-python}
WORK=${WORK:-/tmp/samalign-gpu}
OUT=${OUT:-gpu-results}
mkdir -p "$WORK" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.csv" || true

MODEL="$WORK/llama3-8b-shape"
[ -d "$MODEL" ] || $PY benchmarks/local_batching.py --build-model "$MODEL" --shape llama3-8b \
  --device cuda > "$OUT/build.json"

for MB in 0 8192; do
  $PY benchmarks/local_batching.py --model "$MODEL" --device cuda --graph joint --domain conll04 \
    --constrain-mentions --relation-schedule always --max-tokens 32 --n 64 --warmup 16 \
    --concurrency 1 16 64 --max-batch-size 64 --prefix-cache-mb "$MB" --skip-rss \
    > "$OUT/inference_prefix_cache_${MB}mb.json"
done

$PY benchmarks/finetune_throughput.py --gpu --examples 64 --steps 4 > "$OUT/training.json"
echo "results in $OUT"
