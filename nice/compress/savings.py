"""The per-image savings table (DESIGN.md §4) as an explicit Arrow schema."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

STATUSES = ("compressed", "kept_original", "skipped", "failed")

SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("source_uri", pa.string()),
    ("source_key", pa.string()),  # path relative to the source root / prefix
    ("source_etag", pa.string()),
    ("source_bytes", pa.int64()),
    ("output_uri", pa.string()),
    ("output_bytes", pa.int64()),
    ("saved_bytes", pa.int64()),
    ("ratio", pa.float64()),  # output_bytes / source_bytes
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format_in", pa.string()),
    ("format_out", pa.string()),
    ("codec_params", pa.string()),  # JSON
    ("block", pa.int32()),
    ("tau", pa.float64()),  # the tau used by the fixed path; null when the search ranked the mask (keep level in codec_params)
    ("mask_density", pa.float64()),  # fraction of pixels kept at full resolution
    ("mask", pa.binary()),  # np.packbits of the gate grid, row-major
    ("mask_height", pa.int32()),  # gate grid shape, to unpack `mask`
    ("mask_width", pa.int32()),
    ("pred_source", pa.int32()),
    ("pred_output", pa.int32()),
    ("prob_source", pa.float64()),
    ("prob_output", pa.float64()),
    ("label", pa.int32()),
    ("guard_retries", pa.int32()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("model_uri", pa.string()),  # the resolved model: models:/<name>/<version>, or its directory
    ("model_run_id", pa.string()),  # the MLflow run that logged that model ("" for a directory)
    ("model_digest", pa.string()),  # nice.lineage.weights_digest: part of the idempotency key
    ("config_hash", pa.string()),
    ("elapsed_ms", pa.float64()),
    ("processed_at", pa.timestamp("us", tz="UTC")),
])


def empty_row() -> dict[str, Any]:
    return {name: None for name in SCHEMA.names}


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    for row in rows:
        if row["status"] not in STATUSES:
            raise ValueError(f"bad status {row['status']!r}")
    return pa.Table.from_pylist(rows, schema=SCHEMA)
