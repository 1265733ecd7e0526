"""GDAL windows and OGR polygons: stretch, nodata, dtype checks, holes kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import RASTER_CRS
from geosam_qgis.polygonize import mask_to_geometry, prompted_parts
from geosam_qgis.raster_reader import RasterWindows
from geosam_qgis.runtime.errors import GeosamError
from geosam_qgis.runtime.windows import Window
from osgeo import gdal, osr
from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry, QgsRectangle

PERCENTILE = {"stretch": {"method": "percentile"}}


def uint16_raster(path: Path, nodata: int = 0) -> Path:
    """A 64 x 64 uint16 RGB raster, values 1000..4999, its left 8 columns nodata."""
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 5000, size=(3, 64, 64), dtype=np.uint16)
    data[:, :, :8] = nodata
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 3, gdal.GDT_UInt16)
    dataset.SetGeoTransform((500000.0, 2.0, 0.0, 5000000.0, 0.0, -2.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    for index in range(3):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(data[index])
        band.SetNoDataValue(nodata)
    dataset = None
    return path


def open_raster(path: Path, manifest: dict) -> RasterWindows:
    return RasterWindows(str(path), path.stem, QgsCoordinateReferenceSystem(RASTER_CRS), manifest)


def test_uint16_stretch_and_nodata(tmp_path: Path) -> None:
    raster = open_raster(uint16_raster(tmp_path / "pan.tif"), PERCENTILE)
    assert raster.stretch.method == "percentile" and raster.has_mask
    assert 1000 <= raster.stretch.low[0] < raster.stretch.high[0] <= 5000
    assert raster.pixel_size_m(0, 0) == (2.0, 2.0)
    window = Window(0, 0, 64, 64, 32, 32)  # downsampled 2x
    image = raster.read(window)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    valid = raster.valid(window)
    assert not valid[:, :4].any() and valid[:, 4:].all()
    assert (image[:, :4] == 0).all() and image[:, 4:].mean() > 60


def test_uint16_without_stretch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeosamError, match="pan is UInt16 but the model was trained on 8-bit"):
        open_raster(uint16_raster(tmp_path / "pan.tif"), {"stretch": None})


def test_polygon_keeps_holes() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:18, 2:18] = True
    mask[8:12, 8:12] = False
    geometry = mask_to_geometry(mask, (100.0, 0.5, 0.0, 200.0, 0.0, -0.5))
    assert geometry.isGeosValid()
    assert geometry.area() == pytest.approx((16 * 16 - 4 * 4) * 0.25)
    (polygon,) = geometry.asMultiPolygon()
    assert len(polygon) == 2  # outer ring and the hole
    assert geometry.boundingBox().xMinimum() == pytest.approx(101.0)
    assert mask_to_geometry(np.zeros((4, 4), dtype=bool), (0, 1, 0, 0, 0, -1)) is None


def test_the_prompted_part_is_kept() -> None:
    """A mask of a big and a small blob: a click keeps its blob, a box the blob inside it, a
    prompt that holds neither the largest."""
    mask = np.zeros((20, 20), dtype=bool)
    mask[1:5, 1:5] = True  # small, top-left: x 1-5, y 15-19 in map units
    mask[8:19, 8:19] = True  # large, bottom-right
    geometry = mask_to_geometry(mask, (0.0, 1.0, 0.0, 20.0, 0.0, -1.0))
    small = prompted_parts(geometry, np.array([[3.0, 17.0]]))
    assert small.area() == pytest.approx(16.0) and small.isMultipart()
    box = QgsGeometry.fromRect(QgsRectangle(0.0, 14.0, 6.0, 20.0))
    assert prompted_parts(geometry, np.zeros((0, 2)), box).area() == pytest.approx(16.0)
    assert prompted_parts(geometry, np.array([[10.0, 1.0]])).area() == pytest.approx(121.0)
