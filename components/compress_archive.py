from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def compress_archive(source: str, destination: str, model: Input[Model], savings: Output[Dataset],
                     summary: Output[Metrics], config: dict = {}, since_last: bool = False,  # noqa: B006
                     shard_size: int = 1000, kfp_run_id: str = "", pipeline_name: str = "",
                     workers: int = 1) -> None:
    """Compress every object under `source` into `destination` (resumable, idempotent), write
    the per-image savings Parquet; `workers` processes share the pod's cores."""
    from nice.jobs import StepContext, compress_step, summary_metrics
    from nice.tracking import Tracker

    ctx = StepContext(Tracker(), kfp_run_id, pipeline_name, progress=False)
    res = compress_step(source, destination, model.path, ctx, config,
                        model_uri=model.metadata.get("mlflow_uri") or model.uri,
                        since_last=since_last, shard_size=shard_size, savings=savings.path, workers=workers)
    for k, v in summary_metrics(res).items():
        summary.log_metric(k, v)
    savings.metadata.update({"run_id": res["run_id"], "destination": destination, "source": source,
                             "rows": sum((res.get("counts") or {}).values())})
