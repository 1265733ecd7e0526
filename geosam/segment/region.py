"""``geosam segment --auto`` over a region: many rasters, in blocks, on Dask, resumable.

The steps, each checked before the next costs anything:

1. the rasters (files, folders, globs, VRTs: expanded as ``geosam tile`` does,
   :func:`~geosam.data.tiling.rasters.expand_raster_paths`) are opened and checked against
   the model; an unreadable one, one without a CRS or with bands the model cannot read
   stops the run, naming it (``skip_bad``: a warning and a count instead);
2. each raster's tiling is cut into blocks (:mod:`geosam.segment.blocks`), the blocks not
   already finished by an interrupted run (:mod:`geosam.segment.parts`) are run where
   ``options.engine`` says (:mod:`geosam.segment.dask_run`) and kept as they finish;
3. per raster, border parcels are merged across blocks; across rasters, on seams, in the
   output CRS (:mod:`geosam.segment.seams`); the coverage is simplified once, areas
   measured, a ``source`` column names each parcel's raster, and the file is published
   atomically. The parts are removed only then.

One raster in one block is exactly the single-raster loop of :mod:`geosam.segment.auto`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS

from geosam.data.tiling.rasters import RasterSource, expand_raster_paths
from geosam.runtime import SamModel
from geosam.runtime.auto import DEFAULT_MIN_AREA_M2, AutoParams, Tiling, choose_thresholds
from geosam.runtime.reasons import EMPTY, describe_counts
from geosam.runtime.windows import GeoTransform
from geosam.segment.auto import simplified
from geosam.segment.blocks import (
    BlockParcels,
    BlockTask,
    blocks,
    cached_model,
    manifest_model,
    merge_blocks,
    segmenter_for,
)
from geosam.segment.dask_run import Engine, run_blocks
from geosam.segment.parts import PARTS_FORMAT, Parts
from geosam.segment.pipeline import SegmentParams, SegmentResult, open_readers, prepare_output
from geosam.segment.polygons import geodesic_area, grid_to_map, write_features
from geosam.segment.seams import merge_seams
from geosam.utils.errors import GeosamError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionOptions:
    """How a region runs: ``engine`` (workers or a scheduler), ``block_windows`` (a block
    is that many windows per side), ``skip_bad`` (warn about and count rasters that cannot
    be read instead of stopping), ``overwrite`` (discard parts of a run with other
    settings)."""

    engine: Engine = field(default_factory=Engine)
    block_windows: int = 4
    skip_bad: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.block_windows < 1:
            raise GeosamError(f"--block-windows must be 1 or more, got {self.block_windows}")


@dataclass
class RegionResult(SegmentResult):
    """:class:`SegmentResult` plus the region's totals."""

    rasters: int = 0
    bad: int = 0
    empty: int = 0
    km2: float = 0.0
    seconds: float = 0.0
    peaks: dict[str, int] = field(default_factory=dict)


@dataclass
class _Raster:
    """What the client keeps of a raster: its description and tiling, not an open file (a
    region may have more rasters than a process may open)."""

    path: Path
    source: RasterSource
    tiling: Tiling
    params: AutoParams
    grid_transform: GeoTransform
    tasks: list[BlockTask]


def segment_region(
    rasters: str | Path | Sequence[str | Path],
    model_dir: Path,
    output: Path,
    params: SegmentParams | None = None,
    auto: AutoParams | None = None,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    min_hole_m2: float = DEFAULT_MIN_AREA_M2,
    thresholds: Mapping[str, float] | None = None,
    options: RegionOptions | None = None,
    progress: bool = True,
) -> RegionResult:
    """Every parcel of ``rasters`` with the model in ``model_dir``, written to ``output``
    with ``score``, ``stability``, ``area_m2`` and ``source``; the arguments are
    :func:`~geosam.segment.auto.segment_auto`'s, plus ``options`` (see module doc)."""
    started = time.perf_counter()
    params, auto, options = (
        params or SegmentParams(),
        auto or AutoParams(),
        options or RegionOptions(),
    )
    for option, value in (("--min-area", min_area_m2), ("--min-hole", min_hole_m2)):
        if value < 0:
            raise GeosamError(f"{option} must be 0 or more m², got {value:g}")
    driver, out_crs = prepare_output(output, params)
    paths = expand_raster_paths(rasters)
    engine = options.engine
    # a LocalCluster has a process per core: one thread each unless the user said otherwise
    threads = params.threads or (1 if engine.scheduler is None and not engine.in_process else None)
    template = BlockTask(
        "", "", (0, 0), options.block_windows, str(model_dir), auto, min_area_m2,
        min_hole_m2, params.min_score, params.window.max_upsample, threads, params.flip_tta,
    )  # fmt: skip
    if engine.in_process:
        model = cached_model(template.model_dir, threads, params.flip_tta)
    else:
        model = manifest_model(template.model_dir, params.flip_tta)
    auto, chosen = choose_thresholds(auto, model.manifest, model.manifest_source, thresholds or {})
    logger.info("%s", chosen)
    template = replace(template, params=auto)
    plan = _plan(paths, template, model, options.skip_bad)
    if out_crs is None:
        out_crs = plan[0].source.crs
        logger.info("output CRS: %s (the first raster's; --crs for another)", out_crs.name)
    parts = Parts(output, _settings(template, plan, model.manifest), options.overwrite)
    result = RegionResult(
        output, prompts=0, polygons=0, rasters=len(plan), bad=len(paths) - len(plan)
    )
    merged = _run_and_merge(plan, parts, engine, out_crs, result, progress)
    frame = _collect(merged, out_crs, result, params, auto)
    frame["area_m2"] = geodesic_area(frame.geometry.to_numpy(), frame.crs)
    result.renamed = write_features(
        frame[["score", "stability", "area_m2", "source", "geometry"]], output, driver
    )
    result.polygons = len(frame)
    parts.remove()
    result.seconds = time.perf_counter() - started
    return result


def _plan(
    paths: Sequence[Path], template: BlockTask, model: SamModel, skip_bad: bool
) -> list[_Raster]:
    """Each raster opened and checked (:func:`~geosam.segment.pipeline.open_readers`), with
    its blocks as tasks keyed by raster and block."""

    def open_one(path: Path) -> _Raster:
        segmenter = segmenter_for(replace(template, raster=str(path)), model)
        return _Raster(
            path,
            segmenter.reader.source,
            segmenter.tiling,
            segmenter.params,
            segmenter.grid_transform,
            [],
        )

    plan = open_readers(paths, open_one, skip_bad)
    for index, raster in enumerate(plan):
        task = replace(template, raster=str(raster.path))
        raster.tasks = [
            replace(task, key=f"{index:05d}-{row:04d}-{col:04d}", block=(row, col))
            for row, col in blocks(raster.tiling, template.side)
        ]
    return plan


def _run_and_merge(
    plan: Sequence[_Raster],
    parts: Parts,
    engine: Engine,
    out_crs: CRS,
    result: RegionResult,
    progress: bool,
) -> list[_Merged]:
    """Every raster's parcels, blocks merged: the blocks an interrupted run finished are
    loaded, the others run on ``engine`` and saved as they arrive; a raster is merged as soon
    as its last block is in, while the workers run the next rasters' blocks, so that only
    the last raster's merge waits at the end."""
    tasks = [task for raster in plan for task in raster.tasks]
    finished = parts.finished() & {task.key for task in tasks}
    results = {key: parts.load(key) for key in finished}
    if finished:
        logger.info("resuming: %d of %d blocks already finished", len(finished), len(tasks))
    owner = {task.key: index for index, raster in enumerate(plan) for task in raster.tasks}
    remaining = Counter(owner[task.key] for task in tasks if task.key not in finished)
    merged = {
        index: _merge_raster(raster, results, out_crs, result)
        for index, raster in enumerate(plan)
        if not remaining[index]
    }

    def done(parcels: BlockParcels) -> None:
        parts.save(parcels)
        results[parcels.key] = parcels
        index = owner[parcels.key]
        remaining[index] -= 1
        if not remaining[index]:
            merged[index] = _merge_raster(plan[index], results, out_crs, result)

    run_blocks([task for task in tasks if task.key not in finished], engine, done, progress)
    return [merged[index] for index in range(len(plan))]


def _settings(template: BlockTask, plan: Sequence[_Raster], manifest: Mapping) -> dict:
    """What the parcels of a block depend on: a parts folder of other settings is refused."""
    files = manifest.get("files") or manifest
    model_hash = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    settings = asdict(replace(template, key="", raster="", model_dir="", threads=None))
    return {
        "format": PARTS_FORMAT,
        "rasters": [str(r.path) for r in plan],
        "model": model_hash,
        "blocks": settings,
    }


@dataclass
class _Merged:
    """One raster's parcels, blocks merged, in the output CRS; its footprint there, and the
    size of one of its pixels (the seams' tolerance)."""

    source: str
    frame: gpd.GeoDataFrame
    footprint: shapely.Geometry
    pixel: float


def _merge_raster(
    raster: _Raster, results: Mapping[str, BlockParcels], out_crs: CRS, result: RegionResult
) -> _Merged:
    """The parcels of ``raster`` from its finished blocks, with its totals counted into
    ``result``."""
    done = [results[task.key] for task in raster.tasks]
    for parcels in done:
        result.encoded += parcels.windows
        result.prompts += parcels.prompts
        result.skipped.update(parcels.dropped)
        result.peaks[parcels.worker] = max(result.peaks.get(parcels.worker, 0), parcels.peak_rss)
    by_block = {task.block: parcels for task, parcels in zip(raster.tasks, done, strict=True)}
    found = merge_blocks(
        raster.tiling, raster.tasks[0].side, raster.params, by_block, result.skipped
    )
    source = raster.source
    frame = gpd.GeoDataFrame(
        {"score": [p[1] for p in found], "stability": [p[2] for p in found]},
        geometry=[grid_to_map(p[0], raster.grid_transform) for p in found],
        crs=source.crs,
    )
    frame["source"] = str(raster.path)
    result.empty += frame.empty
    footprint = gpd.GeoSeries([shapely.box(*source.bounds)], crs=source.crs)
    result.km2 += float(geodesic_area(footprint.to_numpy(), source.crs)[0]) / 1e6
    footprint = footprint.to_crs(out_crs)
    pixel = (shapely.area(footprint.iloc[0]) / max(source.width * source.height, 1)) ** 0.5
    return _Merged(str(raster.path), frame.to_crs(out_crs), footprint.iloc[0], pixel)


def _collect(
    merged: Sequence[_Merged],
    out_crs: CRS,
    result: RegionResult,
    params: SegmentParams,
    auto: AutoParams,
) -> gpd.GeoDataFrame:
    """The region's parcels in ``out_crs``: the rasters' parcels joined on seams and
    simplified as one coverage."""
    frame = gpd.GeoDataFrame(pd.concat([m.frame for m in merged], ignore_index=True), crs=out_crs)
    footprints = {m.source: m.footprint for m in merged}
    tolerance = max(m.pixel for m in merged)
    frame = merge_seams(frame, footprints, tolerance, auto.nms_iou, auto.coverage)
    frame = frame.set_geometry(simplified(list(frame.geometry), params.simplify, auto.coverage))
    empty = frame.geometry.is_empty.to_numpy()
    result.skipped[EMPTY] += int(empty.sum())
    if result.empty:
        logger.warning(
            "no parcel found on %d of %d rasters (masks dropped: %s)",
            result.empty,
            len(merged),
            describe_counts(result.skipped) or "none",
        )
    return frame[~empty].reset_index(drop=True)
