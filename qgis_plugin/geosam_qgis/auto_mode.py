"""Automatic mode: every parcel of a raster without prompts, for the Processing algorithm.

The loop is the runtime's (:class:`.runtime.auto.AutoSegmenter`, bundled; the same one
``geosam segment --auto`` runs): overlapping windows on one grid, a point grid per window,
masks filtered and merged across windows. This module adds the plugin's GIS output: each
mask the loop hands out is polygonized with OGR (:func:`mask_to_geometry`) at once, so memory
holds polygons plus about one row of windows' masks; QgsFeedback reports the progress and
cancels.

Imports onnxruntime (through the runtime's model): import it after require_onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from qgis.core import QgsFeedback, QgsGeometry

from .polygonize import mask_to_geometry
from .raster_reader import RasterWindows
from .runtime.auto import AutoParams, AutoSegmenter
from .runtime.model import SamModel
from .runtime.reasons import EMPTY


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
    min_area_m2: float,
    min_score: float,
    simplify: float,
    feedback: QgsFeedback,
) -> tuple[list[AutoParcel], Counter[str]]:
    """Every parcel of ``raster`` the model rates at least ``min_score``, and the masks
    dropped by reason; stops early (with what it has) when ``feedback`` is cancelled."""
    segmenter = AutoSegmenter(model, raster, params, min_area_m2, min_score)
    parcels = []
    for mask, geotransform in segmenter.masks(
        lambda done, total: feedback.setProgress(100.0 * done / total), feedback.isCanceled
    ):
        geometry = mask_to_geometry(mask.mask, geotransform, simplify)
        if geometry is None:
            segmenter.dropped[EMPTY] += 1
        else:
            parcels.append(AutoParcel(geometry, mask.score, mask.stability))
    return parcels, segmenter.dropped
