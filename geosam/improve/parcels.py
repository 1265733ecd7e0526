"""The user's corrected parcels: checked against the raster, and split into the parcels the
model trains on and the ones held aside to score it.

No torch here: the QGIS plugin refuses bad parcels before it starts the CLI, with the same
rules (its own copy in OGR terms), and the CLI checks them again before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely

from geosam.utils.errors import GeosamError

# Fewer parcels than this cannot both train a model and score it: with the default 20 %
# held aside, 10 parcels leave 8 to train on and 2 to measure.
MIN_PARCELS = 10


@dataclass(frozen=True)
class ParcelSplit:
    """The parcels to train on and the ones held aside, in the parcels' CRS."""

    train: gpd.GeoDataFrame
    held_aside: gpd.GeoDataFrame


def read_parcels(path: Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """The polygons of ``path`` (any vector format), empty and non-polygon features dropped;
    a file that cannot be read, has no CRS or no polygon is one line naming it."""
    if not path.is_file():
        raise GeosamError(f"--parcels {path} not found")
    try:
        parcels = gpd.read_file(path, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ValueError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GeosamError(f"--parcels {path} cannot be read: {reason}") from None
    if parcels.crs is None:
        raise GeosamError(f"--parcels {path} has no CRS: assign one (e.g. in QGIS) and retry")
    polygonal = parcels.geometry.notna() & parcels.geom_type.isin(["Polygon", "MultiPolygon"])
    return parcels.loc[polygonal & ~parcels.geometry.is_empty].reset_index(drop=True)


def check_parcels(parcels: gpd.GeoDataFrame, raster: Path, source: Path) -> None:
    """Refuse too few parcels (:data:`MIN_PARCELS`) and parcels that do not touch ``raster``'s
    extent: each one line naming ``source`` (the parcels' file)."""
    if len(parcels) < MIN_PARCELS:
        raise GeosamError(
            f"--parcels {source} has {len(parcels)} parcel polygons: improving the model needs "
            f"at least {MIN_PARCELS} (some to train on, some held aside to score it)"
        )
    if not raster.is_file():
        raise GeosamError(f"--raster {raster} not found")
    with rasterio.open(raster) as src:
        if src.crs is None:
            raise GeosamError(f"--raster {raster} has no CRS: it cannot be matched to parcels")
        extent = shapely.box(*src.bounds)
        crs = src.crs
    outside = ~parcels.to_crs(crs).intersects(extent)
    if outside.any():
        raise GeosamError(
            f"{int(outside.sum())} of the {len(parcels)} parcels in --parcels {source} lie "
            f"outside --raster {raster}: give the raster they were drawn on"
        )


def split_parcels(parcels: gpd.GeoDataFrame, holdout: float, seed: int) -> ParcelSplit:
    """A seeded ``holdout`` share of ``parcels`` held aside (at least one), the rest to train
    on (at least one): the same parcels for the same seed."""
    if not 0.0 < holdout < 1.0:
        raise GeosamError(f"--holdout {holdout} must be between 0 and 1 (a share of parcels)")
    count = len(parcels)
    held = min(count - 1, max(1, round(holdout * count)))
    order = np.random.default_rng(seed).permutation(count)
    aside = np.zeros(count, dtype=bool)
    aside[order[:held]] = True
    return ParcelSplit(parcels.loc[~aside], parcels.loc[aside])
