"""Bar chart of `bench/scenes_levers.py` runs on the same frames: each ranking's stored bytes
against the whole-image oracles (fractions of the source bytes), with its flips and kept
sources, and the ranking's CPU ms per frame.

    PYTHONPATH=. .venv/bin/python bench/scenes_levers_plot.py --out bytes.png nice.json gradcam.json ...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="scenes_levers JSONs (the first one's oracles are drawn)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", default="default")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(p).read_text()) for p in args.runs]
    for r, p in zip(runs, args.runs):
        r.setdefault("ranking", Path(p).stem)  # runs from before the ranking was recorded
    names, values, notes, colours = [], [], [], []
    for r in runs:
        v = r["variants"][args.variant]
        names.append(r["ranking"].replace("integrated_gradients", "IG"))
        values.append(v["bytes_ratio"])
        notes.append(f"{v['bytes_ratio']:.4f}x, {v['flips']} flips, {v['kept_source']} kept, {v['rank_ms']:.1f} ms")
        colours.append("tab:red" if r["ranking"] == "nice" else "tab:blue")
    first = runs[0]
    for fmt, ratio in first["oracles"].items():
        names.append(f"oracle {fmt}")
        values.append(ratio)
        notes.append(f"{ratio:.4f}x")
        colours.append("tab:grey")
    names.append("oracle best")
    values.append(first["oracle_best"])
    notes.append(f"{first['oracle_best']:.4f}x")
    colours.append("tab:grey")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1))
    ax.barh(names[::-1], values[::-1], color=colours[::-1])
    for i, (val, note) in enumerate(zip(values[::-1], notes[::-1])):
        ax.text(val, i, " " + note, va="center", fontsize=7)
    ax.set_xlabel("stored bytes / source bytes")
    ax.set_xlim(0, max(values) * 1.6)
    ax.set_title(args.title or f"{first['images']} frames: rankings through the same search vs whole-image oracles",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
