"""A model directory loaded into onnxruntime: encode an image once, decode many prompts on it.

:class:`SamModel` is the whole inference path of ``geosam segment`` and the QGIS plugin, so it
imports only numpy, Pillow (through :mod:`geosam.runtime.preprocess`) and onnxruntime: QGIS's
Python has neither torch nor the ``onnx`` package. Everything about the ONNX files is read from
the sessions themselves (input/output names and shapes, ``custom_metadata_map``).

A folder without ``manifest.json`` is still usable when its files describe themselves: a geosam
ONNX file carries the manifest's fields in its metadata, and a plain SAM export (Meta's script,
other SAM tools) is accepted when its interface is SAM's, with the defaults of SAM's own
training: its pixel mean/std, the input size of the encoder graph, threshold 0, RGB uint8 with
no stretch, and an unknown ground resolution. Anything else is refused with one line, since a
decoder run on the wrong embeddings still returns masks, only wrong ones.

Prompts follow ``SamPredictor``: (x, y) pixel coordinates of the image given to :meth:`encode`,
where integer values are pixel centres (SAM adds 0.5 before embedding them).

With ``flip_tta`` the model encodes each image four times, as it is and mirrored
(:mod:`geosam.runtime.flips`), and decodes every prompt on each view, mirrored to match; the
views' mask logits, mirrored back, are averaged before thresholding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import GeosamError
from .flips import FLIPS, flip_box, flip_image, flip_planes, flip_points
from .preprocess import SAM_PIXEL_MEAN, SAM_PIXEL_STD, preprocess_image, scale_coords

# The model directory's file names and format, as geosam.export writes them (that package
# imports torch, so the runtime cannot import its constants).
MANIFEST = "manifest.json"
MODEL_FORMAT = "geosam-model/1"
ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
INT8 = {ENCODER: "encoder.int8.onnx", DECODER: "decoder.int8.onnx"}

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")

# SAM's point labels in the official ONNX decoder.
PADDING_LABEL = -1
BOX_LABELS = (2, 3)

# Manifest fields the runtime reads; a manifest without one of them is not a geosam model.
REQUIRED_FIELDS = (
    "format",
    "input_size",
    "pixel_mean",
    "pixel_std",
    "mask_threshold",
    "multimask",
    "embedding_shape",
)


def sam_defaults(input_size: int, embedding_shape: Sequence[int]) -> dict[str, Any]:
    """The manifest of a plain SAM export: what SAM itself was trained with."""
    return {
        "format": None,
        "model_type": "unknown",
        "input_size": input_size,
        "pixel_mean": list(SAM_PIXEL_MEAN),
        "pixel_std": list(SAM_PIXEL_STD),
        "padding": "bottom-right",
        "band_order": "RGB",
        "bands": None,
        "stretch": None,
        "ground_resolution_m": None,
        "mask_threshold": 0.0,
        "multimask": True,
        "embedding_shape": list(embedding_shape),
    }


@dataclass(frozen=True)
class Embedding:
    """The encoder's output for one image, with the sizes the decoder needs to undo resizing.

    ``array`` is (V, C, h, w) float32, one embedding per view of the image: V = 1, or 4 with
    test-time flips (view ``v`` is the image mirrored as ``FLIPS[v]``); ``input_size`` the
    (height, width) of the image after SAM's longest-side resize, inside the padded square;
    ``original_size`` the (height, width) given to :meth:`SamModel.encode`, which masks are
    returned at.
    """

    array: np.ndarray
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @property
    def flips(self) -> tuple[tuple[bool, bool], ...]:
        """The mirroring of each view in ``array``."""
        return FLIPS[: len(self.array)]


@dataclass(frozen=True)
class Prediction:
    """One decoded mask: ``mask`` (H, W) bool at the original size, ``score`` the IoU head's
    estimate, ``low_res_logits`` (V, 1, 4h, 4w), one per view of the embedding, each in its
    view's frame, to pass back as ``mask_input`` when refining, and ``index``, which of the
    decoder's outputs was chosen for the unmirrored view (always 0 for a decoder that selects
    in-graph, as geosam's exports do). With test-time flips, mask and score are the views'
    averages."""

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    index: int


class SamModel:
    """An encoder and decoder session pair with the manifest that says how to feed them."""

    def __init__(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        manifest: Mapping[str, Any],
        model_dir: Path,
        flip_tta: bool = False,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.manifest = dict(manifest)
        self.model_dir = model_dir
        self.input_size = int(manifest["input_size"])
        self.threshold = float(manifest["mask_threshold"])
        self.multimask = bool(manifest["multimask"])
        self.pixel_mean = tuple(manifest["pixel_mean"])
        self.pixel_std = tuple(manifest["pixel_std"])
        grid = manifest["embedding_shape"][-2:]
        self.mask_input_shape = (1, 1, 4 * grid[0], 4 * grid[1])
        # Encode (and so decode) each image as it is and mirrored (geosam.runtime.flips).
        self.flip_tta = flip_tta

    @property
    def ground_resolution_m(self) -> float | None:
        """Metres per pixel the model was tuned at; None when unknown (use the raster's)."""
        value = self.manifest.get("ground_resolution_m")
        return None if value is None else float(value)

    @property
    def manifest_source(self) -> str:
        """Where :attr:`manifest` was read, for messages: the manifest file, or for a folder
        without one the model itself (its ONNX metadata, or SAM's defaults)."""
        path = self.model_dir / MANIFEST
        return str(path) if path.is_file() else f"the model in {self.model_dir}"

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        int8: bool = False,
        threads: int | None = None,
        verify_hashes: bool = False,
        flip_tta: bool = False,
    ) -> SamModel:
        """Open ``model_dir`` (encoder, decoder, manifest) on onnxruntime's CPU provider.

        ``int8`` picks the quantized files export-onnx --quantize wrote; ``threads`` sets
        onnxruntime's intra-op threads (None: its default, all cores); ``flip_tta`` averages
        every mask over the image and its three mirror images (4x the work). File sizes are always
        checked against the manifest, which catches truncated copies cheaply; sha256 hashes
        only with ``verify_hashes``, since hashing a ViT-H encoder takes seconds.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise GeosamError(
                f"model folder {model_dir} does not exist: give the folder geosam export-onnx wrote"
            )
        names = (INT8[ENCODER], INT8[DECODER]) if int8 else (ENCODER, DECODER)
        missing = [name for name in names if not (model_dir / name).is_file()]
        if missing:
            raise GeosamError(
                f"model folder {model_dir} lacks {', '.join(missing)}: copy the whole folder "
                "export-onnx wrote" + (" (run it with --quantize for int8)" if int8 else "")
            )
        manifest_path = model_dir / MANIFEST
        manifest = None
        if manifest_path.is_file():
            manifest = read_manifest(manifest_path)
            check_files(model_dir, manifest, names, verify_hashes)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        encoder, decoder = (open_session(model_dir / name, options) for name in names)
        input_size, embedding_shape = check_interface(encoder, decoder, model_dir)
        if manifest is None:
            manifest = embedded_manifest(encoder) or sam_defaults(input_size, embedding_shape)
        if manifest["input_size"] != input_size or not _dims_match(
            manifest["embedding_shape"], embedding_shape
        ):
            raise GeosamError(
                f"{model_dir / MANIFEST} says input {manifest['input_size']} px and embeddings "
                f"{manifest['embedding_shape']}, the ONNX files {input_size} px and "
                f"{embedding_shape}: the manifest belongs to another model; export again"
            )
        return cls(encoder, decoder, manifest, model_dir, flip_tta)

    def encode(self, image: np.ndarray) -> Embedding:
        """Embed an (H, W, 3) uint8 image (already band-selected and stretched per manifest),
        and with ``flip_tta`` its three mirror images."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        views = []
        for flip_x, flip_y in FLIPS if self.flip_tta else FLIPS[:1]:
            view = np.ascontiguousarray(flip_image(image, flip_x, flip_y))
            encoder_input, input_size = preprocess_image(
                view, self.input_size, self.pixel_mean, self.pixel_std
            )
            (array,) = self.encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: encoder_input[None]})
            views.append(array)
        return Embedding(np.concatenate(views), tuple(input_size), tuple(image.shape[:2]))

    def decode(
        self,
        embedding: Embedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> Prediction:
        """The mask for one prompt: ``points`` (N, 2) x/y with ``labels`` (N,) 1 = inside,
        0 = outside; ``box`` (4,) x1, y1, x2, y2; ``mask_input`` a previous prediction's
        ``low_res_logits`` (iterative refinement). At least a point or a box is needed.
        Decoded on each view of ``embedding``, the logits averaged (test-time flips).
        """
        if mask_input is not None and len(mask_input) != len(embedding.array):
            raise ValueError(
                f"mask_input has {len(mask_input)} views, the embedding {len(embedding.array)}"
            )
        shape = embedding.original_size
        logits, scores, low_res_views, indices = 0.0, 0.0, [], []
        for view, (flip_x, flip_y) in enumerate(embedding.flips):
            feeds = self.decoder_feeds(
                embedding,
                None if points is None else flip_points(points, shape, flip_x, flip_y),
                labels,
                None if box is None else flip_box(box, shape, flip_x, flip_y),
                None if mask_input is None else mask_input[view : view + 1],
                view,
            )
            masks, iou, low_res = self.decoder.run(list(DECODER_OUTPUTS), feeds)
            index = self.select(iou, labels, box)
            logits = logits + flip_planes(masks[0, index], flip_x, flip_y)
            scores += float(iou[0, index])
            low_res_views.append(low_res[:, index : index + 1])
            indices.append(index)
        views = len(embedding.array)
        return Prediction(
            mask=logits / views > self.threshold,
            score=scores / views,
            low_res_logits=np.concatenate(low_res_views),
            index=indices[0],
        )

    def decode_many(self, embedding: Embedding, boxes: np.ndarray) -> list[Prediction]:
        """One :meth:`decode` per box of ``boxes`` (B, 4) on the same embedding.

        A loop: the official decoder takes one prompt set per call, and at SAM's sizes the
        decoder is milliseconds next to the encoder, so a batched graph would save little.
        """
        return [self.decode(embedding, box=box) for box in np.asarray(boxes).reshape(-1, 4)]

    def decode_points(
        self, embedding: Embedding, points: Iterable[Sequence[float]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each of ``points`` (x, y each) as its own positive single-point prompt, as SAM's
        automatic mode asks: per point, the candidate masks' logits (K, H, W) at the original
        size and their predicted IoUs (K,).

        The candidates are the outputs :meth:`select` chooses among for a single point, all
        of them, since automatic mode filters each on its own merits: the three multimask
        outputs of a four-output decoder (or output 0 for a model tuned without MULTIMASK),
        or the one output of a decoder that selects in-graph (geosam's exports, Meta's
        ``return_single_mask``), which for a single point is the best-scored of the three.
        The official decoder graph takes one prompt per call (its batch axis is fixed at 1;
        a graph with a dynamic batch axis was slower per point on a CPU, see
        docs/benchmarks.md), so this is one call per point over feeds built once, and a
        generator, so only one point's logits are in memory at a time. ``points`` is read
        one point at a time, after the previous point's masks were taken: an iterator can
        choose each next point from what the earlier ones found (automatic mode skips points
        inside parcels already found, :func:`~.auto.window_masks`).
        """
        shape = embedding.original_size
        views = [
            (self.decoder_feeds(embedding, np.zeros((1, 2)), np.ones(1), None, None, view), flip)
            for view, flip in enumerate(embedding.flips)
        ]
        for point in points:
            point = np.asarray(point, dtype=np.float64).reshape(1, 2)
            logits, scores = 0.0, 0.0
            for feeds, (flip_x, flip_y) in views:
                mirrored = flip_points(point, shape, flip_x, flip_y)
                feeds["point_coords"][0, 0] = scale_coords(mirrored, shape, self.input_size)[0]
                masks, iou, _ = self.decoder.run(list(DECODER_OUTPUTS), feeds)
                outputs = slice(1, None) if self.multimask and iou.shape[1] > 1 else slice(0, 1)
                logits = logits + flip_planes(masks[0, outputs], flip_x, flip_y)
                scores = scores + iou[0, outputs]
            yield logits / len(views), scores / len(views)

    def decoder_feeds(
        self,
        embedding: Embedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        view: int = 0,
    ) -> dict[str, np.ndarray]:
        """The official SAM ONNX decoder inputs, as Meta's ONNX example builds them, for the
        embedding's view ``view`` (prompts already mirrored to it).

        Coordinates are scaled to the resized image. A box becomes two corner points labelled
        2 and 3 after the clicks; without a box, a padding point (0, 0) labelled -1 is
        appended, as ``PromptEncoder`` does when it has no box.
        """
        if points is None and box is None:
            raise ValueError("a prompt needs points or a box")
        coords, point_labels = [], []
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            if labels is None or len(labels) != len(points):
                raise ValueError("give one label (1 inside, 0 outside) per point")
            coords.append(points)
            point_labels.append(np.asarray(labels, dtype=np.float64).reshape(-1))
        if box is not None:
            coords.append(np.asarray(box, dtype=np.float64).reshape(2, 2))
            point_labels.append(np.array(BOX_LABELS, dtype=np.float64))
        else:
            coords.append(np.zeros((1, 2)))
            point_labels.append(np.array([PADDING_LABEL], dtype=np.float64))
        scaled = scale_coords(np.concatenate(coords), embedding.original_size, self.input_size)
        has_mask = mask_input is not None
        if has_mask and tuple(mask_input.shape) != self.mask_input_shape:
            raise ValueError(f"mask_input must be {self.mask_input_shape}, got {mask_input.shape}")
        return {
            "image_embeddings": embedding.array[view : view + 1],
            "point_coords": scaled[None].astype(np.float32),
            "point_labels": np.concatenate(point_labels)[None].astype(np.float32),
            "mask_input": (mask_input if has_mask else np.zeros(self.mask_input_shape)).astype(
                np.float32
            ),
            "has_mask_input": np.array([float(has_mask)], dtype=np.float32),
            "orig_im_size": np.array(embedding.original_size, dtype=np.float32),
        }

    def select(self, iou: np.ndarray, labels: np.ndarray | None, box: np.ndarray | None) -> int:
        """Which of the decoder's outputs to return: :func:`select_output` with the
        manifest's ``multimask``, for a decoder that returns all four outputs; a decoder
        with one output (geosam's own since it selects in-graph, or Meta's
        ``return_single_mask``) has chosen already."""
        if iou.shape[1] == 1:
            return 0
        return select_output(iou[0], labels, box, self.multimask)


def select_output(
    iou: np.ndarray, labels: np.ndarray | None, box: np.ndarray | None, multimask: bool
) -> int:
    """The mask training scored for a prompt, of a decoder's four outputs and their
    predicted IoUs ``iou`` (4,): for a single positive point alone (ambiguous: a field or the
    block it is in) with ``multimask``, the best-scored of the three multimask outputs 1-3;
    for anything else output 0, SAM's single-mask output.

    Meta's ``SamOnnxModel.select_masks`` decides by point count instead, which treats a box
    (two corner points) like a single point; geosam's exported decoder applies this rule
    in-graph (``geosam.export.onnx_export.SamOnnxDecoder``), and the parity check compares
    the two.
    """
    single_point = box is None and labels is not None and len(labels) == 1 and labels[0] == 1
    if multimask and single_point:
        return 1 + int(np.argmax(iou[1:]))
    return 0


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json``, checked to be a geosam model manifest this runtime understands."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise GeosamError(f"{path} is unreadable ({error}): export the model again") from error
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise GeosamError(
            f"{path} is not a {MODEL_FORMAT} manifest (format {found!r}): export the model "
            "with this geosam version"
        )
    absent = [key for key in REQUIRED_FIELDS if key not in manifest]
    if absent:
        raise GeosamError(f"{path} lacks {', '.join(absent)}: export the model again")
    return manifest


def check_files(
    model_dir: Path, manifest: Mapping[str, Any], names: Sequence[str], verify_hashes: bool
) -> None:
    """The ONNX files are the ones the manifest lists: same size (and sha256 if asked)."""
    files = manifest.get("files", {})
    absent = [name for name in names if name not in files]
    if absent:
        raise GeosamError(f"{model_dir / MANIFEST} does not list {', '.join(absent)}: export again")
    # encoder.onnx.data: the external weights of encoders too large for one protobuf file
    for name in [name for name in files if name.removesuffix(".data") in names]:
        entry = files[name]
        path = model_dir / name
        if not path.is_file():
            raise GeosamError(f"model folder {model_dir} lacks {name}: copy the whole folder")
        if path.stat().st_size != entry["bytes"] or (
            verify_hashes and _sha256(path) != entry["sha256"]
        ):
            raise GeosamError(
                f"{path} is not the file {MANIFEST} describes (size or sha256 differ): copy "
                "the model folder again"
            )


def open_session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU onnxruntime session on ``path``; a file it cannot read is the user's to replace."""
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GeosamError(f"onnxruntime cannot open {path} ({message}): export again") from error


def check_interface(
    encoder: ort.InferenceSession, decoder: ort.InferenceSession, model_dir: Path
) -> tuple[int, list[int | str]]:
    """The input size and embedding shape, once the graphs are shown to be SAM's and a pair.

    The encoder takes ``image`` (1, 3, S, S) and gives ``image_embeddings``; the decoder has
    the official inputs and outputs, its ``mask_input`` 4 times the embedding grid; where
    both graphs state the embedding shape, they state the same one.
    """
    inputs, outputs = encoder.get_inputs(), encoder.get_outputs()
    image_shape = inputs[0].shape if len(inputs) == 1 else None
    if (
        image_shape is None
        or inputs[0].name != ENCODER_INPUT
        or [o.name for o in outputs] != [ENCODER_OUTPUT]
        or len(image_shape) != 4
        or image_shape[1] != 3
        or not isinstance(image_shape[2], int)
        or image_shape[2] != image_shape[3]
    ):
        raise GeosamError(
            f"{model_dir}: the encoder is not a SAM image encoder (want input 'image' "
            f"(1, 3, S, S) → 'image_embeddings', found {_describe(inputs)} → "
            f"{_describe(outputs)}): give a model folder from geosam export-onnx"
        )
    decoder_inputs = {i.name: i.shape for i in decoder.get_inputs()}
    decoder_outputs = [o.name for o in decoder.get_outputs()]
    embedding_shape = decoder_inputs.get("image_embeddings")
    mask_shape = decoder_inputs.get("mask_input")
    if (
        set(decoder_inputs) != set(DECODER_INPUTS)
        or decoder_outputs != list(DECODER_OUTPUTS)
        or len(embedding_shape) != 4
        or len(mask_shape) != 4
        or not all(isinstance(d, int) for d in (*embedding_shape[2:], *mask_shape[2:]))
        or [4 * d for d in embedding_shape[2:]] != list(mask_shape[2:])
    ):
        raise GeosamError(
            f"{model_dir}: the decoder does not have SAM's ONNX interface (want inputs "
            f"{', '.join(DECODER_INPUTS)} → {', '.join(DECODER_OUTPUTS)}; found "
            f"{_describe(decoder.get_inputs())} → {', '.join(decoder_outputs)})"
        )
    encoder_embeddings = outputs[0].shape
    if not _dims_match(encoder_embeddings, embedding_shape):
        raise GeosamError(
            f"{model_dir}: the encoder gives embeddings {encoder_embeddings} but the decoder "
            f"takes {embedding_shape}: encoder and decoder come from different models"
        )
    return image_shape[2], list(embedding_shape)


def embedded_manifest(encoder: ort.InferenceSession) -> dict[str, Any] | None:
    """The manifest fields a geosam export stores in every ONNX file, if this one has them."""
    props = encoder.get_modelmeta().custom_metadata_map
    if props.get("format") != json.dumps(MODEL_FORMAT):
        return None
    fields = {key: json.loads(value) for key, value in props.items()}
    return fields if all(key in fields for key in REQUIRED_FIELDS) else None


def _dims_match(a: Sequence[int | str | None], b: Sequence[int | str | None]) -> bool:
    """Equal rank, and equal sizes wherever both are static (symbolic dims match anything)."""
    return len(a) == len(b) and all(
        x == y for x, y in zip(a, b, strict=True) if isinstance(x, int) and isinstance(y, int)
    )


def _describe(args: Sequence[ort.NodeArg]) -> str:
    return ", ".join(f"{arg.name} {arg.shape}" for arg in args) or "nothing"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
