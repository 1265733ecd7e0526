"""Automatic mode: every parcel of a raster without prompts, for the Processing algorithm.

The algorithm is the runtime's (geosam/runtime/auto.py, bundled): overlapping windows on one
grid, a point grid per window, masks filtered and merged across windows. This module adds
what ``geosam segment --auto`` adds with rasterio/shapely, done with GDAL windows
(:class:`RasterWindows`) and OGR polygons (:func:`mask_to_geometry`): each mask the merger
hands out is polygonized at once, so memory holds polygons plus about one row of windows'
masks.

Imports onnxruntime (through the runtime's model): import it after require_onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from qgis.core import QgsFeedback, QgsGeometry

from .polygonize import mask_to_geometry
from .raster_reader import RasterWindows
from .runtime.auto import AutoMask, AutoParams, MaskMerger, Tiling, raster_tiling, window_masks
from .runtime.model import SamModel
from .runtime.windows import WindowParams


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
    simplify: float,
    feedback: QgsFeedback,
) -> tuple[list[AutoParcel], Counter[str]]:
    """Every parcel of ``raster``, and the masks dropped by reason; stops early (with what it
    has) when ``feedback`` is cancelled."""
    width, height = raster.size
    tiling, params = raster_tiling(
        raster.size,
        raster.pixel_size_m(width / 2, height / 2),
        model.ground_resolution_m,
        model.input_size,
        params,
        min_area_m2,
        WindowParams().max_upsample,
    )
    merger = MaskMerger(tiling, params)
    dropped: Counter[str] = Counter()
    parcels: list[AutoParcel] = []
    for done, tile in enumerate(tiling.windows()):
        if feedback.isCanceled():
            return parcels, dropped
        feedback.setProgress(100.0 * done / len(tiling))
        embedding = model.encode(raster.read(tile.window))
        masks = window_masks(model, embedding, tile, params, raster.valid(tile.window), dropped)
        parcels += _polygons(merger.add(tile, masks), tiling, raster, simplify, dropped)
    parcels += _polygons(merger.flush(), tiling, raster, simplify, dropped)
    dropped["duplicate"] = merger.duplicates
    return parcels, dropped


def _polygons(
    masks: list[AutoMask],
    tiling: Tiling,
    raster: RasterWindows,
    simplify: float,
    dropped: Counter[str],
) -> list[AutoParcel]:
    parcels = []
    for mask in masks:
        transform = tiling.transform(raster.geotransform, mask.box[0], mask.box[1])
        geometry = mask_to_geometry(mask.mask, transform, simplify)
        if geometry is None:
            dropped["empty mask"] += 1
        else:
            parcels.append(AutoParcel(geometry, mask.score, mask.stability))
    return parcels
