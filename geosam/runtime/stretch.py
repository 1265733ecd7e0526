"""The uint8 stretch of a raster, computed and applied the same way in tiling, ``segment`` and
the plugin.

uint8 rasters are used as they are. Everything else (uint16 satellite pan, int16 Landsat,
float reflectance) is mapped linearly from robust per-band percentiles to 0..255. The
percentiles come from a decimated sample (:func:`sample_shape`), so the cost does not grow
with raster size. Reading the sample is a raster library's job (rasterio in
:func:`geosam.data.tiling.stretch.compute_stretch`, GDAL in the plugin's reader); the sample
size, the percentiles and applying them are numpy alone, here, so every reader maps any
raster to the uint8 RGB a model was trained on in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (2.0, 98.0)
# A decimated read of at most this many pixels per band is enough for stable percentiles.
SAMPLE_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class Stretch:
    """A per-band linear map ``(x - low) / (high - low) * 255``, or ``method == "none"``."""

    method: str = "none"
    percentiles: tuple[float, float] = PERCENTILES
    low: tuple[float, ...] = field(default_factory=tuple)
    high: tuple[float, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        if self.method == "none":
            return {"method": "none"}
        return {
            "method": self.method,
            "percentiles": list(self.percentiles),
            "low": list(self.low),
            "high": list(self.high),
        }

    @classmethod
    def from_dict(cls, record: dict) -> Stretch:
        if record.get("method", "none") == "none":
            return cls()
        return cls(
            method=record["method"],
            percentiles=tuple(record["percentiles"]),
            low=tuple(record["low"]),
            high=tuple(record["high"]),
        )

    def apply(self, bands: np.ndarray) -> np.ndarray:
        """Map a (bands, H, W) array of the source dtype to uint8."""
        if self.method == "none":
            return bands.astype(np.uint8, copy=False)
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype=np.float32)[:, None, None] - low, 1e-6)
        scaled = (bands.astype(np.float32) - low) * (255.0 / span)
        return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def sample_shape(width: int, height: int) -> tuple[int, int]:
    """(height, width) of the decimated read of a ``width`` x ``height`` raster that the
    percentiles are computed on: at most :data:`SAMPLE_PIXELS`, the raster's aspect kept."""
    scale = max(1.0, (width * height / SAMPLE_PIXELS) ** 0.5)
    return max(1, int(height / scale)), max(1, int(width / scale))


def percentile_stretch(samples: Iterable[np.ndarray]) -> Stretch:
    """The percentile stretch of bands whose valid sampled values are ``samples`` (one 1-D
    array per band, nodata already removed); non-finite values are ignored, and a band with
    no value left maps 0..255 as it is."""
    low, high = [], []
    for sample in samples:
        values = np.asarray(sample, dtype=np.float64)
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, PERCENTILES) if values.size else (0.0, 255.0)
        low.append(float(lo))
        high.append(float(hi if hi > lo else lo + 1.0))
    return Stretch(method="percentile", low=tuple(low), high=tuple(high))
