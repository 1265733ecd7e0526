"""The run folder: what ``geosam train`` writes, and how evaluate and export read it back.

The run folder (OUTPUT_DIR) is the contract between training and everything after it::

    config.yaml        the frozen, merged config the run trained with
    checkpoints/       the resumable ignite checkpoints (see geosam.engine.trainer)
    metrics.json       every validation result, the best, and the final one
    tb/                TensorBoard events
    model_best.pth     the trained weights alone (geosam.modeling.save_trained_weights), with
                       the base checkpoint's sha256 and model type, at the best validation
    model_final.pth    the same at the end of training
    auto_thresholds.json   automatic mode's thresholds tuned on the val split by
                       geosam export-onnx (geosam.export.auto_calibration)
    eval-<dataset>-<split>/   geosam evaluate's default output

A run's tuned model is its base (rebuilt from config.yaml: the same checkpoint, or the same
seed for a randomly initialised tiny model) plus one of the trained-weights files, refused if
they were trained from another base checkpoint or model type. Every reader goes through
:func:`load_run` and :func:`build_tuned_model`, so the file names live here only.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from segment_anything.modeling import Sam
from yacs.config import CfgNode

from geosam.config import load_config
from geosam.modeling import load_tuned_weights, sha256_file
from geosam.modeling.shipped import resolve_checkpoint
from geosam.utils.errors import GeosamError
from geosam.utils.publish import check_writable, publish_dir, refuse_occupied

logger = logging.getLogger("geosam.engine")

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"
TENSORBOARD_DIR = "tb"
BEST_WEIGHTS = "model_best.pth"
FINAL_WEIGHTS = "model_final.pth"
AUTO_THRESHOLDS_FILE = "auto_thresholds.json"
WEIGHT_FILES = {"best": BEST_WEIGHTS, "final": FINAL_WEIGHTS}


@dataclass
class TunedWeights:
    """The trained-weights file a run is used with, and why, if not the one asked for."""

    path: Path
    requested: str
    note: str | None = None


def load_run(
    run_dir: Path, which: str = "best", opts: Sequence[str] = ()
) -> tuple[CfgNode, TunedWeights]:
    """The run's frozen config (with ``opts`` overrides) and the trained weights to use.

    ``which`` is "best" or "final". A run without model_best.pth (one that never validated)
    falls back to its model_final.pth, and the returned note says so.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        raise GeosamError(
            f"{run_dir} is not a geosam run (no {CONFIG_FILE}): pass the OUTPUT_DIR of geosam train"
        )
    candidates = [BEST_WEIGHTS, FINAL_WEIGHTS] if which == "best" else [FINAL_WEIGHTS]
    found = [name for name in candidates if (run_dir / name).is_file()]
    if not found:
        hint = "evaluate a run that has finished training"
        if (run_dir / BEST_WEIGHTS).is_file():
            hint = "--weights best evaluates its best validation so far"
        raise GeosamError(f"run {run_dir} has no {' or '.join(candidates)}: {hint}")
    weights = TunedWeights(run_dir / found[0], which)
    if found[0] != WEIGHT_FILES[which]:
        weights.note = f"{run_dir} has no {BEST_WEIGHTS}: evaluating its {FINAL_WEIGHTS}"
        logger.warning("%s", weights.note)
    return load_config(str(run_dir / CONFIG_FILE), list(opts)), weights


def base_checkpoint_sha256(cfg: CfgNode) -> str | None:
    """sha256 of MODEL.CHECKPOINT (a path or a shipped name); None for a randomly initialised
    (tiny) model."""
    checkpoint = cfg.MODEL.CHECKPOINT
    return sha256_file(resolve_checkpoint(checkpoint)) if checkpoint else None


def build_tuned_model(base: Sam, cfg: CfgNode, weights: Path) -> Sam:
    """A copy of ``base`` with the trained weights loaded, after checking they belong to it
    (:func:`~geosam.modeling.load_tuned_weights`). Copying spares reading a 2.5 GB checkpoint
    twice."""
    tuned = copy.deepcopy(base)
    load_tuned_weights(tuned, weights, base_checkpoint_sha256(cfg))
    return tuned


def evaluation_dir(run_dir: Path, dataset: Path, split: str) -> Path:
    """Where ``geosam evaluate --run`` writes by default: inside the run, named for the data."""
    return run_dir / f"eval-{dataset.resolve().name}-{split}"


def check_run_dir(cfg: CfgNode, resume: bool, overwrite: bool) -> Path:
    """Refuse to mix runs, before anything is built: a folder holding a run needs --resume
    (with the same config) or --overwrite; a new one must be creatable. Writes nothing."""
    run_dir = Path(cfg.OUTPUT_DIR)
    saved = run_dir / CONFIG_FILE
    if not resume:
        refuse_occupied(
            run_dir,
            overwrite,
            state="holds another run",
            hint="pass --resume to continue it, --overwrite to replace it, or set OUTPUT_DIR",
        )
        # the folder is written only once the model is built: fail now, not after that
        check_writable(run_dir)
        return run_dir
    if not (run_dir / CHECKPOINT_DIR).is_dir() or not saved.is_file():
        raise GeosamError(f"--resume: {run_dir} holds no run to resume (no {CHECKPOINT_DIR}/)")
    difference = _first_difference(yaml.safe_load(saved.read_text()), yaml.safe_load(cfg.dump()))
    if difference:
        raise GeosamError(
            f"--resume: {difference} differs from {saved}; resume with the run's own config "
            f"(--config-file {saved})"
        )
    return run_dir


def create_run_dir(cfg: CfgNode) -> Path:
    """A new run folder holding ``config.yaml``, replacing (after :func:`check_run_dir`
    allowed it) the run that was there, only once the new folder is whole.

    Called on rank 0 once the model, the data and the optimizer are built, so a run that
    cannot start (a corrupt or foreign checkpoint, a missing dataset) leaves no folder and an
    existing run untouched.
    """
    run_dir = Path(cfg.OUTPUT_DIR)
    with publish_dir(run_dir) as staging:
        (staging / CONFIG_FILE).write_text(cfg.dump())
    return run_dir


def _first_difference(a: object, b: object, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"config key {prefix.rstrip('.')}"
