import pyarrow.parquet as pq

from nice.cli import main


def test_data_fetch_offline_finds_mnist(capsys):
    assert main(["data", "fetch", "--dataset", "mnist", "--offline"]) == 0
    assert "mnist:" in capsys.readouterr().out


def test_demo_end_to_end_small(tmp_path, capsys):
    """The demo's whole path (train both models, export PNGs, compress, summary) on a slice."""
    rc = main(["demo", "--direct", "--workdir", str(tmp_path), "--limit", "40", "--limit-train", "3000",
               "--epochs", "1", "--epochs-classifier", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    for line in ("classifier test accuracy", "mask density", "accuracy on the stored compressed files",
                 "source bytes", "output bytes", "status compressed", "status kept_original"):
        assert line in out
    rows = pq.read_table(tmp_path / "savings.parquet").to_pylist()
    assert len(rows) == 40
    assert all(r["pred_output"] == r["pred_source"] for r in rows if r["status"] == "compressed")
    # A second run reuses the trained models instead of training again.
    assert main(["demo", "--direct", "--workdir", str(tmp_path), "--limit", "40", "--limit-train", "3000",
                 "--epochs", "1", "--epochs-classifier", "1"]) == 0


def test_codec_flags_choose_the_path():
    import argparse

    from nice.cli import _add_config, _config

    p = argparse.ArgumentParser()
    _add_config(p, codec=True)
    default = _config(p.parse_args([]))
    assert default.search.enabled and default.search.formats == ("webp",)
    src = _config(p.parse_args(["--format", "source"]))
    assert src.search.enabled and src.search.formats == ("source",) and src.codec.format == "source"
    for flags in (["--fixed"], ["--quality", "60"], ["--tau", "0.3"]):
        assert not _config(p.parse_args(flags)).search.enabled, flags
    fixed = _config(p.parse_args(["--format", "jpeg", "--quality", "40"]))
    assert (fixed.codec.format, fixed.codec.quality, fixed.search.enabled) == ("jpeg", 40, False)
