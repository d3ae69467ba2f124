"""Compile to KFP IR YAML, submit to a Kubeflow Pipelines endpoint, schedule recurring runs.

Runs and recurring runs either carry the compiled spec inline (no `version`) or point at an
uploaded pipeline version (`pipeline_version_reference`, see `pipeline.versions`)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pipeline.settings import DEFAULT, PipelineSettings

EXPERIMENT = "nice"


def compile_pipeline(name: str, out: str | Path, settings: PipelineSettings = DEFAULT) -> Path:
    """Write pipeline `name`, built with `settings`, as KFP IR YAML at `out`."""
    from kfp import compiler

    from pipeline import BUILDERS, PIPELINES

    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    func = PIPELINES[name] if settings == DEFAULT else BUILDERS[name](settings)
    compiler.Compiler().compile(func, str(out))
    return out


def kfp_cron(expr: str) -> str:
    """KFP cron has a seconds field: accept the usual five fields and prepend `0`."""
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + expr.strip()
    if len(fields) == 6:
        return expr.strip()
    raise ValueError(f"cron expression {expr!r} needs 5 (or 6, with seconds) fields")


class RemoteError(ValueError):
    """The KFP API refused a request or could not be reached (one line for the CLI)."""


@contextlib.contextmanager
def api_errors(host: str) -> Iterator[None]:
    """KFP client failures as one-line `RemoteError`s; kfp.Client's "details: <link>" prints
    go to stderr so that stdout stays the command's JSON."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except ApiException as exc:
        body = (exc.body or b"").decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        raise RemoteError(f"KFP API at {host}: HTTP {exc.status} {exc.reason}: {body.strip()[:300]}") from None
    except HTTPError as exc:
        raise RemoteError(f"KFP API at {host} not reachable: {exc}") from None


def client(host: str) -> Any:
    import kfp

    with api_errors(host):
        return kfp.Client(host=host)


@contextlib.contextmanager
def _target(kfp_client: Any, name: str, host: str, version: str | None,
            settings: PipelineSettings) -> Iterator[dict[str, Any]]:
    """kwargs of `run_pipeline` / `create_recurring_run` naming what to run: a compiled
    package (inline spec) or an uploaded version's ids."""
    if version is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield {"pipeline_package_path": str(compile_pipeline(name, Path(tmp) / f"{name}.yaml", settings))}
        return
    from pipeline.versions import resolve_version

    ref = resolve_version(kfp_client, name, version, host, settings)
    yield {"pipeline_id": ref.pipeline_id, "version_id": ref.version_id}


def submit(name: str, host: str, arguments: dict[str, Any] | None = None, experiment: str = EXPERIMENT,
           version: str | None = None, settings: PipelineSettings = DEFAULT,
           service_account: str | None = None) -> str:
    """Start one run; returns its id. `version`: None (the spec compiled here, inline),
    `latest`, `current` (this checkout's spec, uploaded if new) or a version id."""
    c = client(host)
    with api_errors(host):
        with _target(c, name, host, version, settings) as target:
            exp = c.create_experiment(experiment)
            run = c.run_pipeline(experiment_id=exp.experiment_id,
                                 job_name=f"{name} {datetime.now(timezone.utc):%Y-%m-%d %H-%M-%S}",
                                 params=arguments or {}, service_account=_account(service_account, settings),
                                 **target)
    return str(run.run_id)


def schedule(name: str, host: str, cron: str, arguments: dict[str, Any] | None = None,
             experiment: str = EXPERIMENT, job_name: str | None = None, version: str | None = None,
             settings: PipelineSettings = DEFAULT, service_account: str | None = None) -> str:
    """A recurring run: one at a time (`max_concurrency=1`), no backfill of missed slots."""
    cron = kfp_cron(cron)
    c = client(host)
    with api_errors(host):
        with _target(c, name, host, version, settings) as target:
            exp = c.create_experiment(experiment)
            job = c.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=job_name or f"{name}-scheduled", cron_expression=cron,
                params=arguments or {}, max_concurrency=1, no_catchup=True, enabled=True,
                service_account=_account(service_account, settings), **target)
    return str(job.recurring_run_id)


def _account(given: str | None, settings: PipelineSettings) -> str | None:
    account = settings.service_account if given is None else given
    return account or None  # "" leaves it to the server


def upload(name: str, host: str, settings: PipelineSettings = DEFAULT) -> dict[str, Any]:
    """`nice pipeline upload`: the pipeline and this spec's version (created only if new)."""
    from pipeline.versions import upload as upload_version

    c = client(host)
    with api_errors(host):
        return upload_version(c, name, settings).to_dict()
