"""The part of a predicted mask that a user is given: the connected region they prompted.

SAM's mask for one prompt often carries fragments away from the prompted object: a field
that looks like the one prompted, speckle along a hedge. ``geosam segment`` and the QGIS
plugin deliver only the prompted part of each polygon, by the rule the runtime decides once
(:func:`geosam.runtime.prompts.prompted_part_indexes`: the parts under a positive click, else
the part with most area inside the box, else the largest). With TEST.PROMPTED_PART evaluation
applies the same rule to the pixel mask's connected regions, so the figures describe what
users get; without it they score the decoder's raw output. Regions are 4-connected, as
``rasterio.features.shapes`` polygonizes them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from geosam.runtime.prompts import prompted_part_indexes


def prompted_components(
    mask: np.ndarray, points: np.ndarray | None = None, box: np.ndarray | None = None
) -> np.ndarray:
    """The connected regions of a boolean (h, w) mask that hold one of ``points`` ((K, 2) x, y
    pixel coordinates of positive clicks); when none does, the region with most pixels inside
    ``box`` (x0, y0, x1, y1), or without a box the largest region."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    height, width = mask.shape
    contains = np.zeros((count, 0), dtype=bool)
    if points is not None and len(points):
        columns = np.clip(np.floor(points[:, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.floor(points[:, 1]).astype(int), 0, height - 1)
        contains = labels[rows, columns][None, :] == np.arange(1, count + 1)[:, None]
    if box is not None:
        x0, y0 = (max(0, int(np.floor(v))) for v in box[:2])
        x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        labels_inside = labels[y0:y1, x0:x1]
    else:
        labels_inside = labels
    areas = np.bincount(labels_inside.ravel(), minlength=count + 1)[1:]
    return np.isin(labels, prompted_part_indexes(contains, areas) + 1)


def keep_prompted_parts(masks: torch.Tensor, prompt: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`prompted_components` of each of N masks (N, h, w) for its prompt: ``boxes``
    (N, 4), or ``coords`` (N, K, 2) with ``labels`` (N, K) of which 1 marks positives, in the
    masks' pixel frame. Returns a bool tensor on the masks' device."""
    boxes = prompt["boxes"].cpu().numpy() if "boxes" in prompt else None
    coords = prompt["coords"].cpu().numpy() if "coords" in prompt else None
    positive = prompt["labels"].cpu().numpy() == 1 if "coords" in prompt else None
    kept = [
        prompted_components(
            mask,
            points=None if coords is None else coords[index][positive[index]],
            box=None if boxes is None else boxes[index],
        )
        for index, mask in enumerate(masks.cpu().numpy())
    ]
    return torch.from_numpy(np.stack(kept)).to(masks.device) if kept else masks
