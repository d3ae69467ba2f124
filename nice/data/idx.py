"""IDX file format (LeCun's MNIST container) with magic and shape checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# Third byte of the magic: element type. MNIST uses only unsigned bytes.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(ValueError):
    """A file is not a valid IDX file (bad magic, truncated, wrong shape)."""


def read_idx_bytes(data: bytes, source: str = "<bytes>") -> np.ndarray:
    if len(data) < 4:
        raise IdxError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{source}: bad IDX magic {data[:4].hex()} (first two bytes must be zero)")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise IdxError(f"{source}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0 or ndim > 4:
        raise IdxError(f"{source}: implausible IDX rank {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(data) - header
    if payload != expected:
        raise IdxError(
            f"{source}: IDX payload is {payload} bytes but shape {shape} needs {expected} "
            "(truncated or corrupt file)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (detected by content, not by name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path}: corrupt gzip stream ({exc})") from exc
    return read_idx_bytes(raw, str(path))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (used by tests and by the cache)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    Path(path).write_bytes(header + array.tobytes())
