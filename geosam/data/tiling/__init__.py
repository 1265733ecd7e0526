"""Raster + parcel polygons → tile dataset. No torch here: ``geosam tile`` runs without it.

The package namespace is lazy: tiling worker processes import only
:mod:`geosam.data.tiling.tile_writer` and must not pay for geopandas and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from geosam.data.tiling.manifest import FORMAT, load_manifest

__all__ = ["FORMAT", "TileParams", "load_manifest", "tile_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("TileParams", "tile_dataset"):
        return getattr(importlib.import_module("geosam.data.tiling.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
