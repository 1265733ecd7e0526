"""``geosam segment --auto``: every parcel of a raster, found without prompts.

The loop is the runtime's (:class:`geosam.runtime.auto.AutoSegmenter`, shared with the QGIS
plugin): the raster is tiled, each window encoded once and prompted with a point grid, and
duplicates removed across windows; each mask it hands out is polygonized right away, so
memory holds the polygons plus about one row of windows' masks, whatever the raster's size.
This module adds the rasterio reader, shapely polygons and the writing of
:mod:`geosam.segment.pipeline`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
from tqdm import tqdm

from geosam.runtime import SamModel
from geosam.runtime.auto import DEFAULT_MIN_AREA_M2, AutoParams, AutoSegmenter
from geosam.runtime.reasons import EMPTY, describe_counts
from geosam.segment.pipeline import (
    SegmentParams,
    SegmentResult,
    prepare_output,
    write_polygons,
)
from geosam.segment.polygons import mask_to_polygon
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
) -> SegmentResult:
    """Segment every parcel of ``raster`` with the model in ``model_dir`` and write one
    polygon per parcel to ``output``, with ``score`` (predicted IoU), ``stability`` and
    ``area_m2``. ``auto.min_area_px`` is replaced by ``min_area_m2`` on the tiling's grid.

    In the result, ``prompts`` counts the point prompts decoded, ``encoded`` the windows,
    and ``skipped`` the masks dropped, by reason.
    """
    params, auto = params or SegmentParams(), auto or AutoParams()
    if min_area_m2 < 0:
        raise GeosamError(f"--min-area must be 0 or more m², got {min_area_m2:g}")
    driver, out_crs = prepare_output(output, params)
    model = SamModel.load(model_dir, threads=params.threads, flip_tta=params.flip_tta)
    with WindowReader(raster, model.manifest) as reader:
        segmenter = AutoSegmenter(
            model, reader, auto, min_area_m2, params.min_score, params.window.max_upsample
        )
        records = []
        with tqdm(
            total=len(segmenter.tiling),
            desc="segment --auto",
            unit="window",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            for mask, geotransform in segmenter.masks(lambda done, _: bar.update(done - bar.n)):
                polygon = mask_to_polygon(mask.mask, geotransform, params.simplify)
                if polygon is None:
                    segmenter.dropped[EMPTY] += 1
                    continue
                records.append((polygon, mask.score, mask.stability))
        crs = reader.source.crs
    result = SegmentResult(output, prompts=segmenter.prompts, polygons=0, skipped=segmenter.dropped)
    result.encoded = segmenter.encoded
    dropped = describe_counts(result.skipped) or "none"
    if not records:
        raise GeosamError(
            f"no parcel found in {raster} (masks dropped: {dropped}): lower "
            "--pred-iou-thresh, --stability-thresh or --min-area"
        )
    geometry, score, stability = zip(*records, strict=True)
    polygons = gpd.GeoDataFrame(
        {"score": score, "stability": stability}, geometry=list(geometry), crs=crs
    )
    write_polygons(polygons, output, driver, out_crs, result)
    logger.info("masks dropped: %s", dropped)
    return result
