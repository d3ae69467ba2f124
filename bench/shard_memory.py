"""Peak RSS of a plan pod and a shard pod against archive indexes of different sizes.

    .venv/bin/python bench/shard_memory.py --model DIR [--index-rows 10000 10000000] [--shard 1000]

For each index size it writes a synthetic index at a fresh local DST directly (rows through
pyarrow, partitioned as `nice.compress.index` writes them, no images), then plans a run of
`--shard` real MNIST PNGs that are all new (their keys are spread evenly over the indexed key
space, so the shard touches as many index partitions as such a shard can) and runs its shard
0, each step in a fresh `python` process as a pod would (`nice.jobs.archive_run`, --since-last
with --reprocess older-models, so the plan walks the whole index). Peak RSS comes from
wait4(). Prints both steps' RSS and wall time per index size and the ratio of the shard's
peak RSS on the largest index to that on the smallest.
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

import pyarrow as pa
import pyarrow.parquet as pq

from nice.compress.index import INDEX, MANIFEST, PARTITION_ROWS
from nice.compress.savings import SCHEMA

STEP = """
import sys
from nice.jobs import archive_run
src, dst, model, step = sys.argv[1:5]
run = archive_run(src, dst, model, run_id="bench", shard_size=int(sys.argv[5]), progress=False,
                  since_last=True, reprocess="older-models")
print(run.plan().shards if step == "plan" else run.run_shard(0))
"""


def index_key(i: int) -> str:
    return f"{i % 10}/{i:010d}.png"


def write_index(dst: Path, rows: int) -> float:
    """`rows` index rows of another model's outputs, written partition by partition."""
    t = time.perf_counter()
    (dst / INDEX).mkdir(parents=True)
    # Keys sort by folder then number: generate them in that order.
    keys = (index_key(i) for label in range(10) for i in range(label, rows, 10))
    partitions, n = [], 0
    mask = b"\xa5" * 98  # a 28x28 per-pixel mask, bit-packed
    while n < rows:
        chunk = [next(keys) for _ in range(min(PARTITION_ROWS, rows - n))]
        m = len(chunk)
        cols = {name: pa.nulls(m, field.type) for name, field in zip(SCHEMA.names, SCHEMA)}
        cols.update(source_key=pa.array(chunk), source_uri=pa.array([f"/src/{k}" for k in chunk]),
                    output_uri=pa.array([f"/dst/{k}.webp" for k in chunk]),
                    source_etag=pa.array(["e" * 16] * m), status=pa.array(["compressed"] * m),
                    config_hash=pa.array(["old-config"] * m), model_digest=pa.array(["old-model"] * m),
                    run_id=pa.array(["old-run"] * m), mask=pa.array([mask] * m, pa.binary()),
                    source_bytes=pa.array([300] * m, pa.int64()), output_bytes=pa.array([120] * m, pa.int64()))
        name = f"{INDEX}/p-{len(partitions):08d}.parquet"
        pq.write_table(pa.table(cols, schema=SCHEMA), dst / name)
        partitions.append({"file": name, "lo": chunk[0] if partitions else "", "rows": m,
                           "digests": {"old-model": m}})
        n += m
    (dst / MANIFEST).write_text(json.dumps({"format": 1, "run_id": "old-run", "rows": rows,
                                            "partitions": partitions}))
    return time.perf_counter() - t


def write_sources(src: Path, n: int, spread: int) -> None:
    from PIL import Image

    from nice.data.mnist import load_split

    split = load_split("mnist", "train")
    for j in range(n):
        i = j * (spread // n) + j % 10  # every label folder, numbers over the whole indexed range
        key = f"{i % 10}/{i:010d}n.png"  # beside index_key(i): a new object, not an indexed one
        path = src / key
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(split.images[j]).save(path)


def run_step(step: str, src: Path, dst: Path, model: str, shard: int) -> tuple[float, float, str]:
    cmd = [sys.executable, "-c", STEP, str(src), str(dst), model, step, str(shard)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{step} failed: {err[-2000:]}")
    return usage.ru_maxrss / 1024.0, wall, out.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--index-rows", type=int, nargs="+", default=[10_000, 10_000_000])
    ap.add_argument("--shard", type=int, default=1000)
    ap.add_argument("--workdir", help="default: a temporary folder (the 10M index takes ~1 GB)")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for rows in args.index_rows:
            src, dst = Path(tmp) / f"src{rows}", Path(tmp) / f"dst{rows}"
            write_sources(src, args.shard, rows)
            wrote = write_index(dst, rows)
            print(f"index {rows:>10,} rows: written in {wrote:.0f} s", flush=True)
            plan = run_step("plan", src, dst, args.model, args.shard)
            shard = run_step("shard", src, dst, args.model, args.shard)
            assert shard[2] == str(args.shard), shard
            results.append((rows, plan, shard))
            print(f"index {rows:>10,} rows: plan peak RSS {plan[0]:7.1f} MB ({plan[1]:5.1f} s); shard of "
                  f"{args.shard} new objects peak RSS {shard[0]:7.1f} MB ({shard[1]:5.1f} s)", flush=True)
    (r0, p0, s0), (r1, p1, s1) = results[0], results[-1]
    print(f"shard peak RSS ratio, index {r1:,} / {r0:,} rows: {s1[0] / s0[0]:.3f}")
    print(f"plan peak RSS ratio, index {r1:,} / {r0:,} rows: {p1[0] / p0[0]:.3f}")


if __name__ == "__main__":
    main()
