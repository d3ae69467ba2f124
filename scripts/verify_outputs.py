"""Independently re-check a run's stored files against their sources.

    .venv/bin/python scripts/verify_outputs.py SAVINGS.parquet SRC_DIR --model MODEL_DIR

For every row: a compressed output decodes at the source's upright dimensions, is smaller,
has the source's top-1 class through the classifier's view, and carries the source's ICC
profile when it had one. Prints one line per failure and a summary; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.imageio import decode_image
from nice.view import View


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("savings")
    ap.add_argument("src", type=Path)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    model = NiceModel.load(args.model)
    view = View(model.config.classifier)
    clf = model.classifier.eval()
    rows = pq.read_table(args.savings).to_pylist()
    bad, stats = [], Counter()

    def top1(pixels: np.ndarray) -> int:
        v = view.apply(pixels)
        x = torch.from_numpy(np.ascontiguousarray(v)).float().div(255)
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        with torch.no_grad():
            return int(clf(x).argmax(1))

    mode = "RGB" if model.config.classifier.in_channels == 3 else "L"
    for r in rows:
        stats[r["status"]] += 1
        if r["status"] != "compressed":
            continue
        source = (args.src / r["source_key"]).read_bytes()
        data = Path(r["output_uri"]).read_bytes()
        src = decode_image(source)
        out = Image.open(io.BytesIO(data))
        out.load()
        key = r["source_key"]
        if out.size != src.size:
            bad.append(f"{key}: output {out.size} vs source {src.size}")
        if len(data) >= len(source):
            bad.append(f"{key}: output {len(data)} B not smaller than {len(source)} B")
        p_src = top1(np.asarray(src.image.convert(mode)))
        p_out = top1(np.asarray(out.convert(mode)))
        if p_src != p_out:
            bad.append(f"{key}: top-1 {p_src} -> {p_out}")
        if src.icc:
            stats["with_icc"] += 1
            if out.info.get("icc_profile") != src.icc:
                bad.append(f"{key}: ICC profile not kept")
        stats[f"out_{r['format_out']}"] += 1
    for line in bad:
        print(line)
    print(f"{len(rows)} rows {dict(stats)}; {len(bad)} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
