"""Cluster settings of the compiled pipelines: the run's service account, where the GPU step
may schedule, and every step's retry policy and timeout.

They are Kubernetes/KFP concerns, so they live here and not in `NiceConfig` (the library's
config, which decides outputs). `nice pipeline compile|upload|submit|schedule --settings FILE`
reads a JSON object of overrides; what a file does not name keeps the default below
(docs/operations.md lists them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# Seconds a step's pod may run (its `activeDeadlineSeconds`, per attempt).
DEFAULT_TIMEOUTS: dict[str, int] = {
    "source-fingerprint": 1800, "ingest": 4 * 3600, "train-classifier": 6 * 3600,
    "train-mask-generator": 12 * 3600, "compress-archive": 24 * 3600, "evaluate": 4 * 3600,
    "plan-recompress": 3600, "compress-shard": 2 * 3600, "finish-recompress": 2 * 3600,
    "finalize-tracking": 600,
}
_OPERATORS = ("Exists", "Equal")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute", None)


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"

    def __post_init__(self) -> None:
        if self.operator not in _OPERATORS:
            raise ValueError(f"toleration {self.key!r}: operator must be one of {_OPERATORS}, not {self.operator!r}")
        if self.effect not in _EFFECTS:
            raise ValueError(f"toleration {self.key!r}: effect must be one of {_EFFECTS[:-1]} or null")
        if (self.operator == "Exists") == (self.value is not None):
            raise ValueError(f"toleration {self.key!r}: a value goes with operator Equal (and only with it)")


@dataclass(frozen=True)
class GpuSettings:
    """The mask-generator training step: one accelerator, on a GPU node."""

    accelerator: str = "nvidia.com/gpu"
    count: int = 1
    # The label NVIDIA GPU Feature Discovery (GPU operator) puts on GPU nodes; `{}` drops it.
    node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    # GPU node pools are commonly tainted `nvidia.com/gpu[=...]:NoSchedule`.
    tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)


@dataclass(frozen=True)
class RetrySettings:
    """KFP retry policy of every step (each touches MLflow, most S3): exponential back-off."""

    retries: int = 3
    backoff: str = "30s"  # before the first retry
    factor: float = 2.0  # 30 s, 60 s, 120 s, ...
    max_duration: str = "3600s"  # no retry starts after this long

    def __post_init__(self) -> None:
        if self.retries < 0 or self.factor < 1:
            raise ValueError(f"retry: retries must be >= 0 and factor >= 1, got {self.retries} and {self.factor}")
        for name in ("backoff", "max_duration"):
            value = getattr(self, name)
            if not (isinstance(value, str) and value.endswith("s") and value[:-1].isdigit()):
                raise ValueError(f"retry.{name}: a duration in seconds such as '30s', not {value!r}")


@dataclass(frozen=True)
class PipelineSettings:
    # Runs and recurring runs are created under this Kubernetes service account
    # (manifests/base/rbac.yaml); "" leaves it to the KFP server (its default-editor).
    service_account: str = "nice-pipeline"
    gpu: GpuSettings = field(default_factory=GpuSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    timeouts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))

    def timeout(self, step: str) -> int:
        return self.timeouts[step]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = PipelineSettings()


def _section(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"settings {where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"settings {where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return data


def settings_from_dict(data: dict[str, Any], base: PipelineSettings = DEFAULT) -> PipelineSettings:
    """`base` with the overrides in `data` (each section merged, unknown keys refused)."""
    data = _section(PipelineSettings, data, "file")
    out: dict[str, Any] = {}
    try:
        if "service_account" in data:
            if not isinstance(data["service_account"], str):
                raise ValueError("settings service_account: a string")
            out["service_account"] = data["service_account"]
        if "gpu" in data:
            gpu = dict(_section(GpuSettings, data["gpu"], "gpu"))
            if "tolerations" in gpu:
                gpu["tolerations"] = tuple(Toleration(**_section(Toleration, t, "gpu.tolerations[]"))
                                           for t in gpu["tolerations"])
            if "node_selector" in gpu:
                sel = gpu["node_selector"]
                if not isinstance(sel, dict) or not all(isinstance(v, str) for v in sel.values()):
                    raise ValueError("settings gpu.node_selector: an object of label: string value")
            out["gpu"] = replace(base.gpu, **gpu)
        if "retry" in data:
            out["retry"] = replace(base.retry, **_section(RetrySettings, data["retry"], "retry"))
        if "timeouts" in data:
            given = data["timeouts"]
            if not isinstance(given, dict):
                raise ValueError("settings timeouts: an object of step name: seconds")
            unknown = sorted(set(given) - set(DEFAULT_TIMEOUTS))
            if unknown:
                raise ValueError(f"settings timeouts: unknown step(s) {unknown}; steps: {sorted(DEFAULT_TIMEOUTS)}")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in given.values()):
                raise ValueError("settings timeouts: whole seconds > 0 per step")
            out["timeouts"] = {**base.timeouts, **given}
    except TypeError as exc:  # a wrongly shaped section (e.g. a toleration without `key`)
        raise ValueError(f"settings: {exc}") from None
    return replace(base, **out)


def read_settings(path: str | Path | None) -> PipelineSettings:
    """A `--settings` file (JSON object of overrides); None gives the defaults."""
    if path is None:
        return DEFAULT
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--settings {path}: not JSON ({exc})") from None
    return settings_from_dict(data)
