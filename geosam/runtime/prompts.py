"""Prompts in raster pixels and the decisions about them that do not need the model.

A prompt is what one parcel is asked for: clicks (labelled 1 inside the parcel, 0 outside)
and/or a box, in the raster's continuous pixel coordinates (:mod:`.windows`). The CLI makes
them from GIS features, the QGIS plugin from features or map clicks; everything after that is
decided here, once: whether a prompt can be used on a raster, how much context a cached
window must leave around it, the order in which a batch of prompts is visited, which
negative clicks a window holds, and which part of a multi-part mask the prompt meant.

Windows follow the positive part of a prompt (its clicks inside and its box); negative
clicks only count inside the window chosen for it. A negative click only means something in
the image it was made on (SAM's own notion of "not this"), and a far one must not drag the
window off the parcel; so a batch's negative points are added to every prompt, and each
window keeps those it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .windows import Box, GeoTransform, Window, WindowParams, pixel_to_map, prompt_box


@dataclass(frozen=True)
class Prompt:
    """Clicks (N, 2) with ``labels`` (N,) (1 inside the parcel, 0 outside) and an optional
    box (x1, y1, x2, y2), in raster pixel coordinates; ``index`` the source feature's position
    among the caller's prompts (a row, a feature), which results carry back."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    box: Box | None = None
    index: int = 0

    @property
    def clicks(self) -> np.ndarray:
        """The positive clicks (K, 2)."""
        return self.points[self.labels == 1]

    @property
    def positive(self) -> bool:
        """Whether the prompt says where the parcel is (a click inside or a box)."""
        return self.box is not None or bool(np.any(self.labels == 1))

    @property
    def bounds(self) -> Box:
        """The bounding box of the positive clicks and the box: what the window must hold."""
        clicks = self.clicks
        return prompt_box(clicks if len(clicks) else None, self.box)

    def with_negatives(self, negatives: np.ndarray) -> Prompt:
        """This prompt plus negative clicks (N, 2)."""
        negatives = np.asarray(negatives, dtype=np.float64).reshape(-1, 2)
        return Prompt(
            np.concatenate([self.points, negatives]),
            np.concatenate([self.labels, np.zeros(len(negatives))]),
            self.box,
            self.index,
        )

    def map_clicks(self, geotransform: GeoTransform) -> np.ndarray:
        """The positive clicks (K, 2) in map coordinates."""
        return pixel_to_map(geotransform, self.clicks).reshape(-1, 2)

    def map_box(self, geotransform: GeoTransform) -> np.ndarray | None:
        """The box's corners (4, 2) in map coordinates, a ring without its closing point;
        None without a box."""
        if self.box is None:
            return None
        x1, y1, x2, y2 = self.box
        return pixel_to_map(geotransform, np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)]))


def inside(prompt: Prompt, raster_size: tuple[int, int]) -> bool:
    """Whether ``prompt`` can be used on a raster of ``raster_size`` (width, height): its
    positive clicks all lie on it (a click off the image is not a prompt SAM can use) and its
    box, if any, overlaps it."""
    width, height = raster_size
    x, y = prompt.clicks[:, 0], prompt.clicks[:, 1]
    clicks_inside = bool(np.all((x >= 0) & (x <= width) & (y >= 0) & (y <= height)))
    if prompt.box is None:
        return clicks_inside
    x1, y1, x2, y2 = prompt.box
    return clicks_inside and x1 < width and x2 > 0 and y1 < height and y2 > 0


def context_margin(bounds: Box, params: WindowParams) -> float:
    """The context (raster pixels) a cached window must leave around a prompt whose bounds
    are ``bounds`` to answer it as well as the window :func:`.windows.prompt_window` would
    centre on it."""
    extent = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    return params.margin * extent + params.min_margin_px


def spatial_order(
    prompts: Sequence[Prompt],
    input_size: int,
    ground_resolution_m: float | None,
    pixel_height_m: float,
) -> list[Prompt]:
    """Prompts in rows of about one window's height in raster pixels (``input_size`` model
    pixels at the model's ground resolution, upsampled at most 2x as windows are), west to
    east in each, so that consecutive prompts share windows and the embedding cache holds the
    few windows a row needs. ``pixel_height_m``: the raster's pixel height in metres."""
    row_height = input_size * (
        1.0 if ground_resolution_m is None else max(ground_resolution_m / pixel_height_m, 0.5)
    )

    def key(prompt: Prompt) -> tuple[int, float]:
        x1, y1, x2, y2 = prompt.bounds
        return int((y1 + y2) / 2 // row_height), (x1 + x2) / 2

    return sorted(prompts, key=key)


def window_points(prompt: Prompt, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The clicks (M, 2) of ``prompt`` that ``window`` holds, and their labels (M,): the
    positive ones always (the window was chosen to hold them), negative ones near enough."""
    held = np.array([window.contains((x, y, x, y)) for x, y in prompt.points], dtype=bool)
    return prompt.points[held].reshape(-1, 2), prompt.labels[held]


def prompted_part_indexes(contains: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
    """Which parts of a multi-part mask a prompt meant, as part indexes, from facts the
    front end's geometry library measures: ``contains`` (parts, clicks) whether each part
    holds each positive click, ``box_areas`` (parts,) each part's area inside the prompt's
    box (its whole area without a box).

    The parts holding a positive click; when none does (a box prompt, a click on a hole),
    the part with most area inside the box, or without a box the largest part. SAM's mask
    for one prompt often carries fragments elsewhere in its window (a field that looks like
    the one prompted, speckle along a hedge); the parcel a user prompted is the part under
    the click, or for a box the dominant part inside it.
    """
    contains = np.asarray(contains, dtype=bool).reshape(len(box_areas), -1)
    hit = np.flatnonzero(contains.any(axis=1))
    if len(hit):
        return hit
    return np.array([int(np.argmax(box_areas))])
