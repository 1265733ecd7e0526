"""Masks to parcel geometries with GDAL/OGR: the plugin's output of the runtime's loops.

The CLI does this with rasterio and shapely (geosam/segment/polygons.py), which QGIS's Python
lacks; which part of a mask a prompt meant is the runtime's rule
(:func:`.runtime.prompts.prompted_part_indexes`), QGIS geometry only measures its facts.
A mask is polygonized on the grid it was predicted on (the window's output transform), so
outlines are exact pixel edges in the raster's CRS; holes are kept, since a parcel around a
farmstead is not the farmstead. Simplification is in map units of the raster's CRS and may
make a ring self-touch, so its result is repaired and reduced to its polygonal part again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from osgeo import gdal, ogr
from qgis.core import QgsGeometry, QgsPointXY, QgsWkbTypes
from qgis.PyQt.QtGui import QTransform

from .runtime.errors import GeosamError
from .runtime.prompts import prompted_part_indexes
from .runtime.windows import GeoTransform

if TYPE_CHECKING:  # the runtime's segmenter loads onnxruntime
    from .runtime.segmenter import PromptMask


@dataclass(frozen=True)
class Parcel:
    """A segmented parcel: its outline in the raster's CRS and the decoder's IoU estimate."""

    geometry: QgsGeometry
    score: float


def prompt_parcel(
    result: PromptMask, raster_transform: GeoTransform, simplify: float = 0.0
) -> Parcel | None:
    """The parcel a prompt's mask outlines (the part the prompt meant) on a raster whose
    geotransform is ``raster_transform``, simplified by ``simplify`` map units of its CRS;
    None when nothing polygonal is left."""
    geometry = mask_to_geometry(result.mask, result.geotransform, simplify)
    if geometry is None:
        return None
    corners = result.prompt.map_box(raster_transform)
    box = None
    if corners is not None:
        box = QgsGeometry.fromPolygonXY([[QgsPointXY(*xy) for xy in corners]])
    clicks = result.prompt.map_clicks(raster_transform)
    return Parcel(prompted_parts(geometry, clicks, box), result.score)


def half_pixel(geotransform: GeoTransform) -> float:
    """Half a pixel of the grid ``geotransform`` in map units: a simplification that removes
    the staircase of pixel edges without moving an outline by more than half a pixel."""
    return 0.5 * min(abs(geotransform[1]), abs(geotransform[5]))


def mask_to_geometry(
    mask: np.ndarray, transform: GeoTransform, simplify: float = 0.0
) -> QgsGeometry | None:
    """The (multi)polygon of a boolean mask on the grid ``transform`` (GDAL order), simplified
    by ``simplify`` map units; None when the mask (or what simplification leaves) is empty."""
    if not mask.any():
        return None
    height, width = mask.shape
    raster = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Byte)
    raster.SetGeoTransform(transform)
    band = raster.GetRasterBand(1)
    band.WriteArray(mask.astype(np.uint8))
    vectors = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = vectors.CreateLayer("mask", geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    # The band is its own mask: only the True pixels become polygons, False ones are holes.
    if gdal.Polygonize(band, band, layer, 0) != 0:
        raise GeosamError(f"GDAL could not polygonize a mask: {gdal.GetLastErrorMsg()}")
    parts = []
    for feature in layer:
        part = QgsGeometry()
        part.fromWkb(bytes(feature.GetGeometryRef().ExportToIsoWkb()))
        parts.append(part)
    geometry = QgsGeometry.unaryUnion(parts)
    if simplify > 0:
        geometry = geometry.simplify(simplify)
    return polygonal(geometry.makeValid())


def grid_geometry(
    mask: np.ndarray, offset: tuple[int, int], grid_transform: GeoTransform, coverage: bool
) -> QgsGeometry | None:
    """The (multi)polygon of a boolean ``mask`` whose pixel (0, 0) is pixel ``offset`` (x, y)
    of the grid ``grid_transform`` (GDAL order), unsimplified; None when the mask is empty.

    As the CLI's ``grid_polygon``: traced in whole grid pixels and only then mapped, so every
    grid vertex gets the same map coordinates in every parcel; with ``coverage`` each edge gets
    a vertex at every grid vertex along it, so neighbours hold the same vertices on their
    shared boundary."""
    geometry = mask_to_geometry(mask, (float(offset[0]), 1.0, 0.0, float(offset[1]), 0.0, 1.0))
    if geometry is None:
        return None
    if coverage:
        geometry = geometry.densifyByDistance(1.0)
    t = grid_transform
    geometry.transform(QTransform(t[1], t[4], t[2], t[5], t[0], t[3]))
    return geometry


def polygonal(geometry: QgsGeometry) -> QgsGeometry | None:
    """The polygonal part of a geometry (what makeValid returns may hold lines) as one
    MultiPolygon, whatever its number of parts, so output layers get one geometry type."""
    if geometry.isNull() or geometry.isEmpty():
        return None
    parts = [QgsGeometry(part.clone()) for part in geometry.constParts()]
    parts = [
        part
        for part in parts
        if part.type() == QgsWkbTypes.GeometryType.PolygonGeometry and part.area() > 0
    ]
    if not parts:
        return None
    union = QgsGeometry.unaryUnion(parts)
    union.convertToMultiType()
    return union


def prompted_parts(
    geometry: QgsGeometry, points: np.ndarray, box: QgsGeometry | None = None
) -> QgsGeometry:
    """The part(s) of a MultiPolygon that a prompt meant, by the runtime's rule, from its
    positive clicks ``points`` (N, 2 map coordinates) and its ``box``, as one MultiPolygon."""
    parts = [QgsGeometry(part.clone()) for part in geometry.constParts()]
    if len(parts) <= 1:
        return geometry
    clicks = [QgsGeometry.fromPointXY(QgsPointXY(float(x), float(y))) for x, y in points]
    contains = np.array([[part.contains(click) for click in clicks] for part in parts], bool)
    inside = [part.area() if box is None else part.intersection(box).area() for part in parts]
    union = QgsGeometry.unaryUnion(
        [parts[index] for index in prompted_part_indexes(contains, np.array(inside))]
    )
    union.convertToMultiType()
    return union
