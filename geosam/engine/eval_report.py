"""``geosam evaluate``'s report: the markdown table (metrics.md) and the examples panel
(examples.png), made from what :mod:`geosam.engine.evaluate` scored.

Scoring and reporting are apart so that each reads on its own: the scores (metrics.json) are
the result, and everything here only presents them. The one exception is the examples panel,
which decodes its few prompts again through the same
:func:`~geosam.engine.inference.predict_batch` that was scored, so that what is shown is what
was scored.

The report's columns are the evaluated models: the box-fill baseline, the base model and the
tuned one (:data:`BOX_FILL`, :data:`BASE`, :data:`TUNED`, also metrics.json's keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from segment_anything.modeling import Sam
from yacs.config import CfgNode

from geosam.data.collate_batch import BatchCollator
from geosam.data.datasets.tile_dataset import TileDataset
from geosam.engine.inference import predict_batch, resolve_device
from geosam.engine.metrics import METRIC_NAMES
from geosam.modeling.prompted import PROMPT_KINDS
from geosam.runtime.preprocess import resize_longest_side
from geosam.utils.visualize import draw_instances

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


@dataclass(frozen=True)
class Example:
    """One prompt shown in examples.png, with each model's IoU on it."""

    tile_id: str
    kind: str
    instance_id: int
    iou: Mapping[str, float]


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


def examples_figure(
    cfg: CfgNode,
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    sources: Mapping[str, tuple[Sam, TileDataset]],
    count: int,
) -> plt.Figure | None:
    """examples.png: ``count`` prompts chosen from each model's per-prompt ``records``
    (:func:`select_examples`), shown for every model of ``sources`` (see :func:`example_view`);
    None when there is no prompt to show."""
    chosen = select_examples(records, count)
    if not chosen:
        return None
    return render_examples([example_view(cfg, e, sources) for e in chosen], list(sources))
