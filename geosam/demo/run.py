"""``run_demo``: the stages in order, each timed and announced, each publishing its output."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
from yacs.config import CfgNode

from geosam.data.synthetic import SceneFiles, make_scene
from geosam.data.tiling import tile_dataset
from geosam.demo.picture import render_demo
from geosam.demo.recipes import DemoParams, tile_params, training_config
from geosam.demo.scoring import (
    ID_FIELD,
    box_fill_polygon_iou,
    parcel_map_scores,
    polygon_iou,
    val_area_parcels,
    write_point_prompts,
)
from geosam.engine.evaluate import Evaluation, evaluate
from geosam.engine.launch import launch_training
from geosam.engine.run_dir import TunedWeights, evaluation_dir, load_run
from geosam.export import export_onnx
from geosam.segment import SegmentParams, segment
from geosam.segment.auto import segment_auto
from geosam.segment.score import ParcelScores
from geosam.utils.publish import refuse_occupied, reset_dir

logger = logging.getLogger(__name__)


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
    # the automatic-mode parcel map's object scores on the val area
    parcel_map: ParcelScores | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def demo_paths(output: Path) -> dict[str, Path]:
    """Where each stage writes, inside ``output``."""
    return {
        "scene": output / "scene",
        "tiles": output / "tiles",
        "run": output / "run",
        "model": output / "model",
        "prompts": output / "prompts.gpkg",
        "parcels": output / "parcels.shp",
        "parcel_map": output / "parcel_map.gpkg",
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
) -> gpd.GeoDataFrame:
    """One point prompt per parcel of the val area through ``geosam segment``; the polygons
    scored against the true parcels (and box-fill's) into ``result``. Returns those parcels."""
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
    return truth


def map_parcels(
    scene: SceneFiles, paths: dict[str, Path], result: DemoResult, progress: bool
) -> None:
    """The automatic-mode parcel map of the whole scene (``geosam segment --auto``, with the
    thresholds export-onnx tuned into the model), scored on the val area into ``result``."""
    segment_auto(scene.raster, paths["model"], paths["parcel_map"], progress=progress)
    footprints = paths["tiles"] / "footprints.gpkg"
    result.parcel_map = parcel_map_scores(paths["parcel_map"], scene.labels, footprints)


def picture(
    scene: SceneFiles, truth: gpd.GeoDataFrame, paths: dict[str, Path], result: DemoResult
) -> None:
    """Both results over the val area (its true parcels ``truth``), side by side, into
    ``paths["picture"]``."""
    scores = result.parcel_map
    titles = (
        f"one click per parcel (cyan)\npolygon IoU {result.polygon_iou:.2f}, "
        f"box-fill {result.box_fill_iou:.2f}",
        f"automatic mode, no clicks\nobject F1@0.5 {scores.f1 or 0:.2f} "
        f"({scores.matched} of {scores.truth} parcels found)",
    )
    render_demo(
        scene.raster,
        truth,
        gpd.read_file(paths["parcels"]),
        paths["prompts"],
        gpd.read_file(paths["parcel_map"]),
        titles,
        paths["picture"],
    )


def run_demo(
    output: Path,
    params: DemoParams | None = None,
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
    params = params or DemoParams()
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
        truth = segment_val_area(scene, paths, result, progress)
    with stage("auto", f"automatic mode, every parcel of the scene → {paths['parcel_map']}"):
        map_parcels(scene, paths, result, progress)
    picture(scene, truth, paths, result)
    return result
