"""Scheduled recompression fanned out over shards: plan -> compress_shard (ParallelFor) -> finish."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def plan_recompress(source: str, destination: str, model_uri: str, config: dict = {},  # noqa: B006
                    since_last: bool = True, shard_size: int = 1000, max_shards: int = 0,
                    kfp_run_id: str = "", pipeline_name: str = "") -> List[int]:
    """List the live archive and record the run's object list (archive run `kfp-<KFP run id>`,
    so that every step of this pipeline run names the same one); returns the shard indices."""
    from nice.bundle import resolve_model
    from nice.compress.archive import ArchiveOptions, ArchiveRun, make_shards
    from nice.jobs import StepContext
    from nice.storage import open_store
    from nice.tracking import Tracker

    ctx = StepContext(Tracker(), kfp_run_id, pipeline_name, progress=False)
    model = resolve_model(model_uri)
    cfg = model.config.with_overrides(config)
    opts = ArchiveOptions(since_last=since_last, shard_size=shard_size, max_shards=max_shards or None,
                          progress=False, run_id=f"kfp-{kfp_run_id}")
    with ctx.step("plan-recompress", {"source": source, "destination": destination, "model_uri": model_uri}):
        run = ArchiveRun(open_store(source), open_store(destination), model, cfg, opts)
        objects = run.plan()
        shards = list(range(len(make_shards(objects, opts.shard_size))))
        ctx.log_metrics({"objects_listed": len(objects), "shards": len(shards), "shard_size": opts.shard_size})
    return shards


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def compress_shard(source: str, destination: str, model_uri: str, shard: int, kfp_run_id: str,
                   config: dict = {}, since_last: bool = True, shard_size: int = 1000) -> int:  # noqa: B006
    """Compress one shard of a planned run (resumable; a retried task redoes nothing committed)."""
    from nice.bundle import resolve_model
    from nice.compress.archive import ArchiveOptions, ArchiveRun
    from nice.device import configure_threads
    from nice.storage import open_store

    configure_threads()
    model = resolve_model(model_uri)
    cfg = model.config.with_overrides(config)
    opts = ArchiveOptions(since_last=since_last, shard_size=shard_size, progress=False, run_id=f"kfp-{kfp_run_id}")
    return ArchiveRun(open_store(source), open_store(destination), model, cfg, opts).run_shard(int(shard))


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def finish_recompress(source: str, destination: str, model_uri: str, savings: Output[Dataset],
                      summary: Output[Metrics], report: Output[HTML], config: dict = {},  # noqa: B006
                      since_last: bool = True, shard_size: int = 1000, kfp_run_id: str = "",
                      pipeline_name: str = "") -> None:
    """Merge the shards' rows, write the run summary, mark the run a success, report."""
    import shutil
    import tempfile

    from nice.bundle import resolve_model
    from nice.compress.archive import ArchiveOptions, ArchiveRun
    from nice.evaluate.run import evaluate_savings
    from nice.jobs import StepContext, summary_metrics
    from nice.storage import open_store
    from nice.tracking import Tracker

    tracker = Tracker()
    ctx = StepContext(tracker, kfp_run_id, pipeline_name, progress=False)
    model = resolve_model(model_uri)
    cfg = model.config.with_overrides(config)
    run_id = f"kfp-{kfp_run_id}"
    opts = ArchiveOptions(since_last=since_last, shard_size=shard_size, progress=False, run_id=run_id,
                          savings=savings.path)
    with ctx.step("finish-recompress", {"run_id": run_id, "destination": destination}):
        res = ArchiveRun(open_store(source), open_store(destination), model, cfg, opts).finish().to_dict()
        ctx.log_metrics(summary_metrics(res))
    for k, v in summary_metrics(res).items():
        summary.log_metric(k, v)
    savings.metadata.update({"run_id": run_id, "destination": destination})
    with tempfile.TemporaryDirectory() as tmp:
        ev = evaluate_savings(savings.path, source, model, tmp, cfg.promotion, sample=200, ctx=ctx)
        shutil.copyfile(ev["report"], report.path)
