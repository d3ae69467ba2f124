"""Configuration: one `NiceConfig` object flows through training, compression and evaluation.

Dataclasses rather than pydantic keep the library dependency-light; `from_dict` validates
keys so that a typo in a config file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MIXING_MODES = ("zero", "lowres", "blur", "mean")
TARGET_MODES = ("prediction", "label")
# Rankings a generator can be distilled from (nice.training.teacher; the evaluation's learned methods).
TEACHER_METHODS = ("occlusion", "integrated_gradients", "gradcam", "saliency")
# mask generators (nice.models.generators.build_generator)
GENERATOR_ARCHS = ("conv", "features", "reference")
GREEDY_BASES = ("occlusion", "nice")  # the order after the greedy teacher's cells (nice.training.teacher)
VIEW_POLICIES = ("letterbox", "resize", "center_crop")
# torchvision classification architectures (a user's own weights come in these), next to ours
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
                     "efficientnet_b0", "convnext_tiny")
CLASSIFIER_ARCHS = ("lenet", "resnet", *TORCHVISION_ARCHS)
RESNET_POOLS = ("avg", "max")
# The search's keep levels before issue 20's finer grey ladder: what colour models were measured with
# (mnist-m 0.0502x, scenes); the finer ladder is unmeasured on colour.
COLOUR_KEEP = (0.2, 0.1, 0.05, 0.3, 0.45, 0.6, 1.0)
LARGE_VIEW = 160  # px: from this classifier view up, colour_default() is the large-view (scenes) profile
# The largest view the greedy teacher is on by default for (`colour_default`): its cost grows
# with blocks x pixels, ~16x from 64 to 128 px, and it was measured at 64 px.
GREEDY_MAX_VIEW = 64


@dataclass
class GateConfig:
    """Hard-concrete L0 gates (Louizos et al. 2018) on an H/b x W/b grid."""

    block: int = 1  # b: one gate per b x b pixel block (1 = per pixel)
    beta: float = 0.66
    gamma: float = -0.1
    zeta: float = 1.1


@dataclass
class MixingConfig:
    mode: str = "zero"  # zero | lowres | blur | mean
    pool: int = 8  # k for lowres/blur, a multiple of the gate block (unused by zero and mean)

    def __post_init__(self) -> None:
        if self.mode not in MIXING_MODES:
            raise ValueError(f"mixing.mode must be one of {MIXING_MODES}, got {self.mode!r}")
        if self.pool < 1:
            raise ValueError("mixing.pool must be >= 1")


@dataclass
class ClassifierConfig:
    arch: str = "lenet"  # lenet | resnet
    in_channels: int = 1
    num_classes: int = 10
    # The view (nice/view.py): every image reaches the classifier as an image_size square.
    # 0 before training = the dataset's own size; a model saved with 0 (older versions) sees
    # images at their native size and takes only that size.
    image_size: int = 28
    view: str = "letterbox"  # letterbox | resize | center_crop (how a source becomes the view)
    crop_fraction: float = 0.875  # center_crop: the crop's share of the resized shorter side (224/256)
    width: int = 64  # resnet stage-1 width (stages are w, 2w, 4w, 8w)
    # resnet stem: "conv" (3x3 stride-2 convolution + max-pool, torchvision's shape) or "patch"
    # (one 4x4 stride-4 convolution: the same 4x reduction at ~1/3 of the stem's cost, for bulk
    # compression where the classifier runs twice per image)
    stem: str = "conv"
    # resnet global pooling: "avg" (torchvision's) or "max" (the strongest cell decides: an
    # object filling a few cells of a large view is not averaged away by the background)
    pool: str = "avg"

    def __post_init__(self) -> None:
        if self.pool not in RESNET_POOLS:
            raise ValueError(f"classifier.pool must be one of {RESNET_POOLS}, got {self.pool!r}")


@dataclass
class GeneratorConfig:
    arch: str = "conv"  # conv | features (a head on the frozen classifier's own features; ResNets and LeNet) | reference
    width: int = 16
    depth: int = 2  # number of stride-2 stages below the gate grid
    pre_pool: int = 1  # average-pool the input by this factor first (divides the block; cheap for b >= 4)
    init_keep: float = 0.5  # initial P(gate open): away from the saturated regime
    # `features` only: also give the head the margin map (the predicted class's evidence minus
    # the runner-up's per cell), where an unsure prediction is decided.
    margin_map: bool = False


CURRICULUM_BACKGROUNDS = ("photos", "variants")


@dataclass
class CurriculumConfig:
    """The object-scale curriculum for one small object in a large view (scenes; docs/results.md
    "Scenes"): from scratch on whole views a classifier stays at chance (the object's gradient,
    averaged with the clutter of every other cell, never starts the features). So `crop_steps`
    on `crop`-px crops of the views, each holding the whole object (its pixel scale kept: an
    mnist-m-like task), then `view_steps` on whole views. It needs each object's box, which a
    scenes artifact's generator knows: it trains on `views` train scenes rendered at the view's
    size. `crop = 0` (the default) trains on the dataset's images for `epochs` instead."""
    crop: int = 0
    crop_steps: int = 20_000
    view_steps: int = 1_500
    view_lr: float = 5e-4  # the whole-view stage (the crop stage uses train_classifier.lr)
    views: int = 30_000
    # "variants": the train photos in 8 orientations x 3 channel orders (more backgrounds from
    # the same photos; the object is placed after, so it is never flipped)
    backgrounds: str = "variants"
    # More background photos that only ever train (files, or folders read recursively; e.g.
    # Debian's wallpapers): the ~29 train photos limit how the features transfer to unseen
    # backgrounds. Val and test keep the artifact's photos, so their numbers stay comparable.
    extra_photos: tuple[str, ...] = ()
    label_smoothing: float = 0.05
    workers: int = 2  # processes that render the views

    def __post_init__(self) -> None:
        if self.backgrounds not in CURRICULUM_BACKGROUNDS:
            raise ValueError(f"train_classifier.curriculum.backgrounds must be one of {CURRICULUM_BACKGROUNDS}, "
                             f"got {self.backgrounds!r}")


@dataclass
class ClassifierTrainConfig:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # only takes effect on CUDA
    # "Train for what is stored": once the generator is trained, fine-tune the classifier for
    # this many epochs on batches that are half originals, half what the per-image search
    # stores (nice/training/stored.py). 0 = off. Past `stored_max_drop` points of validation
    # accuracy on the originals the original classifier is kept.
    stored_epochs: int = 1
    stored_lr: float = 3e-4
    stored_max_drop: float = 0.5
    # Augmentation through the view: a random crop of `crop_scale` x the image's area (aspect
    # within 3:4..4:3, torchvision's RandomResizedCrop), then the view. "auto" crops images
    # larger than the view on both sides (photos; the crop still holds most of the object)
    # and leaves images at or below it alone (a crop of a 28x28 digit cuts strokes off).
    augment: str = "auto"  # auto | crop | none
    crop_scale: tuple[float, float] = (0.35, 1.0)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)


@dataclass
class MaskTrainConfig:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    lam: float = 0.5  # lambda: weight of mean E[L0]
    mu: float = 0.0  # smoothness (TV of gate probabilities)
    eta: float = 1.0  # barrier on log_alpha past saturation (keeps gates trainable)
    lam_warmup_epochs: float = 0.0  # >0 ramps lambda up linearly; a ramp from 0 lets the task loss saturate every gate open
    target: str = "prediction"  # prediction (explain the model) | label
    # ce (to the target class) | kl (to the classifier's full softmax on x; label targets use ce)
    task_loss: str = "kl"
    # Fraction of steps whose forward pass uses the binarised eval mask (straight-through
    # gradient of the stochastic sample): trains for the mask that compression will store.
    straight_through: float = 0.5
    # Rank loss ("train for what is stored"): the task loss again on images mixed with the
    # generator's exact top-k blocks, k drawn per image from `rank_keep` (the search's levels),
    # ranked as the search ranks them (search.rank_smooth_px), so the ranking the search uses
    # keeps the prediction at few blocks. 0 = plain NICE.
    rank_weight: float = 1.0  # MNIST: -9% stored bytes with the stored fine-tune (docs/results.md)
    rank_keep: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    rank_temperature: float = 1.0  # of the sigmoid relaxation around the cut-off (log-alpha units)
    # Distillation of a teacher ranking (issue 20's lever; 0 = off): the BCE of the generator's
    # relaxed top-k against a teacher's exact top-k at the same keep fraction (drawn from
    # `rank_keep`), the teacher's scores computed once per training image and served with it
    # (a dataset of (x, y, teacher) items; `nice.training.teacher`).
    teacher_weight: float = 0.0
    # "topk": that BCE at the cut-off; "listwise": the KL of the softmax over all blocks against
    # the teacher's (nice.losses.listwise_distillation), which also trains the order inside and
    # below the kept set.
    teacher_loss: str = "topk"
    # The teacher the product computes (`nice train-mask-generator`; "" = none): once the
    # generator has trained, this ranking (an evaluation method: occlusion, integrated_gradients,
    # gradcam, saliency) of the frozen classifier on the first `teacher_images` training images,
    # then the generator fine-tuned on them for `teacher_epochs` at `teacher_lr` with the
    # distillation term above (nice.training.teacher.distil_teacher).
    teacher: str = ""
    teacher_images: int = 12000
    teacher_epochs: int = 10
    teacher_lr: float = 5e-4
    # The greedy teacher (0 = off): after the stored fine-tune, on the classifier that ships,
    # greedy insertion of `greedy_steps` blocks from the stored background (the blocks that keep
    # the prediction best), then occlusion's order, on the first `greedy_images` training images;
    # the generator fine-tuned on them for `greedy_epochs` at `greedy_lr` with the distillation
    # term above (nice.training.teacher.distil_greedy). Occlusion's ranking is not what keeps a
    # prediction from 5% of the blocks; greedy insertion is (docs/results.md).
    greedy_steps: int = 0
    # A greedy step's candidates: cells of `greedy_cell` x `greedy_cell` gate blocks (MNIST's
    # 1-px gates: 4, 49 candidates a step instead of 784), each cell's blocks in the base order;
    # the rest follow in `greedy_base`'s order: "occlusion" of the shipped classifier, or "nice",
    # the generator's own (the student then moves only the greedy cells).
    greedy_cell: int = 1
    greedy_base: str = "occlusion"
    greedy_images: int = 3000
    greedy_epochs: int = 30
    greedy_lr: float = 5e-4
    # Then the stored fine-tune once more, from the plain classifier, on the masks of the generator
    # that ships (the first one saw the generator before the greedy phase). MNIST, the LeNet
    # features head, 1,000 test images: kept at 5% 93.2% -> 96.7%, bytes -1.1% (integrated
    # gradients on each classifier 96.0% -> 96.8%; docs/results.md). Unmeasured on colour: off there.
    greedy_then_stored: bool = False
    # Deletion term (issue 20's lever; 0 = off): the classifier's probability of the source
    # class on images whose top-d blocks (d drawn per image from `deletion_levels`, the
    # smoothed order the search cuts) are replaced by the background, minimised through the
    # same relaxed top-k as the rank loss. The rank loss trains the ranking for keeping; this
    # trains it for removing, which the deletion AUC measures.
    deletion_weight: float = 0.0
    deletion_levels: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    # The background the generator trains against; "" = the one stored (`mixing.mode`). Colour
    # models train against `lowres` and store `mean`: against a flat background the frozen
    # classifier is lost at first (KL ~3 with half the gates open) and the L0 term shuts every
    # gate (mnist-m without a lambda warm-up, 128 px even with one). The stored fine-tune then
    # teaches the classifier the flat background; the ranking transfers (docs/results.md).
    mixing: str = ""
    seed: int = 0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        if self.target not in TARGET_MODES:
            raise ValueError(f"target must be one of {TARGET_MODES}, got {self.target!r}")
        if self.task_loss not in ("ce", "kl"):
            raise ValueError(f"task_loss must be ce or kl, got {self.task_loss!r}")
        if self.teacher_loss not in ("topk", "listwise"):
            raise ValueError(f"train_generator.teacher_loss must be topk or listwise, got {self.teacher_loss!r}")
        if self.teacher and self.teacher not in TEACHER_METHODS:
            raise ValueError(f"train_generator.teacher must be empty or one of {TEACHER_METHODS}, got {self.teacher!r}")
        if self.teacher and (self.teacher_weight <= 0 or self.teacher_images < 1 or self.teacher_epochs < 1):
            raise ValueError("train_generator.teacher needs teacher_weight > 0, teacher_images >= 1 and "
                             f"teacher_epochs >= 1 (got {self.teacher_weight}, {self.teacher_images}, {self.teacher_epochs})")
        if self.greedy_steps < 0 or (self.greedy_steps and (self.teacher_weight <= 0 or self.greedy_images < 1
                                                            or self.greedy_epochs < 1)):
            raise ValueError("train_generator.greedy_steps must be >= 0, and > 0 needs teacher_weight > 0, "
                             f"greedy_images >= 1 and greedy_epochs >= 1 (got {self.greedy_steps}, "
                             f"{self.teacher_weight}, {self.greedy_images}, {self.greedy_epochs})")
        if self.greedy_cell < 1 or self.greedy_base not in GREEDY_BASES:
            raise ValueError(f"train_generator.greedy_cell must be >= 1 and greedy_base one of {GREEDY_BASES} "
                             f"(got {self.greedy_cell}, {self.greedy_base!r})")
        if self.mixing and self.mixing not in MIXING_MODES:
            raise ValueError(f"train_generator.mixing must be empty or one of {MIXING_MODES}, got {self.mixing!r}")



@dataclass
class CodecConfig:
    format: str = "source"  # source | png | jpeg | webp | avif
    quality: int = 85  # JPEG / WebP / AVIF quality
    png_optimize: bool = True
    jpeg_optimize: bool = True
    jpeg_progressive: bool = False
    jpeg_subsampling: str = "4:2:0"
    webp_lossless: bool = False
    strip_metadata: bool = True


@dataclass
class GuardConfig:
    tau: float = 0.5
    tau_steps: tuple[float, ...] = (0.3, 0.1)  # denser masks tried when the prediction flips
    dilate: bool = False  # grow the binary mask by one cell before mixing
    max_pixels: int = 40_000_000  # larger images are skipped (decompression-bomb guard)


@dataclass
class SearchConfig:
    """Per-image operating point (nice/compress/search.py): for each keep level (fraction of
    gate blocks at full resolution, ranked by the generator) and each output format, the
    lowest quality that keeps the prediction; the smallest such file is stored."""

    enabled: bool = True  # False: the fixed tau + guard ladder (faster, larger files)
    # Tried in this order, the likely winners first: later levels then mostly cost encodes.
    # 0.03 and 0.15 (issue 20): MNIST 10,000 test images -5.9% bytes (0.2284x -> 0.2150x), the
    # same time; colour models keep COLOUR_KEEP, where they were measured.
    keep: tuple[float, ...] = (0.1, 0.05, 0.03, 0.15, 0.2, 0.3, 0.45, 0.6, 1.0)
    # lossy formats, binary-searched; 13 rungs store 2.6% fewer bytes than 8 (3..80) for 4% more time (mnist-m)
    qualities: tuple[int, ...] = (2, 4, 6, 8, 11, 15, 20, 25, 30, 40, 50, 65, 80)
    grey_levels: tuple[int, ...] = (2, 4, 256)  # lossless formats on grey images: posterised levels
    # Output formats tried per image ("source" = the source's container). WebP wins on every
    # set we measured (docs/results.md); ("source",) keeps each file's container.
    formats: tuple[str, ...] = ("webp",)
    webp_method: int = 4  # libwebp effort 0-6 of the stored file
    webp_probe_method: int = 0  # effort while searching (the winner is re-encoded and re-verified)
    # Blocks are ranked by their score averaged over a window of about this many pixels
    # (per-pixel gates: 5x5 cells; 8 px blocks: their own score). Compact regions code smaller.
    rank_smooth_px: int = 5
    # Blocks equal to the stored background (kept or removed, the same image) ranked last
    # (nice/ranking.py): MNIST, the first 1,000 test images, preservation at 5% kept 89.6 -> 92.1%.
    rank_inert_last: bool = True
    # Opt-in (issue 20, measured, not the default): live blocks ranked by the smoothed score plus
    # this weight x log |block - background| (the gate odds times the change keeping the block
    # makes, as gradient x input weighs a gradient). MNIST, weight 1: preservation at 5% kept
    # 93.1 -> 94.4% for +3.5% bytes (docs/results.md).
    rank_change_weight: float = 0.0
    # Native resolution (sources larger than the classifier's view, docs/architecture.md):
    # the keep level is chosen on the view, the format on a small proxy, and at most
    # `native_tries` native encodes are verified through the view.
    native_block: int = 16  # mask block at native size: a 4:2:0 JPEG/WebP macroblock
    # Keep levels added to `keep` at native size only: a small object in a large photo needs far
    # fewer blocks than a frame-filling one, and the native search classifies the views of every
    # level in one batch, so a level costs an encode only when it is the sparsest that passes.
    native_keep: tuple[float, ...] = ()
    native_quality: int = 80  # lossy quality of native-size outputs (kept blocks look like the photo)
    # Lower qualities the native output may take, bisected below native_quality with a verified
    # native encode per probe (empty: native_quality only).
    native_qualities: tuple[int, ...] = ()
    # Kept blocks at reduced resolution: at most this many native pixels per view pixel (the
    # classifier only ever sees the view); 0 = native pixels.
    native_detail: float = 0.0
    native_formats: tuple[str, ...] = ("webp", "avif", "jpeg")
    native_tries: int = 3
    # When every try flipped the prediction (a borderline answer that codec artefacts turn either
    # way, not monotonically in quality), the sparsest passing level is retried up the quality
    # ladder, at most `native_tries` encodes per format, in `native_formats` and then in these
    # (scenes frame 373: kept as its 87 kB source before; AVIF keeps it at q10, JPEG at q5).
    # Costs encodes only on such images.
    native_fallback: tuple[str, ...] = ("jpeg",)
    native_proxy_pixels: int = 250_000  # the format is chosen on a proxy of about this many pixels
    # Images of at most this many pixels run the full search (every rung encoded at native size).
    full_search_pixels: int = 65_536

    def native_levels(self, levels: tuple[float, ...]) -> tuple[float, ...]:
        """The keep levels tried at native size: `levels` and `native_keep`, each once."""
        return tuple(sorted(set(levels) | set(self.native_keep)))


@dataclass
class PromotionConfig:
    """Gates the evaluate step applies before moving the `champion` alias."""

    max_accuracy_drop: float = 0.5  # percentage points, originals vs stored outputs
    max_bytes_ratio: float = 0.95  # output bytes / source bytes over the evaluated archive
    min_compressed_fraction: float = 0.0  # of evaluated images that were actually compressed
    # Bytes NICE must save against the best baseline of the evaluation (0.2 = 20% fewer) at
    # equal accuracy; None = not a gate (the report still shows the comparison).
    min_saving_vs_best: float | None = None
    # Against the current champion, on the same evaluation images (nice/evaluate/champion.py):
    # promoted only when no worse within these margins (bytes relative to the champion's,
    # accuracy on stored files in points, prediction flips in images).
    vs_champion: bool = True
    champion_bytes_margin: float = 0.02
    champion_accuracy_margin: float = 0.5
    champion_extra_flips: int = 0


@dataclass
class NiceConfig:
    gates: GateConfig = field(default_factory=GateConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    train_classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    train_generator: MaskTrainConfig = field(default_factory=MaskTrainConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

    def __post_init__(self) -> None:
        modes = {self.mixing.mode, self.training_mixing().mode}
        if modes & {"lowres", "blur"} and self.mixing.pool % self.gates.block:
            raise ValueError(
                f"mixing.pool ({self.mixing.pool}) must be a multiple of gates.block "
                f"({self.gates.block}) so that background blocks stay aligned"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def hash(self, training: bool = False) -> str:
        """Stable short hash of every setting that shapes an output (part of the savings table's
        idempotency key); promotion gates only decide about models, so they are left out. The
        training sections shape the networks, which the model digest identifies, so they are left
        out too (a new training setting must not redo an archive), unless `training` (a cache of
        trained models keyed by how they were trained: the direct demo's workdir)."""
        data = self.to_dict()
        data.pop("promotion")
        if not training:
            data.pop("train_classifier")
            data.pop("train_generator")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NiceConfig":
        return _from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> "NiceConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def training_mixing(self) -> MixingConfig:
        """The background the generator trains against (`train_generator.mixing`, else the stored one)."""
        return MixingConfig(mode=self.train_generator.mixing or self.mixing.mode, pool=self.mixing.pool)

    def with_overrides(self, overrides: dict[str, Any] | None) -> "NiceConfig":
        """A copy with a partial nested dict applied, e.g. `{"train_generator": {"epochs": 1}}`."""
        return NiceConfig.from_dict(merge_overrides(self.to_dict(), overrides or {}))


def merge_overrides(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, section by section (nested dicts merge, anything else replaces);
    neither argument is modified. How `--config` files, flags and pipeline overrides combine."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = known[name].default_factory if known[name].default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        proto = default() if default is not None else None
        if proto is not None and is_dataclass(proto) and isinstance(value, dict):
            kwargs[name] = _from_dict(type(proto), value)
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _coerce(value, known[name].default)
    return cls(**kwargs)


def _coerce(value: Any, default: Any) -> Any:
    # JSON-ish transports (KFP dict parameters are protobuf Structs) turn every number into a
    # float; an int setting given as 3.0 means 3.
    if (isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float)
            and value.is_integer()):
        return int(value)
    return value


def colour_default(image_size: int = 0, classifier_arch: str = "resnet") -> NiceConfig:
    """Colour photos: ResNet classifier, 8x8 block gates, the background flattened to the
    image's mean colour, JPEG output on the fixed path; for a ResNet classifier the generator is
    a head on the classifier's own features. Below LARGE_VIEW px occlusion is distilled into it
    after it trains; from LARGE_VIEW px (photos where the object may be small: scenes) it trains
    with the rank loss at the search's sparse levels instead."""
    cfg = NiceConfig(
        gates=GateConfig(block=8),
        # A flat background codes in the fewest bytes: mnist-m -28% through the search against
        # `lowres` 8x8 block means, once the classifier is fine-tuned on stored images. The
        # generator trains against the 8x8 block means (see MaskTrainConfig.mixing).
        mixing=MixingConfig(mode="mean", pool=8),
        classifier=ClassifierConfig(arch=classifier_arch, in_channels=3, image_size=image_size, width=32),
        # A ResNet classifier: the head on its own features (FeatureGenerator) at every view; the
        # pixel U-Net for other classifiers. mnist-m 64 px with occlusion distilled (issue 20,
        # the committed report, 2,000 test images): the U-Net kept 77.0 / 89.6 / 97.4% at 5 / 10
        # / 20%, deletion AUC 0.245, 0.0502x; the features head 85.0 / 92.4 / 97.8%, 0.217,
        # 0.0485x, at the same cost an image (0.29 ms, 125x faster than occlusion). The U-Net did
        # not learn its teacher even on the images it was taught on (docs/results.md).
        generator=GeneratorConfig(arch="features" if classifier_arch.startswith("resnet") else "conv",
                                  width=16, depth=2, pre_pool=2),
        # The stored fine-tune (the default) is what was measured on mnist-m (-12% bytes); the
        # rank loss was measured only as a fine-tune there (-0.7%) and costs ~60% more
        # generator training, so colour models train without it. Occlusion distilled listwise
        # after the generator trains (issue 20; mnist-m 64 px, 1,000 test images, the product's
        # path, the U-Net then): kept at 5 / 10 / 20% 63.0 / 83.0 / 94.7% -> 77.1 / 89.4 / 97.0%,
        # deletion AUC 0.359 -> 0.244, bytes 0.0503x -> 0.0501x, for ~15 min more training on 2 cores.
        # Then, after the stored fine-tune, the greedy teacher (3 blocks, 5% of 64) on the classifier
        # that ships (mnist-m 64 px, 1,000 test images, measured as a fine-tune of this model): 85.4
        # / 92.9 / 97.2% -> 93.4 / 94.5 / 96.2%, deletion AUC 0.214 -> 0.187, bytes -3.5%, for
        # ~15 min more on 2 cores. Measured with the features head at 64 px only, so the U-Net and
        # larger views go without (at 128 px a step tries 4x the blocks of 4x the pixels).
        train_generator=MaskTrainConfig(rank_weight=0.0, mixing="lowres", teacher="occlusion",
                                        teacher_loss="listwise", teacher_weight=4.0,
                                        greedy_steps=3 if classifier_arch.startswith("resnet")
                                        and image_size <= GREEDY_MAX_VIEW else 0),
        codec=CodecConfig(format="source", quality=85),
        # Photos larger than the view (issue 18, scenes at native size, 100 frames, Grad-CAM's
        # ranking): the quality ladder below native_quality stores 0.0292x of the sources
        # against 0.0500x at q80 alone, and AVIF, which codes a flat background in a fraction
        # of WebP's bytes at native size, 0.0118x (0.27 of the best whole-image oracle), 0 flips.
        # Sparser keep levels at native size, down to 0.25% of the view's blocks (2 of 784 at
        # 224 px; the object is 2-36 of them): the features generator 0.0089x -> 0.0071x,
        # Grad-CAM 0.0090x -> 0.0081x (the same 100 frames; the views of every level are
        # classified in one batch, so a level costs an encode only when it is the one chosen).
        search=SearchConfig(keep=COLOUR_KEEP, native_qualities=(5, 10, 15, 20, 35, 50, 65), native_formats=("avif",),
                            native_keep=(0.03, 0.02, 0.015, 0.01, 0.007, 0.005, 0.0035, 0.0025)),
    )
    if classifier_arch.startswith("resnet") and image_size >= LARGE_VIEW:
        # Scenes, 224 px view, 100 native test frames (docs/results.md): the U-Net generator
        # collapsed or saturated and stored 0.0292x; `features` 0.0146x without the rank loss;
        # with the native keep levels 0.0109x without and 0.0089x with the rank loss at 1-10%,
        # 0.0071x (0.88 of Grad-CAM's bytes) with the finer levels above; on 500 frames 0.0092x
        # (0.198 of the best whole-image oracle, 1.07x Grad-CAM's bytes). The cross-entropy to the top-1
        # (`task_loss="ce"`) is not the default: its two seeds stored 0.00738x and 0.00857x, a
        # spread wider than any lever's effect (docs/results.md).
        # Two epochs: four (the general default) made the masks denser (500 frames, KL: 0.00755x
        # after 2 epochs on the 10,000 train frames, 0.00785x after 4).
        cfg.train_generator = replace(cfg.train_generator, rank_weight=1.0, rank_keep=(0.01, 0.02, 0.05, 0.1),
                                      epochs=2)
    if image_size >= LARGE_VIEW:
        # No teacher: occlusion of a large view costs seconds a frame (7 s at 224 px), and
        # Grad-CAM distilled into the scenes generator lost (docs/results.md).
        # The greedy teacher likewise: 784 candidate blocks a step at 224 px.
        cfg.train_generator = replace(cfg.train_generator, teacher="", greedy_steps=0)
    return cfg
