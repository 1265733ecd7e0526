"""What the inference loop needs of a raster: the protocol both front ends' readers implement.

``geosam segment`` reads rasters with rasterio (:class:`geosam.segment.reader.WindowReader`)
and the QGIS plugin with GDAL's own bindings (``geosam_qgis.raster_reader.RasterWindows``),
since QGIS's Python has no rasterio. Everything the runtime decides (which window to read
for a prompt, how to tile a raster, which pixels of a mask are nodata) is pixel math over
what this protocol gives, so both front ends get the same windows and the same masks, and
a reader only does I/O: it checks the raster against the model's manifest when it opens it
and returns each window already band-selected, stretched and resampled.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import numpy as np

from .windows import GeoTransform, Window


class RasterReader(Protocol):
    """An open raster, checked against a model, read one :class:`Window` at a time."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""

    @property
    def geotransform(self) -> GeoTransform:
        """The raster's affine transform in GDAL order."""

    @property
    def description(self) -> str:
        """The raster as messages name it (``raster <path>``, ``raster layer <name>``)."""

    @property
    def cache_id(self) -> Hashable:
        """What the pixels :meth:`read` returns depend on besides the window (the file and
        the bands read): embeddings cached under one id answer only reads of that id."""

    def pixel_size_m(self, col: float, row: float) -> tuple[float, float]:
        """(x, y) pixel size in metres at pixel (col, row); it varies with latitude in a
        geographic CRS, so windows are sized where their prompt is."""

    def read(self, window: Window) -> np.ndarray:
        """The window as an (out_height, out_width, 3) uint8 image of the model's bands,
        stretched and bilinear-resampled, nodata pixels 0 (as training chips have them)."""

    def valid(self, window: Window) -> np.ndarray | None:
        """The (out_height, out_width) mask of pixels valid in every band read; None when the
        raster has no nodata (every pixel valid)."""
