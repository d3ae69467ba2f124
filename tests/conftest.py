"""Shared fixtures: real MNIST (from the offline-first loaders) and a small model trained on it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.config import NiceConfig
from nice.data.sources import load_builtin
from nice.training.classifier import train_classifier
from nice.training.mask_generator import train_mask_generator


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def mnist_small():
    """6,000 real training digits and 1,000 real test digits."""
    train, train_split = load_builtin("mnist", "train", limit=6000)
    test, test_split = load_builtin("mnist", "test", limit=1000)
    return train, test, train_split, test_split


@pytest.fixture(scope="session")
def small_model(mnist_small, tmp_path_factory) -> Path:
    """A classifier + conv generator trained briefly on real MNIST, saved as a model directory."""
    train, test, _, test_split = mnist_small
    cfg = NiceConfig()
    cfg.train_classifier.epochs = 2
    cfg.train_generator.epochs = 2
    clf = train_classifier(cfg, train, test, progress=False)
    gen = train_mask_generator(cfg, clf.model, train, test, progress=False)
    path = tmp_path_factory.mktemp("model") / "nice-model"
    NiceModel(clf.model, gen.model, cfg, class_names=test_split.class_names).save(
        path, {"classifier": clf.final, "generator": gen.final})
    return path


def png_bytes(arr: np.ndarray, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **params)
    return buf.getvalue()
