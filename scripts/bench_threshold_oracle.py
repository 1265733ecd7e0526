"""How much of automatic mode's miss is the thresholds' and how much is the model's.

A model ships with the point grid and thresholds its export chose on the val split
(``auto_thresholds`` in its manifest). This benchmark decodes the held-out rasters once per
grid with the filters open and replays automatic mode for every pair of the calibration's
grid, exactly as the export's calibration does on val regions
(:mod:`geosam.export.auto_calibration`), scored against the held-out truth. Side by side per
model: object F1@0.5 at the shipped setting, and the best any setting reaches on these
rasters, an **oracle** that looked at the answers: a bound on what better thresholds could
give, not a result. A small gap says the thresholds are not what limits automatic mode; the
model is. ::

    python scripts/bench_threshold_oracle.py --model tuned=out/models/tuned \\
        --images img1.tif img2.tif --truth fields.gpkg --truth-layer fields \\
        -o out/threshold-oracle

Counting is the calibration's (masks on the tiling grid, truth rasterized there), so the F1
differs by a few hundredths from ``geosam score-parcels`` on the polygons of a run. The
rasters are read as the val regions are, as 8-bit RGB without a stretch (NAIP and other
8-bit RGB imagery); others are refused.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import rasterio
from bench_whole_rasters import held_out_parser, report
from rasterio.features import rasterize

from geosam.export.auto_calibration import (
    POINT_GRIDS,
    Counts,
    Setting,
    best_in_grid,
    decode_region,
    grid_counts,
    preference,
)
from geosam.runtime import SamModel
from geosam.runtime.auto import DEFAULT_MIN_AREA_M2, GRID, THRESHOLDS, TUNED_THRESHOLDS


def truth_raster(truth: gpd.GeoDataFrame, raster: Path, out: Path) -> Path:
    """The true parcels on ``raster``'s pixel grid (what of them lies on it), numbered from 1
    (0: no parcel), as the val regions' truth is written; ``raster`` must be 8-bit RGB (see
    the module's note)."""
    with rasterio.open(raster) as ds:
        if ds.count != 3 or ds.dtypes[0] != "uint8":
            raise SystemExit(f"{raster}: not 8-bit RGB ({ds.count} bands of {ds.dtypes[0]})")
        shapes = zip(truth.to_crs(ds.crs).geometry, range(1, len(truth) + 1), strict=True)
        ids = rasterize(shapes, out_shape=(ds.height, ds.width), transform=ds.transform)
        profile = {
            "driver": "GTiff", "width": ds.width, "height": ds.height, "count": 1,
            "dtype": "uint32", "crs": ds.crs, "transform": ds.transform,
        }  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(ids.astype("uint32"), 1)
    return out


def setting_row(setting: Setting, counts: Counts) -> dict[str, Any]:
    return {**dict(zip((GRID, *THRESHOLDS), setting, strict=True)), **counts.scores()}


def oracle(model_dir: Path, regions: Sequence[tuple[Path, Path]]) -> dict[str, Any]:
    """The shipped setting's held-out scores beside the best setting's, overall and per grid."""
    model = SamModel.load(model_dir, threads=1)
    tuned = model.manifest.get(TUNED_THRESHOLDS)
    if not tuned:
        raise SystemExit(f"{model_dir}: no tuned thresholds in its manifest, nothing to compare")
    grids = tuned.get("grid", {}).get(GRID, POINT_GRIDS)
    counts: dict[Setting, Counts] = {}
    for points in grids:
        decoded = [
            decode_region(model, image, truth, points, DEFAULT_MIN_AREA_M2)
            for image, truth in regions
        ]
        counts.update({(points, *pair): c for pair, c in grid_counts(decoded).items()})
    shipped = (tuned.get(GRID, 16), *(tuned[name] for name in THRESHOLDS))
    if shipped not in counts:
        raise SystemExit(f"{model_dir}: its setting {shipped} is not on the calibration grid")
    best = max(counts, key=lambda key: preference(counts, key))
    return {
        "shipped": setting_row(shipped, counts[shipped]),
        "oracle": setting_row(best, counts[best]),
        "oracle_per_grid": [
            setting_row(top, counts[top]) for top in (best_in_grid(counts, p) for p in grids)
        ],
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | shipped: grid, pred. IoU / stability | F1@0.5 | oracle: grid, pred. IoU / "
        "stability | F1@0.5 | shipped / oracle |",
        "|---|---|---:|---|---:|---:|",
    ]
    for name, result in results.items():
        shipped, best = result["shipped"], result["oracle"]
        ratio = shipped["f1"] / best["f1"] if best["f1"] else 0.0
        lines.append(
            f"| {name} | {describe(shipped)} | {shipped['f1']:.3f} | {describe(best)} | "
            f"{best['f1']:.3f} | {ratio:.2f} |"
        )
    for name, result in results.items():
        for row in result["oracle_per_grid"]:
            lines.append(f"| {name}, oracle at {describe(row)} | | | | {row['f1']:.3f} | |")
    return "\n".join(lines) + "\n"


def describe(row: dict[str, Any]) -> str:
    return f"{row[GRID]}², {row[THRESHOLDS[0]]:g} / {row[THRESHOLDS[1]]:g}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return held_out_parser(__doc__.splitlines()[0]).parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every model on the same truth rasters; writes OUTPUT/threshold-oracle.{json,md}."""
    truth = gpd.read_file(args.truth, layer=args.truth_layer, engine="pyogrio")
    with tempfile.TemporaryDirectory(prefix="geosam-oracle-") as folder:
        regions = [
            (image, truth_raster(truth, image, Path(folder) / f"{image.stem}-truth.tif"))
            for image in args.images
        ]
        results = {name: oracle(model, regions) for name, model in args.model}
    report(args.output, "threshold-oracle", results, table(results))
    return results


if __name__ == "__main__":
    run(parse_args())
