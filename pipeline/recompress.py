from kfp import dsl
from kfp.dsl import graph_component

from components import compress_shard, finalize_tracking, finish_recompress, plan_recompress
from pipeline.cluster import resilient
from pipeline.secrets import with_secrets
from pipeline.settings import DEFAULT, PipelineSettings

# Shards compressed at once on a cluster (KFP needs a constant here; kfp.local runs them one by
# one). With max_shards=200 a 10-million-object archive becomes 200 shards of 50,000.
PARALLELISM = 8


def build(settings: PipelineSettings = DEFAULT) -> graph_component.GraphComponent:
    """The pipeline with `settings` (retries, timeouts) baked into its spec."""

    @dsl.pipeline(name="recompress",
                  description="Recompress only what is new or changed in the archive since the last successful "
                              "run, with the champion models, fanned out over shards.")
    def recompress(source: str = "s3://nice-archive/images/", destination: str = "s3://nice-archive/compressed/",
                   model_uri: str = "models:/nice-mask-generator@champion", config: dict = {},  # noqa: B006
                   since_last: bool = True, shard_size: int = 1000, max_shards: int = 200,
                   reprocess: str = "older-models", reprocess_limit: int = 5000) -> None:
        run_id, name = dsl.PIPELINE_JOB_ID_PLACEHOLDER, dsl.PIPELINE_JOB_NAME_PLACEHOLDER
        step = lambda task, s3=True: resilient(with_secrets(task, s3=s3), settings, task.name)  # noqa: E731
        closing = step(finalize_tracking(kfp_run_id=run_id, pipeline_name=name), s3=False)
        closing.set_caching_options(False)
        with dsl.ExitHandler(closing, name="tracked-run"):
            # reprocess: after a promotion, the schedule redoes the old champion's outputs,
            # `reprocess_limit` a run (the same batch in every step: see ArchiveRun.reprocess_batch).
            redo = {"reprocess": reprocess, "reprocess_limit": reprocess_limit}
            plan = step(plan_recompress(source=source, destination=destination, model_uri=model_uri,
                                        config=config, since_last=since_last, shard_size=shard_size,
                                        max_shards=max_shards, kfp_run_id=run_id, pipeline_name=name, **redo))
            plan.set_caching_options(False)  # lists the live archive
            with dsl.ParallelFor(items=plan.output, parallelism=PARALLELISM) as shard:
                # Resumable: a retry redoes nothing already committed.
                task = step(compress_shard(source=source, destination=destination, model_uri=model_uri,
                                           shard=shard, kfp_run_id=run_id, config=config,
                                           since_last=since_last, shard_size=shard_size, **redo))
                task.set_caching_options(False)
            done = step(finish_recompress(source=source, destination=destination, model_uri=model_uri,
                                          config=config, since_last=since_last, shard_size=shard_size,
                                          kfp_run_id=run_id, pipeline_name=name, **redo))
            done.after(task)
            done.set_caching_options(False)

    return recompress


recompress = build()
