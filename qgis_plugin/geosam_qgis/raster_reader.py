"""Prompt windows of a raster layer, read with GDAL as the uint8 RGB images the model saw.

The plugin's :class:`~.runtime.reader.RasterReader`. QGIS's Python has GDAL but not rasterio,
so this is ``geosam segment``'s window reader (geosam/segment/reader.py) redone on
``osgeo.gdal``: the same checks of the raster against the model's manifest (bands, dtype,
stretch: :mod:`.runtime.bands`, shared with it) made once when the raster is opened, the
runtime's percentile stretch (:mod:`.runtime.stretch`) from a decimated sample GDAL reads,
and bilinear resampling of each window to its output size by GDAL's RasterIO, so the plugin
feeds the model what the CLI feeds it. Every read opens its own dataset handle: GDAL handles
are not thread-safe, and windows are read in a QgsTask while the map canvas keeps using the
layer.

Errors are :class:`GeosamError` naming the layer, since GDAL's Python bindings are used
without exceptions (turning them on would change behaviour for every other plugin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from osgeo import gdal
from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY, QgsRasterLayer, QgsUnitTypes

from .measure import ellipsoidal, length_m
from .runtime.bands import model_bands, model_image, stretch_method
from .runtime.errors import GeosamError
from .runtime.stretch import Stretch, percentile_stretch, sample_shape
from .runtime.windows import GeoTransform, Window, pixel_to_map


class RasterWindows:
    """A raster file checked against a model manifest; reads :class:`Window` images."""

    def __init__(
        self,
        source: str,
        name: str,
        crs: QgsCoordinateReferenceSystem,
        manifest: Mapping[str, Any],
    ) -> None:
        self.source = source
        self.name = name
        self.crs = crs
        dataset = self._open()
        self.size = (dataset.RasterXSize, dataset.RasterYSize)
        self.geotransform: GeoTransform = tuple(dataset.GetGeoTransform(can_return_null=True) or ())
        if len(self.geotransform) != 6 or self.geotransform == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0):
            raise GeosamError(f"raster layer {name} ({source}) is not georeferenced")
        if self.geotransform[2] != 0 or self.geotransform[4] != 0:
            raise GeosamError(
                f"raster layer {name} is rotated: warp it north-up first (Raster → Projections"
                " → Warp)"
            )
        if not crs.isValid():
            raise GeosamError(f"raster layer {name} has no CRS: set one in its properties")
        self.bands = select_bands(dataset, manifest, name)
        self.stretch = raster_stretch(dataset, self.bands, manifest, name)
        self.has_mask = any(
            not dataset.GetRasterBand(b).GetMaskFlags() & gdal.GMF_ALL_VALID for b in self.bands
        )
        self._distance = ellipsoidal(crs) if crs.isGeographic() else None

    @property
    def description(self) -> str:
        return f"raster layer {self.name}"

    @property
    def cache_id(self) -> tuple[str, tuple[int, ...]]:
        """The file and the bands read: embeddings depend on both."""
        return self.source, tuple(self.bands)

    @classmethod
    def from_layer(cls, layer: QgsRasterLayer, manifest: Mapping[str, Any]) -> RasterWindows:
        """The file behind a raster layer; layers GDAL cannot open (WMS, XYZ) are refused."""
        if layer.providerType() != "gdal":
            raise GeosamError(
                f"raster layer {layer.name()} comes from the {layer.providerType()} provider: "
                "geosam reads files GDAL opens (GeoTIFF, VRT, ...); save the layer as GeoTIFF"
            )
        return cls(layer.source(), layer.name(), layer.crs(), manifest)

    def pixel_size_m(self, col: float, row: float) -> tuple[float, float]:
        """(x, y) pixel size in metres at pixel (col, row).

        Geodesic in a geographic CRS, where it varies with latitude, so windows are sized at
        their prompt; grid metres in a projected CRS, as ``geosam tile`` measured the
        training resolution.
        """
        geotransform = self.geotransform
        if self._distance is None:
            factor = QgsUnitTypes.fromUnitToUnitFactor(
                self.crs.mapUnits(), QgsUnitTypes.DistanceUnit.DistanceMeters
            )
            return abs(geotransform[1]) * factor, abs(geotransform[5]) * factor
        corner, right, down = (
            QgsPointXY(*pixel_to_map(geotransform, xy))
            for xy in ((col, row), (col + 1, row), (col, row + 1))
        )
        return (
            length_m(self._distance, self._distance.measureLine(corner, right)),
            length_m(self._distance, self._distance.measureLine(corner, down)),
        )

    def read(self, window: Window) -> np.ndarray:
        """The window as an (out_height, out_width, 3) uint8 image, bilinear-resampled, with
        nodata pixels 0 (as tiling writes them into training chips)."""
        region, buffer = _region(window)
        data = self._open().ReadAsArray(
            *region,
            **buffer,
            band_list=list(self.bands),
            resample_alg=gdal.GRIORA_Bilinear,
        )
        if data is None:
            raise self._error(f"cannot read pixels at {window}")
        data = data.reshape(len(self.bands), window.out_height, window.out_width)
        return model_image(self.stretch.apply(data), self.valid(window))

    def valid(self, window: Window) -> np.ndarray | None:
        """The (out_height, out_width) mask of pixels valid in every band; None when the raster
        has no nodata, mask or alpha (every pixel valid)."""
        if not self.has_mask:
            return None
        dataset = self._open()
        region, buffer = _region(window)
        valid = np.ones((window.out_height, window.out_width), dtype=bool)
        for number in self.bands:
            mask = dataset.GetRasterBand(number).GetMaskBand().ReadAsArray(*region, **buffer)
            if mask is None:
                raise self._error(f"cannot read the nodata mask at {window}")
            valid &= mask > 0
        return valid

    def _open(self) -> gdal.Dataset:
        dataset = gdal.Open(self.source, gdal.GA_ReadOnly)
        if dataset is None:
            raise self._error(f"GDAL cannot open {self.source}")
        return dataset

    def _error(self, what: str) -> GeosamError:
        detail = gdal.GetLastErrorMsg()
        return GeosamError(f"raster layer {self.name}: {what}" + (f" ({detail})" if detail else ""))


def select_bands(dataset: gdal.Dataset, manifest: Mapping[str, Any], name: str) -> list[int]:
    """The 1 or 3 band numbers the model reads, as :func:`.runtime.bands.model_bands` (the
    CLI's choice too) makes it from the bands' colour interpretations."""
    colours = [
        gdal.GetColorInterpretationName(dataset.GetRasterBand(b).GetColorInterpretation())
        for b in range(1, dataset.RasterCount + 1)
    ]
    return model_bands(manifest, colours, f"raster layer {name}")


def raster_stretch(
    dataset: gdal.Dataset, bands: Sequence[int], manifest: Mapping[str, Any], name: str
) -> Stretch:
    """The uint8 mapping for this raster: the manifest's method, this raster's percentiles.

    A model tuned on one uint16 scene must see another scene's 2nd-98th percentiles mapped the
    same way, not the training scene's values, so the numbers are computed here.
    """
    dtypes = {gdal.GetDataTypeName(dataset.GetRasterBand(b).DataType) for b in bands}
    dtype = "Byte" if dtypes == {"Byte"} else ",".join(sorted(dtypes - {"Byte"}))
    method = stretch_method(manifest, dtype, f"raster layer {name}")
    if method == "none" or dtype == "Byte":
        return Stretch()
    height, width = sample_shape(dataset.RasterXSize, dataset.RasterYSize)
    samples = []
    for number in bands:
        band = dataset.GetRasterBand(number)
        values = band.ReadAsArray(buf_xsize=width, buf_ysize=height)
        valid = band.GetMaskBand().ReadAsArray(buf_xsize=width, buf_ysize=height)
        if values is None or valid is None:
            raise GeosamError(
                f"cannot read pixels of raster layer {name}: {gdal.GetLastErrorMsg()}"
            )
        samples.append(values[valid > 0])
    return percentile_stretch(samples)


def _region(window: Window) -> tuple[tuple[int, int, int, int], dict[str, int]]:
    """GDAL's ReadAsArray arguments for a window: (x, y, width, height) of the source, which
    datasets and bands name differently and so go by position, and the buffer size."""
    region = (window.col_off, window.row_off, window.width, window.height)
    return region, {"buf_xsize": window.out_width, "buf_ysize": window.out_height}
