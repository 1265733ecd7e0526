"""Automatic mode's thresholds for one model, chosen on its run's val split.

SAM's filters (predicted IoU 0.88, stability 0.95) are Meta's for Meta's model; a tuned
model's IoU head predicts other values, so the thresholds that serve it are measured, not
guessed: the pair (predicted IoU, stability) on a grid that maximises object F1 at IoU 0.5
(one-to-one matching, :func:`geosam.segment.score.match_one_to_one`) over the val split.
Ties go to the stricter pair (fewer, surer parcels for the same F1).

It runs the exported ONNX model through the runtime's own automatic mode (tiling, point grid,
joins, duplicates, coverage: :mod:`geosam.runtime.auto`), so what is tuned is what users get.
Each val region is decoded **once** with the filters open (thresholds 0), every point of
every window: a candidate mask keeps its predicted IoU and stability, and applying a pair is
keeping the candidates at or above it, which is what the filters would have kept. The
runtime's loop then runs on them as a run with that pair would (:func:`parcels`): the point
grid (:func:`~geosam.runtime.auto.grid_masks`), which skips a point inside a parcel already
accepted, with the pre-decoded candidates in place of the decoder, then the joins,
duplicates and coverage (:class:`~geosam.runtime.auto.MaskMerger`). Which points are skipped
depends on the pair, and it matters: scoring every point's candidates instead (as until
session 11) gave the NAIP model F1 0.408 on whole held-out images where runs at the same
pair give 0.498. The decoder, the costly part, runs once per point whatever the grid's size.

The val split is tuned on as *regions* (:mod:`geosam.export.val_regions`): each connected
group of val tiles of a source raster joined back into one raster, over which automatic mode
runs its own overlapping windows, as on a user's raster. Single chips would not do: a chip is
one window of a model tuned at the chip size, where a loose mask matches a parcel clipped at
the chip's edge; on whole rasters that mask is a piece cut at an inner window edge, so chips
choose looser filters than whole rasters want. A region costs what its chips cost (about as
many windows). The truth is on the region's tiling grid (resampled, nearest, when the model
is tuned at another resolution than the dataset's). True pieces smaller than the minimum
parcel area are not counted (the map drops parcels that small by design; at region edges
they are slivers of parcels that lie outside the val split).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import rasterio
from rasterio.enums import Resampling
from yacs.config import CfgNode

from geosam.export.val_regions import val_regions
from geosam.runtime import SamModel
from geosam.runtime.auto import (
    DEFAULT_MIN_AREA_M2,
    FINE_PASS,
    FINE_ZOOM,
    GRID,
    THRESHOLDS,
    AutoParams,
    AutoSegmenter,
    MaskMerger,
    TileWindow,
    Tiling,
    fine_params,
    fine_pass,
    grid_masks,
    mask_candidates,
    point_grid,
    pooled,
    zoomed,
)
from geosam.runtime.masks import AutoMask
from geosam.runtime.model import DECODER, ENCODER, open_session
from geosam.segment.reader import WindowReader
from geosam.segment.score import MATCH_IOU, match_one_to_one

logger = logging.getLogger("geosam.export")

# The grid searched: SAM's defaults are on it, so the result can be compared with them.
PRED_IOU_GRID = tuple(sorted({*np.round(np.arange(0.30, 0.951, 0.05), 2).tolist(), 0.88}))
STABILITY_GRID = tuple(sorted({*np.round(np.arange(0.50, 0.951, 0.05), 2).tolist(), 0.97}))
# Point grids (points per window side) tried with them: SAM's 32 scaled to parcels (16) and a
# coarser one, which costs 2.6x fewer decoder calls and is kept unless the val split shows 16
# clearly better (:func:`chosen_setting`).
POINT_GRIDS = (10, 16)


@dataclass
class DecodedRegion:
    """One val region decoded once with open filters: its tiling and settings (minimum area
    on the grid), each window's candidates point by point (in the point grid's order), its
    true instances on the tiling grid (0: no parcel) and those that count, and its ground
    area."""

    tiling: Tiling
    params: AutoParams
    windows: Decoded
    truth: np.ndarray
    truth_ids: np.ndarray
    area_m2: float
    image: Path | None = None

    @functools.cached_property
    def ranks(self) -> np.ndarray:
        """(candidates, 2) predicted IoU and stability, over all windows and points in order."""
        return ranks(self.windows)

    def kept(self, pred_iou: float, stability: float) -> np.ndarray:
        """Which candidates, over all windows in order, pass the pair."""
        return (self.ranks[:, 0] >= pred_iou) & (self.ranks[:, 1] >= stability)


Decoded = list[tuple[TileWindow, list[list[AutoMask]]]]


def ranks(windows: Decoded) -> np.ndarray:
    """(candidates, 2) predicted IoU and stability of ``windows``' candidates, in order."""
    pairs = [(m.score, m.stability) for _, points in windows for masks in points for m in masks]
    return np.array(pairs).reshape(-1, 2)


def kept_key(ranks: np.ndarray, pair: tuple[float, float]) -> bytes:
    """Which of the candidates rated ``ranks`` pass ``pair``, as a dictionary key: pairs that
    keep the same candidates of a region give the same parcels, so each is run once."""
    kept = (ranks[:, 0] >= pair[0]) & (ranks[:, 1] >= pair[1])
    return np.packbits(kept).tobytes() + len(kept).to_bytes(8, "little")


@dataclass(frozen=True)
class Counts:
    """Object counts summed over regions, and the scores they make."""

    truth: int = 0
    predicted: int = 0
    matched: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.truth + other.truth,
            self.predicted + other.predicted,
            self.matched + other.matched,
        )

    def scores(self) -> dict[str, float | int]:
        total = self.predicted + self.truth
        return {
            "f1": 2 * self.matched / total if total else 0.0,
            "precision": self.matched / self.predicted if self.predicted else 0.0,
            "recall": self.matched / self.truth if self.truth else 0.0,
            "truth": self.truth,
            "predicted": self.predicted,
            "matched": self.matched,
        }


Setting = tuple[int, float, float]  # (points per side, predicted IoU, stability)


def preference(counts: Mapping[Setting, Counts], key: Setting) -> tuple[float, ...]:
    """Best F1 first; ties to the smaller grid (fewer decoder calls), then the stricter pair."""
    return counts[key].scores()["f1"], -key[0], *key[1:]


def standard_error(counts: Counts) -> float:
    """The standard error of an F1 score, taken as a proportion's: F1 is the matched parcels
    over the mean of the true and the predicted ones, n, so sqrt(F1 (1 - F1) / n)."""
    n = (counts.truth + counts.predicted) / 2
    f1 = float(counts.scores()["f1"])
    return math.sqrt(f1 * (1 - f1) / n) if n else 0.0


def chosen_setting(counts: Mapping[Setting, Counts]) -> Setting:
    """The grid and pair a model ships with: the best pair of the smallest point grid whose
    best F1 is within one standard error of the best of all grids (the one-standard-error
    rule of model selection).

    Why: a val split of a few hundred parcels cannot tell grids apart by less than that
    (about 0.03 F1 at 250 parcels), and where it could not, the coarser grid did better on
    held-out images every time it was measured (NAIP, docs/benchmarks.md, sessions 9-13):
    a dense grid lands more points in a large field's corners and margins, whose masks are
    pieces. It also costs fewer decoder calls (10 x 10 points: 2.6x fewer than 16 x 16)."""
    best = max(counts, key=lambda key: preference(counts, key))
    floor = counts[best].scores()["f1"] - standard_error(counts[best])
    for points in sorted({key[0] for key in counts}):
        top = best_in_grid(counts, points)
        if counts[top].scores()["f1"] >= floor:
            return top
    return best


def best_in_grid(counts: Mapping[Setting, Counts], points: int) -> Setting:
    """The best setting of one point grid."""
    return max((key for key in counts if key[0] == points), key=lambda key: preference(counts, key))


def grid_summary(counts: Mapping[Setting, Counts], points: int) -> dict[str, float | int]:
    """The best pair of one point grid and its scores, for the manifest: what the grid
    choice was made between."""
    top = best_in_grid(counts, points)
    return {
        **dict(zip(THRESHOLDS, top[1:], strict=True)),
        **counts[top].scores(),
        "standard_error": round(standard_error(counts[top]), 4),
    }


def region_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The model's manifest for reading a val region: regions hold the chips' pixels, the
    selected bands already stretched to uint8 RGB, so they are read as they are."""
    return {**manifest, "bands": None, "stretch": None, "sources_agree": True, "sources": []}


def decode_region(
    model: SamModel, image: Path, mask: Path, points_per_side: int, min_area_m2: float
) -> DecodedRegion:
    """Every candidate mask of each grid point of the region ``image`` with the filters
    open, and its truth (``mask``) on the grid.

    Every grid point is decoded: which points a run skips (``skip_found``, points inside
    parcels already accepted) depends on the filters, so :func:`parcels` replays the skips
    of each threshold pair from these."""
    params = AutoParams(points_per_side=points_per_side, pred_iou_thresh=0.0, stability_thresh=0.0)
    with WindowReader(image, region_manifest(model.manifest)) as reader:
        segmenter = AutoSegmenter(model, reader, params, min_area_m2, min_hole_m2=min_area_m2)
        windows = [
            (tile, point_candidates(model, reader, tile, segmenter.params))
            for tile in segmenter.tiling.windows()
        ]
        width, height = reader.size
        pixel = reader.pixel_size_m(width / 2, height / 2)
        # Pixels outside the val tiles are nodata: only val ground counts.
        valid = np.count_nonzero(reader.dataset.dataset_mask())
    sx, sy = segmenter.tiling.scale
    with rasterio.open(mask) as ds:
        truth = ds.read(
            1,
            out_shape=(max(1, round(height / sy)), max(1, round(width / sx))),
            resampling=Resampling.nearest,
        )
    ids, areas = np.unique(truth[truth > 0], return_counts=True)
    counted = ids[areas >= max(segmenter.params.min_area_px, 1.0)]
    area_m2 = valid * pixel[0] * pixel[1]
    return DecodedRegion(
        segmenter.tiling, segmenter.params, windows, truth, counted, area_m2, image
    )


def point_candidates(
    model: SamModel, reader: WindowReader, tile: TileWindow, params: AutoParams, zoom: int = 1
) -> list[list[AutoMask]]:
    """The candidates of each point of ``tile``'s grid, in the grid's order, every point
    decoded whatever ``params.skip_found`` says; with ``zoom``, the window read at that many
    times its grid size and the logits pooled back (the fine pass)."""
    embedding = model.encode(reader.read(zoomed(tile.window, zoom)))
    valid = reader.valid(tile.window)
    height, width = tile.shape
    points = point_grid(params.points_per_side, (height * zoom, width * zoom))
    return [
        mask_candidates(pooled(logits, zoom), scores, tile, params, model.threshold, valid)
        for logits, scores in model.decode_points(embedding, points)
    ]


def replayed(
    per_point: Sequence[list[AutoMask]],
    passes: Callable[[AutoMask], bool],
    tile: TileWindow,
    params: AutoParams,
    found: np.ndarray | None,
    zoom: int = 1,
) -> list[AutoMask]:
    """A window's point loop (:func:`~geosam.runtime.auto.grid_masks`) run on candidates
    decoded beforehand, ``per_point`` in the grid's order, keeping those that ``passes``:
    the points a run with those filters skips are skipped here too."""
    height, width = tile.shape
    points = point_grid(params.points_per_side, (height * zoom, width * zoom))
    by_point = {
        tuple(point): [m for m in masks if passes(m)]
        for point, masks in zip(points.tolist(), per_point, strict=True)
    }

    def decode(prompts: Iterator[np.ndarray]) -> Iterator[list[AutoMask]]:
        for point in prompts:
            yield by_point[tuple(point.tolist())]

    masks, _ = grid_masks(decode, tile, params, found, zoom)
    return masks


def parcels(region: DecodedRegion, kept: np.ndarray) -> list[AutoMask]:
    """The parcels automatic mode hands out on ``region`` when its filters keep the
    candidates ``kept`` (:meth:`DecodedRegion.kept`): the runtime's own loop
    (:func:`~geosam.runtime.auto.grid_masks`, :class:`~geosam.runtime.auto.MaskMerger`), the
    decoder replaced by the candidates decoded beforehand, so that a point inside a parcel
    already accepted is skipped as a run with those filters skips it."""
    params = replace(region.params, skip_found=AutoParams.skip_found)
    merger = MaskMerger(region.tiling, params)
    passed = iter(kept.tolist())
    found = []
    for tile, per_point in region.windows:
        masks = replayed(per_point, lambda _: next(passed), tile, params, merger.found(tile))
        found += merger.add(tile, masks)
    return found + merger.flush()


def region_counts(region: DecodedRegion, found: Sequence[AutoMask]) -> Counts:
    """Truth, predicted and one-to-one matched parcels at IoU ≥ 0.5, counted in pixels."""
    rows, cols, ious = [], [], []
    truth_rows = {int(i): row for row, i in enumerate(region.truth_ids)}
    truth_area = dict(zip(*np.unique(region.truth, return_counts=True), strict=True))
    for col, mask in enumerate(found):
        x0, y0, x1, y1 = mask.box
        box = region.truth[y0:y1, x0:x1]
        under = box[mask.mask[: box.shape[0], : box.shape[1]]]
        ids, shared = np.unique(under[under > 0], return_counts=True)
        for truth_id, count in zip(ids.tolist(), shared.tolist(), strict=True):
            if truth_id in truth_rows:
                rows.append(truth_rows[truth_id])
                cols.append(col)
                ious.append(count / (truth_area[truth_id] + mask.area - count))
    matches = match_one_to_one(np.array(rows), np.array(cols), np.array(ious), MATCH_IOU)
    return Counts(len(region.truth_ids), len(found), len(matches))


def grid_counts(regions: Sequence[DecodedRegion]) -> dict[tuple[float, float], Counts]:
    """The counts of every threshold pair of the grid, summed over ``regions``. Pairs that
    keep the same candidates of a region give the same parcels: each is run once."""
    seen: list[dict[bytes, Counts]] = [{} for _ in regions]
    counts = {}
    for pair in itertools.product(PRED_IOU_GRID, STABILITY_GRID):
        total = Counts()
        for region, cache in zip(regions, seen, strict=True):
            key = kept_key(region.ranks, pair)
            if key not in cache:
                cache[key] = region_counts(region, parcels(region, region.kept(*pair)))
            total += cache[key]
        counts[pair] = total
    return counts


def decode_fine(model: SamModel, region: DecodedRegion) -> Decoded:
    """Every candidate of each fine-pass point of ``region`` (every window of
    :meth:`~geosam.runtime.auto.Tiling.fine`, every point), filters open."""
    params = replace(fine_params(region.params), pred_iou_thresh=0.0, stability_thresh=0.0)
    with WindowReader(region.image, region_manifest(model.manifest)) as reader:
        return [
            (tile, point_candidates(model, reader, tile, params, FINE_ZOOM))
            for tile in region.tiling.fine(params.overlap).windows()
        ]


def fine_parcels(
    region: DecodedRegion, fine: Decoded, first: Sequence[AutoMask], pair: tuple[float, float]
) -> list[AutoMask]:
    """What the fine pass adds to ``first`` (the first pass's parcels) on ``region`` with its
    filters at ``pair``: the runtime's :func:`~geosam.runtime.auto.fine_pass`, the decoder
    replaced by ``fine``, the candidates decoded beforehand."""
    params = replace(
        region.params,
        skip_found=AutoParams.skip_found,
        fine_pred_iou_thresh=pair[0],
        fine_stability_thresh=pair[1],
    )
    cached = {tile.origin: per_point for tile, per_point in fine}

    def candidates(tile: TileWindow, params: AutoParams, seen: np.ndarray) -> list[AutoMask]:
        def passes(mask: AutoMask) -> bool:
            return (
                mask.score >= params.pred_iou_thresh and mask.stability >= params.stability_thresh
            )

        return replayed(cached[tile.origin], passes, tile, params, seen, FINE_ZOOM)

    return fine_pass(region.tiling, params, first, candidates)


def calibrate_fine(
    model: SamModel, regions: Sequence[DecodedRegion], pair: tuple[float, float]
) -> dict[str, Any]:
    """The fine pass's filters for a model whose first pass runs at ``pair`` on ``regions``
    (decoded at its point grid): the pair, no looser than ``pair``, with the best object F1
    of the two passes together, ties to the stricter; with its scores and the first pass's
    alone. Looser pairs are not tried: zoomed in, the model rates junk higher than at its
    own scale (docs/benchmarks.md, session 12)."""
    firsts = [parcels(region, region.kept(*pair)) for region in regions]
    fines = [decode_fine(model, region) for region in regions]
    fine_ranks = [ranks(fine) for fine in fines]
    caches: list[dict[bytes, Counts]] = [{} for _ in regions]
    counts = {}
    pairs = itertools.product(
        [p for p in PRED_IOU_GRID if p >= pair[0]], [s for s in STABILITY_GRID if s >= pair[1]]
    )
    for fine_pair in pairs:
        total = Counts()
        for region, first, fine, rated, cache in zip(
            regions, firsts, fines, fine_ranks, caches, strict=True
        ):
            key = kept_key(rated, fine_pair)
            if key not in cache:
                added = fine_parcels(region, fine, first, fine_pair)
                cache[key] = region_counts(region, [*first, *added])
            total += cache[key]
        counts[fine_pair] = total
    best = max(counts, key=lambda key: (counts[key].scores()["f1"], *key))
    alone = sum((region_counts(r, f) for r, f in zip(regions, firsts, strict=True)), Counts())
    return {
        **dict(zip(THRESHOLDS, best, strict=True)),
        **counts[best].scores(),
        "first_pass_alone": alone.scores(),
    }


def calibrate(
    model: SamModel,
    dataset: Path,
    split: str,
    grids: Sequence[int] = POINT_GRIDS,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
) -> dict[str, Any] | None:
    """The manifest's ``auto_thresholds``: the best point grid (of ``grids``, points per
    window side) and pair, the scores they reach and SAM's defaults reach, the fine pass's
    filters (:func:`calibrate_fine`, under ``fine_pass``), the grids and the val regions
    used; None when ``dataset`` has no ``split`` tile or no true parcel in them (nothing to
    tune on). The grid is :func:`chosen_setting`'s: the smallest whose best pair is within
    one standard error of the best of all."""
    counts: dict[Setting, Counts] = {}

    def decode(points: int) -> list[DecodedRegion]:
        return [
            decode_region(model, region.image, region.truth, points, min_area_m2)
            for region in regions
        ]

    with tempfile.TemporaryDirectory(prefix="geosam-val-") as folder:
        regions = val_regions(dataset, split, Path(folder))
        held: tuple[int, list[DecodedRegion]] | None = None  # the chosen grid's, for the fine pass
        for points in grids:  # at most two grids' candidates in memory at a time
            decoded = decode(points)
            if not any(len(region.truth_ids) for region in decoded):
                return None
            counts.update({(points, *pair): c for pair, c in grid_counts(decoded).items()})
            if chosen_setting(counts)[0] == points:
                held = (points, decoded)
        best = chosen_setting(counts)
        if held is None or held[0] != best[0]:  # a later grid moved the choice back
            held = (best[0], decode(best[0]))
        fine = calibrate_fine(model, held[1], best[1:])
    sam_grid = AutoParams.points_per_side if AutoParams.points_per_side in grids else grids[0]
    sam = (sam_grid, AutoParams.pred_iou_thresh, AutoParams.stability_thresh)
    return {
        **dict(zip((GRID, *THRESHOLDS), best, strict=True)),
        **counts[best].scores(),
        FINE_PASS: fine,
        "grids": {str(points): grid_summary(counts, points) for points in grids},
        "sam_defaults": {
            **dict(zip((GRID, *THRESHOLDS), sam, strict=True)),
            **counts[sam].scores(),
        },
        "match_iou": MATCH_IOU,
        "grid": {
            GRID: list(grids),
            THRESHOLDS[0]: list(PRED_IOU_GRID),
            THRESHOLDS[1]: list(STABILITY_GRID),
        },
        "val": {
            "dataset": str(dataset.resolve()),
            "split": split,
            "tiles": sum(region.tiles for region in regions),
            "regions": len(regions),
            "area_km2": round(sum(region.area_m2 for region in decoded) / 1e6, 4),
        },
        "min_area_m2": min_area_m2,
    }


def calibrate_export(
    cfg: CfgNode, model_dir: Path, manifest: dict[str, Any]
) -> dict[str, Any] | None:
    """:func:`calibrate` on the val split of the run ``cfg`` describes (DATASETS.VAL, else
    DATASETS.TRAIN, and DATASETS.VAL_SPLIT), with the ONNX encoder and decoder in
    ``model_dir`` read as ``manifest`` says; None, with a warning, when there is nothing to
    tune on."""
    dataset = cfg.DATASETS.VAL or cfg.DATASETS.TRAIN
    split = cfg.DATASETS.VAL_SPLIT
    if not dataset:
        return None
    options = ort.SessionOptions()
    encoder, decoder = (open_session(model_dir / name, options) for name in (ENCODER, DECODER))
    model = SamModel(encoder, decoder, manifest, model_dir)
    logger.info("tuning automatic mode's thresholds on %s (%s tiles)", dataset, split)
    result = calibrate(model, Path(dataset), split)
    if result is None:
        logger.warning(
            "%s has no %s tile with a parcel: the model keeps SAM's automatic-mode thresholds",
            dataset,
            split,
        )
        return None
    sam = result["sam_defaults"]
    logger.info(
        "automatic mode: %d x %d points, predicted IoU %g, stability %g (object F1@%g %.3f on "
        "%d %s regions; SAM's %g, %g: %.3f)",
        result[GRID],
        result[GRID],
        result[THRESHOLDS[0]],
        result[THRESHOLDS[1]],
        MATCH_IOU,
        result["f1"],
        result["val"]["regions"],
        split,
        sam[THRESHOLDS[0]],
        sam[THRESHOLDS[1]],
        sam["f1"],
    )
    logger.info(
        "point grids (the smallest within one standard error of the best is chosen): %s",
        ", ".join(
            f"{points} x {points} F1 {grid['f1']:.3f} ± {grid['standard_error']:.3f}"
            for points, grid in result["grids"].items()
        ),
    )
    fine = result[FINE_PASS]
    logger.info(
        "fine pass (--fine-pass): predicted IoU %g, stability %g (object F1 %.3f with it, "
        "%.3f without)",
        fine[THRESHOLDS[0]],
        fine[THRESHOLDS[1]],
        fine["f1"],
        fine["first_pass_alone"]["f1"],
    )
    return result
