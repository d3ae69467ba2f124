"""A benchmark's numbers in MLflow: rate and explanation metrics as metrics of the evaluate run
(linked to the evaluated model through the step's tracker), and the per-method tables with
`mlflow.log_table`, so runs compare in the MLflow UI; the headline numbers for KFP's Metrics."""

from __future__ import annotations

from typing import Any

# ExplainScore fields logged per method (MLflow metric names allow no '%': "5%" -> "5pct").
EXPLAIN_FIELDS = ("deletion_auc", "insertion_auc", "rise_deletion_auc", "rise_insertion_auc", "road_morf",
                  "road_lerf", "infidelity", "sensitivity_max", "sparsity")
RATE_FIELDS = ("best_nice", "best_baseline", "best_codec_baseline", "best_ranking_baseline")
TABLE_EXPLAIN = "benchmark/explanations.json"
TABLE_RATE = "benchmark/rate_points.json"


def _pct(key: str) -> str:
    return key.replace("%", "pct")


def benchmark_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flat `bench.*` (rate) and `explain.<method>.*` metrics of an evaluate_model result."""
    out: dict[str, float] = {}
    for key in ("images", "source_accuracy", "source_bytes", "seconds", "saving_vs_best", "ratio_to_best",
                "ratio_to_best_codec", "ratio_to_best_ranking"):
        if isinstance(result.get(key), (int, float)):
            out[f"bench.{key}"] = float(result[key])
    for key in RATE_FIELDS:
        point = result.get(key)
        if point:
            out[f"bench.{key}.bytes_ratio"] = float(point["bytes_ratio"])
            out[f"bench.{key}.accuracy"] = float(point["accuracy"])
    for e in result.get("explain", []):
        prefix = f"explain.{e['method']}."
        for f in EXPLAIN_FIELDS:
            if e.get(f) is not None:
                out[prefix + f] = float(e[f])
        for frac, v in (e.get("preservation") or {}).items():
            out[prefix + f"preservation_{_pct(frac)}"] = float(v)
        out[prefix + "ms_per_image"] = float(e["seconds_per_image"]) * 1000
    for k, v in (result.get("explanation_goal") or {}).items():
        out[f"explain.goal.{_pct(k).replace(' ', '_')}"] = float(bool(v))
    return out


def benchmark_tables(result: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """{artifact file: columns} of the per-method explanation table and the rate points."""
    explain = result.get("explain", [])
    fracs = sorted({f for e in explain for f in (e.get("preservation") or {})}, key=lambda f: float(f.rstrip("%")))
    exp_cols: dict[str, list[Any]] = {"method": [e["method"] for e in explain]}
    for f in EXPLAIN_FIELDS:
        exp_cols[f] = [e.get(f) for e in explain]
    for frac in fracs:
        exp_cols[f"preservation_{_pct(frac)}"] = [(e.get("preservation") or {}).get(frac) for e in explain]
    exp_cols["ms_per_image"] = [e["seconds_per_image"] * 1000 for e in explain]
    points = result.get("points", [])
    rate_cols = {k: [p.get(k) for p in points] for k in ("method", "setting", "guarded", "bytes_ratio", "accuracy",
                                                          "drop_points", "flips", "kept", "density")}
    return {TABLE_EXPLAIN: exp_cols, TABLE_RATE: rate_cols}


def headline_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The few numbers a KFP Metrics artifact shows: bytes against the best baseline, and
    NICE's explanation numbers and the goal."""
    m = benchmark_metrics(result)
    keep = ("bench.saving_vs_best", "bench.ratio_to_best", "bench.best_nice.bytes_ratio", "explain.goal.met")
    return {k: v for k, v in m.items() if k in keep or (k.startswith("explain.nice.") and not k.endswith("sparsity"))}


def log_benchmark(ctx: Any, result: dict[str, Any]) -> None:
    """Metrics (through `ctx`, a nice.jobs.StepContext: linked to its step's model) and tables
    of an evaluate_model result to the open MLflow run; nothing without a tracker."""
    if ctx is None or ctx.tracker is None:
        return
    import mlflow

    ctx.log_metrics(benchmark_metrics(result))
    for name, columns in benchmark_tables(result).items():
        mlflow.log_table(columns, artifact_file=name)
