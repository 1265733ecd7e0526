"""Reading prompt windows of a raster as the uint8 RGB images a model was trained on: the
CLI's :class:`~geosam.runtime.reader.RasterReader`, with rasterio.

The raster is checked against the model's manifest once, up front (bands, dtype, stretch, by
:mod:`geosam.runtime.bands`, which the QGIS plugin's reader shares), so a raster the model
cannot read stops the run before anything is written. Each window is then
read lazily, resampled by GDAL to the window's output shape, so memory follows the window
size and not the raster's. The stretch *method* comes from the manifest and its numbers from
this raster (:func:`compute_stretch`), since a model trained on one uint16 scene must see
another scene's percentiles mapped the same way, not the training scene's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError

from geosam.data.tiling.rasters import RasterSource, ground_resolution, open_source
from geosam.runtime.bands import model_bands, model_image, stretch_method
from geosam.runtime.windows import GeoTransform, Window
from geosam.utils.errors import GeosamError


class WindowReader:
    """An open raster that returns :class:`Window` images (a
    :class:`~geosam.runtime.reader.RasterReader`); use as a context manager."""

    def __init__(self, path: Path, manifest: Mapping[str, Any]) -> None:
        try:
            with rasterio.open(path) as ds:
                colours = [colour.name for colour in ds.colorinterp]
        except RasterioIOError as exc:
            raise GeosamError(f"cannot read raster {path}: {str(exc).splitlines()[0]}") from None
        name = f"raster {path}"
        self.source: RasterSource = open_source(path, model_bands(manifest, colours, name))
        stretch_method(manifest, self.source.dtype, name)
        self.path = path
        self._dataset: rasterio.DatasetReader | None = None

    def __enter__(self) -> WindowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dataset(self) -> rasterio.DatasetReader:
        """The open file, opened on first use and again after :meth:`close`."""
        if self._dataset is None or self._dataset.closed:
            self._dataset = rasterio.open(self.path)
        return self._dataset

    def close(self) -> None:
        """Close the file. GDAL keeps every block read from an open file in its cache (up to
        GDAL_CACHEMAX, by default 5% of the machine's memory), so a reader kept open across
        a raster's blocks grows with the raster; closed after each block, memory follows the
        block. The checked description and stretch stay: the next read just reopens."""
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.source.width, self.source.height

    @property
    def description(self) -> str:
        return f"raster {self.path}"

    @property
    def cache_id(self) -> str:
        """The file: one reader reads one set of bands of it."""
        return str(self.path.resolve())

    @property
    def geotransform(self) -> GeoTransform:
        """The raster's transform in GDAL order, as :mod:`geosam.runtime.windows` takes it."""
        return Affine(*self.source.transform).to_gdal()

    def pixel_size_m(self, col: float, row: float) -> tuple[float, float]:
        """(x, y) pixel size in metres at pixel (col, row): it varies with latitude in a
        geographic CRS, so windows are sized at their prompt, not at the raster centre."""
        at = self.source.affine * Affine.translation(col, row)
        return ground_resolution(self.source.crs, at, 0, 0)

    def read(self, window: Window) -> np.ndarray:
        """The window as an (out_height, out_width, 3) uint8 image, bilinear-resampled, with
        nodata pixels 0 (as tiling writes them into training chips)."""
        shape = (window.out_height, window.out_width)
        try:
            data = self.dataset.read(
                list(self.source.bands),
                window=_region(window),
                out_shape=(len(self.source.bands), *shape),
                resampling=Resampling.bilinear,
            )
        except RasterioIOError as exc:
            raise self._read_error(window, exc) from None
        return model_image(self.source.stretch.apply(data), self.valid(window))

    def valid(self, window: Window) -> np.ndarray | None:
        """The (out_height, out_width) mask of pixels valid in every band, None when the raster
        has no nodata (every pixel valid)."""
        if not self.source.has_mask:
            return None
        bands = list(self.source.bands)
        try:
            masks = self.dataset.read_masks(
                bands,
                window=_region(window),
                out_shape=(len(bands), window.out_height, window.out_width),
                resampling=Resampling.nearest,
            )
        except RasterioIOError as exc:
            raise self._read_error(window, exc) from None
        return np.all(masks > 0, axis=0)

    def _read_error(self, window: Window, exc: RasterioIOError) -> GeosamError:
        return GeosamError(
            f"cannot read raster {self.path} at {window}: {str(exc).splitlines()[0]}"
        )


def _region(window: Window) -> rasterio.windows.Window:
    return rasterio.windows.Window(window.col_off, window.row_off, window.width, window.height)
