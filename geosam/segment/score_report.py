"""The report of ``geosam score-parcels``: ``scores.json``, ``scores.md`` and ``scores.png``.

The picture shows what the numbers count, per scored area over its raster: predictions matched
to a true parcel in green, predictions matching none (false positives) in orange, true parcels
found outlined in blue, true parcels missed outlined in red.

The three files are written into a hidden folder beside the output and renamed into place
when all are complete, so a failed run leaves nothing half-written
(:func:`geosam.utils.publish.publish_dir`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window, from_bounds
from rasterio.windows import bounds as window_bounds

from geosam.segment.score import (
    MATCH_IOU,
    MIN_INSIDE,
    AreaResult,
    MapScore,
    ParcelScores,
    check_iou_threshold,
    score_parcel_map,
)
from geosam.segment.score_breakdown import Breakdown, breakdown, markdown_tables
from geosam.segment.score_inputs import dataset_areas, raster_area, read_parcel_maps, read_parcels
from geosam.utils.errors import GeosamError
from geosam.utils.publish import check_writable, publish_dir, refuse_occupied
from geosam.utils.visualize import save_figure

FILES = ("scores.json", "scores.md", "scores.png")
# The picture shows at most this many areas (the first ones), each at most this many pixels.
MAX_PANELS = 6
PANEL_PIXELS = 1200
MATCHED, FALSE_POSITIVE, FOUND, MISSED = "tab:green", "tab:orange", "deepskyblue", "red"

# (column title, ParcelScores field, format) of the markdown table.
_COLUMNS = (
    ("true", "truth", "d"),
    ("predicted", "predicted", "d"),
    ("matched", "matched", "d"),
    ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"),
    ("F1", "f1", ".3f"),
    ("matched mIoU", "matched_miou", ".3f"),
    ("truth covered", "covered", ".3f"),
)


def score_parcel_files(
    predicted: Sequence[Path],
    out_dir: Path,
    *,
    truth: Path | None = None,
    truth_layer: str | None = None,
    layer: str | None = None,
    rasters: Sequence[Path] = (),
    dataset: Path | None = None,
    split: str = "val",
    iou_threshold: float = MATCH_IOU,
    overwrite: bool = False,
) -> tuple[MapScore, Breakdown, str]:
    """Score the parcel map ``predicted`` (one file or one per raster) against ``truth`` in
    the valid footprints of
    ``rasters``, or in the ``split`` tiles of the tile ``dataset`` (whose labels are the truth
    unless ``truth`` is given), or everywhere when neither is given; write the report to
    ``out_dir``. Returns the scores, the overall breakdown by size and kind, and the markdown
    tables. Every input is checked before
    anything is written."""
    check_iou_threshold(iou_threshold)
    refuse_occupied(out_dir, overwrite)
    check_writable(out_dir)
    if rasters and dataset is not None:
        raise GeosamError("give --raster or --dataset, not both: each defines the scored area")
    if dataset is not None:
        areas, labels, labels_layer = dataset_areas(dataset, split)
        if truth is None:
            truth, truth_layer = labels, labels_layer
    else:
        areas = [raster_area(raster) for raster in rasters]
    if truth is None:
        raise GeosamError("give the true parcels with --truth (or a tile dataset with --dataset)")
    predicted_parcels = read_parcel_maps(predicted, layer)
    true_parcels = read_parcels(truth, truth_layer, "true parcels")
    score = score_parcel_map(predicted_parcels, true_parcels, areas, iou_threshold)
    sources = {"predicted": [str(path) for path in predicted], "truth": str(truth)}
    if dataset is not None:
        sources.update(dataset=str(dataset), split=split)
    parts = breakdown(score.overall)
    with publish_dir(out_dir) as staging:
        write_report(score, parts, staging, sources)
    return score, parts, markdown_table(score, parts)


def write_report(
    score: MapScore, parts: Breakdown, out_dir: Path, sources: dict[str, object]
) -> None:
    """Write the three report files into ``out_dir``; ``parts`` is the overall score's
    breakdown by size and kind; ``sources`` names the inputs (predicted, truth, ...) for the
    JSON record."""
    record = {
        **sources,
        "iou_threshold": score.iou_threshold,
        "matching": "one-to-one, greedy by IoU",
        "min_inside": MIN_INSIDE,
        "overall": score.overall.scores.to_dict(),
        "areas": [
            {
                "name": result.area.name,
                "raster": _path(result.area.raster),
                **result.scores.to_dict(),
            }
            for result in score.per_area
        ],
        "by_size": parts.to_dict(),
    }
    (out_dir / "scores.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / "scores.md").write_text(markdown_table(score, parts))
    render(score, out_dir / "scores.png")


def markdown_table(score: MapScore, parts: Breakdown) -> str:
    """One row per scored area, then the overall row (the union of the areas); then the
    overall parcels by size, true and predicted (:mod:`geosam.segment.score_breakdown`)."""
    header = ["area", *(title for title, _, _ in _COLUMNS)]
    rows = [_row(result.area.name, result.scores) for result in score.per_area]
    rows.append(_row("**all**", score.overall.scores))
    lines = [
        f"Parcel map scores: object precision, recall and F1 at IoU ≥ {score.iou_threshold:g} "
        "(one-to-one matches), mean IoU of the matches, share of the true parcels' area "
        "covered by predictions.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        markdown_tables(parts),
    ]
    return "\n".join(lines)


def render(score: MapScore, path: Path) -> None:
    """Predicted vs true parcels, one panel per area (the overall area when there are none)."""
    results = score.per_area[:MAX_PANELS] or [score.overall]
    columns = min(3, len(results))
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 6 * rows), squeeze=False)
    for ax, result in zip(axes.flat, results, strict=False):
        _draw_area(ax, result, score.overall.truth.crs)
    for ax in axes.flat[len(results) :]:
        ax.set_axis_off()
    legend = [
        Patch(facecolor=MATCHED, alpha=0.5, label="prediction matched"),
        Patch(facecolor=FALSE_POSITIVE, alpha=0.6, label="prediction unmatched"),
        Patch(facecolor="none", edgecolor=FOUND, label="true parcel found"),
        Patch(facecolor="none", edgecolor=MISSED, label="true parcel missed"),
    ]
    # under the first panel's drawn box (its aspect shrinks it), so a tight crop keeps it close
    axes.flat[0].legend(
        handles=legend, loc="upper left", bbox_to_anchor=(0, -0.01), ncol=2, frameon=False
    )
    save_figure(fig, path)


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _row(name: str, scores: ParcelScores) -> list[str]:
    values = scores.to_dict()
    return [
        name,
        *("–" if values[key] is None else format(values[key], spec) for _, key, spec in _COLUMNS),
    ]


def _draw_area(ax: Axes, result: AreaResult, crs: CRS) -> None:
    truth, predicted = result.truth, result.predicted
    if result.area.geometry is not None:
        bounds = result.area.geometry.bounds
    else:  # the overall area of an unrestricted score, which has true parcels
        xmin, ymin, xmax, ymax = np.array([truth.total_bounds, predicted.total_bounds]).T
        bounds = (np.nanmin(xmin), np.nanmin(ymin), np.nanmax(xmax), np.nanmax(ymax))
    ax.set_facecolor("0.2")
    if result.area.raster is not None:
        _draw_raster(ax, result.area.raster, crs, bounds)
    matched = predicted["iou"].notna()
    for frame, colour, alpha in (
        (predicted.loc[matched], MATCHED, 0.45),
        (predicted.loc[~matched], FALSE_POSITIVE, 0.55),
    ):
        if not frame.empty:
            frame.plot(ax=ax, color=colour, alpha=alpha, edgecolor=colour, linewidth=0.5)
    found = truth["iou"].notna()
    for frame, colour, width in ((truth.loc[found], FOUND, 0.6), (truth.loc[~found], MISSED, 1.2)):
        if not frame.empty:
            frame.boundary.plot(ax=ax, color=colour, linewidth=width)
    ax.set_xlim(bounds[0], bounds[2])
    ax.set_ylim(bounds[1], bounds[3])
    ax.set(xticks=[], yticks=[], xlabel="", ylabel="")
    f1 = "–" if result.scores.f1 is None else f"{result.scores.f1:.2f}"
    ax.set_title(f"{result.area.name}: F1 {f1}", fontsize=9)


def _draw_raster(
    ax: Axes, raster: Path, crs: CRS, bounds: tuple[float, float, float, float]
) -> None:
    """The raster (first three bands, or one, stretched 2-98%) under ``bounds`` of ``crs``."""
    with rasterio.open(raster) as src, WarpedVRT(src, crs=crs) as vrt:
        full = Window(0, 0, vrt.width, vrt.height)
        try:
            window = from_bounds(*bounds, vrt.transform).intersection(full)
        except rasterio.errors.WindowError:
            return
        scale = max(1.0, max(window.width, window.height) / PANEL_PIXELS)
        bands = [1, 2, 3] if vrt.count >= 3 else [1]
        shape = (len(bands), max(1, int(window.height / scale)), max(1, int(window.width / scale)))
        resampling = Resampling.average
        image = vrt.read(bands, window=window, out_shape=shape, resampling=resampling, masked=True)
        left, bottom, right, top = window_bounds(window, vrt.transform)
    data = image.astype("float64").filled(np.nan)
    low, high = np.nanpercentile(data, [2, 98], axis=(1, 2), keepdims=True)
    picture = np.clip((data - low) / np.where(high > low, high - low, 1), 0, 1)
    picture = np.nan_to_num(np.moveaxis(picture, 0, -1))
    ax.imshow(picture.squeeze(), cmap="gray", extent=(left, right, bottom, top))
