#!/usr/bin/env bash
# Rebuilds docs/reports/scenes (issue 18): ingests the scenes set (10,000 / 1,000 / 1,000 native-size
# JPEG frames; `apt-get install opencv-doc` adds the Debian photos the committed report used), trains
# the scenes classifier with bench/scenes_classifier.py (`nice train-classifier`'s scenes recipe:
# object crops, then whole views, max-pooled ResNet; plus its breakdown per photo and object size)
# and the mask generator (the colour defaults, which at the classifier's 320 px view are the
# large-view profile: a head on the classifier's features, the rank loss), then runs `nice evaluate` on 500 test frames at
# native size. About 3 hours on 2 CPU cores. Outputs under $NICE_HOME/eval/scenes[-fashion]/.
set -euo pipefail
NICE=${NICE:-.venv/bin/nice}
PY=${PY:-.venv/bin/python}
OUT=${NICE_HOME:-.nice}/eval
VARIANTS=${VARIANTS:-scenes}  # add scenes-fashion for the fashion variant's classifier
LIMIT=${LIMIT:-500}
for ds in $VARIANTS; do
  dir="$OUT/$ds"
  mkdir -p "$dir"
  [ -f "$dir/dataset/manifest.json" ] || $NICE ingest "$ds" --out "$dir/dataset"
  [ -f "$dir/classifier.pt" ] || PYTHONPATH=. $PY bench/scenes_classifier.py --dataset "$dir/dataset" \
    --out "$dir/classifier.pt"
  [ "$ds" = scenes ] || continue  # the fashion variant: classifier accuracy only
  [ -f "$dir/model/nice.json" ] || $NICE train-mask-generator --dataset "$dir/dataset" --classifier "$dir/classifier.pt" \
    --out "$dir/model"
  $NICE evaluate --model "$dir/model" --dataset "$dir/dataset" --out "$dir" --limit "$LIMIT" --explain-limit 200
done
