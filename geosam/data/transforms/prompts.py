"""Prompts for SAM, sampled online from instance masks (training) or read from the index (eval).

A prompt set is a dict keyed by prompt kind; each kind holds arrays for one decoder call,
because a call needs prompts of the same shape:

* ``"box"``: ``boxes`` (N, 4) XYXY;
* ``"point"``: ``coords`` (N, 1, 2), ``labels`` (N, 1), one positive point;
* ``"points"``: ``coords`` (N, K, 2), ``labels`` (N, K): positives (1), negatives (0) and
  padding (-1, which SAM's prompt encoder ignores);
* ``"auto"``: ``coords`` (N, 1, 2), ``labels`` (N, 1), one positive point anywhere in the chip,
  as automatic mode's point grid falls: on a parcel, which it then targets, or on a road, hedge
  or wood, where the target is "no parcel" (instance id 0, an empty mask). Without them the IoU
  head never sees a point that should score low, and automatic mode cannot tell junk masks
  from parcels by their predicted IoU.

Every kind also has ``instance_ids`` (N,) naming the instance each prompt targets (0: none).
Coordinates are pixel indices (x, y) of the array they were sampled on, SAM's convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from geosam.data.tiling.prompts import boundary_distance, interior_points, prompt_rng

PromptSet = dict[str, dict[str, np.ndarray]]
# The kinds the tile index stores fixed evaluation prompts of (docs/tile-dataset.md).
INDEX_KINDS = ("box", "point", "points")
AUTO_KIND = "auto"
PROMPT_KINDS = (*INDEX_KINDS, AUTO_KIND)


class PromptSampler:
    """Draw ``per_instance`` distinct prompt kinds per instance with the configured weights,
    then sample a prompt of each.

    Boxes are the instance's box with each edge jittered by up to ``box_jitter`` of the box side
    (at most ``box_jitter_max_px``), like the loose boxes users draw. Points are random interior
    pixels; negatives are random pixels of the jittered box outside the instance, where a user
    would click to correct a spill. An ``"auto"`` prompt drawn for an instance is a point
    anywhere in the chip instead (:func:`auto_points`): the instances only set how many
    prompts a chip gets, so the kinds' weights stay the shares of prompts.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        weights: Sequence[float],
        num_points: int,
        negative_points: int,
        box_jitter: float,
        box_jitter_max_px: float,
        max_instances: int,
        per_instance: int = 1,
    ) -> None:
        unknown = set(kinds) - set(PROMPT_KINDS)
        if unknown:
            raise ValueError(f"unknown prompt kinds {sorted(unknown)}")
        self.kinds = list(kinds)
        total = float(sum(weights))
        self.weights = np.asarray(weights, dtype=np.float64) / total
        self.num_points = num_points
        self.negative_points = negative_points
        self.box_jitter = box_jitter
        self.box_jitter_max_px = box_jitter_max_px
        self.max_instances = max_instances
        if not 1 <= per_instance <= np.count_nonzero(self.weights):
            raise ValueError(
                f"{per_instance} prompts per instance, but only "
                f"{np.count_nonzero(self.weights)} kinds can be drawn"
            )
        self.per_instance = per_instance

    def __call__(self, mask: np.ndarray, rng: np.random.Generator) -> PromptSet:
        ids = np.unique(mask)
        ids = ids[ids > 0]
        if ids.size > self.max_instances:
            ids = np.sort(rng.choice(ids, self.max_instances, replace=False))
        slices = ndimage.find_objects(mask, max_label=int(ids.max()) if ids.size else 0)
        collected: dict[str, list] = {kind: [] for kind in self.kinds}
        for instance_id, kind_indices in zip(ids, self._draw_kinds(ids.size, rng), strict=True):
            window = slices[instance_id - 1]
            for kind_index in kind_indices:
                kind = self.kinds[kind_index]
                collected[kind].append(self._sample(kind, mask, int(instance_id), window, rng))
        return {kind: _stack(kind, items) for kind, items in collected.items() if items}

    def _draw_kinds(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, per_instance) kind indices, distinct and sorted within a row."""
        if self.per_instance == 1:
            return rng.choice(len(self.kinds), size=(count, 1), p=self.weights)
        rows = [
            rng.choice(len(self.kinds), self.per_instance, replace=False, p=self.weights)
            for _ in range(count)
        ]
        return np.sort(np.reshape(rows, (count, self.per_instance)), axis=1)

    def _sample(
        self,
        kind: str,
        mask: np.ndarray,
        instance_id: int,
        window: tuple[slice, slice],
        rng: np.random.Generator,
    ) -> dict:
        if kind == AUTO_KIND:
            points = auto_points(mask, 1, rng)
            return {
                "coords": points["coords"][0],
                "labels": points["labels"][0],
                "instance_id": int(points["instance_ids"][0]),
            }
        ys, xs = window
        box = np.array([xs.start, ys.start, xs.stop - 1, ys.stop - 1], dtype=np.float64)
        if kind == "box":
            return {"boxes": self._jitter(box, mask.shape, rng), "instance_id": instance_id}
        crop = mask[window] == instance_id
        count = 1 if kind == "point" else self.num_points
        _, points = interior_points(crop, boundary_distance(crop.astype(np.uint8)), rng, count)
        positives = points + np.array([xs.start, ys.start])
        if kind == "point":
            return {"coords": positives, "labels": np.ones(1), "instance_id": instance_id}
        negatives = self._negatives(mask, instance_id, self._jitter(box, mask.shape, rng), rng)
        coords = np.zeros((self.num_points + self.negative_points, 2))
        labels = -np.ones(self.num_points + self.negative_points)
        coords[: len(positives)], labels[: len(positives)] = positives, 1
        end = len(positives) + len(negatives)
        coords[len(positives) : end], labels[len(positives) : end] = negatives, 0
        return {"coords": coords, "labels": labels, "instance_id": instance_id}

    def _jitter(
        self, box: np.ndarray, shape: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        sides = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
        limit = np.minimum(sides * self.box_jitter, self.box_jitter_max_px)
        jittered = box + rng.uniform(-1, 1, 4) * limit
        high = np.array([shape[1] - 1, shape[0] - 1] * 2)
        jittered = np.clip(jittered, 0, high)
        return np.concatenate(
            [np.minimum(jittered[:2], jittered[2:]), np.maximum(jittered[:2], jittered[2:])]
        )

    def _negatives(
        self, mask: np.ndarray, instance_id: int, box: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        x0, y0, x1, y1 = np.round(box).astype(int)
        region = mask[y0 : y1 + 1, x0 : x1 + 1] != instance_id
        ys, xs = np.nonzero(region)
        if ys.size == 0:
            return np.zeros((0, 2))
        picks = rng.choice(ys.size, size=min(self.negative_points, ys.size), replace=False)
        return np.stack([xs[picks] + x0, ys[picks] + y0], axis=1).astype(np.float64)


def fixed_prompts(instances: pd.DataFrame, kinds: Sequence[str]) -> PromptSet:
    """The tile index's evaluation prompts for each instance, every kind for every instance."""
    ids = instances["instance_id"].to_numpy()
    prompts: PromptSet = {}
    if "box" in kinds:
        boxes = instances[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float64)
        prompts["box"] = {"boxes": boxes, "instance_ids": ids}
    if "point" in kinds:
        coords = instances[["point_x", "point_y"]].to_numpy(np.float64)[:, None, :]
        prompts["point"] = {"coords": coords, "labels": np.ones((len(ids), 1)), "instance_ids": ids}
    if "points" in kinds:
        xs = np.stack(instances["points_x"].to_numpy())
        ys = np.stack(instances["points_y"].to_numpy())
        coords = np.stack([xs, ys], axis=-1).astype(np.float64)
        prompts["points"] = {"coords": coords, "labels": np.ones(xs.shape), "instance_ids": ids}
    return {kind: value for kind, value in prompts.items() if len(ids)}


def auto_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` single positive points drawn uniformly over the chip, each targeting the
    instance under it (0 where there is none).

    Uniform pixels have the distribution of automatic mode's n × n grid shifted by a random
    offset, which is where its points fall on a raster relative to the parcels.
    """
    height, width = mask.shape
    xs, ys = rng.integers(0, width, count), rng.integers(0, height, count)
    return {
        "coords": np.stack([xs, ys], axis=1).astype(np.float64)[:, None, :],
        "labels": np.ones((count, 1)),
        "instance_ids": mask[ys, xs].astype(np.int64),
    }


def fixed_auto_points(mask: np.ndarray, tile_id: str, count: int) -> PromptSet:
    """The chip's evaluation ``"auto"`` prompts: :func:`auto_points` seeded by the tile id.

    The tile index holds no such prompts (adding them would change the dataset format), and
    they need no more than the mask: drawn from a generator that depends only on the tile,
    every model and every run is scored on the same points.
    """
    if count == 0:
        return {}
    return {AUTO_KIND: auto_points(mask, count, prompt_rng(0, tile_id, 0))}


def _stack(kind: str, items: list[dict]) -> dict[str, np.ndarray]:
    stacked = {"instance_ids": np.array([item["instance_id"] for item in items])}
    for key in ("boxes",) if kind == "box" else ("coords", "labels"):
        stacked[key] = np.stack([item[key] for item in items])
    return stacked
