"""``make_lr_scheduler``: linear warm-up, then cosine decay or steps, stepped every iteration.

The schedule is one closed-form multiplier of the base learning rate per iteration, run by
``torch.optim.lr_scheduler.LambdaLR``. Closed form rather than chained recursive schedulers
(LinearLR then CosineAnnealingLR in a SequentialLR) because the learning rate at iteration i
then depends on i alone: a resumed run, which restores ``last_epoch`` from the scheduler's
``state_dict``, gets exactly the rate an uninterrupted run had, with no rounding carried over
from earlier steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR
from yacs.config import CfgNode

from geosam.utils.errors import GeosamError


class LRMultiplier:
    """The factor on the base learning rate at iteration ``i`` (0-based).

    Warm-up (as detectron2's linear warm-up): over the first ``warmup_iters`` iterations the
    factor rises linearly from ``warmup_factor`` to 1, multiplying the schedule below.

    * ``"cosine"``: after warm-up, half a cosine from 1 down to 0 at ``max_iters``, so the
      peak rate is BASE_LR exactly when warm-up ends and the run ends at rate 0.
    * ``"multistep"``: × ``gamma`` at each iteration in ``milestones``.

    A plain object with only numbers as attributes, so LambdaLR's ``state_dict`` can hold it.
    """

    def __init__(
        self,
        name: str,
        max_iters: int,
        warmup_iters: int,
        warmup_factor: float,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
    ) -> None:
        if name not in ("cosine", "multistep"):
            raise ValueError(f"unknown schedule {name!r}")
        self.name = name
        self.max_iters = max_iters
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.milestones = list(milestones)
        self.gamma = gamma

    def __call__(self, iteration: int) -> float:
        return self._warmup(iteration) * self._schedule(iteration)

    def _warmup(self, iteration: int) -> float:
        if iteration >= self.warmup_iters:
            return 1.0
        alpha = iteration / self.warmup_iters
        return self.warmup_factor * (1.0 - alpha) + alpha

    def _schedule(self, iteration: int) -> float:
        if self.name == "multistep":
            return self.gamma ** sum(iteration >= m for m in self.milestones)
        if iteration < self.warmup_iters:
            return 1.0
        progress = (iteration - self.warmup_iters) / max(1, self.max_iters - self.warmup_iters)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int
) -> LambdaLR:
    """SOLVER's schedule over SOLVER.MAX_EPOCHS × ``iters_per_epoch`` iterations.

    Call ``scheduler.step()`` after every ``optimizer.step()``; iteration i trains at
    ``BASE_LR × multiplier(i)``. SOLVER.STEPS are epochs, converted to iterations here, so a
    config does not depend on the dataset's size.
    """
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be positive, got {iters_per_epoch}")
    steps = list(cfg.SOLVER.STEPS)
    if cfg.SOLVER.LR_SCHEDULER == "multistep" and steps != sorted(set(steps)):
        raise GeosamError(f"SOLVER.STEPS must be increasing epochs, got {steps}")
    multiplier = LRMultiplier(
        cfg.SOLVER.LR_SCHEDULER,
        max_iters=cfg.SOLVER.MAX_EPOCHS * iters_per_epoch,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        milestones=[epoch * iters_per_epoch for epoch in steps],
        gamma=cfg.SOLVER.GAMMA,
    )
    return LambdaLR(optimizer, multiplier)
