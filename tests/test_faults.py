"""A flaky endpoint: 5% of requests fail (500/503/SlowDown, reset, truncated body) through a
proxy in front of the local S3 endpoint. The run loses nothing and writes nothing partial."""

from __future__ import annotations

import io

import boto3
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import png_bytes
from faultproxy import FaultProxy
from nice.bundle import NiceModel
from nice.compress.archive import ArchiveOptions, ArchiveRun
from nice.storage import S3Store

pytestmark = pytest.mark.slow
N = 1000


def test_archive_run_through_faults_is_exactly_once(bucket, small_model, s3_endpoint, monkeypatch):
    from nice.data.mnist import load_split

    split = load_split("mnist", "test")
    s3 = boto3.client("s3")
    for i in range(N):
        s3.put_object(Bucket=bucket, Key=f"src/{int(split.labels[i])}/{i:05d}.png", Body=png_bytes(split.images[i]))
    model = NiceModel.load(small_model)
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")  # adaptive would also rate-limit: slower here
    with FaultProxy(s3_endpoint, fraction=0.05, seed=1) as proxy:
        src = S3Store(bucket, "src", endpoint_url=proxy.url)
        dst = S3Store(bucket, "dst", endpoint_url=proxy.url)
        summary = ArchiveRun(src, dst, model, opts=ArchiveOptions(shard_size=250, progress=False)).run()
    faults = {k: v for k, v in proxy.counts.items() if k != "requests"}
    assert sum(faults.values()) > 0.02 * proxy.counts["requests"], proxy.counts
    assert faults.get("truncate", 0) > 0 and faults.get("reset", 0) > 0
    assert summary.extra["source_read_retries"] > 0
    # Every object exactly once, none lost to the faults.
    body = s3.get_object(Bucket=bucket, Key=f"dst/_nice/runs/{summary.run_id}/savings.parquet")["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(f"{int(split.labels[i])}/{i:05d}.png" for i in range(N))
    assert {r["status"] for r in rows} <= {"compressed", "kept_original"}, summary.counts
    # Nothing partial at DST: every output decodes and has its row, with the bytes the row says.
    by_key = {r["output_uri"].split(f"{bucket}/", 1)[1]: r for r in rows}
    listed = [o for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dst/")
              for o in p.get("Contents", []) if not o["Key"].startswith("dst/_nice/")]
    assert len(listed) == N
    for o in listed:
        assert o["Size"] == by_key[o["Key"]]["output_bytes"]
    for o in listed[:50]:
        Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())).load()
    print(f"faults {faults} of {proxy.counts['requests']} requests; source re-reads "
          f"{summary.extra['source_read_retries']}; wall {summary.extra['wall_s']:.1f}s")
