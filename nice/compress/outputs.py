"""Writing a compression result to the destination store and completing its row."""

from __future__ import annotations

from typing import Any, Mapping

from nice.codec import output_name
from nice.compress.engine import ItemResult
from nice.storage import Store


def store_output(store: Store, res: ItemResult, metadata: dict[str, str] | None = None,
                 taken: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Put `res.output` (if any) under its output name; a failed put turns the row `failed`.
    `taken`: output name -> the source that may not use it, because the name is another
    source's key (`x` -> `x.webp` beside a source `x.webp`): that output is never written and
    its row is `failed` with the reason."""
    row = res.row
    if res.output is None:
        return row
    key = output_name(row["source_key"], res.format_out)
    if taken and taken.get(key) == row["source_key"]:  # the name's owner is the source of that key
        row.update(status="failed", output_uri=None, output_bytes=None, saved_bytes=None, ratio=None,
                   error=f"output name {key!r} is also a source key: not stored, so that neither overwrites "
                         f"the other; rename {row['source_key']!r} (or {key!r}) at the source")
        return row
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
