"""``geosam segment --auto``: every parcel of a raster, found without prompts.

The loop is the runtime's (:class:`geosam.runtime.auto.AutoSegmenter`, shared with the QGIS
plugin): the raster is tiled, each window encoded once and prompted with a point grid, pieces
of parcels cut by window edges joined and duplicates removed across windows, and by default
contested pixels given to one parcel. Each parcel it hands out is polygonized right away on
the tiling grid (:func:`~geosam.segment.polygons.grid_polygon`), so memory holds the polygons
plus about one row of windows' masks, whatever the raster's size, and neighbours share their
boundary exactly. This module adds the rasterio reader, shapely polygons, the coverage's
simplification (shapely's ``coverage_simplify``, which moves each shared edge once for both
neighbours) and the writing of :mod:`geosam.segment.pipeline`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import shapely
from tqdm import tqdm

from geosam.runtime import SamModel
from geosam.runtime.auto import (
    DEFAULT_MIN_AREA_M2,
    AutoParams,
    AutoSegmenter,
    choose_thresholds,
)
from geosam.runtime.reasons import EMPTY, describe_counts
from geosam.segment.pipeline import (
    SegmentParams,
    SegmentResult,
    prepare_output,
    write_polygons,
)
from geosam.segment.polygons import grid_polygon, polygonal
from geosam.segment.reader import WindowReader
from geosam.utils.errors import GeosamError

logger = logging.getLogger(__name__)


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
    polygon per parcel to ``output``, with ``score`` (predicted IoU), ``stability`` and
    ``area_m2``. ``auto.min_area_px`` and ``auto.min_hole_px`` are replaced by
    ``min_area_m2`` and ``min_hole_m2`` on the tiling's grid. ``thresholds`` (AutoParams
    field → value) are the user's; the thresholds not given there are the model's tuned ones
    where its manifest has them, else ``auto``'s (:func:`~geosam.runtime.auto.choose_thresholds`,
    logged). A raster where no parcel is
    found gives an empty layer and a warning, not an error: a batch run goes on.

    In the result, ``prompts`` counts the point prompts decoded, ``encoded`` the windows,
    and ``skipped`` the masks dropped, by reason.
    """
    params, auto = params or SegmentParams(), auto or AutoParams()
    for option, value in (("--min-area", min_area_m2), ("--min-hole", min_hole_m2)):
        if value < 0:
            raise GeosamError(f"{option} must be 0 or more m², got {value:g}")
    driver, out_crs = prepare_output(output, params)
    model = SamModel.load(model_dir, threads=params.threads, flip_tta=params.flip_tta)
    auto, chosen = choose_thresholds(auto, model.manifest, model.manifest_source, thresholds or {})
    logger.info("%s", chosen)
    with WindowReader(raster, model.manifest) as reader:
        segmenter = AutoSegmenter(
            model,
            reader,
            auto,
            min_area_m2,
            params.min_score,
            params.window.max_upsample,
            min_hole_m2,
        )
        records = []
        with tqdm(
            total=len(segmenter.tiling),
            desc="segment --auto",
            unit="window",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            for mask in segmenter.masks(lambda done, _: bar.update(done - bar.n)):
                polygon = grid_polygon(
                    mask.mask, mask.box[:2], segmenter.grid_transform, auto.coverage
                )
                if polygon is None:
                    segmenter.dropped[EMPTY] += 1
                    continue
                records.append((polygon, mask.score, mask.stability))
        crs = reader.source.crs
    result = SegmentResult(output, prompts=segmenter.prompts, polygons=0, skipped=segmenter.dropped)
    result.encoded = segmenter.encoded
    dropped = describe_counts(result.skipped) or "none"
    geometry, score, stability = zip(*records, strict=True) if records else ((), (), ())
    polygons = gpd.GeoDataFrame(
        {"score": list(score), "stability": list(stability)},
        geometry=simplified(list(geometry), params.simplify, auto.coverage),
        crs=crs,
    )
    empty = polygons.geometry.is_empty.to_numpy()
    segmenter.dropped[EMPTY] += int(empty.sum())
    polygons = polygons[~empty].reset_index(drop=True)
    write_polygons(polygons, output, driver, out_crs, result)
    if not records:
        logger.warning(
            "no parcel found in %s (masks dropped: %s): wrote an empty layer; lower "
            "--pred-iou-thresh, --stability-thresh or --min-area if parcels were expected",
            raster,
            dropped,
        )
    logger.info("masks dropped: %s", dropped)
    return result


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
