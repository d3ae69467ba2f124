from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def train_classifier(dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
                     config: dict = {}, kfp_run_id: str = "", pipeline_name: str = "") -> None:  # noqa: B006 - KFP needs a literal default
    """Train the classifier to be explained; log it to MLflow and register `nice-classifier`."""
    from nice.jobs import StepContext, train_classifier_step
    from nice.tracking import CLASSIFIER_MODEL, Tracker

    ctx = StepContext(Tracker(), kfp_run_id, pipeline_name, progress=False)
    res = train_classifier_step(dataset.path, model.path, config, ctx)
    for k, v in res["metrics"].items():
        metrics.log_metric(k, float(v))
    model.metadata.update({"framework": "pytorch", "registered_model": CLASSIFIER_MODEL,
                           "registered_version": res["registered_version"],
                           "mlflow_uri": f"models:/{CLASSIFIER_MODEL}/{res['registered_version']}",
                           "mlflow_run_id": res["mlflow_run_id"], "class_names": res["class_names"]})
