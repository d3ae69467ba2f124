"""Compile to KFP IR YAML, submit to a Kubeflow Pipelines endpoint, schedule recurring runs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

EXPERIMENT = "nice"


def compile_pipeline(name: str, out: str | Path) -> Path:
    from kfp import compiler

    from pipeline import PIPELINES

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PIPELINES[name], str(out))
    return out


def kfp_cron(expr: str) -> str:
    """KFP cron has a seconds field: accept the usual five fields and prepend `0`."""
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + expr.strip()
    if len(fields) == 6:
        return expr.strip()
    raise ValueError(f"cron expression {expr!r} needs 5 (or 6, with seconds) fields")


def submit(name: str, host: str, arguments: dict[str, Any] | None = None, experiment: str = EXPERIMENT) -> str:
    import kfp

    from pipeline import PIPELINES

    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(PIPELINES[name], arguments=arguments or {},
                                               experiment_name=experiment)
    return str(run.run_id)


def schedule(name: str, host: str, cron: str, arguments: dict[str, Any] | None = None,
             experiment: str = EXPERIMENT, job_name: str | None = None) -> str:
    """A recurring run: one at a time (`max_concurrency=1`), no backfill of missed slots."""
    import kfp

    client = kfp.Client(host=host)
    exp = client.create_experiment(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(name, Path(tmp) / f"{name}.yaml")
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name or f"{name}-scheduled",
            cron_expression=kfp_cron(cron), pipeline_package_path=str(package), params=arguments or {},
            max_concurrency=1, no_catchup=True, enabled=True)
    return str(job.recurring_run_id)
