"""The pipeline's steps as plain library functions (the CLI and the Kubeflow components are
thin callers): each takes paths and one NiceConfig, does its work, logs to MLflow when a
Tracker is given, and returns a small JSON-able dict."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from nice.config import NiceConfig, colour_default, merge_overrides

if TYPE_CHECKING:
    from nice.bundle import ModelRef, NiceModel
    from nice.compress.archive import ArchiveRun

log = logging.getLogger(__name__)


@dataclass
class StepContext:
    """Where a step reports: an MLflow Tracker (or none) and the pipeline run it belongs to."""

    tracker: Any = None  # nice.tracking.Tracker; Any so that nice.jobs imports without mlflow
    kfp_run_id: str = ""
    pipeline: str = ""
    progress: bool = True

    @contextlib.contextmanager
    def step(self, name: str, params: dict[str, Any] | None = None, **tracking: Any) -> Iterator[str | None]:
        """`tracking`: nice.tracking.Tracker.step's model / dataset / splits / system_metrics."""
        if self.tracker is None:
            yield None
            return
        with self.tracker.step(name, self.kfp_run_id, self.pipeline, params, **tracking) as run_id:
            yield run_id

    def log_metrics(self, metrics: dict[str, Any], prefix: str = "") -> None:
        if self.tracker is not None:
            self.tracker.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()})

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.tracker is not None:
            import mlflow

            mlflow.log_artifact(str(path), folder)

    def epoch_logger(self, prefix: str):  # noqa: ANN201 - EpochCallback | None
        if self.tracker is None:
            return None
        from nice.tracking import log_epoch_metrics

        return log_epoch_metrics(prefix, self.tracker)

    def evaluating(self, model_uri: str | None, source: str, rows: list[dict[str, Any]],
                   versions: dict[str, str | None] | None = None, benchmark: dict[str, Any] | None = None) -> None:
        """Link the open evaluate step's metrics to the evaluated model and archive; the
        benchmark's test split (when one ran) is an input too."""
        if self.tracker is not None:
            from nice.tracking import GENERATOR_MODEL

            if (versions or {}).get("generator") and not self.tracker.model_version(model_uri or ""):
                model_uri = f"models:/{GENERATOR_MODEL}/{versions['generator']}"
            if benchmark and benchmark.get("dataset"):
                self.tracker.log_dataset(str(benchmark["dataset"]), {"test": "test"})
            self.tracker.evaluating(model_uri, source, rows)

    def evaluating_model(self, model_uri: str | None, dataset: str | None = None) -> None:
        """Link the open step's metrics to the evaluated model and its test split."""
        if self.tracker is not None:
            self.tracker.evaluating_model(model_uri, dataset)

    def tag_evaluation(self, versions: dict[str, str | None] | None, gates: dict[str, Any],
                       metrics: dict[str, Any]) -> None:
        """Gates and savings as tags on the registered versions that were evaluated."""
        if self.tracker is not None:
            from nice.tracking import CLASSIFIER_MODEL, GENERATOR_MODEL

            for key, name in (("generator", GENERATOR_MODEL), ("classifier", CLASSIFIER_MODEL)):
                if (versions or {}).get(key):
                    self.tracker.tag_evaluation(name, str(versions[key]), gates, metrics)


def base_config(channels: int, overrides: dict[str, Any] | None = None) -> NiceConfig:
    """Grey sources get the MNIST defaults, colour sources the colour ones for the classifier's
    view and architecture (as the overrides set them); then overrides."""
    if channels != 3:
        return NiceConfig().with_overrides(overrides)
    c = colour_default().with_overrides(overrides).classifier
    return colour_default(c.image_size, c.arch).with_overrides(overrides)


def ingest_step(source: str, out: str | Path, ctx: StepContext | None = None, **options: Any) -> dict[str, Any]:
    """Build a Dataset artifact at `out`; `options` are `nice.ingest.IngestOptions` fields."""
    from nice.ingest import IngestOptions, ingest

    ctx = ctx or StepContext()
    opts = IngestOptions(**{"progress": ctx.progress, **options})
    with ctx.step("ingest", {"source": source, **options}):
        art = ingest(source, out, opts)
        m = art.manifest
        counts = m["counts"]
        ctx.log_metrics({f"images_{split}": n for split, n in counts.items()}
                        | {"rejects": len(m.get("rejects") or []) if isinstance(m.get("rejects"), list)
                           else m.get("rejects", 0) or 0})
        ctx.log_artifact(art.path / "manifest.json", "dataset")
    return {"path": str(art.path), "name": m.get("name"), "source": m.get("source"),
            "content_hash": m["content_hash"], "counts": counts, "class_names": m["class_names"],
            "channels": m["channels"], "rejects": m.get("rejects"), "duplicates": m.get("duplicates")}


def dataset_images(dataset: str) -> tuple[int, set[tuple[int, int]]]:
    """(channels, the set of (width, height) of its images) of a builtin name or an artifact,
    from the artifact's metadata columns (no image is decoded)."""
    from nice.data.sources import BUILTIN
    from nice.ingest import DatasetArtifact

    if dataset in BUILTIN:
        return 1, {(28, 28)}
    art = DatasetArtifact.open(dataset)
    return art.channels, art.image_sizes()


def check_dataset_fits(cfg: NiceConfig, dataset: str, channels: int, sizes: set[tuple[int, int]],
                       what: str) -> None:
    """Refuse, in one sentence, a dataset the classifier of `cfg` cannot take (rather than a
    tensor shape error deep inside training). Any image size is valid: the classifier sees
    each image through its view; only a legacy model without a view needs one size."""
    c = cfg.classifier
    if channels != c.in_channels:
        kind = {1: "grey (1 channel)", 3: "colour (3 channels)"}
        raise ValueError(f"dataset {dataset} is {kind.get(channels, f'{channels}-channel')} but {what} takes "
                         f"{kind.get(c.in_channels, f'{c.in_channels} channels')}: use the data it was trained on")
    if not c.image_size and len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise ValueError(f"dataset {dataset} has images of {len(sizes)} sizes ({w1}x{h1}, {w2}x{h2}, ...) but "
                         f"{what} has no view (a model from an older version): train a new classifier")


def view_size_for(sizes: set[tuple[int, int]], cap: int = 224) -> int:
    """The view of a classifier trained with image_size 0: the dataset's largest side (its
    own size for a one-size dataset), at most `cap`."""
    return min(cap, max((max(w, h) for w, h in sizes), default=64))


def train_classifier_step(dataset: str, out: str | Path, overrides: dict[str, Any] | None = None,
                          ctx: StepContext | None = None, weights: str | None = None) -> dict[str, Any]:
    """Train on a dataset artifact (or a builtin name); test accuracy on the held-out split.
    `weights`: the user's own weights file for `classifier.arch` (loaded with
    weights_only=True), fine-tuned for `train_classifier.epochs` (0: used as it is).
    A scenes artifact trains with the scenes recipe (`nice.data.scenes.TRAINING_OVERRIDES`, the
    object-scale curriculum on scenes rendered from its generator) under `overrides`."""
    from nice.checkpoint import save_checkpoint
    from nice.data.arrays import ViewCache, make_loader
    from nice.data.scenes import scenes_source
    from nice.data.sources import BUILTIN, training_data
    from nice.device import configure_threads
    from nice.ingest import DatasetArtifact
    from nice.models import build_classifier
    from nice.models.classifiers import load_user_weights
    from nice.training.classifier import train_classifier
    from nice.training.common import accuracy
    from nice.view import Augment, View

    ctx = ctx or StepContext()
    configure_threads()
    channels, sizes = dataset_images(dataset)
    scenes = scenes_source(dataset)
    if scenes:
        from nice.data.scenes import TRAINING_OVERRIDES

        overrides = merge_overrides(TRAINING_OVERRIDES, overrides or {})
    cfg = base_config(channels, overrides)
    if not cfg.classifier.image_size:  # the defaults depend on the view: chosen with it
        cfg = base_config(channels, merge_overrides(overrides or {}, {"classifier": {"image_size": view_size_for(sizes)}}))
    cfg.classifier.in_channels = channels
    check_dataset_fits(cfg, dataset, channels, sizes, "the classifier")
    curriculum = cfg.train_classifier.curriculum
    if curriculum.crop and not scenes:
        raise ValueError(f"train_classifier.curriculum needs each object's box, which only a scenes artifact "
                         f"(nice ingest scenes) has; {dataset} is not one: set curriculum.crop to 0")
    view = View(cfg.classifier)
    if curriculum.crop:  # trains on rendered scenes: only the val split's views are read
        art = DatasetArtifact.open(dataset)
        names, channels = art.class_names, art.channels
        val = ViewCache(art.dataset("val" if art.manifest["counts"].get("val") else "test", view=view),
                        "val views", progress=ctx.progress)
    else:
        train, val, names, channels = training_data(dataset, view=view, augment=Augment.of(view, cfg.train_classifier))
    cfg.classifier.num_classes = len(names)
    initial = None
    if weights:
        initial = build_classifier(cfg.classifier)
        load_user_weights(initial, weights)
    with ctx.step("train-classifier", {"dataset": dataset, **_flat(cfg.classifier, "classifier."),
                                       **_flat(cfg.train_classifier, "train."),
                                       **({"weights": Path(weights).name} if weights else {})},
                  model="classifier", dataset=dataset, splits=training_splits(dataset, test=True),
                  system_metrics=True) as run_id:
        if curriculum.crop:
            from nice.data.scene_views import render_train_views
            from nice.training.curriculum import train_curriculum

            variant, seed = scenes
            views = render_train_views(variant, curriculum.views, cfg.classifier, seed, names,
                                       curriculum.backgrounds, curriculum.workers, ctx.progress,
                                       curriculum.extra_photos)
            res = train_curriculum(cfg, views, val, on_epoch=ctx.epoch_logger("stage_"), progress=ctx.progress,
                                   initial=initial)
            del views
        else:
            res = train_classifier(cfg, train, val, on_epoch=ctx.epoch_logger("epoch_"), progress=ctx.progress,
                                   initial=initial)
        final: dict[str, Any] = dict(res.final)
        if dataset not in BUILTIN:
            # Artifacts validate on `val` during training; report the held-out test split too.
            test = DatasetArtifact.open(dataset).dataset("test", view=view)
            final = {"val_accuracy": final.pop("test_accuracy"), **final,
                     "test_accuracy": accuracy(res.model, make_loader(test, 512, False), torch.device("cpu"))}
        save_checkpoint(out, "classifier", res.model, cfg, {**final, "class_names": names})
        ctx.log_metrics(final)
        version = None
        if ctx.tracker is not None:
            version = ctx.tracker.log_classifier(out, channels, cfg.classifier.image_size)
    return {"checkpoint": str(out), "metrics": final, "config": cfg.to_dict(), "class_names": names,
            "registered_version": version, "mlflow_run_id": run_id}


def check_generator_overrides(cfg: NiceConfig, overrides: dict[str, Any] | None) -> None:
    """A setting of the conv generator asked for where the generator is another one is an
    error, not ignored: ResNet colour classifiers default to the `features` generator, so the
    throughput recipe's `--pre-pool 8` needs `--generator conv` with it."""
    given = (overrides or {}).get("generator") or {}
    if "pre_pool" in given and cfg.generator.arch != "conv":
        raise ValueError(f"generator.pre_pool is a setting of the conv generator, but this model's generator is "
                         f"{cfg.generator.arch!r} (a ResNet colour classifier's default): add --generator conv")


def behind_the_default(cfg: NiceConfig) -> list[str]:
    """The generator settings of `cfg` (a classifier checkpoint's config with the overrides) that
    differ from what this version's default gives a classifier like its one: a checkpoint records
    the concrete settings of the version that trained it, so after an upgrade the new generator
    and teacher defaults apply only when asked for. Listed so the job can say so."""
    default = base_config(cfg.classifier.in_channels, {"classifier": asdict(cfg.classifier)})
    behind = []
    if cfg.generator.arch != default.generator.arch:
        behind.append(f"generator.arch {cfg.generator.arch!r} (default now {default.generator.arch!r})")
    if cfg.train_generator.teacher != default.train_generator.teacher:
        behind.append(f"train_generator.teacher {cfg.train_generator.teacher!r} "
                      f"(default now {default.train_generator.teacher!r})")
    if cfg.train_generator.greedy_steps != default.train_generator.greedy_steps:
        behind.append(f"train_generator.greedy_steps {cfg.train_generator.greedy_steps} "
                      f"(default now {default.train_generator.greedy_steps})")
    return behind


def train_mask_generator_step(dataset: str, classifier: str | Path, out: str | Path,
                              overrides: dict[str, Any] | None = None,
                              ctx: StepContext | None = None) -> dict[str, Any]:
    """Train the generator against the frozen classifier; write a NICE model directory."""
    from nice.bundle import NiceModel
    from nice.checkpoint import load_classifier
    from nice.data.sources import training_data
    from nice.device import configure_threads
    from nice.training.phases import train_phases
    from nice.view import View

    ctx = ctx or StepContext()
    configure_threads()
    clf, clf_cfg, _ = load_classifier(classifier)
    # The classifier's config is the base (architecture, gates, mixing); overrides on top.
    cfg = clf_cfg.with_overrides(overrides)
    if cfg.classifier != clf_cfg.classifier:
        raise ValueError(f"overrides change the classifier section, but {classifier} is trained already: "
                         "train a new classifier for other classifier settings")
    check_generator_overrides(cfg, overrides)
    behind = behind_the_default(cfg)
    if behind:
        log.warning("the classifier %s records settings of the version that trained it: %s; --config to use the "
                    "current defaults", classifier, "; ".join(behind))
    channels, sizes = dataset_images(dataset)
    check_dataset_fits(cfg, dataset, channels, sizes, f"the classifier {classifier}")
    train, val, names, channels = training_data(dataset, view=View.of(cfg.classifier))
    if len(names) != cfg.classifier.num_classes:
        raise ValueError(f"dataset {dataset} has {len(names)} classes but the classifier {classifier} "
                         f"was trained on {cfg.classifier.num_classes}: use the data it was trained on")
    with ctx.step("train-mask-generator", {"dataset": dataset, **_flat(cfg.gates, "gates."),
                                           **_flat(cfg.mixing, "mixing."), **_flat(cfg.generator, "generator."),
                                           **_flat(cfg.train_generator, "train.")},
                  model="mask_generator", dataset=dataset, splits=training_splits(dataset), system_metrics=True) as run_id:
        done = train_phases(cfg, clf, train, val, epoch_logger=ctx.epoch_logger, progress=ctx.progress)
        final = done.final
        nice_model = NiceModel(done.classifier, done.generator, cfg, class_names=names)
        nice_model.save(out, final)
        ctx.log_metrics(final)
        version = None
        if ctx.tracker is not None:
            version = ctx.tracker.log_nice_model(out, channels, cfg.classifier.image_size)
            _log_mask_grid(ctx, nice_model, val)
    return {"model_dir": str(out), "metrics": final, "config": cfg.to_dict(),
            "registered_version": version, "mlflow_run_id": run_id}


def evaluate_step(model: Any, dataset: str, out: str | Path, ctx: StepContext | None = None,
                  limit: int | None = 2000, explain_limit: int = 500,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`nice evaluate` as a step: the benchmark on a test set, its reports, and (tracked) its
    rate and explanation metrics and tables in an `evaluate` run linked to the model.
    `overrides` (`--config`) change how the model compresses (search, codec, mixing, guard),
    as they do for `nice compress`; the networks' own sections cannot change."""
    from nice.data.sources import BUILTIN
    from nice.evaluate.suite import evaluate_model
    from nice.evaluate.tracked import log_benchmark

    ctx = ctx or StepContext()
    params = {"model": model.uri, "dataset": dataset, "limit": limit or 0, "explain_limit": explain_limit}
    if overrides:
        cfg = model.config.with_overrides(overrides)
        fixed = [k for k in ("classifier", "generator", "gates") if getattr(cfg, k) != getattr(model.config, k)]
        if fixed:
            raise ValueError(f"--config changes the {', '.join(fixed)} section of a trained model: "
                             "only how it compresses can change at evaluation")
        model = replace(model, config=cfg)
        params["overrides"] = json.dumps(overrides, sort_keys=True)
    if dataset in BUILTIN or (Path(dataset) / "manifest.json").is_file():  # a labelled folder has no metadata
        channels, sizes = dataset_images(dataset)
        check_dataset_fits(model.config, dataset, channels, sizes, f"the model {model.uri}")
    with ctx.step("evaluate", params) as run_id:
        ctx.evaluating_model(model.uri, dataset)
        res = evaluate_model(model, dataset, out, limit=limit, explain_limit=explain_limit, progress=ctx.progress)
        log_benchmark(ctx, res)
        for key in ("report_html", "report_md"):
            ctx.log_artifact(res[key], "benchmark")
    return res | {"mlflow_run_id": run_id}


def archive_run(source: str | Path, destination: str | Path, model: "str | Path | NiceModel | ModelRef",
                overrides: dict[str, Any] | None = None, *, model_uri: str | None = None,
                endpoint_url: str | None = None, **options: Any) -> "ArchiveRun":
    """The one way a job sets up an archive run (`compress`, `compress-folder`, the pipeline's
    compress-archive and each recompress step): stores opened, the model resolved *without*
    its networks (a ModelRef: they load when a shard is processed, so plan and finish never
    build them), `overrides` merged onto the model's config; `options` are ArchiveOptions."""
    from nice.bundle import ModelRef, NiceModel, resolve_model_ref
    from nice.compress.archive import ArchiveOptions, ArchiveRun
    from nice.storage import open_store

    from nice.lineage import resolve_registered

    src, dst = open_store(source, endpoint_url), open_store(destination, endpoint_url)
    if isinstance(model, (str, Path)) and options.get("run_id"):
        # The shards and the finish of a planned run use the version the plan resolved, even
        # if the alias moved in between.
        planned = planned_model(dst, options["run_id"])
        if planned and str(model).startswith("models:/"):
            model = planned
    ref = model if isinstance(model, (NiceModel, ModelRef)) else resolve_model_ref(model)
    if model_uri:
        # Rows record the registry version, not a temporary download path (nor an alias).
        try:
            ref.uri, ref.run_id = resolve_registered(model_uri)
        except Exception:  # noqa: BLE001 - registry unreachable: record what was given
            ref.uri = model_uri
    return ArchiveRun(src, dst, ref, ref.config.with_overrides(overrides), ArchiveOptions(**options))


def planned_model(dst: Any, run_id: str) -> str | None:
    """The registry version a planned archive run resolved (its manifest), if any."""
    from nice.compress.archive import META, _get_json

    uri = (_get_json(dst, f"{META}/runs/{run_id}/manifest.json") or {}).get("model_uri") or ""
    return uri if uri.startswith("models:/") else None


def compress_step(src: str, dst: str, model: "str | Path | NiceModel | ModelRef", ctx: StepContext | None = None,
                  overrides: dict[str, Any] | None = None, model_uri: str | None = None,
                  threads: int | None = None, endpoint_url: str | None = None, workers: int = 1,
                  **options: Any) -> dict[str, Any]:
    """`nice compress` as a step: the whole archive on this machine (resumable, idempotent),
    its shards in this process or in `workers` processes sharing the cores (nice.compress.workers)."""
    from nice.compress.workers import SHARDS_PER_WORKER, WorkerPool, WorkerSpec
    from nice.device import configure_threads

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = ctx or StepContext()
    cores = configure_threads(threads)
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            if not isinstance(model, (str, Path)):
                raise ValueError("worker processes load the model themselves: give a model directory or URI")
            options = {**options, "min_shards": workers * SHARDS_PER_WORKER}
            share = max(1, cores // workers)  # torch threads of each process, this one included
            spec = WorkerSpec(src, dst, str(model), dict(overrides or {}), model_uri, endpoint_url, options,
                              threads=share)
            pool = stack.enter_context(WorkerPool(spec, workers))  # warms up while this process plans
            configure_threads(share)
        run = archive_run(src, dst, model, overrides, model_uri=model_uri, endpoint_url=endpoint_url,
                          **{"progress": ctx.progress, **options})
        with ctx.step("compress-archive", {"source": src, "destination": dst, "model_uri": run.model.uri,
                                           "config_hash": run.config_hash, "since_last": run.opts.since_last,
                                           "workers": workers}):
            summary = run.run(pool.runner if pool else None)
            data = summary.to_dict()
            ctx.log_metrics(summary_metrics(data))
            if run.opts.savings:
                ctx.log_artifact(run.opts.savings, "savings")
            if ctx.tracker is not None:
                import mlflow

                mlflow.log_dict(data, "savings/summary.json")
    return data


def dry_run_step(src: str, model: str | Path, overrides: dict[str, Any] | None = None, sample: int = 200,
                 threads: int | None = None, endpoint_url: str | None = None) -> dict[str, Any]:
    """`nice compress --dry-run`: estimated savings on a sample of SRC; nothing is written."""
    from nice.bundle import resolve_model
    from nice.compress.archive import dry_run
    from nice.device import configure_threads
    from nice.storage import open_store

    configure_threads(threads)
    loaded = resolve_model(model)
    return dry_run(open_store(src, endpoint_url), loaded, loaded.config.with_overrides(overrides), sample=sample)


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """A run summary's numbers as flat metrics: its numeric fields and `count_<status>`."""
    out = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out | {f"count_{k}": float(v) for k, v in (summary.get("counts") or {}).items()}


def training_splits(dataset: str, test: bool = False) -> dict[str, str]:
    """{context: split} of what training reads (as nice.data.sources.training_data chooses:
    builtins and artifacts without a val split validate on test), plus the held-out test."""
    from nice.data.sources import BUILTIN
    from nice.ingest import DatasetArtifact

    if dataset in BUILTIN:
        return {"train": "train", "val": "test"}
    has_val = bool(DatasetArtifact.open(dataset).manifest["counts"].get("val"))
    return {"train": "train", "val": "val" if has_val else "test", **({"test": "test"} if test else {})}


def _flat(section: Any, prefix: str) -> dict[str, Any]:
    """MLflow parameters of a config section; nested sections as `prefix.section.key`."""

    def walk(d: dict[str, Any], pre: str) -> Iterator[tuple[str, Any]]:
        for k, v in d.items():
            yield from walk(v, f"{pre}{k}.") if isinstance(v, dict) else [(f"{pre}{k}", v)]

    return dict(walk(asdict(section), prefix))


def _log_mask_grid(ctx: StepContext, model: Any, val: Any) -> None:
    """A grid of validation images with their masks, logged as a PNG artifact."""
    import tempfile

    from nice.evaluate.plots import mask_overlay_grid_from_model

    with tempfile.TemporaryDirectory() as tmp:
        path = mask_overlay_grid_from_model(model, val, Path(tmp) / "mask_overlay_grid.png")
        ctx.log_artifact(path, "plots")

