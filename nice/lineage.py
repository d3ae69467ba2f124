"""Which model made a stored file: the resolved registry version, its MLflow run and a digest
of the weights, recorded in every savings row and on every stored object.

An alias (`models:/nice-mask-generator@champion`) is resolved to its version once, when the
model is opened, and that version is downloaded and recorded: once the alias moves, the rows
still say which model made each file. The digest is of the weights only (both networks' state
dicts, names, dtypes, shapes and bytes), so the same weights give the same digest whether they
come from a model directory, an MLflow download or memory; the archive's idempotency key
includes it (an output from another model is not "done").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

import torch

DIGEST_CHARS = 16


@dataclass(frozen=True)
class Lineage:
    uri: str  # models:/<name>/<version> when registered, else the model directory
    run_id: str = ""  # the MLflow run that logged the model ("" for a plain directory)
    digest: str = ""  # weights_digest of both networks

    def metadata(self) -> dict[str, str]:
        """Object metadata (S3 user metadata is ASCII)."""
        return {"nice-model-uri": _ascii(self.uri), "nice-model-run-id": self.run_id,
                "nice-model-digest": self.digest}


def weights_digest(*states: Mapping[str, torch.Tensor]) -> str:
    """A short sha256 of state dicts (sorted names, dtype, shape and raw bytes)."""
    h = hashlib.sha256()
    for state in states:
        for name in sorted(state):
            t = state[name]
            if not isinstance(t, torch.Tensor):
                continue
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            # reshape(-1): a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        h.update(b"\x00")  # network boundary
    return h.hexdigest()[:DIGEST_CHARS]


def resolve_registered(uri: str) -> tuple[str, str]:
    """`models:/name@alias`, `models:/name/latest` or `models:/name/<version>` -> the version's
    URI (`models:/name/<version>`) and its run id; other URIs (`runs:/...`) come back as they are
    with the run id they name."""
    if uri.startswith("runs:/"):
        return uri, uri[len("runs:/"):].split("/", 1)[0]
    if not uri.startswith("models:/"):
        return uri, ""
    import mlflow

    client = mlflow.MlflowClient()
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = rest.partition("/")
        if version in ("", "latest"):
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise FileNotFoundError(f"{uri}: no versions of registered model {name!r}")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, version)
    return f"models:/{mv.name}/{mv.version}", mv.run_id or ""


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")
