"""The uint8 stretch of a raster, applied the same way in tiling, ``segment`` and the plugin.

Computing the stretch needs a raster reader (:func:`geosam.data.tiling.stretch.compute_stretch`);
applying it is numpy alone, so the torch- and rasterio-free runtime can map any raster to the
uint8 RGB a model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
