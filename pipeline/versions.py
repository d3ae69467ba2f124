"""Pipelines and pipeline versions on a KFP server, one version per distinct compiled spec.

A version is named `<pipeline>-<first 12 hex of the spec's SHA-256>` (DNS-1123 safe, so it
also works with KFP's Kubernetes-native API mode) and carries `sha256:<digest>` as its
description. Uploading looks the name up first, so the same spec uploaded twice is one
version and a changed spec (code, images or settings) is a new one.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.settings import DEFAULT, PipelineSettings

DESCRIPTIONS = {
    "train-and-compress": "NICE: ingest, train classifier and mask generator, compress an archive, evaluate, promote.",
    "recompress": "NICE: recompress what is new or changed in an archive with the champion models.",
}


@dataclass(frozen=True)
class VersionRef:
    pipeline: str
    pipeline_id: str
    version_id: str
    version_name: str
    created: bool = False  # uploaded by this call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_digest(package: str | Path) -> str:
    """SHA-256 of a compiled package's YAML documents, canonicalised (key order and
    formatting do not count)."""
    docs = [d for d in yaml.safe_load_all(Path(package).read_text()) if d is not None]
    return hashlib.sha256(json.dumps(docs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def version_name(pipeline: str, digest: str) -> str:
    return f"{pipeline}-{digest[:12]}"


def _equals(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def find_version(kfp_client: Any, pipeline_id: str, name: str) -> Any | None:
    """The version of `pipeline_id` called `name`, if any."""
    found = kfp_client.list_pipeline_versions(pipeline_id, page_size=100, filter=_equals("display_name", name))
    # The filter narrows the list; the names are checked here too.
    return next((v for v in found.pipeline_versions or [] if v.display_name == name), None)


def upload(kfp_client: Any, name: str, settings: PipelineSettings = DEFAULT) -> VersionRef:
    """Create pipeline `name` if missing and a version for this checkout's compiled spec
    unless one with the same digest exists."""
    from pipeline.remote import compile_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(name, Path(tmp) / f"{name}.yaml", settings)
        digest = spec_digest(package)
        vname = version_name(name, digest)
        pipeline_id = kfp_client.get_pipeline_id(name)
        if pipeline_id is None:
            # An empty pipeline, then the version: `upload_pipeline` would name the first
            # version after the pipeline, with no digest to find it by.
            models = kfp_client.api_models
            made = kfp_client.pipelines.pipeline_service_create_pipeline(
                pipeline=models.V2beta1Pipeline(display_name=name, description=DESCRIPTIONS.get(name, "")))
            pipeline_id = made.pipeline_id
        existing = find_version(kfp_client, pipeline_id, vname)
        if existing is not None:
            return VersionRef(name, pipeline_id, existing.pipeline_version_id, vname)
        made = kfp_client.upload_pipeline_version(str(package), pipeline_version_name=vname,
                                                  pipeline_id=pipeline_id, description=f"sha256:{digest}")
    return VersionRef(name, pipeline_id, made.pipeline_version_id, vname, created=True)


def resolve_version(kfp_client: Any, name: str, version: str, host: str,
                    settings: PipelineSettings = DEFAULT) -> VersionRef:
    """`current` (upload this checkout's spec if new), `latest` (the newest version on the
    server) or a version id of pipeline `name`."""
    from pipeline.remote import RemoteError

    if version == "current":
        return upload(kfp_client, name, settings)
    pipeline_id = kfp_client.get_pipeline_id(name)
    if pipeline_id is None:
        raise RemoteError(f"no pipeline {name!r} at {host}: run `nice pipeline upload {name} --host {host}` first")
    if version == "latest":
        found = kfp_client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        if not found.pipeline_versions:
            raise RemoteError(f"pipeline {name!r} at {host} has no versions: run `nice pipeline upload {name}`")
        v = found.pipeline_versions[0]
        return VersionRef(name, pipeline_id, v.pipeline_version_id, v.display_name)
    from kfp_server_api.exceptions import ApiException

    try:
        v = kfp_client.get_pipeline_version(pipeline_id, version)
    except ApiException as exc:
        if exc.status == 404:
            raise RemoteError(f"pipeline {name!r} at {host} has no version {version!r} "
                              f"(use `latest`, `current` or an id from the KFP UI)") from None
        raise
    return VersionRef(name, pipeline_id, v.pipeline_version_id, v.display_name)
