"""The dtype stretch that turns any raster into the uint8 RGB SAM was trained on.

uint8 rasters are used as they are. Everything else (uint16 satellite pan, int16 Landsat,
float reflectance) is mapped linearly from robust per-band percentiles to 0..255. The
percentiles are computed once per raster from a decimated sample, so the cost does not grow
with raster size, and recorded in the manifest so export and inference apply the same mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio

from geosam.runtime.stretch import PERCENTILES, Stretch

# A decimated read of at most this many pixels per band is enough for stable percentiles.
SAMPLE_PIXELS = 1024 * 1024


def compute_stretch(ds: rasterio.DatasetReader, bands: Sequence[int]) -> Stretch:
    """Robust percentiles of each selected band over its valid pixels (uint8: no stretch)."""
    if all(ds.dtypes[b - 1] == "uint8" for b in bands):
        return Stretch()
    scale = max(1.0, (ds.width * ds.height / SAMPLE_PIXELS) ** 0.5)
    out_shape = (len(bands), max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
    sample = ds.read(list(bands), out_shape=out_shape, masked=True)
    low, high = [], []
    for band in sample:
        values = band.compressed().astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            lo, hi = 0.0, 255.0
        else:
            lo, hi = np.percentile(values, PERCENTILES)
        low.append(float(lo))
        high.append(float(hi if hi > lo else lo + 1.0))
    return Stretch(method="percentile", low=tuple(low), high=tuple(high))
