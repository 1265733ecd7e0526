"""The fixed evaluation prompts stored with every instance.

Evaluation must compare models on the same prompts, so they are drawn once, at tiling time, from
a generator seeded by (seed, tile, instance): the same dataset parameters give the same prompts
whatever the order or number of worker processes.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage


def prompt_rng(seed: int, tile_id: str, instance_id: int) -> np.random.Generator:
    """A generator that depends only on the seed, the tile and the instance."""
    return np.random.default_rng([seed, zlib.crc32(tile_id.encode()), instance_id])


def boundary_distance(labels: np.ndarray) -> np.ndarray:
    """Distance of every labelled pixel to the border of its label (the array edge included).

    One distance transform for all instances of a tile: a pixel is *core* when its four
    neighbours carry its label, and each pixel's distance is to the nearest non-core pixel. The
    chessboard metric is much cheaper than the Euclidean one (docs/design-notes.md) and finds
    the same interior to within a pixel or two, which is all a click position needs.
    """
    padded = np.pad(labels, 1)
    core = labels > 0
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        core &= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] == labels
    return ndimage.distance_transform_cdt(np.pad(core, 1), metric="chessboard")[1:-1, 1:-1]


def interior_points(
    mask: np.ndarray, distance: np.ndarray, rng: np.random.Generator, num_random: int
) -> tuple[tuple[float, float], np.ndarray]:
    """The most interior pixel of a boolean mask and ``num_random`` random interior pixels.

    ``distance`` is :func:`boundary_distance` over the same array. Returns (x, y) pixel indices
    (column, row). The most interior pixel is the farthest from the border, where a person
    clicking on a parcel would click. Random points avoid the outermost pixels where possible
    so that a point prompt is unambiguous about which parcel it means.
    """
    inside = np.where(mask, distance, -1.0)
    y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
    inner = inside >= min(3.0, float(inside[y, x]))
    ys, xs = np.nonzero(inner)
    picks = rng.choice(ys.size, size=num_random, replace=ys.size < num_random)
    return (float(x), float(y)), np.stack([xs[picks], ys[picks]], axis=1).astype(np.float64)
