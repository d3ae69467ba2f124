"""Plots people would rather see than read: masks over their images, rate-accuracy curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: components and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nice.evaluate.baselines import CurvePoint  # noqa: E402


def tinted(img: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """uint8 pixels (H,W[,3]) as float RGB with the pixels outside `keep` (H,W bool) dimmed
    and tinted blue: how every figure shows a mask."""
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    shown = rgb.astype(np.float32) / 255.0
    shown[~keep] = 0.35 * shown[~keep] + 0.65 * np.array([0.1, 0.2, 0.6], dtype=np.float32)
    return shown


def mask_overlay_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], block: int | Sequence[int],
                      path: str | Path, titles: Sequence[str] | None = None, cols: int = 8) -> Path:
    """Each image with its kept blocks shown and the dropped ones dimmed and tinted; `block`
    is the mask's block (one for all, or each row's native block)."""
    blocks = [block] * len(images) if isinstance(block, int) else list(block)
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (img, grid, b) in enumerate(zip(images, masks, blocks)):
        keep = np.kron(grid, np.ones((b, b), dtype=np.uint8))[: img.shape[0], : img.shape[1]].astype(bool)
        ax = axes.ravel()[i]
        ax.imshow(tinted(img, keep), interpolation="nearest")
        ax.set_title(titles[i] if titles else f"{keep.mean() * 100:.0f}% kept", fontsize=7)
    fig.suptitle("NICE masks (kept pixels in colour, dropped ones tinted)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.inference_mode()
def mask_overlay_grid_from_model(model: Any, dataset: Any, path: str | Path, n: int = 16) -> Path:
    """Run a NiceModel's generator on the first n images of a dataset and plot the masks."""
    from nice.gates import HardConcrete

    xs = []
    for x, _ in dataset:
        xs.append(x)
        if len(xs) >= n:
            break
    x = torch.stack(xs)
    cfg = model.config
    z = HardConcrete(cfg.gates).binarize(model.generator(x), cfg.guard.tau, cfg.guard.dilate)
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    images = [p[0].numpy() if p.shape[0] == 1 else p.permute(1, 2, 0).numpy() for p in pixels]
    masks = [m[0].to(torch.uint8).numpy() for m in z]
    return mask_overlay_grid(images, masks, cfg.gates.block, path)


def rate_accuracy_plot(points: Sequence[CurvePoint], nice: tuple[float, float] | None, path: str | Path,
                       title: str = "Rate vs accuracy on the same images") -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    by_name: dict[str, list[CurvePoint]] = {}
    for p in points:
        by_name.setdefault(p.name, []).append(p)
    for name, pts in by_name.items():
        pts = sorted(pts, key=lambda p: p.bytes_ratio)
        style = "o" if len(pts) == 1 else ".-"
        ax.plot([p.bytes_ratio for p in pts], [p.accuracy * 100 for p in pts], style, label=name)
    if nice is not None:
        ax.plot([nice[0]], [nice[1] * 100], "r*", markersize=14, label="NICE (stored files)")
    ax.set_xlabel("bytes relative to the source files")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
