"""Burning parcels into a tile's instance-id mask and describing each instance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage

from geosam.data.tiling.prompts import boundary_distance, interior_points, prompt_rng


def rasterize_instances(
    polygons: Sequence[shapely.Geometry],
    transform: Affine,
    shape: tuple[int, int],
    valid: np.ndarray | None,
    min_area: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance-id mask (0 = none, ids 1..n) and, per id, the index into ``polygons``.

    Larger parcels are burnt first so a parcel drawn inside another (overlapping labels) stays
    visible. Pixels that are nodata never belong to a parcel. Parcels left with fewer than
    ``min_area`` pixels are removed and the remaining ids renumbered without gaps, so id ``k``
    is row ``k - 1`` of the instance index.
    """
    dtype = np.uint32 if len(polygons) >= np.iinfo(np.uint16).max else np.uint16
    order = np.argsort(-shapely.area(np.asarray(polygons, dtype=object)), kind="stable")
    burnt = (
        features.rasterize(
            ((polygons[i], k + 1) for k, i in enumerate(order)),
            out_shape=shape,
            transform=transform,
            fill=0,
            dtype=dtype,
        )
        if len(polygons)
        else np.zeros(shape, dtype)
    )
    if valid is not None:
        burnt[~valid] = 0
    areas = np.bincount(burnt.ravel(), minlength=len(polygons) + 1)
    keep = np.flatnonzero(areas[1:] >= max(1, min_area)) + 1
    lookup = np.zeros(len(polygons) + 1, dtype=np.uint16 if len(keep) < 65535 else np.uint32)
    lookup[keep] = np.arange(1, len(keep) + 1)
    return lookup[burnt], order[keep - 1]


def describe_instances(mask: np.ndarray, tile_id: str, seed: int, num_points: int) -> list[dict]:
    """Pixel box, area and the seeded evaluation prompts of every instance in a mask.

    Boxes and points use SAM's prompt convention: integer pixel indices (SAM's prompt encoder
    adds the half pixel itself), boxes XYXY from the first to the last pixel of the instance
    (x1, y1 inclusive, as segment_anything's ``batched_mask_to_box``).
    """
    records = []
    distance = boundary_distance(mask)
    for instance_id, window in enumerate(ndimage.find_objects(mask), start=1):
        if window is None:
            continue
        ys, xs = window
        crop = mask[window] == instance_id
        rng = prompt_rng(seed, tile_id, instance_id)
        (cx, cy), points = interior_points(crop, distance[window], rng, num_points)
        records.append(
            {
                "tile_id": tile_id,
                "instance_id": instance_id,
                "box_x0": xs.start,
                "box_y0": ys.start,
                "box_x1": xs.stop - 1,
                "box_y1": ys.stop - 1,
                "area_px": int(crop.sum()),
                "point_x": cx + xs.start,
                "point_y": cy + ys.start,
                "points_x": (points[:, 0] + xs.start).tolist(),
                "points_y": (points[:, 1] + ys.start).tolist(),
            }
        )
    return records
