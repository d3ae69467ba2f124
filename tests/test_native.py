"""Native resolution: the classifier's view, native masks, native mixing and the guard, on real
encoded photos (scikit-image's, re-encoded by tests/photos.py) of sizes other than the view."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.compress.engine import Compressor, SourceItem, unpack_mask
from nice.config import ClassifierConfig, colour_default
from nice.imageio import decode_image
from nice.view import View

sys.path.insert(0, str(Path(__file__).parent))
import photos  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NICE = Path(sys.executable).parent / "nice"


@pytest.fixture(scope="module")
def colour_model() -> NiceModel:
    """A small colour model with a 64 px letterbox view (untrained: the guard's logic is what is
    tested; predictions are deterministic)."""
    cfg = colour_default()
    cfg.classifier.image_size = 64
    cfg.classifier.width = 8
    torch.manual_seed(0)
    return NiceModel.untrained(cfg, uri="")


# -- the view ---------------------------------------------------------------------------
def test_letterbox_keeps_the_whole_image_and_its_aspect():
    v = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=128))
    g = v.geometry(480, 640)
    assert g.content == (96, 128) and g.offset == (16, 0) and not g.identity
    img = np.asarray(photos.photo_image("astronaut", (640, 480)))
    out = v.apply(img)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    pad = out[:16].reshape(-1, 3)
    assert (pad == pad[0]).all(), "letterbox pads with one colour (the content's mean)"
    assert v.geometry(128, 128).identity and v.apply(out) is out


def test_a_grey_image_is_a_valid_colour_image_and_any_size_is_valid():
    v = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=64))
    for shape in ((1, 1), (20, 20), (3000, 17)):
        out = v.apply(np.full(shape, 77, np.uint8))
        assert out.shape == (64, 64, 3) and (out == 77).all()
    lenet = View(ClassifierConfig())  # LeNet's 28x28 grey view
    assert lenet.apply(np.zeros((20, 20), np.uint8)).shape == (28, 28)
    assert lenet.apply(np.zeros((480, 640), np.uint8)).shape == (28, 28)


def test_center_crop_is_torchvisions_resize_then_crop():
    v = View(ClassifierConfig(arch="resnet18", in_channels=3, image_size=224, view="center_crop"))
    g = v.geometry(480, 640)
    assert g.content == (256, 341) and g.offset == (-16, -58)
    assert v.apply(np.zeros((480, 640, 3), np.uint8)).shape == (224, 224, 3)


def test_training_crops_respect_the_view():
    from torchvision.transforms.functional import to_tensor

    from nice.config import ClassifierTrainConfig
    from nice.view import Augment

    v = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=64))
    aug = Augment.of(v, ClassifierTrainConfig())  # auto: photos are cropped, small images not
    photo = to_tensor(photos.photo_image("astronaut", (640, 480)))
    torch.manual_seed(0)
    a, b = aug(photo), aug(photo)
    assert a.shape == b.shape == (3, 64, 64) and not torch.equal(a, b), "a new crop each time"
    assert not torch.equal(a, v.tensor(photo)), "a crop differs from the whole view"
    small = torch.rand(3, 48, 64)
    assert torch.equal(aug(small), v.tensor(small)), "auto leaves images at or below the view alone"
    crop = Augment(v, "crop", (0.5, 0.5))
    assert not torch.equal(crop(small), v.tensor(small)) and crop(small).shape == (3, 64, 64)
    assert Augment.of(v, ClassifierTrainConfig(augment="none")) is None
    assert Augment.of(v, ClassifierTrainConfig(crop_scale=(1.0, 1.0))) is None
    with pytest.raises(ValueError, match="augment must be one of"):
        Augment(v, "flip")
    with pytest.raises(ValueError, match="crop_scale"):
        Augment(v, "crop", (0.0, 1.0))


def test_training_data_of_photos_crops_the_train_split_only(tmp_path):
    from nice.config import ClassifierTrainConfig
    from nice.data.sources import training_data
    from nice.ingest.build import IngestOptions, ingest
    from nice.view import Augment

    for cls in ("cat", "cup"):
        photos.photo_folder(tmp_path / "src" / cls, n=10)
    art = ingest(f"folder:{tmp_path / 'src'}", tmp_path / "ds", IngestOptions(progress=False, val_fraction=0.2,
                                                                               test_fraction=0))
    v = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=64))
    train, val, _, _ = training_data(str(tmp_path / "ds"), view=v, augment=Augment.of(v, ClassifierTrainConfig()))
    torch.manual_seed(0)
    first, second = [x for x, _ in train], [x for x, _ in train]
    assert all(x.shape == (3, 64, 64) for x in first)
    assert sum(not torch.equal(a, b) for a, b in zip(sorted(first, key=torch.sum), sorted(second, key=torch.sum))) > 0
    v1, v2 = [x for x, _ in val], [x for x, _ in val]
    assert all(torch.equal(a, b) for a, b in zip(v1, v2)), "validation sees the plain view"


@pytest.mark.parametrize("policy", ["letterbox", "resize", "center_crop"])
def test_native_mask_is_conservative(policy):
    """Brute force: a native block is kept iff some open view gate overlaps its view footprint."""
    v = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=64, view=policy))
    rng = np.random.default_rng(1)
    for h, w in ((480, 640), (1000, 333), (50, 70)):
        g = v.geometry(h, w)
        z = (rng.random((8, 8)) < 0.15).astype(np.uint8)
        got = v.native_mask(z, g, 8, 16)
        assert got.shape == (-(-h // 16), -(-w // 16))
        sy, sx = g.content[0] / h, g.content[1] / w
        for r in range(got.shape[0]):
            for c in range(got.shape[1]):
                y0, y1 = r * 16 * sy + g.offset[0], min((r + 1) * 16, h) * sy + g.offset[0]
                x0, x1 = c * 16 * sx + g.offset[1], min((c + 1) * 16, w) * sx + g.offset[1]
                cells = z[max(0, int(np.floor(y0 / 8))):max(0, int(np.ceil(y1 / 8))),
                          max(0, int(np.floor(x0 / 8))):max(0, int(np.ceil(x1 / 8)))]
                assert got[r, c] == int(cells.any()), (policy, h, w, r, c)


# -- compression at native size ------------------------------------------------------------
def _items(paths: list[Path]) -> list[SourceItem]:
    return [SourceItem(uri=str(p), key=p.name, data=p.read_bytes()) for p in paths]


def _recheck(model: NiceModel, row: dict, data: bytes, source: bytes) -> None:
    """Decode the stored file independently: source dimensions and orientation, smaller, the
    same top-1 through the view, the ICC profile kept."""
    src = decode_image(source)
    out = Image.open(io.BytesIO(data))
    out.load()
    assert out.size == src.size == (row["width"], row["height"]), row["source_key"]
    assert len(data) < len(source)
    view = View(model.config.classifier)
    pixels = np.asarray(out.convert("RGB"))
    x = torch.from_numpy(view.apply(pixels)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert int(model.classifier(x).argmax(1)) == row["pred_source"] == row["pred_output"]
    if src.icc:
        assert out.info.get("icc_profile") == src.icc, row["source_key"]
    assert "exif" not in out.info or not out.info["exif"], "metadata is stripped by default"
    mask = unpack_mask(row)
    assert mask.shape == (-(-row["height"] // row["block"]), -(-row["width"] // row["block"]))


def test_real_photos_at_native_size(colour_model, tmp_path):
    paths = photos.photo_folder(tmp_path / "src", n=10)
    icc = tmp_path / "src" / "srgb_icc.jpg"
    icc.write_bytes(photos.photo("chelsea", (700, 500), quality=90, icc_profile=photos.srgb_profile()))
    paths.append(icc)
    items = _items(paths)
    results = Compressor(colour_model).compress(items)
    assert len(results) == len(items), "every file one row"
    by_key = {r.row["source_key"]: r for r in results}
    for item in items:
        res = by_key[item.key]
        row = res.row
        assert row["status"] in ("compressed", "kept_original"), (item.key, row["status"], row["error"])
        if row["status"] == "compressed":
            _recheck(colour_model, row, res.output, item.data)
            assert row["block"] == 16 and row["codec_params"]
    rotated = by_key["rotated6.jpg"].row
    assert (rotated["width"], rotated["height"]) == (300, 400), "upright dimensions"
    assert sum(r.row["status"] == "compressed" for r in results) >= 8


def test_a_large_view_ranks_with_the_classifiers_features_and_stores_native_photos(tmp_path):
    """The colour default at a 224 px view (scenes) builds the `features` generator; the engine
    fuses its trunk and stores native-size photos that keep the prediction."""
    from nice.models.generators import FeatureGenerator

    cfg = colour_default(224)
    cfg.classifier.width = 8
    torch.manual_seed(0)
    model = NiceModel.untrained(cfg, uri="")
    assert isinstance(model.generator, FeatureGenerator)
    items = _items(photos.photo_folder(tmp_path / "src", n=4))
    results = Compressor(model).compress(items)
    assert [r.row["status"] for r in results].count("compressed") >= 3, [r.row["error"] for r in results]
    by_key = {r.row["source_key"]: r for r in results}
    for item in items:
        res = by_key[item.key]
        if res.row["status"] == "compressed":
            _recheck(model, res.row, res.output, item.data)


def test_one_batch_of_views_for_many_shapes_and_a_pixel_budget(colour_model, tmp_path):
    """The networks see one batch of views across native shapes; a small pixel budget splits the
    work into chunks and gives the same rows."""
    paths = photos.photo_folder(tmp_path / "src", n=10)
    calls = []
    c = Compressor(colour_model)
    probs = c.classify.probs  # the network may be a frozen TorchScript module: count at the wrapper
    c.classify.probs = lambda x: (calls.append(len(x)), probs(x))[1]
    big = c.compress(_items(paths))
    assert calls[0] == 10, f"the first classifier call classifies every view at once ({calls[:3]})"
    small = Compressor(colour_model, pixel_budget=300_000).compress(_items(paths))
    key = lambda r: (r.row["source_key"], r.row["status"], r.row["output_bytes"], r.row["pred_source"])  # noqa: E731
    assert [key(r) for r in big] == [key(r) for r in small]


def test_a_panorama_wider_than_webp_is_an_outcome_not_a_failure(colour_model, tmp_path):
    wide = photos.photo("rocket", (17000, 120), quality=90)
    other = photos.photo("coffee", (640, 480), quality=90)
    cfg = colour_model.config.with_overrides({"search": {"native_formats": ["webp"]}})
    res = Compressor(colour_model, cfg).compress([SourceItem("wide.jpg", wide, "wide.jpg"),
                                                  SourceItem("other.jpg", other, "other.jpg")])
    rows = {r.row["source_key"]: r.row for r in res}
    assert rows["wide.jpg"]["status"] == "kept_original"
    assert "16383" in rows["wide.jpg"]["error"]
    assert rows["other.jpg"]["status"] == "compressed"
    # with other formats allowed the panorama is stored in one that holds it
    cfg = colour_model.config.with_overrides({"search": {"native_formats": ["webp", "avif", "jpeg"]}})
    res = Compressor(colour_model, cfg).compress([SourceItem("wide.jpg", wide, "wide.jpg")])
    row = res[0].row
    assert row["status"] in ("compressed", "kept_original") and "16383" in (row["error"] or "")
    if row["status"] == "compressed":
        assert row["format_out"] != "webp" and Image.open(io.BytesIO(res[0].output)).size == (17000, 120)


class _ErrorToSource:
    """A photo, a 64 px view, and the mean error of a view against the source's: what the
    native search tests' classifiers (real functions of the decoded pixels) are built on."""

    def __init__(self, name: str, size: tuple[int, int]) -> None:
        from nice.codec import final_effort
        from nice.config import CodecConfig, SearchConfig

        self.view = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=64))
        self.x = np.asarray(photos.photo_image(name, size))
        self.ref = self.view.apply(self.x).astype(np.float32)
        self.effort = final_effort(CodecConfig(), SearchConfig())

    def __call__(self, v: np.ndarray) -> float:
        return float(np.abs(v.astype(np.float32) - self.ref).mean())

    def decoded(self, data: bytes) -> np.ndarray:
        from nice.codec import decode

        return self.view.apply(decode(data, "RGB"))

    def of(self, fmt: str, quality: int) -> float:
        from nice.codec import Rung, encode

        return self(self.decoded(encode(self.x, "RGB", Rung(fmt, quality=quality), self.effort)))

    def search(self, classify, qualities: tuple[int, ...] = ()):
        from nice.compress.native import NativeImage, NativeSearch
        from nice.config import MixingConfig

        search = NativeSearch(self.view, classify, MixingConfig(mode="mean", pool=8), self.effort, tries=3,
                              proxy_pixels=50_000, qualities=qualities)
        return search, NativeImage(self.x, block=16, pool=16, source_bytes=10**9, pred=0)


def _answers(keeps: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0 if k else 1 for k in keeps]), np.ones(len(keeps), np.float32)


def test_a_flip_in_every_native_format_falls_back_to_another_format():
    """A prediction that the primary format's artefacts turn at every level is retried in
    `native_fallback` on the same passing levels before the source is kept. The classifier here
    is a real function of the decoded pixels: it keeps its answer while the view stays within
    an error that JPEG q95 meets and AVIF q5 does not."""
    from nice.codec import Rung

    err = _ErrorToSource("astronaut", (512, 384))
    jpeg_err, avif_err = err.of("jpeg", 95), err.of("avif", 5)
    assert jpeg_err < avif_err
    limit = (jpeg_err + avif_err) / 2

    def classify(views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _answers([err(v) < limit for v in views])

    search, img = err.search(classify)
    grid = np.zeros((384 // 16, 512 // 16), np.float32)
    levels = [(0.1, np.where(np.arange(grid.size).reshape(grid.shape) % 10 == 0, 1.0, 0.0).astype(np.float32)),
              (1.0, np.ones_like(grid))]
    alone = search.run(img, levels, [Rung("avif", quality=5)])
    assert alone.choice is None, "AVIF q5 flips the only passing level: the source would be kept"
    out = search.run(img, levels, [Rung("avif", quality=5)], [Rung("avif", quality=95), Rung("jpeg", quality=95)])
    assert out.choice is not None and out.choice.fmt == "jpeg" and out.choice.level == 1.0
    assert classify(err.decoded(out.choice.data)[None])[0][0] == 0, "the stored file verifies"
    assert out.levels_tried == 2, "one AVIF try, one JPEG try: a format already tried is not retried"


def test_a_borderline_prediction_is_rescued_up_the_quality_ladder():
    """When every try flipped, the sparsest passing level is retried up the quality ladder,
    lowest first: a borderline answer turns with codec artefacts, not monotonically in quality
    (scenes frame 373). The classifier is a real function of the decoded view whose answer
    turns at AVIF q80's error and back at q35's."""
    from nice.codec import Rung

    err = _ErrorToSource("chelsea", (480, 320))
    e = {q: err.of("avif", q) for q in (5, 35, 80)}
    assert 0 < e[80] < e[35] < e[5]

    def classify(views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _answers([err(v) < e[80] / 2 or (e[80] + e[35]) / 2 < err(v) < (e[35] + e[5]) / 2 for v in views])

    search, img = err.search(classify, qualities=(5, 35))
    out = search.run(img, [(1.0, np.ones((320 // 16, 480 // 16), np.float32))], [Rung("avif", quality=80)])
    assert out.choice is not None and out.choice.rung == Rung("avif", quality=35), out.choice
    assert out.levels_tried == 3, "q80 flipped, then q5 flipped and q35 kept"
    assert classify(err.decoded(out.choice.data)[None])[0][0] == 0, "the stored file verifies"


@pytest.mark.parametrize("fmt", ["webp", "avif"])
def test_keep_metadata_keeps_exif_without_thumbnail(colour_model, fmt):
    data = photos.rotated_jpeg("chelsea", (400, 300), orientation=6)
    cfg = colour_model.config.with_overrides({"codec": {"strip_metadata": False},
                                              "search": {"native_formats": [fmt]}})
    res = Compressor(colour_model, cfg).compress([SourceItem("r.jpg", data, "r.jpg")])[0]
    assert res.row["status"] == "compressed", res.row["error"]
    assert res.row["format_out"] == fmt
    out = Image.open(io.BytesIO(res.output))
    exif = out.getexif()
    if fmt == "avif":
        # AVIF holds orientation in its irot/imir boxes, not the EXIF tag: Pillow writes none
        # for upright pixels (and drops the tag), so no tag or 1 both mean upright.
        assert exif.get(0x0112) in (None, 1), "pixels are upright"
    else:
        assert exif and exif.get(0x0112) == 1, "pixels are upright: orientation 1"
    assert out.size == (400, 300)


def test_user_weights_for_a_torchvision_architecture(tmp_path, capsys):
    """`train-classifier --arch mobilenet_v3_small --classifier-weights FILE --epochs 0`: the
    user's torchvision state dict becomes a NICE classifier with its view; a file for another
    class count is one line and exit 2."""
    from torchvision.models import mobilenet_v3_small

    from nice.cli import main

    src = tmp_path / "src"
    for i, name in enumerate(["astronaut", "chelsea", "coffee", "rocket"] * 3):
        d = src / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.jpg").write_bytes(photos.photo(name, (120 + 10 * i, 90 + 5 * i), quality=85))
    assert main(["ingest", f"folder:{src}", "--out", str(tmp_path / "ds")]) == 0
    torch.manual_seed(0)
    weights = tmp_path / "mine.pt"
    torch.save(mobilenet_v3_small(weights=None, num_classes=2).state_dict(), weights)
    capsys.readouterr()
    args = ["train-classifier", "--dataset", str(tmp_path / "ds"), "--arch", "mobilenet_v3_small",
            "--image-size", "96", "--classifier-weights", str(weights), "--epochs", "0"]
    assert main([*args, "--out", str(tmp_path / "clf.pt")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["config"]["classifier"]["arch"] == "mobilenet_v3_small" and res["config"]["classifier"]["image_size"] == 96
    from nice.checkpoint import load_classifier

    clf, cfg, _ = load_classifier(tmp_path / "clf.pt")
    mine = mobilenet_v3_small(weights=None, num_classes=2)
    mine.load_state_dict(torch.load(weights, weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(clf.net.state_dict().values(), mine.state_dict().values()))
    torch.save(mobilenet_v3_small(weights=None, num_classes=5).state_dict(), weights)
    done = subprocess.run([str(NICE), *args, "--out", str(tmp_path / "bad.pt")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not fit" in lines[0], lines


def test_compress_folder_of_native_photos_writes_native_rows(colour_model, tmp_path):
    from nice.compress.folder import compress_folder

    photos.photo_folder(tmp_path / "src", n=8)
    model_dir = colour_model.save(tmp_path / "model")
    summary = compress_folder(tmp_path / "src", tmp_path / "dst", NiceModel.load(model_dir),
                              savings=tmp_path / "s.parquet", progress=False)
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert len(rows) == 8 and summary.counts.get("failed", 0) == 0
    for r in rows:
        if r["status"] == "compressed":
            out = Image.open(r["output_uri"])
            assert out.size == (r["width"], r["height"])
            assert r["mask_height"] == -(-r["height"] // r["block"])


def test_explain_draws_the_native_mask(colour_model, tmp_path):
    from nice.evaluate.explain import explain_image

    path = tmp_path / "photo.jpg"
    path.write_bytes(photos.photo("chelsea", (900, 600), quality=90))
    ex = explain_image(colour_model, str(path), tmp_path / "out")
    assert Path(ex.overlay).is_file() and 0 < ex.mask_density <= 1
    assert Image.open(ex.overlay).size[0] > 300


def test_evaluate_compares_methods_at_native_size(colour_model, tmp_path):
    """`nice evaluate` on photos of several sizes: every method encodes the native image and is
    classified through the view; NICE's point is the compress engine's own output."""
    from nice.evaluate.benchmark import run_benchmark
    from nice.evaluate.native_benchmark import needs_native

    files = [photos.photo(name, size, quality=90) for name, size in
             (("chelsea", (300, 200)), ("coffee", (240, 320)), ("astronaut", (256, 256)), ("rocket", (320, 180)))]
    labels = [0, 1, 2, 3]
    assert needs_native(files, colour_model)
    b = run_benchmark(files, labels, colour_model, qualities=(10, 50), explain_limit=4,
                      explain_methods=("nice", "gradcam"))
    by = {(p.method, p.setting): p for p in b.points}
    assert b.images == 4 and b.source_bytes == sum(map(len, files))
    rankings = {"gradcam", "integrated_gradients", "saliency", "centre", "random"}
    assert {m for m, _ in by} == {"nice", "jpeg", "webp", "oracle", "oracle-webp", "oracle-avif", "oracle-best",
                                  "whole-image search", "downsample"} | rankings
    nice = next(p for p in b.points if p.method == "nice")
    assert nice.guarded and nice.flips == 0 and 0 < nice.bytes_ratio <= 1.0
    # Every other ranking went through the same engine and guard, and every row has its cost.
    for p in b.points:
        assert p.cpu_ms is not None and p.cpu_ms > 0, p
        if p.method in rankings | {"nice"}:
            assert p.guarded and p.flips == 0 and p.rank_ms is not None and p.rank_ms > 0
    assert b.best_ranking_baseline is not None and b.best_ranking_baseline.method in rankings
    best = by[("oracle-best", "smallest of the jpeg/webp/avif oracles per image")]
    assert best.bytes_ratio <= min(by[(m, s)].bytes_ratio for m, s in by if m.startswith("oracle-") or m == "oracle")
    ladder = next(p for p in b.points if p.method == "whole-image search")
    assert ladder.flips == 0 and ladder.bytes_ratio >= best.bytes_ratio - 1e-9, \
        "the ladder's rungs are a subset of the oracles' qualities"
    q10, q50 = by[("jpeg", "q10")], by[("jpeg", "q50")]
    assert q10.bytes_ratio < q50.bytes_ratio < 1.0, "real native encodes: more quality, more bytes"
    assert by[("oracle", "lowest JPEG q keeping the prediction")].flips == 0
    assert {e.method for e in b.explain} == {"nice", "gradcam"} and b.examples is not None
    assert b.examples.pixels.shape[1:] == (64, 64, 3), "explanations are measured on the views"
    # A one-size test set at the view's own size keeps the one-size benchmark.
    same = [photos.photo("chelsea", (64, 64)), photos.photo("coffee", (64, 64))]
    assert not needs_native(same, colour_model)


def test_evaluate_takes_config_overrides_of_how_the_model_compresses(colour_model, tmp_path, capsys):
    """`nice evaluate --config FILE` evaluates the model with other search settings (as `nice
    compress --config` stores with them); a file that changes the networks' sections is one
    line and exit 2."""
    from nice.cli import main

    src = tmp_path / "src"
    for i, name in enumerate(["chelsea", "coffee", "astronaut", "rocket"] + [""] * 6):  # the model's 10 classes
        (src / f"c{i}").mkdir(parents=True)
        if name:
            (src / f"c{i}" / f"{name}.jpg").write_bytes(photos.photo(name, (320, 240), quality=90))
    model_dir = colour_model.save(tmp_path / "model")
    over = {"search": {"native_formats": ["jpeg"], "native_keep": [0.02]}}
    (tmp_path / "over.json").write_text(json.dumps(over))
    args = ["evaluate", "--model", str(model_dir), "--dataset", str(src), "--limit", "2", "--explain-limit", "1",
            "--threads", "1", "--no-track"]
    assert main([*args, "--out", str(tmp_path / "ev"), "--config", str(tmp_path / "over.json")]) == 0
    res = json.loads((tmp_path / "ev" / "benchmark.json").read_text())
    assert res["config_hash"] == colour_model.config.with_overrides(over).hash() != colour_model.config.hash()
    (tmp_path / "bad.json").write_text(json.dumps({"classifier": {"image_size": 96}}))
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--config", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifier" in err[0], err


def test_native_keep_adds_sparser_levels_for_large_photos_only(colour_model, tmp_path):
    """`search.native_keep` levels are tried on native-size photos (their views classified in the
    same batch as `keep`'s) and never on images the full search handles."""
    paths = photos.photo_folder(tmp_path / "src", n=6)
    small = tmp_path / "small.jpg"
    small.write_bytes(photos.photo("coffee", (120, 90), quality=90))

    def levels(native_keep: tuple[float, ...]) -> dict[str, float]:
        cfg = colour_model.config.with_overrides({"search": {"keep": [0.5, 1.0], "native_keep": list(native_keep)}})
        rows = [r.row for r in Compressor(colour_model, cfg).compress(_items([*paths, small]))]
        assert all(r["status"] in ("compressed", "kept_original") for r in rows), [r["error"] for r in rows]
        return {r["source_key"]: json.loads(r["codec_params"]).get("keep") for r in rows if r["status"] == "compressed"}

    without, with_ = levels(()), levels((0.01,))
    assert 0.01 not in without.values()
    assert list(with_.values()).count(0.01) >= 1, with_
    assert with_["small.jpg"] in (0.5, 1.0), "the full search keeps to `keep`"
