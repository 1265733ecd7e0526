"""``geosam segment``: a raster and prompt features in, one parcel polygon per prompt out.

Prompts are GIS features: a point (or the points of a MultiPoint) is a point prompt, a polygon
is a box prompt of its bounds. With ``label_field``, features whose value is 0 are negative
points; every negative point inside the window read for a positive prompt is added to that
prompt. That is SAM's own notion of "not this" (a negative click only means something in the
image it was made on), and it needs no matching of negatives to positives.

Each prompt gets a window centred on it (:func:`prompt_window`); prompts are visited in
spatial order, so the next prompt usually lies inside a window already encoded, and the
:class:`EmbeddingCache` answers it without running the encoder. Everything is checked before
the model runs, and the output is written only when all prompts are done.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from tqdm import tqdm

from geosam.runtime import (
    Embedding,
    EmbeddingCache,
    GeoTransform,
    Prediction,
    SamModel,
    Window,
    WindowParams,
    map_to_pixel,
    pixel_to_map,
    prompt_box,
    prompt_window,
    sam_coords,
)
from geosam.runtime.windows import Box
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

# Attributes geosam adds to each output feature; source columns of the same name are kept as
# src_<name>.
OUTPUT_FIELDS = ("score", "area_m2")
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
    cache_bytes: int = 256 * 2**20
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


@dataclass(frozen=True)
class Prompt:
    """One positive prompt: its source feature's row, points and/or box in raster pixels."""

    row: int
    points: np.ndarray | None = None
    box: Box | None = None

    @property
    def bounds(self) -> Box:
        return prompt_box(self.points, self.box)

    def map_geometry(
        self, transform: GeoTransform
    ) -> tuple[np.ndarray | None, shapely.Geometry | None]:
        """The points (N, 2) and the box polygon in map coordinates, None where absent."""
        points = None if self.points is None else pixel_to_map(transform, self.points)
        if self.box is None:
            return points, None
        x1, y1, x2, y2 = self.box
        corners = pixel_to_map(transform, np.array([(x1, y1), (x2, y1), (x2, y2), (x1, y2)]))
        return points, shapely.Polygon(corners)


def segment(
    raster: Path,
    model_dir: Path,
    prompts_path: Path,
    output: Path,
    params: SegmentParams = SegmentParams(),
    progress: bool = True,
) -> SegmentResult:
    """Segment the parcel under each prompt of ``prompts_path`` on ``raster`` with the model
    in ``model_dir`` and write the polygons to ``output``, with the prompts' attributes and
    ``score`` (the decoder's IoU estimate) and ``area_m2``."""
    driver, out_crs = prepare_output(output, params)
    model = SamModel.load(model_dir, threads=params.threads, flip_tta=params.flip_tta)
    with WindowReader(raster, model.manifest) as reader:
        frame, prompts, negatives = read_prompts(prompts_path, params, reader)
        result = SegmentResult(output, prompts=len(prompts), polygons=0)
        inside = [p for p in prompts if _inside(p, reader.size)]
        if len(inside) < len(prompts):
            result.skipped["outside the raster"] = len(prompts) - len(inside)
        if not inside:
            raise GeosamError(
                f"all {len(prompts)} prompts of {prompts_path} lie outside raster {raster}: "
                "check that they cover the same area"
            )
        records = run_prompts(model, reader, inside, negatives, params, result, progress)
    if not records:
        raise GeosamError(
            f"no prompt gave a polygon ({describe_counts(result.skipped)}): lower --min-score or "
            "check the prompts"
        )
    rows = [row for row, _, _ in records]
    polygons = gpd.GeoDataFrame(
        _attributes(frame, rows),
        geometry=[polygon for _, polygon, _ in records],
        crs=reader.source.crs,
    )
    polygons["score"] = [score for _, _, score in records]
    write_polygons(polygons, output, driver, out_crs, result)
    for reason, count in result.skipped.items():
        logger.warning("%d prompts skipped: %s", count, reason)
    return result


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
    model: SamModel,
    reader: WindowReader,
    prompts: list[Prompt],
    negatives: np.ndarray,
    params: SegmentParams,
    result: SegmentResult,
    progress: bool,
) -> list[tuple[int, shapely.Geometry, float]]:
    """(source row, polygon in the raster's CRS, score) per prompt that gave one, by row."""
    cache = EmbeddingCache(params.cache_bytes)
    raster_id = str(reader.path.resolve())
    gt = reader.geotransform
    records = []
    for prompt in tqdm(
        spatial_order(prompts, reader, model),
        desc="segment",
        unit="prompt",
        disable=not progress,
        dynamic_ncols=True,
    ):
        bounds = prompt.bounds
        found = cache.find(raster_id, bounds, _margin(bounds, params.window), reader.size)
        if found is not None:
            window, embedding = found
        else:
            try:
                window = _window(bounds, reader, model, params.window)
            except GeosamError as exc:
                logger.info("prompt %d skipped: %s", prompt.row, exc)
                result.skipped["too large for the model"] += 1
                continue
            embedding = cache.get_or_compute(
                (raster_id, window.key), _encoder(model, reader, window, result)
            )
        prediction = decode(model, embedding, window, prompt, negatives)
        if params.min_score is not None and prediction.score < params.min_score:
            result.skipped["below --min-score"] += 1
            continue
        mask = prediction.mask
        valid = reader.valid(window)
        if valid is not None:
            mask = mask & valid
        polygon = mask_to_polygon(mask, window.transform(gt), params.simplify)
        if polygon is None:
            result.skipped["empty mask"] += 1
            continue
        if not params.all_parts:
            polygon = prompted_parts(polygon, *prompt.map_geometry(gt))
        records.append((prompt.row, polygon, prediction.score))
    result.cache_hits = cache.hits
    return sorted(records, key=lambda record: record[0])


def decode(
    model: SamModel,
    embedding: Embedding,
    window: Window,
    prompt: Prompt,
    negatives: np.ndarray,
) -> Prediction:
    """Decode ``prompt`` plus the negative points inside ``window``, in the window's image."""
    negatives = negatives[np.array([window.contains((x, y, x, y)) for x, y in negatives], bool)]
    points = np.concatenate([p for p in (prompt.points, negatives) if p is not None])
    labels = np.r_[np.ones(len(points) - len(negatives)), np.zeros(len(negatives))]
    box = None
    if prompt.box is not None:
        box = sam_coords(window.pixel_to_output(np.reshape(prompt.box, (2, 2)))).reshape(4)
    return model.decode(
        embedding,
        points=sam_coords(window.pixel_to_output(points)) if len(points) else None,
        labels=labels if len(points) else None,
        box=box,
    )


def spatial_order(prompts: list[Prompt], reader: WindowReader, model: SamModel) -> list[Prompt]:
    """Prompts in rows of about one window's height, west to east in each, so that consecutive
    prompts share windows and the cache holds the few windows a row needs."""
    resolution = model.ground_resolution_m
    row_height = model.input_size * (
        1.0 if resolution is None else max(resolution / reader.source.resolution_m[1], 0.5)
    )

    def key(prompt: Prompt) -> tuple[int, float]:
        x1, y1, x2, y2 = prompt.bounds
        return int((y1 + y2) / 2 // row_height), (x1 + x2) / 2

    return sorted(prompts, key=key)


def read_prompts(
    path: Path, params: SegmentParams, reader: WindowReader
) -> tuple[gpd.GeoDataFrame, list[Prompt], np.ndarray]:
    """The prompt features (their attributes), the positive prompts in raster pixels, and the
    negative points (N, 2) in raster pixels; GeosamError for a file geosam cannot use."""
    frame = read_vector(path, params.layer, "prompts")
    if frame.crs is None:
        raise GeosamError(
            f"prompts {path} have no CRS: define one "
            f"(e.g. ogr2ogr -a_srs EPSG:XXXX out.gpkg {path.name})"
        )
    if len(frame) == 0:
        raise GeosamError(f"prompts {path} hold no features")
    positive = _labels(frame, params.label_field, path)
    geometries = frame.geometry.to_crs(reader.source.crs).to_numpy()
    types = shapely.get_type_id(geometries)
    missing = shapely.is_missing(geometries) | shapely.is_empty(geometries)
    is_point = np.isin(types, list(_POINT_TYPES)) & ~missing
    is_polygon = np.isin(types, list(_POLYGON_TYPES)) & ~missing
    unsupported = ~missing & ~is_point & ~is_polygon
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
    gt = reader.geotransform
    prompts = []
    for row in np.flatnonzero(positive & ~missing):
        pixels = map_to_pixel(gt, shapely.get_coordinates(geometries[row]))
        if is_point[row]:
            prompts.append(Prompt(int(row), points=pixels))
        else:
            (x1, y1), (x2, y2) = pixels.min(axis=0), pixels.max(axis=0)
            prompts.append(Prompt(int(row), box=(x1, y1, x2, y2)))
    negatives = [geometries[row] for row in np.flatnonzero(~positive & ~missing)]
    negative_pixels = map_to_pixel(gt, shapely.get_coordinates(negatives)).reshape(-1, 2)
    if missing.any():
        logger.warning("%d prompts of %s have no geometry and are ignored", missing.sum(), path)
    if not prompts:
        raise GeosamError(f"prompts {path} hold no positive prompt")
    return frame, prompts, negative_pixels


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


def _inside(prompt: Prompt, size: tuple[int, int]) -> bool:
    """A box overlapping the raster, or points that all lie on it (a click off the image is
    not a prompt SAM can use)."""
    width, height = size
    if prompt.points is not None:
        x, y = prompt.points[:, 0], prompt.points[:, 1]
        return bool(np.all((x >= 0) & (x <= width) & (y >= 0) & (y <= height)))
    x1, y1, x2, y2 = prompt.box
    return x1 < width and x2 > 0 and y1 < height and y2 > 0


def _margin(bounds: Box, params: WindowParams) -> float:
    """The context (raster pixels) a cached window must leave around a prompt to answer it."""
    extent = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    return params.margin * extent + params.min_margin_px


def _window(bounds: Box, reader: WindowReader, model: SamModel, params: WindowParams) -> Window:
    centre = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    return prompt_window(
        bounds,
        reader.size,
        reader.pixel_size_m(*centre),
        model.ground_resolution_m,
        model.input_size,
        params,
    )


def _encoder(
    model: SamModel, reader: WindowReader, window: Window, result: SegmentResult
) -> Callable[[], Embedding]:
    def encode() -> Embedding:
        result.encoded += 1
        return model.encode(reader.read(window))

    return encode


def describe_counts(counts: Counter[str]) -> str:
    """``"3 below --min-score, 1 empty mask"``: what was skipped, for messages."""
    return ", ".join(f"{count} {reason}" for reason, count in counts.items() if count)
