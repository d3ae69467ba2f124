#!/usr/bin/env bash
# Regenerates the evaluation tables of docs/results.md: trains the default models on MNIST,
# Fashion-MNIST and mnist-m (64 px) and runs `nice evaluate` on 2,000 test images of each.
# About 70 minutes on 2 CPU cores (27 of it the mnist-m generator's occlusion and greedy teachers). Outputs: $NICE_HOME/eval/<dataset>/{report.html,report.md,benchmark.json}.
set -euo pipefail
NICE=${NICE:-.venv/bin/nice}
OUT=${NICE_HOME:-.nice}/eval
mkdir -p "$OUT"
for ds in mnist fashion-mnist; do
  [ -f "$OUT/$ds/model/nice.json" ] || {
    $NICE train-classifier --dataset "$ds" --out "$OUT/$ds/classifier.pt"
    $NICE train-mask-generator --dataset "$ds" --classifier "$OUT/$ds/classifier.pt" --out "$OUT/$ds/model"
  }
  $NICE evaluate --model "$OUT/$ds/model" --dataset "$ds" --out "$OUT/$ds" --limit 2000 --explain-limit 500
done
[ -f "$OUT/mnist-m/dataset/manifest.json" ] || $NICE ingest mnist-m --size 64 --out "$OUT/mnist-m/dataset"
[ -f "$OUT/mnist-m/model/nice.json" ] || {
  $NICE train-classifier --dataset "$OUT/mnist-m/dataset" --epochs 6 --out "$OUT/mnist-m/classifier.pt"
  $NICE train-mask-generator --dataset "$OUT/mnist-m/dataset" --classifier "$OUT/mnist-m/classifier.pt" \
    --epochs 2 --out "$OUT/mnist-m/model"
}
$NICE evaluate --model "$OUT/mnist-m/model" --dataset "$OUT/mnist-m/dataset" --out "$OUT/mnist-m" --limit 2000 --explain-limit 500
