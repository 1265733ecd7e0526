"""SAM's decoder run over a batch of prompted images: the one place geosam calls the decoder.

Training and evaluation both go through :func:`decode_batch`, so the loss and the metrics see
exactly the same forward pass. ``Sam.forward`` is not used: it runs under ``torch.no_grad()``,
takes raw images and upscales every mask to the original size, while training needs gradients,
starts from cached embeddings and computes the loss at the decoder's low resolution.

A batch (see ``geosam.data``) holds per image either ``images`` (normalised, padded) or, when
the encoder is frozen and its outputs cached, ``embeddings``, plus ``input_sizes`` and a
``prompts`` dict per image: prompt kind → ``boxes`` or ``coords``/``labels``, ``targets``
(N, S, S) and ``instance_ids`` (N,). Prompts of one kind share one decoder call across the
images of the batch.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from geosam.config.defaults import CHOICES

Batch = dict[str, Any]

PROMPT_KINDS: tuple[str, ...] = CHOICES["INPUT.PROMPT_TYPES"]
# A single point is ambiguous (a field, or the farm it belongs to): with MODEL.MULTIMASK it gets
# SAM's three masks and the loss trains the best one, as automatic mode decodes its grid points.
# Boxes and several points are not.
MULTIMASK_KINDS = ("point", "auto")


@dataclass
class DecodedPrompts:
    """The decoder's output for the N prompts of one kind on one image, with their targets."""

    kind: str
    image_index: int
    # (h, w) of the resized image inside the padded S × S input.
    input_size: tuple[int, int]
    # (N, M, S/4, S/4) mask logits; M = 3 for multimask output, else 1.
    low_res_logits: torch.Tensor
    # (N, M) the IoU head's estimate of each mask's quality.
    iou_predictions: torch.Tensor
    # (N, S, S) bool, in the padded input frame.
    targets: torch.Tensor
    # (N,) the instance each prompt targets (0: none, an empty target).
    instance_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.low_res_logits)


def image_embeddings(model: Sam, batch: Batch) -> torch.Tensor:
    """(B, C, S/16, S/16): the batch's cached ``embeddings``, or the encoder run on ``images``.

    The encoder runs without a graph unless one of its parameters trains, since backpropagating
    through a frozen ViT-B costs memory and time for nothing. It never enables gradients the
    caller disabled (evaluation). Cached embeddings are stored in fp16 and computed in fp32
    (or under the caller's autocast).
    """
    if "embeddings" in batch:
        return batch["embeddings"].float()
    trains = any(p.requires_grad for p in model.image_encoder.parameters())
    with nullcontext() if trains else torch.no_grad():
        return model.image_encoder(batch["images"])


def decode_batch(model: Sam, batch: Batch, multimask: bool) -> list[DecodedPrompts]:
    """Run the prompt encoder and mask decoder for every image and prompt kind in ``batch``.

    Returns one :class:`DecodedPrompts` per (image, kind) that has prompts, in image order and
    then :data:`PROMPT_KINDS` order. ``multimask`` (MODEL.MULTIMASK) gives single-point prompts
    SAM's three masks.

    Prompts of one kind (and one number of points) are decoded in one call for all the images
    of the batch, not one call per image: a decoder call on a handful of prompts is mostly
    per-operator overhead (about a thousand small matmuls per training step of the tiny model
    when called per image), so grouping makes a tiny-model step faster on CPU (figures in
    docs/design-notes.md) and launches fewer kernels on GPU. The result is the same as
    per-image calls (see :func:`_decode_group`); the decoder's activations for a call now cover
    the whole batch's prompts of a kind, which training keeps for the backward pass anyway.
    """
    embeddings = image_embeddings(model, batch)
    image_pe = model.prompt_encoder.get_dense_pe()
    groups: dict[tuple[str, int], list[int]] = {}
    for index, prompts in enumerate(batch["prompts"]):
        for kind in PROMPT_KINDS:
            if kind in prompts:
                points = prompts[kind]["coords"].shape[1] if "coords" in prompts[kind] else 0
                groups.setdefault((kind, points), []).append(index)
    decoded = []
    for (kind, _), indices in groups.items():
        prompts = [batch["prompts"][index][kind] for index in indices]
        logits, iou_predictions = _decode_group(
            model, embeddings, image_pe, indices, prompts, multimask and kind in MULTIMASK_KINDS
        )
        counts = [len(prompt["targets"]) for prompt in prompts]
        for index, prompt, image_logits, image_iou in zip(
            indices, prompts, logits.split(counts), iou_predictions.split(counts), strict=True
        ):
            decoded.append(
                DecodedPrompts(
                    kind=kind,
                    image_index=index,
                    input_size=tuple(int(v) for v in batch["input_sizes"][index]),
                    low_res_logits=image_logits,
                    iou_predictions=image_iou,
                    targets=prompt["targets"],
                    instance_ids=prompt["instance_ids"],
                )
            )
    decoded.sort(key=lambda item: (item.image_index, PROMPT_KINDS.index(item.kind)))
    return decoded


def _decode_group(
    model: Sam,
    embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    indices: list[int],
    prompts: list[dict[str, torch.Tensor]],
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode prompts of one kind from several images in one mask-decoder call.

    SAM's decoder repeats a single image embedding for all its prompts and adds each prompt's
    dense embedding to it. Here each prompt needs its own image's embedding, so the sum is
    formed first and passed as the dense embedding, with an all-zero image embedding for the
    decoder to repeat: the decoder sees exactly the tensor it would have built per image.
    """
    counts = torch.tensor([len(prompt["targets"]) for prompt in prompts], device=embeddings.device)
    if "coords" in prompts[0]:
        points = (
            torch.cat([prompt["coords"] for prompt in prompts]),
            torch.cat([prompt["labels"] for prompt in prompts]),
        )
        boxes = None
    else:
        points, boxes = None, torch.cat([prompt["boxes"] for prompt in prompts])
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    per_prompt = torch.repeat_interleave(embeddings[indices], counts, dim=0)
    return model.mask_decoder(
        image_embeddings=torch.zeros_like(embeddings[:1]),
        image_pe=image_pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=per_prompt + dense,
        multimask_output=multimask,
    )


def batch_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it, at any depth of dicts and lists, moved to ``device``.

    Strings and numbers (tile ids, variants) stay as they are, which ignite's
    ``convert_tensor`` does not allow.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: batch_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list):
        return [batch_to_device(value, device) for value in batch]
    return batch


class PromptedSam(nn.Module):
    """:func:`decode_batch` as a module's ``forward``.

    DistributedDataParallel synchronises gradients only for computations that run through its
    ``forward``; calling ``sam.prompt_encoder`` and ``sam.mask_decoder`` directly would bypass
    it. The trainer wraps this module (``idist.auto_model``), never the bare Sam.
    """

    def __init__(self, sam: Sam, multimask: bool) -> None:
        super().__init__()
        self.sam = sam
        self.multimask = multimask

    def forward(self, batch: Batch) -> list[DecodedPrompts]:
        return decode_batch(self.sam, batch, self.multimask)


def predict_masks(decoded: DecodedPrompts, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask a user gets for each prompt, as logits in the image's input frame.

    Of the M outputs, the one the IoU head scores highest (as SAM's predictor returns it for a
    single-mask request on an ambiguous prompt), upscaled bilinearly to the padded
    ``image_size`` square and cropped to ``decoded.input_size``: SAM's postprocessing, minus
    the final resize to the original chip size, so it compares with the targets as they are.

    Returns logits (N, h, w) in fp32 and the chosen masks' predicted IoU (N,).
    """
    best = decoded.iou_predictions.argmax(dim=1)
    rows = torch.arange(len(decoded), device=best.device)
    logits = decoded.low_res_logits[rows, best].float()
    logits = F.interpolate(
        logits[:, None], (image_size, image_size), mode="bilinear", align_corners=False
    )[:, 0]
    height, width = decoded.input_size
    return logits[:, :height, :width], decoded.iou_predictions[rows, best].float()
