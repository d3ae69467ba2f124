"""The compiled IR YAML of both pipelines, checked structurally and against golden files.

Regenerate the golden files after an intended change with
`NICE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_pipeline_compile.py`."""

from __future__ import annotations

import json
import os
import re
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
    assert tasks["source-fingerprint"].get("cachingOptions", {}).get("enableCache") is not True
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
    assert loop_dag["compress-shard"].get("retryPolicy", {}).get("maxRetryCount") == 3
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


def _timeout(k8s: dict, executor: str) -> int:
    return int(k8s[executor]["activeDeadlineSeconds"])


@pytest.mark.parametrize("name", ["train-and-compress", "recompress"])
def test_every_step_retries_with_backoff_and_has_a_timeout(name, tmp_path):
    from pipeline.settings import DEFAULT_TIMEOUTS

    _, spec, k8s = _compile(name, tmp_path)
    steps = {n: t for n, t in _tasks(spec).items() if "componentRef" in t and "dag" not in
             spec["components"][t["componentRef"]["name"]]}
    assert steps
    for task_name, task in steps.items():
        assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "30s", "backoffFactor": 2.0,
                                       "backoffMaxDuration": "3600s"}, task_name
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        assert _timeout(k8s, executor) == DEFAULT_TIMEOUTS[task_name], task_name


def test_gpu_step_tolerates_and_selects_gpu_nodes(tmp_path):
    _, spec, k8s = _compile("train-and-compress", tmp_path)
    gen = k8s["exec-train-mask-generator"]
    assert gen["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert gen["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert _tasks(spec)["train-mask-generator"]["retryPolicy"]["maxRetryCount"] == 3
    # Only the GPU step is steered to GPU nodes.
    assert [e for e, c in k8s.items() if "tolerations" in c or "nodeSelector" in c] == ["exec-train-mask-generator"]


def test_settings_change_the_compiled_spec(tmp_path):
    from pipeline.settings import read_settings

    f = tmp_path / "settings.json"
    f.write_text(json.dumps({
        "gpu": {"accelerator": "nvidia.com/gpu", "count": 2, "node_selector": {"pool": "a100"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}]},
        "retry": {"retries": 1, "backoff": "5s", "factor": 3, "max_duration": "600s"},
        "timeouts": {"train-mask-generator": 3600}}))
    text = compile_pipeline("train-and-compress", tmp_path / "t.yaml", read_settings(f)).read_text()
    spec, platform = yaml.safe_load_all(text)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gen = k8s["exec-train-mask-generator"]
    assert gen["nodeSelector"] == {"labels": {"pool": "a100"}}
    assert gen["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}]
    assert _timeout(k8s, "exec-train-mask-generator") == 3600 and _timeout(k8s, "exec-ingest") == 4 * 3600
    assert spec["deploymentSpec"]["executors"]["exec-train-mask-generator"]["container"]["resources"][
        "accelerator"]["resourceCount"] == "2"
    assert _tasks(spec)["ingest"]["retryPolicy"] == {"maxRetryCount": 1, "backoffDuration": "5s",
                                                      "backoffFactor": 3.0, "backoffMaxDuration": "600s"}
    # No node selector and no toleration at all when the settings say so.
    f.write_text(json.dumps({"gpu": {"node_selector": {}, "tolerations": []}}))
    _, platform = yaml.safe_load_all(compile_pipeline("train-and-compress", tmp_path / "u.yaml",
                                                      read_settings(f)).read_text())
    gen = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-mask-generator"]
    assert "nodeSelector" not in gen and "tolerations" not in gen


@pytest.mark.parametrize("bad, message", [
    ({"gpu": {"taints": []}}, "unknown key(s) ['taints']"),
    ({"timeouts": {"ingest": 0}}, "whole seconds > 0"),
    ({"timeouts": {"train": 60}}, "unknown step(s) ['train']"),
    ({"retry": {"backoff": "1m"}}, "a duration in seconds"),
    ({"gpu": {"tolerations": [{"key": "k", "operator": "Equal"}]}}, "a value goes with operator Equal"),
    ({"gpu": {"tolerations": [{"operator": "Exists"}]}}, "settings:"),
    ([], "expected a JSON object"),
])
def test_bad_settings_are_refused(tmp_path, bad, message):
    from pipeline.settings import read_settings

    f = tmp_path / "s.json"
    f.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=re.escape(message)):
        read_settings(f)


def test_ingest_is_cached_only_while_its_source_is_unchanged(tmp_path):
    """The rule: ingest's cache key includes the source's fingerprint, from a step that is
    never cached. A builtin name's fingerprint is constant (cached across runs); a folder's or
    prefix's follows its listing, so a live source that changed is ingested again."""
    from components.fingerprint import source_fingerprint

    _, spec, _ = _compile("train-and-compress", tmp_path)
    tasks = _tasks(spec)
    assert tasks["ingest"]["inputs"]["parameters"]["source_fingerprint"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "source-fingerprint"}}
    assert tasks["ingest"]["cachingOptions"].get("enableCache") is True
    assert tasks["source-fingerprint"].get("cachingOptions", {}).get("enableCache") is not True
    assert tasks["source-fingerprint"]["inputs"]["parameters"]["source"] == {
        "componentInputParameter": "pipelinechannel--dataset_source"}

    fingerprint = source_fingerprint.python_func
    assert fingerprint("mnist") == fingerprint("mnist") == "builtin:mnist"
    folder = tmp_path / "photos"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.jpg").write_bytes(b"one")
    first = fingerprint(str(folder))
    assert first.startswith("sha256:") and fingerprint(f"folder:{folder}") == first
    (folder / "_nice").mkdir()
    (folder / "_nice" / "state.json").write_bytes(b"{}")  # not read by ingest: no change
    assert fingerprint(str(folder)) == first
    (folder / "cat" / "b.jpg").write_bytes(b"two")
    second = fingerprint(str(folder))
    assert second != first
    (folder / "cat" / "b.jpg").write_bytes(b"three")  # changed content (size and mtime)
    assert fingerprint(str(folder)) not in (first, second)
