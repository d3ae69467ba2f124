"""The prediction guard, driven by hand-made models whose behaviour we control exactly."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nice.bundle import NiceModel
from nice.compress.engine import Compressor, SourceItem
from nice.config import ClassifierConfig, NiceConfig, SearchConfig
from nice.gates import grid_shape


class Brightness(nn.Module):
    """Class 1 when the mean pixel exceeds 0.25, else class 0."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.25 - m, m - 0.25], 1) * 100


class ConstantGates(nn.Module):
    def __init__(self, value: float, block: int = 1):
        super().__init__()
        self.value, self.block = value, block

    def forward(self, x):
        return torch.full((x.shape[0], 1, *grid_shape(x.shape[-2], x.shape[-1], self.block)), self.value)


def _cfg(search: bool = False, **search_kw) -> NiceConfig:
    """The fixed tau path unless `search` (the per-image operating-point search) is asked for."""
    return NiceConfig(classifier=ClassifierConfig(arch="lenet", in_channels=1, num_classes=2, image_size=0),
                      search=SearchConfig(enabled=search, **search_kw))


def _png(arr, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, "PNG", **params)
    return buf.getvalue()


def _gradient(h=40, w=40) -> np.ndarray:
    return np.tile(np.linspace(60, 255, w, dtype=np.uint8), (h, 1))


def test_guard_keeps_source_when_prediction_would_change():
    src = _png(_gradient())
    model = NiceModel(Brightness(), ConstantGates(-10.0), _cfg(), uri="test")
    (res,) = Compressor(model).compress([SourceItem("a.png", src)])
    assert res.row["status"] == "kept_original"
    assert res.output == src  # byte-identical source
    assert res.row["pred_output"] == res.row["pred_source"] == 1
    assert res.row["guard_retries"] == 2  # tau 0.5, then 0.3 and 0.1 were tried
    assert "prediction changed" in res.row["error"]


def test_guard_retries_with_denser_mask():
    src = _png(_gradient(), compress_level=0)  # an unoptimised source leaves room to save
    # Deterministic gate = 0.4 everywhere: off at tau 0.5 (prediction flips), on at tau 0.3.
    la = float(np.log((0.5 / 1.2) / (1 - 0.5 / 1.2)))
    model = NiceModel(Brightness(), ConstantGates(la), _cfg(), uri="test")
    (res,) = Compressor(model).compress([SourceItem("a.png", src)])
    row = res.row
    assert row["status"] == "compressed" and row["tau"] == pytest.approx(0.3) and row["guard_retries"] == 1
    assert row["pred_output"] == row["pred_source"]
    assert row["output_bytes"] == len(res.output) < len(src)
    assert Image.open(io.BytesIO(res.output)).tobytes() == Image.open(io.BytesIO(src)).tobytes()


def test_guard_never_stores_a_larger_file():
    rng = np.random.default_rng(0)
    src = _png(rng.integers(100, 256, (32, 32), dtype=np.uint8), optimize=True)
    model = NiceModel(Brightness(), ConstantGates(10.0), _cfg(), uri="test")  # keep everything
    (res,) = Compressor(model).compress([SourceItem("a.png", src)])
    assert res.row["status"] == "kept_original" and res.output == src
    assert res.row["output_bytes"] <= res.row["source_bytes"]


def test_bad_inputs_become_rows_not_crashes():
    good = _png(_gradient(), compress_level=0)
    rgb = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(rgb, "PNG")
    items = [SourceItem("empty.png", b""), SourceItem("text.jpg", b"hello, not an image"),
             SourceItem("trunc.png", good[: len(good) // 2]), SourceItem("rgb.png", rgb.getvalue()),
             SourceItem("good.png", good)]
    model = NiceModel(Brightness(), ConstantGates(10.0), _cfg(), uri="test")
    rows = {r.row["source_uri"]: r.row for r in Compressor(model).compress(items)}
    assert len(rows) == 5
    assert rows["empty.png"]["status"] == "failed" and "empty" in rows["empty.png"]["error"]
    assert rows["text.jpg"]["status"] == "failed" and "not an image" in rows["text.jpg"]["error"]
    assert rows["trunc.png"]["status"] == "failed" and "truncated" in rows["trunc.png"]["error"]
    assert rows["rgb.png"]["status"] == "skipped" and "greyscale" in rows["rgb.png"]["error"]
    assert rows["good.png"]["status"] == "compressed"


def test_decompression_bomb_is_skipped():
    img = Image.new("L", (9000, 9000))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    cfg = _cfg()
    cfg.guard.max_pixels = 1_000_000
    model = NiceModel(Brightness(), ConstantGates(10.0), cfg, uri="test")
    (res,) = Compressor(model, cfg).compress([SourceItem("bomb.png", buf.getvalue())])
    assert res.row["status"] == "skipped" and "exceeds" in res.row["error"]


class RightHalfGates(nn.Module):
    """Scores rising from left to right: sparse keep levels keep the bright right side."""

    def forward(self, x):
        h, w = grid_shape(x.shape[-2], x.shape[-1], 1)
        return torch.linspace(-5, 5, w).expand(x.shape[0], 1, h, w).clone()


def _decoded_class(data: bytes) -> int:
    x = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255)
    return int(Brightness()(x[None, None]).argmax(1))


def test_search_stores_the_smallest_candidate_that_keeps_the_prediction():
    src = _png(_gradient(), compress_level=0)
    model = NiceModel(Brightness(), RightHalfGates(), _cfg(search=True), uri="test")
    (res,) = Compressor(model).compress([SourceItem("a.png", src, key="d/a.png")])
    row = res.row
    assert row["status"] == "compressed" and row["format_out"] == "webp"
    assert res.output[:4] == b"RIFF" and res.output[8:12] == b"WEBP" and len(res.output) == row["output_bytes"]
    assert row["output_bytes"] < len(src) and row["tau"] is None
    # The stored file is what was classified: decoding it gives the source's class.
    assert _decoded_class(res.output) == row["pred_source"] == row["pred_output"] == 1
    params = json.loads(row["codec_params"])
    assert params["keep"] in SearchConfig().keep
    # Zero mixing: a keep level below 1 blanks the dark left side first (lowest scores), which
    # the brightness classifier tolerates, so the search keeps fewer pixels than the image has.
    assert row["mask_density"] == pytest.approx(params["keep"], abs=0.03)


def test_search_never_flips_and_keeps_sources_nothing_beats():
    rng = np.random.default_rng(0)
    src = _png(rng.integers(100, 256, (32, 32), dtype=np.uint8), optimize=True)
    buf = io.BytesIO()
    Image.new("1", (4, 4), 1).save(buf, "PNG", optimize=True)
    tiny = buf.getvalue()  # a white 1-bit PNG: no PNG re-encode is smaller
    model = NiceModel(Brightness(), RightHalfGates(), _cfg(search=True, formats=("source",)), uri="test")
    rows = {r.row["source_uri"]: r for r in Compressor(model).compress([SourceItem("n.png", src), SourceItem("t.png", tiny)])}
    assert rows["t.png"].row["status"] == "kept_original" and rows["t.png"].output == tiny
    n = rows["n.png"]
    if n.row["status"] == "compressed":
        assert _decoded_class(n.output) == n.row["pred_source"] and len(n.output) < len(src)
    else:
        assert n.output == src


def test_search_in_the_source_container():
    src = _png(_gradient(), compress_level=0)
    model = NiceModel(Brightness(), RightHalfGates(), _cfg(search=True, formats=("source",)), uri="test")
    (res,) = Compressor(model).compress([SourceItem("a.png", src)])
    assert res.row["status"] == "compressed" and res.row["format_out"] == "png"
    assert res.output.startswith(b"\x89PNG") and _decoded_class(res.output) == 1
