"""One candidate layer: a rung means the same bytes in the product's search, the fixed path,
the evaluation's codec baselines and the stored fine-tune; `nice explain` on a kept image."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nice.bundle import NiceModel
from nice.classify import Classify
from nice.codec import Rung, decode, encode, final_effort, fixed_effort, fixed_rung, probe_effort
from nice.compress.engine import Compressor, SourceItem
from nice.compress.search import Masks, Search
from nice.config import ClassifierConfig, CodecConfig, NiceConfig, SearchConfig, colour_default
from nice.evaluate.baselines import reencode
from nice.evaluate.benchmark import RateAccuracy
from nice.gates import grid_shape
from nice.mixing import make_mixer


class Constant(nn.Module):
    """Always class 0: every candidate verifies, so a search's winner is its cheapest rung."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x):
        one = x[:, :1, 0, 0] * 0 + 1  # shaped by the batch, also when traced
        return torch.cat([one, one.expand(-1, self.classes - 1) * 0], 1) * 10


class Gates(nn.Module):
    def __init__(self, value: float, block: int) -> None:
        super().__init__()
        self.value, self.block = value, block

    def forward(self, x):
        return torch.full((x.shape[0], 1, *grid_shape(x.shape[-2], x.shape[-1], self.block)), self.value)


def _photos(n: int = 6, size: int = 48) -> list[bytes]:
    import skimage.data

    photo = skimage.data.astronaut()
    out = []
    for i in range(n):
        crop = Image.fromarray(photo[40 * i:40 * i + 200, 30 * i:30 * i + 200]).resize((size, size))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def _colour_model(gate: float = 10.0) -> NiceModel:
    cfg = colour_default()
    cfg.classifier = ClassifierConfig(arch="lenet", in_channels=3, num_classes=2, image_size=0)
    return NiceModel(Constant(), Gates(gate, cfg.gates.block), cfg, uri="test", class_names=["a", "b"])


@pytest.mark.parametrize("rung", [Rung("webp", quality=30), Rung("jpeg", quality=40), Rung("webp", quality=8)])
def test_codec_baselines_and_the_product_search_store_identical_bytes(rung):
    """The evaluation's sweep of a rung and the product search stopped at that rung write the
    same file: same writer, same effort (the search re-encodes its winner at the stored one)."""
    model = _colour_model()
    sources = _photos()
    ra = RateAccuracy(sources, [0] * len(sources), model)
    sizes, back = reencode(ra.pixels, ra.mode, rung, ra.effort)  # what RateAccuracy.quality_sweep encodes
    cfg = model.config.with_overrides({"search": {"formats": [rung.fmt], "qualities": [rung.quality]}})
    search = Search.product(cfg, Classify(model.classifier), make_mixer(cfg.mixing, cfg.gates.block))
    outcomes = search.run(ra.x, Masks.whole_image(len(ra.x)), [0] * len(ra.x),
                          [10 ** 9] * len(ra.x), ["JPEG"] * len(ra.x), "RGB")
    for o, src, size, pixels in zip(outcomes, ra.pixels, sizes, back):
        assert o.choice is not None and o.choice.rung == rung
        assert len(o.choice.data) == size
        assert o.choice.data == encode(src, "RGB", rung, ra.effort)
        assert np.array_equal(decode(o.choice.data, "RGB"), pixels)
    assert ra.quality_sweep(rung.fmt, [rung.quality])[0].bytes_ratio == pytest.approx(sizes.sum() / ra.src_bytes.sum())


def test_fixed_path_stores_what_the_evaluation_counts_for_it():
    """The fixed path (mask at tau, one codec setting) and the evaluation's `mixed` point for the
    same masks count the same bytes per image."""
    model = _colour_model(gate=-10.0)  # every gate closed: the flat background everywhere
    model.config.search.enabled = False
    sources = _photos()
    comp = Compressor(model, batch_size=8)
    rows = [r.row for r in comp.compress([SourceItem(f"{i}.jpg", d, key=f"{i}.jpg") for i, d in enumerate(sources)])]
    assert all(r["status"] == "compressed" for r in rows)
    ra = RateAccuracy(sources, [0] * len(sources), model)
    z = ra.gates.binarize(comp.log_alpha(ra.x), model.config.guard.tau)
    raw, _ = ra.mixed("nice", "tau", z)
    assert raw.bytes_ratio == pytest.approx(sum(r["output_bytes"] for r in rows) / sum(len(s) for s in sources))
    params = json.loads(rows[0]["codec_params"])
    assert params == fixed_effort(model.config.codec).args(fixed_rung(model.config.codec, "jpeg"), "RGB")


def test_fixed_path_is_the_search_over_tau_levels_with_one_rung():
    """A flip at tau 0.5 moves the fixed path to the denser masks, first verified level wins."""
    cfg = NiceConfig(classifier=ClassifierConfig(arch="lenet", in_channels=1, num_classes=2, image_size=0),
                     search=SearchConfig(enabled=False))
    x = torch.rand(3, 1, 16, 16)
    log_alpha = torch.tensor([-3.0, 0.0, 3.0]).repeat_interleave(16 * 16 // 3 + 1)[:256].reshape(1, 1, 16, 16).repeat(3, 1, 1, 1)
    calls = []

    def classify(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(pixels))
        kept = (pixels > 0).mean(axis=(1, 2))
        return (kept < 0.5).astype(np.int64), np.ones(len(pixels))  # class 0 once half the pixels are kept

    from nice.gates import HardConcrete

    search = Search.fixed(cfg, classify, make_mixer(cfg.mixing, 1))
    masks = Masks.thresholds(log_alpha, HardConcrete(cfg.gates), (0.5, 0.3, 0.1))
    out = search.run(x, masks, [0, 0, 0], [10 ** 6] * 3, ["PNG"] * 3, "L")
    # tau 0.5 keeps a third of the pixels (class 1: a flip), tau 0.3 two thirds (verified).
    assert all(o.choice is not None and o.choice.level == 0.3 and o.levels_tried == 2 for o in out)
    assert all(o.choice.rung == Rung("png", levels=256) for o in out)
    assert calls == [3, 3]  # one classifier call per tau level for the whole batch
    # A source smaller than any candidate ends the search at once (denser masks cost more).
    out = search.run(x, masks, [0, 0, 0], [10] * 3, ["PNG"] * 3, "L")
    assert all(o.choice is None and o.too_big and o.levels_tried == 1 for o in out)


def test_bounds_turn_what_one_keep_level_showed_into_spans_of_the_others():
    from nice.compress.search import Bounds

    b = Bounds()
    assert b.span(0, 0, 0.2, 13) == (0, 12)
    b.saw(0, 0, 0.2, 4, False)  # q rung 4 flipped at keep 0.2: a sparser level starts above it
    assert b.span(0, 0, 0.1, 13) == (5, 12) and b.span(0, 0, 0.3, 13) == (0, 12)
    b.saw(0, 0, 0.1, 7, True)  # rung 7 verified at 0.1: a denser level can only win below it
    assert b.span(0, 0, 0.3, 13) == (0, 6) and b.span(0, 0, 0.05, 13) == (5, 12)
    b.saw(0, 0, 0.05, 9, None)  # too big at 0.05: too big at every denser level too
    assert b.span(0, 0, 0.3, 13) == (0, 6) and b.span(0, 0, 0.08, 13) == (5, 8)
    assert b.span(1, 0, 0.3, 13) == (0, 12) and b.span(0, 1, 0.3, 13) == (0, 12)  # per image and ladder


def test_pruned_search_classifies_less_and_every_choice_verifies():
    """The default search (lowest open rung first, levels bounding each other) against plain
    bisection on the same photos, with a classifier that needs detail: every stored candidate
    decodes to the source's class, far fewer candidates are classified, the bytes stay close."""
    cfg = colour_default()
    sources = _photos(8, 64)
    x = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(d)).convert("RGB"))).permute(2, 0, 1)
                     for d in sources]).float() / 255
    threshold = 0.5 * float(x.flatten(1).std(1).min())
    calls = []

    def detail(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls[-1] += len(pixels)
        std = (pixels.reshape(len(pixels), -1) / 255.0).std(1)
        return (std < threshold).astype(np.int64), np.ones(len(pixels))  # class 0 while detail is kept

    scores = torch.rand(len(x), *grid_shape(64, 64, cfg.gates.block), generator=torch.Generator().manual_seed(0))
    results = {}
    for prune in (False, True):
        calls.append(0)
        search = Search.product(cfg, detail, make_mixer(cfg.mixing, cfg.gates.block))
        search.prune = prune
        out = search.run(x, Masks.ranking(scores, cfg, x), [0] * len(x), [len(d) for d in sources], ["JPEG"] * len(x),
                         "RGB")
        assert all(o.choice is not None for o in out)
        stored = np.stack([decode(o.choice.data, "RGB") for o in out])
        calls.append(0)  # the check below is not the search's
        assert (detail(stored)[0] == 0).all(), "every stored choice verifies"
        results[prune] = sum(len(o.choice.data) for o in out)
    assert calls[2] < 0.8 * calls[0], calls
    assert results[True] <= 1.05 * results[False], results


def test_probe_and_final_efforts_differ_only_in_writer_effort():
    codec, search = CodecConfig(), SearchConfig()
    pixels = np.asarray(Image.open(io.BytesIO(_photos(1, 64)[0])))
    for rung in (Rung("webp", quality=20), Rung("png", levels=256), Rung("webp", levels=4)):
        a = decode(encode(pixels, "RGB", rung, probe_effort(codec, search)), "RGB")
        b = decode(encode(pixels, "RGB", rung, final_effort(codec, search)), "RGB")
        if rung.lossless:
            assert np.array_equal(a, b)  # lossless: same pixels whatever the effort
        else:
            assert a.shape == b.shape


def test_training_does_not_import_the_compression_engine():
    code = ("import sys, nice.training.stored, nice.training.mask_generator; "
            "print(sorted(m for m in sys.modules if m.startswith('nice.compress')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_explain_on_an_image_the_guard_keeps(tmp_path):
    """A tiny lossless WebP cannot be beaten: the guard keeps it, and `nice explain` still
    draws the generator's mask (it used to crash with an AttributeError)."""
    from nice.cli import main
    from nice.evaluate.explain import explain_image

    cfg = NiceConfig(classifier=ClassifierConfig(arch="lenet", in_channels=1, num_classes=2, image_size=0))
    model = NiceModel(Constant(), Gates(10.0, 1), cfg, uri="test", class_names=["dark", "light"])
    img = tmp_path / "flat.webp"
    # Written as the search would write it: no candidate can be smaller.
    Image.new("L", (28, 28), 0).save(img, "WEBP", lossless=True, quality=100, method=6)
    e = explain_image(model, str(img), tmp_path / "out")
    assert e.compressed_bytes == e.source_bytes == img.stat().st_size and e.prediction_kept
    assert e.mask_density == pytest.approx(1.0) and e.predicted == "dark"
    overlay = Image.open(e.overlay)
    assert overlay.format == "PNG" and overlay.size[0] > 100
    cfg = NiceConfig()
    NiceModel.untrained(cfg, class_names=[str(i) for i in range(10)]).save(tmp_path / "model")
    assert main(["explain", str(img), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "flat.explain.png").is_file()
    assert Image.open(tmp_path / "cli" / "flat.explain.png").format == "PNG"
