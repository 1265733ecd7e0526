"""A tile dataset's val split put back together as regions, for tuning automatic mode.

Automatic mode's thresholds are tuned on what training never saw, the val split, but a val
chip is exactly one window of a model tuned at the chip size: on it every parcel is either
whole or clipped at the chip's edge, and a loose mask that fills a clipped piece matches it.
On a user's raster the same mask is a piece cut at an inner window edge, a false parcel. Tuned
on chips, the filters come out looser than whole rasters want (docs/benchmarks.md, session
10). So the val tiles of each source raster are joined back into the regions they were cut
from: each connected group of val tiles is one raster, the bounding rectangle of the group,
in which pixels no val tile covers are nodata (train pixels, or tiles tiling skipped as empty).
Automatic mode runs over a region with its own overlapping windows, as it runs over a user's
raster, and parcels are clipped only at the region's edge.

The pixels are the chips' (already stretched to uint8 RGB), not the source rasters', so a
dataset can be tuned on wherever it is copied without its sources. The truth is the chips'
instance masks with each instance renumbered to its parcel (the label feature it was burned
from), so a parcel spread over several tiles is one true parcel of the region.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine

from geosam.data.tiling.manifest import INSTANCES, TILES, load_manifest


@dataclass(frozen=True)
class ValRegion:
    """One region written as two GeoTIFFs on the same grid: the image (uint8 RGB, nodata
    where no val tile lies) and its true parcels (uint32, 0: no parcel), and how many val
    tiles it joins."""

    image: Path
    truth: Path
    tiles: int


def val_regions(dataset: Path, split: str, out_dir: Path) -> list[ValRegion]:
    """Every region of ``split`` in ``dataset``, written under ``out_dir``, sources in the
    index's order."""
    load_manifest(dataset)
    tiles = pd.read_parquet(dataset / TILES)
    tiles = tiles.loc[tiles["split"] == split]
    columns = ["tile_id", "instance_id", "feature_id"]
    instances = pd.read_parquet(dataset / INSTANCES, columns=columns)
    instances = instances.loc[instances["tile_id"].isin(tiles["tile_id"])]
    # Parcel numbers from 1 over the whole split: feature ids may be strings.
    instances = instances.assign(parcel=pd.factorize(instances["feature_id"])[0] + 1)
    parcels = {tile_id: group for tile_id, group in instances.groupby("tile_id")}
    regions: list[ValRegion] = []
    for _, group in tiles.groupby("source", sort=False):
        boxes = shapely.box(
            group["col_off"],
            group["row_off"],
            group["col_off"] + group["width"],
            group["row_off"] + group["height"],
        )
        for part in shapely.get_parts(shapely.union_all(boxes)):
            members = group.loc[shapely.covered_by(boxes, part)]
            name = out_dir / f"region{len(regions):04d}"
            regions.append(write_region(dataset, members, parcels, name))
    return regions


def write_region(
    dataset: Path, tiles: pd.DataFrame, parcels: dict[str, pd.DataFrame], name: Path
) -> ValRegion:
    """The val ``tiles`` of one connected group mosaicked into ``name``-image.tif and
    ``name``-truth.tif, with each tile's instances renumbered by ``parcels`` (tile id →
    its instance ids and parcel numbers)."""
    col0, row0 = int(tiles["col_off"].min()), int(tiles["row_off"].min())
    width = int((tiles["col_off"] + tiles["width"]).max()) - col0
    height = int((tiles["row_off"] + tiles["height"]).max()) - row0
    with rasterio.open(dataset / tiles["chip"].iloc[0]) as first:
        profile, colours = first.profile, first.colorinterp
        transform = first.transform * Affine.translation(
            col0 - tiles["col_off"].iloc[0], row0 - tiles["row_off"].iloc[0]
        )
    image = np.zeros((profile["count"], height, width), dtype=profile["dtype"])
    truth = np.zeros((height, width), dtype=np.uint32)
    valid = np.zeros((height, width), dtype=bool)
    for tile in tiles.itertuples():
        rows = slice(tile.row_off - row0, tile.row_off - row0 + tile.height)
        cols = slice(tile.col_off - col0, tile.col_off - col0 + tile.width)
        with rasterio.open(dataset / tile.chip) as chip:
            image[:, rows, cols] = chip.read()
            valid[rows, cols] |= chip.dataset_mask() > 0
        with rasterio.open(dataset / tile.mask) as ds:
            mask = ds.read(1)
        # An instance below tiling's minimum area in one tile may be whole in its neighbour:
        # only a tile's parcels are written, never its background over a neighbour's parcel.
        lookup = np.zeros(int(mask.max()) + 1, dtype=np.uint32)
        own = parcels.get(tile.tile_id)
        if own is not None:
            known = own["instance_id"].to_numpy() <= mask.max()
            lookup[own["instance_id"].to_numpy()[known]] = own["parcel"].to_numpy()[known]
        numbered = lookup[mask]
        np.copyto(truth[rows, cols], numbered, where=numbered > 0)
    grid = {"driver": "GTiff", "crs": profile["crs"], "transform": transform}
    image_path, truth_path = (
        name.with_name(f"{name.name}-{part}.tif") for part in ("image", "truth")
    )
    region = ValRegion(image_path, truth_path, len(tiles))
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(region.image, "w", **grid, **_shape(image)) as out,
    ):
        out.write(image)
        out.colorinterp = colours
        if not valid.all():
            out.write_mask(valid.astype(np.uint8) * 255)
    truth = np.where(valid, truth, 0)[None]
    with rasterio.open(region.truth, "w", **grid, **_shape(truth)) as out:
        out.write(truth)
    return region


def _shape(array: np.ndarray) -> dict[str, int | str]:
    """Creation options of a GeoTIFF holding ``array`` (bands, rows, columns)."""
    count, height, width = array.shape
    return {"count": count, "height": height, "width": width, "dtype": array.dtype.name}
