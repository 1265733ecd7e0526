"""geosam.runtime: the torch-free inference core.

Parity is checked against ``segment_anything``'s own ``SamPredictor`` on the untuned tiny model
(random weights from the config's seed, so ``build_model`` rebuilds the exported weights), so
the prompt conventions (box corners 2/3, the padding point, coordinate scaling) are proven
against SAM rather than against the exporter's own helper. The model folder is exported once
per module.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from segment_anything import SamPredictor
from segment_anything.utils.onnx import SamOnnxModel

import geosam.runtime
from geosam.config import load_config
from geosam.export import export_onnx
from geosam.modeling import build_model
from geosam.runtime import (
    Embedding,
    EmbeddingCache,
    SamModel,
    Window,
    WindowParams,
    map_to_pixel,
    pixel_to_map,
    prompt_box,
    prompt_window,
    sam_coords,
)
from geosam.runtime.flips import FLIPS, flip_box, flip_image, flip_planes, flip_points
from geosam.runtime.model import DECODER, ENCODER, MANIFEST
from geosam.utils.errors import GeosamError

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
# (height, width): not square, so padding and the orig_im_size crop are exercised.
IMAGE_SHAPE = (180, 240)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "model"
    export_onnx(load_config(CONFIG, []), out)
    return out


@pytest.fixture(scope="module")
def model(model_dir: Path) -> SamModel:
    return SamModel.load(model_dir, threads=1)


@pytest.fixture(scope="module")
def four_output(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SamModel:
    """The model with a decoder as Meta's script exports it with ``return_single_mask=False``
    (other SAM tools' decoders come that way too): all four masks, the caller selects.
    Upstream's crop keeps the traced size, so it is traced at IMAGE_SHAPE."""
    sam = build_model(load_config(CONFIG, [])).eval()
    folder = copy_model(model_dir, tmp_path_factory.mktemp("four") / "model", (ENCODER,))
    channels, grid = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
    example = {
        "image_embeddings": torch.zeros(1, channels, *grid),
        "point_coords": torch.zeros(1, 2, 2),
        "point_labels": torch.tensor([[1.0, -1.0]]),
        "mask_input": torch.zeros(1, 1, 4 * grid[0], 4 * grid[1]),
        "has_mask_input": torch.tensor([0.0]),
        "orig_im_size": torch.tensor(IMAGE_SHAPE, dtype=torch.float32),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SamOnnxModel(sam, return_single_mask=False),
            tuple(example.values()),
            str(folder / DECODER),
            input_names=list(example),
            output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "n"}, "point_labels": {1: "n"}},
            opset_version=17,
            dynamo=False,
        )
    return SamModel.load(folder, threads=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8)
    image[40:120, 60:160] = (200, 180, 40)  # a flat "field", so masks are not pure noise
    return image


@pytest.fixture(scope="module")
def predictor(image: np.ndarray) -> SamPredictor:
    predictor = SamPredictor(build_model(load_config(CONFIG, [])).eval())
    predictor.set_image(image)
    return predictor


@pytest.fixture(scope="module")
def embedding(model: SamModel, image: np.ndarray) -> Embedding:
    return model.encode(image)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_runtime_imports_no_torch(model_dir: Path) -> None:
    """Loading, encoding, decoding and automatic mode pull in neither torch, rasterio,
    shapely nor onnx."""
    script = f"""
import sys
import numpy as np
import geosam.runtime
from geosam.runtime import auto, cache, model, preprocess, prompts, segmenter, stretch, windows
stretch.Stretch(method="percentile", low=(0.0,), high=(10.0,)).apply(np.ones((1, 4, 4)))
m = geosam.runtime.SamModel.load({str(model_dir)!r}, threads=1)
e = m.encode(np.zeros((50, 60, 3), np.uint8))
m.decode(e, points=np.array([[10.0, 20.0]]), labels=np.array([1]))
m.decode_many(e, np.array([[1.0, 2.0, 30.0, 40.0]]))
params = auto.AutoParams(points_per_side=2, pred_iou_thresh=0.0, stability_thresh=0.0)
tile = next(auto.auto_tiling((60, 50), (1.0, 1.0), None, m.input_size).windows())
merger = auto.MaskMerger(auto.auto_tiling((60, 50), (1.0, 1.0), None, m.input_size), params)
merger.add(tile, auto.window_masks(m, e, tile, params)[0])

class Reader:  # a RasterReader over an array
    size, geotransform, description, cache_id = (60, 50), (0, 1, 0, 0, 0, -1), "array", "a"
    def pixel_size_m(self, col, row): return 1.0, 1.0
    def read(self, window): return np.zeros((window.out_height, window.out_width, 3), np.uint8)
    def valid(self, window): return None

list(auto.AutoSegmenter(m, Reader(), params).masks())
p = prompts.Prompt(np.array([[10.0, 20.0]]), np.ones(1))
list(segmenter.segment_prompts(segmenter.PromptSegmenter(m, Reader()), [p]))
print(sorted(n for n in ("torch", "rasterio", "shapely", "onnx", "geosam.export")
             if n in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_runtime_imports_are_relative() -> None:
    """The plugin vendors the folder under another package name: an absolute ``geosam``
    import would break there, and a third-party one would be missing from QGIS."""
    allowed = {*sys.stdlib_module_names, "numpy", "onnxruntime", "PIL"}
    for path in Path(geosam.runtime.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            outside = [n for n in names if n.split(".")[0] not in allowed]
            assert not outside, f"{path.name} imports {outside}"


def test_decode_points(model: SamModel, embedding: Embedding) -> None:
    """geosam's decoder selects in-graph: one candidate per point, the mask decode() gives."""
    points = np.array([[110.0, 80.0], [20.0, 150.0]])
    results = list(model.decode_points(embedding, points))
    assert len(results) == 2
    for point, (logits, scores) in zip(points, results, strict=True):
        single = model.decode(embedding, points=point[None], labels=np.array([1]))
        assert logits.shape == (1, *IMAGE_SHAPE) and scores.shape == (1,)
        assert single.score == pytest.approx(float(scores[0]))
        assert np.array_equal(single.mask, logits[0] > model.threshold)
    assert list(model.decode_points(embedding, np.zeros((0, 2)))) == []


def test_decode_points_four_outputs(four_output: SamModel, embedding: Embedding) -> None:
    """A four-output decoder: each point's candidates are the outputs decode() chooses among,
    the three multimask ones, or output 0 alone for a model tuned without MULTIMASK."""
    point = np.array([[110.0, 80.0]])
    ((logits, scores),) = four_output.decode_points(embedding, point)
    single = four_output.decode(embedding, points=point, labels=np.array([1]))
    assert logits.shape == (3, *IMAGE_SHAPE) and scores.shape == (3,)
    best = int(np.argmax(scores))
    assert single.index == 1 + best and single.score == pytest.approx(float(scores[best]))
    assert np.array_equal(single.mask, logits[best] > four_output.threshold)
    four_output.multimask = False
    try:
        ((logits, scores),) = four_output.decode_points(embedding, point)
        expected = four_output.decode(embedding, points=point, labels=np.array([1]))
    finally:
        four_output.multimask = True
    assert logits.shape == (1, *IMAGE_SHAPE) and expected.index == 0
    assert scores[0] == pytest.approx(expected.score)
    assert np.array_equal(logits[0] > four_output.threshold, expected.mask)


def test_encoder_parity(embedding: Embedding, predictor: SamPredictor) -> None:
    expected = predictor.features.numpy()
    assert embedding.original_size == IMAGE_SHAPE
    assert embedding.input_size == tuple(predictor.input_size)
    assert np.abs(embedding.array - expected).max() <= 1e-3 * max(1.0, np.abs(expected).max())


PROMPTS = {
    "box": {"box": np.array([60.0, 40.0, 160.0, 120.0])},
    "point": {"point_coords": np.array([[110.0, 80.0]]), "point_labels": np.array([1])},
    "point+negative": {
        "point_coords": np.array([[110.0, 80.0], [20.0, 150.0]]),
        "point_labels": np.array([1, 0]),
    },
    "box+point": {
        "box": np.array([60.0, 40.0, 160.0, 120.0]),
        "point_coords": np.array([[110.0, 80.0]]),
        "point_labels": np.array([1]),
    },
}


@pytest.mark.parametrize("decoder", ["model", "four_output"])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_decoder_parity(
    name: str,
    decoder: str,
    embedding: Embedding,
    predictor: SamPredictor,
    request: pytest.FixtureRequest,
) -> None:
    """Same mask, score and low-res logits as SamPredictor, of the output training scored:
    the best of outputs 1-3 for a single positive point, output 0 otherwise; chosen in-graph
    by geosam's decoder (one output), by the runtime for a four-output one."""
    model = request.getfixturevalue(decoder)
    prompt = PROMPTS[name]
    prediction = model.decode(
        embedding, prompt.get("point_coords"), prompt.get("point_labels"), prompt.get("box")
    )
    single_point = name == "point"
    masks, scores, low_res = predictor.predict(multimask_output=single_point, **prompt)
    best = int(np.argmax(scores)) if single_point else 0
    assert prediction.index == (1 + best if single_point and decoder == "four_output" else 0)
    assert prediction.mask.shape == IMAGE_SHAPE
    assert mask_iou(prediction.mask, masks[best]) >= 0.999
    assert 0 < prediction.mask.mean() < 1
    assert prediction.score == pytest.approx(float(scores[best]), abs=1e-4)
    assert np.abs(prediction.low_res_logits[0, 0] - low_res[best]).max() <= 1e-3


def test_refinement_parity(model: SamModel, embedding: Embedding, predictor: SamPredictor) -> None:
    """A previous prediction's low-res logits as mask_input, as SAM's iterative clicks do."""
    first = model.decode(embedding, **_points(PROMPTS["point"]))
    prompt = PROMPTS["point+negative"]
    prediction = model.decode(embedding, **_points(prompt), mask_input=first.low_res_logits)
    masks, _, low_res = predictor.predict(
        multimask_output=False, mask_input=first.low_res_logits[0], **prompt
    )
    plain = model.decode(embedding, **_points(prompt))
    assert np.abs(prediction.low_res_logits - plain.low_res_logits).max() > 1e-3
    assert mask_iou(prediction.mask, masks[0]) >= 0.999
    assert np.abs(prediction.low_res_logits[0, 0] - low_res[0]).max() <= 1e-3


@pytest.fixture(scope="module")
def flipped(model_dir: Path) -> SamModel:
    return SamModel.load(model_dir, threads=1, flip_tta=True)


@pytest.mark.parametrize("name", ["box", "point", "box+point"])
def test_flip_tta_averages_sam_over_the_mirror_images(
    name: str, flipped: SamModel, image: np.ndarray
) -> None:
    """With flip_tta each prompt's mask is SAM's logits on the image and its three mirror
    images, prompts mirrored with them and logits mirrored back, averaged (SamPredictor as
    the reference)."""
    prompt = PROMPTS[name]
    embedding = flipped.encode(image)
    assert embedding.array.shape[0] == 4 and embedding.flips == FLIPS
    prediction = flipped.decode(
        embedding, prompt.get("point_coords"), prompt.get("point_labels"), prompt.get("box")
    )
    predictor = SamPredictor(build_model(load_config(CONFIG, [])).eval())
    logits, scores = [], []
    for flip_x, flip_y in FLIPS:
        predictor.set_image(np.ascontiguousarray(flip_image(image, flip_x, flip_y)))
        mirrored = {
            "point_coords": None
            if "point_coords" not in prompt
            else flip_points(prompt["point_coords"], IMAGE_SHAPE, flip_x, flip_y),
            "point_labels": prompt.get("point_labels"),
            "box": None
            if "box" not in prompt
            else flip_box(prompt["box"], IMAGE_SHAPE, flip_x, flip_y),
        }
        single_point = name == "point"
        masks, iou, _ = predictor.predict(
            multimask_output=single_point, return_logits=True, **mirrored
        )
        best = int(np.argmax(iou)) if single_point else 0
        logits.append(flip_planes(masks[best], flip_x, flip_y))
        scores.append(float(iou[best]))
    expected = np.mean(logits, axis=0) > 0
    assert 0 < expected.mean() < 1
    assert mask_iou(prediction.mask, expected) >= 0.999
    assert prediction.score == pytest.approx(np.mean(scores), abs=1e-4)
    assert prediction.low_res_logits.shape == (4, *flipped.mask_input_shape[1:])
    # refining passes each view its own previous logits; a one-view mask_input is refused
    refined = flipped.decode(
        embedding, box=PROMPTS["box"]["box"], mask_input=prediction.low_res_logits
    )
    assert refined.mask.shape == IMAGE_SHAPE
    with pytest.raises(ValueError, match="views"):
        flipped.decode(
            embedding, box=PROMPTS["box"]["box"], mask_input=prediction.low_res_logits[:1]
        )


def test_flip_tta_decode_points_is_decode(flipped: SamModel, image: np.ndarray) -> None:
    embedding = flipped.encode(image)
    points = np.array([[110.0, 80.0], [20.0, 150.0]])
    for point, (logits, scores) in zip(
        points, flipped.decode_points(embedding, points), strict=True
    ):
        single = flipped.decode(embedding, points=point[None], labels=np.array([1]))
        assert logits.shape == (1, *IMAGE_SHAPE)
        assert single.score == pytest.approx(float(scores[0]))
        assert np.array_equal(single.mask, logits[0] > flipped.threshold)


def _points(prompt: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"points": prompt["point_coords"], "labels": prompt["point_labels"]}


def test_decode_many(model: SamModel, embedding: Embedding) -> None:
    boxes = np.array([[60.0, 40.0, 160.0, 120.0], [10.0, 10.0, 50.0, 90.0]])
    many = model.decode_many(embedding, boxes)
    for box, prediction in zip(boxes, many, strict=True):
        single = model.decode(embedding, box=box)
        assert np.array_equal(prediction.mask, single.mask) and prediction.index == 0


def test_mask_selection(model_dir: Path) -> None:
    iou = np.array([[0.9, 0.1, 0.7, 0.3]])
    multimask = SamModel.load(model_dir)
    assert multimask.select(iou, np.array([1]), None) == 2
    assert multimask.select(iou, np.array([0]), None) == 0
    assert multimask.select(iou, np.array([1, 1]), None) == 0
    assert multimask.select(iou, None, np.zeros(4)) == 0
    assert multimask.select(iou, np.array([1]), np.zeros(4)) == 0
    assert multimask.select(iou[:, :1], np.array([1]), None) == 0
    multimask.multimask = False
    assert multimask.select(iou, np.array([1]), None) == 0


def test_bad_prompts(model: SamModel, embedding: Embedding) -> None:
    with pytest.raises(ValueError, match="points or a box"):
        model.decode(embedding)
    with pytest.raises(ValueError, match="one label"):
        model.decode(embedding, points=np.zeros((2, 2)), labels=np.ones(1))
    with pytest.raises(ValueError, match="mask_input"):
        model.decode(embedding, box=np.ones(4), mask_input=np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="uint8"):
        model.encode(np.zeros((10, 10, 3), np.float32))


def test_manifest_read(model: SamModel) -> None:
    assert model.input_size == 256
    assert model.mask_input_shape == (1, 1, 64, 64)
    assert model.manifest["model_type"] == "tiny"
    assert model.ground_resolution_m is None


def copy_model(model_dir: Path, target: Path, names: tuple[str, ...] = (ENCODER, DECODER)) -> Path:
    target.mkdir()
    for name in names:
        shutil.copy(model_dir / name, target / name)
    return target


def strip_metadata(path: Path) -> None:
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    onnx.save(graph, str(path))


def test_without_manifest_geosam_metadata(model_dir: Path, tmp_path: Path) -> None:
    """Files copied out of the folder still describe themselves through their metadata."""
    loaded = SamModel.load(copy_model(model_dir, tmp_path / "copy"))
    assert loaded.manifest["model_type"] == "tiny"
    assert loaded.multimask is True


def test_without_manifest_plain_sam(model_dir: Path, tmp_path: Path) -> None:
    """A plain SAM export (no geosam metadata) gets SAM's defaults."""
    folder = copy_model(model_dir, tmp_path / "plain")
    for name in (ENCODER, DECODER):
        strip_metadata(folder / name)
    loaded = SamModel.load(folder)
    assert loaded.manifest["model_type"] == "unknown"
    assert loaded.input_size == 256
    assert loaded.threshold == 0.0
    assert loaded.pixel_mean == (123.675, 116.28, 103.53)
    assert loaded.manifest["stretch"] is None and loaded.manifest["band_order"] == "RGB"
    assert loaded.ground_resolution_m is None
    embedding = loaded.encode(np.zeros((64, 64, 3), np.uint8))
    assert loaded.decode(embedding, box=np.array([5.0, 5.0, 40.0, 40.0])).mask.shape == (64, 64)


def constant_encoder(path: Path, embedding_shape: list[int]) -> None:
    """An ONNX graph with an encoder's names that returns zeros of ``embedding_shape``."""
    zeros = helper.make_tensor(
        "zeros", TensorProto.FLOAT, embedding_shape, [0.0] * int(np.prod(embedding_shape))
    )
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["image_embeddings"], value=zeros)],
        "encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, embedding_shape)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_bad_model_folders(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(GeosamError, match="does not exist"):
        SamModel.load(tmp_path / "nowhere")
    with pytest.raises(GeosamError, match=r"lacks decoder\.onnx"):
        SamModel.load(copy_model(model_dir, tmp_path / "half", (ENCODER, MANIFEST)))
    with pytest.raises(GeosamError, match="--quantize"):
        SamModel.load(model_dir, int8=True)

    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(model_dir / ENCODER, swapped / DECODER)
    shutil.copy(model_dir / ENCODER, swapped / ENCODER)
    with pytest.raises(GeosamError, match="decoder does not have SAM's ONNX interface"):
        SamModel.load(swapped)

    mismatched = copy_model(model_dir, tmp_path / "mismatched", (DECODER,))
    constant_encoder(mismatched / ENCODER, [1, 256, 8, 8])
    with pytest.raises(GeosamError, match="different models"):
        SamModel.load(mismatched)

    truncated = copy_model(model_dir, tmp_path / "truncated", (ENCODER, DECODER, MANIFEST))
    with (truncated / DECODER).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(GeosamError, match=r"not the file manifest\.json describes"):
        SamModel.load(truncated)

    foreign = copy_model(model_dir, tmp_path / "foreign", (ENCODER, DECODER, MANIFEST))
    manifest = json.loads((foreign / MANIFEST).read_text())
    (foreign / MANIFEST).write_text(json.dumps({**manifest, "format": "other/9"}))
    with pytest.raises(GeosamError, match="not a geosam-model/1 manifest"):
        SamModel.load(foreign)
    (foreign / MANIFEST).write_text(json.dumps({**manifest, "input_size": 1024}))
    with pytest.raises(GeosamError, match="belongs to another model"):
        SamModel.load(foreign)


def test_verify_hashes(model_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(model_dir, tmp_path / "hashed", (ENCODER, DECODER, MANIFEST))
    SamModel.load(folder, verify_hashes=True)
    data = bytearray((folder / DECODER).read_bytes())
    data[-1] ^= 1
    (folder / DECODER).write_bytes(bytes(data))
    SamModel.load(folder)  # same size: only the hash tells
    with pytest.raises(GeosamError, match="sha256"):
        SamModel.load(folder, verify_hashes=True)


# --- windows ---------------------------------------------------------------------------------

# A north-up UTM raster with 0.3 m pixels, and a rotated one.
GT = (500_000.0, 0.3, 0.0, 5_000_000.0, 0.0, -0.3)
ROTATED = (1000.0, 0.5, 0.1, 2000.0, 0.2, -0.5)


@pytest.mark.parametrize("gt", [GT, ROTATED])
def test_map_pixel_round_trip(gt: tuple[float, ...]) -> None:
    pixels = np.array([[0.0, 0.0], [10.5, 3.25], [999.0, 1234.0]])
    mapped = pixel_to_map(gt, pixels)
    assert np.allclose(map_to_pixel(gt, mapped), pixels)
    assert np.allclose(mapped[0], (gt[0], gt[3]))


def test_window_resamples_to_model_resolution() -> None:
    """0.3 m raster, 0.6 m model, 256 px input: a 512 px window read at half size."""
    window = prompt_window((1000, 1000, 1010, 1010), (4000, 3000), (0.3, 0.3), 0.6, 256)
    assert (window.width, window.height, window.out_width, window.out_height) == (
        512,
        512,
        256,
        256,
    )
    assert window.scale == (2.0, 2.0)
    # centred on the prompt
    assert window.col_off + window.width / 2 == pytest.approx(1005, abs=1)
    same = prompt_window((1000, 1000, 1010, 1010), (4000, 3000), (0.3, 0.3), None, 256)
    assert same.scale == (1.0, 1.0) and same.out_width == 256


def test_window_upsampling_is_capped() -> None:
    """A 2 m raster for a 0.5 m model is upsampled 2x (max_upsample), not 4x."""
    window = prompt_window((500, 500, 502, 502), (2000, 2000), (2.0, 2.0), 0.5, 256)
    assert window.scale == (0.5, 0.5)
    assert (window.width, window.out_width) == (128, 256)
    wider = WindowParams(max_upsample=4.0)
    assert prompt_window((500, 500, 502, 502), (2000, 2000), (2.0, 2.0), 0.5, 256, wider).scale == (
        0.25,
        0.25,
    )


def test_window_anisotropic_pixels() -> None:
    """Non-square ground pixels (a geographic CRS) become square model pixels."""
    window = prompt_window((900, 900, 910, 910), (3000, 3000), (0.5, 0.6), 0.6, 256)
    sx, sy = window.scale
    assert sx * 0.5 == pytest.approx(0.6, rel=0.01) and sy * 0.6 == pytest.approx(0.6, rel=0.01)


@pytest.mark.parametrize(
    "box",
    [(2, 3, 12, 13), (1985, 1490, 1995, 1499), (0, 700, 5, 720)],
    ids=["top-left", "bottom-right", "left-edge"],
)
def test_window_near_edge_shifts_inside(box: tuple[float, float, float, float]) -> None:
    raster = (2000, 1500)
    window = prompt_window(box, raster, (1.0, 1.0), None, 256)
    assert window.col_off >= 0 and window.row_off >= 0
    assert window.col_off + window.width <= raster[0]
    assert window.row_off + window.height <= raster[1]
    assert (window.width, window.height) == (256, 256)  # full context, shifted not clipped
    assert window.contains(box, 16, raster)


def test_window_on_small_raster() -> None:
    """Narrower than the footprint: the whole width, padded bottom-right by the encoder."""
    window = prompt_window((50, 400, 60, 410), (100, 1000), (1.0, 1.0), None, 256)
    assert (window.col_off, window.width, window.out_width) == (0, 100, 100)
    assert (window.height, window.out_height) == (256, 256)


def test_huge_prompt_downsampled_as_far_as_it_takes() -> None:
    """No box is too large: the window holds it with its margin, coarser as it must be."""
    for box in [(1000, 1000, 1500, 1400), (0, 0, 1200, 1200), (100, 200, 4900, 4800)]:
        window = prompt_window(box, (5000, 5000), (1.0, 1.0), 1.0, 256)
        assert max(window.out_width, window.out_height) <= 256
        assert window.contains(box, 0.25 * max(box[2] - box[0], box[3] - box[1]), (5000, 5000))
    assert window.scale[0] > 18


def test_prompt_outside_raster() -> None:
    with pytest.raises(GeosamError, match="outside"):
        prompt_window((-20, 5, -10, 15), (100, 100), (1.0, 1.0), None, 256)


def test_window_coordinate_round_trip() -> None:
    window = prompt_window((1000, 1000, 1010, 1010), (4000, 3000), (0.3, 0.3), 0.6, 256)
    out_gt = window.transform(GT)
    points_map = pixel_to_map(GT, np.array([[1003.0, 1007.5], [1200.0, 900.0]]))
    out = window.pixel_to_output(map_to_pixel(GT, points_map))
    # the output image's own geotransform gives the same map points
    assert np.allclose(pixel_to_map(out_gt, out), points_map)
    assert np.allclose(pixel_to_map(GT, window.output_to_pixel(out)), points_map)
    assert out_gt[1] == pytest.approx(0.6) and out_gt[5] == pytest.approx(-0.6)
    assert np.allclose(sam_coords([[0.5, 1.5]]), [[0.0, 1.0]])


def test_prompt_box() -> None:
    assert prompt_box(np.array([[3.0, 4.0], [1.0, 9.0]])) == (1.0, 4.0, 3.0, 9.0)
    assert prompt_box(np.array([[3.0, 4.0]]), (0.0, 5.0, 2.0, 6.0)) == (0.0, 4.0, 3.0, 6.0)
    with pytest.raises(ValueError):
        prompt_box()


# --- cache -----------------------------------------------------------------------------------


def fake_embedding(value: float = 0.0) -> Embedding:
    """A 1 KiB embedding."""
    return Embedding(np.full((1, 1, 16, 16), value, np.float32), (256, 256), (256, 256))


def test_cache_lru_by_bytes() -> None:
    cache = EmbeddingCache(max_bytes=2 * 1024 + 512)
    keys = [("r", Window(i * 100, 0, 256, 256, 256, 256).key) for i in range(3)]
    for value in (0, 1):
        assert cache.get(keys[value]) is None
        cache.put(keys[value], fake_embedding(value))
    assert cache.get(keys[0]).array[0, 0, 0, 0] == 0
    assert cache.get(keys[2]) is None
    cache.put(keys[2], fake_embedding(2))  # evicts keys[1], the LRU
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache
    assert (cache.hits, cache.misses, cache.nbytes) == (1, 3, 2048)
    cache.put(("r", (0, 0, 1, 1, 1, 1)), Embedding(np.zeros(4096, np.float32), (1, 1), (1, 1)))
    assert len(cache) == 2  # larger than the whole cache: not kept, nothing evicted
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_cache_find_reuses_nearby_windows() -> None:
    cache = EmbeddingCache(max_bytes=1 << 20)
    window = Window(100, 100, 512, 512, 256, 256)
    cache.put(("a", window.key), fake_embedding(1))
    found = cache.find("a", (300, 300, 320, 320), margin=50)
    assert found is not None and found[0] == window
    assert cache.find("a", (105, 300, 120, 320), margin=50) is None  # too close to the edge
    assert cache.find("b", (300, 300, 320, 320), margin=50) is None  # another raster
    edge = Window(0, 0, 512, 512, 256, 256)
    cache.put(("a", edge.key), fake_embedding(2))
    assert cache.find("a", (2, 2, 10, 10), margin=50) is None
    assert cache.find("a", (2, 2, 10, 10), margin=50, raster_size=(4000, 4000))[0] == edge
    assert (cache.hits, cache.misses) == (2, 3)
