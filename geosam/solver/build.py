"""``make_optimizer(cfg, model)``: AdamW over the trainable parameters, in weight-decay groups."""

from __future__ import annotations

import logging

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from yacs.config import CfgNode

from geosam.utils.errors import GeosamError

logger = logging.getLogger("geosam.solver")

# SAM's normalisation layers: nn.LayerNorm in the transformers, LayerNorm2d (channels-first)
# in the decoder's upscaling and the encoder neck. Their scale and shift only rescale
# activations, so decaying them towards zero regularises nothing (detectron2's rule).
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, LayerNorm2d)


def make_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the parameters that require grad, in two groups.

    Normalisation-layer parameters and biases get SOLVER.WEIGHT_DECAY_NORM, every other
    parameter SOLVER.WEIGHT_DECAY; a group left empty (e.g. no norm layer trains) is dropped.
    Frozen parameters are left out, so the optimiser holds no state for a frozen encoder.
    Each group carries a ``name`` for logs.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, NORM_TYPES) or name == "bias":
                no_decay.append(param)
            else:
                decay.append(param)
    if not decay and not no_decay:
        raise GeosamError(
            "nothing to train: MODEL.TRAINABLE is empty and MODEL.ENCODER_TRAINABLE_BLOCKS is 0 "
            "(set MODEL.TRAINABLE to e.g. [mask_decoder])"
        )
    groups = [
        {"name": "decay", "params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY},
        {"name": "no_decay", "params": no_decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY_NORM},
    ]
    groups = [group for group in groups if group["params"]]
    for group in groups:
        logger.debug(
            "optimizer group %s: %d tensors, weight decay %g",
            group["name"],
            len(group["params"]),
            group["weight_decay"],
        )
    return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS))
