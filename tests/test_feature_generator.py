"""The `features` generator: a trainable head on a frozen copy of its classifier's trunk."""

import pytest
import torch

from nice.bundle import NiceModel
from nice.config import GREEDY_MAX_VIEW, LARGE_VIEW, ClassifierConfig, GateConfig, GeneratorConfig, NiceConfig, colour_default
from nice.gates import HardConcrete
from nice.models import build_classifier, build_generator
from nice.models.fuse import fuse_for_inference


def _resnet(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    clf = build_classifier(ClassifierConfig(arch="resnet", in_channels=3, width=8, **kw)).eval()
    for m in clf.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return clf


@pytest.mark.parametrize("classifier", [
    {"arch": "resnet", "stem": "conv"}, {"arch": "resnet", "stem": "patch", "pool": "max"}, {"arch": "resnet18"}])
@pytest.mark.parametrize("block", [4, 8, 16])
@pytest.mark.parametrize("size", [(64, 64), (37, 101), (20, 20)])  # 20 px: a 1x1 last stage
def test_feature_generator_works_at_any_size_and_starts_at_init_keep(classifier, block, size):
    cfg = ClassifierConfig(in_channels=3, width=8, **classifier)
    clf = build_classifier(cfg).eval()
    gates = GateConfig(block=block)
    gen = build_generator(GeneratorConfig(arch="features", width=8, init_keep=0.5), gates, 3, classifier=clf)
    out = gen(torch.rand(2, 3, *size))
    assert out.shape == (2, 1, -(-size[0] // block), -(-size[1] // block))
    assert torch.isfinite(out).all()
    assert HardConcrete(gates).expected_l0(out).mean().item() == pytest.approx(0.5, abs=0.05)


def test_only_the_head_trains_and_the_trunk_keeps_the_classifiers_weights_and_statistics():
    clf = _resnet(pool="max")
    gen = build_generator(GeneratorConfig(arch="features", width=8), GateConfig(block=8), 3, classifier=clf)
    trunk = {k: v.clone() for k, v in gen.trunk.state_dict().items()}
    trainable = [n for n, p in gen.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith("trunk.") for n in trainable)
    opt = torch.optim.SGD([p for p in gen.parameters() if p.requires_grad], lr=0.1)
    gen.train()
    for _ in range(3):
        loss = gen(torch.rand(4, 3, 64, 64)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not m.training for m in gen.trunk.modules())  # BatchNorm never updates its statistics
    for k, v in gen.trunk.state_dict().items():
        assert torch.equal(v, trunk[k]), k
    # ... and the trunk is the classifier's: the same logits from its features
    x = torch.rand(2, 3, 64, 64)
    late = gen.trunk["late"](gen.trunk["early"](gen.trunk["normalize"](x)))
    logits = gen.trunk["fc"](gen.trunk["pool"](late).flatten(1))
    torch.testing.assert_close(logits, clf(x))


@pytest.mark.parametrize("margin_map", [False, True])
def test_a_feature_generator_round_trips_and_fuses(tmp_path, margin_map):
    cfg = colour_default()
    cfg.classifier.width = 8
    cfg.classifier.num_classes = 10
    cfg.generator.arch = "features"
    cfg.generator.width = 8
    cfg.generator.margin_map = margin_map
    clf = _resnet()
    gen = build_generator(cfg.generator, cfg.gates, 3, classifier=clf)
    torch.nn.init.normal_(gen.head[-1].weight, std=0.5)  # an output that depends on the input
    gen.eval()
    NiceModel(clf, gen, cfg, class_names=[str(i) for i in range(10)]).save(tmp_path / "m")
    loaded = NiceModel.load(tmp_path / "m")
    x = torch.rand(3, 3, 96, 72)
    with torch.no_grad():
        want = gen(x)
        torch.testing.assert_close(loaded.generator(x), want)
        torch.testing.assert_close(fuse_for_inference(loaded.generator)(x), want, atol=1e-4, rtol=1e-4)
    assert want.std() > 0.01


def test_the_margin_map_is_the_predicted_class_evidence_minus_the_runner_ups():
    """Where an unsure prediction is decided: per cell, the top-1 class's evidence (the last
    stage through the classifier's linear head) minus the second class's, standardised per image."""
    import torch.nn.functional as F

    clf = _resnet(pool="max")
    gen = build_generator(GeneratorConfig(arch="features", width=8, margin_map=True), GateConfig(block=8), 3,
                          classifier=clf).eval()
    seen = {}
    gen.head[0].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        gen(x)
        late, fc = clf.features(clf.normalize(x)), clf.head[-1]  # SmallResNet: features, then pool + linear
        evidence = torch.einsum("nchw,kc->nkhw", late, fc.weight) + fc.bias.view(1, -1, 1, 1)
        first, second = clf(x).topk(2, dim=1).indices.T
        margin = evidence[torch.arange(3), first] - evidence[torch.arange(3), second]
        margin = (margin - margin.mean((1, 2), keepdim=True)) / (margin.std((1, 2), keepdim=True) + 1e-6)
        want = F.interpolate(margin[:, None], size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    assert seen["x"].shape == (3, 2 * 8 + 3, 12, 12)
    torch.testing.assert_close(seen["x"][:, -1], want, atol=1e-4, rtol=1e-4)
    assert (margin.flatten(1).std(1) > 0.5).all()


def test_a_lenet_feature_generator_reads_its_class_evidence_exactly(tmp_path):
    """LeNet (the grey classifier) has two linear layers on its flattened last stage: the evidence
    per location is the predicted logit's linearisation there, and summed over the locations it
    gives the logit back, up to the bias terms (exact for ReLU)."""
    torch.manual_seed(0)
    clf = build_classifier(ClassifierConfig()).eval()
    gen = build_generator(GeneratorConfig(arch="features", width=8), GateConfig(block=1), 1, classifier=clf)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        late = gen.trunk["late"](gen.trunk["early"](gen.trunk["normalize"](x)))
        probs, evidence = gen._evidence(late)
        fc1, fc2 = clf.head[1], clf.head[-1]
        on = (fc1(late.flatten(1)) > 0).float()
        bias = torch.einsum("kj,nj,j->nk", fc2.weight, on, fc1.bias) + fc2.bias
        torch.testing.assert_close(evidence.sum((2, 3)) + bias, clf(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(probs, clf(x).softmax(1))
    assert evidence.shape == (4, 10, 5, 5) and gen(x).shape == (4, 1, 28, 28)
    # ... and it is what autograd's gradient x activation gives for the predicted class
    late.requires_grad_(True)
    k = clf(x).argmax(1)
    logit = clf.head(late).gather(1, k[:, None]).sum()
    (grad,) = torch.autograd.grad(logit, late)
    torch.testing.assert_close(evidence[torch.arange(4), k], (grad * late).sum(1).detach(), atol=1e-4, rtol=1e-4)
    torch.nn.init.normal_(gen.head[-1].weight, std=0.5)
    cfg = NiceConfig(gates=GateConfig(block=1), generator=GeneratorConfig(arch="features", width=8))
    NiceModel(clf, gen.eval(), cfg, class_names=[str(i) for i in range(10)]).save(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(NiceModel.load(tmp_path / "m").generator(x), gen(x))


def test_a_classifier_without_a_resnet_or_lenet_trunk_is_one_clear_error():
    other = build_classifier(ClassifierConfig(arch="mobilenet_v3_small", in_channels=3, image_size=64))
    with pytest.raises(ValueError, match="needs a ResNet or LeNet classifier"):
        build_generator(GeneratorConfig(arch="features"), GateConfig(), 3, classifier=other)
    with pytest.raises(ValueError, match="built from its classifier"):
        build_generator(GeneratorConfig(arch="features"), GateConfig(), 3)


@pytest.mark.parametrize(("arch", "view", "want"), [
    ("resnet", 224, "features"), ("resnet18", 320, "features"), ("resnet", 64, "features"), ("resnet", 128, "features"),
    ("resnet", 0, "features"), ("mobilenet_v3_small", 224, "conv"), ("mobilenet_v3_small", 64, "conv")])
def test_the_colour_default_reads_a_resnet_classifiers_features(arch, view, want):
    from nice.jobs import base_config

    cfg = colour_default(view, arch)
    assert (cfg.generator.arch, cfg.classifier.image_size, cfg.classifier.arch) == (want, view, arch)
    # The large-view (scenes) profile: the rank loss at sparse levels and two epochs (what was
    # measured on scenes; four made denser masks); smaller views train four, without it.
    large = want == "features" and view >= LARGE_VIEW
    assert (cfg.train_generator.rank_weight > 0) == large
    assert cfg.train_generator.epochs == (2 if large else 4)
    # Occlusion distilled after training where a view is cheap to occlude (issue 20); none on
    # large views (seconds a frame, whatever the classifier), nor on the grey default.
    assert cfg.train_generator.teacher == ("" if view >= LARGE_VIEW else "occlusion")
    assert cfg.train_generator.teacher_loss == "listwise" and NiceConfig().train_generator.teacher == ""
    # The greedy teacher after the stored fine-tune where it was measured: the features head
    # up to 64 px views.
    assert cfg.train_generator.greedy_steps == (3 if want == "features" and view <= GREEDY_MAX_VIEW else 0)
    assert NiceConfig().train_generator.greedy_steps == 0
    # What `nice train-classifier` starts from: the overrides' view and architecture pick the
    # profile, and the overrides still win over it.
    over = {"classifier": {"image_size": view, "arch": arch}, "train_generator": {"epochs": 7}}
    got = base_config(3, over)
    assert got.generator.arch == want and got.train_generator.epochs == 7
    assert base_config(3, {**over, "generator": {"arch": "conv"}}).generator.arch == "conv"


def test_a_conv_generator_setting_on_the_features_default_is_one_clear_error():
    from nice.jobs import check_generator_overrides

    # The throughput recipe's --pre-pool 8 would be ignored by the features head: refused.
    with pytest.raises(ValueError, match="add --generator conv"):
        check_generator_overrides(colour_default(64), {"generator": {"pre_pool": 8}})
    over = {"generator": {"arch": "conv", "pre_pool": 8}}
    check_generator_overrides(colour_default(64).with_overrides(over), over)
    check_generator_overrides(colour_default(64), {"generator": {"width": 32}})


def test_a_classifier_from_an_older_version_is_told_what_the_default_is_now():
    from nice.jobs import behind_the_default

    # What a 64 px colour classifier trained before the features head and the teacher records.
    old = colour_default(64).with_overrides({"generator": {"arch": "conv"},
                                             "train_generator": {"teacher": "", "greedy_steps": 0}})
    behind = behind_the_default(old)
    assert len(behind) == 3 and "default now 'features'" in behind[0] and "default now 'occlusion'" in behind[1]
    assert "greedy_steps 0 (default now 3)" in behind[2]
    assert behind_the_default(colour_default(64)) == [] and behind_the_default(colour_default(224)) == []
    assert behind_the_default(NiceConfig()) == []  # the grey default
