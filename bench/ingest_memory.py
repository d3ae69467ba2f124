"""Peak RSS of ingesting a 20,000-image folder and iterating its training split.

    .venv/bin/python bench/ingest_memory.py --count 20000 --size 64

Writes `count` mnist-m JPEGs (class_name/file.jpg) to a temporary folder, then in a fresh
process runs `nice ingest folder:...` and one full pass over the train split through a
DataLoader; prints wall time and the child's peak RSS (wait4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

CHILD = """
import sys, time, torch
from nice.ingest import IngestOptions, ingest
from torch.utils.data import DataLoader
t = time.perf_counter()
art = ingest("folder:" + sys.argv[1], sys.argv[2], IngestOptions(progress=False))
t_ingest = time.perf_counter() - t
n = 0
for x, y in DataLoader(art.dataset("train", shuffle=True), batch_size=256):
    n += len(y)
print(f"ingested {sum(art.manifest['counts'].values())} in {t_ingest:.1f} s; iterated {n} train images")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    from nice.data.mnistm import iter_mnistm

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "folder"
        i = 0
        for images, labels in iter_mnistm("train", args.size, limit=args.count):
            for img, lbl in zip(images, labels):
                d = src / str(int(lbl))
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=90)
                i += 1
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(Path(tmp) / "ds")])
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit("child failed")
        print(f"{i} images: {time.perf_counter() - t:.1f} s, peak RSS {usage.ru_maxrss / 1024:.1f} MB")


if __name__ == "__main__":
    main()
