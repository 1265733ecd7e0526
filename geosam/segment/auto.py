"""``geosam segment --auto``: every parcel of a raster, found without prompts.

The raster is tiled by :func:`geosam.runtime.auto.raster_tiling` and each window is encoded
once and prompted with a point grid (:func:`~geosam.runtime.auto.window_masks`); the
:class:`~geosam.runtime.auto.MaskMerger` removes duplicates across windows and hands out
masks once no later window can replace them, and each is polygonized right away, so memory
holds the polygons plus about one row of windows' masks, whatever the raster's size. The
algorithm is the runtime's, shared with the QGIS plugin; this module adds the raster reading,
georeferencing and writing of :mod:`geosam.segment.pipeline`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
from tqdm import tqdm

from geosam.runtime import SamModel
from geosam.runtime.auto import (
    DEFAULT_MIN_AREA_M2,
    AutoMask,
    AutoParams,
    MaskMerger,
    Tiling,
    raster_tiling,
    window_masks,
)
from geosam.segment.pipeline import (
    SegmentParams,
    SegmentResult,
    describe_counts,
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
    result = SegmentResult(output, prompts=0, polygons=0)
    with WindowReader(raster, model.manifest) as reader:
        width, height = reader.size
        tiling, auto = raster_tiling(
            reader.size,
            reader.pixel_size_m(width / 2, height / 2),
            model.ground_resolution_m,
            model.input_size,
            auto,
            min_area_m2,
            params.window.max_upsample,
        )
        merger = MaskMerger(tiling, auto)
        records = []
        for tile in tqdm(
            tiling.windows(),
            total=len(tiling),
            desc="segment --auto",
            unit="window",
            disable=not progress,
            dynamic_ncols=True,
        ):
            embedding = model.encode(reader.read(tile.window))
            result.encoded += 1
            result.prompts += auto.points_per_side**2
            masks = window_masks(
                model, embedding, tile, auto, reader.valid(tile.window), result.skipped
            )
            final = merger.add(tile, masks)
            records += _polygons(final, tiling, reader, params, result)
        records += _polygons(merger.flush(), tiling, reader, params, result)
        result.skipped["duplicate"] = merger.duplicates
        crs = reader.source.crs
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


def _polygons(
    masks: list[AutoMask],
    tiling: Tiling,
    reader: WindowReader,
    params: SegmentParams,
    result: SegmentResult,
) -> list[tuple[object, float, float]]:
    """(polygon in the raster's CRS, score, stability) of each final mask kept."""
    records = []
    for mask in masks:
        if params.min_score is not None and mask.score < params.min_score:
            result.skipped["below --min-score"] += 1
            continue
        transform = tiling.transform(reader.geotransform, mask.box[0], mask.box[1])
        polygon = mask_to_polygon(mask.mask, transform, params.simplify)
        if polygon is None:
            result.skipped["empty mask"] += 1
            continue
        records.append((polygon, mask.score, mask.stability))
    return records
