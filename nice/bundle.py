"""A NICE model: the frozen classifier and the mask generator trained against it, as one
directory (`classifier.pt`, `mask_generator.pt`, `nice.json`) that compression loads."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nice.checkpoint import CheckpointError, load_classifier, load_generator, read_checkpoint, save_checkpoint
from nice.config import NiceConfig
from nice.lineage import Lineage, resolve_registered, weights_digest

CLASSIFIER_FILE = "classifier.pt"
GENERATOR_FILE = "mask_generator.pt"
CONFIG_FILE = "nice.json"

log = logging.getLogger(__name__)


@dataclass
class NiceModel:
    classifier: nn.Module
    generator: nn.Module
    config: NiceConfig
    uri: str = ""
    class_names: list[str] | None = None
    run_id: str = ""  # the MLflow run that logged it, when it came from the registry
    digest: str = ""  # weights_digest of both networks; computed on first use when empty

    def lineage(self) -> Lineage:
        if not self.digest:
            self.digest = weights_digest(self.classifier.state_dict(), self.generator.state_dict())
        return Lineage(self.uri, self.run_id, self.digest)

    def save(self, path: str | Path, meta: dict | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path / CLASSIFIER_FILE, "classifier", self.classifier, self.config, meta)
        save_checkpoint(path / GENERATOR_FILE, "mask_generator", self.generator, self.config, meta)
        (path / CONFIG_FILE).write_text(json.dumps(
            {"config": self.config.to_dict(), "class_names": self.class_names}, indent=2, sort_keys=True))
        return path

    @classmethod
    def untrained(cls, cfg: NiceConfig, class_names: list[str] | None = None, uri: str = "untrained") -> "NiceModel":
        """Both networks freshly initialised from `cfg`: for benchmarks of speed and tests of the
        machinery, not of results."""
        from nice.models import build_classifier, build_generator

        classifier = build_classifier(cfg.classifier).eval()
        generator = build_generator(cfg.generator, cfg.gates, cfg.classifier.in_channels,
                                    classifier=classifier).eval()
        return cls(classifier, generator, cfg, uri=uri, class_names=class_names)

    @classmethod
    def load(cls, path: str | Path) -> "NiceModel":
        path = Path(path)
        _check_model_dir(path)
        classifier, _, _ = load_classifier(path / CLASSIFIER_FILE)
        generator, cfg, _ = load_generator(path / GENERATOR_FILE)
        names = None
        if (path / CONFIG_FILE).is_file():
            info = json.loads((path / CONFIG_FILE).read_text())
            names = info.get("class_names")
            if isinstance(info.get("config"), dict) and _differs(info["config"], cfg):
                # nice.json is a readable copy; editing it changes nothing, so say so.
                log.warning("%s differs from the config in the checkpoints, which is the one used; "
                            "change settings with --config (or retrain) instead", path / CONFIG_FILE)
        return cls(classifier=classifier, generator=generator, config=cfg,
                   uri=str(path.resolve()), class_names=names)


def _differs(written: dict, cfg: NiceConfig) -> bool:
    """Whether nice.json's config says something else than the checkpoints' (keys added to
    the config since the model was saved take their defaults on both sides)."""
    try:
        return NiceConfig.from_dict(written) != cfg
    except (ValueError, TypeError, KeyError):
        return True


@dataclass
class ModelRef:
    """A model directory known by its config, class names and URI, without its networks:
    what planning and finishing an archive run need. `load()` builds the networks."""

    path: Path
    config: NiceConfig
    uri: str
    class_names: list[str] | None = None
    run_id: str = ""
    digest: str = ""

    def lineage(self) -> Lineage:
        if not self.digest:
            # mmap: hashing reads the tensors' bytes once, nothing is built.
            self.digest = weights_digest(read_checkpoint(self.path / CLASSIFIER_FILE, "classifier", mmap=True)[0],
                                         read_checkpoint(self.path / GENERATOR_FILE, "mask_generator", mmap=True)[0])
        return Lineage(self.uri, self.run_id, self.digest)

    @classmethod
    def open(cls, path: str | Path, uri: str | None = None, run_id: str = "") -> "ModelRef":
        path = Path(path)
        _check_model_dir(path)
        # The config in the checkpoints is the one used (nice.json is a readable copy). mmap:
        # the tensors stay on disk, only the config text is read.
        try:
            payload = torch.load(path / GENERATOR_FILE, map_location="cpu", weights_only=True, mmap=True)
            cfg = NiceConfig.from_dict(json.loads(payload["config"]))
        except Exception as exc:  # unpickling errors come in many types
            raise CheckpointError(f"{path / GENERATOR_FILE}: not a loadable NICE checkpoint ({exc})") from exc
        names = None
        if (path / CONFIG_FILE).is_file():
            names = json.loads((path / CONFIG_FILE).read_text()).get("class_names")
        return cls(path=path, config=cfg, uri=uri or str(path.resolve()), class_names=names, run_id=run_id)

    def load(self) -> NiceModel:
        model = NiceModel.load(self.path)
        model.uri, model.run_id = self.uri, self.run_id
        model.digest = self.digest  # the same weights: the file digest, if computed already
        return model


def _check_model_dir(path: Path) -> None:
    if not (path / GENERATOR_FILE).is_file() or not (path / CLASSIFIER_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a NICE model directory "
                                f"(needs {CLASSIFIER_FILE} and {GENERATOR_FILE})")


def networks(model: "NiceModel | ModelRef") -> NiceModel:
    """The model with its networks (loads them for a ModelRef)."""
    return model.load() if isinstance(model, ModelRef) else model


def resolve_model_ref(uri: str | Path) -> ModelRef:
    """A local model directory, or an MLflow `models:/...` / `runs:/...` URI downloaded first;
    nothing is built (see `ModelRef.load`). An alias (`models:/name@champion`) is resolved to
    its version first, and that version is downloaded and recorded (nice.lineage)."""
    text = str(uri)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        try:
            import mlflow.artifacts
        except ImportError as exc:  # pragma: no cover - mlflow is part of the pipeline install
            raise ValueError(f"{text}: MLflow URIs need the mlflow package") from exc
        resolved, run_id = resolve_registered(text)
        local = mlflow.artifacts.download_artifacts(artifact_uri=resolved)
        candidates = [Path(local)] + [p.parent for p in Path(local).rglob(GENERATOR_FILE)]
        for c in candidates:
            if (c / GENERATOR_FILE).is_file() and (c / CLASSIFIER_FILE).is_file():
                return ModelRef.open(c, uri=resolved, run_id=run_id)  # rows record the version
        raise FileNotFoundError(f"{text} holds no NICE model directory")
    return ModelRef.open(text)


def resolve_model(uri: str | Path) -> NiceModel:
    """`resolve_model_ref(uri)` with its networks loaded."""
    return resolve_model_ref(uri).load()
