"""The compiled IR YAML of both pipelines, checked structurally and against golden files.

Regenerate the golden files after an intended change with
`NICE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_pipeline_compile.py`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from components.images import RUNTIME_IMAGE, TRAINER_IMAGE
from pipeline.remote import compile_pipeline, kfp_cron

GOLDEN = Path(__file__).parent / "golden"


def _compile(name: str, tmp_path: Path) -> tuple[str, dict, dict]:
    text = compile_pipeline(name, tmp_path / f"{name}.yaml").read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return text, spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task in the pipeline, flattened over sub-DAGs (exit handler, loops)."""
    out = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        out.update(comp.get("dag", {}).get("tasks", {}))
    return out


def _secret_envs(executor: dict) -> dict[str, tuple[str, bool]]:
    return {kv["envVar"]: (s["secretName"], s.get("optional", False))
            for s in executor.get("secretAsEnv", []) for kv in s["keyToEnv"]}


@pytest.mark.parametrize("name", ["train-and-compress", "recompress"])
def test_matches_golden(name, tmp_path):
    text, _, _ = _compile(name, tmp_path)
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("NICE_UPDATE_GOLDEN") or not golden.exists():
        golden.write_text(text)
    assert yaml.safe_load_all(text) and list(yaml.safe_load_all(text)) == list(yaml.safe_load_all(golden.read_text())), \
        f"{name} compiles differently from {golden}; if intended, regenerate with NICE_UPDATE_GOLDEN=1"


def test_train_and_compress_structure(tmp_path):
    _, spec, k8s = _compile("train-and-compress", tmp_path)
    tasks = _tasks(spec)
    assert {"ingest", "train-classifier", "train-mask-generator", "compress-archive", "evaluate",
            "finalize-tracking"} <= set(tasks)
    execs = spec["deploymentSpec"]["executors"]
    gpu = execs["exec-train-mask-generator"]["container"]
    assert gpu["image"] == TRAINER_IMAGE
    assert gpu["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert gpu["resources"]["accelerator"]["resourceCount"] == "1"
    for name, ex in execs.items():
        if name != "exec-train-mask-generator":
            assert ex["container"]["image"] == RUNTIME_IMAGE, name
            assert "resources" not in ex["container"] or "accelerator" not in ex["container"]["resources"], name
    # Credentials only from Secrets: S3 keys where the archive is touched, MLflow everywhere.
    assert _secret_envs(k8s["exec-compress-archive"])["AWS_SECRET_ACCESS_KEY"] == ("nice-s3", False)
    assert _secret_envs(k8s["exec-compress-archive"])["AWS_ENDPOINT_URL"] == ("nice-s3", True)
    assert _secret_envs(k8s["exec-train-mask-generator"])["MLFLOW_TRACKING_URI"] == ("nice-mlflow", False)
    assert "AWS_SECRET_ACCESS_KEY" not in _secret_envs(k8s["exec-train-mask-generator"])
    text = (tmp_path / "train-and-compress.yaml").read_text()
    assert "testing-secret" not in text and "nice-local-secret" not in text
    # The steps that read the live archive or move aliases are never served from cache.
    assert tasks["compress-archive"].get("cachingOptions", {}).get("enableCache") is not True
    assert tasks["evaluate"].get("cachingOptions", {}).get("enableCache") is not True
    assert tasks["train-classifier"]["cachingOptions"].get("enableCache") is True
    # The exit handler closes the MLflow parent run whatever happened.
    assert tasks["finalize-tracking"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_recompress_structure(tmp_path):
    _, spec, k8s = _compile("recompress", tmp_path)
    tasks = _tasks(spec)
    loops = {n: t for n, t in tasks.items() if "parameterIterator" in t}
    assert len(loops) == 1, "one ParallelFor over the shards"
    (loop_name, loop), = loops.items()
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-recompress-Output"
    from pipeline.recompress import PARALLELISM

    assert loop["iteratorPolicy"]["parallelismLimit"] == PARALLELISM
    loop_dag = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert "compress-shard" in loop_dag
    assert loop_dag["compress-shard"].get("retryPolicy", {}).get("maxRetryCount") == 2
    assert tasks["plan-recompress"].get("cachingOptions", {}).get("enableCache") is not True
    assert tasks["compress-shard"].get("cachingOptions", {}).get("enableCache") is not True
    assert "finish-recompress" in tasks and loop_name in tasks["finish-recompress"]["dependentTasks"]
    assert spec["root"]["inputDefinitions"]["parameters"]["model_uri"]["defaultValue"] == \
        "models:/nice-mask-generator@champion"
    assert _secret_envs(k8s["exec-compress-shard"])["AWS_ACCESS_KEY_ID"] == ("nice-s3", False)


def test_kfp_cron_adds_seconds():
    assert kfp_cron("0 3 * * *") == "0 0 3 * * *"
    assert kfp_cron("30 0 3 * * *") == "30 0 3 * * *"
    with pytest.raises(ValueError):
        kfp_cron("daily")
