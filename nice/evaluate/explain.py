"""`nice explain`: the explanation of single images, without a pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class Explanation:
    image: str
    predicted: str
    confidence: float
    mask_density: float  # fraction of pixels kept sharp
    source_bytes: int
    compressed_bytes: int  # what NICE would store (the source when the guard refuses)
    prediction_kept: bool  # the stored version is classified the same
    overlay: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_image_bytes(uri: str) -> bytes:
    if uri.startswith("s3://"):
        from nice.storage import open_store

        parent, _, key = uri.rpartition("/")
        return open_store(parent + "/").get(key)
    return Path(uri).read_bytes()


def explain_image(model: Any, uri: str, out_dir: str | Path) -> Explanation:
    """Mask over the image with the predicted class, and the mixed-resolution version beside it."""
    from nice.evaluate.plots import tinted  # first: it sets the Agg backend

    import matplotlib.pyplot as plt  # noqa: E402

    from nice.codec import decode
    from nice.compress.engine import Compressor, SourceItem, unpack_mask
    from nice.gates import upsample_gates
    from nice.imageio import decode_image, image_pixels, to_float_batch

    data = read_image_bytes(uri)
    comp = Compressor(model, batch_size=1)
    res = comp.compress([SourceItem(uri=uri, key=Path(uri).name, data=data)])[0]
    row = res.row
    if row["status"] in ("failed", "skipped"):
        raise ValueError(f"{uri}: {row['status']}: {row['error']}")
    mode = "RGB" if model.config.classifier.in_channels == 3 else "L"
    pixels = image_pixels(decode_image(data).image, mode)
    names = model.class_names or [str(i) for i in range(model.config.classifier.num_classes)]
    block = row["block"] or model.config.gates.block
    if row["status"] == "compressed":
        grid = torch.from_numpy(unpack_mask(row)).float()[None, None]
        stored = decode(res.output, mode)
    else:
        # The guard kept the source: show the mask the generator proposed at the model's tau,
        # on the view, mapped onto the row's native blocks.
        view = comp.view
        seen = view.apply(pixels) if view is not None else pixels
        z = comp.gates.binarize(comp.log_alpha(to_float_batch(seen[None])), model.config.guard.tau)
        if view is not None:
            z = torch.from_numpy(view.native_mask(z[0, 0].numpy(), view.geometry(*pixels.shape[:2]),
                                                  model.config.gates.block, block))[None, None].float()
        grid = z
        stored = pixels
    keep = upsample_gates(grid, block, pixels.shape[:2])[0, 0].numpy().astype(bool)
    density = float(keep.mean())
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    axes[0].imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
    axes[0].set_title(f"{names[row['pred_source']]} ({row['prob_source'] * 100:.1f}%)", fontsize=9)
    axes[1].imshow(tinted(pixels, keep))
    axes[1].set_title(f"NICE mask: {density * 100:.1f}% kept", fontsize=9)
    axes[2].imshow(stored, cmap="gray" if stored.ndim == 2 else None)
    stored_bytes = row["output_bytes"] or row["source_bytes"]
    axes[2].set_title(f"stored: {stored_bytes:,} B of {row['source_bytes']:,} B", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overlay = out / f"{Path(uri).stem}.explain.png"
    fig.savefig(overlay, dpi=110)
    plt.close(fig)
    return Explanation(image=uri, predicted=names[row["pred_source"]], confidence=float(row["prob_source"]),
                       mask_density=density, source_bytes=int(row["source_bytes"]), compressed_bytes=int(stored_bytes),
                       prediction_kept=row["pred_output"] == row["pred_source"], overlay=str(overlay))
