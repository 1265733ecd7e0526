"""geosam demo: every stage end to end on a small scene, and its bad input."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import torch
from click.testing import CliRunner
from shapely.geometry import Polygon, box

from geosam.cli import cli
from geosam.data.tiling.grid import assign_splits, plan_tiles
from geosam.demo import (
    DemoParams,
    box_fill_polygon_iou,
    checkpoint_model_type,
    polygon_iou,
    run_demo,
    tile_params,
    write_point_prompts,
)
from geosam.utils.errors import GeosamError


def test_demo_runs_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(
        out, DemoParams(scene_size=768, epochs=1), progress=False, announce=lines.append
    )
    assert [line.split(":")[0] for line in lines] == ["demo"] * 7
    stages = {"synth", "tile", "train", "evaluate", "export", "segment", "auto"}
    assert set(result.seconds) == stages
    for key in (
        "scene", "tiles", "run", "evaluation", "model", "prompts", "parcels", "parcel_map",
        "picture",
    ):  # fmt: skip
        assert result.paths[key].exists(), key
    assert (result.paths["evaluation"] / "metrics.md").is_file()
    assert (result.paths["model"] / "decoder.onnx").is_file()
    assert "box-fill" in result.table
    parcels = gpd.read_file(result.paths["parcels"])
    prompts = gpd.read_file(result.paths["prompts"])
    assert 0 < result.polygons == len(parcels) <= result.prompts == len(prompts)
    assert parcels.is_valid.all() and {"parcel_id", "score", "area_m2"} <= set(parcels.columns)
    assert parcels.crs.equals(gpd.read_file(result.paths["scene"] / "parcels.gpkg").crs)
    assert 0.5 < result.box_fill_iou < 1.0  # parcels are polygons, not rectangles
    # the shipped stand-in, one epoch tuned: a click gives the parcel, better than its box
    assert result.polygon_iou > max(0.6, result.box_fill_iou), result.polygon_iou
    scores = result.parcel_map
    assert scores.truth > 0 and 0.0 <= (scores.f1 or 0.0) <= 1.0
    parcel_map = gpd.read_file(result.paths["parcel_map"])
    assert len(parcel_map) >= scores.predicted and parcel_map.is_valid.all()


def test_demo_recipes(tmp_path: Path) -> None:
    from geosam.demo import training_config

    standin = training_config(DemoParams(), tmp_path / "tiles", tmp_path / "run")
    assert standin.MODEL.TYPE == "tiny" and standin.MODEL.CHECKPOINT == "standin"
    scratch = training_config(DemoParams(from_scratch=True), tmp_path / "tiles", tmp_path / "r")
    assert scratch.MODEL.CHECKPOINT == "" and scratch.SOLVER.MAX_EPOCHS == 48
    assert list(standin.MODEL.TRAINABLE) == list(scratch.MODEL.TRAINABLE)


def test_demo_refuses_a_used_folder_and_bad_options(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")

    def error(*args: str) -> str:
        result = CliRunner().invoke(cli, ["demo", "--quiet", *args])
        assert result.exit_code == 2, result.output
        return result.stderr.strip().splitlines()[-1]

    assert "--overwrite" in error("-o", str(used))
    assert (used / "keep.txt").is_file()
    assert "not found" in error("-o", str(tmp_path / "a"), "--checkpoint", "/nope/sam.pth")
    assert "--scene-size" in error("-o", str(tmp_path / "b"), "--scene-size", "100")
    assert "--epochs" in error("-o", str(tmp_path / "c"), "--epochs", "0")
    both = ["--from-scratch", "--checkpoint", str(used / "keep.txt")]
    assert "--from-scratch" in error("-o", str(tmp_path / "e"), *both)
    assert not (tmp_path / "e").exists()
    # 1024 px tiles for a checkpoint: a 1024 px scene is one tile, no validation block
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    checkpoint.write_bytes(b"never read: the scene is refused first")
    small = ["--checkpoint", str(checkpoint), "--scene-size", "1024"]
    assert "larger --scene-size" in error("-o", str(tmp_path / "d"), *small)
    assert not (tmp_path / "d").exists()
    assert "larger --scene-size" in error("-o", str(used), "--overwrite", *small)
    assert (used / "keep.txt").is_file()  # refused before --overwrite emptied it


def test_demo_tiling_leaves_a_validation_block(tmp_path: Path) -> None:
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    for params in (DemoParams(), DemoParams(checkpoint=checkpoint)):
        tiling = tile_params(params)
        planned = plan_tiles(0, 2048, 2048, tiling.tile_size, tiling.overlap, tiling.split_block)
        assert len({tile.block for tile in planned}) >= 4
        assert "val" in assign_splits(planned, tiling.val_fraction, tiling.seed).values()
    assert tile_params(DemoParams(checkpoint=checkpoint)).tile_size == 1024


def test_checkpoint_type_from_the_official_name(tmp_path: Path) -> None:
    assert checkpoint_model_type(Path("/x/sam_vit_h_4b8939.pth"), None) == "vit_h"
    assert checkpoint_model_type(Path("/x/mine.pth"), "vit_l") == "vit_l"
    with pytest.raises(GeosamError, match="--model-type"):
        checkpoint_model_type(Path("/x/mine.pth"), None)


def test_demo_with_a_checkpoint_tunes_its_decoder_on_cached_embeddings(tmp_path: Path) -> None:
    from geosam.demo import training_config

    checkpoint = tmp_path / "sam_vit_b_mine.pth"
    torch.save({}, checkpoint)  # only its path matters to the recipe
    params = DemoParams(checkpoint=checkpoint, model_type="vit_b")
    cfg = training_config(params, tmp_path / "tiles", tmp_path / "run")
    assert cfg.MODEL.TYPE == "vit_b" and Path(cfg.MODEL.CHECKPOINT) == checkpoint
    assert list(cfg.MODEL.TRAINABLE) == ["mask_decoder"] and cfg.CACHE.EMBEDDINGS
    assert not (cfg.INPUT.HFLIP or cfg.INPUT.VFLIP or cfg.INPUT.ROT90)


def test_polygon_scores_match_parcels_by_id(tmp_path: Path) -> None:
    triangle = Polygon([(0, 0), (10, 0), (0, 10)])
    truth = gpd.GeoDataFrame(
        {"parcel_id": [1, 2, 3]},
        geometry=[box(0, 0, 10, 10), triangle, box(20, 0, 30, 10)],
        crs="EPSG:32633",
    )
    # parcel 1 found in two pieces (dissolved: IoU 1), parcel 2 half, parcel 3 not at all;
    # the result comes back in another CRS
    result = gpd.GeoDataFrame(
        {"parcel_id": [2, 1, 1]},
        geometry=[box(0, 0, 5, 10).intersection(triangle), box(0, 0, 10, 5), box(0, 5, 10, 10)],
        crs="EPSG:32633",
    ).to_crs("EPSG:4326")
    ious = polygon_iou(result, truth)
    assert ious[0] == pytest.approx(1.0, abs=1e-6)
    assert ious[1] == pytest.approx(0.75, abs=1e-6)  # 37.5 of the triangle's 50 m²
    assert ious[2] == 0.0
    assert box_fill_polygon_iou(truth) == pytest.approx([1.0, 0.5, 1.0])

    write_point_prompts(truth, tmp_path / "prompts.gpkg")
    prompts = gpd.read_file(tmp_path / "prompts.gpkg", layer="prompts")
    assert list(prompts["parcel_id"]) == [1, 2, 3]
    assert prompts.geometry.within(truth.geometry).all()
