"""``geosam evaluate``: the base and the tuned SAM side by side on a tile dataset's fixed prompts.

Fine-tuning is only worth its cost if it beats what the user already has, so every number is
shown next to two references on exactly the same prompts (the dataset's fixed, seeded
evaluation prompts of one split):

* **base**: the model the run started from, rebuilt from the run's own config (the same
  checkpoint, or the same seed for a randomly initialised tiny model);
* **box-fill**: the prompt box itself, filled, as the mask. Parcels are mostly convex and
  axis-aligned boxes hug them, so a model given a box must beat its box to be of any use.
  It exists for box prompts only; point prompts have no such baseline.

The tuned model is the base plus the run's trained weights (model_best.pth, else
model_final.pth), refused if they were trained from another base checkpoint or model type.
Scoring goes through :func:`~geosam.engine.inference.inference` and the box-fill through the
same :func:`~geosam.engine.metrics.score_masks` and
:class:`~geosam.engine.metrics.PromptMetrics`, so all columns are measured alike.

Outputs, in one folder (by default ``RUN_DIR/eval-<dataset>-<split>``)::

    metrics.json   per model: mIoU, Dice, boundary IoU, count, per prompt kind; the tuned −
                   base delta; dataset, split, weights, base checkpoint, geosam version
    metrics.md     the same as a markdown table: prompt kind × metric, box-fill / base / tuned
    examples.png   a few prompts, spread from the worst to the best IoU gain: the chip with
                   its prompt, the truth, and each model's mask, cropped around the parcel

This module scores; :mod:`geosam.engine.eval_report` turns the scores into metrics.md and
examples.png. Nothing is written until everything is computed, and then each file is written
under a temporary name and renamed, so a failed evaluation leaves no partial output.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from geosam import __version__
from geosam.data.build import make_data_loader, make_dataset, prepare_embedding_cache
from geosam.engine.eval_report import (
    BASE,
    BOX_FILL,
    TUNED,
    examples_figure,
    metrics_markdown,
    metrics_table,
)
from geosam.engine.inference import inference
from geosam.engine.metrics import METRIC_NAMES, PromptMetrics, score_masks
from geosam.engine.run_dir import TunedWeights, base_checkpoint_sha256, build_tuned_model
from geosam.modeling import build_model, sha256_file
from geosam.utils.errors import GeosamError
from geosam.utils.publish import check_writable, write_files
from geosam.utils.visualize import save_figure

logger = logging.getLogger("geosam.engine")

EVAL_FORMAT = "geosam-eval/1"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
EXAMPLES_PNG = "examples.png"


@dataclass
class Evaluation:
    """What :func:`evaluate` wrote: the folder, its files, metrics.json's content, the table."""

    output_dir: Path
    files: list[Path]
    document: dict[str, Any]
    table: str
    note: str | None = None


# ---------------------------------------------------------------------------------------------
# What is evaluated
# ---------------------------------------------------------------------------------------------


def evaluation_config(cfg: CfgNode, dataset: Path, split: str) -> CfgNode:
    """``cfg`` pointed at ``split`` of ``dataset``, with every part of the model frozen.

    Evaluation trains nothing, so even a run that trained the image encoder has a fixed encoder
    here, and its embeddings can be cached (CACHE.EMBEDDINGS permitting). The cache key holds
    a hash of the encoder's weights, so a tuned encoder's embeddings get their own cache and the
    frozen base encoder's are shared with training.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.VAL = str(dataset)
    cfg.DATASETS.VAL_SPLIT = split
    cfg.MODEL.TRAINABLE = []
    cfg.MODEL.ENCODER_TRAINABLE_BLOCKS = 0
    cfg.freeze()
    return cfg


def evaluate_model(cfg: CfgNode, model: Sam, progress: bool) -> tuple[dict[str, Any], DataLoader]:
    """``inference`` on the split's fixed prompts, with per-prompt records; and the loader."""
    try:
        cache = prepare_embedding_cache(cfg, model, is_train=False, progress=progress)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise GeosamError(
            f"cannot write image embeddings to {exc.filename} ({exc.strerror}): set CACHE.DIR "
            "to a writable folder"
        ) from None
    loader = make_data_loader(cfg, is_train=False, cache=cache)
    return inference(cfg, model, loader, keep_records=True, progress=progress), loader


def box_fill_masks(
    boxes: torch.Tensor, input_size: Sequence[int], original_size: Sequence[int]
) -> torch.Tensor:
    """(N, h, w) bool: each box filled, in the input frame its targets are in.

    A box is XYXY pixel indices of the chip, first to last pixel, scaled to the input frame
    (SAM's prompt convention): it covers the chip's pixels x0..x1, i.e. [x0, x1 + 1) in pixel
    edges, [x0 · s, (x1 + 1) · s) after scaling by s. An input pixel belongs to it when its
    centre does, which is how the targets' nearest-neighbour resize assigns pixels too.
    """
    height, width = (int(v) for v in input_size)
    scale_y, scale_x = height / int(original_size[0]), width / int(original_size[1])
    x0, y0, x1, y1 = boxes.double().unbind(dim=1)
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    inside_x = (xs >= x0[:, None]) & (xs < x1[:, None] + scale_x)
    inside_y = (ys >= y0[:, None]) & (ys < y1[:, None] + scale_y)
    return inside_y[:, :, None] & inside_x[:, None, :]


def evaluate_box_fill(loader: DataLoader) -> dict[str, Any]:
    """The box-fill baseline's scores on the box prompts of ``loader``: ``{"per_kind": {"box":
    {...}}}``, with no overall means, since it has none for the other prompt kinds."""
    metric = PromptMetrics()
    for batch in loader:
        for index, prompts in enumerate(batch["prompts"]):
            if "box" not in prompts:
                continue
            height, width = (int(v) for v in batch["input_sizes"][index])
            masks = box_fill_masks(
                prompts["box"]["boxes"], (height, width), batch["original_sizes"][index]
            )
            targets = prompts["box"]["targets"][:, :height, :width]
            metric.update([("box", score_masks(masks, targets))])
    return {"per_kind": metric.compute()["per_kind"]}


def metric_delta(tuned: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """tuned − base for every mean, overall and per prompt kind."""

    def difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
        return {name: a[name] - b[name] for name in METRIC_NAMES}

    per_kind = {
        kind: difference(tuned["per_kind"][kind], base["per_kind"][kind])
        for kind in base["per_kind"]
    }
    return {**difference(tuned, base), "per_kind": per_kind}


# ---------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------


def score_models(
    cfg: CfgNode, models: Mapping[str, Sam], progress: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, DataLoader]]:
    """Each model's scores on the split (:func:`evaluate_model`), its per-prompt records, and
    the loader it was scored with (each model has its own embedding cache)."""
    results: dict[str, dict[str, Any]] = {}
    loaders: dict[str, DataLoader] = {}
    for name, model in models.items():
        logger.info("evaluating the %s model", name)
        results[name], loaders[name] = evaluate_model(cfg, model, progress)
    records = {name: result.pop("records") for name, result in results.items()}
    return results, records, loaders


def evaluation_document(
    cfg: CfgNode,
    dataset: Path,
    split: str,
    columns: dict[str, dict[str, Any]],
    weights: TunedWeights | None,
) -> dict[str, Any]:
    """metrics.json's content: what was evaluated, each model's scores (``columns``) and, with
    a tuned model, its gain over the base."""
    document: dict[str, Any] = {
        "format": EVAL_FORMAT,
        "geosam_version": __version__,
        "dataset": str(dataset.resolve()),
        "split": split,
        "model_type": cfg.MODEL.TYPE,
        "base_checkpoint": cfg.MODEL.CHECKPOINT or None,
        "base_checkpoint_sha256": base_checkpoint_sha256(cfg),
        "seed": cfg.SEED,
        "weights": None,
        "models": columns,
    }
    if weights is not None:
        document["weights"] = {
            "path": str(weights.path.resolve()),
            "requested": weights.requested,
            "sha256": sha256_file(weights.path),
            "note": weights.note,
        }
        document["delta"] = metric_delta(columns[TUNED], columns[BASE])
    return document


def evaluate(
    cfg: CfgNode,
    dataset: Path,
    split: str,
    output_dir: Path,
    *,
    weights: TunedWeights | None = None,
    examples: int = 6,
    progress: bool = True,
) -> Evaluation:
    """Evaluate the base model of ``cfg`` (and, with ``weights``, the tuned one) and the
    box-fill baseline on the fixed prompts of ``split`` of ``dataset``; write the outputs.

    ``cfg`` is a run's config.yaml (or a preset for an untuned model) with any overrides; its
    DATASETS.VAL and VAL_SPLIT are replaced. Everything a user can get wrong is checked before
    the models run, and nothing is written unless all of it succeeds.
    """
    check_writable(output_dir)
    cfg = evaluation_config(cfg, dataset, split)
    # a missing or foreign dataset, or an absent or empty split, fails here, before any model
    make_dataset(cfg, is_train=False)
    models = {BASE: build_model(cfg)}
    if weights is not None:
        models[TUNED] = build_tuned_model(models[BASE], cfg, weights.path)

    results, records, loaders = score_models(cfg, models, progress)
    columns = {BOX_FILL: evaluate_box_fill(loaders[BASE]), **results}
    document = evaluation_document(cfg, dataset, split, columns, weights)
    table = metrics_table(columns)
    writers: dict[str, Callable[[Path], None]] = {
        METRICS_JSON: lambda path: path.write_text(json.dumps(document, indent=2) + "\n"),
        METRICS_MD: lambda path: path.write_text(metrics_markdown(document, table)),
    }
    sources = {name: (model, loaders[name].dataset) for name, model in models.items()}
    figure = examples_figure(cfg, records, sources, examples)
    if figure is not None:
        writers[EXAMPLES_PNG] = lambda path: save_figure(figure, path)
    files = write_files(output_dir, writers)
    return Evaluation(output_dir, files, document, table, weights.note if weights else None)
