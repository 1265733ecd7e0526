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
from qgis.core import QgsGeometry, QgsWkbTypes

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
