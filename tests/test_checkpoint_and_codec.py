import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from nice.checkpoint import CheckpointError, load_classifier, read_checkpoint, save_checkpoint
from nice.codec import Rung, decode, encode, final_effort, fixed_effort, fixed_rung, output_format
from nice.config import CodecConfig, NiceConfig, SearchConfig
from nice.models import build_classifier


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/nice-pwned",))


def test_checkpoint_roundtrip_with_config(tmp_path):
    cfg = NiceConfig()
    cfg.train_generator.lam = 0.37
    model = build_classifier(cfg.classifier)
    path = save_checkpoint(tmp_path / "c.pt", "classifier", model, cfg, {"acc": 0.5})
    loaded, cfg2, meta = load_classifier(path)
    assert cfg2.train_generator.lam == 0.37 and meta == {"acc": 0.5}
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(CheckpointError, match="expected 'mask_generator'"):
        read_checkpoint(path, "mask_generator")


def test_model_directory_warns_when_nice_json_was_edited(tmp_path, caplog):
    """The checkpoints carry the config; an edited nice.json changes nothing, and says so."""
    import json
    import logging

    from nice.bundle import NiceModel
    cfg = NiceConfig()
    NiceModel.untrained(cfg, class_names=["a", "b"]).save(tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="nice.bundle"):
        assert NiceModel.load(tmp_path / "m").class_names == ["a", "b"]
    assert not caplog.records
    info = json.loads((tmp_path / "m" / "nice.json").read_text())
    info["config"]["search"]["qualities"] = [50]
    (tmp_path / "m" / "nice.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="nice.bundle"):
        model = NiceModel.load(tmp_path / "m")
    assert model.config.search.qualities == cfg.search.qualities  # the checkpoint's config
    assert "differs from the config in the checkpoints" in caplog.text


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "nice-checkpoint/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_classifier(path)
    assert not os.path.exists("/tmp/nice-pwned")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "avif"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_encode_gives_exact_bytes_that_decode(fmt, mode, tmp_path):
    img = Image.linear_gradient("L").resize((64, 48))
    if mode == "RGB":
        img = Image.merge("RGB", [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img])
    codec = CodecConfig(quality=80)
    data = encode(np.asarray(img), mode, fixed_rung(codec, fmt), fixed_effort(codec))
    (tmp_path / f"x.{fmt}").write_bytes(data)
    assert os.path.getsize(tmp_path / f"x.{fmt}") == len(data)
    back = decode(data, mode)
    assert back.shape[:2] == (48, 64) and back.dtype == np.uint8
    assert Image.open(io.BytesIO(data)).format == fmt.upper()


def test_encode_strips_metadata():
    img = Image.new("RGB", (16, 16), "red")
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "secret description" * 50
    img.save(buf, "JPEG", exif=exif.tobytes())
    pixels = np.asarray(Image.open(buf).convert("RGB"))
    for rung in (Rung("jpeg", quality=85), Rung("webp", quality=50), Rung("png", levels=256)):
        data = encode(pixels, "RGB", rung, final_effort(CodecConfig(), SearchConfig()))
        assert b"secret description" not in data and b"Exif" not in data


def test_output_format_follows_source():
    cfg = CodecConfig()
    assert output_format(cfg, "JPEG") == "jpeg" and output_format(cfg, "GIF") == "png"
    assert output_format(CodecConfig(format="webp"), "PNG") == "webp"
    with pytest.raises(ValueError):
        output_format(CodecConfig(format="bmp"), "PNG")


def test_grey_webp_decodes_as_grey_and_colour_stays_colour():
    from nice.imageio import decode_image

    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "WEBP", lossless=True)
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "RGB"  # WebP has no grey mode
    dec = decode_image(buf.getvalue()).image
    assert dec.mode == "L" and np.array_equal(np.asarray(dec), grey)
    colour = np.stack([grey, grey, 255 - grey], -1)
    buf = io.BytesIO()
    Image.fromarray(colour, "RGB").save(buf, "PNG")
    assert decode_image(buf.getvalue()).image.mode == "RGB"
