"""Parity of the exported ONNX files with the PyTorch model they came from.

An export can be silently wrong (a traced branch frozen to one prompt count, an op lowered
differently), so every export runs the same inputs through onnxruntime and through the PyTorch
``Sam`` modules and compares them. The PyTorch side is SAM's own path (``prompt_encoder`` with
separate points and boxes, ``mask_decoder.predict_masks``, ``Sam.postprocess_masks``), not the
exported wrapper, so the check also proves the wrapper's interface equals SAM's.

Inputs: a seeded random image of 3/4 the input size in height (so padding and the
``orig_im_size`` crop are exercised) through :mod:`geosam.runtime.preprocess`, and three
prompts: a box, a positive point, and that point again with the PyTorch model's low-res mask
as ``mask_input`` (iterative refinement). The decoder is compared on the same PyTorch
embeddings, so its numbers are the decoder's own; the encoder is compared on its own. The
decoder returns the one mask training scored (chosen in-graph), so the PyTorch side picks the
same output with the runtime's :func:`~geosam.runtime.model.select_output`: a graph that chose
another output fails the check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from segment_anything.modeling import Sam

from geosam.runtime.model import select_output
from geosam.runtime.preprocess import preprocess_image
from geosam.utils.errors import GeosamError

MAX_ABS_DIFF = 1e-3
MIN_MASK_IOU = 0.999
SEED = 0


@dataclass(frozen=True)
class Prompt:
    """One decoder query, in the resized input frame: points (x, y) with labels 0/1, a box
    (x1, y1, x2, y2) and a previous low-res mask logit map, each optional."""

    coords: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    def onnx_feeds(self, embeddings: np.ndarray, original_size: tuple[int, int]) -> dict:
        """The official SAM ONNX decoder inputs for this prompt.

        As SAM's prompt encoder does, points without a box get a padding point (label -1);
        a box is two corner points labelled 2 and 3.
        """
        coords = [] if self.coords is None else [self.coords]
        labels = [] if self.labels is None else [self.labels]
        if self.box is not None:
            coords.append(self.box.reshape(2, 2))
            labels.append(np.array([2, 3]))
        else:
            coords.append(np.zeros((1, 2)))
            labels.append(np.array([-1]))
        side = embeddings.shape[-1] * 4
        mask = np.zeros((1, 1, side, side)) if self.mask is None else self.mask
        return {
            "image_embeddings": embeddings.astype(np.float32),
            "point_coords": np.concatenate(coords)[None].astype(np.float32),
            "point_labels": np.concatenate(labels)[None].astype(np.float32),
            "mask_input": mask.astype(np.float32),
            "has_mask_input": np.array([float(self.mask is not None)], dtype=np.float32),
            "orig_im_size": np.array(original_size, dtype=np.float32),
        }


@torch.no_grad()
def torch_decode(
    model: Sam,
    embeddings: torch.Tensor,
    prompt: Prompt,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks, iou_predictions, low_res_masks) of all 4 mask tokens, through SAM's modules."""

    def tensor(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.as_tensor(array, dtype=torch.float32)

    points = None
    if prompt.coords is not None:
        points = (tensor(prompt.coords)[None], torch.as_tensor(prompt.labels)[None])
    sparse, dense = model.prompt_encoder(
        points=points,
        boxes=None if prompt.box is None else tensor(prompt.box)[None],
        masks=tensor(prompt.mask),
    )
    low_res, iou = model.mask_decoder.predict_masks(
        image_embeddings=embeddings,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
    masks = model.postprocess_masks(low_res, input_size, original_size)
    return masks.numpy(), iou.numpy(), low_res.numpy()


def selected(
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray], prompt: Prompt, multimask: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks, iou_predictions, low_res_masks) of :func:`torch_decode` reduced to the one
    output the exported decoder returns for ``prompt``."""
    masks, iou, low_res = outputs
    k = select_output(iou[0], prompt.labels, prompt.box, multimask)
    return masks[:, k : k + 1], iou[:, k : k + 1], low_res[:, k : k + 1]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def session(path: Path) -> ort.InferenceSession:
    """A CPU onnxruntime session (external data is found next to ``path``)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def parity_case(
    model: Sam, image_size: int
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], dict[str, Prompt]]:
    """The encoder input, original and resized (h, w), and the box and point prompts."""
    rng = np.random.default_rng(SEED)
    original_size = (image_size * 3 // 4, image_size)
    image = rng.integers(0, 256, (*original_size, 3), dtype=np.uint8)
    encoder_input, input_size = preprocess_image(
        image, image_size, model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist()
    )
    h, w = input_size
    prompts = {
        "box": Prompt(box=np.array([w * 0.25, h * 0.3, w * 0.6, h * 0.7])),
        "point": Prompt(coords=np.array([[w * 0.5, h * 0.5]]), labels=np.array([1])),
    }
    return encoder_input[None], original_size, input_size, prompts


def compare_decoders(
    decoder: ort.InferenceSession,
    reference: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    embeddings: np.ndarray,
    prompts: Mapping[str, Prompt],
    original_size: tuple[int, int],
    threshold: float,
) -> dict[str, dict[str, float]]:
    """Per prompt: max abs diff of mask logits (full and low-res) and of predicted IoU, and the
    lowest IoU over the thresholded masks, of ``decoder`` against ``reference``."""
    results = {}
    for name, prompt in prompts.items():
        masks, iou, low_res = decoder.run(None, prompt.onnx_feeds(embeddings, original_size))
        ref_masks, ref_iou, ref_low_res = reference[name]
        results[name] = {
            "mask_logits_max_abs_diff": float(
                max(np.abs(masks - ref_masks).max(), np.abs(low_res - ref_low_res).max())
            ),
            "iou_predictions_max_abs_diff": float(np.abs(iou - ref_iou).max()),
            "mask_iou": min(
                mask_iou(masks[0, k] > threshold, ref_masks[0, k] > threshold)
                for k in range(masks.shape[1])
            ),
        }
    return results


def check_parity(
    model: Sam,
    encoder_path: Path,
    decoder_path: Path,
    threshold: float,
    multimask: bool,
    quantized: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """Compare the ONNX encoder and decoder with ``model``, whose outputs are selected as the
    decoder was exported (``multimask``); with ``quantized`` (int8 encoder, decoder), also
    report the mask IoU the int8 files cost against PyTorch fp32.

    Raises GeosamError when the fp32 decoder misses :data:`MAX_ABS_DIFF` or
    :data:`MIN_MASK_IOU`, or the encoder misses :data:`MAX_ABS_DIFF` relative to the
    embeddings' magnitude: such an export would give users masks the model does not.
    """
    model.eval()
    encoder_input, original_size, input_size, prompts = parity_case(
        model, model.image_encoder.img_size
    )
    with torch.no_grad():
        embeddings = model.image_encoder(torch.from_numpy(encoder_input))
    first = torch_decode(model, embeddings, prompts["point"], input_size, original_size)
    prompts["point+mask"] = Prompt(
        coords=prompts["point"].coords, labels=prompts["point"].labels, mask=first[2][:, :1]
    )
    reference = {
        name: selected(
            torch_decode(model, embeddings, prompt, input_size, original_size), prompt, multimask
        )
        for name, prompt in prompts.items()
    }
    torch_embeddings = embeddings.numpy()
    (onnx_embeddings,) = session(encoder_path).run(None, {"image": encoder_input})
    encoder_diff = float(np.abs(onnx_embeddings - torch_embeddings).max())
    embedding_scale = float(np.abs(torch_embeddings).max())
    decoder = compare_decoders(
        session(decoder_path), reference, torch_embeddings, prompts, original_size, threshold
    )
    report: dict[str, Any] = {
        "inputs": f"seeded random {original_size[0]}x{original_size[1]} image; "
        + ", ".join(prompts),
        "encoder_max_abs_diff": encoder_diff,
        "embedding_max_abs": embedding_scale,
        "decoder": decoder,
        "mask_logits_max_abs_diff": max(r["mask_logits_max_abs_diff"] for r in decoder.values()),
        "mask_iou_min": min(r["mask_iou"] for r in decoder.values()),
        "tolerance": {"max_abs_diff": MAX_ABS_DIFF, "mask_iou": MIN_MASK_IOU},
    }
    _check(report)
    if quantized is not None:
        encoder_int8, decoder_int8 = (session(path) for path in quantized)
        (int8_embeddings,) = encoder_int8.run(None, {"image": encoder_input})
        decoder_only = compare_decoders(
            decoder_int8, reference, torch_embeddings, prompts, original_size, threshold
        )
        both = compare_decoders(
            decoder_int8, reference, int8_embeddings, prompts, original_size, threshold
        )
        report["int8"] = {
            "encoder_max_abs_diff": float(np.abs(int8_embeddings - torch_embeddings).max()),
            "decoder_mask_iou_min": min(r["mask_iou"] for r in decoder_only.values()),
            "mask_iou_min": min(r["mask_iou"] for r in both.values()),
            "mask_iou": {name: r["mask_iou"] for name, r in both.items()},
        }
    return report


def _check(report: Mapping[str, Any]) -> None:
    problems = []
    if report["mask_logits_max_abs_diff"] > MAX_ABS_DIFF:
        problems.append(
            f"decoder mask logits differ by {report['mask_logits_max_abs_diff']:.3g} "
            f"(> {MAX_ABS_DIFF})"
        )
    if report["mask_iou_min"] < MIN_MASK_IOU:
        problems.append(f"mask IoU {report['mask_iou_min']:.4f} (< {MIN_MASK_IOU})")
    if report["encoder_max_abs_diff"] > MAX_ABS_DIFF * max(1.0, report["embedding_max_abs"]):
        problems.append(
            f"encoder embeddings differ by {report['encoder_max_abs_diff']:.3g} "
            f"(> {MAX_ABS_DIFF} x max(1, |embedding| {report['embedding_max_abs']:.3g}))"
        )
    if problems:
        raise GeosamError(
            "ONNX export does not match PyTorch: "
            + "; ".join(problems)
            + "; nothing was written (try another --opset, and report it)"
        )


def format_report(report: Mapping[str, Any]) -> str:
    """The parity report as a few lines for the terminal."""
    lines = [
        f"parity ({report['inputs']}): encoder max abs diff "
        f"{report['encoder_max_abs_diff']:.2e}; decoder mask logits max abs diff "
        f"{report['mask_logits_max_abs_diff']:.2e}, mask IoU min {report['mask_iou_min']:.6f}"
    ]
    int8 = report.get("int8")
    if int8:
        lines.append(
            f"int8 vs fp32 PyTorch: mask IoU min {int8['mask_iou_min']:.4f} (int8 encoder + "
            f"decoder), {int8['decoder_mask_iou_min']:.4f} (int8 decoder alone); "
            + ", ".join(f"{name} {iou:.4f}" for name, iou in int8["mask_iou"].items())
        )
    return "\n".join(lines)
