"""Scoring a parcel map against true parcels, the way field-boundary work scores it.

A parcel map (``geosam segment --auto``) is judged by objects, as fields-of-the-world and
other field-delineation benchmarks judge theirs: a true parcel is *found* when a predicted
polygon overlaps it with IoU ≥ ``iou_threshold`` (0.5), each truth matched to at most one
prediction and each prediction to at most one truth. Precision is matched / predicted, recall
matched / true, F1 their harmonic mean (``2 matched / (predicted + true)``); the matched
mean IoU says how well the found parcels are drawn, and the covered share (truth area inside
any prediction / truth area) how much of the land the map touches at all, whatever the
matching. Counts (true, predicted, matched) are reported beside the ratios.

**One-to-one, greedy by IoU.** Candidate pairs at or above the threshold are taken in order of
decreasing IoU (ties: lower truth, then prediction row first), skipping any whose truth or
prediction is already matched. Above 0.5 a truth can have only one candidate (two disjoint
predictions cannot both cover more than half of its union), so any one-to-one rule gives the
same answer there; at exactly 0.5 (a parcel split in equal halves) and below, greedy keeps
the count honest: one match per parcel, the rest are false positives.

**The scored area.** A map is scored only where it could have found parcels: the rasters'
valid footprints, or a tile dataset's val tiles. A true parcel with less than half its area
inside the scored area is left out (it belongs to a neighbouring raster, and a map of this one
cannot be blamed for missing it); the others are clipped to the area, since a prediction can
only be drawn inside. Predictions are restricted by the same rule, so a parcel map of a whole
raster can be scored on its val tiles alone.

Geometries are compared in the parcel map's CRS (the truth is reprojected to it): IoU is a
ratio of areas, which a map projection (or degrees, locally a linear map) preserves; the
covered share is a ratio of geodesic areas. Pairs are found with an STRtree query and their
intersections computed in one vectorised call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from geosam.segment.polygons import geodesic_area
from geosam.utils.errors import GeosamError

MATCH_IOU = 0.5
# A true parcel (or prediction) is scored when at least this share of it lies in the area.
MIN_INSIDE = 0.5


@dataclass(frozen=True)
class ScoredArea:
    """Where a map is scored: ``geometry`` in ``crs`` (None: everywhere; no CRS: the map's),
    named for its row of the report; ``raster`` is drawn under the parcels in the picture."""

    name: str
    geometry: shapely.Geometry | None
    crs: CRS | str | None = None
    raster: Path | None = None


@dataclass(frozen=True)
class ParcelScores:
    """Object scores of one area; a ratio whose denominator is zero is None."""

    truth: int
    predicted: int
    matched: int
    precision: float | None
    recall: float | None
    f1: float | None
    matched_miou: float | None
    covered: float | None

    @classmethod
    def of(cls, truth: gpd.GeoDataFrame, predicted: gpd.GeoDataFrame) -> ParcelScores:
        """The scores of frames annotated by :func:`score_area` (``iou`` of each one's match,
        NaN where unmatched; the truth's ``area_m2`` and ``covered_m2``)."""
        ious = truth["iou"].dropna().to_numpy()
        matched, n_truth, n_predicted = len(ious), len(truth), len(predicted)
        return cls(
            truth=n_truth,
            predicted=n_predicted,
            matched=matched,
            precision=_ratio(matched, n_predicted),
            recall=_ratio(matched, n_truth),
            f1=_ratio(2 * matched, n_predicted + n_truth),
            matched_miou=float(ious.mean()) if matched else None,
            covered=_ratio(truth["covered_m2"].sum(), truth["area_m2"].sum()),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AreaResult:
    """The parcels of one scored area, each with the IoU of its match (``iou``, NaN when
    unmatched), and their scores."""

    area: ScoredArea
    truth: gpd.GeoDataFrame
    predicted: gpd.GeoDataFrame
    scores: ParcelScores


@dataclass(frozen=True)
class MapScore:
    """A parcel map scored over the union of its areas (``overall``) and per area."""

    overall: AreaResult
    per_area: list[AreaResult]
    iou_threshold: float


def check_iou_threshold(iou_threshold: float) -> None:
    if not 0 < iou_threshold <= 1:
        raise GeosamError(f"--iou must be in (0, 1], got {iou_threshold:g}")


def pairwise_iou(
    truth: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every intersecting (truth row, prediction row) pair and its IoU, from an STRtree."""
    truth_rows, predicted_rows = shapely.STRtree(predicted).query(truth, predicate="intersects")
    shared = shapely.area(shapely.intersection(truth[truth_rows], predicted[predicted_rows]))
    union = shapely.area(truth)[truth_rows] + shapely.area(predicted)[predicted_rows] - shared
    iou = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
    return truth_rows, predicted_rows, iou


def match_one_to_one(
    truth_rows: np.ndarray, predicted_rows: np.ndarray, iou: np.ndarray, iou_threshold: float
) -> list[tuple[int, int, float]]:
    """(truth row, prediction row, IoU) of the matches: greedy by IoU (module docstring)."""
    candidates = np.flatnonzero(iou >= iou_threshold)
    order = candidates[
        np.lexsort((predicted_rows[candidates], truth_rows[candidates], -iou[candidates]))
    ]
    taken_truth: set[int] = set()
    taken_predicted: set[int] = set()
    matches = []
    for pair in order:
        t, p = int(truth_rows[pair]), int(predicted_rows[pair])
        if t in taken_truth or p in taken_predicted:
            continue
        taken_truth.add(t)
        taken_predicted.add(p)
        matches.append((t, p, float(iou[pair])))
    return matches


def restrict(
    frame: gpd.GeoDataFrame, area: shapely.Geometry | None, min_inside: float = MIN_INSIDE
) -> gpd.GeoDataFrame:
    """The rows of ``frame`` with at least ``min_inside`` of their area in ``area``, clipped
    to it (all rows, unclipped, when ``area`` is None)."""
    if area is None:
        return frame
    geometry = frame.geometry.to_numpy()
    inside = shapely.intersection(geometry, area)
    whole = shapely.area(geometry)
    share = np.divide(shapely.area(inside), whole, out=np.zeros_like(whole), where=whole > 0)
    keep = share >= min_inside
    return frame.loc[keep].set_geometry(inside[keep], crs=frame.crs)


def score_area(
    predicted: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    area: ScoredArea,
    iou_threshold: float = MATCH_IOU,
) -> AreaResult:
    """Score ``predicted`` against ``truth`` (both in one CRS, area's geometry too) in
    ``area``."""
    truth = restrict(truth, area.geometry).reset_index(drop=True)
    predicted = restrict(predicted, area.geometry).reset_index(drop=True)
    truth_geometry, predicted_geometry = truth.geometry.to_numpy(), predicted.geometry.to_numpy()
    matches = match_one_to_one(*pairwise_iou(truth_geometry, predicted_geometry), iou_threshold)
    truth["iou"], predicted["iou"] = np.nan, np.nan
    if matches:
        t, p, iou = (np.asarray(column) for column in zip(*matches, strict=True))
        truth.loc[t, "iou"], predicted.loc[p, "iou"] = iou, iou
    truth["area_m2"] = _area_m2(truth_geometry, truth.crs)
    predicted["area_m2"] = _area_m2(predicted_geometry, predicted.crs)
    covered = shapely.intersection(truth_geometry, shapely.union_all(predicted_geometry))
    truth["covered_m2"] = _area_m2(covered, truth.crs)
    return AreaResult(area, truth, predicted, ParcelScores.of(truth, predicted))


def score_parcel_map(
    predicted: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    areas: Sequence[ScoredArea] = (),
    iou_threshold: float = MATCH_IOU,
) -> MapScore:
    """Score a parcel map over the union of ``areas`` and in each (everywhere, as one area,
    when none is given). The truth and the areas are reprojected to the map's CRS; a truth
    with no parcel in the scored area is refused, since every score would be undefined."""
    check_iou_threshold(iou_threshold)
    crs = predicted.crs
    truth = truth.to_crs(crs)
    areas = [_in_crs(area, crs) for area in areas]
    union = shapely.union_all([area.geometry for area in areas]) if areas else None
    overall = score_area(predicted, truth, ScoredArea("all", union, crs), iou_threshold)
    if overall.scores.truth == 0:
        raise GeosamError(
            "no true parcel has half its area or more in the scored area: check that the "
            "truth and the rasters (or the dataset) cover the same place"
        )
    per_area = [score_area(predicted, truth, area, iou_threshold) for area in areas]
    return MapScore(overall, per_area, iou_threshold)


def _in_crs(area: ScoredArea, crs: CRS) -> ScoredArea:
    """``area`` reprojected to ``crs``."""
    if area.geometry is None or area.crs is None or CRS(area.crs) == CRS(crs):
        return area
    geometry = gpd.GeoSeries([area.geometry], crs=area.crs).to_crs(crs).iloc[0]
    return ScoredArea(area.name, geometry, crs, area.raster)


def _area_m2(geometries: np.ndarray, crs: CRS) -> np.ndarray:
    if len(geometries) == 0:
        return np.zeros(0)
    return geodesic_area(geometries, crs)


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None
