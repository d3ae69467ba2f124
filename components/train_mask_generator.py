from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_mask_generator(dataset: Input[Dataset], classifier: Input[Model], model: Output[Model],
                         metrics: Output[Metrics], config: dict = {}, kfp_run_id: str = "",  # noqa: B006
                         pipeline_name: str = "") -> None:
    """Train the NICE mask generator against the frozen classifier (CUDA when present);
    log the NICE model to MLflow and register `nice-mask-generator`."""
    from nice.jobs import StepContext, train_mask_generator_step
    from nice.tracking import GENERATOR_MODEL, Tracker

    ctx = StepContext(Tracker(), kfp_run_id, pipeline_name, progress=False)
    res = train_mask_generator_step(dataset.path, classifier.path, model.path, config, ctx)
    for k, v in res["metrics"].items():
        metrics.log_metric(k, float(v))
    model.metadata.update({"framework": "pytorch", "registered_model": GENERATOR_MODEL,
                           "registered_version": res["registered_version"],
                           "mlflow_uri": f"models:/{GENERATOR_MODEL}/{res['registered_version']}",
                           "mlflow_run_id": res["mlflow_run_id"]})
