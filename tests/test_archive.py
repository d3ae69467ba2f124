"""Bulk archive compression against a real S3 endpoint (moto server over HTTP)."""

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.compress.archive import ArchiveOptions, ArchiveRun
from nice.imageio import decode_image, to_tensor
from nice.storage import open_store

from conftest import png_bytes


def huge_png(width=50_000, height=50_000) -> bytes:
    """A valid PNG header announcing a giant image (a decompression-bomb shape)."""
    data = png_bytes(np.zeros((1, 1), np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def upload_mnist(bucket, prefix, split, start, n, offset=0):
    s3 = boto3.client("s3")
    for i in range(start, start + n):
        label = int(split.labels[i])
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{label}/{i:05d}.png",
                      Body=png_bytes(split.images[(i + offset) % len(split)]))


def upload_hostile(bucket, prefix):
    s3 = boto3.client("s3")
    good = png_bytes(np.full((28, 28), 200, np.uint8))
    s3.put_object(Bucket=bucket, Key=f"{prefix}/bad/truncated.png", Body=good[: len(good) // 2])
    s3.put_object(Bucket=bucket, Key=f"{prefix}/bad/zero.png", Body=b"")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/bad/readme.jpg", Body=b"this is text, not a JPEG")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/bad/huge.png", Body=huge_png())
    return 4


def read_merged(bucket, run_id):
    body = boto3.client("s3").get_object(Bucket=bucket, Key=f"dst/_nice/runs/{run_id}/savings.parquet")["Body"].read()
    return pq.read_table(io.BytesIO(body)).to_pylist()


def dst_outputs(bucket):
    s3 = boto3.client("s3")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dst/"):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith("dst/_nice/")]
    return keys


@pytest.fixture(scope="module")
def mnist_test_split():
    from nice.data.mnist import load_split
    return load_split("mnist", "test")


@pytest.mark.slow
def test_archive_on_s3_exactly_once_guarded(bucket, small_model, mnist_test_split, tmp_path):
    upload_mnist(bucket, "src", mnist_test_split, 0, 1000)
    n = 1000 + upload_hostile(bucket, "src")
    model = NiceModel.load(small_model)
    src, dst = open_store(f"s3://{bucket}/src/"), open_store(f"s3://{bucket}/dst/")
    before = {o.key: o.etag for o in src.list()}
    summary = ArchiveRun(src, dst, model, opts=ArchiveOptions(shard_size=300, progress=False,
                                                              savings=str(tmp_path / "s.parquet"))).run()
    assert {o.key: o.etag for o in src.list()} == before, "sources are never modified"
    rows = read_merged(bucket, summary.run_id)
    assert len(rows) == n and len({r["source_key"] for r in rows}) == n
    assert len(pq.read_table(tmp_path / "s.parquet")) == n
    by_key = {r["source_key"]: r for r in rows}
    assert by_key["bad/truncated.png"]["status"] == "failed"
    assert by_key["bad/zero.png"]["status"] == "failed"
    assert by_key["bad/readme.jpg"]["status"] == "failed"
    assert by_key["bad/huge.png"]["status"] == "skipped" and "exceeds" in by_key["bad/huge.png"]["error"]
    compressed = [r for r in rows if r["status"] == "compressed"]
    assert len(compressed) > 500, summary
    s3 = boto3.client("s3")
    clf = model.classifier.eval()
    for r in compressed[:200]:
        out_key = r["output_uri"].split(f"s3://{bucket}/", 1)[1]
        out = s3.get_object(Bucket=bucket, Key=out_key)
        body = out["Body"].read()
        assert len(body) == r["output_bytes"] < r["source_bytes"]
        assert out["Metadata"]["nice-source-etag"] == r["source_etag"]
        src_bytes = s3.get_object(Bucket=bucket, Key="src/" + r["source_key"])["Body"].read()
        with torch.no_grad():
            x = torch.stack([to_tensor(decode_image(b).image) for b in (src_bytes, body)])
            p_src, p_out = clf(x).argmax(1).tolist()
        assert p_src == p_out == r["pred_source"] == r["pred_output"]
    # Every object at DST has its row; shard files cover all rows.
    row_uris = {r["output_uri"] for r in rows if r["output_uri"]}
    assert {f"s3://{bucket}/{k}" for k in dst_outputs(bucket)} == row_uris
    shard_rows = 0
    for i in range(4):
        body = s3.get_object(Bucket=bucket, Key=f"dst/_nice/runs/{summary.run_id}/shards/shard-{i:05d}.parquet")["Body"].read()
        shard_rows += len(pq.read_table(io.BytesIO(body)))
    assert shard_rows == n


def test_rerun_is_idempotent_and_since_last_is_incremental(bucket, small_model, mnist_test_split):
    upload_mnist(bucket, "src", mnist_test_split, 0, 80)
    model = NiceModel.load(small_model)
    src, dst = open_store(f"s3://{bucket}/src/"), open_store(f"s3://{bucket}/dst/")
    opts = ArchiveOptions(progress=False, shard_size=30)
    first = ArchiveRun(src, dst, model, opts=opts).run()
    assert first.extra["processed"] == 80
    second = ArchiveRun(src, dst, model, opts=opts).run()
    assert second.run_id != first.run_id
    assert second.counts["skipped"] == 80 and second.extra["processed"] == 0
    upload_mnist(bucket, "src", mnist_test_split, 80, 12)  # 12 new
    upload_mnist(bucket, "src", mnist_test_split, 0, 5, offset=5000)  # 5 changed
    third = ArchiveRun(src, dst, model, opts=ArchiveOptions(progress=False, since_last=True)).run()
    rows = read_merged(bucket, third.run_id)
    assert len(rows) == 17 and third.extra["processed"] == 17
    assert {r["source_key"] for r in rows} == (
        {f"{int(mnist_test_split.labels[i])}/{i:05d}.png" for i in list(range(80, 92)) + list(range(5))})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_run_then_rerun_is_exactly_once(bucket, small_model, mnist_test_split, s3_endpoint, workers):
    """SIGKILL the run's process group (with --workers 2: the parent and its worker processes)
    mid-run; the rerun resumes the same run and every object ends with exactly one row."""
    upload_mnist(bucket, "src", mnist_test_split, 0, 600)
    cmd = [sys.executable, "-m", "nice", "compress", f"s3://{bucket}/src/", f"s3://{bucket}/dst/",
           "--model", str(small_model), "--batch-size", "16", "--shard-size", "200", "--threads", str(workers),
           "--lease-seconds", "3", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    s3 = boto3.client("s3")
    deadline = time.time() + 120
    while time.time() < deadline:
        parts = s3.list_objects_v2(Bucket=bucket, Prefix="dst/_nice/runs/").get("KeyCount", 0)
        if parts >= 12:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    import json
    latest = json.loads(s3.get_object(Bucket=bucket, Key="dst/_nice/latest-run.json")["Body"].read())
    manifest_key = f"dst/_nice/runs/{latest['run_id']}/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["status"] == "running", "the kill must land mid-run"
    time.sleep(3.5)  # past the killed run's lease
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["run_id"] == latest["run_id"], "the rerun resumes the interrupted run"
    assert summary["extra"]["processed"] == 600
    rows = read_merged(bucket, summary["run_id"])
    keys = [r["source_key"] for r in rows]
    assert len(keys) == 600 and len(set(keys)) == 600
    row_uris = {r["output_uri"] for r in rows if r["output_uri"]}
    assert {f"s3://{bucket}/{k}" for k in dst_outputs(bucket)} <= row_uris, "every DST object has its row"


def test_local_folders_dry_run_and_exit_codes(tmp_path, small_model, mnist_test_split, capsys):
    import json
    from nice.cli import main
    from nice.data.sources import export_png_folder

    src = export_png_folder(mnist_test_split, tmp_path / "src", limit=40)
    assert main(["compress", str(src), "--model", str(small_model), "--dry-run", "--sample", "20"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["objects"] == 40 and est["sampled"] == 20 and 0 < est["sample_ratio"] <= 1
    # The estimate scales the sample's ratio to the whole listing's real size.
    total = sum(p.stat().st_size for p in src.rglob("*.png"))
    assert est["total_bytes"] == total and est["estimated_output_bytes"] == int(total * est["sample_ratio"])
    assert not (tmp_path / "dst").exists()
    assert main(["compress", str(src), str(tmp_path / "dst"), "--model", str(small_model)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 40 and summary["counts"]["failed"] == 0
    assert (tmp_path / "dst" / "_nice" / "runs" / summary["run_id"] / "savings.parquet").is_file()
    assert main(["compress", str(src), str(tmp_path / "dst2"), "--model", str(tmp_path / "nope")]) == 2
    assert "not a NICE model directory" in capsys.readouterr().err
    assert main(["compress", str(src), str(src), "--model", str(small_model)]) == 2


def test_two_worker_processes_split_the_shards_and_agree_with_one(tmp_path, small_model, mnist_test_split, capsys):
    """--workers 2: the plan is cut into >= 8 shards, two processes take them, every object
    gets exactly one row and one output, with the same statuses as a one-process run."""
    import json
    from nice.cli import main
    from nice.data.sources import export_png_folder

    src = export_png_folder(mnist_test_split, tmp_path / "src", limit=300)
    runs = {}
    for workers in (1, 2):
        dst = tmp_path / f"dst{workers}"
        assert main(["compress", str(src), str(dst), "--model", str(small_model), "--threads", "2",
                     "--workers", str(workers)]) == 0
        summary = json.loads(capsys.readouterr().out)
        manifest = json.loads((dst / "_nice" / "runs" / summary["run_id"] / "manifest.json").read_text())
        rows = pq.read_table(dst / "_nice" / "runs" / summary["run_id"] / "savings.parquet").to_pylist()
        assert len(rows) == 300 and len({r["source_key"] for r in rows}) == 300
        outputs = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file() and "_nice" not in p.parts}
        assert outputs == {r["output_uri"].split(str(dst) + "/", 1)[-1] for r in rows if r["output_uri"]}
        runs[workers] = (manifest, {r["source_key"]: r["status"] for r in rows})
    assert runs[1][0]["shards"] == 1 and runs[2][0]["shards"] >= 8
    assert runs[1][1] == runs[2][1]
    assert main(["compress", str(src), str(tmp_path / "dst0"), "--model", str(small_model), "--workers", "0"]) == 2
    assert "workers must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_mixed_archive_mnist_png_and_mnistm_jpeg(bucket, colour_model, mnist_test_split):
    """>= 1,000 objects: grey MNIST PNGs and colour mnist-m JPEGs through one colour model."""
    from nice.data.mnistm import make_mnistm

    upload_mnist(bucket, "src/mnist", mnist_test_split, 0, 600)
    images, labels, _ = make_mnistm("test", 64, limit=400, seed=3)
    s3 = boto3.client("s3")
    for i, (img, lbl) in enumerate(zip(images, labels)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        s3.put_object(Bucket=bucket, Key=f"src/mnistm/{int(lbl)}/{i:05d}.jpg", Body=buf.getvalue())
    n = 1000 + upload_hostile(bucket, "src")
    model = NiceModel.load(colour_model)
    summary = ArchiveRun(open_store(f"s3://{bucket}/src/"), open_store(f"s3://{bucket}/dst/"), model,
                         opts=ArchiveOptions(shard_size=250, progress=False)).run()
    rows = read_merged(bucket, summary.run_id)
    assert len(rows) == n and len({r["source_key"] for r in rows}) == n
    compressed = [r for r in rows if r["status"] == "compressed"]
    kinds = {r["format_out"] for r in compressed}
    assert kinds == {"webp"}, kinds  # the search's default container
    clf = model.classifier.eval()
    for r in compressed[::5]:
        body = s3.get_object(Bucket=bucket, Key=r["output_uri"].split(f"s3://{bucket}/", 1)[1])["Body"].read()
        out = decode_image(body).image
        if r["format_in"] == "png":
            assert out.mode == "L", "grey sources stay grey"
        with torch.no_grad():
            pred = clf(to_tensor(out.convert("RGB")).unsqueeze(0)).argmax(1).item()
        assert pred == r["pred_source"] and len(body) < r["source_bytes"]
    jpeg_rows = [r for r in rows if r["format_in"] == "jpeg"]
    assert len(jpeg_rows) == 400 and all(r["block"] == 8 for r in jpeg_rows)
    assert all(r["mask_height"] == 8 and r["mask_width"] == 8 for r in jpeg_rows if r["status"] == "compressed")


@pytest.mark.slow
def test_crash_and_resume_on_local_folders(tmp_path, small_model, mnist_test_split, monkeypatch):
    """A run that dies mid-shard (here: an exception after 5 batches) resumes exactly once."""
    from nice.compress.engine import Compressor
    from nice.data.sources import export_png_folder

    src = export_png_folder(mnist_test_split, tmp_path / "src", limit=300)
    model = NiceModel.load(small_model)
    real = Compressor.compress
    calls = {"n": 0}

    def flaky(self, items):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("simulated crash")
        return real(self, items)

    monkeypatch.setattr(Compressor, "compress", flaky)
    opts = ArchiveOptions(batch_size=16, shard_size=100, progress=False)
    with pytest.raises(KeyboardInterrupt):
        ArchiveRun(open_store(src), open_store(tmp_path / "dst"), model, opts=opts).run()
    monkeypatch.setattr(Compressor, "compress", real)
    summary = ArchiveRun(open_store(src), open_store(tmp_path / "dst"), model, opts=opts).run()
    rows = pq.read_table(tmp_path / "dst" / "_nice" / "runs" / summary.run_id / "savings.parquet").to_pylist()
    keys = [r["source_key"] for r in rows]
    assert len(keys) == 300 and len(set(keys)) == 300
    assert summary.extra["processed"] == 300


@pytest.mark.slow
def test_staged_run_plan_shards_finish(bucket, small_model, mnist_test_split):
    """The cluster fan-out: plan once, shards in any order (each its own ArchiveRun, as in
    separate pods), a retried shard redoes nothing, finish merges exactly once."""
    upload_mnist(bucket, "src", mnist_test_split, 0, 120)
    model = NiceModel.load(small_model)
    src, dst = open_store(f"s3://{bucket}/src/"), open_store(f"s3://{bucket}/dst/")

    def run():
        return ArchiveRun(src, dst, model, opts=ArchiveOptions(shard_size=50, progress=False, run_id="kfp-abc"))

    plan = run().plan()
    assert (plan.objects, plan.shards) == (120, 3)
    objects = run().planned_objects()
    assert [o.key for o in objects] == sorted(o.key for o in src.list())
    assert run().run_shard(2) == 20
    with pytest.raises(RuntimeError, match="no row yet"):
        run().finish()  # shards 0 and 1 have not run
    assert run().run_shard(0) == 50 and run().run_shard(1) == 50
    parts_before = {o.key for o in dst.list("_nice/runs/kfp-abc/parts/")}
    run().run_shard(1)  # a retried task: everything in it is committed already
    assert {o.key for o in dst.list("_nice/runs/kfp-abc/parts/")} == parts_before
    with pytest.raises(IndexError):
        run().run_shard(3)
    summary = run().finish()
    rows = read_merged(bucket, "kfp-abc")
    assert sorted(r["source_key"] for r in rows) == sorted(o.key for o in objects)
    assert summary.counts["compressed"] + summary.counts["kept_original"] == 120
    assert json_of(dst, "_nice/last-success.json")["run_id"] == "kfp-abc"


def json_of(store, key):
    import json

    return json.loads(store.get(key))


def hollow_copy(model_dir, out):
    """The model directory with every tensor removed from its checkpoints: the same config,
    class names and files, but networks that cannot be built. Whatever runs on it provably
    never loads them."""
    import shutil

    shutil.copytree(model_dir, out)
    for name in ("classifier.pt", "mask_generator.pt"):
        payload = torch.load(out / name, map_location="cpu", weights_only=True)
        payload["state_dict"] = {}
        torch.save(payload, out / name)
    return out


def test_plan_and_finish_never_load_the_networks(tmp_path, small_model, mnist_test_split):
    """A fanned-out run as the recompress components do it (`nice.jobs.archive_run` in every
    step): plan and finish work from a model whose networks cannot even be built."""
    from nice.data.sources import export_png_folder
    from nice.jobs import archive_run

    src = export_png_folder(mnist_test_split, tmp_path / "src", limit=20)
    dst = tmp_path / "dst"
    hollow = hollow_copy(small_model, tmp_path / "hollow")
    with pytest.raises(RuntimeError, match="Missing key"):
        NiceModel.load(hollow)
    common = {"run_id": "kfp-abc", "shard_size": 10, "progress": False}
    plan = archive_run(str(src), str(dst), hollow, **common)
    info = plan.plan()
    objects = plan.planned_objects()
    assert info.objects == len(objects) == 20 and plan.shard_size == 10 and plan._compressor is None
    with pytest.raises(RuntimeError, match="Missing key"):
        archive_run(str(src), str(dst), hollow, **common).run_shard(0)  # a shard does build them
    for i in range(2):
        assert archive_run(str(src), str(dst), small_model, **common).run_shard(i) == 10
    finish = archive_run(str(src), str(dst), hollow, **common)
    summary = finish.finish()
    assert finish._compressor is None
    rows = pq.read_table(dst / "_nice" / "runs" / "kfp-abc" / "savings.parquet").to_pylist()
    assert sorted(r["source_key"] for r in rows) == [o.key for o in objects]
    assert summary.counts["compressed"] + summary.counts["kept_original"] == 20
    assert json_of(open_store(dst), "_nice/last-success.json")["run_id"] == "kfp-abc"


def test_archive_run_never_changes_the_callers_options(tmp_path, small_model, mnist_test_split):
    from nice.bundle import ModelRef
    from nice.data.sources import export_png_folder

    src = export_png_folder(mnist_test_split, tmp_path / "src", limit=12)
    opts = ArchiveOptions(shard_size=2, max_shards=3, progress=False, run_id="r1")
    run = ArchiveRun(open_store(src), open_store(tmp_path / "dst"), ModelRef.open(small_model), opts=opts)
    run.plan()
    assert run.shard_size == 4, "grown to stay within max_shards"
    again = ArchiveRun(open_store(src), open_store(tmp_path / "dst"), ModelRef.open(small_model), opts=opts)
    again.planned_objects()
    assert again.shard_size == 4, "later steps cut the planned shards"
    assert opts == ArchiveOptions(shard_size=2, max_shards=3, progress=False, run_id="r1")
