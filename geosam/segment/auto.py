"""``geosam segment --auto`` on one raster, and the simplification of a parcel map.

The loop is the runtime's (:class:`geosam.runtime.auto.AutoSegmenter`, shared with the QGIS
plugin): the raster is tiled, each window encoded once and prompted with a point grid, pieces
of parcels cut by window edges joined and duplicates removed across windows, and by default
contested pixels given to one parcel. Each parcel is polygonized on the tiling grid
(:func:`~geosam.segment.polygons.grid_polygon`), so neighbours share their boundary exactly.
One raster is a region of one raster (:mod:`geosam.segment.region`, which runs that loop in
blocks); this module adds the coverage's simplification (shapely's ``coverage_simplify``,
which moves each shared edge once for both neighbours).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import shapely

from geosam.runtime.auto import DEFAULT_MIN_AREA_M2, AutoParams
from geosam.segment.pipeline import SegmentParams, SegmentResult
from geosam.segment.polygons import polygonal


def segment_auto(
    raster: Path,
    model_dir: Path,
    output: Path,
    params: SegmentParams | None = None,
    auto: AutoParams | None = None,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    progress: bool = True,
    min_hole_m2: float = DEFAULT_MIN_AREA_M2,
    thresholds: Mapping[str, float] | None = None,
) -> SegmentResult:
    """Segment every parcel of ``raster`` with the model in ``model_dir`` and write one
    polygon per parcel to ``output``, with ``score`` (predicted IoU), ``stability``,
    ``area_m2`` and ``source``: a region of one raster, in this process
    (:func:`geosam.segment.region.segment_region`). ``auto.min_area_px`` and
    ``auto.min_hole_px`` are replaced by ``min_area_m2`` and ``min_hole_m2`` on the tiling's
    grid. ``thresholds`` (AutoParams field → value) are the user's; the thresholds not given
    there are the model's tuned ones where its manifest has them, else ``auto``'s
    (:func:`~geosam.runtime.auto.choose_thresholds`, logged). A raster where no parcel is
    found gives an empty layer and a warning, not an error: a batch run goes on.

    In the result, ``prompts`` counts the point prompts decoded, ``encoded`` the windows,
    and ``skipped`` the masks dropped, by reason.
    """
    from geosam.segment.region import segment_region

    return segment_region(
        [raster], model_dir, output, params, auto, min_area_m2, min_hole_m2, thresholds,
        progress=progress,
    )  # fmt: skip


def simplified(
    geometries: list[shapely.Geometry], tolerance: float, coverage: bool
) -> list[shapely.Geometry]:
    """``geometries`` simplified by ``tolerance`` map units: as a coverage (each shared edge
    simplified once, so neighbours keep sharing it and no gap opens), or polygon by polygon
    for overlapping parcels; repaired and reduced to their polygonal part either way."""
    if tolerance <= 0 or not geometries:
        return geometries
    if coverage:
        geometries = list(shapely.coverage_simplify(geometries, tolerance))
    else:
        geometries = list(shapely.simplify(geometries, tolerance, preserve_topology=True))
    # what simplification leaves of a parcel may be nothing: empty, dropped by the caller
    return [polygonal(shapely.make_valid(g)) or shapely.MultiPolygon() for g in geometries]
