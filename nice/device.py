"""Device selection and reproducibility helpers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(preferred: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, CPU otherwise; anything else is passed to torch."""
    if preferred == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preferred)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def configure_threads(threads: int | None = None) -> int:
    """Use every core we were given (cgroup-aware via sched_getaffinity) unless told otherwise."""
    if threads is None or threads <= 0:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads
