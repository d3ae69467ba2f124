"""Peak RSS of `nice compress` over archives of different sizes (it must stay flat).

    .venv/bin/python bench/archive_memory.py --model .nice/demo/<hash>/model --counts 1000 10000

Each run is a fresh `python -m nice compress` process over a local folder of real MNIST
PNGs; its peak RSS comes from wait4(). Prints counts, wall time, peak RSS and the ratio
of the largest to the smallest run's peak.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nice.data.mnist import load_split
from nice.data.sources import export_png_folder


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed with {status}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args()
    split = load_split("mnist", "train")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.counts:
            src = export_png_folder(split, Path(tmp) / f"src{n}", limit=n)
            dst = Path(tmp) / f"dst{n}"
            rss, wall = peak_rss_mb([sys.executable, "-m", "nice", "compress", str(src), str(dst),
                                     "--model", args.model, "--threads", "1"])
            results.append((n, wall, rss))
            print(f"{n:>7} objects  {wall:7.1f} s  {n / wall:7.0f} obj/s  peak RSS {rss:7.1f} MB", flush=True)
    print(f"peak RSS ratio largest/smallest: {results[-1][2] / results[0][2]:.3f}")


if __name__ == "__main__":
    main()
