"""Test-time flips: SAM run on an image and its mirror images, mask logits averaged.

A mask decoder whose image features are coarse (16 px tokens for the tiny model) places a
field's edges a little differently on each mirror image of a chip; averaging the logits of the
four flips (none, left-right, up-down, both) before thresholding cancels part of that error.
It costs four encoder and four decoder runs per prompt; what it gains on held-out fields is
measured in docs/design-notes.md ("Test-time flips") and docs/benchmarks.md.

Coordinates follow SAM's convention, pixel indices (a point on pixel column ``x`` is ``x``),
so mirroring an image ``W`` pixels wide sends ``x`` to ``W - 1 - x``; in a frame resized by
``s`` that is ``(W - 1) · s - x``. This module is numpy-only so that the QGIS plugin's
vendored runtime and training's evaluation share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# (mirror left-right, mirror up-down) of each view; the unflipped view first.
FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))


def flip_affine(
    original_hw: Sequence[int], frame_hw: Sequence[int], flip_x: bool, flip_y: bool
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(sign, offset)`` per axis (x, y) such that ``coords · sign + offset`` mirrors x/y
    coordinates of a frame of ``frame_hw`` pixels that shows an image of ``original_hw``
    pixels (the same size, or SAM's resized input)."""
    height, width = (int(v) for v in original_hw)
    frame_h, frame_w = (int(v) for v in frame_hw)
    scale_x, scale_y = frame_w / width, frame_h / height
    sign = (-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0)
    offset = ((width - 1) * scale_x if flip_x else 0.0, (height - 1) * scale_y if flip_y else 0.0)
    return sign, offset


def flip_points(
    coords: np.ndarray, original_hw: Sequence[int], flip_x: bool, flip_y: bool
) -> np.ndarray:
    """(..., 2) x/y pixel coordinates of an ``original_hw`` image, on its mirror image."""
    sign, offset = flip_affine(original_hw, original_hw, flip_x, flip_y)
    return np.asarray(coords, dtype=np.float64) * sign + offset


def flip_box(box: np.ndarray, original_hw: Sequence[int], flip_x: bool, flip_y: bool) -> np.ndarray:
    """An (4,) x1, y1, x2, y2 box of an ``original_hw`` image, on its mirror image."""
    corners = flip_points(np.asarray(box).reshape(2, 2), original_hw, flip_x, flip_y)
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def flip_planes(array: np.ndarray, flip_x: bool, flip_y: bool) -> np.ndarray:
    """An (..., H, W) array (masks, logits) mirrored (a view); its own inverse."""
    axes = tuple(axis for axis, on in ((-1, flip_x), (-2, flip_y)) if on)
    return np.flip(array, axis=axes) if axes else array


def flip_image(array: np.ndarray, flip_x: bool, flip_y: bool) -> np.ndarray:
    """An (H, W, ...) array (an image, channels last) mirrored (a view); its own inverse."""
    if flip_x:
        array = array[:, ::-1]
    if flip_y:
        array = array[::-1]
    return array
