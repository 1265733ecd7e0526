"""The dtype stretch of a raster read with rasterio, for tiling and ``geosam segment``.

The stretch itself (which percentiles, from how large a sample) is the runtime's
(:mod:`geosam.runtime.stretch`), shared with the QGIS plugin's GDAL reader; this module only
reads the decimated sample with rasterio, masked where the raster has nodata. The result is
recorded in the manifest so export and inference apply the same mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import rasterio

from geosam.runtime.stretch import Stretch, percentile_stretch, sample_shape


def compute_stretch(ds: rasterio.DatasetReader, bands: Sequence[int]) -> Stretch:
    """Robust percentiles of each selected band over its valid pixels (uint8: no stretch)."""
    if all(ds.dtypes[b - 1] == "uint8" for b in bands):
        return Stretch()
    sample = ds.read(
        list(bands), out_shape=(len(bands), *sample_shape(ds.width, ds.height)), masked=True
    )
    return percentile_stretch(band.compressed() for band in sample)
