"""Importance maps on the gate grid from NICE and from the usual attribution methods, so that
every method can drive the same mixed-resolution path and the same deletion/insertion tests.

Each method returns (N, h, w) scores at the gate grid of the model (h = ceil(H / block));
pixel-level attributions are averaged over each gate block. Higher = more important."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

import torch.nn.functional as F
from torch import nn

from nice.gates import grid_shape, topk_mask  # noqa: F401  (topk_mask re-exported)

METHODS = ("nice", "gradcam", "integrated_gradients", "saliency", "occlusion", "centre", "random")
LEARNED = ("nice", "gradcam", "integrated_gradients", "saliency", "occlusion")


class _InFormat(nn.Module):
    """`net` fed its input in the memory format it was tuned for (captum passes NCHW)."""

    def __init__(self, net: nn.Module, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.net, self.memory_format = net, memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))


@dataclass
class InferenceNets:
    """The model's networks as the product runs them on this CPU, so every method is timed at
    its best and NICE as the compressor runs it: BatchNorm folded, and eager in whichever of
    NCHW / channels-last is fastest on batches like the example (eager, as captum needs
    autograd; the generator is tuned exactly as `Compressor` tunes it). Outputs equal the
    trained networks' up to float rounding."""

    classifier: nn.Module
    generator: nn.Module
    classifier_net: nn.Module  # the network inside `classifier` (Grad-CAM hooks its layers)

    @classmethod
    def tuned(cls, model, example: torch.Tensor) -> "InferenceNets":
        from nice.models.fuse import fuse_for_inference, tuned_for_cpu

        clf = fuse_for_inference(model.classifier)
        gen = fuse_for_inference(model.generator)
        if example.device.type == "cpu":
            clf, clf_fmt = tuned_for_cpu(clf, example, trace=False)
            gen, gen_fmt = tuned_for_cpu(gen, example, trace=False)
        else:
            clf_fmt = gen_fmt = torch.contiguous_format
        return cls(_InFormat(clf, clf_fmt), _InFormat(gen, gen_fmt), clf)


@dataclass
class Attribution:
    method: str
    scores: torch.Tensor  # (N, h, w)
    seconds_per_image: float


def _to_grid(pixel_map: torch.Tensor, block: int) -> torch.Tensor:
    """(N,H,W) pixel scores -> (N,h,w) block means (partial edge blocks average their pixels)."""
    if block == 1:
        return pixel_map
    return F.avg_pool2d(pixel_map.unsqueeze(1), block, stride=block, ceil_mode=True,
                        count_include_pad=False).squeeze(1)


def last_conv_layer(model: nn.Module) -> nn.Module:
    """Grad-CAM's layer: the last spatial feature block (a ResNet stage or the last Conv2d)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        for layer in reversed(list(features)):
            if any(isinstance(m, nn.Conv2d) for m in layer.modules()):
                return layer
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional classifier")
    return convs[-1]


# Occlusion's forward batches: OCCLUSION_PER_EVAL occluded copies per image, at most
# OCCLUSION_PIXELS pixels in all (the 28 px views' 128 images x 64 copies). Unbounded, a 224 px
# scenes evaluation put 50 images x 64 copies through the classifier at once (sensitivity_max
# recomputes occlusion on 5 noisy copies of 10 images) and was killed for memory at 17 GB.
OCCLUSION_PER_EVAL = 64
OCCLUSION_PIXELS = 128 * OCCLUSION_PER_EVAL * 28 * 28


def _batched(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
             target: torch.Tensor, background: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[s:s + batch], target[s:s + batch], background[s:s + batch])
                      for s in range(0, len(x), batch)])


# A reported time whose pass is shorter than this is measured again (median of TIMED_REPEATS):
# one pass of a fast method over a few hundred images lasts ~0.2 s, and a thread's wake-up
# moved NICE's figure by 35% between two runs of the same model (0.40 and 0.54 ms an image),
# which moved the "100x faster than occlusion" verdict. A longer pass averages its noise out.
TIMED_MIN_SECONDS = 2.0
TIMED_REPEATS = 3


def timed_attribute(method: str, model, x: torch.Tensor, target: torch.Tensor, background: torch.Tensor,
                    nets: InferenceNets | None = None) -> Attribution:
    """`attribute` where its time is reported (the evaluation's tables): a pass shorter than
    TIMED_MIN_SECONDS is repeated and the median of TIMED_REPEATS passes reported. Where only
    the scores matter (teachers, sensitivity, the native engine's rankings) call `attribute`."""
    if nets is None and method in LEARNED:
        nets = InferenceNets.tuned(model, x[:128])
    first = attribute(method, model, x, target, background, nets=nets)
    if first.seconds_per_image * len(x) >= TIMED_MIN_SECONDS:
        return first
    times = [first.seconds_per_image] + [attribute(method, model, x, target, background, nets=nets).seconds_per_image
                                         for _ in range(TIMED_REPEATS - 1)]
    return Attribution(method, first.scores, sorted(times)[len(times) // 2])


def attribute(method: str, model, x: torch.Tensor, target: torch.Tensor, background: torch.Tensor,
              batch: int = 128, seed: int = 0, nets: InferenceNets | None = None) -> Attribution:
    """Scores for `x` (N,C,H,W in [0,1]) explaining class `target` (N,); `model` a NiceModel;
    `background` what a removed pixel becomes (the model's mixing background); `nets` the
    model's tuned networks (`InferenceNets.tuned`, built here when not given: pass them when
    calling repeatedly). Every method runs in batches of `batch` on the same tuned networks;
    `seconds_per_image` is this one pass's (`timed_attribute` for a reported time)."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    cfg = model.config
    block = cfg.gates.block
    if nets is None and method in LEARNED:
        nets = InferenceNets.tuned(model, x[:batch])
    clf = nets.classifier if nets is not None else None
    h, w = grid_shape(x.shape[-2], x.shape[-1], block)
    n = len(x)
    t0 = time.perf_counter()
    if method == "nice":
        with torch.inference_mode():
            scores = _batched(lambda xb, _t, _b: nets.generator(xb)[:, 0].float(), x, target, background, batch)
        scores = scores.clone()  # an ordinary tensor (inference tensors refuse autograd later)
    elif method == "centre":
        yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
        scores = -(yy ** 2 + xx ** 2).expand(n, h, w).clone()
    elif method == "random":
        scores = torch.rand((n, h, w), generator=torch.Generator().manual_seed(seed))
    elif method == "gradcam":
        gc = LayerGradCam(clf, last_conv_layer(nets.classifier_net))

        def run(xb, tb, _b):
            a = gc.attribute(xb, target=tb, relu_attributions=True)
            return LayerAttribution.interpolate(a, xb.shape[-2:], interpolate_mode="bilinear")[:, 0].detach()
        scores = _to_grid(_batched(run, x, target, background, batch), block)
    elif method == "integrated_gradients":
        ig = IntegratedGradients(clf)

        def run_ig(xb, tb, bb):
            # The path starts at the mixing background: "absent" means what NICE's mixing shows.
            a = ig.attribute(xb, baselines=bb, target=tb, n_steps=16, internal_batch_size=256)
            return a.abs().sum(1).detach()
        scores = _to_grid(_batched(run_ig, x, target, background, batch), block)
    elif method == "saliency":
        sal = Saliency(clf)
        scores = _to_grid(_batched(lambda xb, tb, _b: sal.attribute(xb, target=tb, abs=True).sum(1).detach(),
                                   x, target, background, batch), block)
    elif method == "occlusion":
        occ = Occlusion(clf)
        win = max(block, 4)
        stride = max(block, 2)
        c = x.shape[1]

        def run_occ(xb, tb, bb):
            # Occluding with the mixing background: the change NICE's mixing would make.
            a = occ.attribute(xb, sliding_window_shapes=(c, win, win), strides=(c, stride, stride),
                              baselines=bb, target=tb, perturbations_per_eval=OCCLUSION_PER_EVAL)
            return a.sum(1).detach()
        # captum forwards OCCLUSION_PER_EVAL copies of every image of a batch at once: bound
        # the images per batch by pixels (224 px views: 2 images, 128 copies; 28 px: 128).
        occ_batch = max(1, min(batch, OCCLUSION_PIXELS // (OCCLUSION_PER_EVAL * x.shape[-2] * x.shape[-1])))
        scores = _to_grid(_batched(run_occ, x, target, background, occ_batch), block)
    else:
        raise ValueError(f"unknown attribution method {method!r}; choose from {METHODS}")
    elapsed = time.perf_counter() - t0
    return Attribution(method, scores.float(), elapsed / max(n, 1))
