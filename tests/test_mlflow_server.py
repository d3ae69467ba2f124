"""A component logging to a real MLflow tracking server over HTTP on 127.0.0.1 (the cluster
setup), called the way KFP calls it: `component.python_func` with typed artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from kfp.dsl import Dataset, Metrics, Model

from pipeline.s3_local import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.3)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        proc.wait(20)


def test_train_classifier_component_logs_and_registers_over_http(mlflow_server, tmp_path, monkeypatch):
    from components import train_classifier
    from nice.jobs import ingest_step
    from nice.tracking import CLASSIFIER_MODEL, KFP_RUN_TAG

    url, root = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    art = ingest_step("mnist", tmp_path / "dataset", limit=400, progress=False)
    dataset = Dataset(name="dataset", uri=art["path"])
    model = Model(name="model", uri=str(tmp_path / "classifier.pt"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    train_classifier.python_func(dataset=dataset, model=model, metrics=metrics,
                                 config={"train_classifier": {"epochs": 1.0}},  # KFP passes numbers as floats
                                 kfp_run_id="kfp-run-over-http", pipeline_name="server-test")
    assert model.metadata["registered_version"] == "1"
    # The KFP metric is the held-out accuracy the checkpoint itself records.
    from nice.checkpoint import read_checkpoint

    assert metrics.metadata["test_accuracy"] == pytest.approx(read_checkpoint(model.path, "classifier")[2]["test_accuracy"])

    client = mlflow.MlflowClient(url)
    version = client.get_model_version(CLASSIFIER_MODEL, "1")
    run = client.get_run(version.run_id)
    assert run.data.tags["nice.step"] == "train-classifier"
    assert run.data.params["train.epochs"] == "1"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics.metadata["test_accuracy"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags[KFP_RUN_TAG] == "kfp-run-over-http"
    # Artifacts went through the server (proxied), not to a path this process chose.
    assert list((root / "artifacts").rglob("classifier.pt")), "the checkpoint is stored by the server"
    assert list((root / "artifacts").rglob("code/nice/tracking.py")), "the project's code ships with the model"
    # Through the server too: the splits are inputs with the content hash as digest, the
    # metrics belong to the logged model, the version records its dataset.
    from nice.mlflow_datasets import DIGEST_CHARS
    from nice.tracking import model_id_of

    digest = art["content_hash"][:DIGEST_CHARS]
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} == {digest} and len(run.inputs.dataset_inputs) == 3
    assert "test_accuracy" in {m.key for m in client.get_logged_model(model_id_of(version)).metrics}
    assert version.tags["nice.dataset_digest"] == digest
    mlflow.set_tracking_uri(url)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{CLASSIFIER_MODEL}/1")
    import numpy as np

    probs = pyfunc.predict(np.zeros((3, 28, 28), dtype=np.uint8))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_nice_ui_serves_the_store_on_localhost(tmp_path):
    port = free_port()
    env = {**os.environ, "NICE_HOME": str(tmp_path), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "nice", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "nice ui did not come up"
                time.sleep(0.3)
        assert (tmp_path / "mlflow.db").exists()  # the default store under NICE_HOME
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
