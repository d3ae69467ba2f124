"""Load a registered pyfunc model in a fresh interpreter that cannot import the project from
anywhere but the model itself: `-I -S` (no PYTHONPATH, no cwd or script directory, no .pth
files, hence no editable-install finder), the venv's site-packages appended by hand (with
`-S` Python does not know it is in a venv), cwd a scratch dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[5])  # the third-party packages, without running their .pth files
assert importlib.util.find_spec("nice") is None, "nice is importable before the model is loaded"
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(np.load(sys.argv[3]))
np.save(sys.argv[4], out)
import nice
print(json.dumps({"nice": nice.__file__, "origin": importlib.util.find_spec("nice").origin, "sys_path": sys.path}))
"""


def predict_in_isolation(tracking_uri: str, model_uri: str, images: np.ndarray, tmp: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(the predictions, {"nice": where `nice` was imported from, "sys_path": ...})."""
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "in.npy", images)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    import mlflow

    site_packages = str(Path(mlflow.__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", SCRIPT, tracking_uri, model_uri,
                           str(tmp / "in.npy"), str(tmp / "out.npy"), site_packages],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return np.load(tmp / "out.npy"), json.loads(proc.stdout.strip().splitlines()[-1])
