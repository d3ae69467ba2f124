"""Lineage: every stored file names the model version that made it, and a new champion's
outputs replace the old ones exactly once (real MLflow registry in SQLite, real S3 over HTTP)."""

from __future__ import annotations

from collections import Counter

import boto3
import pyarrow.parquet as pq
import pytest
import torch

from nice.bundle import NiceModel
from nice.jobs import compress_step
from nice.lineage import weights_digest

from test_archive import upload_mnist

ALIAS = "models:/nice-mask-generator@champion"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    from nice.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return Tracker(uri)


def _second_model(small_model, out) -> NiceModel:
    """Another model of the same config: the generator's weights nudged (a retrained champion)."""
    m = NiceModel.load(small_model)
    with torch.no_grad():
        for p in m.generator.parameters():
            p.add_(0.01 * torch.randn_like(p))
    m.save(out)
    return m


def _rows(tmp_path, name):
    return pq.read_table(tmp_path / name).to_pylist()


def _metadata(bucket, key):
    return boto3.client("s3").head_object(Bucket=bucket, Key=key)["Metadata"]


def test_a_new_champion_redoes_every_object_exactly_once(small_model, mnist_small, bucket, registry, tmp_path):
    from nice.tracking import GENERATOR_MODEL

    _, _, _, test_split = mnist_small
    upload_mnist(bucket, "src", test_split, 0, 12)
    src, dst = f"s3://{bucket}/src/", f"s3://{bucket}/dst/"
    with registry.step("train-mask-generator") as run1:  # a training step's run logs the model
        v1 = registry.log_nice_model(small_model, 1, 28)
    registry.promote(GENERATOR_MODEL, v1)
    assert registry.client.get_model_version(GENERATOR_MODEL, v1).run_id == run1

    first = compress_step(src, dst, ALIAS, savings=str(tmp_path / "a.parquet"))
    rows = _rows(tmp_path, "a.parquet")
    digest1 = weights_digest(*(torch.load(small_model / f, weights_only=True)["state_dict"]
                               for f in ("classifier.pt", "mask_generator.pt")))
    assert first["extra"]["processed"] == 12
    assert {r["model_uri"] for r in rows} == {f"models:/{GENERATOR_MODEL}/{v1}"}, "the version, not the alias"
    assert {r["model_run_id"] for r in rows} == {run1} and {r["model_digest"] for r in rows} == {digest1}
    out_key = rows[0]["output_uri"].split(f"{bucket}/", 1)[1]
    meta = _metadata(bucket, out_key)
    assert meta["nice-model-uri"] == f"models:/{GENERATOR_MODEL}/{v1}" and meta["nice-model-digest"] == digest1

    # Train and promote v2 (same config, other weights).
    _second_model(small_model, tmp_path / "v2")
    with registry.step("train-mask-generator"):
        v2 = registry.log_nice_model(tmp_path / "v2", 1, 28)
    registry.promote(GENERATOR_MODEL, v2)

    # --since-last keeps its contract: only new or changed sources; the v1 outputs are counted.
    quiet = compress_step(src, dst, ALIAS, since_last=True, savings=str(tmp_path / "b.parquet"))
    assert quiet["images"] == 0 and quiet["extra"]["older_model_outputs"] == 12
    # A scheduled job works through them in bounded batches.
    batch = compress_step(src, dst, ALIAS, since_last=True, reprocess="older-models", reprocess_limit=5,
                          savings=str(tmp_path / "c.parquet"))
    assert batch["extra"]["redone_from_older_models"] == 5 and batch["extra"]["older_model_outputs"] == 7
    # A full run redoes the rest (not the five already made by v2), then nothing.
    full = compress_step(src, dst, ALIAS, savings=str(tmp_path / "d.parquet"))
    assert full["extra"]["processed"] == 7 and full["extra"]["older_model_outputs"] == 0
    again = compress_step(src, dst, ALIAS, savings=str(tmp_path / "e.parquet"))
    assert again["extra"]["processed"] == 0

    redone = [r for name in ("c.parquet", "d.parquet", "e.parquet") for r in _rows(tmp_path, name)
              if not (r["error"] or "").startswith("unchanged since")]
    assert Counter(r["source_key"] for r in redone) == Counter({r["source_key"]: 1 for r in rows}), \
        "every object redone by v2 exactly once"
    assert {r["model_uri"] for r in redone} == {f"models:/{GENERATOR_MODEL}/{v2}"}
    for r in redone:
        meta = _metadata(bucket, r["output_uri"].split(f"{bucket}/", 1)[1])
        assert meta["nice-model-uri"] == f"models:/{GENERATOR_MODEL}/{v2}"
        assert meta["nice-model-digest"] == r["model_digest"] != digest1


def test_the_same_weights_have_one_digest_wherever_they_come_from(small_model):
    from nice.bundle import ModelRef

    ref = ModelRef.open(small_model)
    loaded = NiceModel.load(small_model)
    assert ref.lineage().digest == loaded.lineage().digest
    loaded.generator.state_dict()[next(iter(loaded.generator.state_dict()))].add_(1.0)
    assert NiceModel(loaded.classifier, loaded.generator, loaded.config).lineage().digest != ref.lineage().digest


def test_a_candidate_worse_than_the_champion_is_not_promoted(small_model, mnist_small, registry, tmp_path):
    """A generator that learned nothing (fresh weights) against a trained champion, on the same
    images: not promoted, the reason on its version and in the report; the other way round it is."""
    from nice.compress.archive import ArchiveOptions, ArchiveRun
    from nice.evaluate.run import evaluate_savings
    from nice.jobs import StepContext
    from nice.models.generators import build_generator
    from nice.storage import open_store
    from nice.tracking import GENERATOR_MODEL

    from conftest import png_bytes

    _, _, _, test_split = mnist_small
    src = tmp_path / "src"
    for i in range(60):
        (src / str(int(test_split.labels[i]))).mkdir(parents=True, exist_ok=True)
        (src / str(int(test_split.labels[i])) / f"{i:04d}.png").write_bytes(png_bytes(test_split.images[i]))
    good = NiceModel.load(small_model)
    torch.manual_seed(0)
    bad = NiceModel(good.classifier, build_generator(good.config.generator, good.config.gates, 1).eval(), good.config,
                    class_names=good.class_names)
    bad.save(tmp_path / "bad")
    ctx = StepContext(registry, progress=False)
    with registry.step("train-mask-generator"):
        v_good = registry.log_nice_model(small_model, 1, 28)
    with registry.step("train-mask-generator"):
        v_bad = registry.log_nice_model(tmp_path / "bad", 1, 28)

    def evaluate(model: NiceModel, version: str, name: str) -> dict:
        model.uri = f"models:/{GENERATOR_MODEL}/{version}"
        run = ArchiveRun(open_store(src), open_store(tmp_path / name), model,
                         opts=ArchiveOptions(progress=False, savings=str(tmp_path / f"{name}.parquet")))
        run.run()
        return evaluate_savings(tmp_path / f"{name}.parquet", str(src), model, tmp_path / f"eval-{name}",
                                ctx=ctx, versions={"generator": version}, sample=60)

    registry.promote(GENERATOR_MODEL, v_good)
    res = evaluate(bad, v_bad, "bad")
    vs = res["gates"]["champion"]
    assert vs["champion_version"] == v_good and vs["candidate"]["images"] == vs["champion"]["images"] == 60
    assert vs["candidate"]["bytes_ratio"] > vs["champion"]["bytes_ratio"] * 1.02
    assert not res["gates"]["promoted"] and registry.alias_version(GENERATOR_MODEL) == v_good
    tags = registry.client.get_model_version(GENERATOR_MODEL, v_bad).tags
    assert tags["nice.champion.passed"] == "false" and "FAIL vs champion" in tags["nice.champion.reasons"]
    assert float(tags["nice.champion.champion.bytes_ratio"]) == pytest.approx(vs["champion"]["bytes_ratio"], rel=1e-4)
    report = (tmp_path / "eval-bad" / "report.html").read_text()
    assert f"FAIL vs champion v{v_good}: bytes ratio" in report
    assert "By model" in report and f"models:/{GENERATOR_MODEL}/{v_bad} (weights {bad.lineage().digest})" in report
    assert list(res["by_model"]) == [f"models:/{GENERATOR_MODEL}/{v_bad} (weights {bad.lineage().digest})"]

    # The trained generator against the untrained champion: no worse, so promoted.
    registry.promote(GENERATOR_MODEL, v_bad)
    res = evaluate(NiceModel.load(small_model), v_good, "good")
    assert res["gates"]["champion"]["passed"] and res["gates"]["promoted"]
    assert registry.alias_version(GENERATOR_MODEL) == v_good
    assert registry.client.get_model_version(GENERATOR_MODEL, v_good).tags["nice.champion.passed"] == "true"
