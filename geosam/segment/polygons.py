"""Masks to polygons in map coordinates, their true areas, and writing them where GIS reads them.

A mask is polygonized on the grid it was predicted on (the window's output transform), so the
polygons are exact pixel outlines in the raster's CRS; holes are kept, since a parcel around a
farmstead is not the farmstead. Simplification is in map units of the raster's CRS and may
make a ring self-touch, so its result is repaired and reduced to its polygonal part again.

Areas are geodesic (on the CRS's own ellipsoid) for every CRS: planar areas are wrong by the
projection's scale factor squared (about 2x in Web Mercator at 45°) and meaningless in degrees.

GeoParquet (``*.parquet``) is written by geopandas (pyarrow), not GDAL, since GDAL builds
without its Parquet driver are common. Output is written to a hidden folder beside the target
and renamed into place (:func:`geosam.utils.publish.publish_files`), so an interrupted run
never leaves a half-written file; a Shapefile is several files, renamed one by
one after all of them are complete. dBASE field names hold 10 characters, so longer columns
are shortened deterministically before GDAL truncates them into clashes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio.errors
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features

from geosam.runtime.prompts import prompted_part_indexes
from geosam.runtime.windows import GeoTransform
from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_files

FORMATS = {"ESRI Shapefile": ".shp", "GPKG": ".gpkg", "Parquet": ".parquet"}
SHAPEFILE_FIELD_LENGTH = 10
# Files of a Shapefile dataset; sidecars of an older file with the same name (spatial
# indexes) would describe the old geometries, so they are removed when it is replaced.
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qmd")


def mask_to_polygon(
    mask: np.ndarray, transform: GeoTransform, simplify: float = 0.0
) -> shapely.Geometry | None:
    """The (multi)polygon of a boolean mask on the grid ``transform`` (GDAL order), simplified
    by ``simplify`` map units; None when the mask (or what simplification leaves) is empty."""
    if not mask.any():
        return None
    shapes = features.shapes(
        mask.astype(np.uint8), mask=mask, transform=Affine.from_gdal(*transform)
    )
    geometry = shapely.union_all([shapely.geometry.shape(shape) for shape, _ in shapes])
    if simplify > 0:
        geometry = shapely.simplify(geometry, simplify, preserve_topology=True)
    return polygonal(shapely.make_valid(geometry))


def grid_polygon(
    mask: np.ndarray, offset: tuple[int, int], grid_transform: GeoTransform, coverage: bool
) -> shapely.Geometry | None:
    """The (multi)polygon of a boolean ``mask`` whose pixel (0, 0) is pixel ``offset`` (x, y)
    of the grid ``grid_transform`` (GDAL order), unsimplified; None when the mask is empty.

    Traced in whole grid pixels and only then mapped, so every grid vertex gets the same map
    coordinates in every polygon. With ``coverage`` each edge also gets a vertex at every
    grid vertex along it: a coverage's neighbours then hold the same vertices on their shared
    boundary, as GEOS's coverage operations require (a straight edge of one parcel may be
    several edges of its neighbours)."""
    if not mask.any():
        return None
    shapes = features.shapes(
        mask.astype(np.uint8), mask=mask, transform=Affine.translation(*offset)
    )
    geometry = shapely.union_all([shapely.geometry.shape(shape) for shape, _ in shapes])
    if coverage:
        geometry = shapely.segmentize(geometry, 1.0)
    return polygonal(grid_to_map(geometry, grid_transform))


def grid_to_map(geometry: shapely.Geometry, grid_transform: GeoTransform) -> shapely.Geometry:
    """``geometry`` in pixels of the grid ``grid_transform`` (GDAL order) mapped to map
    coordinates: each grid vertex to the same coordinates wherever it appears."""
    t = grid_transform
    return shapely.transform(
        geometry,
        lambda xy: np.column_stack(
            [t[0] + xy[:, 0] * t[1] + xy[:, 1] * t[2], t[3] + xy[:, 0] * t[4] + xy[:, 1] * t[5]]
        ),
    )


def prompted_parts(
    geometry: shapely.Geometry,
    points: np.ndarray | None = None,
    box: shapely.Geometry | None = None,
) -> shapely.Geometry:
    """The part(s) of a (multi)polygon that a prompt meant, by the runtime's rule
    (:func:`geosam.runtime.prompts.prompted_part_indexes`), from its positive clicks
    ``points`` (N, 2 map coordinates) and its ``box`` polygon; shapely only measures which
    part holds which click and how much of each lies inside the box."""
    parts = shapely.get_parts(geometry)
    if len(parts) <= 1:
        return geometry
    clicks = np.zeros((0, 2)) if points is None else np.asarray(points).reshape(-1, 2)
    contains = shapely.contains_xy(parts[:, None], clicks[None, :, 0], clicks[None, :, 1])
    inside = shapely.area(parts if box is None else shapely.intersection(parts, box))
    chosen = parts[prompted_part_indexes(contains, inside)]
    return shapely.union_all(chosen) if contains.any() else chosen[0]


def polygonal(geometry: shapely.Geometry) -> shapely.Geometry | None:
    """The polygonal part of a geometry (what make_valid returns may hold lines), or None."""
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type in ("Polygon", "MultiPolygon")]
    parts = [p for p in parts if not p.is_empty and p.area > 0]
    return shapely.union_all(parts) if parts else None


def geodesic_area(geometries: Sequence[shapely.Geometry], crs: CRS) -> np.ndarray:
    """Areas in m² on the ellipsoid of ``crs``, whatever its projection or units."""
    geod = crs.get_geod()
    if geod is None:
        raise GeosamError(f"the CRS {crs.name} has no ellipsoid: geosam cannot measure areas")
    to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lonlat = shapely.transform(
        np.asarray(geometries, dtype=object),
        lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])),
    )
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in lonlat])


def shapefile_names(columns: Sequence[str]) -> dict[str, str]:
    """Renames making every column a distinct dBASE field name (≤ 10 characters, compared
    case-insensitively, as dBASE does): long names are cut, clashes get ``_1``, ``_2``...
    Deterministic, so the same input columns always give the same fields."""
    used: set[str] = set()
    renames = {}
    for column in columns:
        name, number = column[:SHAPEFILE_FIELD_LENGTH], 0
        while name.lower() in used:
            number += 1
            suffix = f"_{number}"
            name = column[: SHAPEFILE_FIELD_LENGTH - len(suffix)] + suffix
        used.add(name.lower())
        if name != column:
            renames[column] = name
    return renames


def output_format(path: Path, driver: str | None) -> str:
    """The GDAL driver for ``path``: ``driver`` if given, else from the suffix; the suffix must
    match it, since QGIS and GDAL pick the reader by suffix."""
    by_suffix = {suffix: name for name, suffix in FORMATS.items()}
    if driver is None and path.suffix.lower() not in by_suffix:
        raise GeosamError(
            f"output {path}: name it *.shp (ESRI Shapefile), *.gpkg (GPKG) or *.parquet "
            "(GeoParquet)"
        )
    driver = driver or by_suffix[path.suffix.lower()]
    if FORMATS[driver] != path.suffix.lower():
        raise GeosamError(
            f"--format {driver} writes *{FORMATS[driver]} files: name the output "
            f"{path.with_suffix(FORMATS[driver]).name}"
        )
    return driver


def check_writable(path: Path) -> None:
    """Fail before any work when ``path`` cannot be created or replaced."""
    parent = path.parent
    if not parent.is_dir():
        raise GeosamError(f"output folder {parent} does not exist: create it first")
    if path.is_dir():
        raise GeosamError(f"output {path} is a folder: give a file name")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise GeosamError(f"output {path} is not writable: choose another place")


def write_features(frame: gpd.GeoDataFrame, path: Path, driver: str) -> dict[str, str]:
    """Write ``frame`` to ``path`` atomically; returns the Shapefile field renames made. An
    empty frame is written as an empty polygon layer (its geometry type cannot be inferred)."""
    renames = shapefile_names(list(frame.columns.drop(frame.geometry.name)))
    if driver == "ESRI Shapefile":
        frame = frame.rename(columns=renames)
    else:
        renames = {}
    try:
        with publish_files(path.parent) as staging:
            staged = staging / path.name
            if driver == "Parquet":
                frame.to_parquet(staged)
            else:
                options = {"geometry_type": "MultiPolygon"} if frame.empty else {}
                frame.to_file(staged, driver=driver, layer=path.stem, engine="pyogrio", **options)
            if driver == "ESRI Shapefile":
                for suffix in SHAPEFILE_PARTS:
                    if not staged.with_suffix(suffix).exists():
                        path.with_suffix(suffix).unlink(missing_ok=True)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise GeosamError(f"cannot write {path}: {message.splitlines()[0]}") from None
    return renames
