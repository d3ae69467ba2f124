"""Scheduled recompression fanned out over shards: plan -> compress_shard (ParallelFor) -> finish."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def plan_recompress(source: str, destination: str, model_uri: str, config: dict = {},  # noqa: B006
                    since_last: bool = True, shard_size: int = 1000, max_shards: int = 0,
                    kfp_run_id: str = "", pipeline_name: str = "", reprocess: str = "",
                    reprocess_limit: int = 5000) -> List[int]:
    """List the live archive and record the run's object list (archive run `kfp-<KFP run id>`,
    so that every step of this pipeline run names the same one); returns the shard indices.
    Reads the model's config only: the networks are never loaded here."""
    from nice.jobs import StepContext, archive_run
    from nice.tracking import Tracker

    ctx = StepContext(Tracker(), kfp_run_id, pipeline_name, progress=False)
    with ctx.step("plan-recompress", {"source": source, "destination": destination, "model_uri": model_uri}):
        run = archive_run(source, destination, model_uri, config, since_last=since_last, shard_size=shard_size,
                          max_shards=max_shards or None, progress=False, run_id=f"kfp-{kfp_run_id}",
                          reprocess=reprocess, reprocess_limit=reprocess_limit)
        plan = run.plan()  # takes the destination's lease for this run; the shards join it, finish releases it
        shards = list(range(plan.shards))
        ctx.log_metrics({"objects_listed": plan.objects, "shards": plan.shards, "shard_size": plan.shard_size})
    return shards


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def compress_shard(source: str, destination: str, model_uri: str, shard: int, kfp_run_id: str,
                   config: dict = {}, since_last: bool = True, shard_size: int = 1000,  # noqa: B006
                   reprocess: str = "", reprocess_limit: int = 5000) -> int:
    """Compress one shard of a planned run (resumable; a retried task redoes nothing committed)."""
    from nice.device import configure_threads
    from nice.jobs import archive_run

    configure_threads()
    run = archive_run(source, destination, model_uri, config, since_last=since_last, shard_size=shard_size,
                      progress=False, run_id=f"kfp-{kfp_run_id}", reprocess=reprocess,
                      reprocess_limit=int(reprocess_limit))
    return run.run_shard(int(shard))


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def finish_recompress(source: str, destination: str, model_uri: str, savings: Output[Dataset],
                      summary: Output[Metrics], report: Output[HTML], config: dict = {},  # noqa: B006
                      since_last: bool = True, shard_size: int = 1000, kfp_run_id: str = "",
                      pipeline_name: str = "", reprocess: str = "", reprocess_limit: int = 5000) -> None:
    """Merge the shards' rows, write the run summary, mark the run a success (without the
    networks), then report on the run (its rate-accuracy baselines need the classifier)."""
    import shutil
    import tempfile

    from nice.bundle import networks
    from nice.evaluate.run import evaluate_savings
    from nice.jobs import StepContext, archive_run, summary_metrics
    from nice.tracking import Tracker

    tracker = Tracker()
    ctx = StepContext(tracker, kfp_run_id, pipeline_name, progress=False)
    run_id = f"kfp-{kfp_run_id}"
    with ctx.step("finish-recompress", {"run_id": run_id, "destination": destination}):
        run = archive_run(source, destination, model_uri, config, since_last=since_last, shard_size=shard_size,
                          progress=False, run_id=run_id, savings=savings.path, reprocess=reprocess,
                          reprocess_limit=int(reprocess_limit))
        res = run.finish().to_dict()
        ctx.log_metrics(summary_metrics(res))
    for k, v in summary_metrics(res).items():
        summary.log_metric(k, v)
    savings.metadata.update({"run_id": run_id, "destination": destination})
    with tempfile.TemporaryDirectory() as tmp:
        ev = evaluate_savings(savings.path, source, networks(run.model), tmp, run.cfg.promotion, sample=200, ctx=ctx)
        shutil.copyfile(ev["report"], report.path)
