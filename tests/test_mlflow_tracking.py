"""MLflow as its users expect it, on a real SQLite store: the steps' datasets as run inputs
with the ingest content hash as digest, metrics linked to the LoggedModel they belong to,
system metrics on training, gates and savings as model-version tags, and a registered model
that loads with `mlflow.pyfunc.load_model` in a process that has only the third-party packages."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow_isolated import predict_in_isolation

from nice.config import PromotionConfig
from nice.jobs import StepContext, ingest_step, train_classifier_step, train_mask_generator_step
from nice.mlflow_datasets import DIGEST_CHARS
from nice.tracking import (
    CLASSIFIER_MODEL,
    DATASET_DIGEST_TAG,
    DATASET_HASH_TAG,
    GENERATOR_MODEL,
    MODEL_REQUIREMENTS,
    Tracker,
    model_id_of,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> Tracker:
    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Tracker(f"sqlite:///{tmp_path}/mlflow.db")


def _inputs(client, run_id: str) -> dict[str, object]:
    """{context: dataset} of a run's dataset inputs."""
    run = client.get_run(run_id)
    return {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
            for d in run.inputs.dataset_inputs}


def test_training_steps_log_datasets_linked_metrics_and_system_metrics(tracker, tmp_path, monkeypatch):
    import psutil  # noqa: F401 - pinned in requirements.txt: MLflow samples system metrics with it

    # Short steps: sample often enough that each records some (the default is 2 s).
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    ctx = StepContext(tracker, "kfp-tracking-test", "tracking-test", progress=False)
    art = ingest_step("mnist", tmp_path / "dataset", ctx, limit=300)
    clf = train_classifier_step(art["path"], tmp_path / "classifier.pt", {"train_classifier": {"epochs": 2}}, ctx)
    gen = train_mask_generator_step(art["path"], tmp_path / "classifier.pt", tmp_path / "model",
                                    {"train_generator": {"epochs": 1}}, ctx)
    client = tracker.client
    digest = art["content_hash"][:DIGEST_CHARS]

    # Each split the step read is an input: digest = the artifact's content hash, the source
    # where the data came from (MNIST's published URL), the split as the context.
    inputs = _inputs(client, clf["mlflow_run_id"])
    assert set(inputs) == {"train", "val", "test"}
    for context, ds in inputs.items():
        assert ds.name == f"mnist/{context}" and ds.digest == digest
        assert ds.source_type == "http" and "mnist" in json.loads(ds.source)["url"]
        profile = json.loads(ds.profile)
        assert profile["content_hash"] == art["content_hash"] and profile["num_rows"] == art["counts"][context]
    assert set(_inputs(client, gen["mlflow_run_id"])) == {"train", "val"}

    for res, name, final, epoch in ((clf, CLASSIFIER_MODEL, "test_accuracy", "epoch_train_loss"),
                                    (gen, GENERATOR_MODEL, "val_density", "epoch_train_loss")):
        run = client.get_run(res["mlflow_run_id"])
        version = client.get_model_version(name, res["registered_version"])
        model_id = model_id_of(version)
        # The registered version is the run's logged model, and that model carries the
        # step's metrics: the final ones and every epoch's.
        assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
        model = client.get_logged_model(model_id)
        assert model.status == "READY" and model.source_run_id == run.info.run_id
        linked = {(m.key, m.step) for m in model.metrics if m.run_id == run.info.run_id}
        assert (final, 0) in linked and (epoch, 1) in linked
        assert model.metrics and all(m.model_id == model_id for m in model.metrics)
        assert model.params["train.epochs"] == run.data.params["train.epochs"]
        # Registration records the dataset: the version is searchable by digest.
        assert version.tags[DATASET_DIGEST_TAG] == digest and version.tags[DATASET_HASH_TAG] == art["content_hash"]
        # System metrics sampled during training.
        history = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert history, f"no system metrics on {name}'s run"
        assert client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")[0].value > 0
    found = client.search_model_versions(f"name = '{GENERATOR_MODEL}'")
    assert [v.version for v in found if v.tags.get(DATASET_DIGEST_TAG) == digest] == [int(gen["registered_version"])]
    # The ingest step itself trains nothing: no model, no system metrics.
    ingest = next(r for r in client.search_runs([tracker.experiment_id], "tags.`nice.step` = 'ingest'"))
    assert not ingest.outputs.model_outputs and not any(k.startswith("system/") for k in ingest.data.metrics)


def test_a_step_shorter_than_the_sampling_interval_still_has_system_metrics(tracker, monkeypatch):
    """MLflow's monitor publishes only after a whole interval; a fast training step (a small
    set, a fast machine) still gets one sample, taken as the step ends."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")
    with tracker.step("train-classifier", system_metrics=True) as run_id:
        pass
    client = tracker.client
    assert client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert client.get_metric_history(run_id, "system/system_memory_usage_megabytes")[0].value > 0
    # A step without system metrics gets none.
    with tracker.step("ingest") as plain:
        pass
    assert not any(k.startswith("system/") for k in client.get_run(plain).data.metrics)


def test_a_failed_training_step_leaves_no_pending_model(tracker):
    with pytest.raises(RuntimeError, match="boom"), tracker.step(
            "train-classifier", model="classifier", dataset="mnist", splits={"train": "train", "val": "test"}):
        model_id = tracker.model_id
        tracker.log_metrics({"epoch_train_loss": 1.0}, step=1)
        raise RuntimeError("boom")
    model = tracker.client.get_logged_model(model_id)
    assert str(model.status) == "FAILED"
    # The builtin dataset has a digest of its own content, the same every time.
    run = tracker.client.get_run(model.source_run_id)
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert set(digests) == {"mnist/train", "mnist/test"} and len(set(digests.values())) == 1
    from nice.mlflow_datasets import dataset_info

    assert dataset_info("mnist").digest == digests["mnist/train"] and len(digests["mnist/train"]) == DIGEST_CHARS


def _register(tracker: Tracker, model_dir: Path) -> str:
    with tracker.step("train-mask-generator", model="mask_generator", dataset="mnist",
                      splits={"train": "train", "val": "test"}):
        return tracker.log_nice_model(model_dir, 1, 28)


def test_evaluate_links_metrics_to_the_evaluated_model_and_tags_its_version(small_model, tracker, tmp_path):
    from nice.bundle import NiceModel
    from nice.compress.folder import compress_folder
    from nice.data.sources import export_png_folder, load_builtin
    from nice.evaluate.run import evaluate_savings

    version = _register(tracker, small_model)
    _, split = load_builtin("mnist", "test", limit=60)
    src = export_png_folder(split, tmp_path / "src", 60)
    model = NiceModel.load(small_model)  # a local directory: the version comes from `versions`
    compress_folder(src, tmp_path / "dst", model, class_names=split.class_names,
                    savings=tmp_path / "savings.parquet", progress=False)
    ctx = StepContext(tracker, progress=False)
    client = tracker.client
    model_id = model_id_of(client.get_model_version(GENERATOR_MODEL, version))

    strict = PromotionConfig(max_bytes_ratio=0.01)
    res = evaluate_savings(tmp_path / "savings.parquet", str(src), model, tmp_path / "eval", strict, sample=20,
                           ctx=ctx, versions={"generator": version})
    assert not res["gates"]["passed"]
    tags = client.get_model_version(GENERATOR_MODEL, version).tags
    assert tags["nice.gates.passed"] == "false" and tags["nice.gates.promoted"] == "false"
    assert "FAIL bytes ratio" in tags["nice.gates.reasons"]
    assert float(tags["nice.savings.bytes_ratio"]) == pytest.approx(res["metrics"]["bytes_ratio"])
    assert int(tags["nice.savings.objects"]) == 60
    first_eval = tags["nice.evaluate.run_id"]
    passed = f"name = '{GENERATOR_MODEL}' and tags.`nice.gates.passed` = 'true'"  # as docs/operations.md
    assert client.search_model_versions(passed) == []

    loose = PromotionConfig(max_bytes_ratio=1.0, max_accuracy_drop=100.0)
    res = evaluate_savings(tmp_path / "savings.parquet", str(src), model, tmp_path / "eval2", loose, sample=20,
                           ctx=ctx, versions={"generator": version})
    assert res["gates"]["promoted"]
    tags = client.get_model_version(GENERATOR_MODEL, version).tags
    assert tags["nice.gates.passed"] == "true" and tags["nice.gates.promoted"] == "true"
    assert [str(v.version) for v in client.search_model_versions(passed)] == [version]
    eval_run = client.get_run(tags["nice.evaluate.run_id"])
    assert eval_run.info.run_id != first_eval and eval_run.data.tags["nice.step"] == "evaluate"
    # The evaluate run's inputs: the archive it evaluated and the model it evaluated.
    archive = _inputs(client, eval_run.info.run_id)["eval"]
    assert archive.name == f"archive:{src}" and json.loads(archive.profile)["num_rows"] == 60
    assert [m.model_id for m in eval_run.inputs.model_inputs] == [model_id]
    # Its metrics belong to the evaluated model, per dataset.
    linked = {m.key: m for m in client.get_logged_model(model_id).metrics if m.run_id == eval_run.info.run_id}
    assert {"bytes_ratio", "accuracy_output", "gates_passed", "promoted"} <= set(linked)
    assert linked["bytes_ratio"].value == pytest.approx(eval_run.data.metrics["bytes_ratio"])
    assert linked["bytes_ratio"].dataset_digest == archive.digest
    # The same archive (same objects, same ETags) has the same digest in both evaluations.
    assert _inputs(client, first_eval)["eval"].digest == archive.digest


def test_an_evaluation_run_holds_its_explanation_metrics_and_table(small_model, tracker, tmp_path):
    """`nice evaluate` of a registered model: the evaluate run in the store has the benchmark's
    rate and explanation metrics, linked to the evaluated model, and the per-method table."""
    from nice.bundle import resolve_model
    from nice.jobs import evaluate_step

    version = _register(tracker, small_model)
    model = resolve_model(f"models:/{GENERATOR_MODEL}/{version}")
    res = evaluate_step(model, "mnist", tmp_path / "ev", StepContext(tracker, progress=False), limit=40,
                        explain_limit=20)
    client = tracker.client
    run = client.get_run(res["mlflow_run_id"])  # opened from the SQLite store, not from `res`
    assert run.data.tags["nice.step"] == "evaluate"
    by = {e["method"]: e for e in res["explain"]}
    metrics = run.data.metrics
    for method in ("nice", "gradcam", "integrated_gradients", "saliency", "occlusion"):
        e = by[method]
        for key in ("deletion_auc", "rise_insertion_auc", "road_morf", "road_lerf", "infidelity"):
            assert metrics[f"explain.{method}.{key}"] == pytest.approx(e[key])
        assert metrics[f"explain.{method}.preservation_5pct"] == pytest.approx(e["preservation"]["5%"])
    assert metrics["bench.best_nice.bytes_ratio"] == pytest.approx(res["best_nice"]["bytes_ratio"])
    # Linked to the evaluated model, with the test split as the eval input.
    model_id = model_id_of(client.get_model_version(GENERATOR_MODEL, version))
    linked = {m.key for m in client.get_logged_model(model_id).metrics if m.run_id == run.info.run_id}
    assert {"explain.nice.road_morf", "explain.occlusion.infidelity", "bench.ratio_to_best"} <= linked
    assert _inputs(client, run.info.run_id)["eval"].name == "mnist/test"
    exp = run.info.experiment_id
    table = client.load_table(exp, "benchmark/explanations.json", run_ids=[run.info.run_id])
    assert sorted(table["method"]) == sorted(by)
    row = table.set_index("method").loc["nice"]
    assert row["rise_deletion_auc"] == pytest.approx(by["nice"]["rise_deletion_auc"])
    assert row["preservation_20pct"] == pytest.approx(by["nice"]["preservation"]["20%"])
    points = client.load_table(exp, "benchmark/rate_points.json", run_ids=[run.info.run_id])
    assert len(points) == len(res["points"]) and "oracle-webp" in set(points["method"])


def test_registered_mask_generator_loads_without_the_repository(small_model, tracker, tmp_path):
    from nice.data.sources import load_builtin

    version = _register(tracker, small_model)
    uri = f"models:/{GENERATOR_MODEL}/{version}"
    _, split = load_builtin("mnist", "test", limit=16)
    masks, info = predict_in_isolation(tracker.uri, uri, split.images, tmp_path / "isolated")
    # `nice` came from the code logged with the model, and the repository was not on the path.
    origin = Path(info["origin"])
    assert origin.parts[-3:] == ("code", "nice", "__init__.py") and (origin.parents[2] / "MLmodel").is_file()
    assert not origin.is_relative_to(REPO)
    assert not any(Path(p).resolve() == REPO or Path(p).resolve().is_relative_to(REPO / "nice")
                   for p in info["sys_path"] if p)
    # It predicts what the model predicts in this process.
    mlflow.set_tracking_uri(tracker.uri)
    expected = mlflow.pyfunc.load_model(uri).predict(split.images)
    assert masks.shape == (16, 28, 28) and 0 < masks.mean() < 1
    np.testing.assert_array_equal(masks, expected)
    # Only third-party requirements, each pinned: no index serves the project itself.
    reqs = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt", dst_path=str(tmp_path / "req")))
    lines = [line for line in reqs.read_text().splitlines() if line and not line.startswith("#")]
    assert sorted(line.split("==")[0] for line in lines) == sorted(MODEL_REQUIREMENTS)
    assert all("==" in line for line in lines)
