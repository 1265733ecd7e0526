"""Raster + parcel polygons → tile dataset. No torch here: ``geosam tile`` runs without it."""

from geosam.data.tiling.manifest import FORMAT, load_manifest
from geosam.data.tiling.pipeline import TileParams, tile_dataset

__all__ = ["FORMAT", "TileParams", "load_manifest", "tile_dataset"]
