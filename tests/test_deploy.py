"""Deployment checks that run without Docker or a cluster: manifests render with kustomize and
validate against the Kubernetes OpenAPI schemas, Dockerfiles lint and COPY only what exists,
the compiled pipelines use the declared images, and upload/submit/schedule speak the KFP v2beta1
REST API (tests/kfp_api.py checks every body against its schema)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from components.images import DOCKERFILES, RUNTIME_IMAGE, TRAINER_IMAGE
from kfp_api import KfpApi

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.32"
HADOLINT = Path(sys.executable).parent / "hadolint"


def kustomize() -> str:
    home = Path(os.environ.get("NICE_HOME", ROOT / ".nice"))
    for candidate in (home / "tools" / "bin" / "kustomize", ROOT / ".nice" / "tools" / "bin" / "kustomize"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("kustomize")
    if not found:
        pytest.fail("kustomize is not installed: run `make tools` (scripts/setup-tools.sh)")
    return found


def render(overlay: Path) -> list[dict]:
    out = subprocess.run([kustomize(), "build", str(overlay)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"kustomize build {overlay} failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(docs: list[dict]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, desired_version=K8S_VERSION, strict=True)


@pytest.fixture
def manifests(tmp_path) -> Path:
    """A copy of manifests/ with the example secret files filled in (as an operator would)."""
    dst = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", dst)
    for example in dst.rglob("*.env.example"):
        lines = [ln if ln.startswith("#") or not ln.endswith("=") else ln + "value"
                 for ln in example.read_text().splitlines()]
        example.with_suffix("").write_text("\n".join(lines) + "\n")
    return dst


def test_every_manifest_parses():
    files = sorted((ROOT / "manifests").rglob("*.yaml"))
    assert len(files) >= 12
    for f in files:
        assert [d for d in yaml.safe_load_all(f.read_text()) if d], f"{f} is empty"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlays_render_and_validate(manifests, overlay):
    docs = render(manifests / "overlays" / overlay)
    validate(docs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "mlflow"), ("Service", "mlflow"), ("StatefulSet", "mlflow-postgres"),
            ("ServiceAccount", "nice-pipeline"), ("Role", "nice-pipeline"), ("RoleBinding", "nice-pipeline"),
            ("CronJob", "nice-recompress"), ("Secret", "nice-s3"), ("Secret", "nice-mlflow"),
            ("Secret", "nice-mlflow-db")} <= kinds
    assert (("Deployment", "minio") in kinds) == (overlay == "dev")
    assert all(d["metadata"].get("namespace", "nice") == "nice" for d in docs)
    cron = next(d for d in docs if d["kind"] == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "nice-pipeline"
    assert "--since-last" in pod["containers"][0]["args"][0]
    for d in docs:
        spec = d.get("spec", {})
        pod_spec = (spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}).get("spec")
        for c in (pod_spec or {}).get("containers", []):
            assert c.get("resources", {}).get("requests") and c["resources"].get("limits"), f"{d['kind']} {c['name']}"
            if "nice-pipeline" in c["image"]:
                assert c["image"] == RUNTIME_IMAGE, "manifests must use the image of components/images.py"


def test_no_real_secrets_committed():
    tracked = subprocess.run(["git", "ls-files", "manifests"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if f.endswith(".env")], "only *.env.example templates belong in git"
    examples = list((ROOT / "manifests").rglob("*.env.example"))
    assert len(examples) == 3
    for f in examples:
        for line in f.read_text().splitlines():
            if "PASSWORD=" in line or "SECRET_ACCESS_KEY=" in line:
                assert line.endswith("="), f"{f.name}: template values must be empty"


def test_a_broken_manifest_fails_validation(manifests):
    deploy = manifests / "base" / "mlflow" / "deployment.yaml"
    deploy.write_text(deploy.read_text().replace("containerPort: 5000", "containerPort: \"five thousand\""))
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(render(manifests / "overlays" / "dev"))
    deploy.write_text(deploy.read_text().replace("containers:", "contianers:"))
    with pytest.raises((kubernetes_validate.ValidationError, RuntimeError)):
        validate(render(manifests / "overlays" / "dev"))
    (manifests / "base" / "kustomization.yaml").write_text(
        (manifests / "base" / "kustomization.yaml").read_text().replace("rbac.yaml", "rbac-missing.yaml"))
    with pytest.raises(RuntimeError, match="kustomize build"):
        render(manifests / "overlays" / "dev")


def _copy_sources(dockerfile: Path) -> list[str]:
    parser = DockerfileParser(path=str(dockerfile))
    sources = []
    for instr in parser.structure:
        if instr["instruction"] == "COPY" and "--from=" not in instr["value"]:
            sources += instr["value"].split()[:-1]
    return sources


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfiles_lint_and_copy_existing_paths(image):
    dockerfile = ROOT / DOCKERFILES[image]
    out = subprocess.run([str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    sources = _copy_sources(dockerfile)
    assert {"requirements.txt", "pyproject.toml", "nice", "components", "pipeline"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not set(sources) & set(ignored), ".dockerignore must not hide what the Dockerfile copies"
    text = dockerfile.read_text()
    assert "USER 10001" in text and "kfp" in (ROOT / "requirements.txt").read_text()


def test_a_broken_dockerfile_fails(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text((ROOT / "images/runtime/Dockerfile").read_text().replace("FROM ${PYTHON_IMAGE}\n", "FROM python\n")
                   .replace("COPY pipeline ./pipeline", "COPY pipelines ./pipelines"))
    out = subprocess.run([str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3006" in out.stdout  # untagged base image
    assert [s for s in _copy_sources(bad) if not (ROOT / s).exists()] == ["pipelines"]


def test_compiled_pipelines_use_the_declared_images(tmp_path):
    from pipeline.remote import compile_pipeline

    used = set()
    for name in ("train-and-compress", "recompress"):
        spec = next(yaml.safe_load_all(compile_pipeline(name, tmp_path / f"{name}.yaml").read_text()))
        images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
        assert images <= set(DOCKERFILES), images
        used |= images
    assert used == {RUNTIME_IMAGE, TRAINER_IMAGE}  # every declared image is used, each has a Dockerfile


@pytest.fixture
def kfp_api():
    with KfpApi() as api:
        yield api


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _spec(body: dict) -> dict:
    spec = body["pipeline_spec"]
    return spec["pipeline_spec"] if "pipeline_spec" in spec else spec


def test_submit_sends_the_compiled_spec(kfp_api, capsys):
    from pipeline.cli import main

    assert main(["pipeline", "submit", "train-and-compress", "--host", kfp_api.host, "--arg", "limit=100",
                 "--arg", "archive_source=s3://photos/in/"]) == 0
    assert _last_json(capsys) == {"run_id": "run-1"}
    run = next(body for method, path, body in kfp_api.requests if path == "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1"
    assert "pipeline_version_reference" not in run
    spec = _spec(run)
    assert spec["pipelineInfo"]["name"] == "train-and-compress"
    assert "exec-train-mask-generator" in spec["deploymentSpec"]["executors"]
    assert run["runtime_config"]["parameters"] == {"limit": 100, "archive_source": "s3://photos/in/"}
    assert run["service_account"] == "nice-pipeline"  # the settings' default (manifests/base/rbac.yaml)


def test_schedule_sends_cron_concurrency_and_no_catchup(kfp_api, capsys):
    from pipeline.cli import main

    assert main(["pipeline", "schedule", "recompress", "--host", kfp_api.host, "--cron", "30 2 * * *",
                 "--arg", "source=s3://photos/in/", "--arg", "destination=s3://photos/nice/"]) == 0
    assert _last_json(capsys) == {"recurring_run_id": "rr-1"}
    body = next(body for method, path, body in kfp_api.requests if path == "/apis/v2beta1/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"  # KFP's 6-field form
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert _spec(body)["pipelineInfo"]["name"] == "recompress"
    assert body["runtime_config"]["parameters"]["destination"] == "s3://photos/nice/"
    assert [p for m, p, _ in kfp_api.requests if m == "POST"] == ["/apis/v2beta1/experiments",
                                                                  "/apis/v2beta1/recurringruns"]


def _upload(capsys, host: str, *extra: str) -> dict:
    from pipeline.cli import main

    assert main(["pipeline", "upload", "recompress", "--host", host, *extra]) == 0
    return _last_json(capsys)


def test_upload_twice_is_one_version_and_a_change_is_two(kfp_api, capsys, tmp_path):
    """The acceptance test: the same compiled spec uploaded twice makes one pipeline version;
    after a change to the spec (here a settings file: retries 5), two."""
    first = _upload(capsys, kfp_api.host)
    assert first["created"] is True and first["version_name"].startswith("recompress-")
    again = _upload(capsys, kfp_api.host)
    assert again == {**first, "created": False}
    assert len(kfp_api.state.pipelines) == 1
    assert [v["pipeline_version_id"] for v in kfp_api.versions("recompress")] == [first["version_id"]]
    changed = tmp_path / "settings.json"
    changed.write_text(json.dumps({"retry": {"retries": 5}}))
    second = _upload(capsys, kfp_api.host, "--settings", str(changed))
    assert second["created"] is True and second["pipeline_id"] == first["pipeline_id"]
    assert second["version_id"] != first["version_id"]
    assert _upload(capsys, kfp_api.host, "--settings", str(changed))["created"] is False
    versions = kfp_api.versions("recompress")
    assert [v["pipeline_version_id"] for v in versions] == [first["version_id"], second["version_id"]]
    # What was uploaded is the compiled spec, with its platform part; the description names its digest.
    uploads = [b for m, p, b in kfp_api.requests if p == "/apis/v2beta1/pipelines/upload_version"]
    assert len(uploads) == 2 and all(u["query"]["pipelineid"] == first["pipeline_id"] for u in uploads)
    spec, platform = uploads[1]["uploadfile"]
    assert spec["pipelineInfo"]["name"] == "recompress"
    assert spec["root"]["dag"]["tasks"]["exit-handler-1"] and "kubernetes" in platform["platforms"]
    assert versions[1]["description"].startswith("sha256:" + second["version_name"].rsplit("-", 1)[1])
    # The pipeline was created once, empty, then given versions (no version named after it).
    creates = [b for m, p, b in kfp_api.requests if m == "POST" and p == "/apis/v2beta1/pipelines"]
    assert creates == [{"display_name": "recompress", "description": creates[0]["description"]}]


def test_submit_and_schedule_target_a_version(kfp_api, capsys, tmp_path):
    from pipeline.cli import main

    host = kfp_api.host
    up = _upload(capsys, host)
    ref = {"pipeline_id": up["pipeline_id"], "pipeline_version_id": up["version_id"]}
    for version in ("latest", up["version_id"], "current"):
        assert main(["pipeline", "submit", "recompress", "--host", host, "--version", version,
                     "--service-account", "batch-sa", "--arg", "source=s3://b/in/"]) == 0
        run = kfp_api.state.runs[-1]
        assert run["pipeline_version_reference"] == ref, version
        assert "pipeline_spec" not in run and "pipeline_version_id" not in run  # not the deprecated field
        assert run["service_account"] == "batch-sa"
        assert run["runtime_config"]["parameters"] == {"source": "s3://b/in/"}
    assert len(kfp_api.versions("recompress")) == 1  # `current` found the uploaded spec
    assert main(["pipeline", "schedule", "recompress", "--host", host, "--cron", "0 3 * * *",
                 "--version", "latest"]) == 0
    job = kfp_api.state.recurring_runs[-1]
    assert job["pipeline_version_reference"] == ref and "pipeline_spec" not in job
    assert job["service_account"] == "nice-pipeline" and job["no_catchup"] is True
    # `latest` is the newest upload.
    (tmp_path / "s.json").write_text(json.dumps({"timeouts": {"compress-shard": 600}}))
    newer = _upload(capsys, host, "--settings", str(tmp_path / "s.json"))
    assert main(["pipeline", "schedule", "recompress", "--host", host, "--cron", "0 3 * * *",
                 "--version", "latest", "--service-account", ""]) == 0
    job = kfp_api.state.recurring_runs[-1]
    assert job["pipeline_version_reference"]["pipeline_version_id"] == newer["version_id"]
    assert "service_account" not in job  # "" leaves it to the server


@pytest.mark.parametrize("argv, message", [
    (["submit", "recompress", "--version", "latest"], "no pipeline 'recompress'"),
    (["submit", "train-and-compress", "--version", "latest"], "no pipeline 'train-and-compress'"),
    (["schedule", "recompress", "--cron", "daily", "--version", "latest"], "needs 5 (or 6, with seconds) fields"),
])
def test_bad_requests_are_one_line(kfp_api, capsys, argv, message):
    from pipeline.cli import main

    assert main(["pipeline", *argv, "--host", kfp_api.host]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not kfp_api.state.experiments and not kfp_api.state.runs  # refused before anything was created


def test_unknown_version_and_unreachable_host_are_one_line(kfp_api, capsys, tmp_path):
    from pipeline.cli import main

    _upload(capsys, kfp_api.host)
    assert main(["pipeline", "submit", "recompress", "--host", kfp_api.host, "--version", "v-missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no version 'v-missing'" in err[0]
    assert main(["pipeline", "upload", "recompress", "--host", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not reachable" in err[0]
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"gpu": {"tolerations": [{"key": "x", "operator": "Sometimes"}]}}))
    assert main(["pipeline", "compile", "recompress", "--settings", str(bad), "--out", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "operator must be one of" in err[0]


def test_the_double_refuses_what_the_schema_does_not_have():
    """The schema check itself: an unknown or server-assigned field, both a spec and a version."""
    from kfp_api import BadRequest, check, route, State

    check({"display_name": "x", "pipeline_version_reference": {"pipeline_id": "p", "pipeline_version_id": "v"},
           "runtime_config": {"parameters": {"a": 1}}, "service_account": "sa"}, "V2beta1Run")
    for body, model, what in [
            ({"display_name": "x", "pipeline_version_ref": {}}, "V2beta1Run", "pipeline_version_ref"),
            ({"pipeline_version_reference": {"version_id": "v"}}, "V2beta1Run", "pipeline_version_reference.version_id"),
            ({"mode": "ON"}, "V2beta1RecurringRun", "mode='ON'"),
            ({"display_name": "p", "pipeline_id": "mine"}, "V2beta1Pipeline", "pipeline_id (server-assigned)")]:
        with pytest.raises(BadRequest, match=re.escape(what)):
            check(body, model)
    state = State()
    state.experiments["e"] = {"experiment_id": "e"}
    with pytest.raises(BadRequest, match="exactly one of"):
        route(state, "POST", "/apis/v2beta1/runs", {}, {"experiment_id": "e"})
