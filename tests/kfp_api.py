"""A small Kubeflow Pipelines v2beta1 REST API on 127.0.0.1 for the deployment tests.

It keeps experiments, pipelines and pipeline versions in memory, serves the routes kfp.Client
uses for them and for runs and recurring runs, and records every request. Each JSON body
and each upload's query is checked against the v2beta1 schema as `kfp_server_api` (generated
from the server's swagger) defines it: an unknown field anywhere, a server-assigned field in
a create request, or a run naming both an inline spec and a version (or neither) is a 400,
so kfp.Client raises and the test fails. Names are unique per pipeline, as on a real server.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api.models as models
import yaml

V2 = "/apis/v2beta1"
# Fields the server assigns; a create request that sends them is wrong.
SERVER_FIELDS = {"V2beta1Pipeline": {"pipeline_id", "created_at", "error"},
                 "V2beta1Run": {"run_id", "created_at", "finished_at", "scheduled_at", "state", "state_history",
                                "run_details", "error", "storage_state"},
                 "V2beta1RecurringRun": {"recurring_run_id", "created_at", "updated_at", "status", "error"},
                 "V2beta1Experiment": {"experiment_id", "created_at", "last_run_created_at", "storage_state"}}
# PipelineUploadServiceApi.upload_pipeline_version: `all_params` besides the file.
UPLOAD_VERSION_PARAMS = {"name", "display_name", "pipelineid", "description", "tags"}
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def schema_errors(body: Any, model: str, where: str = "") -> list[str]:
    """Field names of `body` that the v2beta1 model `model` (recursively) does not have."""
    cls = getattr(models, model)
    by_json = {j: a for a, j in cls.attribute_map.items()}
    if not isinstance(body, dict):
        return [f"{where or model}: expected an object"]
    errors = []
    for key, value in body.items():
        if key not in by_json:
            errors.append(f"{where}{key}")
            continue
        kind = cls.openapi_types[by_json[key]]
        inner = re.fullmatch(r"list\[(\w+)\]", kind)
        if hasattr(models, kind):
            allowed = getattr(getattr(models, kind), "allowable_values", None)  # an enum
            if allowed is None:
                errors += schema_errors(value, kind, f"{where}{key}.")
            elif value not in allowed:
                errors.append(f"{where}{key}={value!r} (one of {allowed})")
        elif inner and hasattr(models, inner.group(1)):
            errors += [e for i, v in enumerate(value) for e in schema_errors(v, inner.group(1), f"{where}{key}[{i}].")]
    return errors


def check(body: dict, model: str) -> None:
    errors = schema_errors(body, model)
    errors += sorted(f"{k} (server-assigned)" for k in SERVER_FIELDS.get(model, set()) & set(body))
    if errors:
        raise BadRequest(400, f"{model}: invalid field(s) {errors}")


@dataclass
class State:
    experiments: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, list[dict]] = field(default_factory=dict)  # pipeline id -> versions, oldest first
    runs: list[dict] = field(default_factory=list)
    recurring_runs: list[dict] = field(default_factory=list)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    clock: int = 0

    def now(self) -> str:
        self.clock += 1
        return (T0 + timedelta(seconds=self.clock)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _filtered(items: list[dict], query: dict[str, list[str]]) -> list[dict]:
    if "filter" in query:
        spec = json.loads(query["filter"][0])
        for p in spec.get("predicates", []):
            if p.get("operation") not in ("EQUALS", 1) or p.get("key") not in ("display_name", "name"):
                raise BadRequest(400, f"filter predicate not supported by the double: {p}")
            items = [i for i in items if i.get("display_name") == p["stringValue"]]
    sort = (query.get("sort_by") or [""])[0]
    if sort:
        key, _, order = sort.partition(" ")
        items = sorted(items, key=lambda i: i.get(key) or "", reverse=order == "desc")
    size = int((query.get("page_size") or ["0"])[0] or 0)
    return items[:size] if size else items


class Handler(BaseHTTPRequestHandler):
    state: State  # set per server

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if method == "POST" and url.path == f"{V2}/pipelines/upload_version":
                body = self._upload(query, raw)
            else:
                body = json.loads(raw or b"{}")
            self.state.requests.append((method, url.path, body))
            status, reply = route(self.state, method, url.path, query, body)
        except BadRequest as exc:
            status, reply = exc.status, {"error": str(exc), "message": str(exc), "code": {400: 3, 404: 5, 409: 6}.get(exc.status, 2)}
        self._reply(status, reply)

    def _upload(self, query: dict[str, list[str]], raw: bytes) -> dict:
        unknown = set(query) - UPLOAD_VERSION_PARAMS
        if unknown:
            raise BadRequest(400, f"upload_version: unknown query parameter(s) {sorted(unknown)}")
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise BadRequest(400, f"upload_version: expected multipart/form-data, got {ctype!r}")
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in msg.iter_parts()}
        if set(parts) != {"uploadfile"}:
            raise BadRequest(400, f"upload_version: expected one form field `uploadfile`, got {sorted(parts)}")
        return {"query": {k: v[0] for k, v in query.items()},
                "uploadfile": [d for d in yaml.safe_load_all(parts["uploadfile"]) if d]}

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def log_message(self, *args: object) -> None:
        pass


def route(s: State, method: str, path: str, query: dict[str, list[str]], body: dict) -> tuple[int, dict]:
    if method == "GET" and path == f"{V2}/healthz":
        return 200, {"multi_user": False}
    if path == f"{V2}/experiments":
        if method == "GET":
            return 200, {"experiments": _filtered(list(s.experiments.values()), query)}
        check(body, "V2beta1Experiment")
        exp = {"experiment_id": f"exp-{len(s.experiments) + 1}", "display_name": body["display_name"],
               "created_at": s.now()}
        s.experiments[exp["experiment_id"]] = exp
        return 200, exp
    if path == f"{V2}/pipelines":
        if method == "GET":
            return 200, {"pipelines": _filtered(list(s.pipelines.values()), query)}
        check(body, "V2beta1Pipeline")
        name = body.get("display_name") or body.get("name")
        if not name:
            raise BadRequest(400, "a pipeline needs a display_name")
        if any(p["display_name"] == name for p in s.pipelines.values()):
            raise BadRequest(409, f"pipeline {name!r} already exists")
        p = {"pipeline_id": str(uuid.uuid4()), "display_name": name, "name": name,
             "description": body.get("description", ""), "created_at": s.now()}
        s.pipelines[p["pipeline_id"]] = p
        s.versions[p["pipeline_id"]] = []
        return 200, p
    if method == "POST" and path == f"{V2}/pipelines/upload_version":
        q = body["query"]
        pid = q.get("pipelineid")
        if pid not in s.pipelines:
            raise BadRequest(404, f"no pipeline {pid!r}")
        name = q.get("display_name") or q.get("name")
        if not name:
            raise BadRequest(400, "a pipeline version needs a name")
        if any(v["display_name"] == name for v in s.versions[pid]):
            raise BadRequest(409, f"pipeline {pid} already has a version {name!r}")
        spec, *platform = body["uploadfile"]
        v = {"pipeline_id": pid, "pipeline_version_id": str(uuid.uuid4()), "display_name": name, "name": name,
             "description": q.get("description", ""), "created_at": s.now(),
             "pipeline_spec": {"pipeline_spec": spec, "platform_spec": platform[0]} if platform else spec}
        s.versions[pid].append(v)
        return 200, v
    m = re.fullmatch(rf"{V2}/pipelines/([^/]+)(?:/versions(?:/([^/]+))?)?", path)
    if method == "GET" and m:
        pid, vid = m.groups()
        if pid not in s.pipelines:
            raise BadRequest(404, f"no pipeline {pid!r}")
        if path.endswith(pid):
            return 200, s.pipelines[pid]
        if vid is None:
            return 200, {"pipeline_versions": _filtered(s.versions[pid], query), "total_size": len(s.versions[pid])}
        found = next((v for v in s.versions[pid] if v["pipeline_version_id"] == vid), None)
        if found is None:
            raise BadRequest(404, f"pipeline {pid} has no version {vid!r}")
        return 200, found
    if method == "POST" and path in (f"{V2}/runs", f"{V2}/recurringruns"):
        model = "V2beta1Run" if path.endswith("/runs") else "V2beta1RecurringRun"
        check(body, model)
        if ("pipeline_spec" in body) == ("pipeline_version_reference" in body):
            raise BadRequest(400, f"{model}: exactly one of pipeline_spec and pipeline_version_reference")
        ref = body.get("pipeline_version_reference")
        if ref is not None:
            versions = s.versions.get(ref.get("pipeline_id"), [])
            if not any(v["pipeline_version_id"] == ref.get("pipeline_version_id") for v in versions):
                raise BadRequest(404, f"no pipeline version {ref}")
        if body.get("experiment_id") not in s.experiments:
            raise BadRequest(404, f"no experiment {body.get('experiment_id')!r}")
        if model == "V2beta1Run":
            run = {**body, "run_id": f"run-{len(s.runs) + 1}", "created_at": s.now(), "state": "PENDING"}
            s.runs.append(run)
            return 200, run
        job = {**body, "recurring_run_id": f"rr-{len(s.recurring_runs) + 1}", "created_at": s.now(), "status": "ENABLED"}
        s.recurring_runs.append(job)
        return 200, job
    raise BadRequest(404, f"{method} {path}: not a route of the double")


class KfpApi:
    """`with KfpApi() as api:` serves on `api.host` until the block ends."""

    def __init__(self) -> None:
        self.state = State()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "KfpApi":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> list[tuple[str, str, dict]]:
        return self.state.requests

    def versions(self, pipeline: str) -> list[dict]:
        pid = next((p["pipeline_id"] for p in self.state.pipelines.values() if p["display_name"] == pipeline), None)
        return list(self.state.versions.get(pid, []))

