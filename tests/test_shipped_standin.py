"""The stand-in checkpoint geosam ships (geosam/weights/standin.pth, its card standin.json).

It must be what its card says (a plain state dict readable with ``weights_only=True``, the
card's sha256), be taken by ``MODEL.CHECKPOINT standin``, refuse to be used once modified, and
be worth shipping: one click inside a parcel of a synthetic scene it never saw gives that parcel,
through the commands a user runs (export-onnx, segment), better than box-fill.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import geopandas as gpd
import pytest
import torch
from click.testing import CliRunner

from geosam.cli import cli
from geosam.config import load_config
from geosam.data.synthetic import make_scene
from geosam.demo import ID_FIELD, box_fill_polygon_iou, polygon_iou, write_point_prompts
from geosam.export import export_onnx
from geosam.modeling import build_model, sha256_file, shipped
from geosam.segment import SegmentParams, segment

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(shipped.card_path("standin").read_text())


def test_card_describes_the_shipped_file(card: dict) -> None:
    path = shipped.WEIGHTS_DIR / card["file"]
    assert sha256_file(path) == card["sha256"]
    assert path.stat().st_size == card["bytes"] < 5_000_000
    state_dict = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state_dict.values())
    assert card["model_type"] == "tiny" and "NOT Segment Anything" in card["description"]
    recipe = card["recipe"]
    assert recipe["config"]["MODEL"]["TYPE"] == "tiny"
    assert {"size", "seed"} <= recipe["synthetic_scene"].keys()


def test_model_checkpoint_takes_the_short_name(card: dict) -> None:
    model = build_model(load_config(CONFIG, ["MODEL.CHECKPOINT", "standin"]))
    shipped_weights = torch.load(shipped.WEIGHTS_DIR / card["file"], weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, shipped_weights[name]), name


def test_a_modified_standin_is_refused(
    card: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(shipped.WEIGHTS_DIR, weights)
    data = bytearray((weights / card["file"]).read_bytes())
    data[-100] ^= 0xFF
    (weights / card["file"]).write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights)
    model = tmp_path / "model"
    result = CliRunner().invoke(
        cli,
        ["export-onnx", "--config-file", CONFIG, "-o", str(model), "MODEL.CHECKPOINT", "standin"],
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert str(weights / card["file"]) in lines[0] and card["sha256"] in lines[0]
    assert not model.exists()


def test_one_click_gives_the_parcel_on_an_unseen_scene(tmp_path: Path, card: dict) -> None:
    seed = card["recipe"]["synthetic_scene"]["seed"] + 10
    scene = make_scene(tmp_path / "scene", size=768, seed=seed, progress=False)
    truth = gpd.read_file(scene.labels, layer="parcels")
    write_point_prompts(truth, tmp_path / "prompts.gpkg")
    model = tmp_path / "model"
    export_onnx(load_config(CONFIG, ["MODEL.CHECKPOINT", "standin"]), model)
    out = tmp_path / "parcels.gpkg"
    segment(scene.raster, model, tmp_path / "prompts.gpkg", out, SegmentParams(), progress=False)
    ious = polygon_iou(gpd.read_file(out), truth)
    assert len(ious) == len(truth) and ID_FIELD in truth
    assert ious.mean() > 0.6, ious
    assert ious.mean() > box_fill_polygon_iou(truth).mean()


@pytest.fixture(scope="module")
def build_standin():
    """scripts/build_standin.py as a module."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_standin.py"
    spec = importlib.util.spec_from_file_location("build_standin", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_recipe_is_the_scripts_default(build_standin) -> None:
    assert build_standin.differences(build_standin.recipe_for()) == []
    other = build_standin.recipe_for(steps=100, color_jitter=(0, 0, 0, 0))
    assert build_standin.differences(other) == ["steps", "color jitter"]


def test_the_recipe_rebuilds_bit_for_bit(build_standin, tmp_path: Path) -> None:
    # the shipped recipe's pipeline at a toy size: two builds give the same file
    recipe = build_standin.recipe_for(scene_size=512, scene_seed=3, steps=8)
    first = build_standin.build(recipe, tmp_path / "a", None)
    second = build_standin.build(recipe, tmp_path / "b", None)
    assert sha256_file(first) == sha256_file(second)
