"""From a chip, its instance mask and prompts in chip pixels to SAM's padded input frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geosam.data.transforms.prompts import PromptSet
from geosam.runtime.preprocess import (
    normalize_and_pad,
    preprocess_shape,
    resize_longest_side,
    resize_mask_nearest,
    scale_coords,
)


class SamInput:
    """Resize to the encoder's input size, normalise and pad; scale prompts; build targets.

    Targets are one boolean mask per prompt in the padded ``size`` × ``size`` frame: the
    instance mask resized like the image (nearest, so ids stay exact). A prompt whose instance
    vanishes in the resize (a sliver smaller than a resized pixel) is dropped. A prompt on no
    instance (id 0: an automatic-mode point off the parcels) targets an empty mask.
    """

    def __init__(self, size: int, pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        self.size = size
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std

    def image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 chip → (3, S, S) float32 encoder input."""
        return normalize_and_pad(
            resize_longest_side(image, self.size), self.size, self.pixel_mean, self.pixel_std
        )

    def input_size(self, original_hw: tuple[int, int]) -> tuple[int, int]:
        return preprocess_shape(original_hw[0], original_hw[1], self.size)

    def prompts(self, mask: np.ndarray, prompts: PromptSet) -> PromptSet:
        """Prompts scaled to the input frame, each with its target mask."""
        resized = resize_mask_nearest(mask, self.size)
        padded = np.zeros((self.size, self.size), dtype=resized.dtype)
        padded[: resized.shape[0], : resized.shape[1]] = resized
        present = np.unique(resized)
        out: PromptSet = {}
        for kind, arrays in prompts.items():
            ids = arrays["instance_ids"]
            keep = (ids == 0) | np.isin(ids, present[present > 0])
            if not keep.any():
                continue
            scaled = {key: value[keep] for key, value in arrays.items()}
            if "boxes" in scaled:
                boxes = scaled["boxes"].reshape(-1, 2, 2)
                scaled["boxes"] = scale_coords(boxes, mask.shape, self.size).reshape(-1, 4)
            if "coords" in scaled:
                scaled["coords"] = scale_coords(scaled["coords"], mask.shape, self.size)
            ids = scaled["instance_ids"]
            scaled["targets"] = (padded[None] == ids[:, None, None]) & (ids[:, None, None] > 0)
            out[kind] = scaled
        return out
