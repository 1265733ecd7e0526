"""A region's unit of work: a block of windows of one raster, run anywhere, merged on return.

A raster's automatic-mode tiling (:func:`geosam.runtime.auto.raster_tiling`) is cut into
blocks of ``side`` x ``side`` windows. A block runs the runtime's window loop over its own
windows only (:func:`run_block`, on a Dask worker or in-process) and hands back polygons, not
masks: what a client keeps of a region is its parcels. Blocks need no halo: neighbouring
windows overlap, so the first window of a block overlaps the last of its neighbour exactly as
two windows inside one block do, which is the overlap the window join needs.

A parcel whose box reaches into another block's windows is a *border* parcel: a piece cut by
the block edge, or a parcel the neighbour may also find. Those are merged on the client by
the same :class:`~geosam.runtime.auto.MaskMerger` that joins windows, with blocks in the
place of windows (:func:`merge_blocks`): a block is a large window, its parcels are that
window's candidates, so pieces are joined by :func:`~geosam.runtime.masks.seen_alike`,
duplicates suppressed and contested pixels claimed by the rules the window loop uses. A
border parcel travels as its outline in whole grid pixels and, for that merge, its mask
(bit-packed: an eighth of a byte per pixel of its box, and no rasterizing back on the
client); one that the merge leaves as it was keeps its outline. Every other parcel is final
where it was found.

Each block's result is the same wherever it runs, so ``--workers 1`` and ``--workers N``
give the same parcels.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import shapely

from geosam.runtime import SamModel
from geosam.runtime.auto import AutoParams, AutoSegmenter, MaskMerger, TileWindow, Tiling
from geosam.runtime.masks import AutoMask, GridBox, bounds, intersection
from geosam.runtime.model import DECODER, ENCODER, MANIFEST, check_files, read_manifest
from geosam.runtime.reasons import EMPTY
from geosam.runtime.windows import Window
from geosam.segment.polygons import grid_polygon
from geosam.segment.reader import WindowReader

# The tiling grid's own pixels as coordinates: block parcels travel in them, exact integers.
GRID_PIXELS = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
BlockIndex = tuple[int, int]


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker needs to run block ``block`` (row, column of blocks) of
    ``raster``: picklable, small, and the same for every run of the same settings."""

    key: str
    raster: str
    block: BlockIndex
    side: int
    model_dir: str
    params: AutoParams
    min_area_m2: float
    min_hole_m2: float
    min_score: float | None
    max_upsample: float
    threads: int | None
    flip_tta: bool


@dataclass
class BlockParcels:
    """What a block hands back: one row per parcel (``wkb`` in grid pixels, ``score``,
    ``stability``, ``border``, ``cut``, ``box``, ``seen``), and what it cost."""

    key: str
    rows: list[dict] = field(default_factory=list)
    windows: int = 0
    prompts: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    worker: str = ""
    peak_rss: int = 0


def block_grid(tiling: Tiling, side: int) -> tuple[int, int]:
    """(rows, columns) of blocks of ``side`` x ``side`` windows over ``tiling``."""
    return -(-len(tiling.ys) // side), -(-len(tiling.xs) // side)


def block_windows(tiling: Tiling, side: int, block: BlockIndex) -> list[TileWindow]:
    """The windows of ``block``, in raster order, as the whole raster's tiling has them
    (so an edge between two blocks is an inner edge: a mask touching it is cut)."""
    rows = range(block[0] * side, min((block[0] + 1) * side, len(tiling.ys)))
    cols = range(block[1] * side, min((block[1] + 1) * side, len(tiling.xs)))
    return [tile for tile in tiling.windows() if tile.row in rows and tile.col in cols]


def block_tile(tiling: Tiling, side: int, block: BlockIndex) -> TileWindow:
    """``block`` as one large window for :class:`MaskMerger` (only its box counts)."""
    x0, y0, x1, y1 = bounds([tile.box for tile in block_windows(tiling, side, block)])
    outside = Window(0, 0, 0, 0, y1 - y0, x1 - x0)
    return TileWindow(block[0], block[1], outside, (x0, y0), (False,) * 4)


def block_layout(tiling: Tiling, side: int) -> Tiling:
    """A tiling whose windows start where blocks do: :meth:`Tiling.reaches_later` then says
    whether a later *block* may reach a box."""
    return replace(tiling, xs=tiling.xs[::side], ys=tiling.ys[::side])


def blocks(tiling: Tiling, side: int) -> Iterator[BlockIndex]:
    """The blocks of ``tiling`` in raster order."""
    rows, cols = block_grid(tiling, side)
    for row in range(rows):
        for col in range(cols):
            yield row, col


@functools.lru_cache(maxsize=2)
def cached_model(model_dir: str, threads: int | None, flip_tta: bool) -> SamModel:
    """The model, loaded once per process: a worker runs many blocks with it."""
    return SamModel.load(model_dir, threads=threads, flip_tta=flip_tta)


@functools.lru_cache(maxsize=2)
def manifest_model(model_dir: str, flip_tta: bool) -> SamModel:
    """The model as the client of a cluster needs it: its manifest and sizes (to read rasters
    the way the model expects and lay out their tilings), without the ONNX sessions, which
    only workers run (a ViT-H encoder is gigabytes the client need not hold). The files are
    checked as :meth:`SamModel.load` checks them; a folder without a manifest (another
    tool's export) has its sizes in the ONNX files only, and is loaded whole."""
    folder = Path(model_dir)
    if not (folder / MANIFEST).is_file():
        return cached_model(model_dir, None, flip_tta)
    manifest = read_manifest(folder / MANIFEST)
    check_files(folder, manifest, (ENCODER, DECODER), verify_hashes=False)
    return SamModel(None, None, manifest, folder, flip_tta)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4)
def cached_reader(raster: str, model: SamModel) -> WindowReader:
    """The raster, opened and checked once per process (its stretch is sampled on opening)."""
    return WindowReader(Path(raster), model.manifest)


def segmenter_for(task: BlockTask, model: SamModel | None = None) -> AutoSegmenter:
    """The raster's automatic-mode loop, as every block of it and the client build it
    (``model``: the one to use, by default the worker's cached one)."""
    model = model or cached_model(task.model_dir, task.threads, task.flip_tta)
    return AutoSegmenter(
        model,
        cached_reader(task.raster, model),
        task.params,
        task.min_area_m2,
        task.min_score,
        task.max_upsample,
        task.min_hole_m2,
    )


def run_block(task: BlockTask) -> BlockParcels:
    """Automatic mode over the windows of one block: its parcels as grid-pixel polygons.

    The merger keeps parcels of any size here (``min_area_px`` 0): a small piece at the
    block edge may be part of a large parcel, measured once the client has joined it; and
    it knows only the block's windows, so a piece cut at the block edge is not an open
    piece until the client has seen the next block's. A parcel that reaches no other block
    is final, and measured here."""
    model = cached_model(task.model_dir, task.threads, task.flip_tta)
    segmenter = segmenter_for(task, model)
    params = segmenter.params
    area = block_tile(segmenter.tiling, task.side, task.block).box
    merger = MaskMerger(segmenter.tiling, replace(params, min_area_px=0.0), task.min_score, area)
    final: list[AutoMask] = []
    try:
        for tile in block_windows(segmenter.tiling, task.side, task.block):
            found = merger.found(tile) if params.skip_found else None
            final += merger.add(tile, segmenter.candidates(tile, found))
        final += merger.flush()
        if params.fine_pass:
            final += segmenter.fine_parcels(final, area)
    finally:
        cached_reader(task.raster, model).close()  # and GDAL's cached blocks of it
    result = BlockParcels(task.key, windows=segmenter.encoded, prompts=segmenter.prompts)
    result.dropped.update(segmenter.dropped)
    result.dropped.update(merger.dropped)
    others = [
        block_tile(segmenter.tiling, task.side, other).box
        for other in blocks(segmenter.tiling, task.side)
        if other != task.block
    ]
    for mask in final:
        border = any(intersection(mask.box, other) for other in others)
        if not border and mask.area < max(params.min_area_px, 1):
            result.dropped["area"] += 1
            continue
        polygon = grid_polygon(mask.mask, mask.box[:2], GRID_PIXELS, params.coverage)
        if polygon is None:
            result.dropped[EMPTY] += 1
            continue
        result.rows.append(parcel_row(mask, polygon, border))
    result.worker, result.peak_rss = f"{socket.gethostname()}:{os.getpid()}", peak_memory()
    return result


def parcel_row(mask: AutoMask, polygon: shapely.Geometry, border: bool) -> dict:
    return {
        "wkb": shapely.to_wkb(polygon),
        "score": mask.score,
        "stability": mask.stability,
        "border": border,
        "cut": mask.cut,
        "fine": mask.fine,
        "bits": np.packbits(mask.mask).tobytes() if border else None,
        "box": list(mask.box),
        "seen": [list(box) for box in mask.seen],
    }


def peak_memory() -> int:
    """This process's peak resident memory in bytes (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def row_mask(row: Mapping) -> AutoMask:
    """A border parcel back on the tiling grid, as its block found it."""
    box: GridBox = tuple(row["box"])
    shape = (box[3] - box[1], box[2] - box[0])
    bits = np.frombuffer(row["bits"], np.uint8)
    mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
    seen = tuple(tuple(b) for b in row["seen"])
    return AutoMask(box, mask, row["score"], row["stability"], seen, row["cut"], row["fine"])


def merge_blocks(
    tiling: Tiling,
    side: int,
    params: AutoParams,
    results: Mapping[BlockIndex, BlockParcels],
    dropped: Counter[str],
) -> list[tuple[shapely.Geometry, float, float]]:
    """The parcels of one raster from its blocks' results: (polygon in grid pixels, score,
    stability). Border parcels go through :class:`MaskMerger` block by block, in raster
    order (``params`` with its areas in grid pixels); the rest are kept as they came."""
    merger = MaskMerger(block_layout(tiling, side), params)
    parcels, final = [], []
    outlines: dict[GridBox, list[tuple[AutoMask, bytes]]] = {}
    for block in blocks(tiling, side):
        rows = results[block].rows
        parcels += [
            (shapely.from_wkb(r["wkb"]), r["score"], r["stability"])
            for r in rows
            if not r["border"]
        ]
        edge = [(row_mask(r), r["wkb"]) for r in rows if r["border"]]
        for mask, wkb in edge:
            outlines.setdefault(mask.box, []).append((mask, wkb))
        final += merger.add(block_tile(tiling, side, block), [mask for mask, _ in edge])
    final += merger.flush()
    dropped.update(merger.dropped)
    for mask in final:
        polygon = _kept_outline(mask, outlines.get(mask.box, ())) or grid_polygon(
            mask.mask, mask.box[:2], GRID_PIXELS, params.coverage
        )
        if polygon is None:
            dropped[EMPTY] += 1
            continue
        parcels.append((polygon, mask.score, mask.stability))
    return parcels


def _kept_outline(
    mask: AutoMask, found: Sequence[tuple[AutoMask, bytes]]
) -> shapely.Geometry | None:
    """The outline its block traced for ``mask`` when the merge left it as it was (same box,
    same pixels): tracing it again would give the same polygon, at most of the merge's cost."""
    for original, wkb in found:
        if np.array_equal(original.mask, mask.mask):
            return shapely.from_wkb(wkb)
    return None
