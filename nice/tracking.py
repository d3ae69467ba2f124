"""MLflow tracking and registry: one parent run per pipeline run, one child run per step,
models registered as `nice-classifier` / `nice-mask-generator`, alias `champion`.

Models are logged as MLflow pyfunc models whose artifacts are the project's own checkpoint
files, so loading them never unpickles code (`torch.load(weights_only=True)`), and
`models:/nice-mask-generator@champion` resolves to a NICE model directory (`nice.bundle`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nice.paths import nice_home

CLASSIFIER_MODEL = "nice-classifier"
GENERATOR_MODEL = "nice-mask-generator"
CHAMPION = "champion"
EXPERIMENT = "nice"
KFP_RUN_TAG = "kfp.run_id"
STEP_TAG = "nice.step"


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite store under `NICE_HOME`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(nice_home() / 'mlflow.db').resolve()}"


@dataclass
class Tracker:
    """Where runs go: a tracking URI and an experiment name."""

    uri: str = ""
    experiment: str = EXPERIMENT

    def __post_init__(self) -> None:
        import mlflow

        self.uri = self.uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        exp = mlflow.get_experiment_by_name(self.experiment)
        self.experiment_id = exp.experiment_id if exp else mlflow.create_experiment(
            self.experiment, artifact_location=_artifact_root(self.uri))

    @property
    def client(self):  # noqa: ANN201 - mlflow.MlflowClient, imported lazily
        import mlflow

        return mlflow.MlflowClient(self.uri)

    def parent_run(self, kfp_run_id: str, pipeline: str = "") -> str:
        """The parent run for a pipeline run, created by whichever step asks first."""
        found = self.client.search_runs([self.experiment_id], f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}' "
                                        f"and tags.`{STEP_TAG}` = 'pipeline'", max_results=1)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=f"{pipeline or 'pipeline'} {kfp_run_id[:8]}",
                                     tags={KFP_RUN_TAG: kfp_run_id, STEP_TAG: "pipeline",
                                           "nice.pipeline": pipeline})
        return run.info.run_id

    def finish_parent(self, parent_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(parent_id, status)

    @contextlib.contextmanager
    def step(self, name: str, kfp_run_id: str = "", pipeline: str = "",
             params: dict[str, Any] | None = None) -> Iterator[str]:
        """A child run of the pipeline run (or a top-level run without a KFP run id)."""
        import mlflow

        parent = self.parent_run(kfp_run_id, pipeline) if kfp_run_id else None
        tags = {STEP_TAG: name, **({KFP_RUN_TAG: kfp_run_id} if kfp_run_id else {})}
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, parent_run_id=parent,
                              nested=parent is not None, tags=tags) as run:
            if params:
                mlflow.log_params({k: _param(v) for k, v in params.items()})
            yield run.info.run_id

    # -- models -----------------------------------------------------------------------
    def log_classifier(self, checkpoint: str | Path, in_channels: int, image_size: int) -> str:
        """Log a classifier checkpoint as a pyfunc model, register it; returns the version."""
        return _log_pyfunc("classifier", "classifier_model.py", {"checkpoint": str(checkpoint)},
                           CLASSIFIER_MODEL, in_channels, image_size)

    def log_nice_model(self, model_dir: str | Path, in_channels: int, image_size: int) -> str:
        """Log a NICE model directory (generator + its classifier) and register it."""
        return _log_pyfunc("mask_generator", "mask_generator_model.py", {"nice_model": str(model_dir)},
                           GENERATOR_MODEL, in_channels, image_size)

    def promote(self, name: str, version: str, alias: str = CHAMPION) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def alias_version(self, name: str, alias: str = CHAMPION) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception:  # noqa: BLE001 - no such model or alias yet
            return None


def _log_pyfunc(name: str, code: str, artifacts: dict[str, str], registered: str, channels: int, size: int) -> str:
    import mlflow.pyfunc

    info = mlflow.pyfunc.log_model(name=name, python_model=_code_path(code), artifacts=artifacts,
                                   input_example=_example(channels, size), pip_requirements=_requirements(),
                                   registered_model_name=registered)
    return str(info.registered_model_version)


def log_epoch_metrics(prefix: str):  # noqa: ANN201 - an EpochCallback
    """An `on_epoch` callback that logs each epoch's metrics to the active run."""
    import mlflow

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float))}, step=epoch + 1)
    return on_epoch


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _example(channels: int, size: int) -> np.ndarray:
    size = size or 64
    shape = (1, size, size) if channels == 1 else (1, size, size, 3)
    return np.zeros(shape, dtype=np.uint8)


def _requirements() -> list[str]:
    # Explicit, so logging never spawns a subprocess to infer them.
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "numpy", "pillow", "mlflow")] + ["nice-pipeline"]


def _artifact_root(uri: str) -> str | None:
    """Artifacts next to a SQLite store (not in whatever directory a step happens to run in)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides (--artifacts-destination)


def _code_path(name: str) -> str:
    # Models from code: the file is stored with the model and run at load time (no pickles).
    return str(Path(__file__).parent / "mlflow_code" / name)
