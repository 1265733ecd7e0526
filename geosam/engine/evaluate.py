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

Nothing is written until everything is computed, and then each file is written under a
temporary name and renamed, so a failed evaluation leaves no partial output.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from segment_anything.modeling import Sam
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from geosam import __version__
from geosam.data.build import make_data_loader, make_dataset, prepare_embedding_cache
from geosam.data.collate_batch import BatchCollator
from geosam.data.datasets.tile_dataset import TileDataset
from geosam.engine.inference import inference, predict_batch, resolve_device
from geosam.engine.metrics import METRIC_NAMES, PromptMetrics, score_masks
from geosam.engine.run_dir import TunedWeights, base_checkpoint_sha256, build_tuned_model
from geosam.modeling import build_model, sha256_file
from geosam.modeling.prompted import PROMPT_KINDS
from geosam.runtime.preprocess import resize_longest_side
from geosam.utils.errors import GeosamError
from geosam.utils.publish import check_writable, write_files
from geosam.utils.visualize import draw_instances, save_figure

logger = logging.getLogger("geosam.engine")

EVAL_FORMAT = "geosam-eval/1"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
EXAMPLES_PNG = "examples.png"

BOX_FILL, BASE, TUNED = "box_fill", "base", "tuned"
COLUMN_TITLES = {BOX_FILL: "box-fill", BASE: "base", TUNED: "tuned"}
# Summary key (as PromptMetrics names it) → its name in the table.
METRIC_TITLES = dict(
    zip(METRIC_NAMES, ("mIoU", "Dice", "boundary IoU", "object F1@0.5"), strict=True)
)
ALL_KINDS = "all"

# Crop of an example: half the parcel's extent on each side (enough to see its neighbours, where
# a wrong mask spills), and at least this many pixels per side, so a small parcel is not blown
# up into a blur.
CROP_MARGIN = 0.5
CROP_MIN_SIDE = 96


@dataclass
class Evaluation:
    """What :func:`evaluate` wrote: the folder, its files, metrics.json's content, the table."""

    output_dir: Path
    files: list[Path]
    document: dict[str, Any]
    table: str
    note: str | None = None


@dataclass(frozen=True)
class Example:
    """One prompt shown in examples.png, with each model's IoU on it."""

    tile_id: str
    kind: str
    instance_id: int
    iou: Mapping[str, float]


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


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


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
# The table
# ---------------------------------------------------------------------------------------------


def _summary(model: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """A model's means over the prompts of ``kind`` (or all of them); None where undefined."""
    if kind == ALL_KINDS:
        return model if "mIoU" in model else None
    return model["per_kind"].get(kind)


def metrics_table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """The markdown table: a row per prompt kind (and all) and metric, a column per model,
    and tuned − base when there is a tuned model. n/a where a model has no value (box-fill
    for point prompts)."""
    names = [name for name in (BOX_FILL, BASE, TUNED) if name in models]
    delta = TUNED in models
    header = ["prompts", "n", "metric", *(COLUMN_TITLES[name] for name in names)]
    header += ["tuned − base"] if delta else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for kind in (*PROMPT_KINDS, ALL_KINDS):
        base = _summary(models[BASE], kind)
        if base is None:
            continue
        for row, (key, title) in enumerate(METRIC_TITLES.items()):
            values = [_summary(models[name], kind) for name in names]
            cells = [kind, str(base["count"])] if row == 0 else ["", ""]
            cells += [title, *(f"{v[key]:.3f}" if v else "n/a" for v in values)]
            if delta:
                cells.append(f"{_summary(models[TUNED], kind)[key] - base[key]:+.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metrics_markdown(document: Mapping[str, Any], table: str) -> str:
    """metrics.md: what was evaluated, in a few lines, then the table."""
    base = document["base_checkpoint"] or f"random init (seed {document['seed']})"
    lines = [
        f"# geosam evaluate: {Path(document['dataset']).name} ({document['split']})",
        "",
        f"- dataset: `{document['dataset']}`, split `{document['split']}`",
        f"- base: {document['model_type']}, {base}",
    ]
    if document["weights"]:
        lines.append(f"- tuned: `{document['weights']['path']}`")
        if document["weights"]["note"]:
            lines.append(f"- note: {document['weights']['note']}")
    lines += [
        f"- geosam {document['geosam_version']}",
        "",
        table,
        "box-fill: the prompt box, filled, as the mask; defined for box prompts only.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The examples panel
# ---------------------------------------------------------------------------------------------


def select_examples(
    records: Mapping[str, Sequence[Mapping[str, Any]]], count: int
) -> list[Example]:
    """``count`` prompts spread evenly over the IoU gain (tuned − base), from the worst
    regression to the best improvement; over the base IoU when there is no tuned model.

    Deterministic: ties are broken by tile, kind and instance, and the same records always
    give the same examples.
    """
    keyed = {
        name: {(r["tile_id"], r["kind"], r["instance_id"]): r["iou"] for r in rows}
        for name, rows in records.items()
    }

    def score(key: tuple[str, str, int]) -> float:
        if TUNED in keyed:
            return keyed[TUNED][key] - keyed[BASE][key]
        return keyed[BASE][key]

    ordered = sorted(keyed[BASE], key=lambda key: (score(key), key))
    if not ordered or count <= 0:
        return []
    picks = np.unique(
        np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int)
    )
    return [
        Example(*ordered[i], iou={name: values[ordered[i]] for name, values in keyed.items()})
        for i in picks
    ]


@dataclass
class ExampleView:
    """An example in the input frame it was scored in: chip, prompt, truth and predictions."""

    example: Example
    chip: np.ndarray
    truth: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    predictions: dict[str, np.ndarray]


def decode_example(
    cfg: CfgNode, model: Sam, dataset: TileDataset, example: Example, device: torch.device
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The example's prompt (in the input frame, with its target) and ``model``'s mask for it,
    decoded again through the same :func:`~geosam.engine.inference.predict_batch` that was
    scored, with the chip's other prompts left out (the decoder's cost grows with them)."""
    batch = BatchCollator()([dataset[dataset.tile_ids.index(example.tile_id)]])
    prompts = batch["prompts"][0][example.kind]
    row = prompts["instance_ids"].tolist().index(example.instance_id)
    prompt = {key: value[row : row + 1] for key, value in prompts.items()}
    batch["prompts"] = [{example.kind: prompt}]
    (prediction,) = predict_batch(cfg, model, batch, device)
    return prompt, prediction.masks[0].cpu().numpy()


def example_view(
    cfg: CfgNode, example: Example, models: Mapping[str, tuple[Sam, TileDataset]]
) -> ExampleView:
    """Everything examples.png shows of ``example``; ``models`` maps a name to the model and
    the dataset (with that model's embedding cache) it was evaluated on."""
    device = resolve_device(cfg)
    decoded = {
        name: decode_example(cfg, model, dataset, example, device)
        for name, (model, dataset) in models.items()
    }
    prompt, base_mask = decoded[BASE]
    height, width = base_mask.shape
    dataset = models[BASE][1]
    chip = dataset.read_chip(dataset.tile_ids.index(example.tile_id))
    return ExampleView(
        example=example,
        chip=resize_longest_side(chip, cfg.INPUT.IMAGE_SIZE),
        truth=prompt["targets"][0, :height, :width].numpy(),
        boxes=prompt.get("boxes", torch.zeros(0, 4)).reshape(-1, 4).numpy(),
        points=prompt.get("coords", torch.zeros(0, 2)).reshape(-1, 2).numpy(),
        predictions={name: mask for name, (_, mask) in decoded.items()},
    )


def crop_window(view: ExampleView) -> tuple[slice, slice]:
    """A square around the parcel and its prompt, with a margin that shows its neighbours
    (where a wrong mask usually spills), shifted inside the chip rather than cut short at its
    edge. What a mask has outside is reported in its title rather than widening every crop to
    the whole chip."""
    ys, xs = np.nonzero(view.truth)
    xs = np.concatenate([xs, view.boxes[:, 0::2].ravel(), view.points[:, 0]])
    ys = np.concatenate([ys, view.boxes[:, 1::2].ravel(), view.points[:, 1]])
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    side = round(max((1 + 2 * CROP_MARGIN) * extent, CROP_MIN_SIDE))
    window = []
    for coords, size in ((ys, view.truth.shape[0]), (xs, view.truth.shape[1])):
        length = min(size, side)
        start = round((coords.min() + coords.max() + 1 - length) / 2)
        start = int(np.clip(start, 0, size - length))
        window.append(slice(start, start + length))
    return window[0], window[1]


def mask_title(name: str, mask: np.ndarray, window: tuple[slice, slice], example: Example) -> str:
    """A mask panel's title: the model's IoU on the prompt, the gain for the tuned model, and
    the share of the mask the crop hides."""
    title = f"{name}: IoU {example.iou[name]:.2f}"
    if name == TUNED:
        title += f" ({example.iou[TUNED] - example.iou[BASE]:+.2f})"
    area = mask.sum()
    hidden = area - mask[window].sum()
    if hidden:
        title += f"\n{hidden / area:.0%} of the mask outside the view"
    return title


def render_examples(views: Sequence[ExampleView], names: Sequence[str]) -> plt.Figure:
    """A row per example: the chip with its prompt, the truth, then each model's mask with the
    truth's outline (white, dashed) over it, so the two edges compare at a glance; all on the
    same crop, the prompt on every panel, the IoU (and the gain) in the titles."""
    columns = 2 + len(names)
    fig, axes = plt.subplots(
        len(views), columns, figsize=(2.4 * columns, 2.6 * len(views)), squeeze=False
    )
    for row, view in zip(axes, views, strict=True):
        window = crop_window(view)
        chip = view.chip[window]
        offset = np.array([window[1].start, window[0].start])
        boxes, points = view.boxes - np.tile(offset, 2), view.points - offset
        example = view.example
        title = f"{example.tile_id} #{example.instance_id}\n{example.kind} prompt"
        draw_instances(row[0], chip, np.zeros(chip.shape[:2], np.uint8), boxes, points, title)
        truth = view.truth[window].astype(np.uint8)
        draw_instances(row[1], chip, truth, boxes, points, "truth (dashed on the masks)")
        for ax, name in zip(row[2:], names, strict=True):
            mask = view.predictions[name]
            crop = mask[window].astype(np.uint8)
            draw_instances(ax, chip, crop, boxes, points, mask_title(name, mask, window, example))
            if 0 < truth.sum() < truth.size:
                ax.contour(truth, levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------


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
    base = build_model(cfg)
    models = {BASE: base}
    if weights is not None:
        models[TUNED] = build_tuned_model(base, cfg, weights.path)

    results: dict[str, dict[str, Any]] = {}
    loaders: dict[str, DataLoader] = {}
    for name, model in models.items():
        logger.info("evaluating the %s model", name)
        results[name], loaders[name] = evaluate_model(cfg, model, progress)
    records = {name: result.pop("records") for name, result in results.items()}
    columns = {BOX_FILL: evaluate_box_fill(loaders[BASE]), **results}

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
        document["delta"] = metric_delta(results[TUNED], results[BASE])
    table = metrics_table(columns)

    writers: dict[str, Callable[[Path], None]] = {
        METRICS_JSON: lambda path: path.write_text(json.dumps(document, indent=2) + "\n"),
        METRICS_MD: lambda path: path.write_text(metrics_markdown(document, table)),
    }
    chosen = select_examples(records, examples)
    if chosen:
        sources = {name: (models[name], loaders[name].dataset) for name in models}
        figure = render_examples([example_view(cfg, e, sources) for e in chosen], list(models))
        writers[EXAMPLES_PNG] = lambda path: save_figure(figure, path)
    files = write_files(output_dir, writers)
    return Evaluation(output_dir, files, document, table, weights.note if weights else None)
