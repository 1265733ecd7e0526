"""The SAM training loss: focal + dice (best of M) + IoU-head MSE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from geosam.config import load_config
from geosam.modeling import SamLoss, build_loss, build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def square_targets(batch: int, size: int) -> torch.Tensor:
    """One square per sample, at a different place each, as bool masks."""
    targets = torch.zeros(batch, size, size, dtype=torch.bool)
    for i in range(batch):
        start = (i * size) // (2 * batch)
        targets[i, start : start + size // 2, start : start + size // 3] = True
    return targets


def perfect_logits(targets: torch.Tensor, outputs: int = 1) -> torch.Tensor:
    logits = torch.where(targets, 30.0, -30.0)
    return logits[:, None].repeat(1, outputs, 1, 1)


def test_perfect_prediction_costs_nothing():
    targets = square_targets(4, 64)
    out = SamLoss()(perfect_logits(targets), torch.ones(4, 1), targets)
    assert set(out) == {"loss", "loss_focal", "loss_dice", "loss_iou"}
    for name, value in out.items():
        assert value.dim() == 0 and value.item() < 1e-6, name


def test_wrong_prediction_costs_more():
    targets = square_targets(4, 64)
    loss = SamLoss()
    perfect = loss(perfect_logits(targets), torch.ones(4, 1), targets)["loss"]
    inverted = loss(-perfect_logits(targets), torch.ones(4, 1), targets)
    assert inverted["loss"] > perfect + 1.0
    assert inverted["loss_dice"] > 0.9  # no overlap at all
    assert inverted["loss_iou"] == pytest.approx(1.0)  # predicted 1, actual IoU 0


def test_full_resolution_targets_are_area_downsampled():
    # An odd-sized square at 256 px is not aligned to the 4 px cells of the 64 px logits:
    # its edge cells become fractional (soft) targets, not rounded ones.
    full = torch.zeros(2, 256, 256, dtype=torch.bool)
    full[:, 30:161, 50:99] = True
    logits = torch.randn(2, 1, 64, 64)
    iou = torch.rand(2, 1)
    pooled = F.avg_pool2d(full[:, None].float(), 4)[:, 0]
    assert 0 < pooled[0, 7, 20] < 1
    loss = SamLoss()
    at_full, at_low = loss(logits, iou, full), loss(logits, iou, pooled)
    for name in at_full:
        assert at_full[name].item() == pytest.approx(at_low[name].item(), rel=1e-6), name


def test_best_of_three_trains_only_the_best_mask():
    targets = square_targets(2, 64)
    good = perfect_logits(targets)[:, 0]
    bad = torch.randn(2, 64, 64)
    worse = -perfect_logits(targets)[:, 0]
    # Sample 0's best mask is output 2, sample 1's is output 0.
    logits = torch.stack(
        [torch.stack([worse[0], bad[0], good[0]]), torch.stack([good[1], worse[1], bad[1]])]
    ).requires_grad_(True)
    iou = torch.full((2, 3), 0.5, requires_grad=True)
    out = SamLoss()(logits, iou, targets)
    assert out["loss_focal"].item() < 1e-6 and out["loss_dice"].item() < 1e-6

    out["loss"].backward()
    grad_norms = logits.grad.flatten(2).abs().sum(-1)
    # The perfect masks' gradient is ~0 and the others get none from the mask terms (the IoU
    # target is computed without grad): no output is pushed towards another's target.
    assert torch.all(grad_norms < 1e-6)
    assert torch.all(iou.grad != 0)  # the IoU head is trained on all three outputs


def test_best_is_per_sample_minimum_of_combined_loss():
    targets = square_targets(3, 32)
    logits = torch.randn(3, 3, 32, 32)
    iou = torch.rand(3, 3)
    loss = SamLoss()
    combined = []
    for k in range(3):
        single = loss(logits[:, k : k + 1], iou[:, k : k + 1], targets, num_masks=1)
        per_sample = [
            loss(logits[i : i + 1, k : k + 1], iou[i : i + 1, k : k + 1], targets[i : i + 1])
            for i in range(3)
        ]
        combined.append([20 * p["loss_focal"] + p["loss_dice"] for p in per_sample])
        assert single["loss_focal"] > 0
    best = torch.tensor(combined).T.min(dim=1).values.mean()
    out = loss(logits, iou, targets)
    assert (20 * out["loss_focal"] + out["loss_dice"]).item() == pytest.approx(best.item())


def test_iou_term_is_mse_against_actual_iou_of_every_output():
    targets = torch.zeros(1, 8, 8, dtype=torch.bool)
    targets[0, :, :4] = True  # left half
    logits = torch.full((1, 3, 8, 8), -10.0)
    logits[0, 0, :, :2] = 10.0  # a quarter: IoU 0.5
    logits[0, 1, :, :4] = 10.0  # exact: IoU 1
    logits[0, 2] = 10.0  # everything: IoU 0.5
    iou = torch.tensor([[0.7, 1.0, 0.1]])
    out = SamLoss()(logits, iou, targets)
    expected = ((0.7 - 0.5) ** 2 + 0.0 + (0.1 - 0.5) ** 2) / 3
    assert out["loss_iou"].item() == pytest.approx(expected, rel=1e-5)


def test_normalised_by_number_of_masks():
    targets = square_targets(4, 32)
    logits, iou = torch.randn(4, 3, 32, 32), torch.rand(4, 3)
    loss = SamLoss()
    default, doubled = loss(logits, iou, targets), loss(logits, iou, targets, num_masks=8)
    for name in default:
        assert doubled[name].item() == pytest.approx(default[name].item() / 2), name


def test_build_loss_weights_from_config():
    cfg = load_config(
        None, ["LOSS.FOCAL_WEIGHT", "2", "LOSS.DICE_WEIGHT", "3", "LOSS.IOU_WEIGHT", "0.5"]
    )
    targets = square_targets(2, 32)
    out = build_loss(cfg)(torch.randn(2, 1, 32, 32), torch.rand(2, 1), targets)
    expected = 2 * out["loss_focal"] + 3 * out["loss_dice"] + 0.5 * out["loss_iou"]
    assert out["loss"].item() == pytest.approx(expected.item())
    default = build_loss(load_config(None, []))
    assert (default.focal_weight, default.dice_weight, default.iou_weight) == (20.0, 1.0, 1.0)


def test_half_precision_logits_give_float32_loss():
    targets = square_targets(2, 32)
    out = SamLoss()(torch.randn(2, 3, 32, 32).bfloat16(), torch.rand(2, 3).bfloat16(), targets)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


def test_shape_mismatch_is_a_programming_error():
    with pytest.raises(ValueError, match="expected mask_logits"):
        SamLoss()(torch.randn(2, 3, 32, 32), torch.rand(2, 1), square_targets(2, 32))


def test_decreases_when_training_the_tiny_decoder():
    """A few AdamW steps of the real (tiny) decoder on one embedding and fixed box prompts."""
    cfg = load_config(str(CONFIGS / "tiny.yaml"), [])
    model = build_model(cfg)
    loss_fn = build_loss(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        embedding = model.image_encoder(torch.rand(1, 3, 256, 256) * 255)
    targets = square_targets(4, 256)
    rows, cols = torch.where(targets.any(2)), torch.where(targets.any(1))
    boxes = torch.tensor(
        [
            [cols[1][cols[0] == i].min(), rows[1][rows[0] == i].min(),
             cols[1][cols[0] == i].max(), rows[1][rows[0] == i].max()]
            for i in range(4)
        ],
        dtype=torch.float32,
    )  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        logits, iou = model.mask_decoder(
            embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, False
        )
        out = loss_fn(logits, iou, targets)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_no_parcel_targets_train_empty_masks_and_a_low_iou():
    """An automatic-mode point off the parcels: its target is empty, and the IoU head's target
    is 0 even for an empty mask, so junk ranks below every real parcel."""
    targets = torch.zeros(2, 64, 64, dtype=torch.bool)
    empty = perfect_logits(targets, outputs=3)  # all -30: predicts nothing, rightly
    loss = SamLoss()
    out = loss(empty, torch.zeros(2, 3), targets)
    for name, value in out.items():
        assert torch.isfinite(value) and value.item() < 1e-6, name
    # Confident about the empty mask is wrong: the head should have said 0.
    assert loss(empty, torch.ones(2, 3), targets)["loss_iou"].item() == pytest.approx(1.0)
    # A mask where there is no parcel costs focal and Dice, finitely.
    spill = loss(-empty, torch.zeros(2, 3), targets)
    assert spill["loss_focal"] > 0.1 and 0.9 < spill["loss_dice"] < 1
    assert spill["loss_iou"].item() == 0.0


def test_an_empty_low_resolution_target_of_a_real_parcel_keeps_its_iou_target():
    """A parcel too small for one low-resolution cell at 0.5 still has a target: predicting
    nothing there keeps the IoU target of 1 (two empty masks at that resolution)."""
    targets = torch.zeros(1, 64, 64, dtype=torch.bool)
    targets[0, 10, 10] = True
    logits = torch.full((1, 1, 16, 16), -30.0)
    out = SamLoss()(logits, torch.ones(1, 1), targets)
    assert out["loss_iou"].item() == pytest.approx(0.0)
