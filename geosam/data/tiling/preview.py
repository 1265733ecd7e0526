"""``preview.png`` in every tile dataset: a few chips with their instances and prompts.

A user should see at a glance whether the labels sit on the parcels (a CRS or alignment
mistake shows immediately) before spending hours on training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from geosam.utils.visualize import draw_instances, save_figure

PREVIEW = "preview.png"
PREVIEW_PX = 384


def write_preview(
    dataset_dir: Path, tiles: pd.DataFrame, instances: pd.DataFrame, max_tiles: int = 4
) -> Path:
    """Render up to ``max_tiles`` chips (the most populated, spread over the splits)."""
    import matplotlib.pyplot as plt

    chosen = tiles.sort_values(["n_instances", "tile_id"], ascending=[False, True])
    chosen = pd.concat([chosen[chosen.split == s].head(max_tiles // 2) for s in ("train", "val")])
    chosen = pd.concat([chosen, tiles.drop(chosen.index)]).head(max_tiles)
    cols = min(2, len(chosen))
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, tile in zip(axes.ravel(), chosen.itertuples(), strict=False):
        # a preview needs no more than ~512 px per chip: decimate big chips (nearest keeps ids)
        step = max(1, max(tile.width, tile.height) // PREVIEW_PX)
        with rasterio.open(dataset_dir / tile.chip) as src:
            chip = np.moveaxis(src.read(), 0, -1)[::step, ::step]
        with rasterio.open(dataset_dir / tile.mask) as src:
            mask = src.read(1)[::step, ::step]
        inst = instances[instances.tile_id == tile.tile_id]
        boxes = inst[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy() / step
        points = inst[["point_x", "point_y"]].to_numpy() / step
        title = f"{tile.tile_id} ({tile.split}, {tile.n_instances} parcels)"
        draw_instances(ax, chip, mask, boxes, points, title)
    path = dataset_dir / PREVIEW
    save_figure(fig, path)
    return path
