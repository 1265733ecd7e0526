"""Automatic mode with and without skipping points inside parcels already found, side by side.

Automatic mode's cost is the decoder: one call per grid point of every window. With
``AutoParams.skip_found`` a point inside a mask already accepted is not decoded (design notes,
"Automatic mode"). This script runs ``geosam segment --auto`` both ways on the same rasters
and model, in turns (``--repeat`` rounds, so load from other processes falls on both alike),
and scores each parcel map against the true parcels with :mod:`geosam.segment.score`
(object precision, recall and F1 at IoU 0.5, one to one, and the matched mean IoU), in the
raster's valid footprint. Throughput is km² of raster per CPU-hour, CPU-hours being seconds
x ``--threads`` / 3600 (onnxruntime's intra-op threads, pinned).
``--fine-pass`` adds a third side, skipping found points and then the fine pass
(``--fine-pass``, :meth:`geosam.runtime.auto.AutoSegmenter.fine_parcels`), to weigh what it
finds against what it costs.

The scene is a synthetic one (``geosam synth``, ``--size`` and ``--seed``: use a seed the
model was not trained on) unless ``--raster`` (one or more) and ``--truth`` name real ones; the
model is any exported folder (``geosam demo``'s DIR/model, the stand-in, a NAIP-tuned export)::

    python scripts/bench_auto.py --model demo/model --size 2048 --seed 7 \\
        --pred-iou-thresh 0.6 --stability-thresh 0.8 -o out/bench_auto
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from pyproj import CRS

from geosam.data.synthetic import make_scene
from geosam.runtime.auto import DEFAULT_MIN_AREA_M2, AutoParams
from geosam.segment import SegmentParams, segment_region
from geosam.segment.polygons import geodesic_area
from geosam.segment.score import score_parcel_map
from geosam.segment.score_inputs import raster_area

SIDES = {"every point": {"skip_found": False}, "skip found": {"skip_found": True}}
# --fine-pass adds a third side: skipping found points, then the fine pass
FINE = {"skip found + fine pass": {"skip_found": True, "fine_pass": True}}


@dataclass(frozen=True)
class Side:
    """One way of running automatic mode on the scene: its cost and its score."""

    name: str
    windows: int
    decoder_calls: int
    seconds: list[float]
    km2_per_cpu_hour: float
    polygons: int
    precision: float | None
    recall: float | None
    f1: float | None
    matched_miou: float | None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="An exported model folder.")
    parser.add_argument("--raster", type=Path, nargs="+", help="Real rasters (with --truth).")
    parser.add_argument("--truth", type=Path, help="Its true parcel polygons.")
    parser.add_argument("--size", type=int, default=2048, help="Synthetic scene side, px.")
    parser.add_argument("--seed", type=int, default=7, help="Synthetic scene seed (unseen).")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads.")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds of both sides, in turns.")
    # None: the model's tuned grid and thresholds (its manifest), else SAM's, as geosam
    # segment --auto
    parser.add_argument("--points-per-side", type=int)
    parser.add_argument("--pred-iou-thresh", type=float)
    parser.add_argument("--stability-thresh", type=float)
    parser.add_argument("--min-area", type=float, default=DEFAULT_MIN_AREA_M2, help="m²")
    parser.add_argument(
        "--fine-pass",
        action="store_true",
        help="Also run skip found with the fine pass (geosam segment --auto --fine-pass).",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("out/bench_auto"))
    args = parser.parse_args()
    if (args.raster is None) != (args.truth is None):
        parser.error("give --raster and --truth together (or neither, for a synthetic scene)")
    return args


def scene(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The rasters and their truth: the ones given, or a synthetic scene made once."""
    if args.raster is not None:
        return args.raster, args.truth
    folder = args.output / f"scene-{args.size}-{args.seed}"
    raster, truth = folder / "scene.tif", folder / "parcels.gpkg"
    if not raster.is_file():
        files = make_scene(folder, size=args.size, seed=args.seed, progress=False)
        raster, truth = files.raster, files.labels
    return [raster], truth


def main() -> None:
    args = parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    rasters, truth_path = scene(args)
    areas = [raster_area(raster) for raster in rasters]
    km2 = sum(float(geodesic_area([a.geometry], CRS(a.crs))[0]) for a in areas) / 1e6
    segment = SegmentParams(threads=args.threads)
    ways = {**SIDES, **(FINE if args.fine_pass else {})}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    given = {
        name: value
        for name, value in (
            ("pred_iou_thresh", args.pred_iou_thresh),
            ("stability_thresh", args.stability_thresh),
            ("points_per_side", args.points_per_side),
        )
        if value is not None
    }
    results = {}
    for _ in range(args.repeat):
        for name, settings in ways.items():
            params = AutoParams(**settings)
            output = args.output / f"{name.replace(' ', '-')}.gpkg"
            output.unlink(missing_ok=True)
            start = time.perf_counter()
            results[name] = segment_region(
                rasters, args.model, output, segment, params, args.min_area,
                DEFAULT_MIN_AREA_M2, given, progress=False,
            )  # fmt: skip
            seconds[name].append(time.perf_counter() - start)
    truth = gpd.read_file(truth_path)
    sides = []
    for name in ways:
        result = results[name]
        scores = score_parcel_map(gpd.read_file(result.output), truth, areas).overall.scores
        fastest = min(seconds[name])
        sides.append(
            Side(
                name,
                result.encoded,
                result.prompts,
                seconds[name],
                km2 / (fastest * args.threads / 3600),
                result.polygons,
                scores.precision,
                scores.recall,
                scores.f1,
                scores.matched_miou,
            )
        )
    report(args, rasters, km2, sides)


def threshold(value: float | None) -> str:
    return "the model's (or SAM's)" if value is None else f"{value:g}"


def report(args: argparse.Namespace, rasters: list[Path], km2: float, sides: list[Side]) -> None:
    """The side-by-side table (markdown, printed) and bench_auto.json."""

    def number(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{', '.join(r.name for r in rasters)} ({km2:.2f} km²), model {args.model}, "
        f"{args.threads} thread(s), "
        f"{f'{args.points_per_side}²' if args.points_per_side else 'the model grid of'} points, "
        f"pred IoU ≥ {threshold(args.pred_iou_thresh)}, "
        f"stability ≥ {threshold(args.stability_thresh)}, fastest of {args.repeat} round(s)",
        "",
        "| automatic mode | windows | decoder calls | seconds | km²/CPU-h | polygons "
        "| precision | recall | F1@0.5 | matched mIoU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in sides:
        lines.append(
            f"| {side.name} | {side.windows} | {side.decoder_calls:,} | "
            f"{min(side.seconds):.1f} | {side.km2_per_cpu_hour:.0f} | {side.polygons} | "
            f"{number(side.precision)} | {number(side.recall)} | {number(side.f1)} | "
            f"{number(side.matched_miou)} |"
        )
    before, after = sides[:2]
    ratio = after.km2_per_cpu_hour / before.km2_per_cpu_hour
    lines.append("")
    for side in sides[1:]:
        calls = before.decoder_calls / max(side.decoder_calls, 1)
        lines.append(
            f"{side.name} against {before.name}: "
            f"km²/CPU-h ratio {side.km2_per_cpu_hour / before.km2_per_cpu_hour:.2f}x; "
            f"decoder calls {calls:.2f}x fewer; F1 {number(before.f1)} -> {number(side.f1)}; "
            f"median seconds {np.median(before.seconds):.1f} -> {np.median(side.seconds):.1f}"
        )
    print("\n".join(lines))
    summary = {
        "rasters": [str(r) for r in rasters],
        "km2": km2,
        "args": vars(args),
        "sides": [asdict(side) for side in sides],
        "km2_per_cpu_hour_ratio": ratio,
    }
    (args.output / "bench_auto.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
