"""geosam export-onnx: the model directory, the official SAM decoder interface, metadata,
parity with PyTorch, int8, external data, and bad input.

One short training run of the tiny model (256 px input, 16x16 embeddings) is exported once,
with --quantize, and shared by the module; the untuned preset is exported once more with the
encoder's weights forced into external data (the ViT-L/H path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from geosam.cli import cli
from geosam.config import load_config
from geosam.data.synthetic import make_scene
from geosam.data.tiling import TileParams, tile_dataset
from geosam.engine.launch import launch_training
from geosam.engine.run_dir import build_tuned_model, load_run
from geosam.export import DECODER, ENCODER, INT8, MANIFEST, export_onnx, read_metadata_props
from geosam.export.metadata import runtime_fields
from geosam.export.onnx_export import SamOnnxDecoder
from geosam.export.parity import (
    MAX_ABS_DIFF,
    MIN_MASK_IOU,
    Prompt,
    selected,
    session,
    torch_decode,
)
from geosam.modeling import build_model, sha256_file
from geosam.utils.errors import GeosamError

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
ONNX_FILES = {ENCODER, DECODER, INT8[ENCODER], INT8[DECODER]}
# The official SAM ONNX decoder interface for a 256 px model: 16x16 embeddings, 64x64 masks.
DECODER_INPUTS = {
    "image_embeddings": [1, 64, 16, 16],
    "point_coords": [1, "num_points", 2],
    "point_labels": [1, "num_points"],
    "mask_input": [1, 1, 64, 64],
    "has_mask_input": [1],
    "orig_im_size": [2],
}
DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["export-onnx", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def shape(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch decoder run of the tiny model on a 600 px synthetic scene."""
    root = tmp_path_factory.mktemp("export")
    scene = make_scene(root / "scene", size=600, seed=5)
    params = TileParams(tile_size=256, overlap=32, split_block=1, val_fraction=0.3, seed=3)
    tile_dataset([str(scene.raster)], scene.labels, root / "tiles", params, progress=False)
    cfg = load_config(
        CONFIG,
        [
            "DATASETS.TRAIN",
            str(root / "tiles"),
            "OUTPUT_DIR",
            str(root / "run"),
            "SOLVER.MAX_EPOCHS",
            "1",
            "SOLVER.WARMUP_ITERS",
            "2",
        ],
    )
    launch_training(cfg, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def exported(run: Path) -> tuple[Path, str, dict]:
    """The run exported with --quantize: the model folder, what was printed, the manifest."""
    model_dir = run.parent / "model"
    code, stdout, stderr = run_cli("--run", str(run), "-o", str(model_dir), "--quantize")
    assert code == 0, stderr
    return model_dir, stdout, json.loads((model_dir / MANIFEST).read_text())


@pytest.fixture(scope="module")
def tuned(run: Path) -> torch.nn.Module:
    cfg, weights = load_run(run)
    return build_tuned_model(build_model(cfg), cfg, weights.path).eval()


def test_model_directory(exported: tuple[Path, str, dict], run: Path) -> None:
    model_dir, stdout, manifest = exported
    assert {p.name for p in model_dir.iterdir()} == ONNX_FILES | {MANIFEST}
    assert set(manifest["files"]) == ONNX_FILES
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(model_dir / name)
        assert entry["bytes"] == (model_dir / name).stat().st_size
    # nothing left beside it from staging
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".model")]
    assert manifest["format"] == "geosam-model/1"
    assert manifest["model_type"] == "tiny"
    assert manifest["input_size"] == 256
    assert manifest["embedding_shape"] == [1, 64, 16, 16]
    assert manifest["opset"] == 17
    # torch's exporter stamps IR 8 at opset 17: onnxruntime 1.12 is the first to read both
    assert manifest["onnx_ir_version"] == 8
    assert manifest["min_onnxruntime"] == "1.12"
    assert manifest["weights_sha256"] == sha256_file(run / "model_best.pth")
    assert manifest["base_checkpoint_sha256"] is None
    tiles = json.loads((run.parent / "tiles" / MANIFEST).read_text())
    assert manifest["ground_resolution_m"] == tiles["ground_resolution_m"]
    assert manifest["bands"] == tiles["sources"][0]["bands"] == [1, 2, 3]
    assert manifest["stretch"] == tiles["sources"][0]["stretch"]
    assert manifest["sources_agree"] is True
    assert manifest["mask_threshold"] == 0.0
    assert manifest["mask_selection"] == "in-graph" and manifest["single_mask"] is True
    assert "parity" in stdout and "int8" in stdout


def test_metadata_props_equal_manifest(exported: tuple[Path, str, dict]) -> None:
    model_dir, _, manifest = exported
    fields = {key: value for key, value in manifest.items() if key != "files"}
    for name in ONNX_FILES:
        assert read_metadata_props(onnx.load(str(model_dir / name))) == fields, name


def test_auto_thresholds_tuned_on_the_val_split(
    exported: tuple[Path, str, dict], run: Path
) -> None:
    """Every field is in the ONNX metadata too (test_metadata_props_equal_manifest)."""
    _, _, manifest = exported
    tuned = manifest["auto_thresholds"]
    for name in ("pred_iou_thresh", "stability_thresh"):
        assert tuned[name] in tuned["grid"][name]
    assert tuned["f1"] >= tuned["sam_defaults"]["f1"] and 0 <= tuned["f1"] <= 1
    assert tuned["match_iou"] == 0.5 and tuned["truth"] > 0
    val = tuned["val"]
    assert val["dataset"] == str((run.parent / "tiles").resolve()) and val["split"] == "val"
    assert val["tiles"] > 0 and val["area_km2"] > 0
    assert json.loads((run / "auto_thresholds.json").read_text()) == tuned


def test_no_calibration(run: Path, tmp_path: Path) -> None:
    code, _, stderr = run_cli("--run", str(run), "-o", str(tmp_path / "model"), "--no-calibration")
    assert code == 0, stderr
    assert "auto_thresholds" not in json.loads((tmp_path / "model" / MANIFEST).read_text())


@pytest.mark.parametrize("name", [DECODER, INT8[DECODER]])
def test_decoder_interface(exported: tuple[Path, str, dict], name: str) -> None:
    """The official SAM ONNX decoder: input names, order, shapes, a dynamic point count."""
    model = onnx.load(str(exported[0] / name))
    assert {i.name: shape(i) for i in model.graph.input} == DECODER_INPUTS
    assert [i.name for i in model.graph.input] == list(DECODER_INPUTS)
    assert [o.name for o in model.graph.output] == DECODER_OUTPUTS
    decoder = session(exported[0] / name)
    embeddings = np.random.default_rng(0).standard_normal((1, 64, 16, 16))
    for points in (1, 7):
        prompt = Prompt(coords=np.full((points, 2), 100.0), labels=np.ones(points))
        masks, iou, low_res = decoder.run(None, prompt.onnx_feeds(embeddings, (300, 200)))
        assert masks.shape == (1, 1, 300, 200)
        assert iou.shape == (1, 1)
        assert low_res.shape == (1, 1, 64, 64)


def test_encoder_interface(exported: tuple[Path, str, dict]) -> None:
    model = onnx.load(str(exported[0] / ENCODER))
    assert [(i.name, shape(i)) for i in model.graph.input] == [("image", [1, 3, 256, 256])]
    assert [(o.name, shape(o)) for o in model.graph.output] == [
        ("image_embeddings", [1, 64, 16, 16])
    ]


def test_parity_recorded(exported: tuple[Path, str, dict]) -> None:
    parity = exported[2]["parity"]
    assert parity["mask_logits_max_abs_diff"] <= MAX_ABS_DIFF
    assert parity["mask_iou_min"] >= MIN_MASK_IOU
    assert set(parity["decoder"]) == {"box", "point", "point+mask"}
    assert parity["encoder_max_abs_diff"] <= MAX_ABS_DIFF * max(1.0, parity["embedding_max_abs"])
    assert 0.0 <= parity["int8"]["mask_iou_min"] <= 1.0
    assert set(parity["int8"]["mask_iou"]) == {"box", "point", "point+mask"}


@pytest.mark.parametrize("original_size", [(300, 200), (256, 256), (90, 250)])
def test_decoder_parity_any_image_size(
    exported: tuple[Path, str, dict], tuned: torch.nn.Module, original_size: tuple[int, int]
) -> None:
    """The crop to the unpadded image follows orig_im_size (not the traced example's)."""
    from geosam.runtime.preprocess import preprocess_shape

    input_size = preprocess_shape(*original_size, 256)
    embeddings = torch.from_numpy(
        np.random.default_rng(1).standard_normal((1, 64, 16, 16)).astype(np.float32)
    )
    h, w = input_size
    prompt = Prompt(box=np.array([w * 0.2, h * 0.2, w * 0.7, h * 0.8]))
    reference = selected(
        torch_decode(tuned, embeddings, prompt, input_size, original_size), prompt, multimask=True
    )
    outputs = session(exported[0] / DECODER).run(
        None, prompt.onnx_feeds(embeddings.numpy(), original_size)
    )
    for output, expected in zip(outputs, reference, strict=True):
        assert output.shape == expected.shape
        np.testing.assert_allclose(output, expected, atol=MAX_ABS_DIFF)


SELECTION_PROMPTS = {
    "point": Prompt(coords=np.array([[120.0, 90.0]]), labels=np.array([1])),
    "negative point": Prompt(coords=np.array([[120.0, 90.0]]), labels=np.array([0])),
    "two points": Prompt(coords=np.array([[120.0, 90.0], [60.0, 40.0]]), labels=np.ones(2)),
    "point+negative": Prompt(coords=np.array([[120.0, 90.0], [60.0, 40.0]]), labels=np.eye(2)[0]),
    "box": Prompt(box=np.array([50.0, 40.0, 180.0, 150.0])),
    "box+point": Prompt(
        coords=np.array([[120.0, 90.0]]), labels=np.ones(1), box=np.array([50, 40, 180, 150.0])
    ),
}


@pytest.mark.parametrize("name", list(SELECTION_PROMPTS))
def test_decoder_selects_in_graph(
    exported: tuple[Path, str, dict], tuned: torch.nn.Module, name: str
) -> None:
    """The one mask returned is the one training scored: the best of outputs 1-3 for a
    single positive point, output 0 for anything else (a box too, unlike Meta's rule)."""
    prompt = SELECTION_PROMPTS[name]
    shape = (1, tuned.prompt_encoder.embed_dim, 16, 16)
    embeddings = torch.from_numpy(
        np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    )
    everything = torch_decode(tuned, embeddings, prompt, (256, 256), (256, 256))
    reference = selected(everything, prompt, multimask=True)
    if name == "point":
        assert not np.array_equal(reference[1], everything[1][:, :1])
    outputs = session(exported[0] / DECODER).run(
        None, prompt.onnx_feeds(embeddings.numpy(), (256, 256))
    )
    for output, expected in zip(outputs, reference, strict=True):
        np.testing.assert_allclose(output, expected, atol=MAX_ABS_DIFF)


def test_selected_output_without_multimask(tuned: torch.nn.Module) -> None:
    """A model tuned without MULTIMASK answers every prompt with output 0."""
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.1, 0.9, 0.2, 0.3]])
    labels = torch.tensor([[1.0, -1.0], [2.0, 3.0]])
    assert SamOnnxDecoder(tuned, multimask=True).selected_output(labels, scores).tolist() == [1, 0]
    assert SamOnnxDecoder(tuned, multimask=False).selected_output(labels, scores).tolist() == [0, 0]


def test_external_data_untuned(tmp_path: Path) -> None:
    """The ViT-H path forced on the tiny preset: weights in encoder.onnx.data, int8 too."""
    cfg = load_config(CONFIG, [])
    result = export_onnx(cfg, tmp_path / "model", quantize_int8=True, external_data=True)
    manifest = result.manifest
    files = set(manifest["files"])
    assert {f"{ENCODER}.data", f"{INT8[ENCODER]}.data"} <= files
    assert (tmp_path / "model" / ENCODER).stat().st_size < 100_000
    assert manifest["weights_sha256"] is None and manifest["training_dataset"] is None
    image = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    (embeddings,) = session(tmp_path / "model" / ENCODER).run(None, {"image": image})
    with torch.no_grad():
        expected = build_model(cfg).image_encoder(torch.from_numpy(image)).numpy()
    assert np.abs(embeddings - expected).max() <= MAX_ABS_DIFF
    model = onnx.load(str(tmp_path / "model" / ENCODER), load_external_data=False)
    assert read_metadata_props(model)["parity"] == manifest["parity"]


def test_overwrite_replaces(exported: tuple[Path, str, dict], tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    code, _, stderr = run_cli("--config-file", CONFIG, "-o", str(target), "--overwrite")
    assert code == 0, stderr
    assert {p.name for p in target.iterdir()} == {ENCODER, DECODER, MANIFEST}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "{tmp}/missing"], "is not a geosam run"),
        (["--run", "{tmp}"], "is not a geosam run"),
        (["--config-file", "{tmp}/missing.yaml"], "does not exist"),
        ([], "give either --run"),
        (["--config-file", CONFIG, "--opset", "11"], "--opset 11 is too old"),
        (["--config-file", CONFIG, "--opset", "99"], "--opset 99 is newer than"),
        (["--config-file", CONFIG, "DATASETS.TRAIN", "{tmp}/gone"], "is gone"),
        (["--config-file", CONFIG, "-o", "{existing}"], "pass --overwrite"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    args = [a.format(tmp=tmp_path, existing=existing) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "model")]
    code, _, stderr = run_cli(*args)
    assert code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("ir_version", "opset", "minimum"),
    [
        (8, 17, "1.12"),
        (7, 17, "1.12"),
        (10, 17, "1.18"),
        (9, 21, "1.18"),
        (9, 19, "1.16"),
        (8, 12, "1.9"),
        (8, 16, "1.11"),
    ],
)
def test_min_onnxruntime_follows_ir_and_opset(ir_version: int, opset: int, minimum: str) -> None:
    """The later of the IR version's and the opset's first onnxruntime, compared as versions
    (1.11 is after 1.9)."""
    fields = runtime_fields(ir_version, opset)
    assert fields == {"onnx_ir_version": ir_version, "min_onnxruntime": minimum}


def test_min_onnxruntime_unknown_ir_refused() -> None:
    with pytest.raises(GeosamError, match="ONNX IR version 99 is not in geosam's onnxruntime"):
        runtime_fields(99, 17)
