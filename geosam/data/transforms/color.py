"""Photometric augmentation (INPUT.COLOR_JITTER): torchvision's colour adjustments per chip.

The factors are drawn from the sample's own generator, not torch's global one, so a chip's
augmentation depends only on the seed of its draw, like the rest of
:class:`~geosam.data.transforms.build.TrainTransform`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF


class ColorJitter:
    """Random brightness, contrast, saturation and hue, applied in that order, as torchvision's
    ``ColorJitter(brightness, contrast, saturation, hue)`` defines the ranges."""

    def __init__(self, strengths: Sequence[float]) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = (float(v) for v in strengths)

    def __bool__(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An (H, W, 3) uint8 chip with its colours jittered."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        for adjust, strength in (
            (TF.adjust_brightness, self.brightness),
            (TF.adjust_contrast, self.contrast),
            (TF.adjust_saturation, self.saturation),
        ):
            if strength:
                tensor = adjust(tensor, float(rng.uniform(max(0.0, 1 - strength), 1 + strength)))
        if self.hue:
            tensor = TF.adjust_hue(tensor, float(rng.uniform(-self.hue, self.hue)))
        return tensor.permute(1, 2, 0).numpy()
