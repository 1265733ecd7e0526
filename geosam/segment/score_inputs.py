"""What ``geosam score-parcels`` scores: the parcel layers, and the areas they are scored in.

An area is a raster's valid footprint (its data, not its nodata: a map cannot find parcels
where there is no image) or, for a tile dataset, the tiles of one split of each source raster,
so that a parcel map of the whole raster is scored on ground training never saw. Every
failure is one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import rasterio
import shapely
from rasterio import features
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError

from geosam.data.tiling.manifest import TILES, load_manifest
from geosam.segment.polygons import polygonal
from geosam.segment.score import ScoredArea
from geosam.utils.errors import GeosamError
from geosam.utils.vector_io import read_vector

# The valid-data mask of a raster with nodata is read at most this many pixels a side: the
# footprint only decides which parcels are mostly inside, a pixel's precision is not needed.
FOOTPRINT_PIXELS = 2048


def read_parcels(path: Path, layer: str | None, what: str) -> gpd.GeoDataFrame:
    """The polygons of ``path`` (made valid; other geometries dropped), in their CRS."""
    frame = read_vector(path, layer, what)
    if frame.crs is None:
        raise GeosamError(f"{what} {path} have no CRS: assign one (e.g. in QGIS) and retry")
    geometry = [
        None if g is None or g.is_empty else polygonal(shapely.make_valid(g))
        for g in frame.geometry
    ]
    frame = frame.set_geometry(geometry, crs=frame.crs)
    return frame.loc[frame.geometry.notna()].reset_index(drop=True)


def read_parcel_maps(paths: Sequence[Path], layer: str | None) -> gpd.GeoDataFrame:
    """The polygons of one or more parcel maps (``geosam segment --auto`` writes one per
    raster), in the first one's CRS."""
    frames = [read_parcels(path, layer, "predicted parcels") for path in paths]
    crs = frames[0].crs
    merged = pd.concat([frame.to_crs(crs) for frame in frames], ignore_index=True)
    return gpd.GeoDataFrame(merged, geometry=merged.geometry.name, crs=crs)


def raster_area(path: Path) -> ScoredArea:
    """The valid footprint of a raster, named by its file name."""
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise GeosamError(f"raster {path} has no CRS: georeference it and retry")
            geometry = _valid_footprint(ds)
            crs = ds.crs
    except RasterioIOError as exc:
        raise GeosamError(f"cannot read raster {path}: {str(exc).splitlines()[0]}") from None
    if geometry is None:
        raise GeosamError(f"raster {path} has no valid pixel: every pixel is nodata")
    return ScoredArea(path.name, geometry, crs, path)


def dataset_areas(dataset: Path, split: str) -> tuple[list[ScoredArea], Path, str | None]:
    """One area per source raster of a tile dataset: the union of its tiles of ``split``;
    and the labels file (path, layer) the dataset was cut from, the truth to score against."""
    manifest = load_manifest(dataset)
    try:
        tiles = pd.read_parquet(dataset / TILES)
    except (OSError, ValueError) as exc:
        raise GeosamError(f"cannot read {dataset / TILES}: {exc}") from None
    tiles = tiles.loc[tiles["split"] == split]
    if tiles.empty:
        splits = ", ".join(sorted(pd.read_parquet(dataset / TILES)["split"].unique()))
        raise GeosamError(f"tile dataset {dataset} has no {split!r} tiles (splits: {splits})")
    areas = []
    for index, group in tiles.groupby("source"):
        source = manifest["sources"][index]
        raster = Path(source["path"])
        boxes = shapely.box(group["west"], group["south"], group["east"], group["north"])
        areas.append(
            ScoredArea(
                f"{raster.name} ({split})",
                shapely.union_all(boxes),
                source.get("crs_wkt") or source["crs"],
                raster if raster.is_file() else None,
            )
        )
    labels = manifest["labels"]
    return areas, Path(labels["path"]), labels.get("layer")


def _valid_footprint(ds: rasterio.DatasetReader) -> shapely.Geometry | None:
    """The raster's bounds when every pixel is valid, else its valid-data mask polygonized
    at a reduced resolution (:data:`FOOTPRINT_PIXELS`)."""
    if all(MaskFlags.all_valid in flags for flags in ds.mask_flag_enums):
        return shapely.box(*ds.bounds)
    scale = max(1.0, max(ds.width, ds.height) / FOOTPRINT_PIXELS)
    shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
    mask = ds.dataset_mask(out_shape=shape) > 0
    transform = ds.transform * rasterio.Affine.scale(ds.width / shape[1], ds.height / shape[0])
    shapes = features.shapes(mask.astype("uint8"), mask=mask, transform=transform)
    parts = [shapely.geometry.shape(shape) for shape, _ in shapes]
    return shapely.union_all(parts) if parts else None
