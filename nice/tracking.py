"""MLflow tracking and registry: one parent run per pipeline run, one child run per step,
models registered as `nice-classifier` / `nice-mask-generator`, alias `champion`.

Models are logged as MLflow pyfunc models whose artifacts are the project's own checkpoint
files, so loading them never unpickles code (`torch.load(weights_only=True)`), and
`models:/nice-mask-generator@champion` resolves to a NICE model directory (`nice.bundle`).
The `nice` package ships with each model (`code/nice`), so `mlflow.pyfunc.load_model` works
where only the pinned third-party requirements are installed.

A training step (`step(..., model=..., dataset=..., splits=...)`) logs its dataset splits as
run inputs, creates its LoggedModel first so that every metric (per epoch and final) is linked
to it, samples system metrics, and tags the registered version with the dataset digest. The
evaluate step (`evaluating`) links its metrics to the evaluated model and the archive it ran on,
and `tag_evaluation` records the gates and savings on the evaluated version.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from nice.paths import nice_home

CLASSIFIER_MODEL = "nice-classifier"
GENERATOR_MODEL = "nice-mask-generator"
CHAMPION = "champion"
EXPERIMENT = "nice"
KFP_RUN_TAG = "kfp.run_id"
STEP_TAG = "nice.step"
# Model-version tags (searchable: `tags.\`nice.dataset_digest\` = '...'`).
DATASET_DIGEST_TAG = "nice.dataset_digest"
DATASET_HASH_TAG = "nice.dataset_content_hash"
DATASET_NAME_TAG = "nice.dataset_name"
GATES_PREFIX = "nice.gates."
SAVINGS_PREFIX = "nice.savings."
EVALUATE_RUN_TAG = "nice.evaluate.run_id"
# Savings metrics copied onto the evaluated version (the ones promotion looks at).
SAVINGS_TAGS = ("bytes_ratio", "saved_bytes", "source_bytes", "output_bytes", "objects", "compressed_fraction",
                "accuracy_source", "accuracy_output", "accuracy_drop_points", "agreement",
                "saving_vs_best_baseline")
# Seconds between system-metric samples (MLflow's default is 10 s; a step shorter than one
# interval records none). MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides.
SYSTEM_METRICS_INTERVAL = 2.0

log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite store under `NICE_HOME`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(nice_home() / 'mlflow.db').resolve()}"


@dataclass
class _StepState:
    """What the open step links to: its run, its LoggedModel, the dataset of its metrics."""

    run_id: str
    model_id: str | None = None
    metric_dataset: Any = None  # a NiceDataset: metrics logged with it show per dataset
    dataset: Any = None  # nice.mlflow_datasets.DatasetInfo of the training data


@dataclass
class Tracker:
    """Where runs go: a tracking URI and an experiment name."""

    uri: str = ""
    experiment: str = EXPERIMENT
    _steps: list[_StepState] = field(default_factory=list, init=False, repr=False)

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
             params: dict[str, Any] | None = None, *, model: str | None = None,
             dataset: str | None = None, splits: dict[str, str] | None = None,
             system_metrics: bool = False) -> Iterator[str]:
        """A child run of the pipeline run (or a top-level run without a KFP run id).

        `model`: the name of the LoggedModel this step produces, created now so that every
        metric of the step is linked to it (`log_model` later fills it in). `dataset` and
        `splits` ({context: split}, e.g. {"train": "train", "val": "val"}): logged as inputs.
        `system_metrics`: CPU/memory/disk/network (and GPU where MLflow can read it) samples."""
        import mlflow

        parent = self.parent_run(kfp_run_id, pipeline) if kfp_run_id else None
        tags = {STEP_TAG: name, **({KFP_RUN_TAG: kfp_run_id} if kfp_run_id else {})}
        log_system = system_metrics and _system_metrics_ready()
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, parent_run_id=parent,
                              nested=parent is not None, tags=tags,
                              # None, not False: a user's global MLflow setting still holds.
                              log_system_metrics=True if log_system else None) as run:
            state = _StepState(run.info.run_id)
            self._steps.append(state)
            try:
                if params:
                    mlflow.log_params({k: _param(v) for k, v in params.items()})
                if dataset is not None:
                    self.log_dataset(dataset, splits or {"train": "train"})
                if model:
                    state.model_id = mlflow.initialize_logged_model(
                        name=model, source_run_id=state.run_id, experiment_id=self.experiment_id,
                        params={k: _param(v) for k, v in (params or {}).items()},
                        tags=_dataset_tags(state.dataset)).model_id
                yield run.info.run_id
                if log_system:
                    _closing_system_sample(run.info.run_id)
            except BaseException:
                if state.model_id:
                    _finalize_failed(state.model_id)
                raise
            finally:
                self._steps.remove(state)

    @property
    def current(self) -> _StepState | None:
        """The innermost open step, if any."""
        return self._steps[-1] if self._steps else None

    @property
    def model_id(self) -> str | None:
        """The LoggedModel the open step's metrics are linked to."""
        return self.current.model_id if self.current else None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Numeric values of `metrics` to the active run, linked to the step's model and dataset."""
        import mlflow

        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            cur = self.current
            mlflow.log_metrics(values, step=step, model_id=cur.model_id if cur else None,
                               dataset=cur.metric_dataset if cur else None)

    def log_dataset(self, dataset: str, splits: dict[str, str]) -> list[Any]:
        """Log each split of a builtin name or Dataset artifact as an input of the active run
        (context = how the step used it); returns the MLflow datasets."""
        import mlflow

        from nice.mlflow_datasets import dataset_info, split_dataset

        info = dataset_info(dataset)
        if self.current:
            self.current.dataset = info
        logged, seen = [], set()
        for context, split in splits.items():
            if split in seen:  # MLflow keeps one input per dataset and run
                continue
            seen.add(split)
            ds = split_dataset(info, split)
            mlflow.log_input(ds, context=context)
            logged.append(ds)
        return logged

    def evaluating(self, model_uri: str | None, source: str, rows: Iterable[dict[str, Any]]) -> str | None:
        """In the evaluate step: link its metrics to the evaluated model (resolved from a
        `models:/` URI) and to the archive it evaluated (logged as an `eval` input).
        Returns the model id, None for a model outside the registry."""
        import mlflow
        from mlflow.entities import LoggedModelInput

        from nice.mlflow_datasets import archive_dataset

        cur = self.current
        ds = archive_dataset(rows, source)
        model_id = model_id_of(self.model_version(model_uri)) if model_uri else None
        mlflow.log_input(ds, context="eval", model=LoggedModelInput(model_id) if model_id else None)
        if cur:
            cur.metric_dataset, cur.model_id = ds, model_id
        return model_id

    def evaluating_model(self, model_uri: str | None, dataset: str | None = None) -> str | None:
        """In an evaluation on a test set (`nice evaluate`): log the test split as an `eval`
        input linked to the evaluated model, and link the step's metrics to that model.
        Returns its model id, None for a model outside the registry."""
        cur = self.current
        model_id = model_id_of(self.model_version(model_uri)) if model_uri else None
        if dataset:
            import mlflow
            from mlflow.entities import LoggedModelInput

            from nice.mlflow_datasets import dataset_info, split_dataset

            try:
                ds = split_dataset(dataset_info(dataset), "test")
            except Exception:  # noqa: BLE001 - a plain labelled folder is no dataset artifact
                log.info("%s: not a builtin or a dataset artifact; no eval input logged", dataset)
            else:
                mlflow.log_input(ds, context="eval", model=LoggedModelInput(model_id) if model_id else None)
                if cur:
                    cur.metric_dataset = ds
        if cur:
            cur.model_id = model_id
        return model_id

    def model_version(self, uri: str) -> Any:
        """The ModelVersion of `models:/NAME/VERSION` or `models:/NAME@ALIAS`; None otherwise."""
        if not str(uri).startswith("models:/"):
            return None
        ref = str(uri)[len("models:/"):].strip("/")
        try:
            if "@" in ref:
                name, alias = ref.split("@", 1)
                return self.client.get_model_version_by_alias(name, alias)
            name, _, version = ref.rpartition("/")
            return self.client.get_model_version(name, version) if name and version.isdigit() else None
        except Exception:  # noqa: BLE001 - no such model, version or alias
            return None

    def tag_evaluation(self, name: str, version: str, gates: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Record on a registered version what its evaluation found: `nice.gates.*` (passed,
        promoted, one line per gate), `nice.savings.*` and the evaluate run."""
        tags = {f"{GATES_PREFIX}{k}": _tag_value(v) for k, v in gates.items() if k != "reasons"}
        tags[f"{GATES_PREFIX}reasons"] = "; ".join(gates.get("reasons") or [])
        tags |= {f"{SAVINGS_PREFIX}{k}": _tag_value(metrics[k]) for k in SAVINGS_TAGS if metrics.get(k) is not None}
        if self.current:
            tags[EVALUATE_RUN_TAG] = self.current.run_id
        for k, v in tags.items():
            self.client.set_model_version_tag(name, str(version), k, v)

    # -- models -----------------------------------------------------------------------
    def log_classifier(self, checkpoint: str | Path, in_channels: int, image_size: int) -> str:
        """Log a classifier checkpoint as a pyfunc model, register it; returns the version."""
        return self._log_pyfunc("classifier", "classifier_model.py", {"checkpoint": str(checkpoint)},
                                CLASSIFIER_MODEL, in_channels, image_size)

    def log_nice_model(self, model_dir: str | Path, in_channels: int, image_size: int) -> str:
        """Log a NICE model directory (generator + its classifier) and register it."""
        return self._log_pyfunc("mask_generator", "mask_generator_model.py", {"nice_model": str(model_dir)},
                                GENERATOR_MODEL, in_channels, image_size)

    def _log_pyfunc(self, name: str, code: str, artifacts: dict[str, str], registered: str, channels: int,
                    size: int) -> str:
        import mlflow.pyfunc

        cur = self.current
        info = mlflow.pyfunc.log_model(name=name, python_model=_code_path(code), artifacts=artifacts,
                                       code_paths=[str(Path(__file__).parent)],
                                       input_example=_example(channels, size), pip_requirements=_requirements(),
                                       registered_model_name=registered, model_id=cur.model_id if cur else None)
        version = str(info.registered_model_version)
        for k, v in _dataset_tags(cur.dataset if cur else None).items():
            self.client.set_model_version_tag(registered, version, k, v)
        return version

    def promote(self, name: str, version: str, alias: str = CHAMPION) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def alias_version(self, name: str, alias: str = CHAMPION) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except Exception:  # noqa: BLE001 - no such model or alias yet
            return None


def model_id_of(version: Any) -> str | None:
    """The LoggedModel id behind a registered ModelVersion (None for none). The SQL store
    leaves `ModelVersion.model_id` empty; the source is then `models:/<model id>`."""
    if version is None:
        return None
    if getattr(version, "model_id", None):
        return str(version.model_id)
    source = str(getattr(version, "source", "") or "")
    if source.startswith("models:/m-") and "/" not in source[len("models:/"):]:
        return source[len("models:/"):]
    return None


def log_epoch_metrics(prefix: str, tracker: Tracker | None = None):  # noqa: ANN201 - an EpochCallback
    """An `on_epoch` callback that logs each epoch's metrics to the active run (through
    `tracker`, linked to the step's model, when given)."""
    import mlflow

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        values = {f"{prefix}{k}": v for k, v in metrics.items()}
        if tracker is not None:
            tracker.log_metrics(values, step=epoch + 1)
        else:
            mlflow.log_metrics({k: float(v) for k, v in values.items() if isinstance(v, (int, float))},
                               step=epoch + 1)
    return on_epoch


def _dataset_tags(info: Any) -> dict[str, str]:
    if info is None:
        return {}
    return {DATASET_DIGEST_TAG: info.digest, DATASET_HASH_TAG: info.content_hash, DATASET_NAME_TAG: info.name}


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return _param(value)


def _finalize_failed(model_id: str) -> None:
    # A step that fails before log_model leaves no PENDING model behind.
    import mlflow

    try:
        if mlflow.get_logged_model(model_id).status != "READY":
            mlflow.finalize_logged_model(model_id, "FAILED")
    except Exception:  # noqa: BLE001 - the step's own error is the one to report
        log.warning("could not mark LoggedModel %s as failed", model_id, exc_info=True)


def _system_metrics_ready() -> bool:
    """MLflow samples system metrics with psutil; without it a step runs unmonitored."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.warning("psutil is not installed: no system metrics for this step (pip install psutil)")
        return False
    import mlflow

    if not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL)
    return True


def _closing_system_sample(run_id: str) -> None:
    """One system-metrics sample at the end of a step the monitor never published for: MLflow's
    monitor publishes only after a full sampling interval, so a step shorter than that (or one
    it was waiting through when the run ended) would have no system metrics at all."""
    import mlflow
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    try:
        if any(k.startswith("system/") for k in mlflow.get_run(run_id).data.metrics):
            return
        monitor = SystemMetricsMonitor(run_id)
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception:  # noqa: BLE001 - monitoring must never fail the step it watches
        log.warning("could not log a closing system-metrics sample for run %s", run_id, exc_info=True)


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _example(channels: int, size: int) -> np.ndarray:
    size = size or 64
    shape = (1, size, size) if channels == 1 else (1, size, size, 3)
    return np.zeros(shape, dtype=np.uint8)


MODEL_REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "mlflow")


def _requirements() -> list[str]:
    # Explicit, so logging never spawns a subprocess to infer them. Third-party packages only:
    # the project's own code ships with the model (code_paths), no index serves it.
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in MODEL_REQUIREMENTS]


def _artifact_root(uri: str) -> str | None:
    """Artifacts next to a SQLite store (not in whatever directory a step happens to run in)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides (--artifacts-destination)


def _code_path(name: str) -> str:
    # Models from code: the file is stored with the model and run at load time (no pickles).
    return str(Path(__file__).parent / "mlflow_code" / name)
