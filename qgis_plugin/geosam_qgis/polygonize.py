"""Masks to parcel geometries with GDAL/OGR.

The CLI does this with rasterio and shapely (geosam/segment/polygons.py), which QGIS's Python
lacks. A mask is polygonized on the grid it was predicted on (the window's output transform),
so outlines are exact pixel edges in the raster's CRS; holes are kept, since a parcel around a
farmstead is not the farmstead. Simplification is in map units of the raster's CRS and may
make a ring self-touch, so its result is repaired and reduced to its polygonal part again.
"""

from __future__ import annotations

import numpy as np
from osgeo import gdal, ogr
from qgis.core import QgsGeometry, QgsPointXY, QgsWkbTypes

from .runtime.errors import GeosamError
from .runtime.windows import GeoTransform


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


def polygonal(geometry: QgsGeometry) -> QgsGeometry | None:
    """The polygonal part of a geometry (what makeValid returns may hold lines) as one
    MultiPolygon, whatever its number of parts, so output layers get one geometry type."""
    if geometry.isNull() or geometry.isEmpty():
        return None
    parts = [QgsGeometry(part.clone()) for part in geometry.constParts()]
    parts = [
        part for part in parts if part.type() == QgsWkbTypes.PolygonGeometry and part.area() > 0
    ]
    if not parts:
        return None
    union = QgsGeometry.unaryUnion(parts)
    union.convertToMultiType()
    return union


def prompted_parts(
    geometry: QgsGeometry, points: np.ndarray, box: QgsGeometry | None = None
) -> QgsGeometry:
    """The parts of a MultiPolygon that hold one of ``points`` (N, 2 map coordinates); when
    none does (a box prompt, a click on a hole), the part with most area inside ``box``, or
    without a box the largest part. The CLI's rule (geosam/segment/polygons.py): SAM's mask
    for one prompt often carries fragments elsewhere in its window, and the parcel a user
    prompted is the part under the click, or for a box the dominant part inside it."""
    parts = [QgsGeometry(part.clone()) for part in geometry.constParts()]
    if len(parts) <= 1:
        return geometry
    clicks = [QgsGeometry.fromPointXY(QgsPointXY(float(x), float(y))) for x, y in points]
    hit = [part for part in parts if any(part.contains(click) for click in clicks)]
    if not hit:
        inside = [part.area() if box is None else part.intersection(box).area() for part in parts]
        hit = [parts[int(np.argmax(inside))]]
    union = QgsGeometry.unaryUnion(hit)
    union.convertToMultiType()
    return union
