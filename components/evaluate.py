from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def evaluate(savings: Input[Dataset], model: Input[Model], classifier: Input[Model], dataset: Input[Dataset],
             source: str, metrics: Output[Metrics], confusion: Output[ClassificationMetrics], report: Output[HTML],
             benchmark_report: Output[HTML], summary: Output[Markdown], config: dict = {},  # noqa: B006
             kfp_run_id: str = "", pipeline_name: str = "", sample: int = 400,
             benchmark_images: int = 400, explain_images: int = 200) -> bool:
    """The compression run's accuracy and bytes, NICE against every baseline on the dataset's
    test split (rate-accuracy and explanation metrics), plots and reports; moves the `champion`
    alias to both models only when the promotion gates pass. Returns whether it did."""
    import shutil
    import tempfile
    from pathlib import Path

    import pyarrow.parquet as pq

    from nice.bundle import NiceModel
    from nice.evaluate.run import evaluate_savings
    from nice.evaluate.suite import evaluate_model
    from nice.jobs import StepContext
    from nice.tracking import Tracker

    tracker = Tracker()
    ctx = StepContext(tracker, kfp_run_id, pipeline_name, progress=False)
    nice_model = NiceModel.load(model.path)
    nice_model.uri = model.metadata.get("mlflow_uri") or model.uri
    promotion = nice_model.config.with_overrides(config).promotion
    versions = {"generator": model.metadata.get("registered_version"),
                "classifier": classifier.metadata.get("registered_version")}
    with tempfile.TemporaryDirectory() as tmp:
        bench = evaluate_model(nice_model, dataset.path, Path(tmp) / "benchmark", limit=benchmark_images or None,
                               explain_limit=min(benchmark_images or explain_images, explain_images), progress=False)
        res = evaluate_savings(savings.path, source, nice_model, Path(tmp) / "run", promotion, sample=sample, ctx=ctx,
                               versions=versions, benchmark=bench)
        shutil.copyfile(res["report"], report.path)
        shutil.copyfile(bench["report_html"], benchmark_report.path)
        shutil.copyfile(bench["report_md"], summary.path)
    for k, v in res["metrics"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics.log_metric(k, float(v))
    from nice.evaluate.tracked import headline_metrics

    for k, v in headline_metrics(bench).items():  # the benchmark's headline: bytes, NICE's explanation numbers
        metrics.log_metric(k, v)
    metrics.log_metric("gates_passed", float(res["gates"]["passed"]))
    metrics.log_metric("promoted", float(res["gates"]["promoted"]))
    # Confusion of the stored outputs' predictions against the labels.
    names = nice_model.class_names or [str(i) for i in range(nice_model.config.classifier.num_classes)]
    matrix = [[0] * len(names) for _ in names]
    for r in pq.read_table(savings.path, columns=["label", "pred_output", "status"]).to_pylist():
        if r["label"] is not None and r["pred_output"] is not None and r["status"] in ("compressed", "kept_original"):
            matrix[r["label"]][r["pred_output"]] += 1
    confusion.log_confusion_matrix(names, matrix)
    return bool(res["gates"]["promoted"])
