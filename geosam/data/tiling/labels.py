"""Reading parcel polygons and matching them to rasters.

Labels come in any format and CRS GDAL reads. They are loaded once, cleaned (invalid
geometries repaired, polygonal parts of collections kept, everything else rejected or counted)
and indexed; each raster then receives only the parcels that touch it, found through the spatial
index and reprojected to the raster's CRS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from rasterio.warp import transform_bounds

from geosam.data.tiling.rasters import RasterSource
from geosam.utils.errors import GeosamError
from geosam.utils.vector_io import read_vector

logger = logging.getLogger(__name__)

_POLYGONAL = {"Polygon", "MultiPolygon"}


@dataclass
class LabelStats:
    """What cleaning did to the labels; logged and recorded in the manifest."""

    features: int = 0
    repaired: int = 0
    dropped_empty: int = 0
    dropped_non_polygon: int = 0


class ParcelLabels:
    """Cleaned parcel polygons with ids, in their own CRS, with a spatial index."""

    def __init__(self, path: Path, layer: str | None = None, id_field: str | None = None):
        self.path = path
        self.layer = layer
        self.id_field = id_field
        frame = read_vector(path, layer, "labels", fid_as_index=True)
        if frame.crs is None:
            raise GeosamError(
                f"labels {path} have no CRS: define one "
                f"(e.g. ogr2ogr -a_srs EPSG:XXXX out.gpkg {path.name})"
            )
        if len(frame) == 0:
            raise GeosamError(f"labels {path} hold no features")
        if id_field is not None and id_field not in frame.columns:
            columns = ", ".join(c for c in frame.columns if c != frame.geometry.name)
            raise GeosamError(
                f"--id-field {id_field} is not a column of {path} (columns: {columns})"
            )
        self.crs = CRS.from_user_input(frame.crs)
        ids = frame[id_field].to_numpy() if id_field else frame.index.to_numpy()
        self.stats = LabelStats(features=len(frame))
        geometries = self._clean(frame.geometry.to_numpy())
        keep = ~shapely.is_missing(geometries)
        self.ids = ids[keep]
        self.geometries = geometries[keep]
        self.tree = shapely.STRtree(self.geometries)
        logger.info(
            "labels %s: %d features, %d repaired, %d empty dropped, %d non-polygon dropped",
            path.name,
            self.stats.features,
            self.stats.repaired,
            self.stats.dropped_empty,
            self.stats.dropped_non_polygon,
        )

    def _clean(self, geometries: np.ndarray) -> np.ndarray:
        """Repair invalid geometries and reduce every feature to its polygonal part (or None)."""
        empty = shapely.is_missing(geometries) | shapely.is_empty(geometries)
        self.stats.dropped_empty = int(empty.sum())
        geometries = np.where(empty, None, geometries)
        invalid = ~empty & ~shapely.is_valid(geometries)
        self.stats.repaired = int(invalid.sum())
        geometries[invalid] = shapely.make_valid(geometries[invalid])
        types = set(shapely.get_type_id(geometries[~empty]).tolist())
        if types and types.isdisjoint({3, 6, 7}):
            kind = shapely.get_type_id(geometries[~empty][0])
            name = ["Point", "LineString", "LinearRing", "", "MultiPoint", "MultiLineString"][kind]
            raise GeosamError(
                f"labels {self.path} hold {name} geometries, not polygons: geosam tile needs "
                "parcel polygons (buffer points or polygonize lines first)"
            )
        cleaned = np.array([_polygonal_part(g) for g in geometries], dtype=object)
        self.stats.dropped_non_polygon = int(
            (shapely.is_missing(cleaned) & ~shapely.is_missing(geometries)).sum()
        )
        if shapely.is_missing(cleaned).all():
            raise GeosamError(f"labels {self.path} hold no polygon with an area")
        return cleaned

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(shapely.total_bounds(self.geometries).tolist())

    def for_raster(self, source: RasterSource) -> tuple[np.ndarray, np.ndarray]:
        """(ids, polygons in the raster's CRS) of the parcels that touch the raster."""
        raster_crs = source.crs
        west, south, east, north = transform_bounds(
            raster_crs, self.crs, *source.bounds, densify_pts=21
        )
        hits = self.tree.query(shapely.box(west, south, east, north), predicate="intersects")
        if hits.size == 0:
            return self.ids[:0], self.geometries[:0]
        hits.sort()
        polygons = self.geometries[hits]
        if not raster_crs.equals(self.crs):
            polygons = gpd.GeoSeries(polygons, crs=self.crs).to_crs(raster_crs).to_numpy()
            polygons = shapely.make_valid(polygons)
            polygons = np.array([_polygonal_part(g) for g in polygons], dtype=object)
        touching = shapely.intersects(polygons, shapely.box(*source.bounds)) & ~shapely.is_missing(
            polygons
        )
        return self.ids[hits][touching], polygons[touching]

    def to_manifest(self) -> dict:
        return {
            "path": str(self.path),
            "layer": self.layer,
            "id_field": self.id_field,
            "crs": self.crs.to_string(),
            **self.stats.__dict__,
        }


def _polygonal_part(geometry: shapely.Geometry | None) -> shapely.Geometry | None:
    """The polygon or multipolygon in a geometry, or None if it has no area."""
    if geometry is None or geometry.is_empty:
        return None
    if geometry.geom_type in _POLYGONAL:
        return geometry
    if geometry.geom_type == "GeometryCollection":
        parts = [g for g in shapely.get_parts(geometry) if g.geom_type in _POLYGONAL]
        if parts:
            return shapely.union_all(parts)
    return None
