"""Soak: N small objects on the default path (the per-image search) through the
fault-injecting proxy (default 20,000 at 5% faults) once per botocore retry mode, and once
without faults, each into its own DST, with the exactly-once checks of tests/test_faults.py.

    .venv/bin/python bench/soak.py [--objects 20000] [--faults 0.05] [--model DIR]
                                   [--retry-modes standard adaptive]

Prints, per run, the fault counts, the requests the endpoint saw, our source re-reads, every
object exactly once and the partial objects at DST (an object whose size is not its row's),
and the wall-time cost of the faults against the clean run. Bounded: it stops with an error
after --max-minutes."""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import boto3  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from faultproxy import FaultProxy  # noqa: E402
from nice.bundle import NiceModel  # noqa: E402
from nice.compress.archive import ArchiveOptions, ArchiveRun  # noqa: E402
from pipeline.s3_local import LocalS3  # noqa: E402
from nice.storage import S3Store  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=20_000)
    ap.add_argument("--faults", type=float, default=0.05)
    ap.add_argument("--model", help="NICE model dir (default: a 1-epoch MNIST model trained here)")
    ap.add_argument("--max-minutes", type=float, default=120)
    ap.add_argument("--retry-modes", nargs="+", default=["standard", "adaptive"], choices=["standard", "adaptive", "legacy"])
    args = ap.parse_args()
    deadline = time.monotonic() + args.max_minutes * 60
    from nice.data.mnist import load_split
    from nice.data.sources import load_builtin

    if args.model:
        model = NiceModel.load(args.model)
    else:
        from nice.config import NiceConfig
        from nice.training.classifier import train_classifier
        from nice.training.mask_generator import train_mask_generator

        cfg = NiceConfig()
        cfg.train_classifier.epochs = cfg.train_generator.epochs = 1
        train, _ = load_builtin("mnist", "train", limit=6000)
        val, split = load_builtin("mnist", "test", limit=1000)
        clf = train_classifier(cfg, train, val, progress=False).model
        gen = train_mask_generator(cfg, clf, train, val, progress=False).model
        model = NiceModel(clf, gen, cfg, class_names=split.class_names)
    images = load_split("mnist", "train")
    from PIL import Image

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(images.images[i % len(images)], "L").save(buf, "PNG")
        return buf.getvalue()

    with LocalS3() as endpoint:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="soak")
        keys = [f"src/{int(images.labels[i % len(images)])}/{i:06d}.png" for i in range(args.objects)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda ik: s3.put_object(Bucket="soak", Key=ik[1], Body=png(ik[0])), enumerate(keys)))
        print(f"seeded {len(keys)} objects", flush=True)
        results = {}
        runs = [("clean", "standard", 0.0)] + [(f"faults-{m}", m, args.faults) for m in args.retry_modes]
        for label, mode, fraction in runs:
            os.environ["AWS_RETRY_MODE"] = mode  # read by S3Store when it builds its client
            with FaultProxy(endpoint, fraction=fraction, seed=7) as proxy:
                src, dst = S3Store("soak", "src", proxy.url), S3Store("soak", f"dst-{label}", proxy.url)
                t0 = time.perf_counter()
                summary = ArchiveRun(src, dst, model, opts=ArchiveOptions(shard_size=1000, progress=True)).run()
                wall = time.perf_counter() - t0
            if time.monotonic() > deadline:
                print("error: soak ran past --max-minutes", file=sys.stderr)
                return 1
            body = s3.get_object(Bucket="soak", Key=f"dst-{label}/_nice/runs/{summary.run_id}/savings.parquet")["Body"].read()
            rows = pq.read_table(io.BytesIO(body)).to_pylist()
            keys_seen = sorted(r["source_key"] for r in rows)
            by_out = {r["output_uri"].split("soak/", 1)[1]: r for r in rows if r["output_uri"]}
            listed = [o for p in s3.get_paginator("list_objects_v2").paginate(Bucket="soak", Prefix=f"dst-{label}/")
                      for o in p.get("Contents", []) if "/_nice/" not in o["Key"]]
            partial = sum(1 for o in listed if o["Key"] not in by_out or o["Size"] != by_out[o["Key"]]["output_bytes"])
            results[label] = dict(retry_mode=mode, wall_s=round(wall, 1), requests=proxy.counts["requests"],
                                  faults={k: v for k, v in proxy.counts.items() if k != "requests"},
                                  source_read_retries=summary.extra["source_read_retries"], counts=summary.counts,
                                  exactly_once=keys_seen == sorted(k[len("src/"):] for k in keys),
                                  outputs_at_dst=len(listed), partial_at_dst=partial)
            print(label, results[label], flush=True)
        ok = all(r["exactly_once"] and r["outputs_at_dst"] == args.objects and r["partial_at_dst"] == 0
                 and r["counts"]["failed"] == 0 for r in results.values())
        clean = results["clean"]
        for label, r in results.items():
            if label != "clean":
                print(f"{label}: {r['wall_s'] / clean['wall_s']:.2f}x the clean wall time, "
                      f"{r['requests'] - clean['requests']} extra requests "
                      f"({sum(r['faults'].values())} faults injected, {r['source_read_retries']} source re-reads)")
        print(f"path: {'per-image search' if model.config.search.enabled else 'fixed'}; "
              f"{args.objects} objects, {args.faults:.0%} faults; {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
