"""``geosam demo``: every stage of geosam, end to end, on a synthetic scene, in minutes on a CPU.

synthetic scene → tile → train → evaluate → export-onnx → segment, each through the same
functions as its command, so the demo shows what the commands do and breaks when they break.
Without a checkpoint it trains the tiny SAM from scratch (configs/tiny_pretrain.yaml's recipe:
every part trains, BCE + Dice), so "base" is a random model and "tuned" is what a few minutes
of CPU training reach. With an official checkpoint it fine-tunes that model's decoder on cached
embeddings instead (configs/sam_vit_b_decoder.yaml's recipe), the way a user tunes real SAM.

The segment stage prompts one point inside each parcel of the validation area (held out from
training by the tile split) and scores the polygons against the true parcels: the round trip
from training to the GIS file a user opens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from yacs.config import CfgNode

from geosam.config import load_config
from geosam.data.synthetic import SceneFiles, make_scene
from geosam.data.tiling import TileParams, tile_dataset
from geosam.data.tiling.grid import plan_tiles
from geosam.engine.evaluate import Evaluation, evaluate
from geosam.engine.launch import launch_training
from geosam.engine.run_dir import TunedWeights, evaluation_dir, load_run
from geosam.export import export_onnx
from geosam.modeling.sam import SAM_SPECS
from geosam.segment import SegmentParams, segment
from geosam.utils.errors import GeosamError
from geosam.utils.publish import refuse_occupied, reset_dir
from geosam.utils.visualize import save_figure

logger = logging.getLogger(__name__)

ID_FIELD = "parcel_id"
# Training recipes, as config overrides of the defaults (the demo must run from an installed
# package, where configs/ is not at hand). The tiny one is configs/tiny_pretrain.yaml's without
# its colour jitter: the demo trains and scores on one synthetic rendering, where jitter would
# only slow learning.
TINY_RECIPE = (
    ("MODEL.TYPE", "tiny"),
    ("MODEL.TRAINABLE", "[image_encoder, prompt_encoder, mask_decoder]"),
    ("INPUT.IMAGE_SIZE", "256"),
    ("INPUT.BOX_JITTER_MAX_PX", "5"),
    ("INPUT.MAX_INSTANCES", "8"),
    ("DATALOADER.NUM_WORKERS", "0"),
    ("SOLVER.BASE_LR", "1e-3"),
    ("SOLVER.WARMUP_ITERS", "50"),
    ("LOSS.FOCAL_WEIGHT", "1.0"),
    ("LOSS.FOCAL_ALPHA", "-1.0"),
    ("LOSS.FOCAL_GAMMA", "0.0"),
)
# Decoder-only fine-tuning of an official checkpoint. No flips or rotations: each would be
# another encoder pass per chip to cache (10-20 s each for ViT-B on a CPU).
CHECKPOINT_RECIPE = (
    ("INPUT.IMAGE_SIZE", "1024"),
    ("INPUT.HFLIP", "False"),
    ("INPUT.VFLIP", "False"),
    ("INPUT.ROT90", "False"),
    ("DATALOADER.NUM_WORKERS", "0"),
    ("SOLVER.BASE_LR", "5e-5"),
    ("SOLVER.WARMUP_ITERS", "10"),
)


@dataclass(frozen=True)
class DemoParams:
    """The demo's knobs. ``epochs`` and ``tile_size`` None: the recipe's (tiny: 48 epochs of
    256 px tiles, 1,300 steps; checkpoint: 4 epochs of 1024 px). Timings: docs/benchmarks.md."""

    checkpoint: Path | None = None
    model_type: str | None = None
    scene_size: int = 2048
    seed: int = 0
    epochs: int | None = None
    tile_size: int | None = None


@dataclass
class DemoResult:
    """Where everything went, and the numbers worth printing."""

    output: Path
    paths: dict[str, Path] = field(default_factory=dict)
    table: str = ""
    polygon_iou: float = float("nan")
    # the same measure for box-fill: each parcel's bounding box as its polygon
    box_fill_iou: float = float("nan")
    polygons: int = 0
    prompts: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def checkpoint_model_type(checkpoint: Path, model_type: str | None) -> str:
    """MODEL.TYPE for ``checkpoint``: as given, or from the official file name."""
    if model_type is not None:
        return model_type
    for name, spec in SAM_SPECS.items():
        if spec.official_checkpoint and spec.official_checkpoint == checkpoint.name:
            return name
    known = ", ".join(s.official_checkpoint for s in SAM_SPECS.values() if s.official_checkpoint)
    raise GeosamError(
        f"cannot tell the model type of {checkpoint} from its name (not one of {known}): "
        "give --model-type vit_b, vit_l or vit_h"
    )


def training_config(params: DemoParams, tiles: Path, run_dir: Path) -> CfgNode:
    """The demo's training config: a recipe, the dataset, the run folder, the epochs."""
    if params.checkpoint is None:
        recipe, epochs = TINY_RECIPE, params.epochs or 48
        eval_period = max(1, epochs // 4)
    else:
        if not params.checkpoint.is_file():
            raise GeosamError(f"--checkpoint {params.checkpoint} not found")
        model_type = checkpoint_model_type(params.checkpoint, params.model_type)
        recipe = (
            ("MODEL.TYPE", model_type),
            ("MODEL.CHECKPOINT", str(params.checkpoint)),
            *CHECKPOINT_RECIPE,
        )
        epochs, eval_period = params.epochs or 4, 1
    opts = [item for pair in recipe for item in pair]
    opts += ["DATASETS.TRAIN", str(tiles), "OUTPUT_DIR", str(run_dir), "SEED", str(params.seed)]
    opts += ["SOLVER.MAX_EPOCHS", str(epochs), "TEST.EVAL_PERIOD", str(eval_period)]
    return load_config(None, opts)


def tile_params(params: DemoParams) -> TileParams:
    """The demo's tiling: 256 px tiles in split blocks of 2 × 2 tiles for the tiny model;
    1024 px tiles in blocks of one tile for a checkpoint, so that the default 2,048 px scene
    has four blocks, one of them for validation (blocks of 2 × 2 would make it one block and
    leave no val split). Refuses a scene too small for two blocks."""
    tile_size = params.tile_size or (256 if params.checkpoint is None else 1024)
    split_block = 2 if params.checkpoint is None else 1
    tiling = TileParams(
        tile_size=tile_size, overlap=tile_size // 8, split_block=split_block, seed=params.seed
    )
    size = params.scene_size
    planned = plan_tiles(0, size, size, tile_size, tiling.overlap, split_block)
    if len({tile.block for tile in planned}) < 2:
        raise GeosamError(
            f"--scene-size {size} leaves no validation area with {tile_size} px tiles "
            f"(one split block of {split_block * tile_size} px): use a larger --scene-size"
        )
    return tiling


def val_area_parcels(labels: Path, footprints: Path) -> gpd.GeoDataFrame:
    """The parcels whose representative point lies in the validation tiles: held out from
    training by the tile split."""
    parcels = gpd.read_file(labels, layer="parcels")
    tiles = gpd.read_file(footprints)
    val_area = shapely.union_all(tiles.loc[tiles["split"] == "val"].to_crs(parcels.crs).geometry)
    chosen = parcels.loc[parcels.geometry.representative_point().within(val_area)]
    if chosen.empty:
        raise GeosamError("the validation tiles hold no parcel: use a larger --scene-size")
    return chosen


def write_point_prompts(parcels: gpd.GeoDataFrame, out: Path) -> None:
    """One positive point prompt inside each parcel (its representative point, which a
    concave parcel's centroid need not be), with the parcel's ``ID_FIELD``, as layer
    "prompts" of the GeoPackage ``out``."""
    prompts = gpd.GeoDataFrame(
        {ID_FIELD: parcels[ID_FIELD].to_numpy()},
        geometry=parcels.geometry.representative_point().to_numpy(),
        crs=parcels.crs,
    )
    prompts.to_file(out, layer="prompts", engine="pyogrio")


def polygon_iou(result: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> np.ndarray:
    """IoU of each true parcel with the polygon segmented from its prompt (0 where none);
    both carry ``ID_FIELD``."""
    predicted = result.to_crs(truth.crs).dissolve(by=ID_FIELD).geometry
    truth_geometry = truth.set_index(ID_FIELD).geometry
    matched = predicted.reindex(truth_geometry.index)
    found = matched.notna().to_numpy()
    ious = np.zeros(len(truth_geometry))
    a, b = truth_geometry.to_numpy()[found], matched.to_numpy()[found]
    ious[found] = shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))
    return ious


def box_fill_polygon_iou(truth: gpd.GeoDataFrame) -> np.ndarray:
    """:func:`polygon_iou` of box-fill: each parcel's bounding box as its segmented polygon."""
    return polygon_iou(truth.assign(geometry=truth.geometry.envelope), truth)


def render_result(
    raster: Path,
    truth: gpd.GeoDataFrame,
    result: gpd.GeoDataFrame,
    prompts: Path,
    out: Path,
    area: str = "val area",
) -> None:
    """The extent of ``truth`` (named ``area`` in the title): raster, true parcels (white
    outlines), segmented polygons (orange), prompts (cyan points)."""
    xmin, ymin, xmax, ymax = truth.total_bounds
    fig, ax = plt.subplots(figsize=(9, 9))
    with rasterio.open(raster) as src:
        window = rasterio.windows.from_bounds(xmin, ymin, xmax, ymax, src.transform)
        scale = max(1, round(max(window.width, window.height) / 1500))
        shape = (src.count, int(window.height // scale), int(window.width // scale))
        image = src.read(window=window, out_shape=shape, resampling=Resampling.average)
        bounds = rasterio.windows.bounds(window, src.transform)
    ax.imshow(np.moveaxis(image[:3], 0, -1), extent=(bounds[0], bounds[2], bounds[1], bounds[3]))
    result.to_crs(truth.crs).plot(ax=ax, color="orange", alpha=0.45, edgecolor="orange")
    truth.boundary.plot(ax=ax, color="white", linewidth=0.8)
    gpd.read_file(prompts).to_crs(truth.crs).plot(ax=ax, color="cyan", markersize=6)
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_axis_off()
    ax.set_title(f"geosam: segmented parcels (orange) vs true parcels (white), {area}")
    save_figure(fig, out)


def demo_paths(output: Path) -> dict[str, Path]:
    """Where each stage writes, inside ``output``."""
    return {
        "scene": output / "scene",
        "tiles": output / "tiles",
        "run": output / "run",
        "model": output / "model",
        "prompts": output / "prompts.gpkg",
        "parcels": output / "parcels.shp",
        "picture": output / "parcels.png",
    }


class StageTimer:
    """``with stage(name, what):`` announces a stage and records its seconds once it is done."""

    def __init__(self, seconds: dict[str, float], announce: Callable[[str], Any]) -> None:
        self.seconds, self.announce = seconds, announce

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        self.announce(f"demo: {what}")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


def evaluate_demo_run(
    paths: dict[str, Path], progress: bool
) -> tuple[CfgNode, TunedWeights, Evaluation]:
    """The run's config, its best weights, and their evaluation (base vs tuned vs box-fill)
    on the val tiles, written where ``geosam evaluate --run`` writes by default."""
    run_cfg, weights = load_run(paths["run"], "best")
    evaluation = evaluate(
        run_cfg,
        paths["tiles"],
        "val",
        evaluation_dir(paths["run"], paths["tiles"], "val"),
        weights=weights,
        progress=progress,
    )
    return run_cfg, weights, evaluation


def segment_val_area(
    scene: SceneFiles, paths: dict[str, Path], result: DemoResult, progress: bool
) -> None:
    """One point prompt per parcel of the val area through ``geosam segment``; the polygons
    scored against the true parcels (and box-fill's) into ``result``, and pictured."""
    truth = val_area_parcels(scene.labels, paths["tiles"] / "footprints.gpkg")
    write_point_prompts(truth, paths["prompts"])
    segmented = segment(
        scene.raster, paths["model"], paths["prompts"], paths["parcels"], SegmentParams(),
        progress=progress,
    )  # fmt: skip
    polygons = gpd.read_file(paths["parcels"])
    result.prompts, result.polygons = segmented.prompts, segmented.polygons
    result.polygon_iou = float(polygon_iou(polygons, truth).mean())
    result.box_fill_iou = float(box_fill_polygon_iou(truth).mean())
    render_result(scene.raster, truth, polygons, paths["prompts"], paths["picture"])


def run_demo(
    output: Path,
    params: DemoParams = DemoParams(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    announce: Callable[[str], Any] = logger.info,
) -> DemoResult:
    """Run every stage into ``output`` (refused if it holds anything, unless ``overwrite``);
    ``announce`` gets one line as each stage starts.

    Each stage publishes its own output whole (scene, tiles, run, evaluation, model,
    parcels), so a failed demo leaves the stages that finished; ``output`` itself cannot be
    staged and renamed, since the run and the model record the paths they were made at.
    """
    refuse_occupied(output, overwrite, what="-o")
    # validate the options before anything is written and minutes of work
    cfg = training_config(params, output / "tiles", output / "run")
    tiling = tile_params(params)
    reset_dir(output)
    result = DemoResult(output, paths=demo_paths(output))
    paths = result.paths
    stage = StageTimer(result.seconds, announce)

    with stage("synth", f"synthetic {params.scene_size} px scene → {paths['scene']}"):
        scene = make_scene(paths["scene"], params.scene_size, params.seed, progress=progress)
    with stage("tile", f"tiles of {tiling.tile_size} px → {paths['tiles']}"):
        tile_dataset(
            [str(scene.raster)], scene.labels, paths["tiles"], tiling, id_field=ID_FIELD,
            progress=progress,
        )  # fmt: skip
    with stage("train", f"{cfg.MODEL.TYPE}, {cfg.SOLVER.MAX_EPOCHS} epochs → {paths['run']}"):
        launch_training(cfg, progress=progress)
    with stage("evaluate", "base vs tuned vs box-fill on the val tiles"):
        run_cfg, weights, evaluation = evaluate_demo_run(paths, progress)
        result.table, paths["evaluation"] = evaluation.table, evaluation.output_dir
    with stage("export", f"ONNX → {paths['model']}"):
        export_onnx(run_cfg, paths["model"], weights=weights.path, run_dir=paths["run"])
    with stage("segment", f"one point per val parcel → {paths['parcels']}"):
        segment_val_area(scene, paths, result, progress)
    return result
