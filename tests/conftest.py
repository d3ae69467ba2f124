"""Shared fixtures: real MNIST (from the offline-first loaders) and small models trained on it.

`make test-fast` sets NICE_TEST_CACHE: the trained test models are then kept there, keyed by
a hash of the library code they were trained with (every `nice` module imported below, i.e.
the training code's whole import closure), this file and torch's version, so the inner loop
retrains only after that code changes. `make test` trains them afresh, once per run: its
pytest-xdist workers share them through the run's temporary root, under a file lock.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image

from nice.bundle import NiceModel
from nice.config import NiceConfig, colour_default
from nice.data.arrays import ArrayImageDataset
from nice.data.mnistm import make_mnistm
from nice.data.sources import load_builtin
from nice.training.classifier import train_classifier
from nice.training.mask_generator import train_mask_generator

# Taken now, before any test module is imported: the library code training can run.
TRAINING_CODE = sorted({m.__file__ for name, m in list(sys.modules.items())
                        if (name == "nice" or name.startswith("nice.")) and getattr(m, "__file__", None)})


def _code_key(*extra: str) -> str:
    h = hashlib.sha256()
    for path in TRAINING_CODE:
        h.update(path.encode() + b"\0" + Path(path).read_bytes())
    for text in (Path(__file__).read_text(), torch.__version__, *extra):
        h.update(text.encode() + b"\0")
    return h.hexdigest()[:16]


def _model_cache(tmp_path_factory) -> Path | None:
    """Where trained test models are shared: NICE_TEST_CACHE across sessions; else, under
    pytest-xdist, the run's common temporary root, so the workers train each model once."""
    if os.environ.get("NICE_TEST_CACHE"):
        return Path(os.environ["NICE_TEST_CACHE"])
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / "trained-models"
    return None


def trained_model(name: str, build: Callable[[Path], None], tmp_path_factory) -> Path:
    """A model directory built by `build`, from the shared cache when that holds one trained
    by the same code; always a private copy, so that no test can change the cached one."""
    path = tmp_path_factory.mktemp(name) / name
    cache = _model_cache(tmp_path_factory)
    if cache is None:
        build(path)
        return path
    cached = cache / f"{name}-{_code_key(name)}"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cached) + ".lock"):  # one process trains it; the others wait and copy
        if not (cached / "nice.json").is_file():
            staging = cached.with_name(f".{cached.name}.staging")  # the lock makes it ours
            shutil.rmtree(staging, ignore_errors=True)
            build(staging)
            staging.rename(cached)
    shutil.copytree(cached, path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    # Two threads in every process, pytest-xdist worker or not: float results depend on the
    # thread count, and the trained-model tests' margins were measured at two.
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

    def build(path: Path) -> None:
        train, test, _, test_split = mnist_small
        cfg = NiceConfig()
        cfg.train_classifier.epochs = 2
        cfg.train_generator.epochs = 2
        cfg.train_generator.batch_size = 64  # enough steps for the gates to settle on 6,000 images
        cfg.train_generator.rank_weight = 0.0  # plain NICE: tests compare the rank loss against it
        clf = train_classifier(cfg, train, test, progress=False)
        gen = train_mask_generator(cfg, clf.model, train, test, progress=False)
        NiceModel(clf.model, gen.model, cfg, class_names=test_split.class_names).save(
            path, {"classifier": clf.final, "generator": gen.final})

    return trained_model("nice-model", build, tmp_path_factory)


def png_bytes(arr: np.ndarray, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **params)
    return buf.getvalue()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible endpoint over HTTP: moto's server on 127.0.0.1 (no mocks in-process)."""
    from pipeline.s3_local import LocalS3

    with LocalS3(credentials={"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                              "AWS_DEFAULT_REGION": "us-east-1"}) as url:
        yield url


@pytest.fixture
def bucket(s3_endpoint, request):
    import boto3
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-" + os.urandom(3).hex()
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory) -> Path:
    """A ResNet classifier + 8x8-block generator (mean-colour background) trained briefly on mnist-m at 64 px."""

    def build(path: Path) -> None:
        images, labels, names = make_mnistm("train", 64, limit=1500)
        timgs, tlabels, _ = make_mnistm("test", 64, limit=300)
        train, test = ArrayImageDataset(images, labels), ArrayImageDataset(timgs, tlabels)
        cfg = colour_default()
        cfg.classifier.width = 16
        cfg.generator.pre_pool = 4
        cfg.train_classifier.epochs = 2
        cfg.train_classifier.batch_size = 64
        cfg.train_generator.epochs = 1
        cfg.train_generator.batch_size = 64
        clf = train_classifier(cfg, train, test, progress=False)
        gen = train_mask_generator(cfg, clf.model, train, test, progress=False)
        NiceModel(clf.model, gen.model, cfg, class_names=names).save(path)

    return trained_model("nice-colour", build, tmp_path_factory)
