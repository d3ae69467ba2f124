"""Model files: a state dict plus the config that built it, loadable with weights_only=True.

The config travels as JSON text so the pickle holds nothing but tensors and plain strings:
`torch.load(..., weights_only=True)` refuses anything else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nice.config import NiceConfig
from nice.models import build_classifier, build_generator

FORMAT = "nice-checkpoint/1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | Path, kind: str, model: nn.Module, cfg: NiceConfig,
                    meta: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "kind": kind, "config": cfg.to_json(),
               "meta": json.dumps(meta or {}, sort_keys=True), "state_dict": state}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def read_checkpoint(path: str | Path, kind: str,
                    mmap: bool = False) -> tuple[dict[str, torch.Tensor], NiceConfig, dict[str, Any]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a NICE checkpoint")
    if payload.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {payload.get('kind')!r}, expected {kind!r}")
    cfg = NiceConfig.from_dict(json.loads(payload["config"]))
    return payload["state_dict"], cfg, json.loads(payload["meta"])


def load_classifier(path: str | Path) -> tuple[nn.Module, NiceConfig, dict[str, Any]]:
    state, cfg, meta = read_checkpoint(path, "classifier")
    model = build_classifier(cfg.classifier)
    model.load_state_dict(state)
    return model.eval(), cfg, meta


def load_generator(path: str | Path) -> tuple[nn.Module, NiceConfig, dict[str, Any]]:
    state, cfg, meta = read_checkpoint(path, "mask_generator")
    # arch `features` holds a copy of its classifier's trunk: built to the classifier's shape, then loaded
    frame = build_classifier(cfg.classifier) if cfg.generator.arch == "features" else None
    model = build_generator(cfg.generator, cfg.gates, cfg.classifier.in_channels, classifier=frame)
    model.load_state_dict(state)
    return model.eval(), cfg, meta
