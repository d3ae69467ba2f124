"""Evaluation numbers, promotion gates and the config plumbing the pipeline relies on."""

from __future__ import annotations

import pytest

from nice.config import NiceConfig, PromotionConfig, colour_default
from nice.evaluate import check_gates, savings_metrics


def row(status, label, pred_src, pred_out, src=100, out=None, density=0.1):
    return {"status": status, "label": label, "pred_source": pred_src, "pred_output": pred_out,
            "source_bytes": src, "output_bytes": out, "mask_density": density}


def test_savings_metrics_counts_what_users_rely_on():
    rows = [row("compressed", 1, 1, 1, 100, 40), row("compressed", 2, 2, 2, 100, 60),
            row("kept_original", 3, 4, 4, 100, 100, 1.0), row("failed", None, None, None, 50, None),
            row("skipped", None, None, None, 30, 30)]
    m = savings_metrics(rows)
    assert m["evaluated"] == 3 and m["labelled"] == 3
    assert m["accuracy_source"] == pytest.approx(2 / 3) and m["accuracy_output"] == pytest.approx(2 / 3)
    assert m["accuracy_drop_points"] == pytest.approx(0.0)
    # Bytes count what is stored at DST: failed objects are not, skipped ones are (unchanged).
    assert m["source_bytes"] == 330 and m["output_bytes"] == 230
    assert m["bytes_ratio"] == pytest.approx(230 / 330)
    assert m["compressed_fraction"] == pytest.approx(2 / 3)
    assert m["mean_mask_density"] == pytest.approx(0.1)
    assert m["counts"] == {"compressed": 2, "kept_original": 1, "skipped": 1, "failed": 1}


def test_gates_pass_and_fail_on_each_threshold():
    good = savings_metrics([row("compressed", 1, 1, 1, 100, 50)] * 9 + [row("compressed", 2, 2, 3, 100, 50)])
    assert good["accuracy_drop_points"] == pytest.approx(10.0)
    assert not check_gates(good, PromotionConfig(max_accuracy_drop=5.0)).passed
    res = check_gates(good, PromotionConfig(max_accuracy_drop=10.0, max_bytes_ratio=0.5))
    assert res.passed and all(r.startswith("PASS") for r in res.reasons)
    res = check_gates(good, PromotionConfig(max_accuracy_drop=10.0, max_bytes_ratio=0.4))
    assert not res.passed and any(r.startswith("FAIL bytes ratio") for r in res.reasons)
    assert not check_gates(savings_metrics([]), PromotionConfig(max_bytes_ratio=2.0, max_accuracy_drop=100)).passed
    # Without labels the drop is measured as changed predictions.
    unlabelled = savings_metrics([row("compressed", None, 1, 1, 100, 50), row("compressed", None, 1, 2, 100, 50)])
    res = check_gates(unlabelled, PromotionConfig(max_accuracy_drop=10.0))
    assert not res.passed and "prediction changes 50.00" in res.reasons[0]


def test_config_overrides_coerce_transport_floats_and_hash_ignores_promotion():
    cfg = colour_default().with_overrides({"train_generator": {"epochs": 2.0, "lam": 1.5}, "gates": {"block": 4.0}})
    assert cfg.train_generator.epochs == 2 and isinstance(cfg.train_generator.epochs, int)
    assert cfg.gates.block == 4 and cfg.train_generator.lam == 1.5 and cfg.mixing.mode == "mean"
    assert cfg.with_overrides({"promotion": {"max_bytes_ratio": 0.5}}).hash() == cfg.hash()
    assert cfg.with_overrides({"codec": {"quality": 70}}).hash() != cfg.hash()
    # Training settings shape the networks (the model digest's job), not how a model compresses:
    # a new or changed one does not redo an archive; a cache of trained models still tells them apart.
    retrained = cfg.with_overrides({"train_generator": {"greedy_steps": 0, "epochs": 9}})
    assert retrained.hash() == cfg.hash() and retrained.hash(training=True) != cfg.hash(training=True)
    with pytest.raises(ValueError, match="unknown"):
        NiceConfig().with_overrides({"train_generator": {"epoch": 1}})
    with pytest.raises(ValueError, match="multiple of gates.block"):
        NiceConfig().with_overrides({"mixing": {"mode": "lowres", "pool": 6}, "gates": {"block": 4}})


def test_failed_gates_never_move_champion(small_model, tmp_path, monkeypatch):
    """evaluate_savings with strict gates: metrics and report are written, the alias stays."""
    from nice.bundle import NiceModel
    from nice.compress.folder import compress_folder
    from nice.data.sources import export_png_folder, load_builtin
    from nice.evaluate.run import evaluate_savings
    from nice.jobs import StepContext
    from nice.tracking import GENERATOR_MODEL, Tracker

    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    _, split = load_builtin("mnist", "test", limit=60)
    src = export_png_folder(split, tmp_path / "src", 60)
    model = NiceModel.load(small_model)
    compress_folder(src, tmp_path / "dst", model, class_names=split.class_names,
                    savings=tmp_path / "savings.parquet", progress=False)
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    with tracker.step("train-mask-generator"):
        version = tracker.log_nice_model(small_model, 1, 28)
    ctx = StepContext(tracker, progress=False)
    strict = PromotionConfig(max_bytes_ratio=0.01)
    res = evaluate_savings(tmp_path / "savings.parquet", str(src), model, tmp_path / "eval", strict, sample=30,
                           ctx=ctx, versions={"generator": version})
    assert not res["gates"]["passed"] and not res["gates"]["promoted"]
    assert tracker.alias_version(GENERATOR_MODEL) is None
    assert {p["name"] for p in res["curve"]} == {"source", "jpeg", "webp"}
    assert (tmp_path / "eval" / "rate_accuracy.png").stat().st_size > 1000
    assert "gates failed" in (tmp_path / "eval" / "report.html").read_text()
    loose = PromotionConfig(max_bytes_ratio=1.0, max_accuracy_drop=100.0)
    res = evaluate_savings(tmp_path / "savings.parquet", str(src), model, tmp_path / "eval2", loose, sample=30,
                           ctx=ctx, versions={"generator": version})
    assert res["gates"]["promoted"] and tracker.alias_version(GENERATOR_MODEL) == version


def test_saving_vs_best_baseline_can_gate_promotion():
    m = savings_metrics([row("compressed", 1, 1, 1, 100, 50)])
    gate = PromotionConfig(max_accuracy_drop=1.0, max_bytes_ratio=0.9, min_saving_vs_best=0.2)
    assert not check_gates(m, gate).passed  # no benchmark, no promotion
    assert not check_gates(m, gate, {"saving_vs_best": 0.1}).passed
    res = check_gates(m, gate, {"saving_vs_best": 0.25})
    assert res.passed and "saving vs best baseline 25.0%" in res.reasons[-1]
    assert check_gates(m, PromotionConfig(max_accuracy_drop=1.0, max_bytes_ratio=0.9), {"saving_vs_best": -3}).passed
