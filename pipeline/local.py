"""Run a pipeline on this machine through kfp.local (each step a subprocess of this Python)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from nice.paths import nice_home
from nice.tracking import default_tracking_uri


def run_local(name: str, arguments: dict[str, Any] | None = None, pipeline_root: str | Path | None = None) -> Path:
    """Run pipeline `name` with `arguments`; returns the run's directory under the pipeline
    root (`<task>/<output>` inside it holds every artifact)."""
    from kfp import local

    from pipeline import PIPELINES

    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}")
    # Steps run as subprocesses: give them absolute locations, whatever their working directory.
    home = nice_home().resolve()
    os.environ["NICE_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = default_tracking_uri()
    root = Path(pipeline_root or home / "pipeline-root").resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    before = set(root.iterdir())
    with warnings.catch_warnings():
        # The components name the project image; locally they run in this Python instead.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
        PIPELINES[name](**(arguments or {}))
    new = sorted((p for p in root.iterdir() if p not in before and p.name.startswith(name)),
                 key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"pipeline {name} finished but left no run directory under {root}")
    return new[-1]
