"""Test-time flips for evaluation (TEST.FLIP_TTA): the batch decoded on each mirror image.

The same averaging the runtime does for ``geosam segment --flip-tta`` and the QGIS plugin
(:mod:`geosam.runtime.flips`), on a batch: every image is mirrored inside its input region
(SAM pads bottom-right, so the padding stays where it is) or, with cached embeddings, replaced
by the cached embedding of the mirrored chip (``view_embeddings``, keyed by dihedral variant);
every prompt is mirrored in the input frame; each view's mask logits are mirrored back and the
views' logits and predicted IoUs are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segment_anything.modeling import Sam

from geosam.data.transforms.dihedral import flip_variant
from geosam.modeling.prompted import Batch, DecodedPrompts, decode_batch, predict_masks
from geosam.runtime.flips import FLIPS, flip_affine


def flip_batch(batch: Batch, flip_x: bool, flip_y: bool) -> Batch:
    """``batch`` as its mirror images show it (targets are left as they are: the caller
    mirrors predictions back instead)."""
    flipped = dict(batch)
    if "embeddings" in batch:
        variant = flip_variant(flip_x, flip_y)
        views = batch.get("view_embeddings", {})
        if variant not in views:
            raise KeyError(f"the batch has no cached embedding of dihedral variant {variant}")
        flipped["embeddings"] = views[variant]
    else:
        images = batch["images"].clone()
        for image, (height, width) in zip(images, batch["input_sizes"].tolist(), strict=True):
            image[:, :height, :width] = _flip(image[:, :height, :width], flip_x, flip_y)
        flipped["images"] = images
    flipped["prompts"] = [
        {
            kind: _flip_prompts(arrays, original, input_size, flip_x, flip_y)
            for kind, arrays in prompts.items()
        }
        for prompts, original, input_size in zip(
            batch["prompts"],
            batch["original_sizes"].tolist(),
            batch["input_sizes"].tolist(),
            strict=True,
        )
    ]
    return flipped


def _flip(tensor: torch.Tensor, flip_x: bool, flip_y: bool) -> torch.Tensor:
    """``tensor`` (..., H, W) mirrored along its last two axes."""
    dims = [d for d, on in ((-1, flip_x), (-2, flip_y)) if on]
    return tensor.flip(dims) if dims else tensor


def _flip_prompts(
    arrays: dict[str, torch.Tensor],
    original_hw: Sequence[int],
    input_hw: Sequence[int],
    flip_x: bool,
    flip_y: bool,
) -> dict[str, torch.Tensor]:
    sign, offset = flip_affine(original_hw, input_hw, flip_x, flip_y)
    out = dict(arrays)
    for key in ("coords", "boxes"):
        if key not in arrays:
            continue
        coords = arrays[key].reshape(*arrays[key].shape[:-1], -1, 2)
        coords = coords * coords.new_tensor(sign) + coords.new_tensor(offset)
        if key == "boxes":
            coords = torch.cat([coords.amin(dim=-2), coords.amax(dim=-2)], dim=-1)
        out[key] = coords.reshape(arrays[key].shape)
    return out


def decode_masks(
    model: Sam, batch: Batch, multimask: bool, image_size: int, flips: bool
) -> list[tuple[DecodedPrompts, torch.Tensor, torch.Tensor]]:
    """Per (image, kind) of ``batch``: the decoded prompts, the mask logits a user gets
    (N, h, w) in the input frame and their predicted IoU (N,), averaged over the four flips
    when ``flips``, else those of the batch as it is (:func:`predict_masks`)."""
    decoded = decode_batch(model, batch, multimask)
    results = [(item, *predict_masks(item, image_size)) for item in decoded]
    if not flips:
        return results
    for flip_x, flip_y in FLIPS[1:]:
        view = decode_batch(model, flip_batch(batch, flip_x, flip_y), multimask)
        for index, item in enumerate(view):
            logits, iou = predict_masks(item, image_size)
            base, total, iou_total = results[index]
            results[index] = (base, total + _flip(logits, flip_x, flip_y), iou_total + iou)
    return [(item, logits / len(FLIPS), iou / len(FLIPS)) for item, logits, iou in results]
