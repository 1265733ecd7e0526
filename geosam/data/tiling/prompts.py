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


def interior_points(
    mask: np.ndarray, rng: np.random.Generator, num_random: int
) -> tuple[tuple[float, float], np.ndarray]:
    """The most interior pixel of a boolean mask and ``num_random`` random interior pixels.

    Returns (x, y) pixel indices (column, row) relative to the mask array. The most interior pixel
    maximises the distance to the mask's border (the tile edge counts as border), which is where
    a person clicking on a parcel would click. Random points avoid the outermost pixels where
    possible so that a point prompt is unambiguous about which parcel it means.
    """
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    centre = (float(x), float(y))
    inner = distance >= min(3.0, float(distance.max()))
    ys, xs = np.nonzero(inner)
    picks = rng.choice(ys.size, size=num_random, replace=ys.size < num_random)
    points = np.stack([xs[picks], ys[picks]], axis=1).astype(np.float64)
    return centre, points
