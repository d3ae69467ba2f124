"""compress-folder end to end on real MNIST PNGs with a model trained on real MNIST."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import numpy as np
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.cli import main
from nice.compress.engine import unpack_mask
from nice.compress.folder import compress_folder
from nice.data.sources import export_png_folder
from nice.imageio import to_tensor
from nice.view import View

DESIGN_COLUMNS = (
    "run_id source_uri source_etag source_bytes output_uri output_bytes saved_bytes ratio width height "
    "format_in format_out codec_params block tau mask_density mask pred_source pred_output prob_source "
    "prob_output label guard_retries status error model_uri config_hash elapsed_ms processed_at"
).split()


def _tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def archive(tmp_path, mnist_small):
    _, _, _, test_split = mnist_small
    src = export_png_folder(test_split, tmp_path / "src", limit=60)
    (src / "broken").mkdir()
    good = next((src / "7").glob("*.png")).read_bytes()
    (src / "broken" / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "broken" / "notes.jpg").write_text("not an image")
    (src / "broken" / "empty.png").write_bytes(b"")
    Image.new("RGB", (28, 28), (250, 0, 0)).save(src / "broken" / "colour.png")
    Image.new("L", (32, 32), 128).save(src / "broken" / "wrong-size.png")
    return src


def test_compress_folder_rows_guard_and_sources(archive, small_model, tmp_path):
    before = _tree_hashes(archive)
    n_files = len(before)
    model = NiceModel.load(small_model)
    dst = tmp_path / "dst"
    summary = compress_folder(archive, dst, model, savings=tmp_path / "savings.parquet", progress=False)
    assert _tree_hashes(archive) == before, "sources must never be modified"

    table = pq.read_table(tmp_path / "savings.parquet")
    assert set(DESIGN_COLUMNS) <= set(table.column_names)
    rows = table.to_pylist()
    assert len(rows) == n_files and len({r["source_uri"] for r in rows}) == n_files
    by_key = {r["source_key"]: r for r in rows}
    assert by_key["broken/truncated.png"]["status"] == "failed"
    assert by_key["broken/notes.jpg"]["status"] == "failed"
    assert by_key["broken/empty.png"]["status"] == "failed"
    assert by_key["broken/colour.png"]["status"] == "skipped"
    # any size is valid: the 32x32 grey image is read through the classifier's 28x28 view
    other = by_key["broken/wrong-size.png"]
    assert other["status"] in ("compressed", "kept_original") and (other["width"], other["height"]) == (32, 32)
    compressed = [r for r in rows if r["status"] == "compressed"]
    assert len(compressed) >= 30, summary
    for r in rows:
        if r["output_bytes"] is not None:
            assert r["output_bytes"] <= r["source_bytes"]
    clf = model.classifier.eval()
    view = View(model.config.classifier)
    for r in compressed:
        assert r["pred_output"] == r["pred_source"]
        # Independently re-check the stored file: decode it and classify it again.
        stored = Image.open(r["output_uri"]).convert("L")  # lossless WebP of a grey image reads as RGB
        assert stored.size == (r["width"], r["height"])
        stored = Image.fromarray(view.apply(np.asarray(stored)))
        with torch.no_grad():
            pred = clf(to_tensor(stored).unsqueeze(0)).argmax(1).item()
        assert pred == r["pred_source"]
        assert r["output_bytes"] == len(open(r["output_uri"], "rb").read())
        mask = unpack_mask(r)
        assert mask.shape == (-(-r["height"] // r["block"]), -(-r["width"] // r["block"]))  # native blocks
        assert mask.mean() == pytest.approx(r["mask_density"])
        assert (r["label"] is not None or r["source_key"].startswith("broken/")) and r["model_uri"] and r["config_hash"]
    assert summary.counts["failed"] == 3 and summary.counts["skipped"] == 1
    assert summary.prediction_flips == 0
    # One layout with `nice compress`: the run's state, table and summary under _nice/runs/<run_id>/.
    run_dir = dst / "_nice" / "runs" / summary.run_id
    assert summary.savings_path == str(run_dir / "savings.parquet")
    assert json.loads((run_dir / "summary.json").read_text())["images"] == n_files
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "succeeded"
    assert json.loads((dst / "_nice" / "latest-run.json").read_text())["run_id"] == summary.run_id


def test_cli_compress_folder(archive, small_model, tmp_path, capsys):
    rc = main(["compress-folder", str(archive), str(tmp_path / "out"), "--model", str(small_model),
               "--format", "webp", "--quality", "60", "--savings", str(tmp_path / "s.parquet")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert out["images"] == len(rows)
    assert {r["format_out"] for r in rows if r["status"] == "compressed"} <= {"webp"}
    webps = list((tmp_path / "out").rglob("*.webp"))
    assert webps and all(Image.open(p).format == "WEBP" for p in webps)


def test_destination_inside_source_is_not_reprocessed(archive, small_model):
    """DST inside SRC: its outputs are not sources, and a rerun is idempotent like `compress`."""
    model = NiceModel.load(small_model)
    n = len(_tree_hashes(archive))
    s1 = compress_folder(archive, archive / "out", model, progress=False)
    s2 = compress_folder(archive, archive / "out", model, progress=False)
    assert s1.images == s2.images == n, "outputs under SRC/out are never listed as sources"
    assert s2.run_id != s1.run_id
    assert s2.extra["processed"] == s1.counts["failed"], "only failed objects are tried again"
    rows = pq.read_table(s2.savings_path).to_pylist()
    unchanged = [r for r in rows if (r["error"] or "").startswith(f"unchanged since run {s1.run_id}")]
    assert len(unchanged) == sum(1 for r in pq.read_table(s1.savings_path).to_pylist() if r["status"] != "failed")


def test_same_folder_refused(archive, small_model):
    with pytest.raises(ValueError, match="never modified"):
        compress_folder(archive, archive, NiceModel.load(small_model), progress=False)


@pytest.mark.slow
def test_killed_compress_folder_resumes_the_same_run_and_redoes_nothing_committed(small_model, mnist_small, tmp_path,
                                                                                   capsys):
    from pipeline.cli import main as nice_main

    _, _, _, test_split = mnist_small
    src = export_png_folder(test_split, tmp_path / "src", limit=240)
    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "nice", "compress-folder", str(src), str(dst), "--model", str(small_model),
           "--batch-size", "4", "--threads", "1", "--lease-seconds", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list(dst.glob("_nice/runs/*/parts/*.parquet")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run must be killed, not finished"
    run_id = json.loads((dst / "_nice" / "latest-run.json").read_text())["run_id"]
    run_dir = dst / "_nice" / "runs" / run_id
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running", "the kill lands mid-run"
    committed = {r["source_key"]: r["processed_at"] for p in sorted((run_dir / "parts").glob("*.parquet"))
                 for r in pq.read_table(p).to_pylist()}
    assert 0 < len(committed) < 240

    capsys.readouterr()
    time.sleep(2.5)  # past the killed run's lease
    assert nice_main(["compress-folder", str(src), str(dst), "--model", str(small_model), "--batch-size", "16"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == run_id, "the rerun resumes the interrupted run"
    rows = pq.read_table(run_dir / "savings.parquet").to_pylist()
    keys = [r["source_key"] for r in rows]
    assert len(keys) == 240 and len(set(keys)) == 240, "one row per source"
    by_key = {r["source_key"]: r for r in rows}
    assert all(by_key[k]["processed_at"] == t for k, t in committed.items()), "committed rows are not redone"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "succeeded"
    outputs = {str(p) for p in dst.rglob("*") if p.is_file() and "_nice" not in p.relative_to(dst).parts}
    assert outputs == {r["output_uri"] for r in rows if r["output_uri"]}, "every output has its row"
