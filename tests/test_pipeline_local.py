"""Both pipelines end to end through kfp.local (every step a real subprocess), with the archive
on the local S3 endpoint over HTTP and MLflow on a SQLite store."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from nice.bundle import NiceModel, resolve_model
from nice.tracking import CLASSIFIER_MODEL, GENERATOR_MODEL, STEP_TAG, Tracker

pytestmark = pytest.mark.slow

LIMIT = 600
CONFIG = {"train_classifier": {"epochs": 2}, "train_generator": {"epochs": 1},
          # Small data: gates loose enough to promote, so that recompress can use the champion.
          "promotion": {"max_accuracy_drop": 5.0, "max_bytes_ratio": 1.0}}


@pytest.fixture(scope="module")
def demo(s3_endpoint, tmp_path_factory):
    from pipeline.demo import run_demo

    home = tmp_path_factory.mktemp("nice-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("NICE_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        report = run_demo(limit=LIMIT, config=CONFIG, eval_sample=100, workdir=home / "demo", benchmark_images=80)
        yield report, home
    finally:
        mp.undo()


def test_train_and_compress_artifacts(demo):
    report, home = demo
    rows = pq.read_table(report.savings).to_pylist()
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="nice-demo", Prefix="archive/")
                  for o in p.get("Contents", []))
    # One row per archive object, all of them seen by the models.
    assert len(keys) == LIMIT
    assert sorted(r["source_key"] for r in rows) == sorted(k[len("archive/"):] for k in keys)
    assert all(r["status"] in ("compressed", "kept_original") for r in rows)
    assert all(r["label"] is not None for r in rows)  # class folders give labels
    compressed = [r for r in rows if r["status"] == "compressed"]
    assert compressed, "some images must compress"
    # Stored outputs decode and classify like their sources (checked on a sample).
    model = NiceModel.load(report.run_dir / "train-mask-generator" / "model")
    for r in compressed[:20]:
        key = r["output_uri"].split("nice-demo/", 1)[1]
        img = Image.open(io.BytesIO(s3.get_object(Bucket="nice-demo", Key=key)["Body"].read()))
        x = np.asarray(img.convert("L"), dtype=np.float32)[None, None] / 255.0
        import torch

        with torch.no_grad():
            assert int(model.classifier(torch.from_numpy(x)).argmax(1)) == r["pred_source"] == r["pred_output"]
        assert r["output_bytes"] < r["source_bytes"]
    m = report.metrics
    assert m["objects"] == LIMIT and m["output_bytes"] <= m["source_bytes"]
    assert m["accuracy_source"] == pytest.approx(m["accuracy_output"], abs=1e-9)  # the guard keeps predictions
    # The report shows the gates, the baselines and the plots.
    html = report.report.read_text()
    assert "Rate-accuracy baselines" in html and "jpeg" in html and "data:image/png;base64," in html
    assert "bytes ratio" in html and ("PASS" in html or "FAIL" in html)
    # NICE against every baseline on the dataset's test split, as HTML and Markdown artifacts.
    md = (report.run_dir / "evaluate" / "summary").read_text()
    assert "| oracle |" in md and "| occlusion |" in md and "deletion AUC" in md
    assert report.verdicts and any("occlusion" in v for v in report.verdicts)
    # The printed summary says which bytes figure is the archive's and which the benchmark sample's.
    from pipeline.demo import format_report

    printed = format_report(report)
    assert "x, the whole archive)" in printed
    assert f"NICE vs baselines on a sample of the test set ({report.benchmark_scope.split(',')[0]}" in printed
    assert report.benchmark_scope.split(" ")[0].replace(",", "").isdigit()
    assert "data:image/png;base64," in report.benchmark.read_text()


def test_train_and_compress_mlflow(demo):
    report, home = demo
    assert report.gates["passed"]
    assert report.child_runs == ["compress-archive", "evaluate", "ingest", "train-classifier", "train-mask-generator"]
    tracker = Tracker(report.tracking_uri)
    parent = tracker.client.get_run(report.parent_run)
    assert parent.info.status == "FINISHED"  # closed by the exit handler
    kids = {r.data.tags[STEP_TAG]: r for r in tracker.client.search_runs(
        [tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{report.parent_run}'")}
    # Per-epoch metrics, params and artifacts where users look for them.
    history = tracker.client.get_metric_history(kids["train-classifier"].info.run_id, "epoch_train_loss")
    assert [h.step for h in history] == [1, 2]
    assert kids["train-mask-generator"].data.params["gates.block"] == "1"
    gen_artifacts = [a.path for a in tracker.client.list_artifacts(kids["train-mask-generator"].info.run_id, "plots")]
    assert gen_artifacts == ["plots/mask_overlay_grid.png"]
    ev_artifacts = {a.path for a in tracker.client.list_artifacts(kids["evaluate"].info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/rate_accuracy.png"} <= ev_artifacts
    bench_artifacts = {a.path for a in tracker.client.list_artifacts(kids["evaluate"].info.run_id, "benchmark")}
    assert bench_artifacts == {"benchmark/report.html", "benchmark/report.md", "benchmark/rate_points.json",
                               "benchmark/explanations.json"}  # the last two: mlflow.log_table
    assert "saving_vs_best_baseline" in kids["evaluate"].data.metrics
    assert kids["evaluate"].data.metrics["promoted"] == 1.0
    # Both models registered; champion points at this run's versions.
    champion = tracker.client.get_model_version_by_alias(GENERATOR_MODEL, "champion")
    assert champion.run_id == kids["train-mask-generator"].info.run_id
    assert tracker.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion").run_id == \
        kids["train-classifier"].info.run_id
    # The champion URI loads as a NICE model (the command the demo prints afterwards).
    mlflow.set_tracking_uri(report.tracking_uri)
    loaded = resolve_model("models:/nice-mask-generator@champion")
    assert loaded.config.hash() == NiceModel.load(report.run_dir / "train-mask-generator" / "model").config.hash()
    # `nice champion` shows the alias and refuses to move it to a version that does not exist.
    from nice.cli import main

    import os

    os.environ["MLFLOW_TRACKING_URI"] = report.tracking_uri
    try:
        assert main(["champion", "--generator", "99"]) == 2
        assert main(["champion", "--generator", str(champion.version)]) == 0
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    pyfunc = mlflow.pyfunc.load_model("models:/nice-mask-generator@champion")
    masks = pyfunc.predict(np.zeros((2, 28, 28), dtype=np.uint8))
    assert masks.shape == (2, 28, 28) and set(np.unique(masks)) <= {0, 1}


def test_mlflow_store_shows_datasets_linked_metrics_and_version_tags(demo, tmp_path):
    """What users look for in the store after a pipeline run: each step's dataset inputs with
    the ingest content hash as digest, system metrics on training, the evaluation's metrics
    linked to the evaluated model, gates and savings on its version; and the champion loads
    with mlflow.pyfunc.load_model in a process that cannot import the repository."""
    import json

    from mlflow_isolated import predict_in_isolation
    from nice.data.sources import load_builtin
    from nice.mlflow_datasets import DIGEST_CHARS
    from nice.tracking import model_id_of

    report, _ = demo
    tracker = Tracker(report.tracking_uri)
    client = tracker.client
    kids = {r.data.tags[STEP_TAG]: client.get_run(r.info.run_id) for r in client.search_runs(
        [tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{report.parent_run}'")}
    manifest = json.loads(next((report.run_dir / "ingest").rglob("manifest.json")).read_text())
    digest = manifest["content_hash"][:DIGEST_CHARS]

    def inputs(step: str) -> dict:
        return {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
                for d in kids[step].inputs.dataset_inputs}

    for step, contexts in (("train-classifier", {"train", "val", "test"}), ("train-mask-generator", {"train", "val"})):
        found = inputs(step)
        assert set(found) == contexts and {d.digest for d in found.values()} == {digest}
        # The default sampling interval records system metrics on a real training step.
        assert client.get_metric_history(kids[step].info.run_id, "system/cpu_utilization_percentage"), step
    ev = inputs("evaluate")
    assert ev["test"].digest == digest  # the benchmark's test split
    assert ev["eval"].source_type == "s3" and json.loads(ev["eval"].source)["uri"] == "s3://nice-demo/archive/"

    champion = client.get_model_version_by_alias(GENERATOR_MODEL, "champion")
    model_id = model_id_of(champion)
    evaluate_id = kids["evaluate"].info.run_id
    linked = {m.key: m for m in client.get_logged_model(model_id).metrics if m.run_id == evaluate_id}
    assert {"bytes_ratio", "accuracy_output", "gates_passed", "promoted"} <= set(linked)
    assert linked["bytes_ratio"].value == pytest.approx(kids["evaluate"].data.metrics["bytes_ratio"])
    assert [m.model_id for m in kids["evaluate"].inputs.model_inputs] == [model_id]
    for name in (GENERATOR_MODEL, CLASSIFIER_MODEL):
        tags = client.get_model_version_by_alias(name, "champion").tags
        assert tags["nice.dataset_digest"] == digest and tags["nice.dataset_content_hash"] == manifest["content_hash"]
        assert tags["nice.gates.passed"] == "true" and tags["nice.gates.promoted"] == "true"
        assert tags["nice.evaluate.run_id"] == evaluate_id
        assert float(tags["nice.savings.bytes_ratio"]) == pytest.approx(kids["evaluate"].data.metrics["bytes_ratio"])

    _, split = load_builtin("mnist", "test", limit=8)
    uri = f"models:/{GENERATOR_MODEL}/{champion.version}"
    masks, info = predict_in_isolation(report.tracking_uri, uri, split.images, tmp_path / "isolated")
    assert "/code/nice/" in info["origin"] and not info["origin"].startswith(str(Path(__file__).resolve().parents[1]))
    mlflow.set_tracking_uri(report.tracking_uri)
    np.testing.assert_array_equal(masks, mlflow.pyfunc.load_model(uri).predict(split.images))


def test_recompress_processes_only_new_and_changed(demo, monkeypatch):
    from pipeline.demo import pipeline_runs
    from pipeline.local import run_local

    report, home = demo
    s3 = boto3.client("s3")
    # 4 new objects and 2 changed ones (different bytes, hence a different ETag).
    src = sorted(report.archive_folder.rglob("*.png"))
    for i, p in enumerate(src[:4]):
        s3.put_object(Bucket="nice-demo", Key=f"archive/{p.parent.name}/new-{i}.png", Body=p.read_bytes())
    for p in src[4:6]:
        img = Image.open(p)
        buf = io.BytesIO()
        Image.fromarray(255 - np.asarray(img)).save(buf, "PNG")
        s3.put_object(Bucket="nice-demo", Key=f"archive/{p.parent.name}/{p.name}", Body=buf.getvalue())
    run_dir = run_local("recompress", {"source": "s3://nice-demo/archive/", "destination": "s3://nice-demo/compressed/",
                                       "model_uri": "models:/nice-mask-generator@champion", "shard_size": 250,
                                       "since_last": True})
    rows = pq.read_table(run_dir / "finish-recompress" / "savings").to_pylist()
    changed = {f"{p.parent.name}/{p.name}" for p in src[4:6]}
    new = {f"{p.parent.name}/new-{i}.png" for i, p in enumerate(src[:4])}
    assert {r["source_key"] for r in rows} == changed | new
    # Lineage: the alias resolved once, to the version it named (not the alias itself).
    champion = Tracker(report.tracking_uri).alias_version("nice-mask-generator")
    assert {r["model_uri"] for r in rows} == {f"models:/nice-mask-generator/{champion}"}
    # The listing fanned out: 606 objects in shards of 250 -> three compress-shard tasks.
    assert len(list(run_dir.glob("for-loop-*-iteration-*"))) == 3
    assert "Rate-accuracy" in (run_dir / "finish-recompress" / "report").read_text()
    tracker = Tracker(report.tracking_uri)
    parent, steps = pipeline_runs(tracker, run_dir.name)
    assert parent and steps == ["evaluate", "finish-recompress", "plan-recompress"]
    assert tracker.client.get_run(parent).info.status == "FINISHED"


def test_no_credentials_in_any_output(demo):
    """The S3 keys the run used appear nowhere it wrote: pipeline artifacts and executor
    outputs, the MLflow store (params, tags, metrics) and its artifacts, the demo's copies, and
    the run state, Parquet and objects at DST."""
    import os

    report, home = demo
    secrets = [os.environ["AWS_SECRET_ACCESS_KEY"].encode(), os.environ["AWS_ACCESS_KEY_ID"].encode()]
    assert all(len(s) >= 8 for s in secrets)
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("pipeline-root" in p.parts for p in files)
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s not in data, f"credential found in {p}"
    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="nice-demo", Prefix="compressed/")
            for o in page.get("Contents", [])]
    assert any(k.startswith("compressed/_nice/") for k in keys)
    for key in keys:
        obj = s3.get_object(Bucket="nice-demo", Key=key)
        blob = obj["Body"].read() + repr(obj.get("Metadata", {})).encode()
        for s in secrets:
            assert s not in blob, f"credential found in s3://nice-demo/{key}"
