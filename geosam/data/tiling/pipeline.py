"""``geosam tile``: rasters + parcel polygons → a tile dataset (see manifest.py for the layout).

The run validates every input before it writes anything, writes the dataset into a hidden
sibling folder and renames it into place only when it is complete (:mod:`geosam.utils.publish`),
so a failed or interrupted run never leaves a half-written dataset where training would find it.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import bounds as window_bounds
from tqdm import tqdm

import geosam
from geosam.data.tiling.grid import PlannedTile, assign_splits, check_grid_params, plan_tiles
from geosam.data.tiling.labels import ParcelLabels
from geosam.data.tiling.manifest import (
    CHIPS,
    CONVENTIONS,
    FOOTPRINTS,
    FORMAT,
    INSTANCES,
    MASKS,
    TILES,
    load_manifest,
    write_manifest,
)
from geosam.data.tiling.preview import PREVIEW, write_preview
from geosam.data.tiling.rasters import (
    RasterSource,
    describe_sources,
    expand_raster_paths,
    median_resolution,
)
from geosam.data.tiling.tile_writer import (
    GDAL_ENV,
    TileContext,
    TileJob,
    TileOutcome,
    cut_tile,
    cut_tile_in_worker,
    init_worker,
)
from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_dir, refuse_occupied

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileParams:
    """The options of ``geosam tile``; recorded verbatim in the manifest."""

    tile_size: int = 1024
    overlap: int = 128
    bands: tuple[int, ...] | None = None
    val_fraction: float = 0.2
    split_block: int = 2
    seed: int = 0
    min_area: int = 25
    keep_empty: bool = False
    num_points: int = 3
    workers: int = 1


def tile_dataset(
    rasters: Sequence[str],
    labels_path: str | Path,
    out_dir: str | Path,
    params: TileParams = TileParams(),
    *,
    layer: str | None = None,
    id_field: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build a tile dataset in ``out_dir`` and return its manifest."""
    out_dir = Path(out_dir)
    check_grid_params(params.tile_size, params.overlap, params.split_block)
    if params.workers < 1:
        raise GeosamError(f"--workers {params.workers} must be at least 1")
    refuse_occupied(out_dir, overwrite)

    with rasterio.Env(**GDAL_ENV):
        sources = describe_sources(expand_raster_paths(rasters), params.bands)
        labels = ParcelLabels(Path(labels_path), layer, id_field)
        parcels = [labels.for_raster(s) for s in sources]
        _check_overlap(labels, sources, parcels)
        planned = _plan(sources, parcels, params)
        splits = assign_splits(planned, params.val_fraction, params.seed)

        with publish_dir(out_dir) as staging:
            (staging / CHIPS).mkdir()
            (staging / MASKS).mkdir()
            jobs = _jobs(planned, splits, parcels, sources)
            outcomes = _run_jobs(jobs, len(planned), sources, staging, params, progress)
            _write_index(staging, outcomes, sources, labels, params)
    manifest = load_manifest(out_dir)
    counts = manifest["counts"]
    logger.info(
        "wrote %d tiles (%d train, %d val) with %d instances to %s",
        counts["tiles"],
        counts["train_tiles"],
        counts["val_tiles"],
        counts["instances"],
        out_dir,
    )
    return manifest


def _check_overlap(
    labels: ParcelLabels, sources: list[RasterSource], parcels: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Fail when no parcel touches any raster, showing both extents in lon/lat."""
    for source, (ids, _) in zip(sources, parcels, strict=True):
        if len(ids) == 0:
            logger.warning("no parcel touches raster %s", source.path)
    if any(len(ids) for ids, _ in parcels):
        return
    wgs84 = CRS.from_epsg(4326)
    label_box = transform_bounds(labels.crs, wgs84, *labels.bounds, densify_pts=21)
    raster_boxes = np.array(
        [transform_bounds(s.crs, wgs84, *s.bounds, densify_pts=21) for s in sources]
    )
    raster_box = (*raster_boxes[:, :2].min(axis=0), *raster_boxes[:, 2:].max(axis=0))
    fmt = "({:.5f}, {:.5f}, {:.5f}, {:.5f})".format
    raise GeosamError(
        f"labels {labels.path} overlap no raster: labels extent {fmt(*label_box)}, rasters extent "
        f"{fmt(*raster_box)} (lon/lat west, south, east, north); check both CRSs"
    )


def _plan(
    sources: list[RasterSource], parcels: list[tuple[np.ndarray, np.ndarray]], params: TileParams
) -> list[PlannedTile]:
    planned: list[PlannedTile] = []
    for index, (source, (ids, _)) in enumerate(zip(sources, parcels, strict=True)):
        if len(ids) == 0 and not params.keep_empty:
            continue
        planned.extend(
            plan_tiles(
                index,
                source.width,
                source.height,
                params.tile_size,
                params.overlap,
                params.split_block,
            )
        )
    return planned


def _jobs(
    planned: list[PlannedTile],
    splits: dict[str, str],
    parcels: list[tuple[np.ndarray, np.ndarray]],
    sources: list[RasterSource],
) -> Iterator[TileJob]:
    """Jobs in plan order, each carrying only the parcels that touch its window."""
    trees = [shapely.STRtree(polygons) for _, polygons in parcels]
    for tile in planned:
        ids, polygons = parcels[tile.source]
        box = shapely.box(*window_bounds(tile.window, sources[tile.source].affine))
        hits = np.sort(trees[tile.source].query(box, predicate="intersects"))
        yield TileJob(
            tile_id=tile.tile_id,
            source=tile.source,
            window=tuple(int(v) for v in tile.window.flatten()),
            split=splits[tile.tile_id],
            feature_ids=[_plain(v) for v in ids[hits]],
            polygons=list(shapely.to_wkb(polygons[hits])),
        )


def _plain(value: object) -> object:
    """numpy scalars → Python scalars, so ids survive pickling and Parquet alike."""
    return value.item() if isinstance(value, np.generic) else value


def _run_jobs(
    jobs: Iterator[TileJob],
    total: int,
    sources: list[RasterSource],
    staging: Path,
    params: TileParams,
    progress: bool,
) -> list[TileOutcome]:
    """Cut all tiles, in this process or in a pool of ``params.workers`` processes."""
    context = TileContext(
        sources=sources,
        out_dir=staging,
        min_area=params.min_area,
        keep_empty=params.keep_empty,
        seed=params.seed,
        num_points=params.num_points,
    )
    bar = tqdm(total=total, unit="tile", desc="tiling", disable=not progress, dynamic_ncols=True)
    outcomes: list[TileOutcome] = []
    try:
        if params.workers == 1:
            for job in jobs:
                outcomes.append(cut_tile(job, context))
                bar.update()
        else:
            # spawn: workers must not inherit GDAL state or threads from this process
            mp = multiprocessing.get_context("spawn")
            with mp.Pool(params.workers, initializer=init_worker, initargs=(context,)) as pool:
                for outcome in pool.imap_unordered(cut_tile_in_worker, jobs, chunksize=2):
                    outcomes.append(outcome)
                    bar.update()
    finally:
        bar.close()
        context.close()
    return sorted(outcomes, key=lambda o: o.tile_id)


def _write_index(
    staging: Path,
    outcomes: list[TileOutcome],
    sources: list[RasterSource],
    labels: ParcelLabels,
    params: TileParams,
) -> None:
    """Write tiles.parquet, instances.parquet, footprints.gpkg, the preview and the manifest."""
    done = [o for o in outcomes if o.status == "ok"]
    if not done:
        raise GeosamError(
            "no tile holds a parcel of at least --min-area "
            f"{params.min_area} px: check the labels or lower --min-area"
        )
    tiles = pd.DataFrame([o.tile for o in done])
    instances = pd.DataFrame([r for o in done for r in o.instances])
    tiles.to_parquet(staging / TILES, index=False)
    instances.to_parquet(staging / INSTANCES, index=False)
    _footprints(tiles, sources, labels.crs).to_file(
        staging / FOOTPRINTS, layer="footprints", engine="pyogrio"
    )
    write_preview(staging, tiles, instances)

    per_source = tiles.groupby("source").size().reindex(range(len(sources)), fill_value=0)
    counts = {
        "tiles": len(tiles),
        "train_tiles": int((tiles["split"] == "train").sum()),
        "val_tiles": int((tiles["split"] == "val").sum()),
        "instances": len(instances),
        "train_instances": int((instances.get("split") == "train").sum()) if len(instances) else 0,
        "val_instances": int((instances.get("split") == "val").sum()) if len(instances) else 0,
        "clipped_instances": int(instances["clipped"].sum()) if len(instances) else 0,
        "skipped_empty": sum(o.status == "empty" for o in outcomes),
        "skipped_nodata": sum(o.status == "nodata" for o in outcomes),
    }
    if counts["val_tiles"] == 0 and params.val_fraction > 0:
        logger.warning("no validation tiles: use a smaller --split-block or more rasters")
    parameters = asdict(params)
    parameters["bands"] = list(params.bands) if params.bands else None
    manifest = {
        "format": FORMAT,
        "geosam_version": geosam.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameters": parameters,
        "chip": {"dtype": "uint8", "bands": 3, "band_order": "RGB"},
        "ground_resolution_m": median_resolution(sources, per_source.tolist()),
        "labels": labels.to_manifest(),
        "sources": [
            {**s.to_manifest(), "tiles": int(n)} for s, n in zip(sources, per_source, strict=True)
        ],
        "counts": counts,
        "files": {
            "tiles": TILES,
            "instances": INSTANCES,
            "footprints": FOOTPRINTS,
            "chips": CHIPS,
            "masks": MASKS,
            "preview": PREVIEW,
        },
        "conventions": CONVENTIONS,
    }
    write_manifest(staging, manifest)


def _footprints(tiles: pd.DataFrame, sources: list[RasterSource], crs: CRS) -> gpd.GeoDataFrame:
    """Tile outlines in the labels' CRS, one layer whatever the rasters' CRSs, for QGIS."""
    parts = []
    for index, group in tiles.groupby("source"):
        boxes = shapely.box(group["west"], group["south"], group["east"], group["north"])
        frame = gpd.GeoDataFrame(
            {
                "tile_id": group["tile_id"].to_numpy(),
                "split": group["split"].to_numpy(),
                "source": Path(sources[index].path).name,
                "n_inst": group["n_instances"].to_numpy(),
                "n_clipped": group["n_clipped"].to_numpy(),
                "chip": group["chip"].to_numpy(),
            },
            geometry=boxes,
            crs=sources[index].crs,
        )
        parts.append(frame.to_crs(crs))
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=crs)
