"""Mask quality: IoU, Dice and boundary IoU per prompt, and their means per prompt kind.

The per-mask functions take boolean masks (N, H, W) as torch tensors on any device and return
(N,) float scores. Two empty masks agree perfectly (score 1), as in the loss's IoU target.

Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021) compares only the band of each mask within ``d`` pixels of its contour,
``d = max(1, round(0.02 × image diagonal))``. Region IoU of a large parcel hardly moves when
its edge is off by a few pixels; boundary IoU does, and edges are what parcel delineation is
about. The band is the mask minus its erosion by a (2d+1)² square, with everything outside the
image counting as background, exactly the reference implementation's 1 px zero padding and d
iterations of a 3×3 erosion.

Object F1 at IoU 0.5 counts parcels, not pixels: a prompt whose mask reaches IoU 0.5 with its
parcel is a true positive; any other non-empty mask is a false positive *and* leaves its parcel
a false negative; an empty mask is only a false negative. With at most one target per prompt
that is ``F1 = 2 Σmatched / (Σpredicted + Σtargets)``, so it needs just three more sums per
prompt kind. An automatic-mode point off the parcels has no target: its mask, if any, is only a
false positive.

:class:`PromptMetrics` accumulates the scores per prompt kind as an ignite metric, reduced over
processes under distributed evaluation. Its overall figures are over the index's prompt kinds
only: automatic-mode points are scored as their own kind, so that adding them to validation
changes neither the overall means nor the model selection that follows them.

:class:`IoUHeadAUC` asks what automatic mode needs of the IoU head: whether its predicted IoU
ranks the points whose mask finds their parcel (on a parcel, IoU >= 0.5) above the others
(junk points, and parcels missed). It is the ROC AUC, the probability that a random such point
outscores a random other one (0.5: a threshold on predicted IoU cannot separate them), computed
as the Mann-Whitney U statistic, which is exactly that probability with ties counted half.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from ignite.exceptions import NotComputableError
from ignite.metrics import EpochMetric, Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from scipy.stats import mannwhitneyu

from geosam.data.transforms.prompts import INDEX_KINDS
from geosam.modeling.prompted import PROMPT_KINDS

BOUNDARY_DILATION_RATIO = 0.02
# A mask with at least this IoU finds its parcel, for object F1.
MATCH_IOU = 0.5
# Per-mask score → the name of its mean over prompts in summaries, metrics.json and TensorBoard.
SUMMARY_NAMES = {"iou": "mIoU", "dice": "dice", "boundary_iou": "boundary_iou"}
# Every summary's name, the means above and object F1 at MATCH_IOU.
METRIC_NAMES = (*SUMMARY_NAMES.values(), "f1_50")
# Per-mask 0/1 counts that object F1 is computed from.
COUNT_NAMES = ("matched", "predicted", "targets")


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|P ∩ G| / |P ∪ G| per mask."""
    return _ratio((pred & target).flatten(1).sum(1), (pred | target).flatten(1).sum(1))


def dice_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2 |P ∩ G| / (|P| + |G|) per mask."""
    intersection = (pred & target).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + target.flatten(1).sum(1)
    return _ratio(2 * intersection, total)


def boundary_width(height: int, width: int, ratio: float = BOUNDARY_DILATION_RATIO) -> int:
    """Boundary IoU's band width d for an image of ``height`` × ``width`` pixels."""
    return max(1, round(ratio * math.hypot(height, width)))


def inner_boundary(masks: torch.Tensor, width: int) -> torch.Tensor:
    """The pixels of each mask within ``width`` pixels (chessboard distance) of background.

    Erosion as a max-pool of the background, separably (a row then a column pass), so a
    59-pixel band at 1024² costs 2 × 59 instead of 59² comparisons per pixel.
    """
    background = (~masks)[:, None].float()
    background = F.pad(background, (width, width, width, width), value=1.0)
    size = 2 * width + 1
    near_background = F.max_pool2d(background, (1, size), stride=1)
    near_background = F.max_pool2d(near_background, (size, 1), stride=1)
    return masks & (near_background[:, 0] > 0)


def boundary_iou(
    pred: torch.Tensor, target: torch.Tensor, ratio: float = BOUNDARY_DILATION_RATIO
) -> torch.Tensor:
    """IoU of the inner boundary bands of prediction and target, per mask."""
    width = boundary_width(*pred.shape[-2:], ratio=ratio)
    return mask_iou(inner_boundary(pred, width), inner_boundary(target, width))


def score_masks(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every per-mask score (keys of :data:`SUMMARY_NAMES`) and 0/1 count (:data:`COUNT_NAMES`)
    of boolean masks (N, H, W)."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"expected two (N, H, W) masks, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    pred, target = pred.bool(), target.bool()
    iou = mask_iou(pred, target)
    predicted = pred.flatten(1).any(1)
    return {
        "iou": iou,
        "dice": dice_score(pred, target),
        "boundary_iou": boundary_iou(pred, target),
        "matched": ((iou >= MATCH_IOU) & predicted).double(),
        "predicted": predicted.double(),
        "targets": target.flatten(1).any(1).double(),
    }


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), 1.0)


class PromptMetrics(Metric):
    """Mean of each per-mask score over prompts, and object F1: overall and per prompt kind.

    ``update`` takes a sequence of ``(kind, scores)``, scores as from :func:`score_masks`.
    ``compute`` returns ``{"mIoU", "dice", "boundary_iou", "f1_50", "count", "per_kind": {kind:
    {same keys}}}`` with plain floats and ints; kinds without prompts are left out of
    ``per_kind``. The overall figures weigh every prompt of the index's kinds equally, whatever
    its kind; automatic-mode points count only in their own kind.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        # One row per kind: prompt count, then the sum of each score and count.
        self._sums = torch.zeros(
            len(PROMPT_KINDS), 1 + len(_SUMMED), dtype=torch.float64, device=self._device
        )

    @reinit__is_reduced
    def update(self, output: Sequence[tuple[str, Mapping[str, torch.Tensor]]]) -> None:
        for kind, scores in output:
            row = self._sums[PROMPT_KINDS.index(kind)]
            row[0] += len(scores["iou"])
            for column, name in enumerate(_SUMMED, start=1):
                row[column] += scores[name].sum().to(self._device, torch.float64)

    @sync_all_reduce("_sums")
    def compute(self) -> dict:
        total = self._sums[[PROMPT_KINDS.index(kind) for kind in INDEX_KINDS]].sum(0)
        if total[0] == 0:
            raise NotComputableError("PromptMetrics needs at least one prompt to be computed")
        per_kind = {
            kind: _means(row) for kind, row in zip(PROMPT_KINDS, self._sums, strict=True) if row[0]
        }
        return {**_means(total), "per_kind": per_kind}


_SUMMED = (*SUMMARY_NAMES, *COUNT_NAMES)


def _means(row: torch.Tensor) -> dict[str, float | int]:
    count = row[0].item()
    sums = dict(zip(_SUMMED, row[1:].tolist(), strict=True))
    means: dict[str, float | int] = {
        summary: sums[name] / count for name, summary in SUMMARY_NAMES.items()
    }
    targets = sums["predicted"] + sums["targets"]
    means["f1_50"] = 2 * sums["matched"] / targets if targets else 1.0
    means["count"] = int(count)
    return means


def iou_head_auc(predicted_iou: torch.Tensor, found: torch.Tensor) -> float:
    """ROC AUC of ``predicted_iou`` (N,) for ``found`` (N,) 1 against 0; NaN when either class
    is missing (e.g. an untrained model finds no parcel), where the AUC is undefined."""
    found = found.bool()
    positives, negatives = predicted_iou[found], predicted_iou[~found]
    if len(positives) == 0 or len(negatives) == 0:
        return math.nan
    statistic = mannwhitneyu(positives.cpu().numpy(), negatives.cpu().numpy()).statistic
    return float(statistic) / (len(positives) * len(negatives))


class IoUHeadAUC(EpochMetric):
    """:func:`iou_head_auc` over an evaluation, gathered from every process.

    ``update`` takes ``(predicted_iou, matched)``, two (N,) float64 tensors: each prompt's
    predicted IoU and whether its mask found its parcel (``score_masks``' ``matched``).
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(
            iou_head_auc, output_transform=output_transform, check_compute_fn=False, device=device
        )
