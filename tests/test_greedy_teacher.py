"""The greedy teacher (`train_generator.greedy_steps`): greedy insertion of gate blocks into the
stored background, and occlusion's values re-assigned in its order."""

import pytest
import torch

from nice.config import GateConfig, MaskTrainConfig, MixingConfig, NiceConfig
from nice.training.teacher import cell_masks, greedy_insertion, put_first


def _evidence_classifier(weights: torch.Tensor):
    """A two-class classifier whose class-1 logit is a weighted sum of the image: `weights`
    says which pixels are evidence, and how much."""

    def probs(x: torch.Tensor) -> torch.Tensor:
        logit = (x[:, 0] * weights).flatten(1).sum(1)
        return torch.softmax(torch.stack([torch.zeros_like(logit), logit], 1), 1)

    return probs


def test_greedy_insertion_adds_the_blocks_that_raise_the_prediction_most_in_that_order():
    cfg = NiceConfig(gates=GateConfig(block=4), mixing=MixingConfig(mode="zero"))
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 4:8, 8:12] = 1.0    # cell (1, 2): the strongest evidence
    x[0, 0, 12:16, 0:4] = 0.5   # cell (3, 0): the next
    x[0, 0, 0:4, 0:4] = 0.25    # cell (0, 0): the third
    x[1] = x[0].flip(-1)        # mirrored: cells (1, 1), (3, 3), (0, 3)
    weights = torch.full((16, 16), 0.05)  # small: the softmax must not saturate into ties
    weights[0:4, 0:4] = -0.05    # ... except where the classifier reads counter-evidence
    order = greedy_insertion(_evidence_classifier(weights), x, cfg, torch.tensor([1, 1]), steps=3)
    # Image 0's third block is not (0, 0), which lowers class 1: an empty block beats it.
    assert order[0, :2].tolist() == [1 * 4 + 2, 3 * 4 + 0] and order[0, 2].item() != 0
    assert order[1].tolist() == [1 * 4 + 1, 3 * 4 + 3, 0 * 4 + 3]
    # Explaining class 0 instead, the counter-evidence is what keeps that prediction.
    assert greedy_insertion(_evidence_classifier(weights), x, cfg, torch.tensor([0, 0]), steps=1)[0, 0].item() == 0
    assert len(set(greedy_insertion(_evidence_classifier(weights), x, cfg, torch.tensor([1, 1]), 16)[0].tolist())) == 16
    with pytest.raises(ValueError, match="greedy steps must be in 1..16"):
        greedy_insertion(_evidence_classifier(weights), x, cfg, torch.tensor([1, 1]), steps=17)


def test_put_first_ranks_the_given_blocks_first_and_keeps_the_values_and_the_rest_of_the_order():
    scores = torch.tensor([[[0.9, 0.1], [0.5, 0.3]], [[4.0, 3.0], [2.0, 1.0]]])
    out = put_first(scores, torch.tensor([[1, 3], [3, 2]]))
    # Image 0: blocks 1 then 3 first, then 0 and 2 in their order; the same four values.
    assert out[0].flatten().tolist() == pytest.approx([0.3, 0.9, 0.1, 0.5])
    assert out[1].flatten().tolist() == pytest.approx([2.0, 1.0, 3.0, 4.0])
    assert (out.flatten(1).sort(1).values == scores.flatten(1).sort(1).values).all()


def test_the_greedy_phase_needs_a_distillation_weight():
    with pytest.raises(ValueError, match="greedy_steps"):
        MaskTrainConfig(greedy_steps=3)
    with pytest.raises(ValueError, match="greedy_steps"):
        MaskTrainConfig(greedy_steps=-1)
    assert MaskTrainConfig(greedy_steps=3, teacher_weight=4.0).greedy_images == 3000
    with pytest.raises(ValueError, match="greedy_cell"):
        MaskTrainConfig(greedy_steps=3, teacher_weight=4.0, greedy_cell=0)
    with pytest.raises(ValueError, match="greedy_base"):
        MaskTrainConfig(greedy_steps=3, teacher_weight=4.0, greedy_base="gradcam")


def test_greedy_cells_over_one_pixel_gates_skip_the_inert_cells_and_rank_each_cells_blocks_first():
    """MNIST's grey default: 1-px gates, candidates of 4 x 4 pixels; a cell equal to the black
    background everywhere is never classified."""
    cfg = NiceConfig(gates=GateConfig(block=1), mixing=MixingConfig(mode="zero"))
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 5, 6] = 1.0   # cell (1, 1): the evidence
    x[0, 0, 1, 1] = 0.2   # cell (0, 0): weaker evidence
    weights = torch.full((8, 8), 0.5)
    seen = []
    probs = _evidence_classifier(weights)

    def counting(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return probs(batch)

    order = greedy_insertion(counting, x, cfg, torch.tensor([1]), steps=2, cell=4)
    assert order.tolist() == [[3, 0]]
    # The background once, then each step's live cells not yet kept (2, then 1); not all 4, and
    # the image as it stands is not classified again (its probability is the chosen candidate's).
    assert seen == [1, 2, 1]
    assert cell_masks(8, 8, 4).shape == (4, 1, 8, 8) and cell_masks(6, 6, 4).sum((1, 2, 3)).tolist() == [16, 8, 8, 4]
    scores = torch.arange(64.0).view(1, 8, 8)  # the base order: the last pixel first
    ranked = put_first(scores, order, cell=4)
    top = ranked.flatten().argsort(descending=True)
    # Cell 3's 16 pixels first (in the base order), then cell 0's, then the rest in the base order.
    assert set(top[:16].tolist()) == {r * 8 + c for r in range(4, 8) for c in range(4, 8)}
    assert top[0].item() == 63 and top[15].item() == 36
    assert set(top[16:32].tolist()) == {r * 8 + c for r in range(4) for c in range(4)}
    assert top[32].item() == 59  # the best pixel of neither cell: row 7, column 3
    assert sorted(ranked.flatten().tolist()) == sorted(scores.flatten().tolist())


def test_greedy_then_stored_ships_a_classifier_fine_tuned_on_the_masks_that_ship(small_model, mnist_small):
    """`train_generator.greedy_then_stored`: after the greedy phase the stored fine-tune runs once
    more, from the plain classifier, on the generator that ships (the first one saw the generator
    before the phase). The shipped classifier is exactly that fine-tune; without the setting it is not."""
    from torch.utils.data import Subset

    from nice.bundle import NiceModel
    from nice.training.phases import train_phases
    from nice.training.stored import train_for_storage

    model = NiceModel.load(small_model)
    train, test, _, _ = mnist_small
    train, val = Subset(train, range(256)), Subset(test, range(64))
    for then_stored in (True, False):
        cfg = model.config.with_overrides({
            "train_generator": {"epochs": 1, "batch_size": 64, "greedy_steps": 2, "greedy_cell": 4,
                                "greedy_images": 32, "greedy_epochs": 1, "teacher_weight": 4.0,
                                "teacher_loss": "listwise", "greedy_then_stored": then_stored},
            # the fine-tune is always kept here, so the two classifiers can differ
            "train_classifier": {"stored_epochs": 1, "stored_max_drop": 100.0}})
        done = train_phases(cfg, model.classifier, train, val, progress=False)
        assert ("restored_val_accuracy_stored_after" in done.final) == then_stored
        assert done.final["greedy_seconds"] > 0
        again, _ = train_for_storage(cfg, model.classifier, done.generator, train, val, progress=False)
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(again.state_dict().values(), done.classifier.state_dict().values()))
        assert (diff == 0) == then_stored, diff
