"""The ``geosam`` command line.

Each command imports its implementation inside the function, so ``geosam --help`` and the
commands that need no deep-learning stack (tile, synth) start fast and run without torch.
A :class:`~geosam.utils.errors.GeosamError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geosam import __version__
from geosam.runtime.auto import DEFAULT_MIN_AREA_M2, GRID, THRESHOLDS, AutoParams
from geosam.utils.errors import GeosamError

if TYPE_CHECKING:
    from yacs.config import CfgNode

    from geosam.engine.run_dir import TunedWeights
    from geosam.segment.pipeline import SegmentResult


class _Group(click.Group):
    """A click group that reports user errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except GeosamError as exc:
            click.echo(f"geosam: error: {exc}", err=True)
            sys.exit(2)


def _int_list(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of band numbers"
        ) from None


def _auto_options(*options: tuple) -> Callable[[Callable], Callable]:
    """The ``segment --auto`` settings: (name, default, help[, type]) each, shown with the
    default (None: no fixed default, the help says what applies then; a value of ``type``,
    float unless given)."""

    def decorate(command: Callable) -> Callable:
        for name, default, text, *kind in reversed(options):
            typed = {"type": kind[0] if kind else float}
            shown = typed if default is None else {"show_default": True}
            command = click.option(name, default=default, help=f"--auto: {text}", **shown)(command)
        return command

    return decorate


def _model_source_options(verb: str) -> Callable[[Callable], Callable]:
    """--run / --config-file / --weights: where evaluate and export-onnx take their model from."""

    def decorate(command: Callable) -> Callable:
        options = [
            click.option(
                "--run",
                "run_dir",
                type=click.Path(path_type=Path),
                help="A run folder of geosam train: its base model plus its trained weights.",
            ),
            click.option(
                "--config-file",
                type=click.Path(path_type=Path),
                help=f"{verb.capitalize()} an untuned model instead: a preset, with "
                "MODEL.CHECKPOINT in OPTS.",
            ),
            click.option(
                "--weights",
                type=click.Choice(["best", "final"]),
                default="best",
                show_default=True,
                help=f"The run's trained weights to {verb} (best falls back to final if missing).",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _load_model_source(
    run_dir: Path | None, config_file: Path | None, weights: str, opts: tuple[str, ...]
) -> tuple[CfgNode, TunedWeights | None]:
    """The config (and, for a run, its trained weights) named by --run or --config-file."""
    from geosam.config import load_config
    from geosam.engine.run_dir import load_run

    if (run_dir is None) == (config_file is None):
        raise GeosamError("give either --run RUN_DIR or --config-file FILE (an untuned model)")
    if run_dir is not None:
        return load_run(run_dir, weights, opts)
    if not config_file.is_file():
        raise GeosamError(f"--config-file {config_file} does not exist")
    return load_config(str(config_file), list(opts)), None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosam")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Fine-tune Segment Anything on georeferenced parcels and use it in GIS."""
    from geosam.utils.logger import setup_logger

    setup_logger(verbose)


@cli.command()
@click.argument("rasters", nargs=-1, required=True)
@click.option(
    "--labels",
    "labels",
    required=True,
    type=click.Path(path_type=Path),
    help="Parcel polygons: Shapefile, GeoPackage, GeoJSON, GeoParquet, any CRS.",
)
@click.option("--layer", help="Layer of a multi-layer labels file (e.g. a GeoPackage).")
@click.option("--id-field", help="Column with the parcel id (default: the feature id).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset folder to create.",
)
@click.option("--tile-size", default=1024, show_default=True, help="Chip side in pixels.")
@click.option(
    "--overlap", default=128, show_default=True, help="Overlap of neighbouring chips (px)."
)
@click.option(
    "--bands",
    callback=_int_list,
    help="1 or 3 band numbers for the RGB chip, e.g. 4,3,2 (default: RGB or 1,2,3).",
)
@click.option(
    "--val-fraction",
    default=0.2,
    show_default=True,
    help="Share of tiles for validation, taken as whole spatial blocks.",
)
@click.option(
    "--split-block", default=2, show_default=True, help="Side of a spatial split block, in tiles."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the split and prompts.")
@click.option(
    "--min-area",
    default=25,
    show_default=True,
    help="Drop parcel pieces smaller than this many pixels in a chip.",
)
@click.option(
    "--num-points",
    default=3,
    show_default=True,
    help="Random interior points per instance in the evaluation prompts.",
)
@click.option("--keep-empty", is_flag=True, help="Keep chips without parcels.")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def tile(
    rasters: tuple[str, ...],
    labels: Path,
    layer: str | None,
    id_field: str | None,
    output: Path,
    tile_size: int,
    overlap: int,
    bands: tuple[int, ...] | None,
    val_fraction: float,
    split_block: int,
    seed: int,
    min_area: int,
    num_points: int,
    keep_empty: bool,
    workers: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Cut RASTERS (files, folders or globs) and parcel polygons into a tile dataset."""
    from geosam.data.tiling import TileParams, tile_dataset

    params = TileParams(
        tile_size=tile_size,
        overlap=overlap,
        bands=bands,
        val_fraction=val_fraction,
        split_block=split_block,
        seed=seed,
        min_area=min_area,
        keep_empty=keep_empty,
        num_points=num_points,
        workers=workers,
    )
    manifest = tile_dataset(
        rasters,
        labels,
        output,
        params,
        layer=layer,
        id_field=id_field,
        overwrite=overwrite,
        progress=not quiet,
    )
    counts = manifest["counts"]
    click.echo(
        f"{output}: {counts['tiles']} tiles ({counts['train_tiles']} train, {counts['val_tiles']} "
        f"val), {counts['instances']} instances, {manifest['ground_resolution_m']:.3g} m/px; "
        f"footprints: {output / manifest['files']['footprints']}"
    )


@cli.command()
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for scene.tif and parcels.gpkg.",
)
@click.option("--size", default=2048, show_default=True, help="Raster side in pixels.")
@click.option("--seed", default=0, show_default=True, help="Scene seed.")
@click.option("--resolution", default=1.0, show_default=True, help="Ground resolution (m/px).")
def synth(output: Path, size: int, seed: int, resolution: float) -> None:
    """Write a synthetic georeferenced farmland scene and its parcel polygons."""
    from geosam.data.synthetic import make_scene

    if size < 64:
        raise GeosamError(f"--size {size} is too small: use at least 64 px")
    files = make_scene(output, size=size, seed=seed, resolution=resolution, progress=True)
    click.echo(f"raster: {files.raster}\nlabels: {files.labels}")


@cli.command()
@click.option(
    "-o",
    "--output",
    default="demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for everything the demo writes.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="An official SAM checkpoint (sam_vit_b_01ec64.pth, ...): fine-tune its decoder "
    "instead of the stand-in geosam ships.",
)
@click.option(
    "--from-scratch",
    is_flag=True,
    help="Train the tiny SAM from random weights instead of fine-tuning the shipped stand-in.",
)
@click.option(
    "--model-type",
    type=click.Choice(["vit_b", "vit_l", "vit_h"]),
    help="The checkpoint's type, where its file name is not the official one.",
)
@click.option(
    "--epochs",
    type=int,
    help="Training epochs [default: 6 stand-in, 48 from scratch, 4 checkpoint].",
)
@click.option("--scene-size", default=2048, show_default=True, help="Scene side in pixels.")
@click.option("--seed", default=0, show_default=True, help="Scene, split and model seed.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(
    output: Path,
    checkpoint: Path | None,
    from_scratch: bool,
    model_type: str | None,
    epochs: int | None,
    scene_size: int,
    seed: int,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Run every stage on a synthetic scene: synth, tile, train, evaluate, export-onnx,
    segment (one click per parcel, then automatic mode): minutes on a CPU, fine-tuning the
    stand-in geosam ships (the tiny SAM pretrained on other synthetic scenes; not SAM)."""
    from geosam.demo import DemoParams, run_demo

    if scene_size < 512:
        raise GeosamError(f"--scene-size {scene_size} is too small: use at least 512 px")
    if epochs is not None and epochs < 1:
        raise GeosamError(f"--epochs {epochs} must be at least 1")
    params = DemoParams(checkpoint, model_type, scene_size, seed, epochs, from_scratch=from_scratch)
    result = run_demo(output, params, overwrite=overwrite, progress=not quiet, announce=click.echo)
    paths = result.paths
    click.echo(result.table, nl=False)
    click.echo(
        f"segment: {result.polygons} polygons from {result.prompts} point prompts, mean "
        f"polygon IoU with the true parcels {result.polygon_iou:.3f} (box-fill, each parcel's "
        f"bounding box: {result.box_fill_iou:.3f})"
    )
    scores = result.parcel_map
    click.echo(
        f"automatic mode (no prompts), on the val area: {scores.predicted} parcels mapped, "
        f"{scores.matched} of its {scores.truth} true parcels found at IoU 0.5 or more (mean "
        f"{scores.matched_miou or 0:.3f}), object F1@0.5 {scores.f1 or 0:.3f}"
    )
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
    click.echo(f"timings: {timings}")
    for what, key in (
        ("scene", "scene"),
        ("tiles (preview.png, footprints.gpkg)", "tiles"),
        ("training run", "run"),
        ("evaluation (metrics.md, examples.png)", "evaluation"),
        ("ONNX model (for segment and the QGIS plugin)", "model"),
        ("parcels from the clicks (open in QGIS)", "parcels"),
        ("automatic-mode parcel map", "parcel_map"),
        ("picture of the parcels", "picture"),
    ):
        click.echo(f"{what}: {paths[key]}")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--config-file",
    required=True,
    type=click.Path(path_type=Path),
    help="A yacs preset, e.g. configs/sam_vit_b_decoder.yaml or configs/tiny.yaml.",
)
@click.option(
    "--resume", is_flag=True, help="Continue the run in OUTPUT_DIR from its last checkpoint."
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in OUTPUT_DIR.")
@click.option(
    "--nproc-per-node",
    type=int,
    default=None,
    help="Spawn this many training processes here (or start geosam with torchrun).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("opts", nargs=-1, type=click.UNPROCESSED)
def train(
    config_file: Path,
    resume: bool,
    overwrite: bool,
    nproc_per_node: int | None,
    quiet: bool,
    opts: tuple[str, ...],
) -> None:
    """Fine-tune SAM on a tile dataset. OPTS are KEY VALUE config overrides, e.g.
    DATASETS.TRAIN tiles/ MODEL.CHECKPOINT sam_vit_b_01ec64.pth OUTPUT_DIR runs/a."""
    from geosam.config import load_config
    from geosam.engine.launch import launch_training

    if not config_file.is_file():
        raise GeosamError(f"--config-file {config_file} does not exist")
    cfg = load_config(str(config_file), list(opts))
    launch_training(
        cfg, resume=resume, overwrite=overwrite, nproc_per_node=nproc_per_node, progress=not quiet
    )
    click.echo(f"run: {cfg.OUTPUT_DIR}")


@cli.command(context_settings={"ignore_unknown_options": True})
@_model_source_options("evaluate")
@click.option(
    "--dataset",
    required=True,
    type=click.Path(path_type=Path),
    help="A tile dataset folder (geosam tile); its fixed evaluation prompts are used.",
)
@click.option("--split", default="val", show_default=True, help="Split of the dataset.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Folder for the results (default with --run: RUN/eval-<dataset>-<split>).",
)
@click.option(
    "--examples",
    default=6,
    show_default=True,
    type=click.IntRange(min=0),
    help="Prompts shown in examples.png (0: no panel).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("opts", nargs=-1, type=click.UNPROCESSED)
def evaluate(
    run_dir: Path | None,
    config_file: Path | None,
    dataset: Path,
    split: str,
    output: Path | None,
    weights: str,
    examples: int,
    quiet: bool,
    opts: tuple[str, ...],
) -> None:
    """Compare the base and tuned model of a run (or score an untuned model) with a box-fill
    baseline on a tile dataset's fixed prompts. OPTS are KEY VALUE config overrides, e.g.
    MODEL.DEVICE cpu, or MODEL.CHECKPOINT sam_vit_b_01ec64.pth with --config-file."""
    from geosam.engine import evaluate as evaluation
    from geosam.engine.run_dir import evaluation_dir

    cfg, tuned = _load_model_source(run_dir, config_file, weights, opts)
    if run_dir is not None:
        output = output or evaluation_dir(run_dir, dataset, split)
    elif output is None:
        raise GeosamError("--config-file needs -o OUTPUT_DIR for the results")
    result = evaluation.evaluate(
        cfg, dataset, split, output, weights=tuned, examples=examples, progress=not quiet
    )
    click.echo(result.table, nl=False)
    if result.note:
        click.echo(f"note: {result.note}")
    click.echo(f"results: {', '.join(str(path) for path in result.files)}")


@cli.command("export-onnx", context_settings={"ignore_unknown_options": True})
@_model_source_options("export")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Model folder to create: encoder.onnx, decoder.onnx, manifest.json.",
)
@click.option(
    "--quantize", is_flag=True, help="Also write int8 encoder.int8.onnx and decoder.int8.onnx."
)
@click.option("--opset", default=17, show_default=True, help="ONNX opset version.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty model folder.")
@click.option(
    "--no-calibration",
    is_flag=True,
    help="With --run, skip tuning automatic mode's thresholds on the run's val split (the "
    "model then gets SAM's in geosam segment --auto and the plugin).",
)
@click.argument("opts", nargs=-1, type=click.UNPROCESSED)
def export_onnx(
    run_dir: Path | None,
    config_file: Path | None,
    weights: str,
    output: Path,
    quantize: bool,
    opset: int,
    overwrite: bool,
    no_calibration: bool,
    opts: tuple[str, ...],
) -> None:
    """Export a model to ONNX for geosam segment and the QGIS plugin, with a parity check
    against PyTorch; a run's model also gets the automatic-mode thresholds that maximise
    object F1 on its val split (in its manifest and the run's auto_thresholds.json). OPTS
    are KEY VALUE config overrides, e.g. MODEL.CHECKPOINT
    sam_vit_b_01ec64.pth with --config-file, or DATASETS.TRAIN for a run whose tiles moved."""
    from geosam.export import export_onnx as export

    cfg, tuned = _load_model_source(run_dir, config_file, weights, opts)
    result = export(
        cfg,
        output,
        weights=tuned.path if tuned is not None else None,
        quantize_int8=quantize,
        opset=opset,
        overwrite=overwrite,
        run_dir=run_dir,
        calibrate=not no_calibration,
    )
    click.echo(result.report)
    click.echo(f"model: {result.model_dir} ({', '.join(result.manifest['files'])})")


@cli.command("export-checkpoint", context_settings={"ignore_unknown_options": True})
@_model_source_options("export")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The .pth file to write.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@click.argument("opts", nargs=-1, type=click.UNPROCESSED)
def export_checkpoint(
    run_dir: Path | None,
    config_file: Path | None,
    weights: str,
    output: Path,
    overwrite: bool,
    opts: tuple[str, ...],
) -> None:
    """Write a model (base plus trained weights) as an official-format SAM checkpoint, e.g. a
    tiny SAM trained from scratch (configs/tiny_pretrain.yaml) to fine-tune from with
    MODEL.CHECKPOINT, or a tuned ViT for other SAM tools."""
    from geosam.export.checkpoint_export import export_checkpoint as export

    cfg, tuned = _load_model_source(run_dir, config_file, weights, opts)
    export(cfg, output, weights=tuned.path if tuned is not None else None, overwrite=overwrite)
    click.echo(f"checkpoint: {output} ({cfg.MODEL.TYPE}, {cfg.INPUT.IMAGE_SIZE} px)")


@cli.command()
@click.argument("rasters", nargs=-1, required=True)
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Model folder written by geosam export-onnx.",
)
@click.option(
    "--prompts",
    type=click.Path(path_type=Path),
    help="Points (point prompts) and/or polygons (box prompts), any CRS and vector format.",
)
@click.option(
    "--auto",
    is_flag=True,
    help="No prompts: SAM's automatic mode (a point grid per window) over the whole raster, "
    "one polygon per parcel found. Exactly one of --prompts and --auto.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Parcel polygons to write: *.shp, *.gpkg or *.parquet (GeoParquet).",
)
@click.option("--layer", help="Layer of a multi-layer prompts file (e.g. a GeoPackage).")
@click.option(
    "--label-field",
    help="Column marking prompts 1 (positive) or 0 (negative point, added to every positive "
    "prompt whose window holds it).",
)
@click.option(
    "--format",
    "driver",
    type=click.Choice(["ESRI Shapefile", "GPKG", "Parquet"]),
    help="Output format (default: from the output's suffix).",
)
@click.option(
    "--simplify",
    default=0.0,
    show_default=True,
    help="Simplification tolerance in map units of the raster's CRS (0: exact pixel edges). "
    "With --auto, the parcels are simplified as a coverage: shared boundaries stay shared.",
)
@click.option(
    "--min-score",
    type=float,
    help="Drop polygons whose predicted IoU is below this (default: keep all).",
)
@click.option(
    "--crs", help="CRS of the output, e.g. EPSG:4326 (default: the first raster's, logged)."
)
@click.option(
    "--all-parts",
    is_flag=True,
    help="With --prompts, keep every part of a mask, not only the part under a positive point "
    "(or, for a box, the largest).",
)
@click.option(
    "--flip-tta",
    is_flag=True,
    help="Average each mask over the window and its three mirror images (test-time flips): "
    "steadier edges, 4x the model runs.",
)
@_auto_options(
    (
        "--points-per-side",
        None,
        "an N x N point grid per window; each point is one decoder call. Default: the grid "
        f"the model's thresholds were tuned at, else {AutoParams.points_per_side}.",
        int,
    ),
    (
        "--pred-iou-thresh",
        None,
        "keep masks whose predicted IoU is at least this (0-1). Default: the model's own, "
        f"tuned on its val split by export-onnx, else SAM's {AutoParams.pred_iou_thresh:g}.",
    ),
    (
        "--stability-thresh",
        None,
        "keep masks whose stability score is at least this (0-1). Default: the model's own, "
        f"tuned on its val split by export-onnx, else SAM's {AutoParams.stability_thresh:g}.",
    ),
    ("--min-area", DEFAULT_MIN_AREA_M2, "drop parcels smaller than this many m²."),
    ("--min-hole", DEFAULT_MIN_AREA_M2, "fill holes in parcels smaller than this many m²."),
    (
        "--overlap",
        AutoParams.overlap,
        "fraction of a window shared with its neighbours "
        "(0-0.5), where pieces of parcels cut by window edges are joined.",
    ),
)
@click.option(
    "--overlapping",
    is_flag=True,
    help="--auto: keep parcels as SAM's masks give them, overlapping, each simplified on its "
    "own. By default the parcels are a coverage: no pixel in two parcels (a contested pixel "
    "goes to the parcel of higher predicted IoU, then stability), neighbours share their "
    "boundary exactly.",
)
@click.option(
    "--skip-found/--every-point",
    default=AutoParams.skip_found,
    show_default=True,
    help="--auto: no decoder call for a grid point inside a parcel already found (in its "
    "window, or whole in an earlier one), which would find that parcel again; --every-point "
    "decodes every point, as SAM does.",
)
@click.option(
    "--keep-open-pieces",
    is_flag=True,
    help="--auto: keep a window's piece of a parcel that goes on beyond the window's edge where "
    "the neighbouring window found nothing to join it. By default such pieces are dropped: "
    "most are window-shaped parts of larger parcels, not parcels.",
)
@click.option(
    "--fine-pass",
    is_flag=True,
    help="--auto: look again at twice the resolution where a window found no parcel, for "
    "parcels too small for the model at its own scale (under a quarter window across); "
    "costs about 2.5x the time.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    help="--auto: blocks run on a Dask LocalCluster of this many single-threaded worker "
    "processes (1: in this process, no cluster).",
)
@click.option(
    "--threads",
    type=int,
    help="onnxruntime threads per process (default: all cores in this process, 1 in each "
    "--workers process; a --scheduler's workers: all their cores).",
)
@click.option(
    "--scheduler",
    help="--auto: run the blocks on the Dask cluster at this address (tcp://host:8786) "
    "instead; its workers need geosam and the rasters and model at the same paths or URLs.",
)
@click.option(
    "--block-windows",
    default=4,
    show_default=True,
    help="--auto: a unit of work is a block of N x N windows of one raster.",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="A raster that cannot be read (or has no CRS) is a warning and a count, not an error.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="--auto: discard the finished blocks kept beside the output by an interrupted run "
    "with other settings (by default a rerun resumes a run of the same settings).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def segment(
    rasters: tuple[str, ...],
    model_dir: Path,
    prompts: Path | None,
    auto: bool,
    output: Path,
    layer: str | None,
    label_field: str | None,
    driver: str | None,
    simplify: float,
    min_score: float | None,
    crs: str | None,
    all_parts: bool,
    flip_tta: bool,
    points_per_side: int | None,
    pred_iou_thresh: float | None,
    stability_thresh: float | None,
    min_area: float,
    min_hole: float,
    overlap: float,
    overlapping: bool,
    skip_found: bool,
    keep_open_pieces: bool,
    fine_pass: bool,
    workers: int,
    threads: int | None,
    scheduler: str | None,
    block_windows: int,
    skip_bad: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Segment the parcel under each prompt on RASTERS (files, folders, globs or VRTs, any
    CRSs) and write one polygon per prompt, with the prompt's attributes, score (predicted
    IoU), area_m2 and source (the raster); or, with --auto, every parcel found on RASTERS,
    with score, stability, area_m2 and source (a raster with none adds nothing and is counted).
    --auto runs in blocks of windows, on Dask with --workers or --scheduler, and resumes
    after an interruption: finished blocks are kept beside the output until it is written."""
    from geosam.segment import SegmentParams
    from geosam.segment import segment as run_segment

    if (prompts is None) == (not auto):
        raise GeosamError("give exactly one of --prompts VECTOR and --auto")
    if auto and (layer or label_field):
        raise GeosamError("--layer and --label-field select prompts: use them with --prompts")
    if overlapping and not auto:
        raise GeosamError("--overlapping is an --auto option: prompts give one polygon each")
    if threads is not None and threads < 1:
        raise GeosamError(f"--threads must be 1 or more, got {threads}")
    if not auto and (workers != 1 or scheduler or overwrite):
        raise GeosamError(
            "--workers, --scheduler and --overwrite are --auto options: prompts run in-process"
        )
    params = SegmentParams(
        layer=layer,
        label_field=label_field,
        driver=driver,
        simplify=simplify,
        min_score=min_score,
        crs=crs,
        all_parts=all_parts,
        flip_tta=flip_tta,
        threads=threads,
    )
    if auto:
        from geosam.segment.dask_run import Engine
        from geosam.segment.region import RegionOptions, segment_region

        chosen = (pred_iou_thresh, stability_thresh, points_per_side)
        given = {
            name: value
            for name, value in zip((*THRESHOLDS, GRID), chosen, strict=True)
            if value is not None
        }
        settings = AutoParams(
            overlap=overlap,
            coverage=not overlapping,
            skip_found=skip_found,
            keep_open_pieces=keep_open_pieces,
            fine_pass=fine_pass,
            **given,
        )
        options = RegionOptions(Engine(workers, scheduler), block_windows, skip_bad, overwrite)
        result = segment_region(
            rasters, model_dir, output, params, settings, min_area, min_hole, given, options,
            not quiet,
        )  # fmt: skip
    else:
        result = run_segment(rasters, model_dir, prompts, output, params, not quiet, skip_bad)
    click.echo(_summary(result))
    if result.renamed:
        renamed = ", ".join(f"{old} -> {new}" for old, new in result.renamed.items())
        click.echo(f"Shapefile fields renamed: {renamed}")


def _summary(result: SegmentResult) -> str:
    """The last lines of ``geosam segment``: what was written, from what, at what cost."""
    from geosam.runtime.reasons import describe_counts
    from geosam.segment.region import RegionResult

    skipped = describe_counts(result.skipped)
    if not isinstance(result, RegionResult):
        return (
            f"{result.output}: {result.polygons} polygons from {result.prompts} prompts"
            + (f" (skipped: {skipped})" if skipped else "")
            + f"; {result.encoded} windows encoded, {result.cache_hits} reused"
        )
    peaks = ", ".join(f"{peak / 2**20:.0f}" for _, peak in sorted(result.peaks.items()))
    return (
        f"{result.output}: {result.polygons} polygons from {result.encoded} windows, "
        f"{result.prompts} point prompts (masks dropped: {skipped or 'none'})\n"
        f"{result.rasters} rasters ({result.empty} without parcels"
        + (f", {result.bad} unreadable skipped" if result.bad else "")
        + f"), {result.km2:.3g} km², {result.polygons} parcels in {result.seconds:.1f} s "
        f"({result.polygons / max(result.seconds, 1e-9):.2f} parcels/s); peak memory per "
        f"worker: {peaks or '-'} MiB"
    )


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The model folder to improve (geosam export-onnx); its training run is continued.",
)
@click.option(
    "--raster",
    required=True,
    type=click.Path(path_type=Path),
    help="The raster the parcels lie on.",
)
@click.option(
    "--parcels",
    required=True,
    type=click.Path(path_type=Path),
    help="The corrected parcel polygons (at least 10), any CRS and vector format.",
)
@click.option("--layer", help="Layer of a multi-layer parcels file (e.g. a GeoPackage).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The new model folder; its training run goes beside it, in OUTPUT.training.",
)
@click.option(
    "--holdout",
    default=0.2,
    show_default=True,
    help="Share of the parcels held aside to score the old and the new model.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the held-aside choice.")
@click.option("--epochs", default=4, show_default=True, help="Training epochs.")
@click.option(
    "--no-calibration",
    is_flag=True,
    help="Skip tuning automatic mode's thresholds on the held-aside parcels' tiles (the new "
    "model then gets SAM's).",
)
@click.option("--overwrite", is_flag=True, help="Replace the output folders.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("opts", nargs=-1, type=click.UNPROCESSED)
def improve(
    model_dir: Path,
    raster: Path,
    parcels: Path,
    layer: str | None,
    output: Path,
    holdout: float,
    seed: int,
    epochs: int,
    no_calibration: bool,
    overwrite: bool,
    quiet: bool,
    opts: tuple[str, ...],
) -> None:
    """Train a model further on the parcels a user corrected: tile them, continue the model's
    training run with a seeded share held aside, score old and new on those, export the new
    model and a before/after report. Prints "PROGRESS <0-100> <stage>" lines as stages start;
    SIGTERM cancels, leaving nothing behind. OPTS are KEY VALUE training overrides."""
    import signal

    from geosam.improve import ImproveParams, run_improve

    # a cancel unwinds like an error: the half-made folders are removed on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    params = ImproveParams(
        model_dir, raster, parcels, output, layer, holdout, seed, epochs, opts, overwrite,
        calibrate=not no_calibration,
    )  # fmt: skip
    result = run_improve(
        params,
        lambda percent, stage: click.echo(f"PROGRESS {percent} {stage}", color=False),
        bars=not quiet,
    )
    for kind, before in result.report["before"].items():
        after = result.report["after"][kind]["mIoU"]
        click.echo(f"{kind} mIoU on held-aside parcels: {before['mIoU']:.3f} -> {after:.3f}")
    if result.report["note"]:
        click.echo(f"note: {result.report['note']}")
    click.echo(f"model: {result.model_dir}\ntraining: {result.training_dir}")


@cli.command("score-parcels")
@click.argument("predicted", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--truth",
    type=click.Path(path_type=Path),
    help="True parcel polygons, any CRS and vector format (default with --dataset: the "
    "labels the dataset was cut from).",
)
@click.option("--truth-layer", help="Layer of a multi-layer truth file.")
@click.option("--layer", help="Layer of multi-layer PREDICTED files.")
@click.option(
    "--raster",
    "rasters",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A raster the map was made from (repeatable): score in its valid footprint, one row "
    "per raster.",
)
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    help="A tile dataset (geosam tile): score in its --split tiles, one row per source raster.",
)
@click.option("--split", default="val", show_default=True, help="Split of --dataset.")
@click.option(
    "--iou",
    "iou_threshold",
    default=0.5,
    show_default=True,
    help="IoU at which a prediction finds a true parcel (0-1].",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for scores.json, scores.md and scores.png.",
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
def score_parcels(
    predicted: tuple[Path, ...],
    truth: Path | None,
    truth_layer: str | None,
    layer: str | None,
    rasters: tuple[Path, ...],
    dataset: Path | None,
    split: str,
    iou_threshold: float,
    output: Path,
    overwrite: bool,
) -> None:
    """Score the parcel map PREDICTED (files of geosam segment --auto, e.g. one per raster)
    against true parcels: object precision, recall and F1 at --iou with one-to-one matching,
    mean IoU of the matches and the share of the truth's area covered, overall and per
    raster."""
    from geosam.segment.score_report import score_parcel_files

    _, _, table = score_parcel_files(
        predicted,
        output,
        truth=truth,
        truth_layer=truth_layer,
        layer=layer,
        rasters=rasters,
        dataset=dataset,
        split=split,
        iou_threshold=iou_threshold,
        overwrite=overwrite,
    )
    click.echo(table, nl=False)
    click.echo(f"results: {output} (scores.json, scores.md, scores.png)")


def main() -> None:
    cli(prog_name="geosam")


if __name__ == "__main__":
    main()
