"""``geosam improve``: a model, the parcels a user corrected, and the raster they lie on → a
new model trained further on those parcels, and a before/after report.

tile (the parcels' area) → train (continuing the old model's run, :mod:`.start`) → evaluate
old and new on the parcels held aside → export-onnx, each through the same function as its
command, in this process (as :mod:`geosam.demo` chains them). The held-aside parcels are tiled
apart from the ones trained on, so no held-aside parcel is ever a training target; they may
show in training chips as unlabelled ground, which prompt-based training never scores.

Training runs without validation (the one split held aside is what the report scores; choosing
the best epoch on it would flatter the new model), so the run's final weights are the new
model.

What is written: the new model folder ``-o`` (the ONNX model and the report, published whole)
and beside it ``<-o>.training/`` (the parcels as split, the tiles, the training run the new
model's manifest points to, so it can be improved again, and the evaluation). A failure or a
cancel (SIGTERM, turned into SystemExit by the command) removes both.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from geosam.config import load_config
from geosam.data.tiling import TileParams, tile_dataset
from geosam.engine.evaluate import evaluate
from geosam.engine.launch import launch_training
from geosam.engine.run_dir import CONFIG_FILE, FINAL_WEIGHTS, TunedWeights
from geosam.export import export_onnx
from geosam.improve.parcels import ParcelSplit, check_parcels, read_parcels, split_parcels
from geosam.improve.report import improve_report, write_report
from geosam.improve.start import StartingPoint, starting_point
from geosam.utils.errors import GeosamError
from geosam.utils.publish import check_writable, publish_dir, refuse_occupied, reset_dir

logger = logging.getLogger(__name__)

# Where each stage starts on the 0-100 progress scale: training is most of the time.
STAGE_START = {"tile": 0, "train": 10, "evaluate": 75, "export": 85, "done": 100}
# The held-aside tiles are tiled with no val split, so all of them carry this split name.
HELD_ASIDE_SPLIT = "train"
TRAINING_SUFFIX = ".training"

Progress = Callable[[int, str], Any]


@dataclass(frozen=True)
class ImproveParams:
    """The command's inputs. ``opts``: KEY VALUE config overrides of the training."""

    model: Path
    raster: Path
    parcels: Path
    output: Path
    layer: str | None = None
    holdout: float = 0.2
    seed: int = 0
    epochs: int = 4
    opts: tuple[str, ...] = ()
    overwrite: bool = False
    calibrate: bool = True


@dataclass
class ImproveResult:
    """The new model folder, its report, and the training folder beside it."""

    model_dir: Path
    training_dir: Path
    report: dict[str, Any] = field(default_factory=dict)


def training_dir(output: Path) -> Path:
    """The folder beside the new model that holds its tiles, run and evaluation."""
    return output.parent / f"{output.name}{TRAINING_SUFFIX}"


def run_improve(
    params: ImproveParams, progress: Progress = lambda percent, stage: None, bars: bool = False
) -> ImproveResult:
    """Check every input, then run the loop (module doc). ``progress(percent, stage)`` is
    called as each stage starts; ``bars``: tqdm progress bars of the stages."""
    if params.epochs < 1:
        raise GeosamError(f"--epochs {params.epochs} must be at least 1")
    if params.output.resolve() == params.model.resolve():
        raise GeosamError(f"-o {params.output} is --model itself: give a new folder beside it")
    start = starting_point(params.model, check_base="MODEL.CHECKPOINT" not in params.opts[0::2])
    parcels = read_parcels(params.parcels, params.layer)
    check_parcels(parcels, params.raster, params.parcels)
    split = split_parcels(parcels, params.holdout, params.seed)
    work = training_dir(params.output)
    refuse_occupied(params.output, params.overwrite, what="-o")
    refuse_occupied(work, params.overwrite, what="training folder")
    check_writable(params.output)
    reset_dir(work)
    try:
        return _improve(params, start, split, work, progress, bars)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _improve(
    params: ImproveParams,
    start: StartingPoint,
    split: ParcelSplit,
    work: Path,
    progress: Progress,
    bars: bool,
) -> ImproveResult:
    paths = _write_start(start, split, work)
    progress(STAGE_START["tile"], "tile")
    counts = _tile(params, start.manifest, paths, bars)
    cfg = training_config(params, start, paths, counts["train_tiles"])
    progress(STAGE_START["train"], "train")
    launch_training(cfg, progress=bars)
    progress(STAGE_START["evaluate"], "evaluate")
    weights = TunedWeights(paths["run"] / FINAL_WEIGHTS, "final")
    evaluation = evaluate(
        cfg, paths["held_aside"], HELD_ASIDE_SPLIT, paths["evaluation"], weights=weights,
        progress=bars,
    )  # fmt: skip
    progress(STAGE_START["export"], "export")
    report = improve_report(
        evaluation.document,
        old_model=str(params.model.resolve()),
        new_model=str(params.output.resolve()),
        raster=str(params.raster.resolve()),
        parcels={
            "file": str(params.parcels.resolve()),
            "trained_on": len(split.train),
            "held_aside": len(split.held_aside),
        },
        holdout=params.holdout,
        seed=params.seed,
        epochs=cfg.SOLVER.MAX_EPOCHS,
        note=start.note,
        run_dir=str(paths["run"].resolve()),
        evaluation_dir=str(paths["evaluation"].resolve()),
    )
    # calibrate automatic mode's thresholds on the held-aside tiles, the only ones not trained on
    export_cfg = load_config(
        str(paths["run"] / CONFIG_FILE),
        ["DATASETS.VAL", str(paths["held_aside"]), "DATASETS.VAL_SPLIT", HELD_ASIDE_SPLIT],
    )
    with publish_dir(params.output) as staging:
        export_onnx(
            export_cfg, staging, weights=weights.path, overwrite=True, run_dir=paths["run"],
            calibrate=params.calibrate,
        )  # fmt: skip
        write_report(staging, report)
    progress(STAGE_START["done"], "done")
    return ImproveResult(params.output, work, report)


def _write_start(start: StartingPoint, split: ParcelSplit, work: Path) -> dict[str, Path]:
    """The training folder's layout, with the starting config and weights (copied, so the new
    run does not depend on the old one staying) and the parcels as split written into it."""
    paths = {
        "start_config": work / "start_config.yaml",
        "start_weights": work / "start_weights.pth",
        "parcels": work / "parcels.gpkg",
        "train": work / "tiles" / "train",
        "held_aside": work / "tiles" / "held_aside",
        "run": work / "run",
        "evaluation": work / "evaluation",
    }
    paths["start_config"].write_text(start.config)
    if start.weights is not None:
        shutil.copyfile(start.weights, paths["start_weights"])
    split.train.to_file(paths["parcels"], layer="train", engine="pyogrio")
    split.held_aside.to_file(paths["parcels"], layer="held_aside", engine="pyogrio")
    return paths


def _tile(
    params: ImproveParams, manifest: dict[str, Any], paths: dict[str, Path], bars: bool
) -> dict[str, int]:
    """Tiles of the model's input size and bands over the parcels to train on and, apart,
    over the held-aside ones (no val split in either: the split is by parcel). Returns the
    training tiles' counts."""
    size = int(manifest["input_size"])
    bands = tuple(manifest["bands"]) if manifest.get("bands") else None
    tiling = TileParams(
        tile_size=size, overlap=size // 8, bands=bands, val_fraction=0.0, seed=params.seed
    )
    counts = {}
    for layer in ("train", "held_aside"):
        tiled = tile_dataset(
            [str(params.raster)], paths["parcels"], paths[layer], tiling, layer=layer,
            progress=bars,
        )  # fmt: skip
        counts[layer] = tiled["counts"]
        if not tiled["counts"]["instances"]:
            raise GeosamError(
                f"the {layer.replace('_', '-')} parcels of --parcels {params.parcels} give no "
                f"parcel of at least {tiling.min_area} px on --raster {params.raster}"
            )
    return counts["train"]


def training_config(
    params: ImproveParams, start: StartingPoint, paths: dict[str, Path], train_tiles: int
) -> CfgNode:
    """The old model's config, continuing from its weights on the new tiles: ``--epochs``
    epochs, a warm-up of a tenth of the steps (the old run's would outlast a short run), no
    validation, no loader workers (a cancel ends one process); then the user's ``opts``. SEED
    stays the old run's: it initialises a tiny model's untrained parts."""
    base = load_config(str(paths["start_config"]))
    steps = math.ceil(train_tiles / base.DATALOADER.IMS_PER_BATCH) * params.epochs
    opts = [
        "DATASETS.TRAIN", str(paths["train"]),
        "DATASETS.VAL", "",
        "OUTPUT_DIR", str(paths["run"]),
        "MODEL.TUNED_WEIGHTS", str(paths["start_weights"]) if start.weights else "",
        "SOLVER.MAX_EPOCHS", str(params.epochs),
        "SOLVER.WARMUP_ITERS", str(max(1, steps // 10)),
        "TEST.EVAL_PERIOD", "0",
        "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    if start.manifest.get("base_checkpoint"):
        opts += ["MODEL.CHECKPOINT", start.manifest["base_checkpoint"]]
    return load_config(str(paths["start_config"]), [*opts, *params.opts])
