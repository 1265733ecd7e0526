"""Automatic mode: every parcel of a raster without prompts, for the Processing algorithm.

The loop is the runtime's (:class:`.runtime.auto.AutoSegmenter`, bundled; the same one
``geosam segment --auto`` runs): overlapping windows on one grid, a point grid per window,
pieces of parcels cut by window edges joined, duplicates removed and, by default, contested
pixels given to one parcel. This module adds the plugin's GIS output: each parcel the loop
hands out is polygonized with OGR on the tiling grid (:func:`.polygonize.grid_geometry`) at
once, so memory holds polygons plus about one row of windows' masks and neighbours share
their boundary exactly; QgsFeedback reports the progress and cancels.

Simplifying a coverage needs GEOS's coverage simplification (GEOS 3.12), which QGIS 3.22's
geometry API does not offer: simplifying parcels one by one would open gaps and overlaps
between neighbours, so a coverage is written with its exact pixel outlines and a warning
(the CLI's ``--simplify`` does simplify it as a coverage). Overlapping parcels are
simplified one by one, as the CLI does.

Imports onnxruntime (through the runtime's model): import it after require_onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from qgis.core import QgsFeedback, QgsGeometry

from .polygonize import grid_geometry, polygonal
from .raster_reader import RasterWindows
from .runtime.auto import AutoParams, AutoSegmenter
from .runtime.model import SamModel
from .runtime.reasons import EMPTY

NO_COVERAGE_SIMPLIFY = (
    "QGIS {version} cannot simplify a coverage without opening gaps between neighbours: "
    "the parcels keep their exact pixel outlines (simplify them with geosam segment --auto "
    "--simplify, or choose overlapping parcels)"
)


@dataclass(frozen=True)
class AutoParcel:
    """A parcel found without prompts: outline (raster CRS), predicted IoU, stability."""

    geometry: QgsGeometry
    score: float
    stability: float


def segment_all(
    model: SamModel,
    raster: RasterWindows,
    params: AutoParams,
    areas_m2: tuple[float, float],
    min_score: float,
    simplify: float,
    feedback: QgsFeedback,
) -> tuple[list[AutoParcel], Counter[str]]:
    """Every parcel of ``raster`` the model rates at least ``min_score``, and the masks
    dropped by reason; ``areas_m2`` the smallest parcel and the largest hole filled. Stops
    early (with what it has) when ``feedback`` is cancelled."""
    min_area_m2, min_hole_m2 = areas_m2
    segmenter = AutoSegmenter(
        model, raster, params, min_area_m2, min_score, min_hole_m2=min_hole_m2
    )
    parcels = []
    for mask in segmenter.masks(
        lambda done, total: feedback.setProgress(100.0 * done / total), feedback.isCanceled
    ):
        geometry = grid_geometry(mask.mask, mask.box[:2], segmenter.grid_transform, params.coverage)
        if geometry is not None and simplify > 0 and not params.coverage:
            geometry = polygonal(geometry.simplify(simplify).makeValid())
        if geometry is None:
            segmenter.dropped[EMPTY] += 1
        else:
            parcels.append(AutoParcel(geometry, mask.score, mask.stability))
    return parcels, segmenter.dropped
