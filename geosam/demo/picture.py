"""The demo's pictures: segmented parcels over the raster, beside the true parcels."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.axes import Axes
from rasterio.enums import Resampling

from geosam.utils.visualize import save_figure

# longest side of the raster as drawn, in pixels: enough for a 9-inch panel
DRAWN_PX = 1500


def draw_raster(ax: Axes, raster: Path, bounds: tuple[float, float, float, float]) -> None:
    """The part of ``raster`` inside ``bounds`` (xmin, ymin, xmax, ymax in its CRS), read
    decimated by GDAL's averaging so a whole scene draws in a second."""
    xmin, ymin, xmax, ymax = bounds
    with rasterio.open(raster) as src:
        window = rasterio.windows.from_bounds(xmin, ymin, xmax, ymax, src.transform)
        scale = max(1, round(max(window.width, window.height) / DRAWN_PX))
        shape = (src.count, int(window.height // scale), int(window.width // scale))
        image = src.read(window=window, out_shape=shape, resampling=Resampling.average)
        drawn = rasterio.windows.bounds(window, src.transform)
    ax.imshow(np.moveaxis(image[:3], 0, -1), extent=(drawn[0], drawn[2], drawn[1], drawn[3]))
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_axis_off()


def draw_clicked(
    ax: Axes, raster: Path, truth: gpd.GeoDataFrame, result: gpd.GeoDataFrame, prompts: Path
) -> None:
    """The extent of ``truth``: raster, segmented polygons (orange), true parcels (white
    outlines), the clicks (cyan points)."""
    draw_raster(ax, raster, tuple(truth.total_bounds))
    result.to_crs(truth.crs).plot(ax=ax, color="orange", alpha=0.45, edgecolor="orange")
    truth.boundary.plot(ax=ax, color="white", linewidth=0.8)
    gpd.read_file(prompts).to_crs(truth.crs).plot(ax=ax, color="cyan", markersize=6)


def draw_parcel_map(
    ax: Axes, raster: Path, truth: gpd.GeoDataFrame, parcel_map: gpd.GeoDataFrame
) -> None:
    """The extent of ``truth``: raster, each mapped parcel in its own colour with a black
    outline (a coverage: neighbours share their boundary), true parcels (white outlines)."""
    draw_raster(ax, raster, tuple(truth.total_bounds))
    if len(parcel_map):
        colours = plt.get_cmap("tab20")(np.arange(len(parcel_map)) % 20)
        parcel_map.to_crs(truth.crs).plot(
            ax=ax, color=colours, alpha=0.55, edgecolor="black", linewidth=0.6
        )
    truth.boundary.plot(ax=ax, color="white", linewidth=0.8)


def render_result(
    raster: Path,
    truth: gpd.GeoDataFrame,
    result: gpd.GeoDataFrame,
    prompts: Path,
    out: Path,
    area: str = "val area",
) -> None:
    """:func:`draw_clicked` alone, titled with ``area``, into the PNG ``out``."""
    fig, ax = plt.subplots(figsize=(9, 9))
    draw_clicked(ax, raster, truth, result, prompts)
    ax.set_title(f"geosam: segmented parcels (orange) vs true parcels (white), {area}")
    save_figure(fig, out)


def render_demo(
    raster: Path,
    truth: gpd.GeoDataFrame,
    clicked: gpd.GeoDataFrame,
    prompts: Path,
    parcel_map: gpd.GeoDataFrame,
    titles: tuple[str, str],
    out: Path,
) -> None:
    """The demo's picture, two panels of its val area: parcels from one click each, and the
    automatic-mode parcel map; ``titles`` carry their scores."""
    xmin, ymin, xmax, ymax = truth.total_bounds
    panel_width = 8.0 * (xmax - xmin) / max(ymax - ymin, 1e-9)  # 8 inches high, to scale
    fig, (left, right) = plt.subplots(1, 2, figsize=(2 * panel_width + 0.5, 8.8))
    draw_clicked(left, raster, truth, clicked, prompts)
    draw_parcel_map(right, raster, truth, parcel_map)
    left.set_title(titles[0])
    right.set_title(titles[1])
    fig.suptitle("geosam on a synthetic scene, validation area (true parcels: white outlines)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save_figure(fig, out)
