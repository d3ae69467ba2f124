"""`compress_folder`: an archive run (`nice.compress.archive`) from one local folder into another.

It is `nice compress SRC DST` for two folders, the same code path: outputs mirror the source
tree, the run's state, savings table and summary go to `DST/_nice/runs/<run_id>/`, and a rerun
resumes an interrupted run or skips what is already done. Sources are only ever read.
"""

from __future__ import annotations

from pathlib import Path

from nice.bundle import ModelRef, NiceModel
from nice.compress.archive import ArchiveOptions, ArchiveRun, RunSummary
from nice.config import NiceConfig
from nice.storage import LocalStore

__all__ = ["RunSummary", "compress_folder"]


def compress_folder(src: str | Path, dst: str | Path, model: NiceModel | ModelRef, cfg: NiceConfig | None = None,
                    *, class_names: list[str] | None = None, savings: str | Path | None = None,
                    batch_size: int = 64, device: str = "cpu", progress: bool = True,
                    run_id: str | None = None) -> RunSummary:
    """Compress every file under `src` into `dst`; `class_names` label `class/file` keys
    (default: the model's); `savings` also writes the merged table there."""
    opts = ArchiveOptions(batch_size=batch_size, device=device, progress=progress, run_id=run_id,
                          class_names=class_names, savings=str(savings) if savings else None)
    return ArchiveRun(LocalStore(src), LocalStore(dst), model, cfg, opts).run()
