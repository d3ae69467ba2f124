"""Archive throughput of `nice compress --workers N` against one worker, same objects, same run.

    .venv/bin/python bench/workers_scaling.py --model DIR [--objects 2000] [--workers 1 2]

Writes mnist-m test images (JPEG q90, the domain of a model trained on `nice ingest mnist-m`)
into a source folder once, then runs the whole `nice compress` command (start-up, plan,
shards, finish) into a fresh destination for each worker count, `--threads` = the cores in
all (or `--cores-per-worker 1`: one worker pinned to one core, two to two). Prints objects/s of each, the ratio to one worker, and checks that every object has
exactly one row. The ratio on this machine is the figure issue 19 asks for (2 workers on 2
cores >= 1.8x of 1 worker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_throughput import mnistm_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch threads in all, for every worker count")
    ap.add_argument("--cores-per-worker", type=int,
                    help="instead of --threads: N workers get N x this many cores (1 worker on 1 core vs "
                         "2 workers on 2: how a run scales with the cores it is given)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved runs per worker count; the best counts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i, data in enumerate(mnistm_images(args.size, args.objects)):
            (src / f"{i:06d}.jpg").write_bytes(data)
        best: dict[int, float] = {}
        for r in range(args.repeat):
            for w in args.workers:
                dst = Path(tmp) / f"dst-{w}-{r}"
                threads = w * args.cores_per_worker if args.cores_per_worker else args.threads
                cmd = [sys.executable, "-m", "nice", "compress", str(src), str(dst), "--model", args.model,
                       "--threads", str(threads), "--workers", str(w)]
                if args.cores_per_worker:  # the cores themselves, not only torch's threads
                    cmd = ["taskset", "-c", f"0-{threads - 1}"] + cmd
                t = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                wall = time.perf_counter() - t
                if done.returncode:
                    sys.exit(f"workers={w}: {done.stderr.strip().splitlines()[-1]}")
                summary = json.loads(done.stdout)
                rows = pq.read_table(dst / "_nice" / "runs" / summary["run_id"] / "savings.parquet")
                keys = rows.column("source_key").to_pylist()
                assert len(keys) == len(set(keys)) == args.objects, "every object exactly once"
                best[w] = max(best.get(w, 0.0), args.objects / wall)
                print(f"workers={w} threads={threads} run={r} wall {wall:.1f} s  {args.objects / wall:.1f} obj/s  "
                      f"bytes ratio {summary['bytes_ratio']:.4f}", flush=True)
        base = best[args.workers[0]]
        for w in args.workers:
            print(f"workers={w}: {best[w]:.1f} obj/s, {best[w] / base:.2f}x of workers={args.workers[0]}")


if __name__ == "__main__":
    main()
