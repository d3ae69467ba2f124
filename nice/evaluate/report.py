"""A self-contained HTML report (images embedded) of one evaluation."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from nice.evaluate.baselines import CurvePoint


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def write_report(path: str | Path, title: str, metrics: dict[str, Any], gates: dict[str, Any],
                 curve: Sequence[CurvePoint] = (), images: dict[str, str | Path] | None = None,
                 context: dict[str, Any] | None = None, by_model: dict[str, dict[str, Any]] | None = None) -> Path:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
                   for k, v in metrics.items() if not isinstance(v, dict))
    counts = metrics.get("counts") or {}
    count_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:,}</td></tr>" for k, v in counts.items())
    gate_items = "".join(f"<li class='{'ok' if r.startswith('PASS') else 'bad'}'>{html.escape(r)}</li>"
                         for r in gates.get("reasons", []))
    verdict = "promoted to champion" if gates.get("promoted") else (
        "gates passed" if gates.get("passed") else "gates failed: not promoted")
    curve_rows = "".join(f"<tr><td>{html.escape(p.name)}</td><td>{html.escape(p.setting)}</td>"
                         f"<td>{p.bytes_ratio:.3f}</td><td>{p.accuracy * 100:.2f}%</td></tr>" for p in curve)
    ctx_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in (context or {}).items())
    model_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['objects']:,}</td><td>{v['bytes_ratio']:.4f}</td>"
        f"<td>{v['compressed_fraction']:.3f}</td><td>{_fmt(v['accuracy_output']) if v['accuracy_output'] is not None else 'n/a'}"
        f"</td><td>{v['agreement']:.4f}</td></tr>" for k, v in (by_model or {}).items())
    model_table = ("<h2>By model (which model made the stored files)</h2><table><tr><th>model</th><th>objects</th>"
                   "<th>bytes ratio</th><th>compressed</th><th>accuracy on stored</th><th>agreement</th></tr>"
                   f"{model_rows}</table>") if model_rows else ""
    figs = ""
    for name, p in (images or {}).items():
        data = base64.b64encode(Path(p).read_bytes()).decode()
        figs += f"<figure><img src='data:image/png;base64,{data}'><figcaption>{html.escape(name)}</figcaption></figure>"
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} .ok{{color:#060}} .bad{{color:#a00}}
img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><p><b>{html.escape(verdict)}</b></p><ul>{gate_items}</ul>
<h2>Run</h2><table>{ctx_rows}</table>
<h2>Metrics</h2><table>{rows}</table>{model_table}<h2>Statuses</h2><table>{count_rows}</table>
<h2>Rate-accuracy baselines (same images)</h2><table><tr><th>codec</th><th>setting</th><th>bytes ratio</th>
<th>accuracy</th></tr>{curve_rows}</table>{figs}</body></html>"""
    path = Path(path)
    path.write_text(doc)
    return path
