"""Optimiser and learning-rate schedule, built from SOLVER."""

from geosam.solver.build import make_optimizer
from geosam.solver.lr_scheduler import LRMultiplier, make_lr_scheduler

__all__ = ["LRMultiplier", "make_lr_scheduler", "make_optimizer"]
