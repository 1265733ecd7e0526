"""``build_model(cfg)``: the configured SAM, with its weights, and only the configured parts
trainable."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from segment_anything.modeling import Sam
from yacs.config import CfgNode

from geosam.modeling.checkpoint import (
    load_state_dict_checked,
    load_tuned_weights,
    read_sam_checkpoint,
    sha256_file,
)
from geosam.modeling.sam import build_sam, get_spec
from geosam.modeling.shipped import resolve_checkpoint
from geosam.utils.errors import GeosamError

logger = logging.getLogger("geosam.modeling")

TRAINABLE_PARTS = ("mask_decoder", "prompt_encoder", "image_encoder")


def build_model(cfg: CfgNode) -> Sam:
    """Build MODEL.TYPE at INPUT.IMAGE_SIZE, load MODEL.CHECKPOINT (a path, or the name of a
    checkpoint geosam ships: :mod:`geosam.modeling.shipped`), then MODEL.TUNED_WEIGHTS (an
    earlier run's trained weights to continue from), and freeze by config.

    The ViT types need their official checkpoint: fine-tuning a randomly initialised ViT-B
    would silently waste a run, so an empty MODEL.CHECKPOINT is an error for them (benchmarks
    that want the architecture alone call :func:`geosam.modeling.sam.build_sam`). The tiny
    model without a checkpoint is initialised from SEED, without disturbing the global RNG,
    so tests and demo runs are reproducible.

    The model stays on the CPU; the trainer places it (``idist.auto_model``).
    """
    model_type = cfg.MODEL.TYPE
    checkpoint = cfg.MODEL.CHECKPOINT
    official = get_spec(model_type).official_checkpoint
    if not checkpoint and official:
        raise GeosamError(
            f"MODEL.CHECKPOINT is empty: MODEL.TYPE {model_type} needs the official {official} "
            "(give MODEL.CHECKPOINT /path/to/it)"
        )
    path = resolve_checkpoint(checkpoint) if checkpoint else ""
    state_dict = read_sam_checkpoint(path, model_type, cfg.INPUT.IMAGE_SIZE) if path else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.SEED)
        model = build_sam(
            model_type, cfg.INPUT.IMAGE_SIZE, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD
        )
    if state_dict is not None:
        load_state_dict_checked(model, state_dict, checkpoint, complete=True)
    if cfg.MODEL.TUNED_WEIGHTS:
        base_sha256 = sha256_file(path) if path else None
        load_tuned_weights(model, cfg.MODEL.TUNED_WEIGHTS, base_sha256)
    set_trainable(model, cfg.MODEL.TRAINABLE, cfg.MODEL.ENCODER_TRAINABLE_BLOCKS)
    trainable, total = count_parameters(model)
    logger.info(
        "%s (%s): %s of %s parameters trainable (%.2f%%)",
        model_type,
        checkpoint or f"random init, seed {cfg.SEED}",
        f"{trainable:,}",
        f"{total:,}",
        100.0 * trainable / total,
    )
    return model


def set_trainable(model: Sam, parts: Sequence[str], encoder_blocks: int = 0) -> None:
    """Make exactly ``parts`` and the last ``encoder_blocks`` encoder blocks trainable.

    Unfreezing the last N blocks also unfreezes the neck after them: like detectron2's
    FREEZE_AT, the cut is a depth in the network below which everything is frozen, so that
    trained blocks never feed the decoder through a frozen projection fitted to their old
    outputs. Parts not listed get ``requires_grad=False``, so an optimiser built from
    ``p.requires_grad`` parameters and the embedding cache both follow the config.
    """
    unknown = sorted(set(parts) - set(TRAINABLE_PARTS))
    if unknown:
        raise GeosamError(
            f"MODEL.TRAINABLE has {', '.join(unknown)}; parts are {', '.join(TRAINABLE_PARTS)}"
        )
    depth = len(model.image_encoder.blocks)
    if not 0 <= encoder_blocks <= depth:
        raise GeosamError(
            f"MODEL.ENCODER_TRAINABLE_BLOCKS must be between 0 and {depth} (the encoder's "
            f"depth), got {encoder_blocks}"
        )
    model.requires_grad_(False)
    for part in parts:
        getattr(model, part).requires_grad_(True)
    if encoder_blocks:
        for block in model.image_encoder.blocks[depth - encoder_blocks :]:
            block.requires_grad_(True)
        model.image_encoder.neck.requires_grad_(True)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
