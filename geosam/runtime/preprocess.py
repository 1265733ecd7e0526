"""SAM's image preprocessing, in numpy: the one implementation training, export and runtime use.

SAM resizes an image so its longest side is the encoder's input size (Pillow bilinear, as
``segment_anything.utils.transforms.ResizeLongestSide``), normalises each channel and pads
bottom-right to a square. Prompts are scaled by the same factor. Any deviation here is a
silent accuracy loss at inference, so tests check this module against segment_anything's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) after resizing the longest side to ``long_side``, rounded as SAM does."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image so that its longest side is ``long_side``."""
    height, width = preprocess_shape(image.shape[0], image.shape[1], long_side)
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_mask_nearest(mask: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an (H, W) label or boolean mask like its image, keeping labels exact."""
    height, width = preprocess_shape(mask.shape[0], mask.shape[1], long_side)
    if (height, width) == mask.shape:
        return mask
    resized = Image.fromarray(mask.astype(np.int32)).resize((width, height), Image.NEAREST)
    return np.asarray(resized).astype(mask.dtype)


def normalize_and_pad(
    image: np.ndarray,
    size: int,
    pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
    pixel_std: Sequence[float] = SAM_PIXEL_STD,
) -> np.ndarray:
    """(H, W, 3) uint8 → (3, size, size) float32, normalised, zero-padded bottom-right."""
    mean = np.asarray(pixel_mean, dtype=np.float32)
    std = np.asarray(pixel_std, dtype=np.float32)
    normalised = (image.astype(np.float32) - mean) / std
    out = np.zeros((3, size, size), dtype=np.float32)
    out[:, : image.shape[0], : image.shape[1]] = normalised.transpose(2, 0, 1)
    return out


def preprocess_image(
    image: np.ndarray,
    size: int,
    pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
    pixel_std: Sequence[float] = SAM_PIXEL_STD,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The encoder input for an (H, W, 3) uint8 image, and the resized (height, width)."""
    resized = resize_longest_side(image, size)
    return normalize_and_pad(resized, size, pixel_mean, pixel_std), resized.shape[:2]


def scale_coords(coords: np.ndarray, original_hw: tuple[int, int], long_side: int) -> np.ndarray:
    """Scale (..., 2) x/y pixel coordinates from the original image to the resized one."""
    height, width = original_hw
    new_h, new_w = preprocess_shape(height, width, long_side)
    scale = np.array([new_w / width, new_h / height], dtype=np.float64)
    return np.asarray(coords, dtype=np.float64) * scale
