"""Pipeline definitions (wiring only) and the ways to run them: local, compile, upload, submit,
schedule.

The pipelines are imported on first use (PEP 562): `pipeline.cli` is the `nice` command and
`pipeline.s3_local` a test and demo helper, and neither may need kfp for the library's work.
`PIPELINES` holds each pipeline with the default settings, `BUILDERS` the function that builds
it with other `pipeline.settings.PipelineSettings`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUILDERS", "PIPELINES", "recompress", "train_and_compress"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    rc, tc = import_module("pipeline.recompress"), import_module("pipeline.train_and_compress")

    found = {"PIPELINES": {"train-and-compress": tc.train_and_compress, "recompress": rc.recompress},
             "BUILDERS": {"train-and-compress": tc.build, "recompress": rc.build},
             "recompress": rc.recompress, "train_and_compress": tc.train_and_compress}
    globals().update(found)  # bound once: later lookups skip this function
    return found[name]
