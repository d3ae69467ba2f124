"""Where NICE keeps its caches, data and default outputs."""

from __future__ import annotations

import os
from pathlib import Path


def nice_home() -> Path:
    """`NICE_HOME` (default `./.nice`), created on first use."""
    home = Path(os.environ.get("NICE_HOME", ".nice")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
