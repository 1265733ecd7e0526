"""Where the tiles go, and which split each one belongs to.

Each raster is cut into square *split blocks*; tiles overlap only inside a block and abut at
block borders. A block goes to train or val as a whole, so two overlapping tiles always share a
split and no pixel of a validation tile was seen in training. Which blocks go to val is a seeded
shuffle, so the split is deterministic for a seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geosam.utils.errors import GeosamError


@dataclass(frozen=True)
class PlannedTile:
    """One tile window of one source raster, with its split block."""

    source: int
    block: tuple[int, int]
    window: Window

    @property
    def tile_id(self) -> str:
        return f"s{self.source:03d}_y{int(self.window.row_off):06d}_x{int(self.window.col_off):06d}"


def check_grid_params(tile_size: int, overlap: int, split_block: int) -> None:
    """Reject grid options that cannot produce a tiling, naming the option."""
    if tile_size < 32:
        raise GeosamError(f"--tile-size {tile_size} is too small: use at least 32 px")
    if not 0 <= overlap < tile_size:
        raise GeosamError(
            f"--overlap {overlap} must be at least 0 and smaller than --tile-size {tile_size}"
        )
    if split_block < 1:
        raise GeosamError(f"--split-block {split_block} must be at least 1 tile")


def axis_starts(length: int, tile: int, overlap: int, block: int) -> list[tuple[int, int, int]]:
    """(block index, start, size) of the tiles along one axis.

    Blocks are ``block`` px long; a remainder shorter than a tile joins the last block. Inside a
    block, tiles step by ``tile - overlap`` and the last one is aligned to the block's end, so
    every tile is full size unless the raster itself is smaller than a tile.
    """
    if length <= tile:
        return [(0, 0, length)]
    edges = list(range(0, length, block))
    if length - edges[-1] < tile:
        edges.pop()
    edges.append(length)
    stride = tile - overlap
    starts: list[tuple[int, int, int]] = []
    for index, (begin, end) in enumerate(itertools.pairwise(edges)):
        positions = [*range(begin, end - tile, stride), end - tile]
        starts.extend((index, s, tile) for s in dict.fromkeys(positions))
    return starts


def plan_tiles(
    source: int, width: int, height: int, tile_size: int, overlap: int, split_block: int
) -> list[PlannedTile]:
    """All tile windows of one raster, row-major."""
    block_px = split_block * tile_size
    rows = axis_starts(height, tile_size, overlap, block_px)
    cols = axis_starts(width, tile_size, overlap, block_px)
    return [
        PlannedTile(source, (by, bx), Window(x, y, w, h)) for by, y, h in rows for bx, x, w in cols
    ]


def assign_splits(tiles: list[PlannedTile], val_fraction: float, seed: int) -> dict[str, str]:
    """Map tile id → "train"/"val", taking whole blocks for val until the fraction is reached.

    At least one block always stays in train; with a single block there is no val split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise GeosamError(f"--val-fraction {val_fraction} must be in [0, 1)")
    blocks: dict[tuple[int, tuple[int, int]], int] = {}
    for tile in tiles:
        key = (tile.source, tile.block)
        blocks[key] = blocks.get(key, 0) + 1
    keys = sorted(blocks)
    order = np.random.default_rng(seed).permutation(len(keys))
    target = val_fraction * len(tiles)
    val_blocks: set[tuple[int, tuple[int, int]]] = set()
    val_tiles = 0
    for i in order[: max(0, len(keys) - 1)]:
        if val_tiles >= target or val_fraction == 0:
            break
        val_blocks.add(keys[i])
        val_tiles += blocks[keys[i]]
    return {t.tile_id: "val" if (t.source, t.block) in val_blocks else "train" for t in tiles}
