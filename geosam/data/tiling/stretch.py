"""The dtype stretch that turns any raster into the uint8 RGB SAM was trained on.

uint8 rasters are used as they are. Everything else (uint16 satellite pan, int16 Landsat,
float reflectance) is mapped linearly from robust per-band percentiles to 0..255. The
percentiles are computed once per raster from a decimated sample, so the cost does not grow
with raster size, and recorded in the manifest so export and inference apply the same mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio

# A decimated read of at most this many pixels per band is enough for stable percentiles.
SAMPLE_PIXELS = 1024 * 1024
PERCENTILES = (2.0, 98.0)


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


def compute_stretch(ds: rasterio.DatasetReader, bands: Sequence[int]) -> Stretch:
    """Robust percentiles of each selected band over its valid pixels (uint8: no stretch)."""
    if ds.dtypes[bands[0] - 1] == "uint8" and all(ds.dtypes[b - 1] == "uint8" for b in bands):
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
