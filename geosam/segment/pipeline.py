"""``geosam segment``: a raster and prompt features in, one parcel polygon per prompt out.

Prompts are GIS features: a point (or the points of a MultiPoint) is a point prompt, a polygon
is a box prompt of its bounds. With ``label_field``, features whose value is 0 are negative
points, added to every prompt whose window holds them.

This module is the CLI's GIS input and output around the runtime's prompt loop
(:func:`geosam.runtime.segmenter.segment_prompts`, the same loop the QGIS plugin runs): it
reads the prompt features into :class:`~geosam.runtime.prompts.Prompt` records in raster
pixels, and turns each mask the loop gives into a shapely polygon (the part the prompt meant,
:func:`~geosam.segment.polygons.prompted_parts`), then writes them with the prompts'
attributes. Everything is checked before the model runs, and the output is written only when
all prompts are done.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from tqdm import tqdm

from geosam.data.tiling.rasters import expand_raster_paths
from geosam.runtime import EmbeddingCache, SamModel, WindowParams, map_to_pixel
from geosam.runtime.prompts import Prompt
from geosam.runtime.reasons import EMPTY, OUTSIDE, describe_counts
from geosam.runtime.segmenter import CACHE_BYTES, PromptSegmenter, Skip, segment_prompts
from geosam.segment.polygons import (
    check_writable,
    geodesic_area,
    mask_to_polygon,
    output_format,
    prompted_parts,
    write_features,
)
from geosam.segment.reader import WindowReader
from geosam.utils.errors import GeosamError
from geosam.utils.vector_io import read_vector

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Attributes geosam adds to each output feature; source columns of the same name are kept as
# src_<name>.
OUTPUT_FIELDS = ("score", "area_m2", "source")
_POINT_TYPES = {0, 4}  # Point, MultiPoint
_POLYGON_TYPES = {3, 6}  # Polygon, MultiPolygon


@dataclass(frozen=True)
class SegmentParams:
    """Options of :func:`segment` (the CLI's, plus the window and cache sizes).

    ``min_score`` drops predictions whose IoU estimate is lower (None keeps all);
    ``all_parts`` keeps every part of a mask, not only the prompted one (:func:`prompted_parts`);
    ``simplify`` is a tolerance in map units of the raster's CRS; ``crs`` the output CRS (any
    pyproj input; None keeps the raster's); ``driver`` "ESRI Shapefile" or "GPKG" (None: from
    the output's suffix); ``cache_bytes`` bounds the embeddings kept in memory; ``flip_tta``
    averages each mask over the window and its three mirror images (4x the model runs and
    embedding memory; :mod:`geosam.runtime.flips`).
    """

    layer: str | None = None
    label_field: str | None = None
    driver: str | None = None
    simplify: float = 0.0
    min_score: float | None = None
    all_parts: bool = False
    crs: str | None = None
    window: WindowParams = field(default_factory=WindowParams)
    cache_bytes: int = CACHE_BYTES
    threads: int | None = None
    flip_tta: bool = False


@dataclass
class SegmentResult:
    """What :func:`segment` wrote and what it skipped, by reason."""

    output: Path
    prompts: int
    polygons: int
    skipped: Counter[str] = field(default_factory=Counter)
    encoded: int = 0
    cache_hits: int = 0
    renamed: dict[str, str] = field(default_factory=dict)


def segment(
    rasters: str | Path | Sequence[str | Path],
    model_dir: Path,
    prompts_path: Path,
    output: Path,
    params: SegmentParams = SegmentParams(),
    progress: bool = True,
    skip_bad: bool = False,
) -> SegmentResult:
    """Segment the parcel under each prompt of ``prompts_path`` on ``rasters`` (files,
    folders, globs: :func:`~geosam.data.tiling.rasters.expand_raster_paths`) with the model
    in ``model_dir`` and write the polygons to ``output`` (in ``params.crs``, else the first
    raster's), with the prompts' attributes, ``score`` (the decoder's IoU estimate),
    ``area_m2`` and ``source`` (the raster). Each prompt goes to the first raster that holds
    it whole, else to the one that holds most of it (:func:`route_prompts`); negative points
    go to every raster. A raster that cannot be read stops the run, naming it, or with
    ``skip_bad`` is a warning (:func:`open_readers`)."""
    driver, out_crs = prepare_output(output, params)
    paths = expand_raster_paths(rasters)
    model = SamModel.load(model_dir, threads=params.threads, flip_tta=params.flip_tta)
    readers = open_readers(paths, lambda path: WindowReader(path, model.manifest), skip_bad)
    frame, positive = read_prompt_frame(prompts_path, params)
    owners = route_prompts(frame, positive, readers)
    result = SegmentResult(output, prompts=int(positive.sum()), polygons=0)
    if not (owners >= 0).any():
        where = readers[0].description if len(readers) == 1 else f"all {len(readers)} rasters"
        raise GeosamError(
            f"all {int(positive.sum())} prompts of {prompts_path} lie outside {where}: "
            "check that they are the prompts for these rasters"
        )
    if (outside := int((positive & (owners < 0)).sum())) > 0:
        result.skipped[OUTSIDE] += outside
    out_crs = out_crs or readers[0].source.crs
    found = []
    for index, reader in enumerate(readers):
        with reader:
            if not (owners == index).any():
                continue
            prompts, negatives = raster_prompts(frame, positive, owners == index, reader, params)
            segmenter = PromptSegmenter(
                model, reader, EmbeddingCache(params.cache_bytes), params.window
            )
            what = f"prompts of {prompts_path} on {reader.path}"
            records = run_prompts(segmenter, prompts, negatives, what, params, result, progress)
            found.append(_prompt_polygons(frame, records, reader, out_crs))
    if not found or sum(map(len, found)) == 0:
        raise GeosamError(
            f"no prompt gave a polygon ({describe_counts(result.skipped)}): lower --min-score or "
            "check the prompts"
        )
    polygons = gpd.GeoDataFrame(pd.concat(found, ignore_index=True), crs=out_crs)
    write_polygons(polygons, output, driver, None, result)
    for reason, count in result.skipped.items():
        logger.warning("%d prompts skipped: %s", count, reason)
    return result


def open_readers(paths: Sequence[Path], open_one: Callable[[Path], T], skip_bad: bool) -> list[T]:
    """``open_one(path)`` for each raster; one that raises GeosamError (unreadable, no CRS,
    bands the model cannot read) stops the run, or with ``skip_bad`` is logged and left
    out. GeosamError when none is left."""
    opened = []
    for path in paths:
        try:
            opened.append(open_one(path))
        except GeosamError as exc:
            if not skip_bad:
                raise
            logger.warning("skipped: %s", exc)
    if not opened:
        raise GeosamError(f"none of the {len(paths)} rasters can be read (see the warnings)")
    return opened


def _prompt_polygons(
    frame: gpd.GeoDataFrame,
    records: list[tuple[int, shapely.Geometry, float]],
    reader: WindowReader,
    out_crs: CRS,
) -> gpd.GeoDataFrame:
    """The polygons of one raster's prompts with the prompts' attributes, in ``out_crs``."""
    polygons = gpd.GeoDataFrame(
        _attributes(frame, [row for row, _, _ in records]),
        geometry=[polygon for _, polygon, _ in records],
        crs=reader.source.crs,
    )
    polygons["score"] = [score for _, _, score in records]
    polygons["source"] = str(reader.path)
    return polygons.to_crs(out_crs)


def route_prompts(
    frame: gpd.GeoDataFrame, positive: np.ndarray, readers: Sequence[WindowReader]
) -> np.ndarray:
    """Per feature, the index of the raster its prompt goes to, -1 for none: the first
    raster whose footprint holds the prompt whole, else the one holding most of it (a box on
    a seam), else none (outside every raster). Footprints are compared in each raster's CRS."""
    owners = np.full(len(frame), -1)
    share = np.zeros(len(frame))
    for index, reader in enumerate(readers):
        footprint = shapely.box(*reader.source.bounds)
        geometries = frame.geometry.to_crs(reader.source.crs).to_numpy()
        inside = shapely.area(shapely.intersection(shapely.envelope(geometries), footprint))
        extent = shapely.area(shapely.envelope(geometries))
        held = np.where(extent > 0, inside / np.where(extent > 0, extent, 1), 0.0)
        held[extent == 0] = shapely.intersects(geometries[extent == 0], footprint)
        better = positive & (held > share + 1e-12) & (share < 1)
        owners[better], share[better] = index, held[better]
    return owners


def prepare_output(output: Path, params: SegmentParams) -> tuple[str, CRS | None]:
    """The output's driver and CRS, checked before any work (a typo costs no model run)."""
    driver = output_format(output, params.driver)
    check_writable(output)
    return driver, None if params.crs is None else parse_crs(params.crs)


def write_polygons(
    polygons: gpd.GeoDataFrame,
    output: Path,
    driver: str,
    out_crs: CRS | None,
    result: SegmentResult,
) -> None:
    """Add ``area_m2`` (geodesic, in the raster's CRS), reproject to ``out_crs`` and write
    ``polygons`` atomically, recording what was written in ``result``."""
    polygons["area_m2"] = geodesic_area(polygons.geometry.to_numpy(), polygons.crs)
    if out_crs is not None:
        polygons = polygons.to_crs(out_crs)
    result.renamed = write_features(polygons, output, driver)
    result.polygons = len(polygons)


def run_prompts(
    segmenter: PromptSegmenter,
    prompts: list[Prompt],
    negatives: np.ndarray,
    what: str,
    params: SegmentParams,
    result: SegmentResult,
    progress: bool,
) -> list[tuple[int, shapely.Geometry, float]]:
    """(source row, polygon in the raster's CRS, score) per prompt that gave one, by row;
    ``what`` names the prompts in messages."""
    records = []
    geotransform = segmenter.reader.geotransform
    with tqdm(
        total=len(prompts),
        desc="segment",
        unit="prompt",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for item in segment_prompts(
            segmenter,
            prompts,
            negatives,
            params.min_score,
            result.skipped,
            progress=lambda done, _: bar.update(done - bar.n),
            what=what,
        ):
            if isinstance(item, Skip):
                if item.detail:
                    logger.info("prompt %d skipped: %s", item.prompt.index, item.detail)
                continue
            polygon = mask_to_polygon(item.mask, item.geotransform, params.simplify)
            if polygon is None:
                result.skipped[EMPTY] += 1
                continue
            if not params.all_parts:
                corners = item.prompt.map_box(geotransform)
                box = None if corners is None else shapely.Polygon(corners)
                polygon = prompted_parts(polygon, item.prompt.map_clicks(geotransform), box)
            records.append((item.prompt.index, polygon, item.score))
    result.encoded = segmenter.encoded
    result.cache_hits = segmenter.cache.hits
    return sorted(records, key=lambda record: record[0])


def read_prompt_frame(path: Path, params: SegmentParams) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The prompt features and, per feature, whether it is a positive prompt; GeosamError for
    a file geosam cannot use."""
    frame = read_vector(path, params.layer, "prompts")
    if frame.crs is None:
        raise GeosamError(
            f"prompts {path} have no CRS: define one "
            f"(e.g. ogr2ogr -a_srs EPSG:XXXX out.gpkg {path.name})"
        )
    if len(frame) == 0:
        raise GeosamError(f"prompts {path} hold no features")
    positive = _labels(frame, params.label_field, path)
    geometries = frame.geometry.to_numpy()
    types = shapely.get_type_id(geometries)
    missing = shapely.is_missing(geometries) | shapely.is_empty(geometries)
    is_polygon = np.isin(types, list(_POLYGON_TYPES)) & ~missing
    unsupported = ~missing & ~np.isin(types, list(_POINT_TYPES)) & ~is_polygon
    if unsupported.any():
        kind = geometries[unsupported][0].geom_type
        raise GeosamError(
            f"prompts {path} hold {kind} geometries: geosam segment takes points (point prompts) "
            "and polygons (box prompts)"
        )
    if (is_polygon & ~positive).any():
        raise GeosamError(
            f"prompts {path}: a polygon has {params.label_field} = 0, but only points can be "
            "negative prompts"
        )
    if missing.any():
        logger.warning("%d prompts of %s have no geometry and are ignored", missing.sum(), path)
    if not (positive & ~missing).any():
        raise GeosamError(f"prompts {path} hold no positive prompt")
    return frame, positive & ~missing


def raster_prompts(
    frame: gpd.GeoDataFrame,
    positive: np.ndarray,
    selected: np.ndarray,
    reader: WindowReader,
    params: SegmentParams,
) -> tuple[list[Prompt], np.ndarray]:
    """The ``selected`` positive prompts in ``reader``'s pixels, and every negative point
    (N, 2) in its pixels (the loop keeps those inside each prompt's window)."""
    geometries = frame.geometry.to_crs(reader.source.crs).to_numpy()
    geotransform = reader.geotransform
    prompts = []
    for row in np.flatnonzero(selected):
        pixels = map_to_pixel(geotransform, shapely.get_coordinates(geometries[row]))
        if shapely.get_type_id(geometries[row]) in _POINT_TYPES:
            prompts.append(Prompt(pixels, np.ones(len(pixels)), index=int(row)))
        else:
            (x1, y1), (x2, y2) = pixels.min(axis=0), pixels.max(axis=0)
            prompts.append(Prompt(box=(x1, y1, x2, y2), index=int(row)))
    missing = shapely.is_missing(geometries) | shapely.is_empty(geometries)
    negatives = [geometries[row] for row in np.flatnonzero(~positive & ~missing)]
    negative_pixels = map_to_pixel(geotransform, shapely.get_coordinates(negatives))
    return prompts, negative_pixels.reshape(-1, 2)


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise GeosamError(f"--crs {text} is not a CRS pyproj knows (e.g. EPSG:32633)") from None


def _labels(frame: gpd.GeoDataFrame, label_field: str | None, path: Path) -> np.ndarray:
    """Per feature, whether it is a positive prompt (all are without ``label_field``)."""
    if label_field is None:
        return np.ones(len(frame), dtype=bool)
    if label_field not in frame.columns:
        columns = ", ".join(c for c in frame.columns if c != frame.geometry.name)
        raise GeosamError(f"--label-field {label_field} is not a column of {path} ({columns})")
    values = frame[label_field]
    if not values.isin([0, 1]).all():
        raise GeosamError(
            f"--label-field {label_field} of {path} must be 1 (positive) or 0 (negative) in "
            f"every feature, found {sorted(set(values.dropna()) - {0, 1})[:5]} or empty values"
        )
    return values.to_numpy() == 1


def _attributes(frame: gpd.GeoDataFrame, rows: list[int]) -> dict[str, object]:
    """The source columns of ``rows``, renamed ``src_<name>`` where geosam adds that name."""
    attributes = frame.drop(columns=frame.geometry.name).iloc[rows].reset_index(drop=True)
    return attributes.rename(columns={name: f"src_{name}" for name in OUTPUT_FIELDS})
