"""`nice compress-folder`: compress every file under a local folder into another folder.

Outputs mirror the source tree (the extension follows the output format); the savings
table and a JSON summary go to `DST/_nice/<run_id>/`. Sources are only ever read.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nice.bundle import NiceModel
from nice.compress.engine import Compressor, SourceItem
from nice.compress.outputs import store_output
from nice.compress.savings import write_parquet
from nice.config import NiceConfig
from nice.storage import LocalStore, label_of

META_DIR = "_nice"


@dataclass
class RunSummary:
    run_id: str
    images: int
    counts: dict[str, int]
    source_bytes: int
    output_bytes: int
    bytes_ratio: float
    mean_mask_density: float | None
    accuracy_source: float | None
    accuracy_output: float | None
    prediction_flips: int
    savings_path: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_files(src: Path, exclude: Path | None = None) -> list[Path]:
    files = []
    for p in sorted(src.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        if exclude is not None and p.resolve().is_relative_to(exclude.resolve()):
            continue
        if any(part.startswith(".") or part == META_DIR for part in p.relative_to(src).parts):
            continue
        files.append(p)
    return files


def summarise(rows: list[dict[str, Any]], run_id: str, savings_path: str) -> RunSummary:
    counts = Counter(r["status"] for r in rows)
    src = sum(r["source_bytes"] or 0 for r in rows)
    out = sum(r["output_bytes"] or 0 for r in rows if r["output_bytes"] is not None)
    src_stored = sum(r["source_bytes"] for r in rows if r["output_bytes"] is not None)
    densities = [r["mask_density"] for r in rows if r["status"] == "compressed"]
    labelled = [r for r in rows if r["label"] is not None and r["pred_source"] is not None]
    acc_src = sum(r["pred_source"] == r["label"] for r in labelled) / len(labelled) if labelled else None
    acc_out = sum(r["pred_output"] == r["label"] for r in labelled) / len(labelled) if labelled else None
    flips = sum(1 for r in rows if r["status"] == "compressed" and r["pred_output"] != r["pred_source"])
    return RunSummary(
        run_id=run_id, images=len(rows), counts={s: counts.get(s, 0) for s in
                                                  ("compressed", "kept_original", "skipped", "failed")},
        source_bytes=src, output_bytes=out, bytes_ratio=(out / src_stored) if src_stored else 1.0,
        mean_mask_density=sum(densities) / len(densities) if densities else None,
        accuracy_source=acc_src, accuracy_output=acc_out, prediction_flips=flips,
        savings_path=savings_path)


def compress_folder(src: str | Path, dst: str | Path, model: NiceModel, cfg: NiceConfig | None = None, *,
                    class_names: list[str] | None = None, savings: str | Path | None = None,
                    batch_size: int = 64, device: str = "cpu", progress: bool = True,
                    run_id: str | None = None) -> RunSummary:
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise NotADirectoryError(f"source folder {src} does not exist")
    if dst.resolve() == src.resolve():
        raise ValueError("destination must differ from the source: sources are never modified")
    dst.mkdir(parents=True, exist_ok=True)
    run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    class_names = class_names or model.class_names
    compressor = Compressor(model, cfg, run_id=run_id, device=device, batch_size=batch_size)
    files = list_files(src, exclude=dst)
    rows: list[dict[str, Any]] = []
    saved = 0
    out = LocalStore(dst)  # atomic writes, keys confined to DST
    bar = tqdm(total=len(files), desc="compress", unit="img", disable=not progress)
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        items = []
        for p in chunk:
            key = p.relative_to(src).as_posix()
            items.append(SourceItem(uri=str(p.resolve()), key=key, data=p.read_bytes(),
                                    label=label_of(key, class_names)))
        for res in compressor.compress(items):
            rows.append(store_output(out, res))
            saved += rows[-1]["saved_bytes"] or 0
        bar.update(len(chunk))
        bar.set_postfix(saved=f"{saved / 1e6:.2f}MB")
    bar.close()
    meta = dst / META_DIR / run_id
    path = write_parquet(rows, meta / "savings.parquet")
    if savings:
        write_parquet(rows, savings)
    summary = summarise(rows, run_id, str(path))
    out.put(f"{META_DIR}/{run_id}/summary.json", json.dumps(summary.to_dict(), indent=2).encode())
    return summary
