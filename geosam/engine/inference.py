"""``inference(cfg, model, loader)``: SAM's masks for every prompt of a loader, scored.

The evaluator is an ignite ``Engine`` (:func:`create_evaluator`), so the trainer evaluates with
the very same engine between epochs and ``geosam evaluate`` runs it on its own. Each step runs
:func:`~geosam.modeling.prompted.decode_batch`, keeps per prompt the output the IoU head ranks
first, upscales it to the input frame (:func:`~geosam.modeling.prompted.predict_masks`),
averages it over the four flips with TEST.FLIP_TTA (:mod:`geosam.modeling.flip_tta`),
thresholds it at TEST.MASK_THRESHOLD, keeps the prompted part (TEST.PROMPTED_PART, as
``geosam segment`` does) and scores it against the prompt's target
(:mod:`geosam.engine.metrics`). Under distributed evaluation every process scores its shard
and :class:`~geosam.engine.metrics.PromptMetrics` sums over processes. With automatic-mode
points (TEST.AUTO_POINTS) the IoU head's ROC AUC on them
(:class:`~geosam.engine.metrics.IoUHeadAUC`) joins their kind's means as ``iou_auc``, so
metrics.json and TensorBoard show it beside them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.handlers import ProgressBar
from segment_anything.modeling import Sam
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from geosam.data.transforms.prompts import AUTO_KIND
from geosam.engine.metrics import IoUHeadAUC, PromptMetrics, score_masks
from geosam.engine.prompted_part import keep_prompted_parts
from geosam.modeling.flip_tta import decode_masks
from geosam.modeling.prompted import Batch, DecodedPrompts, batch_to_device
from geosam.utils.errors import GeosamError

logger = logging.getLogger("geosam.engine")

# The name of the PromptMetrics result in an evaluator's ``state.metrics``; its keys ("mIoU",
# "dice", ...) are stored there too.
METRICS_NAME = "prompts"
# The name of the IoU head's AUC on automatic-mode points, in ``state.metrics`` and in their
# kind's summary.
AUC_NAME = "iou_auc"


def resolve_device(cfg: CfgNode) -> torch.device:
    """MODEL.DEVICE as a device; under a distributed launch, the one ignite gives this process
    (``cuda:<local rank>`` with NCCL), whatever MODEL.DEVICE says."""
    if idist.get_world_size() > 1:
        return idist.device()
    if cfg.MODEL.DEVICE == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg.MODEL.DEVICE)
    except RuntimeError as e:
        raise GeosamError(
            f"MODEL.DEVICE {cfg.MODEL.DEVICE!r} is not a device (auto, cpu, cuda or cuda:N)"
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GeosamError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but CUDA is not available (use auto or cpu)"
        )
    return device


def amp_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype with SOLVER.AMP on CUDA: bf16 where the GPU has it (no loss scaling
    needed), else fp16; None (full fp32) on CPU, where autocast would only slow SAM down."""
    if not cfg.SOLVER.AMP or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class PromptScores:
    """The scores of the N prompts of one kind on one chip (an evaluator step's output item)."""

    kind: str
    tile_id: str
    variant: int
    instance_ids: torch.Tensor
    # The IoU head's estimate for the mask that was scored.
    predicted_iou: torch.Tensor
    # Keys of geosam.engine.metrics.SUMMARY_NAMES, each (N,).
    scores: dict[str, torch.Tensor]


@dataclass
class PredictedMasks:
    """The masks a user gets for the N prompts of one kind on one image."""

    decoded: DecodedPrompts
    # (N, h, w) bool in the image's input frame (``decoded.input_size``), thresholded at
    # TEST.MASK_THRESHOLD; with TEST.PROMPTED_PART only the prompted part.
    masks: torch.Tensor
    # (N,) the IoU head's estimate for each mask.
    predicted_iou: torch.Tensor


def predict_batch(
    cfg: CfgNode, model: Sam, batch: Batch, device: torch.device
) -> list[PredictedMasks]:
    """Decode every prompt of ``batch`` and threshold the mask SAM would return (no gradients).

    The one path from a batch to binary masks: scoring (:func:`evaluate_batch`) and pictures
    of predictions (``geosam evaluate``'s examples) both take it, so what is shown is what was
    scored.
    """
    model.eval()
    batch = batch_to_device(batch, device)
    with torch.no_grad():
        with autocast(amp_dtype(cfg, device), device):
            decoded = decode_masks(
                model, batch, cfg.MODEL.MULTIMASK, cfg.INPUT.IMAGE_SIZE, cfg.TEST.FLIP_TTA
            )
        predictions = []
        for item, logits, predicted_iou in decoded:
            masks = logits > cfg.TEST.MASK_THRESHOLD
            if cfg.TEST.PROMPTED_PART:
                masks = keep_prompted_parts(masks, batch["prompts"][item.image_index][item.kind])
            predictions.append(PredictedMasks(item, masks, predicted_iou))
    return predictions


def evaluate_batch(
    cfg: CfgNode, model: Sam, batch: Batch, device: torch.device
) -> list[PromptScores]:
    """Decode, threshold and score every prompt of ``batch`` (no gradients)."""
    results = []
    for prediction in predict_batch(cfg, model, batch, device):
        item = prediction.decoded
        height, width = item.input_size
        results.append(
            PromptScores(
                kind=item.kind,
                tile_id=batch["tile_ids"][item.image_index],
                variant=batch["variants"][item.image_index],
                instance_ids=item.instance_ids,
                predicted_iou=prediction.predicted_iou,
                scores=score_masks(prediction.masks, item.targets[:, :height, :width]),
            )
        )
    return results


def create_evaluator(cfg: CfgNode, model: Sam, device: torch.device) -> Engine:
    """An ignite Engine whose run over a loader leaves the :class:`PromptMetrics` summary in
    ``state.metrics[METRICS_NAME]`` (and its overall values under their own names, e.g.
    ``state.metrics["mIoU"]``, for score functions). ``model`` is the bare Sam, already on
    ``device``; each step's output is a list of :class:`PromptScores`. With TEST.AUTO_POINTS
    the IoU head's AUC is in ``state.metrics[AUC_NAME]`` too."""
    evaluator = Engine(lambda engine, batch: evaluate_batch(cfg, model, batch, device))
    PromptMetrics(
        output_transform=lambda output: [(item.kind, item.scores) for item in output],
        device=device,
    ).attach(evaluator, METRICS_NAME)
    if cfg.TEST.AUTO_POINTS:
        IoUHeadAUC(output_transform=_auto_point_scores).attach(evaluator, AUC_NAME)
    return evaluator


def _auto_point_scores(output: list[PromptScores]) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted IoU, found) of a step's automatic-mode points, on the CPU, for IoUHeadAUC."""
    items = [item for item in output if item.kind == AUTO_KIND]
    predicted = [item.predicted_iou.double().cpu() for item in items]
    found = [item.scores["matched"].double().cpu() for item in items]
    empty = torch.zeros(0, dtype=torch.float64)
    return torch.cat([empty, *predicted]), torch.cat([empty, *found])


def run_evaluation(evaluator: Engine, loader: DataLoader) -> dict[str, Any]:
    """Run ``evaluator`` over ``loader``; its summary, or a GeosamError if there was nothing
    to score."""
    try:
        metrics = evaluator.run(loader).metrics
    except NotComputableError as e:
        raise GeosamError("no prompts to evaluate: the validation data holds no instances") from e
    summary = dict(metrics[METRICS_NAME])
    if AUC_NAME in metrics and AUTO_KIND in summary["per_kind"]:
        auto = summary["per_kind"][AUTO_KIND]
        # undefined (NaN) when every point found its parcel or none did: null in metrics.json,
        # which strict JSON readers accept and NaN they do not
        auc = None if math.isnan(metrics[AUC_NAME]) else metrics[AUC_NAME]
        summary["per_kind"] = {**summary["per_kind"], AUTO_KIND: {**auto, AUC_NAME: auc}}
    return summary


def prompt_records(output: list[PromptScores]) -> list[dict[str, Any]]:
    """One plain dict per prompt (tile, kind, instance, predicted IoU and scores), e.g. for
    choosing examples to show."""
    records = []
    for item in output:
        columns = {"predicted_iou": item.predicted_iou, **item.scores}
        columns = {name: values.tolist() for name, values in columns.items()}
        for index, instance_id in enumerate(item.instance_ids.tolist()):
            records.append(
                {
                    "tile_id": item.tile_id,
                    "variant": item.variant,
                    "kind": item.kind,
                    "instance_id": instance_id,
                    **{name: values[index] for name, values in columns.items()},
                }
            )
    return records


def inference(
    cfg: CfgNode,
    model: Sam,
    loader: DataLoader,
    *,
    keep_records: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on every prompt of ``loader``.

    Returns ``{"mIoU", "dice", "boundary_iou", "count", "per_kind": {kind: {...}}}`` (means
    over prompts; see :class:`~geosam.engine.metrics.PromptMetrics`), plus ``"records"``, one
    dict per prompt of this process (:func:`prompt_records`), when ``keep_records``. The model
    is moved to the configured device. ``progress``: a progress bar on rank 0.
    """
    device = resolve_device(cfg)
    model.to(device)
    evaluator = create_evaluator(cfg, model, device)
    records: list[dict[str, Any]] = []
    if keep_records:
        evaluator.add_event_handler(
            Events.ITERATION_COMPLETED,
            lambda engine: records.extend(prompt_records(engine.state.output)),
        )
    if progress and idist.get_rank() == 0:
        ProgressBar(desc="evaluate", persist=False).attach(evaluator)
    metrics = run_evaluation(evaluator, loader)
    logger.info(
        "%d prompts: mIoU %.4f, Dice %.4f, boundary IoU %.4f, F1@0.5 %.4f",
        metrics["count"],
        metrics["mIoU"],
        metrics["dice"],
        metrics["boundary_iou"],
        metrics["f1_50"],
    )
    auto = metrics["per_kind"].get(AUTO_KIND)
    if auto is not None:
        auc = auto.get(AUC_NAME)
        logger.info(
            "%d automatic-mode points: F1@0.5 %.4f, IoU head ROC AUC %s",
            auto["count"],
            auto["f1_50"],
            "undefined" if auc is None else f"{auc:.4f}",
        )
    if keep_records:
        metrics["records"] = records
    return metrics
