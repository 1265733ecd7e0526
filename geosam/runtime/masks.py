"""Masks on automatic mode's tiling grid: grid-box crops, and what is done to them as wholes.

A mask is kept as its box on the tiling grid and a boolean crop of that box, so it costs a
parcel's worth of memory whatever the raster's size, and masks from different windows are
compared by integer offsets. This module holds that record and the pixel operations on it
that do not depend on a window loop:

- :func:`seen_alike` and :func:`join`: a parcel larger than a window is seen in pieces, each
  cut by the edge of the window that saw it. Two pieces are the same parcel when they agree
  where both windows saw the ground (the pixels of both windows), since each window shows all
  of the parcel that lies inside it; the parcel is then their union.
- :func:`fill_holes`: holes below a size are filled (a gap of a few pixels inside a field is
  the model's speckle, not a farmstead).
- :func:`claim`: in a coverage, a pixel two masks hold goes to the better-ranked one.

numpy only, imported relatively: this folder is copied into the QGIS plugin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

# (x0, y0, x1, y1): whole pixels of the tiling grid, end-exclusive.
GridBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class AutoMask:
    """A mask on the tiling grid: ``box``, ``mask`` the boolean crop of that box, ``score``
    the decoder's predicted IoU, ``stability`` SAM's stability score; ``seen`` the boxes of
    the windows it was seen in, ``cut`` whether some of them cut it (it touches one of their
    edges inside the raster, so the parcel may go on beyond); ``fine`` whether the fine pass
    found it (:meth:`~.auto.AutoSegmenter.fine_parcels`): such a mask gives way to every other."""

    box: GridBox
    mask: np.ndarray
    score: float
    stability: float
    seen: tuple[GridBox, ...] = ()
    cut: bool = False
    fine: bool = False

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def rank(self) -> tuple[bool, float, float]:
        """The order in which masks win: duplicates and contested pixels go to the higher. A
        fine-pass mask ranks below every first-pass mask: it is only meant where that pass
        found nothing, and a piece of a parcel seen at twice the resolution may well be rated
        higher than the whole."""
        return not self.fine, self.score, self.stability


def mask_box(mask: np.ndarray) -> GridBox:
    """The end-exclusive (x0, y0, x1, y1) box of a non-empty boolean mask."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def intersection(a: GridBox, b: GridBox) -> GridBox | None:
    """The box ``a`` and ``b`` share, None when they share no pixel."""
    box = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return box if box[0] < box[2] and box[1] < box[3] else None


def bounds(boxes: Sequence[GridBox]) -> GridBox:
    """The box around ``boxes``."""
    stacked = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    x0, y0 = stacked[:, :2].min(axis=0)
    x1, y1 = stacked[:, 2:].max(axis=0)
    return int(x0), int(y0), int(x1), int(y1)


def crop(mask: AutoMask, box: GridBox) -> np.ndarray:
    """``mask``'s pixels inside ``box`` as a (height, width) array of ``box``."""
    out = np.zeros((box[3] - box[1], box[2] - box[0]), bool)
    shared = intersection(mask.box, box)
    if shared is not None:
        x0, y0, x1, y1 = shared
        out[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]] = mask.mask[
            y0 - mask.box[1] : y1 - mask.box[1], x0 - mask.box[0] : x1 - mask.box[0]
        ]
    return out


def seen_alike(a: AutoMask, b: AutoMask, min_iou: float) -> bool:
    """Whether ``a`` and ``b`` are the same parcel seen by different windows: where both
    were seen (pixels of a window of each), their masks overlap with IoU above ``min_iou``.
    Outside that region a piece cut by its window's edge is missing what the other has, so
    whole-mask IoU would call two pieces of one parcel different."""
    shared = [box for p in a.seen for q in b.seen if (box := intersection(p, q)) is not None]
    if not shared:
        return False
    region_box = bounds(shared)
    left, top = region_box[:2]
    region = np.zeros((region_box[3] - top, region_box[2] - left), bool)
    for x0, y0, x1, y1 in shared:
        region[y0 - top : y1 - top, x0 - left : x1 - left] = True
    in_a, in_b = crop(a, region_box) & region, crop(b, region_box) & region
    union = np.count_nonzero(in_a | in_b)
    return union > 0 and np.count_nonzero(in_a & in_b) > min_iou * union


def open_piece(mask: AutoMask, area: GridBox) -> bool:
    """Whether ``mask``, seen by one window only, reaches an edge of that window at a pixel
    of ``area`` (the grid pixels whose windows were looked at): its parcel goes on where a
    neighbouring window saw the ground, and that window gave no piece that joins it. Such a
    piece is a window-shaped part of a parcel, not a parcel: on the NAIP val regions four in
    five of them matched no field (docs/benchmarks.md, session 11). Only a ``cut`` mask can
    be one (it touches an inner edge of its window), so the rest cost no pixel work."""
    if len(mask.seen) != 1 or not mask.cut:
        return False
    x0, y0, x1, y1 = mask.box
    grown = (x0 - 1, y0 - 1, x1 + 1, y1 + 1)
    shape = (y1 - y0 + 2, x1 - x0 + 2)
    beyond = np.zeros(shape, bool)
    for box, value in ((area, True), (mask.seen[0], False)):
        shared = intersection(box, grown)
        if shared is not None:
            beyond[
                shared[1] - grown[1] : shared[3] - grown[1],
                shared[0] - grown[0] : shared[2] - grown[0],
            ] = value
    inside = crop(mask, grown)
    edge = np.zeros(shape, bool)
    edge[1:] |= inside[:-1]
    edge[:-1] |= inside[1:]
    edge[:, 1:] |= inside[:, :-1]
    edge[:, :-1] |= inside[:, 1:]
    return bool((edge & beyond).any())


def join(pieces: Sequence[AutoMask]) -> AutoMask:
    """One parcel from the ``pieces`` different windows saw of it: their union, seen by all
    their windows, with score and stability averaged over the pieces weighted by area (a
    piece that saw more of the parcel says more about the whole)."""
    box = bounds([piece.box for piece in pieces])
    mask = np.zeros((box[3] - box[1], box[2] - box[0]), bool)
    for piece in pieces:
        mask |= crop(piece, box)
    weights = np.array([piece.area for piece in pieces], dtype=np.float64)
    seen = tuple(dict.fromkeys(window for piece in pieces for window in piece.seen))
    return AutoMask(
        box,
        mask,
        float(np.average([p.score for p in pieces], weights=weights)),
        float(np.average([p.stability for p in pieces], weights=weights)),
        seen,
        any(piece.cut for piece in pieces),
    )


def fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """``mask`` with its holes (background not connected to the outside, 8-connected, as
    holes between 4-connected polygons are) smaller than ``max_area`` pixels filled. The
    background is labelled here, in numpy, because the plugin's QGIS Python has no scipy."""
    if max_area <= 0 or mask.all():
        return mask
    background = np.pad(~mask, 1, constant_values=True)
    rows, starts, ends = _runs(background)
    roots = _components(len(rows), *_touching(rows, starts, ends, background.shape[1]))
    sizes = np.bincount(roots, weights=ends - starts)
    small = (sizes[roots] < max_area) & (roots != roots[0])  # run 0 is the outside's
    if not small.any():
        return mask
    filled = mask.copy()
    for row, start, end in zip(rows[small], starts[small], ends[small], strict=True):
        filled[row - 1, start - 1 : end - 1] = True
    return filled


def _runs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of True in each row of ``image``: row, start, end (exclusive), row-major."""
    steps = np.diff(np.pad(image, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(steps == 1)
    return rows, starts, np.nonzero(steps == -1)[1]


def _touching(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs where b, in the row below a's, touches a, diagonals included
    (b starts at or before a's end and ends at or after a's start). Rows are laid end to end
    as one sorted key, so every run's range of partners is one search, not a loop."""
    stride = width + 2
    below = (rows + 1) * stride
    first = np.searchsorted(rows * stride + ends, below + starts, "left")
    last = np.searchsorted(rows * stride + starts, below + ends, "right")
    counts = np.maximum(last - first, 0)
    a = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(len(a)) - np.repeat(np.cumsum(counts) - counts, counts)
    return a, first[a] + offsets


def _components(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The connected components of ``count`` nodes joined by edges (a, b): each node's
    smallest node of its component. Each round hooks the larger of two roots an edge joins
    to the smaller and flattens the trees, so the roots left fall fast and a round is a few
    array operations, not a loop over the edges."""
    label = np.arange(count)
    while len(a):
        la, lb = label[a], label[b]
        apart = la != lb
        if not apart.any():
            break
        low = np.minimum(la[apart], lb[apart])
        np.minimum.at(label, la[apart], low)
        np.minimum.at(label, lb[apart], low)
        while True:
            flat = label[label]
            if np.array_equal(flat, label):
                break
            label = flat
    return label


def claim(
    final: Sequence[AutoMask], others: Sequence[AutoMask]
) -> tuple[list[AutoMask], list[AutoMask]]:
    """A coverage between masks that are ``final`` and the ``others`` still open: every
    pixel held by a final mask and another goes to the better-ranked of the two
    (:attr:`AutoMask.rank`); the rest keep their pixels. Returns both lists, carved.

    Pairs of open masks are left alone (they may still be joined or replaced); a final mask
    meets every mask that will ever overlap it here, since no later window reaches it."""
    masks = [*final, *others]
    crops = [m.mask.copy() for m in masks]
    for i in range(len(final)):
        for j in range(len(masks)):
            shared = intersection(masks[i].box, masks[j].box) if i != j else None
            if shared is None or (j < len(final) and j < i):
                continue  # each pair of final masks once
            loser = i if masks[j].rank > masks[i].rank else j
            x0, y0, x1, y1 = shared
            bx, by = masks[loser].box[:2]
            winner = j if loser == i else i
            wx, wy = masks[winner].box[:2]
            crops[loser][y0 - by : y1 - by, x0 - bx : x1 - bx] &= ~masks[winner].mask[
                y0 - wy : y1 - wy, x0 - wx : x1 - wx
            ]
    carved = [tightened(mask, pixels) for mask, pixels in zip(masks, crops, strict=True)]
    return carved[: len(final)], carved[len(final) :]


def tightened(mask: AutoMask, pixels: np.ndarray) -> AutoMask:
    """``mask`` with ``pixels`` as its crop, its box shrunk to them (kept when empty)."""
    if not pixels.any():
        return replace(mask, mask=pixels)
    x0, y0, x1, y1 = mask_box(pixels)
    bx, by = mask.box[:2]
    return replace(mask, box=(bx + x0, by + y0, bx + x1, by + y1), mask=pixels[y0:y1, x0:x1].copy())
