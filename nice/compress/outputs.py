"""Writing a compression result to the destination store and completing its row."""

from __future__ import annotations

from typing import Any

from nice.codec import output_name
from nice.compress.engine import ItemResult
from nice.storage import Store


def store_output(store: Store, res: ItemResult, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Put `res.output` (if any) under its output name; a failed put turns the row `failed`."""
    row = res.row
    if res.output is None:
        return row
    key = output_name(row["source_key"], res.format_out)
    try:
        store.put(key, res.output, metadata)
    except Exception as exc:  # noqa: BLE001 - an unsafe key or a network error becomes a row
        row.update(status="failed", error=f"upload failed: {type(exc).__name__}: {exc}",
                   output_uri=None, output_bytes=None, saved_bytes=None, ratio=None)
        return row
    row["output_uri"] = store.uri_for(key)
    if row["output_bytes"] is None:  # skipped rows: the source bytes were copied
        row.update(output_bytes=len(res.output), saved_bytes=row["source_bytes"] - len(res.output),
                   ratio=len(res.output) / row["source_bytes"])
    return row
