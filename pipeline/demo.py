"""`make demo`: the full train-and-compress pipeline through kfp.local on MNIST, with the
archive in a local S3-compatible endpoint that the demo starts, seeds and stops."""

from __future__ import annotations

import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from nice.paths import nice_home

BUCKET = "nice-demo"
# Native-size scenes frames through every ranking (~7 s of CPU a frame) and every explanation
# method (minutes a frame with sensitivity and ROAD): the scenes demo's benchmark is a sample;
# `nice evaluate` measures more.
SCENES_BENCHMARK_IMAGES = 40
SCENES_EXPLAIN_IMAGES = 10


@dataclass
class DemoReport:
    run_dir: Path
    savings: Path
    report: Path
    archive_folder: Path
    metrics: dict[str, Any]
    gates: dict[str, Any]
    tracking_uri: str
    champion: str | None
    parent_run: str | None
    child_runs: list[str] = field(default_factory=list)
    benchmark: Path | None = None
    verdicts: list[str] = field(default_factory=list)
    benchmark_scope: str = ""  # the benchmark's own first line: how many test images it measured


def seed_archive(folder: Path, bucket: str, prefix: str, workers: int = 16) -> int:
    """Upload `class/file` from a local folder to s3://bucket/prefix/ (same keys)."""
    import boto3
    from botocore.config import Config

    # One pooled connection per thread: botocore's default pool of 10 drops the rest with a warning.
    s3 = boto3.client("s3", config=Config(max_pool_connections=workers))
    s3.create_bucket(Bucket=bucket)
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def put(p: Path) -> None:
        s3.put_object(Bucket=bucket, Key=prefix + p.relative_to(folder).as_posix(), Body=p.read_bytes())

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, files))
    return len(files)


def scenes_generator_epochs(limit: int) -> dict[str, Any]:
    """The scenes generator was measured after 2 epochs of the 10,000 train frames (20,000
    views, docs/results.md); a `--limit` of fewer frames gets the epochs that show it as many,
    else it trains a handful of steps and collapses (500 frames x 2 epochs: 8 steps, masks
    with no block kept; the search then stores 0.0099x where the measured generator gives
    0.0076x)."""
    from nice.ingest.sources import SCENES_COUNTS

    train = min(limit, SCENES_COUNTS["train"]) if limit else SCENES_COUNTS["train"]
    return {"train_generator": {"epochs": max(2, math.ceil(2 * SCENES_COUNTS["train"] / train))}}


def run_demo(dataset: str = "mnist", limit: int = 0, config: dict[str, Any] | None = None,
             eval_sample: int = 400, workdir: str | Path | None = None,
             benchmark_images: int | None = None) -> DemoReport:
    from nice.data.sources import export_png_folder, load_builtin
    from nice.bundle import NiceModel
    from nice.evaluate.metrics import check_gates, savings_metrics
    from pipeline.s3_local import LocalS3
    from nice.tracking import GENERATOR_MODEL, Tracker, default_tracking_uri
    from pipeline.local import run_local

    home = nice_home().resolve()
    workdir = Path(workdir or home / "demo").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # The archive: the test split as PNG files, `class/name.png` (scenes: the native-size JPEG
    # frames), kept locally for later runs too.
    if dataset.startswith("scenes"):
        from nice.config import merge_overrides
        from nice.data.scenes import DEMO_OVERRIDES, SOURCES, export_folder
        from nice.ingest.sources import SCENES_COUNTS

        folder = workdir / f"{dataset}-test-jpeg"
        if folder.exists():
            shutil.rmtree(folder)
        export_folder(SOURCES[dataset], "test", limit or SCENES_COUNTS["test"], folder)
        config = merge_overrides(merge_overrides(DEMO_OVERRIDES, scenes_generator_epochs(limit)), config or {})
        # the benchmark's sample; elsewhere the pipeline's defaults
        sample = {"benchmark_images": benchmark_images or SCENES_BENCHMARK_IMAGES,
                  "explain_images": SCENES_EXPLAIN_IMAGES}
    else:
        sample = {"benchmark_images": benchmark_images} if benchmark_images else {}
        _, test_split = load_builtin(dataset, "test", limit=limit or None)
        folder = workdir / f"{dataset}-test-png"
        if folder.exists():
            shutil.rmtree(folder)
        export_png_folder(test_split, folder, limit or None)
    external = os.environ.get("AWS_ENDPOINT_URL")
    server = None if external else LocalS3()
    if server is not None:
        server.__enter__()
    try:
        n = seed_archive(folder, BUCKET, "archive/")
        print(f"seeded s3://{BUCKET}/archive/ with {n} objects at {os.environ['AWS_ENDPOINT_URL']}", flush=True)
        run_dir = run_local("train-and-compress", {
            "dataset_source": dataset, "archive_source": f"s3://{BUCKET}/archive/",
            "archive_destination": f"s3://{BUCKET}/compressed/", "limit": limit, "config": config or {},
            "eval_sample": eval_sample, **sample})
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    savings = workdir / "savings.parquet"
    report = workdir / "report.html"
    shutil.copyfile(run_dir / "compress-archive" / "savings", savings)
    shutil.copyfile(run_dir / "evaluate" / "report", report)
    benchmark = workdir / "benchmark.html"
    shutil.copyfile(run_dir / "evaluate" / "benchmark_report", benchmark)
    summary_md = workdir / "benchmark.md"
    shutil.copyfile(run_dir / "evaluate" / "summary", summary_md)
    summary = summary_md.read_text().splitlines()
    verdicts = [ln[2:] for ln in summary if ln.startswith("- ")]
    scope = next((ln for ln in summary if ln and not ln.startswith(("#", "- "))), "")
    rows = pq.read_table(savings).to_pylist()
    metrics = savings_metrics(rows)
    model_dir = run_dir / "train-mask-generator" / "model"
    promotion = NiceModel.load(model_dir).config.with_overrides(config).promotion
    gates = check_gates(metrics, promotion).to_dict()
    tracker = Tracker(default_tracking_uri())
    champion = tracker.alias_version(GENERATOR_MODEL)
    parent, children = pipeline_runs(tracker, run_dir.name)
    return DemoReport(run_dir=run_dir, savings=savings, report=report, archive_folder=folder, metrics=metrics,
                      gates=gates, tracking_uri=tracker.uri, champion=champion, parent_run=parent,
                      child_runs=sorted(children), benchmark=benchmark, verdicts=verdicts,
                      benchmark_scope=scope)


def pipeline_runs(tracker: Any, job_name: str) -> tuple[str | None, list[str]]:
    """The MLflow parent run of a pipeline run (kfp.local's job name = its run directory) and
    the steps of its child runs."""
    from nice.tracking import STEP_TAG

    found = tracker.client.search_runs([tracker.experiment_id], f"tags.`nice.pipeline` = '{job_name}'")
    if not found:
        return None, []
    parent = found[0].info.run_id
    kids = tracker.client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return parent, sorted(r.data.tags.get(STEP_TAG, "") for r in kids)


def format_report(r: DemoReport) -> str:
    m = r.metrics
    pct = lambda v: "n/a" if v is None else f"{v * 100:.2f}%"  # noqa: E731
    lines = [
        ("accuracy on the original files", pct(m["accuracy_source"])),
        ("accuracy on the stored compressed files", pct(m["accuracy_output"])),
        ("bytes before", f"{m['source_bytes']:,}"),
        ("bytes after", f"{m['output_bytes']:,}  ({m['bytes_ratio']:.3f}x, the whole archive)"),
        ("statuses", ", ".join(f"{k} {v:,}" for k, v in m["counts"].items())),
        ("mean mask density (compressed)", pct(m["mean_mask_density"])),
        ("promotion gates", "passed" if r.gates["passed"] else "failed"),
        ("champion nice-mask-generator", f"version {r.champion}" if r.champion else "none"),
        ("MLflow parent run", f"{r.parent_run} with {len(r.child_runs)} child runs ({', '.join(r.child_runs)})"),
        ("savings Parquet", str(r.savings)),
        ("report", str(r.report)),
        ("NICE vs baselines", str(r.benchmark)),
        ("pipeline artifacts", str(r.run_dir)),
        ("MLflow store", r.tracking_uri),
        ("open the UI", "nice ui   (http://127.0.0.1:5000)"),
        ("compress again", f"MLFLOW_TRACKING_URI={r.tracking_uri} nice compress {r.archive_folder} "
                           f"{r.archive_folder.parent / 'recompressed'} --model models:/nice-mask-generator@champion"),
    ]
    width = max(len(k) for k, _ in lines)
    table = "\n".join(f"{k:<{width}}  {v}" for k, v in lines)
    if not r.verdicts:
        return table
    # The benchmark measures a sample through every baseline, so its bytes ratio is not the
    # archive's above: say which images it is.
    head = f"NICE vs baselines on a sample of the test set ({r.benchmark_scope.rstrip('.')}):"
    return table + "\n\n" + head + "\n" + "\n".join(f"- {v}" for v in r.verdicts)
