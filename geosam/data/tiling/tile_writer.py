"""Cutting one tile: read the window, burn the parcels, write chip and mask.

This is the per-tile work that worker processes run. A worker holds its own open datasets and
receives, with each job, only the parcels that touch the tile, so its memory is bounded by one
tile whatever the size of the raster or of the labels. Workers import only this module's
dependencies (no geopandas, pandas or matplotlib), which keeps their start and memory small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.errors import RasterioIOError
from rasterio.windows import Window, bounds

from geosam.data.tiling.instances import describe_instances, rasterize_instances
from geosam.data.tiling.manifest import CHIPS, MASKS
from geosam.data.tiling.rasters import RasterSource
from geosam.utils.errors import GeosamError

# A bounded GDAL block cache keeps peak memory independent of raster size.
# Given in bytes: rasterio passes a small number straight to GDALSetCacheMax, and with a tiny
# cache GDAL's rasterizer works in tiny chunks, several times slower (docs/benchmarks.md).
GDAL_ENV = {"GDAL_CACHEMAX": 128 * 2**20, "GDAL_TIFF_INTERNAL_MASK": True}


@dataclass(frozen=True)
class TileJob:
    """One tile to cut, with the parcels (WKB, raster CRS) that touch it."""

    tile_id: str
    source: int
    window: tuple[int, int, int, int]
    split: str
    feature_ids: list
    polygons: list[bytes]


@dataclass
class TileOutcome:
    """What became of a job: "ok" with its records, or "empty" / "nodata" when skipped."""

    tile_id: str
    status: str
    tile: dict = field(default_factory=dict)
    instances: list[dict] = field(default_factory=list)


@dataclass
class TileContext:
    """Per-process state: sources, options and the datasets this process has opened."""

    sources: list[RasterSource]
    out_dir: Path
    min_area: int
    keep_empty: bool
    seed: int
    num_points: int
    _open: dict[int, rasterio.DatasetReader] = field(default_factory=dict)

    def dataset(self, index: int) -> rasterio.DatasetReader:
        if index not in self._open:
            self._open[index] = rasterio.open(self.sources[index].path)
        return self._open[index]

    def close(self) -> None:
        for ds in self._open.values():
            ds.close()
        self._open.clear()


_WORKER: TileContext | None = None


def init_worker(context: TileContext) -> None:
    """Pool initializer: this process's context and GDAL settings, for its whole life."""
    global _WORKER
    _WORKER = context
    rasterio.Env(**GDAL_ENV).__enter__()


def cut_tile_in_worker(job: TileJob) -> TileOutcome:
    assert _WORKER is not None, "init_worker was not run in this process"
    return cut_tile(job, _WORKER)


def cut_tile(job: TileJob, ctx: TileContext) -> TileOutcome:
    """Cut one tile; a read failure becomes a user error naming the raster and window."""
    source = ctx.sources[job.source]
    try:
        return _cut(job, source, ctx)
    except RasterioIOError as exc:
        raise GeosamError(
            f"cannot read raster {source.path} at window {job.window}: {str(exc).splitlines()[0]}"
        ) from None


def _cut(job: TileJob, source: RasterSource, ctx: TileContext) -> TileOutcome:
    ds = ctx.dataset(job.source)
    window = Window(*job.window)
    valid = None
    if source.has_mask:
        valid = np.all(ds.read_masks(list(source.bands), window=window) > 0, axis=0)
        if not valid.any():
            return TileOutcome(job.tile_id, "nodata")
    transform = ds.window_transform(window)
    polygons = shapely.from_wkb(job.polygons) if job.polygons else np.empty(0, dtype=object)
    shape = (int(window.height), int(window.width))
    mask, kept = rasterize_instances(list(polygons), transform, shape, valid, ctx.min_area)
    if kept.size == 0 and not ctx.keep_empty:
        return TileOutcome(job.tile_id, "empty")

    chip = source.stretch.apply(ds.read(list(source.bands), window=window))
    if chip.shape[0] == 1:
        chip = np.repeat(chip, 3, axis=0)
    if valid is not None:
        chip[:, ~valid] = 0
    write_geotiff(ctx.out_dir / CHIPS / f"{job.tile_id}.tif", chip, ds.crs, transform, valid)
    write_geotiff(ctx.out_dir / MASKS / f"{job.tile_id}.tif", mask[None], ds.crs, transform)

    tile_bounds = bounds(window, ds.transform)
    inside = shapely.within(polygons[kept], shapely.box(*tile_bounds)) if kept.size else []
    pixel_m2 = source.resolution_m[0] * source.resolution_m[1]
    instances = describe_instances(mask, job.tile_id, ctx.seed, ctx.num_points)
    for record, index, whole in zip(instances, kept, inside, strict=True):
        # a parcel reaching the chip edge may continue outside it: SAM cannot know its extent
        at_edge = min(record["box_x0"], record["box_y0"]) == 0 or (
            record["box_x1"] == shape[1] - 1 or record["box_y1"] == shape[0] - 1
        )
        record.update(
            feature_id=job.feature_ids[index],
            clipped=at_edge or not bool(whole),
            split=job.split,
            source=job.source,
            area_m2=record["area_px"] * pixel_m2,
        )
    tile = {
        "tile_id": job.tile_id,
        "source": job.source,
        "split": job.split,
        "col_off": job.window[0],
        "row_off": job.window[1],
        "width": job.window[2],
        "height": job.window[3],
        "west": tile_bounds[0],
        "south": tile_bounds[1],
        "east": tile_bounds[2],
        "north": tile_bounds[3],
        "n_instances": len(instances),
        "n_clipped": sum(r["clipped"] for r in instances),
        "nodata_fraction": 0.0 if valid is None else float(1.0 - valid.mean()),
        "chip": f"{CHIPS}/{job.tile_id}.tif",
        "mask": f"{MASKS}/{job.tile_id}.tif",
    }
    return TileOutcome(job.tile_id, "ok", tile, instances)


def write_geotiff(
    path: Path,
    array: np.ndarray,
    crs: rasterio.crs.CRS,
    transform: rasterio.Affine,
    valid: np.ndarray | None = None,
) -> None:
    count, height, width = array.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "compress": "zstd",
        "zstd_level": 1,
    }
    if min(height, width) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        if valid is not None:
            dst.write_mask(valid)
