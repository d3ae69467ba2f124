"""Pipeline definitions (wiring only) and the ways to run them: local, compile, submit, schedule.

The pipelines are imported on first use (PEP 562): `pipeline.cli` is the `nice` command and
`pipeline.s3_local` a test and demo helper, and neither may need kfp for the library's work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PIPELINES", "recompress", "train_and_compress"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pipeline.recompress import recompress
    from pipeline.train_and_compress import train_and_compress

    found = {"PIPELINES": {"train-and-compress": train_and_compress, "recompress": recompress},
             "recompress": recompress, "train_and_compress": train_and_compress}
    globals().update(found)  # bound once: later lookups skip this function
    return found[name]
