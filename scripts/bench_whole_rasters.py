"""Score what a user gets: exported models through ``geosam segment`` on whole rasters.

Tiles clip every large field into a near-rectangle, which flatters box-fill and hides what
happens to parcels larger than a window, so this benchmark scores whole held-out rasters and
whole fields, through the command users run (issue 14's benchmark):

* **prompt mode**: per true field, one box prompt (the field's bounds in the raster's CRS, as
  a user drags it) and one point prompt (the field's pole of inaccessibility, its most interior
  point, as a user clicks); the polygon ``geosam segment`` returns for each prompt is scored by
  IoU with its field, against box-fill's (the box itself as the parcel). A field whose prompt
  gives no polygon scores 0 and is counted;
* **automatic mode**: ``geosam segment --auto`` per raster, scored by ``geosam score-parcels``
  over the rasters' footprints: object precision, recall, F1 at IoU 0.5 (one-to-one), mean IoU
  of the matches, truth area covered.

IoUs are computed in the truth's CRS when it is projected (NAIP fields: EPSG:5070, equal-area),
else in the raster's. Each model is a folder from ``geosam export-onnx``, named on the command
line, so a stand-in and a tuned model come out side by side::

    python scripts/bench_whole_rasters.py --model standin=out/models/standin \\
        --model tuned=out/models/decoder --images img1.tif img2.tif --truth fields.gpkg \\
        --truth-layer fields --id-field field_id -o out/whole-rasters

``scripts/bench_quality.py`` runs it on its held-out NAIP images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from shapely.ops import polylabel

from geosam.segment.score_report import score_parcel_files

PROMPT_KINDS = ("box", "point")
FLIPS = ("--flip-tta",)


def geosam(*args: str) -> None:
    """Run a geosam CLI command in a child process, as a user would."""
    print("  $ geosam " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "geosam", *args], check=True)


def raster_fields(
    truth: gpd.GeoDataFrame, raster: Path, id_field: str
) -> tuple[gpd.GeoDataFrame, Any]:
    """The true fields that lie mostly on ``raster`` (half their area or more inside its
    bounds), in the truth's CRS, and the raster's CRS."""
    with rasterio.open(raster) as ds:
        crs, bounds = ds.crs, ds.bounds
    footprint = gpd.GeoSeries([shapely.box(*bounds)], crs=crs).to_crs(truth.crs).iloc[0]
    inside = shapely.area(shapely.intersection(truth.geometry.values, footprint))
    fields = truth[inside >= 0.5 * shapely.area(truth.geometry.values)]
    return fields[[id_field, fields.geometry.name]].reset_index(drop=True), crs


def field_prompts(fields: gpd.GeoDataFrame, raster_crs: Any, id_field: str) -> gpd.GeoDataFrame:
    """A box and a point prompt per field, in the raster's CRS: the field's bounds there (what
    a user drags on the image) and its pole of inaccessibility, found in the fields' own CRS
    (degrees are not metres) and then reprojected."""
    in_raster = fields.to_crs(raster_crs)
    boxes = [shapely.box(*geometry.bounds) for geometry in in_raster.geometry]
    poles = gpd.GeoSeries(
        [polylabel(_largest_part(g), tolerance=0.5) for g in fields.geometry], crs=fields.crs
    ).to_crs(raster_crs)
    count = len(fields)
    return gpd.GeoDataFrame(
        {
            id_field: [*fields[id_field], *fields[id_field]],
            "kind": ["box"] * count + ["point"] * count,
        },
        geometry=[*boxes, *poles],
        crs=raster_crs,
    )


def _largest_part(geometry: shapely.Geometry) -> shapely.Polygon:
    parts = shapely.get_parts(geometry)
    return parts[int(np.argmax(shapely.area(parts)))]


def prompt_ious(
    fields: gpd.GeoDataFrame,
    prompts: gpd.GeoDataFrame,
    polygons: gpd.GeoDataFrame,
    id_field: str,
    metric_crs: Any,
) -> dict[str, np.ndarray]:
    """Per prompt kind, the IoU of each field with its prompt's polygon (NaN where the prompt
    gave none), and ``box_fill``: each field with its box prompt; all in ``metric_crs``."""
    fields = fields.to_crs(metric_crs).set_index(id_field).geometry
    polygons = polygons.to_crs(metric_crs)
    prompts = prompts.to_crs(metric_crs)
    ious: dict[str, np.ndarray] = {}
    for kind in PROMPT_KINDS:
        found = polygons[polygons["kind"] == kind].set_index(id_field).geometry
        ious[kind] = np.array(
            [_iou(geometry, found.get(field_id)) for field_id, geometry in fields.items()]
        )
    boxes = prompts[prompts["kind"] == "box"].set_index(id_field).geometry
    ious["box_fill"] = np.array(
        [_iou(geometry, boxes[field_id]) for field_id, geometry in fields.items()]
    )
    return ious


def _iou(a: shapely.Geometry, b: shapely.Geometry | None) -> float:
    if b is None or b.is_empty:
        return float("nan")
    union = shapely.area(shapely.union(a, b))
    return float(shapely.area(shapely.intersection(a, b)) / union) if union > 0 else 0.0


def prompt_mode(
    model: Path,
    rasters: Sequence[Path],
    truth: gpd.GeoDataFrame,
    id_field: str,
    out: Path,
    options: Sequence[str] = (),
) -> dict[str, Any]:
    """Box and point prompts on every field of every raster through ``geosam segment``
    (with ``options``, e.g. ``--flip-tta``)."""
    metric_crs = truth.crs if truth.crs.is_projected else None
    per_kind: dict[str, list[np.ndarray]] = {kind: [] for kind in (*PROMPT_KINDS, "box_fill")}
    for raster in rasters:
        fields, raster_crs = raster_fields(truth, raster, id_field)
        if fields.empty:
            continue
        prompts = field_prompts(fields, raster_crs, id_field)
        prompts_path = out / f"{raster.stem}-prompts.gpkg"
        prompts.to_file(prompts_path, engine="pyogrio")
        polygons_path = out / f"{raster.stem}-parcels.gpkg"
        geosam(
            "segment", str(raster), "--model", str(model), "--prompts", str(prompts_path),
            "-o", str(polygons_path), "--quiet", *options,
        )  # fmt: skip
        polygons = gpd.read_file(polygons_path)
        ious = prompt_ious(fields, prompts, polygons, id_field, metric_crs or raster_crs)
        for kind, values in ious.items():
            per_kind[kind].append(values)
    return {
        kind: {
            "fields": int(sum(len(v) for v in values)),
            # a field without a polygon scores 0
            "mIoU": round(float(np.nan_to_num(np.concatenate(values)).mean()), 4)
            if values
            else None,
            "without_polygon": int(sum(np.isnan(v).sum() for v in values)),
        }
        for kind, values in per_kind.items()
    }


def auto_mode(
    model: Path,
    rasters: Sequence[Path],
    truth_path: Path,
    truth_layer: str | None,
    out: Path,
    auto_args: Sequence[str],
) -> dict[str, Any]:
    """``geosam segment --auto`` per raster, scored together by ``score-parcels``."""
    maps = []
    for raster in rasters:
        parcels = out / f"{raster.stem}-auto.gpkg"
        geosam(
            "segment", str(raster), "--model", str(model), "--auto", "-o", str(parcels),
            "--quiet", *auto_args,
        )  # fmt: skip
        maps.append(parcels)
    score, parts, table = score_parcel_files(
        maps,
        out / "auto-scores",
        truth=truth_path,
        truth_layer=truth_layer,
        rasters=list(rasters),
        overwrite=True,
    )
    print(table, flush=True)
    return {
        **score.overall.scores.to_dict(),
        "found_by_size": [
            {"size": row.label, "min_m2": row.min_m2, "found": row.matched, "fields": row.count}
            for row in parts.truth
        ],
    }


def bench_model(args: argparse.Namespace, name: str, model: Path) -> dict[str, Any]:
    """Both modes for one model, with their seconds."""
    out = args.output / name
    out.mkdir(parents=True, exist_ok=True)
    truth = gpd.read_file(args.truth, layer=args.truth_layer)
    start = time.perf_counter()
    prompts = prompt_mode(model, args.images, truth, args.id_field, out)
    prompt_seconds = time.perf_counter() - start
    auto = auto_mode(model, args.images, args.truth, args.truth_layer, out, args.auto_args)
    flips = {}
    if args.flip_tta:
        (out / "flips").mkdir(exist_ok=True)
        flips = prompt_mode(model, args.images, truth, args.id_field, out / "flips", FLIPS)
    return {
        "prompts": prompts,
        "prompts_flips": flips,
        "auto": auto,
        "seconds": {
            "prompts": round(prompt_seconds, 1),
            "auto": round(time.perf_counter() - start - prompt_seconds, 1),
        },
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: the models side by side, prompt mode (with box-fill) then automatic mode."""
    names = list(results)
    first = results[names[0]]["prompts"]
    lines = [
        "| whole rasters, whole fields | box-fill | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for kind in PROMPT_KINDS:
        cells = [f"{results[n]['prompts'][kind]['mIoU']:.3f}" for n in names]
        lines.append(
            f"| {kind} prompt mIoU ({first[kind]['fields']} fields) | "
            f"{first['box_fill']['mIoU']:.3f} | " + " | ".join(cells) + " |"
        )
        cells = [str(results[n]["prompts"][kind]["without_polygon"]) for n in names]
        lines.append(f"| {kind} prompts without a polygon | – | " + " | ".join(cells) + " |")
        if all(results[n].get("prompts_flips") for n in names):
            cells = [f"{results[n]['prompts_flips'][kind]['mIoU']:.3f}" for n in names]
            lines.append(f"| {kind} prompt mIoU, `--flip-tta` | – | " + " | ".join(cells) + " |")
    for key, title in (
        ("f1", "automatic: object F1@0.5"),
        ("precision", "automatic: precision"),
        ("recall", "automatic: recall"),
        ("matched_miou", "automatic: mIoU of matches"),
    ):
        cells = [_number(results[n]["auto"].get(key)) for n in names]
        lines.append(f"| {title} | – | " + " | ".join(cells) + " |")
    lines += size_rows(results, names)
    return "\n".join(lines) + "\n"


def size_rows(results: dict[str, dict[str, Any]], names: Sequence[str]) -> list[str]:
    """Automatic mode's fields found per size class (``geosam score-parcels``' classes,
    smallest first), 'found / fields' per model: where each model's F1 is won and lost."""
    found = {n: {c["size"]: c for c in results[n]["auto"].get("found_by_size", [])} for n in names}
    sizes = {c["size"]: c["min_m2"] for n in names for c in found[n].values()}
    rows = []
    for size in sorted(sizes, key=sizes.__getitem__):
        cells = [
            f"{found[n][size]['found']} / {found[n][size]['fields']}" if size in found[n] else "–"
            for n in names
        ]
        rows.append(f"| automatic: fields found, {size} | – | " + " | ".join(cells) + " |")
    return rows


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def model_argument(text: str) -> tuple[str, Path]:
    name, _, folder = text.partition("=")
    if not name or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: not NAME=MODEL_DIR")
    return name, Path(folder)


def held_out_parser(description: str) -> argparse.ArgumentParser:
    """The options every held-out benchmark takes: models (NAME=MODEL_DIR), images, truth
    and output folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--model", type=model_argument, action="append", required=True, help="NAME=MODEL_DIR"
    )
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--truth-layer")
    parser.add_argument("-o", "--output", type=Path, required=True)
    return parser


def report(output: Path, name: str, results: dict[str, Any], text: str) -> None:
    """Print a held-out benchmark's table and write OUTPUT/NAME.json and OUTPUT/NAME.md."""
    print(text, flush=True)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / f"{name}.md").write_text(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = held_out_parser(__doc__.splitlines()[0])
    parser.add_argument("--id-field", required=True)
    parser.add_argument(
        "--flip-tta",
        action="store_true",
        help="also score prompt mode with test-time flips (4x the model runs)",
    )
    parser.add_argument(
        "--auto-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="options for `geosam segment --auto` (last on the line), e.g. thresholds",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every model, then the side-by-side table; writes OUTPUT/whole-rasters.{json,md}."""
    results = {name: bench_model(args, name, model) for name, model in args.model}
    report(args.output, "whole-rasters", results, table(results))
    return results


if __name__ == "__main__":
    run(parse_args())
