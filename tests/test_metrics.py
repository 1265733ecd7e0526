"""Mask metrics on small hand-drawn masks, and their aggregation per prompt kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.exceptions import NotComputableError
from scipy import ndimage

from geosam.engine.metrics import (
    IoUHeadAUC,
    PromptMetrics,
    boundary_iou,
    boundary_width,
    dice_score,
    inner_boundary,
    iou_head_auc,
    mask_iou,
    score_masks,
)


def square(top: int, left: int, size: int, shape: tuple[int, int] = (10, 10)) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_iou_and_dice_of_shifted_squares():
    # Two 4x4 squares, one column apart: 12 px shared, 20 px in the union.
    pred, target = square(2, 2, 4)[None], square(2, 3, 4)[None]
    assert mask_iou(pred, target).item() == pytest.approx(12 / 20)
    assert dice_score(pred, target).item() == pytest.approx(2 * 12 / 32)


def test_empty_masks():
    empty, full = torch.zeros(1, 5, 5, dtype=torch.bool), torch.ones(1, 5, 5, dtype=torch.bool)
    for metric in (mask_iou, dice_score, boundary_iou):
        assert metric(empty, empty).item() == 1.0  # nothing to find, nothing found
        assert metric(full, empty).item() == 0.0
        assert metric(empty, full).item() == 0.0


def test_boundary_width_is_two_percent_of_the_diagonal():
    assert boundary_width(100, 100) == 3  # 0.02 * 141.4 = 2.83
    assert boundary_width(1024, 1024) == 29
    assert boundary_width(10, 10) == 1  # never less than one pixel


def test_inner_boundary_is_the_ring_inside_the_contour():
    band = inner_boundary(square(2, 2, 6)[None], width=1)[0]
    ring = square(2, 2, 6) & ~square(3, 3, 4)
    assert torch.equal(band, ring)
    assert band.sum() == 36 - 16
    # The image border counts as background: a mask filling the image has its outer ring.
    full = torch.ones(1, 10, 10, dtype=torch.bool)
    assert torch.equal(inner_boundary(full, width=2)[0], ~square(2, 2, 6))


@pytest.mark.parametrize("width", [1, 2, 4])
def test_inner_boundary_matches_iterated_3x3_erosion(width):
    # The reference implementation: pad with background, erode with a 3x3 square `width` times.
    rng = np.random.default_rng(width)
    blobs = ndimage.binary_opening(rng.random((3, 40, 50)) > 0.4, iterations=1)
    masks = torch.from_numpy(blobs)
    expected = np.stack(
        [
            mask & ~ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=width, border_value=0)
            for mask in blobs
        ]
    )
    assert np.array_equal(inner_boundary(masks, width).numpy(), expected)


def test_boundary_iou_punishes_edge_errors_more_than_iou():
    # 6x6 squares one column apart on a 10x10 image (band width 1): the rings share their top
    # and bottom rows' 5 common pixels each, 10 of 30.
    pred, target = square(2, 2, 6)[None], square(2, 3, 6)[None]
    assert boundary_iou(pred, target).item() == pytest.approx(10 / 30)
    assert mask_iou(pred, target).item() == pytest.approx(30 / 42)
    assert boundary_iou(pred, pred).item() == 1.0


def test_score_masks_scores_each_mask():
    pred = torch.stack([square(2, 2, 4), square(0, 0, 10)])
    target = torch.stack([square(2, 3, 4), square(0, 0, 10)])
    scores = score_masks(pred, target)
    assert set(scores) == {"iou", "dice", "boundary_iou", "matched", "predicted", "targets"}
    assert scores["iou"].tolist() == pytest.approx([0.6, 1.0])
    assert scores["dice"].tolist() == pytest.approx([0.75, 1.0])
    assert scores["matched"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="expected two"):
        score_masks(pred, target[:, :5])


def test_object_f1_counts_parcels_found_missed_and_wrong():
    # Found (IoU 0.6), wrong (IoU 0.2: a false positive and a miss), empty (a miss only).
    target = torch.stack([square(2, 3, 4), square(0, 0, 5), square(5, 5, 4)])
    pred = torch.stack([square(2, 2, 4), square(4, 4, 5), torch.zeros(10, 10, dtype=torch.bool)])
    scores = score_masks(pred, target)
    assert scores["matched"].tolist() == [1.0, 0.0, 0.0]
    assert scores["predicted"].tolist() == [1.0, 1.0, 0.0]
    metric = PromptMetrics()
    metric.update([("box", scores)])
    # TP 1, FP 1, FN 2: 2·1 / (2·1 + 1 + 2).
    assert metric.compute()["f1_50"] == pytest.approx(2 / 5)


def test_prompt_metrics_average_over_prompts_overall_and_per_kind():
    metric = PromptMetrics()

    def scores(*iou: float) -> dict[str, torch.Tensor]:
        values = torch.tensor(iou, dtype=torch.float64)
        found = (values >= 0.5).double()
        return {
            "iou": values,
            "dice": values / 2,
            "boundary_iou": values / 4,
            "matched": found,
            "predicted": torch.ones_like(values),
            "targets": torch.ones_like(values),
        }

    metric.update([("box", scores(1.0, 0.5)), ("point", scores(0.0))])
    metric.update([("box", scores(0.75))])
    result = metric.compute()
    assert result["count"] == 4
    assert result["mIoU"] == pytest.approx((1.0 + 0.5 + 0.75 + 0.0) / 4)
    assert result["dice"] == pytest.approx(result["mIoU"] / 2)
    assert result["per_kind"]["box"] == pytest.approx(
        {"mIoU": 0.75, "dice": 0.375, "boundary_iou": 0.1875, "f1_50": 1.0, "count": 3}
    )
    assert result["per_kind"]["point"]["count"] == 1
    assert "points" not in result["per_kind"]  # no prompts of that kind

    metric.reset()
    with pytest.raises(NotComputableError):
        metric.compute()


def test_automatic_mode_points_are_their_own_kind_and_junk_counts_only_when_masked():
    empty = torch.zeros(10, 10, dtype=torch.bool)
    # On a parcel and found; off the parcels with a mask (a junk polygon: a false positive
    # only); off the parcels with nothing (right, and no parcel missed).
    target = torch.stack([square(2, 3, 4), empty, empty])
    pred = torch.stack([square(2, 2, 4), square(0, 0, 3), empty])
    scores = score_masks(pred, target)
    assert scores["targets"].tolist() == [1.0, 0.0, 0.0]
    assert scores["iou"].tolist() == pytest.approx([0.6, 0.0, 1.0])
    metric = PromptMetrics()
    metric.update([("auto", scores), ("box", score_masks(pred[:1], target[:1]))])
    result = metric.compute()
    # TP 1, FP 1, FN 0: 2·1 / (2·1 + 1).
    assert result["per_kind"]["auto"]["f1_50"] == pytest.approx(2 / 3)
    assert result["per_kind"]["auto"]["count"] == 3
    # The overall figures are the index kinds' alone.
    assert result["count"] == 1 and result["mIoU"] == pytest.approx(0.6)


def test_iou_head_auc_is_the_probability_that_a_found_parcel_outscores_the_rest():
    rng = np.random.default_rng(0)
    predicted = torch.from_numpy(rng.random(40).round(1))  # ties too
    found = torch.from_numpy(rng.random(40) < 0.4).double()
    positives, negatives = predicted[found == 1], predicted[found == 0]
    pairs = positives[:, None] - negatives[None, :]
    expected = ((pairs > 0).double() + 0.5 * (pairs == 0).double()).mean().item()
    assert iou_head_auc(predicted, found) == pytest.approx(expected)
    assert iou_head_auc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1.0, 1.0, 0.0])) == 1.0
    assert np.isnan(iou_head_auc(torch.tensor([0.9, 0.1]), torch.zeros(2)))

    metric = IoUHeadAUC()
    metric.update((predicted[:25], found[:25]))
    metric.update((torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)))
    metric.update((predicted[25:], found[25:]))
    assert metric.compute() == pytest.approx(expected)
