"""The evaluate step: metrics from the savings table, baselines on a sample of the same
sources, plots, an HTML report, promotion gates, and (when tracked) the champion alias."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from nice.config import PromotionConfig
from nice.evaluate.baselines import quality_sweep
from nice.evaluate.metrics import check_gates, metrics_by_model, savings_metrics
from nice.evaluate.plots import mask_overlay_grid, rate_accuracy_plot
from nice.evaluate.report import write_report


def evaluate_savings(savings: str | Path, source: str, model: Any, out_dir: str | Path,
                     promotion: PromotionConfig | None = None, sample: int = 400, seed: int = 0,
                     ctx: Any = None, versions: dict[str, str | None] | None = None,
                     endpoint_url: str | None = None, benchmark: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a compression run; `model` is a NiceModel; `ctx` a nice.jobs.StepContext;
    `benchmark` the result of `nice.evaluate.suite.evaluate_model` on the test set, if run
    (its files are logged with this step and its saving can be a promotion gate)."""
    from nice.compress.engine import unpack_mask
    from nice.imageio import decode_image, image_pixels
    from nice.jobs import StepContext
    from nice.storage import open_store

    ctx = ctx or StepContext()
    promotion = promotion or model.config.promotion
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = pq.read_table(savings).to_pylist()
    with ctx.step("evaluate", {"savings": str(savings), "source": source, "sample": sample,
                               **{f"gate.{k}": v for k, v in vars(promotion).items()}}):
        ctx.evaluating(model.uri, source, rows, versions, benchmark)  # metrics linked to the model and archive
        if benchmark:
            from nice.evaluate.tracked import log_benchmark

            log_benchmark(ctx, benchmark)  # the test-set benchmark's metrics and tables, same links
        m = savings_metrics(rows)
        gates = check_gates(m, promotion, benchmark)

        # Baselines and pictures on a labelled sample of the same source objects.
        pool = [r for r in rows if r["status"] in ("compressed", "kept_original") and r.get("label") is not None]
        picked = random.Random(seed).sample(pool, min(sample, len(pool)))
        store = open_store(source, endpoint_url)
        mode = "RGB" if model.config.classifier.in_channels == 3 else "L"
        # Each sampled source is read and decoded once, for the sweep, the mask grid and the
        # champion comparison.
        sources = [store.get(r["source_key"]) for r in picked]
        pixels = [image_pixels(decode_image(data).image, mode) for data in sources]
        src_bytes = sum(r["source_bytes"] for r in picked)
        curve = quality_sweep(pixels, src_bytes, [r["label"] for r in picked], model) if picked else []
        nice_point = None
        if picked:
            ob = sum(r["output_bytes"] for r in picked)
            nice_point = (ob / src_bytes, sum(r["pred_output"] == r["label"] for r in picked) / len(picked))
            m["sample_nice_bytes_ratio"], m["sample_nice_accuracy"] = nice_point
        images: dict[str, Path] = {}
        images["rate-accuracy"] = rate_accuracy_plot(curve, nice_point, out / "rate_accuracy.png")
        shown = [(p, r) for p, r in zip(pixels, picked) if r["status"] == "compressed"][:32]
        if shown:
            images["masks"] = mask_overlay_grid([p for p, _ in shown], [unpack_mask(r) for _, r in shown],
                                                [r["block"] or model.config.gates.block for _, r in shown],
                                                out / "mask_overlay_grid.png",
                                                titles=[f"{r['mask_density'] * 100:.0f}% kept, {r['ratio']:.2f}x"
                                                        for _, r in shown])

        promoted = False
        versions = versions or {}
        vs_champion = _champion_comparison(ctx, versions, model, picked, sources, promotion)
        if vs_champion is not None:
            gates.reasons += vs_champion.reasons
            gates.passed = gates.passed and vs_champion.passed
        if gates.passed and ctx.tracker is not None and versions.get("generator"):
            from nice.tracking import CLASSIFIER_MODEL, GENERATOR_MODEL

            ctx.tracker.promote(GENERATOR_MODEL, versions["generator"])
            if versions.get("classifier"):
                ctx.tracker.promote(CLASSIFIER_MODEL, versions["classifier"])
            promoted = True
        gate_info = gates.to_dict() | {"promoted": promoted}
        if vs_champion is not None:
            gate_info["champion"] = vs_champion.to_dict()
            if ctx.tracker is not None and versions.get("generator"):
                from nice.tracking import GENERATOR_MODEL

                for k, v in vs_champion.tags().items():  # the decision and both sets of numbers
                    ctx.tracker.client.set_model_version_tag(GENERATOR_MODEL, str(versions["generator"]), k, v)
        result = {"metrics": m, "gates": gate_info, "curve": [vars(p) for p in curve],
                  "versions": versions, "model_uri": model.uri}
        context = {"savings": str(savings), "source": source, "model": model.uri,
                   **{f"{k} version": v for k, v in versions.items() if v}}
        if vs_champion is not None:
            for who, sd in (("candidate", vs_champion.candidate), (f"champion v{vs_champion.champion_version}",
                                                                    vs_champion.champion)):
                acc = "n/a" if sd.accuracy is None else f"{sd.accuracy * 100:.2f}%"
                context[f"{who} on the same {sd.images} images"] = (
                    f"bytes {sd.bytes_ratio:.4f}x, accuracy {acc}, flips {sd.flips}, "
                    f"preservation {sd.preservation * 100:.2f}%")
        by_model = metrics_by_model(rows)
        result["by_model"] = by_model
        if benchmark:
            context.update({f"benchmark: {i + 1}": line for i, line in enumerate(benchmark.get("verdicts", []))})
            result["benchmark"] = {k: benchmark[k] for k in ("saving_vs_best", "best_nice", "best_baseline", "verdicts")}
            if benchmark.get("saving_vs_best") is not None:
                m["saving_vs_best_baseline"] = benchmark["saving_vs_best"]
        (out / "evaluation.json").write_text(json.dumps(result, indent=2, default=str))
        report = write_report(out / "report.html", "NICE evaluation", m, gate_info, curve, images, context=context,
                              by_model=by_model)
        # Gates and savings on the evaluated versions (the champion numbers are tagged above).
        ctx.tag_evaluation(versions, {k: v for k, v in gate_info.items() if k != "champion"}, m)
        ctx.log_metrics(m)
        for key in ("report_html", "report_md"):
            if benchmark and benchmark.get(key):
                ctx.log_artifact(benchmark[key], "benchmark")
        ctx.log_metrics({"gates_passed": int(gates.passed), "promoted": int(promoted)})
        for p in (*images.values(), report, out / "evaluation.json"):
            ctx.log_artifact(p, "evaluation")
    result["report"] = str(report)
    return result


def _champion_comparison(ctx: Any, versions: dict[str, Any], model: Any, picked: list[dict[str, Any]],
                         sources: list[bytes], promotion: PromotionConfig) -> Any:
    """The candidate against the current champion on the sampled images, when there is a
    registered candidate, a champion that is another model, and images to compare on."""
    from nice.evaluate.champion import against_champion

    if not (promotion.vs_champion and ctx.tracker is not None and versions.get("generator") and picked):
        return None
    from nice.bundle import resolve_model
    from nice.tracking import GENERATOR_MODEL

    champ = ctx.tracker.alias_version(GENERATOR_MODEL)
    if champ is None or str(champ) == str(versions["generator"]):
        return None
    champion = resolve_model(f"models:/{GENERATOR_MODEL}/{champ}")
    if champion.lineage().digest == model.lineage().digest:
        return None  # the same weights: nothing to compare
    c = champion.config.classifier
    if (c.in_channels, c.num_classes) != (model.config.classifier.in_channels, model.config.classifier.num_classes):
        from nice.evaluate.champion import Comparison, side

        s = side(picked)
        return Comparison(str(champ), s, s, True, [f"PASS vs champion v{champ}: not comparable (another task: "
                                                   f"{c.in_channels} channels, {c.num_classes} classes)"])
    return against_champion(picked, sources, champion, str(champ), promotion)
