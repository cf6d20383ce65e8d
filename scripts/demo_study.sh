#!/usr/bin/env bash
# The compression study on the demo's night run (`make demo-study`, after `make demo`): depth
# pruning with healing, LoRA rank compression, guidance and step distillation, their memory on the
# real 2B config, then one report over sampling budgets and every variant.
set -euo pipefail
cd demo 2>/dev/null && [ -f runs/night/pytorch_lora_weights.safetensors ] || {
  echo "no demo/runs/night: run 'make demo' first" >&2; exit 1; }
export DE_CATALOG="$PWD/catalog.duckdb"
rm -rf runs/night/prune runs/night/compress runs/night/distill runs/night/study runs/night/evalset.json

echo "== the compression study on the night run: pruning, rank, distillation, sampling budgets, one report"
train evalset runs/night --windows 4 --noises 2 --prompts 1   # what every command below scores on (10 samples)
train prune runs/night --drop 1 --heal-steps 30 --no-progress
train compress runs/night --ranks 4,2 --limit-prompts 1 --no-progress
train distill-guidance runs/night --train-steps 60 --no-progress
train distill-steps runs/night --steps 4 --pairs 1 --teacher-steps 16 --train-steps 150 --no-progress
train distill-steps runs/night --steps 4 --dry-run     # its memory on the real 2B config
train study runs/night --budgets 8,4 --captioner toy --checks --no-progress
echo "study: $PWD/runs/night/study/report.md"

