"""The one way to run the frozen classifier on pixels: the engine's guard, the search, the
evaluation and its baselines all call a `Classify`, so a prediction means the same thing
everywhere (same fused network, softmax in float32, same batching)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from nice.imageio import to_float_batch
from nice.models.fuse import fuse_for_inference, tuned_for_cpu


class Classify:
    """A fused copy of a classifier; `__call__` maps a uint8 batch (N,H,W[,C]) to (top-1 class,
    its probability), `probs` a float batch (N,C,H,W in [0,1]) to softmax probabilities."""

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", tune_example: torch.Tensor | None = None,
                 batch: int = 512) -> None:
        self.device = torch.device(device)
        net = fuse_for_inference(net).to(self.device)  # BatchNorm folded: ~30% less time, same outputs
        self.memory_format = torch.contiguous_format
        if tune_example is not None and self.device.type == "cpu":
            # Bulk compression: whichever of eager/frozen x NCHW/channels-last is fastest here.
            net, self.memory_format = tuned_for_cpu(net, tune_example)
        self.net = net
        self.batch = batch

    @torch.inference_mode()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(x), self.batch):
            xb = x[s:s + self.batch].to(self.device).contiguous(memory_format=self.memory_format)
            out.append(torch.softmax(self.net(xb).float(), dim=1).cpu())
        return torch.cat(out) if out else torch.empty(0)

    def top1(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conf, pred = self.probs(x).max(dim=1)
        return pred, conf

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, conf = self.top1(to_float_batch(pixels))
        return pred.numpy(), conf.numpy()

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Top-1 classes of uint8 images of any mix of shapes (grouped by shape)."""
        preds = np.empty(len(images), dtype=np.int64)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(img.shape, []).append(i)
        for idx in groups.values():
            preds[idx] = self(np.stack([images[i] for i in idx]))[0]
        return preds
