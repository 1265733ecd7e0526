"""Where a parcel map goes wrong: its parcels by size, and each error by kind.

One F1 says how good a map is, not what to fix. Scored on real fields, the same F1 can hide
very different failures: small parcels the model does not rate highly enough, large ones cut
at window seams, neighbours merged into one polygon, woodland drawn as parcels. So
``geosam score-parcels`` also reports, per size class (areas of the scored parcels, in
classes of 1-3-10 steps, m² below a hectare, ha above):

* **true parcels**: how many, how many found (recall), and why each one not found was not:
  *missed* (less than half of it lies under any prediction), *merged* (one prediction covers
  half of it or more, yet its IoU is below the match threshold: at 0.5 that prediction is
  larger than the parcel, i.e. the parcel is drawn together with neighbours or surroundings),
  *split* (more than half of it is covered, but by several predictions, none covering half);
* **predicted parcels**: how many, how many matched (precision), and what each unmatched one
  is: a *piece* (half of it or more inside one true parcel: a part of a parcel), *off truth*
  (less than half of it on true parcels: land the truth has no parcel on, such as woodland,
  farmsteads, or parcels the truth lacks), or *across* (on true parcels, but spanning several).

The kinds partition the unmatched parcels of each side, so they add up to the class's count
minus its matches. Shares are ratios of planar areas in the map's CRS (ratios a projection
preserves locally); the size classes use the geodesic areas that scoring measured.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import shapely

from geosam.segment.score import AreaResult

# Class edges in m²: 1-3-10 steps from 10 m² (a shed) to 1,000 ha (beyond any field).
SIZE_EDGES_M2 = (10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7)
# The share of a parcel that decides each kind (module docstring).
HALF = 0.5
TRUTH_KINDS = ("missed", "merged", "split")
PREDICTED_KINDS = ("piece", "off truth", "across")


@dataclass(frozen=True)
class SizeClass:
    """The parcels of one side (true or predicted) whose area is in [min_m2, max_m2)."""

    label: str
    min_m2: float
    max_m2: float | None
    count: int
    matched: int
    # recall for true parcels, precision for predicted ones
    share_matched: float | None
    matched_miou: float | None
    kinds: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Breakdown:
    """A scored area's true and predicted parcels by size class (only the classes that hold
    parcels), each class with the kinds of its unmatched parcels."""

    truth: list[SizeClass]
    predicted: list[SizeClass]

    def to_dict(self) -> dict:
        return {
            "size_edges_m2": list(SIZE_EDGES_M2),
            "truth": [row.to_dict() for row in self.truth],
            "predicted": [row.to_dict() for row in self.predicted],
        }


def size_label(low: float | None, high: float | None) -> str:
    """'100–300 m²', '0.3–1 ha', '< 10 m²', '≥ 1,000 ha': m² below a hectare, ha above."""

    def amount(m2: float) -> str:
        return f"{m2:,.0f} m²" if m2 < 1e4 else f"{m2 / 1e4:,g} ha"

    if low is None:
        return f"< {amount(high)}"  # type: ignore[arg-type]
    if high is None:
        return f"≥ {amount(low)}"
    text_low, text_high = amount(low), amount(high)
    unit_low, unit_high = text_low.split(" ")[1], text_high.split(" ")[1]
    if unit_low == unit_high:
        return f"{text_low.split(' ')[0]}–{text_high}"
    return f"{text_low}–{text_high}"


def truth_kinds(result: AreaResult) -> np.ndarray:
    """For each true parcel: '' when found, else its kind (:data:`TRUTH_KINDS`)."""
    truth, predicted = result.truth.geometry.to_numpy(), result.predicted.geometry.to_numpy()
    merged = np.where(_largest_share(truth, predicted) >= HALF, "merged", "split")
    kinds = np.where(_covered_share(truth, predicted) < HALF, "missed", merged).astype(object)
    kinds[result.truth["iou"].notna().to_numpy()] = ""
    return kinds


def predicted_kinds(result: AreaResult) -> np.ndarray:
    """For each prediction: '' when matched, else its kind (:data:`PREDICTED_KINDS`)."""
    truth, predicted = result.truth.geometry.to_numpy(), result.predicted.geometry.to_numpy()
    kinds = np.where(
        _largest_share(predicted, truth) >= HALF,
        "piece",
        np.where(_covered_share(predicted, truth) < HALF, "off truth", "across"),
    ).astype(object)
    kinds[result.predicted["iou"].notna().to_numpy()] = ""
    return kinds


def breakdown(result: AreaResult) -> Breakdown:
    """The true and predicted parcels of ``result`` by size class, with their kinds."""
    return Breakdown(
        _classes(
            result.truth["area_m2"].to_numpy(),
            result.truth["iou"].to_numpy(),
            truth_kinds(result),
            TRUTH_KINDS,
        ),
        _classes(
            result.predicted["area_m2"].to_numpy(),
            result.predicted["iou"].to_numpy(),
            predicted_kinds(result),
            PREDICTED_KINDS,
        ),
    )


def markdown_tables(parts: Breakdown) -> str:
    """Two tables: true parcels by size (recall and why missed), predictions by size
    (precision and what the unmatched are)."""
    sections = [
        (
            "True parcels by size: found (recall), and why the rest were not (missed: under "
            "half covered; merged: inside a larger prediction; split: covered by pieces).",
            "recall",
            parts.truth,
            TRUTH_KINDS,
        ),
        (
            "Predicted parcels by size: matched (precision), and what the rest are (piece: "
            "inside one true parcel; off truth: mostly where no true parcel is; across: "
            "spanning several).",
            "precision",
            parts.predicted,
            PREDICTED_KINDS,
        ),
    ]
    lines: list[str] = []
    for title, share, rows, kinds in sections:
        header = ["size", "parcels", "matched", share, "matched mIoU", *kinds]
        lines += [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [
                row.label,
                str(row.count),
                str(row.matched),
                _number(row.share_matched),
                _number(row.matched_miou),
                *(str(row.kinds[kind]) for kind in kinds),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _largest_share(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """For each geometry of ``first``, the largest share of it that one geometry of
    ``second`` covers."""
    largest = np.zeros(len(first))
    if len(first) == 0 or len(second) == 0:
        return largest
    rows, others = shapely.STRtree(second).query(first, predicate="intersects")
    shared = shapely.area(shapely.intersection(first[rows], second[others]))
    area = shapely.area(first)[rows]
    np.maximum.at(largest, rows, np.divide(shared, area, out=np.zeros_like(shared), where=area > 0))
    return largest


def _covered_share(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """For each geometry of ``first``, the share of it under the union of ``second`` (so
    overlapping geometries of ``second`` count once)."""
    if len(first) == 0 or len(second) == 0:
        return np.zeros(len(first))
    area = shapely.area(first)
    shared = shapely.area(shapely.intersection(first, shapely.union_all(second)))
    return np.divide(shared, area, out=np.zeros_like(shared), where=area > 0)


def _classes(
    areas: np.ndarray, ious: np.ndarray, kinds: np.ndarray, names: tuple[str, ...]
) -> list[SizeClass]:
    edges = [None, *SIZE_EDGES_M2, None]
    rows = []
    for low, high in itertools.pairwise(edges):
        inside = (areas >= (low or 0)) & (areas < (high or math.inf))
        count = int(inside.sum())
        if count == 0:
            continue
        matched_ious = ious[inside][~np.isnan(ious[inside])]
        rows.append(
            SizeClass(
                label=size_label(low, high),
                min_m2=float(low or 0),
                max_m2=None if high is None else float(high),
                count=count,
                matched=len(matched_ious),
                share_matched=len(matched_ious) / count,
                matched_miou=float(matched_ious.mean()) if len(matched_ious) else None,
                kinds={name: int((kinds[inside] == name).sum()) for name in names},
            )
        )
    return rows


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
