"""SAM's training loss: focal + dice on the mask logits, MSE on the IoU head.

As in the SAM paper: a linear combination of focal and dice loss (20:1), best-of-M for
ambiguous prompts with multimask output (only the mask with the lowest loss is trained, so the
three outputs can specialise on whole, part and sub-part instead of averaging them), and the
IoU head regressed onto the IoU that each predicted mask actually has with the target.

A prompt with an empty target ("no parcel": an automatic-mode point on a road or a hedge) has
an IoU target of 0 whatever its mask, even an empty one: the IoU head's output is what automatic
mode keeps a mask by, and an empty target's masks are never parcels, so they must rank below
every real one. (Scored as a mask, an empty prediction of an empty target agrees perfectly,
see :mod:`geosam.engine.metrics`; as an IoU-head target that would teach the head to be sure of
nothing.) The mask terms need no special case: focal loss on an all-zero target pushes every
logit down, and Dice's +1 smoothing leaves it finite and lowest for an empty mask.

Resolution: the loss is computed on the decoder's low-resolution logits (4x the embedding
grid: 256x256 for a 1024 px input), against targets area-downsampled to that grid. The logits
are produced at that resolution; upsampling them to the input size only interpolates, and costs
16x the memory and time in the loss and its backward, which dominates a decoder step on cached
embeddings with many prompts. Area downsampling keeps each low-resolution pixel's fraction of
parcel as a soft target, so sub-pixel boundary positions still shape the loss (nearest
resizing would throw them away). It is also the resolution of SAM's ``low_res_masks`` output
and mask prompts. Targets may be given at any size; they are resized here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss
from yacs.config import CfgNode


class SamLoss(nn.Module):
    """Focal + dice (best of the M masks per prompt) + IoU-head MSE (all M predictions).

    Each term is summed over prompts and divided by the number of masks, as DETR and SAM
    normalise, so the loss does not depend on how many prompts a batch holds.
    """

    def __init__(
        self,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.iou_weight = iou_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_threshold = mask_threshold

    def forward(
        self,
        mask_logits: torch.Tensor,
        iou_predictions: torch.Tensor,
        targets: torch.Tensor,
        num_masks: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss of one decoder output against one binary target per prompt.

        Args:
            mask_logits: (B, M, h, w) low-resolution logits, M = 1 or 3 (multimask).
            iou_predictions: (B, M) the IoU head's outputs.
            targets: (B, H, W) binary (bool, int or 0/1 float) masks in the padded input frame,
                one per prompt; resized to (h, w) by area. All zero: "no parcel".
            num_masks: the divisor; defaults to B. Under data parallelism pass the number of
                prompts over all processes divided by the world size, as DETR does, so that
                after gradient averaging every prompt weighs the same wherever it ran.

        Returns:
            ``loss`` (the weighted total to backpropagate) and its unweighted terms
            ``loss_focal``, ``loss_dice``, ``loss_iou``, each a scalar tensor.
        """
        if (
            mask_logits.dim() != 4
            or iou_predictions.shape != mask_logits.shape[:2]
            or targets.dim() != 3
            or targets.shape[0] != mask_logits.shape[0]
        ):
            raise ValueError(
                "expected mask_logits (B, M, h, w), iou_predictions (B, M), targets (B, H, W); "
                f"got {tuple(mask_logits.shape)}, {tuple(iou_predictions.shape)}, "
                f"{tuple(targets.shape)}"
            )
        # Under autocast the decoder emits bf16/fp16; sums over 65k pixels need fp32.
        logits = mask_logits.float()
        has_target = targets.flatten(1).any(1)
        target = F.interpolate(targets[:, None].float(), size=logits.shape[-2:], mode="area")
        target = target.expand_as(logits)

        focal = (
            sigmoid_focal_loss(
                logits, target, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
            )
            .flatten(2)
            .mean(-1)
        )
        dice = _dice_loss(logits, target)
        mask_loss = self.focal_weight * focal + self.dice_weight * dice
        best = mask_loss.detach().argmin(dim=1, keepdim=True)

        with torch.no_grad():
            actual_iou = _mask_iou(logits > self.mask_threshold, target >= 0.5)
            actual_iou = torch.where(has_target[:, None], actual_iou, 0.0)
        iou_error = F.mse_loss(iou_predictions.float(), actual_iou, reduction="none").mean(1)

        divisor = max(float(len(logits) if num_masks is None else num_masks), 1.0)
        terms = {
            "loss_focal": focal.gather(1, best).sum() / divisor,
            "loss_dice": dice.gather(1, best).sum() / divisor,
            "loss_iou": iou_error.sum() / divisor,
        }
        total = (
            self.focal_weight * terms["loss_focal"]
            + self.dice_weight * terms["loss_dice"]
            + self.iou_weight * terms["loss_iou"]
        )
        return {"loss": total, **terms}


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per mask, (B, M, h, w) → (B, M); +1 smoothing keeps empty masks finite."""
    probs = logits.sigmoid().flatten(2)
    target = target.flatten(2)
    numerator = 2 * (probs * target).sum(-1) + 1
    denominator = probs.sum(-1) + target.sum(-1) + 1
    return 1 - numerator / denominator


def _mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks, (B, M, h, w) → (B, M); two empty masks agree perfectly (1)."""
    intersection = (pred & target).flatten(2).sum(-1)
    union = (pred | target).flatten(2).sum(-1)
    return torch.where(union > 0, intersection / union.clamp(min=1), 1.0)


def build_loss(cfg: CfgNode) -> SamLoss:
    """The loss configured by LOSS; thresholded at TEST.MASK_THRESHOLD so the IoU head learns
    the quality of the mask inference will actually output."""
    return SamLoss(
        focal_weight=cfg.LOSS.FOCAL_WEIGHT,
        dice_weight=cfg.LOSS.DICE_WEIGHT,
        iou_weight=cfg.LOSS.IOU_WEIGHT,
        focal_alpha=cfg.LOSS.FOCAL_ALPHA,
        focal_gamma=cfg.LOSS.FOCAL_GAMMA,
        mask_threshold=cfg.TEST.MASK_THRESHOLD,
    )
