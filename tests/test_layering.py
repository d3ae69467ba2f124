"""Layering: the library never imports Kubeflow or the pipeline package; the `nice` command
(pipeline.cli) runs the library's sub-commands without kfp installed."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("kfp", "pipeline", "components")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an `import` / `from ... import` statement names, anywhere in the file
    (function bodies included: a lazy import is still a dependency)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_library_imports_neither_kfp_nor_the_pipeline_package():
    files = sorted((ROOT / "nice").rglob("*.py"))
    assert len(files) > 30, "the walk must see the library"
    bad = [f"{p.relative_to(ROOT)}:{line}: import {name}" for p in files for line, name in _imports(p)
           if name.split(".")[0] in FORBIDDEN]
    assert not bad, bad


def test_the_check_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from pipeline.demo import run_demo\n    import kfp.dsl\n")
    assert [n for _, n in _imports(probe)] == ["pipeline.demo", "kfp.dsl"]


def test_console_script_is_the_dispatcher_outside_the_library():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nice"] == "pipeline.cli:main"


def _run_without_kfp(args: list[str]) -> subprocess.CompletedProcess:
    # `kfp` set to None in sys.modules makes any import of it fail, as if it were not installed.
    code = ("import sys; sys.modules['kfp'] = None\n"
            "from pipeline.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_library_commands_run_from_the_nice_command_without_kfp():
    done = _run_without_kfp(["data", "fetch", "--dataset", "mnist", "--offline"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    done = _run_without_kfp(["compress", "--help"])
    assert done.returncode == 0 and "--config FILE" in done.stdout


def test_pipeline_commands_from_the_library_entry_point_are_one_line_and_exit_2():
    for args in (["pipeline", "run", "recompress"], ["demo"]):
        done = subprocess.run([sys.executable, "-m", "nice", *args], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "`nice" in done.stderr, done.stderr
