"""``geosam export-onnx``: a model directory (ONNX encoder + decoder + manifest) from a run.

The decoder is ``segment_anything.utils.onnx.SamOnnxModel``, the wrapper Meta's own export
script uses, so ``decoder.onnx`` has the official SAM ONNX interface exactly and other SAM
tools can run it; one method is overridden (:class:`SamOnnxDecoder`) because today's tracer
freezes its crop to the example image size.

It returns one mask per prompt, as Meta's ``return_single_mask=True`` export does (``masks``
(1, 1, H, W)), so only that mask is upscaled to the original image size: upscaling all four
was 12% of the decoder's time (docs/benchmarks.md). The choice is made in-graph by training's
rule (:func:`geosam.runtime.model.select_output`: the best of the three multimask outputs for
a single positive point with MODEL.MULTIMASK, output 0 otherwise), not by Meta's
``select_masks``, which goes by point count and so gives a plain box (two corners) a
multimask output, unlike SAM's predictor and unlike training here. A tool reading
``masks[0, 0]`` gets what ``SamPredictor`` returns; the manifest says ``mask_selection``
``"in-graph"``.

The encoder is ``Sam.image_encoder`` alone: its input is already resized, normalised and
padded by :mod:`geosam.runtime.preprocess`, whose parameters the manifest records. Encoders
over :data:`EXTERNAL_DATA_BYTES` of weights (ViT-L, ViT-H; protobuf caps a file at 2 GB) keep
their weights in ``encoder.onnx.data`` beside ``encoder.onnx``.

``--quantize`` adds ``encoder.int8.onnx`` and ``decoder.int8.onnx`` (int8 dynamic quantization
of MatMul/Gemm weights) beside the fp32 files rather than replacing them: what int8 costs
depends on the model and the data, so the fp32 files stay as the reference and the runtime
chooses; the parity report gives the mask IoU int8 costs.

Everything is written into a staging folder next to MODEL_DIR and renamed into place at the
end (:mod:`geosam.utils.publish`), so a failed export leaves nothing and an existing model
stays until the new one is whole.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch.nn import functional as F
from yacs.config import CfgNode

from geosam.engine.run_dir import AUTO_THRESHOLDS_FILE, base_checkpoint_sha256, build_tuned_model
from geosam.export import metadata
from geosam.export.auto_calibration import calibrate_export
from geosam.export.parity import check_parity, format_report
from geosam.modeling import build_model, sha256_file
from geosam.runtime.auto import TUNED_THRESHOLDS
from geosam.runtime.model import DECODER, ENCODER, INT8
from geosam.utils.errors import GeosamError
from geosam.utils.publish import publish_dir, publish_file, refuse_occupied

logger = logging.getLogger("geosam.export")

DEFAULT_OPSET = 17
# Meta's script says 11 for the decoder; the encoder's relative-position einsum needs 12.
MIN_OPSET = 12
EXTERNAL_DATA_BYTES = 1 << 30
# Points in the traced example; the point axis is dynamic, so any N works at run time.
TRACE_POINTS = 5


class SamOnnxDecoder(SamOnnxModel):
    """``SamOnnxModel`` returning the one mask training scored, with a dynamic crop.

    Two methods are replaced. :meth:`forward` selects by prompt kind, in-graph (see the module
    doc); the selection is a gather on an index computed from ``point_labels`` and the
    predicted IoUs, so the traced graph has no control flow and any prompt works.
    :meth:`mask_postprocessing`: upstream crops with ``masks[..., : int(h), : int(w)]``;
    tracing turns those ``int()`` into the constants of the example input, so the exported
    decoder cropped every image as if it had the example's aspect ratio (seen with torch 2.14:
    mask logits off by 0.3 on another size). Gathering ``arange(h)`` rows and ``arange(w)``
    columns is the same crop, traced as Range + Gather on ``orig_im_size``.
    """

    def __init__(self, model: Sam, multimask: bool) -> None:
        super().__init__(model, return_single_mask=True)
        self.multimask = multimask

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks, scores = self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=self._embed_points(point_coords, point_labels),
            dense_prompt_embeddings=self._embed_masks(mask_input, has_mask_input),
        )
        rows = torch.arange(masks.shape[0])
        index = self.selected_output(point_labels, scores)
        masks, scores = masks[rows, index].unsqueeze(1), scores[rows, index].unsqueeze(1)
        return self.mask_postprocessing(masks, orig_im_size), scores, masks

    def selected_output(self, point_labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Per prompt, the output :func:`geosam.runtime.model.select_output` picks: a single
        positive point is one label 1 and otherwise only padding (-1); boxes add labels 2, 3."""
        if not self.multimask:
            return torch.zeros(scores.shape[0], dtype=torch.int64)
        prompts = (point_labels != -1).sum(dim=1)
        positives = (point_labels == 1).sum(dim=1)
        best = 1 + torch.argmax(scores[:, 1:], dim=1)
        return torch.where((prompts == 1) & (positives == 1), best, torch.zeros_like(best))

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(
            masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
        rows, columns = torch.arange(prepadded[0]), torch.arange(prepadded[1])
        masks = masks.index_select(2, rows).index_select(3, columns)
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote: the folder, its manifest and the parity report."""

    model_dir: Path
    manifest: dict[str, Any]
    report: str


def export_encoder(model: Sam, path: Path, opset: int) -> None:
    """``model.image_encoder`` to ``path``: ``image`` (1, 3, S, S) → ``image_embeddings``."""
    size = model.image_encoder.img_size
    _export(
        model.image_encoder,
        (torch.zeros(1, 3, size, size),),
        path,
        opset,
        input_names=["image"],
        output_names=["image_embeddings"],
    )


def export_decoder(model: Sam, path: Path, opset: int, multimask: bool) -> None:
    """SAM's ONNX decoder (one mask per prompt, chosen in-graph with ``multimask`` as in
    training) to ``path``, with a dynamic point count."""
    grid = model.prompt_encoder.image_embedding_size
    channels = model.prompt_encoder.embed_dim
    generator = torch.Generator().manual_seed(0)
    example = {
        "image_embeddings": torch.randn(1, channels, *grid, generator=generator),
        "point_coords": torch.randint(
            0, model.image_encoder.img_size, (1, TRACE_POINTS, 2), generator=generator
        ).float(),
        "point_labels": torch.randint(0, 4, (1, TRACE_POINTS), generator=generator).float(),
        "mask_input": torch.zeros(1, 1, 4 * grid[0], 4 * grid[1]),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }
    points = {1: "num_points"}
    _export(
        SamOnnxDecoder(model, multimask),
        tuple(example.values()),
        path,
        opset,
        input_names=list(example),
        output_names=["masks", "iou_predictions", "low_res_masks"],
        dynamic_axes={"point_coords": points, "point_labels": points},
    )


def _export(
    module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int, **kwargs: Any
) -> None:
    # The TorchScript exporter (dynamo=False): the dynamo one fails on SamOnnxModel's
    # data-dependent upscale to orig_im_size. The tracer warnings left are about shapes that
    # are constant by design (the encoder's fixed S x S input and window padding, the
    # attention head width); the one that was not, the crop, is SamOnnxDecoder's, and the
    # parity check runs another image size than the traced one to catch any such constant.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            **kwargs,
        )


def quantize(source: Path, target: Path, external_data: bool) -> None:
    """int8 dynamic quantization of the MatMul and Gemm weights of ``source``.

    Convolutions stay fp32: onnxruntime's CPU ConvInteger does not take int8 weights, and in
    SAM they are a small share of the work (patch embedding, neck, mask downscaling).
    """
    # onnxruntime logs a hint to run its shape pre-processing first on the root logger; that
    # pass only helps graphs with unknown shapes, and SAM's traced graphs have them all.
    root = logging.getLogger()
    hint = _DropMessage("Please consider to run pre-processing")
    root.addFilter(hint)
    try:
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=QuantType.QInt8,
            use_external_data_format=external_data,
        )
    finally:
        root.removeFilter(hint)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def finalize(
    source: Path,
    target: Path,
    props: dict[str, str],
    external_data: bool,
    output_shapes: Mapping[str, Sequence[int]],
) -> None:
    """Copy ``source`` to ``target`` with ``props`` as its metadata_props, checked by onnx.

    ``output_shapes`` declares outputs' static shapes where the exporter left symbolic ones
    (the encoder's embeddings come out as ``Addimage_embeddings_dim_0`` etc.), so a runtime
    can read the embedding shape from the graph. With ``external_data`` the weights go to one
    ``<target name>.data`` file beside it.
    """
    model = onnx.load(str(source))
    onnx.helper.set_model_props(model, props)
    for output in model.graph.output:
        if output.name in output_shapes:
            dims = output.type.tensor_type.shape.dim
            for dim, size in zip(dims, output_shapes[output.name], strict=True):
                dim.dim_value = size
    if external_data:
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{target.name}.data",
        )
    else:
        onnx.save_model(model, str(target))
    onnx.checker.check_model(str(target))


def needs_external_data(model: Sam) -> bool:
    """Whether the encoder's weights are too large to sit inside one protobuf file."""
    size = sum(p.numel() * p.element_size() for p in model.image_encoder.parameters())
    return size > EXTERNAL_DATA_BYTES


def export_graphs(
    cfg: CfgNode, model: Sam, raw: Path, opset: int, quantize_int8: bool, external_data: bool
) -> tuple[list[str], dict[str, Any]]:
    """The encoder and decoder (and their int8 versions) as exported, into ``raw``, and the
    parity check run on them; returns the file names and the parity report. ``finalize``
    adds only metadata to these graphs, so what was checked is what is published."""
    raw.mkdir()
    logger.info("exporting %s encoder and decoder (opset %d)", cfg.MODEL.TYPE, opset)
    export_encoder(model, raw / ENCODER, opset)
    export_decoder(model, raw / DECODER, opset, cfg.MODEL.MULTIMASK)
    names = [ENCODER, DECODER]
    if quantize_int8:
        for name in (ENCODER, DECODER):
            quantize(raw / name, raw / INT8[name], external_data and name == ENCODER)
        names += [INT8[ENCODER], INT8[DECODER]]
    parity = check_parity(
        model,
        raw / ENCODER,
        raw / DECODER,
        cfg.TEST.MASK_THRESHOLD,
        cfg.MODEL.MULTIMASK,
        quantized=(raw / INT8[ENCODER], raw / INT8[DECODER]) if quantize_int8 else None,
    )
    return names, parity


def ir_version(raw: Path, names: Sequence[str]) -> int:
    """The highest ONNX IR version of the exported graphs (the exporter and the quantizer
    each stamp their own), which the oldest onnxruntime that can read them follows from."""
    return max(onnx.load(str(raw / name), load_external_data=False).ir_version for name in names)


def write_model_dir(
    model_dir: Path, raw: Path, names: Sequence[str], fields: dict[str, Any], external_data: bool
) -> dict[str, Any]:
    """The graphs in ``raw`` finalized into ``model_dir`` with ``fields`` as their metadata,
    then the manifest listing every file's hash; ``raw`` is removed. Returns the manifest."""
    props = metadata.to_metadata_props(fields)
    for name in names:
        is_encoder = name in (ENCODER, INT8[ENCODER])
        shapes = {"image_embeddings": fields["embedding_shape"]} if is_encoder else {}
        finalize(raw / name, model_dir / name, props, external_data and is_encoder, shapes)
    shutil.rmtree(raw)
    files = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(model_dir.iterdir())
    }
    metadata.write_manifest(model_dir, fields, files)
    return {**fields, "files": files}


def export_onnx(
    cfg: CfgNode,
    output: Path,
    *,
    weights: Path | None = None,
    quantize_int8: bool = False,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    external_data: bool | None = None,
    run_dir: Path | None = None,
    calibrate: bool = True,
) -> ExportResult:
    """Export the model of ``cfg`` (plus trained ``weights``, from a run) to ``output``.

    With ``weights`` and ``calibrate``, automatic mode's thresholds are tuned on the run's
    val split with the exported graphs (:mod:`geosam.export.auto_calibration`) and written
    into the manifest as ``auto_thresholds``, and into ``run_dir`` (the run's folder, if
    given) as ``auto_thresholds.json``.

    ``external_data`` None decides by size (:func:`needs_external_data`); True or False forces
    it (tests force it on the tiny model to exercise the ViT-H path). Checks everything a user
    can get wrong before the model is built; a parity failure raises GeosamError, and in every
    failure nothing is left behind.
    """
    if opset < MIN_OPSET:
        raise GeosamError(f"--opset {opset} is too old: SAM's ONNX export needs {MIN_OPSET}+")
    newest = max(metadata.ONNXRUNTIME_FOR_OPSET)
    if opset > newest:
        raise GeosamError(
            f"--opset {opset} is newer than geosam's onnxruntime table (up to {newest}): the "
            "manifest could not say which onnxruntime reads the model; give --opset "
            f"{newest} or lower"
        )
    refuse_occupied(output, overwrite, what="-o")
    dataset = metadata.dataset_fields(cfg.DATASETS.TRAIN)
    model = build_model(cfg)
    if weights is not None:
        model = build_tuned_model(model, cfg, weights)
    model.eval()
    if external_data is None:
        external_data = needs_external_data(model)

    with publish_dir(output) as staging:
        raw = staging / "raw"
        names, parity = export_graphs(cfg, model, raw, opset, quantize_int8, external_data)
        prompts = model.prompt_encoder
        fields = metadata.model_fields(
            cfg,
            dataset=dataset,
            embedding_shape=(1, prompts.embed_dim, *prompts.image_embedding_size),
            opset=opset,
            base_checkpoint_sha256=base_checkpoint_sha256(cfg),
            weights_sha256=sha256_file(weights) if weights is not None else None,
            parity=parity,
            run_dir=run_dir,
        )
        fields.update(metadata.runtime_fields(ir_version(raw, names), opset))
        if weights is not None and calibrate:
            thresholds = calibrate_export(cfg, raw, fields)
            if thresholds is not None:
                fields[TUNED_THRESHOLDS] = thresholds
        manifest = write_model_dir(staging, raw, names, fields, external_data)
    if run_dir is not None and TUNED_THRESHOLDS in manifest:
        with publish_file(run_dir / AUTO_THRESHOLDS_FILE) as path:
            path.write_text(json.dumps(manifest[TUNED_THRESHOLDS], indent=2) + "\n")
    return ExportResult(output, manifest, format_report(parity))
