"""Deployment checks that run without Docker or a cluster: manifests render with kustomize and
validate against the Kubernetes OpenAPI schemas, Dockerfiles lint and COPY only what exists,
the compiled pipelines use the declared images, and submit/schedule speak the KFP v2 REST API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from components.images import DOCKERFILES, RUNTIME_IMAGE, TRAINER_IMAGE

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


class _KfpApi(BaseHTTPRequestHandler):
    """The KFP v2beta1 REST routes kfp.Client uses for runs and recurring runs."""

    requests: list[tuple[str, str, dict]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(("GET", self.path, {}))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._reply({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiments": []})
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.requests.append(("POST", self.path, body))
        routes = {"/apis/v2beta1/experiments": {"experiment_id": "exp-1", "display_name": body.get("display_name")},
                  "/apis/v2beta1/runs": {"run_id": "run-1", "display_name": body.get("display_name")},
                  "/apis/v2beta1/recurringruns": {"recurring_run_id": "rr-1"}}
        if self.path in routes:
            self._reply(routes[self.path])
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kfp_api():
    _KfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _KfpApi.requests
    finally:
        server.shutdown()


def test_submit_sends_the_compiled_spec(kfp_api, capsys):
    from pipeline.cli import main

    host, requests = kfp_api
    assert main(["pipeline", "submit", "train-and-compress", "--host", host, "--arg", "limit=100",
                 "--arg", "archive_source=s3://photos/in/"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"run_id": "run-1"}
    run = next(body for method, path, body in requests if path == "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]["pipeline_spec"] if "pipeline_spec" in run["pipeline_spec"] else run["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "train-and-compress"
    assert "exec-train-mask-generator" in spec["deploymentSpec"]["executors"]
    assert run["runtime_config"]["parameters"] == {"limit": 100, "archive_source": "s3://photos/in/"}


def test_schedule_sends_cron_concurrency_and_no_catchup(kfp_api, capsys):
    from pipeline.cli import main

    host, requests = kfp_api
    assert main(["pipeline", "schedule", "recompress", "--host", host, "--cron", "30 2 * * *",
                 "--arg", "source=s3://photos/in/", "--arg", "destination=s3://photos/nice/"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"recurring_run_id": "rr-1"}
    body = next(body for method, path, body in requests if path == "/apis/v2beta1/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"  # KFP's 6-field form
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    spec = body["pipeline_spec"]["pipeline_spec"] if "pipeline_spec" in body["pipeline_spec"] else body["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "recompress"
    assert body["runtime_config"]["parameters"]["destination"] == "s3://photos/nice/"
    assert [p for m, p, _ in requests if m == "POST"] == ["/apis/v2beta1/experiments", "/apis/v2beta1/recurringruns"]
