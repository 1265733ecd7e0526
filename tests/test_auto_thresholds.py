"""Automatic mode's thresholds: tuned on a val split, recorded in the manifest, used by
``geosam segment --auto`` unless overridden, refused when malformed.

Calibration is tested with the perfect model made to rank its masks as a tuned model might:
each parcel's mask comes with predicted IoU 0.72 and full stability, and the points between
parcels answer with the whole window, predicted IoU 0.9 but stability 0.6. SAM's defaults
(0.88, 0.95) then keep nothing; a stability filter of 0.65 or more with a predicted-IoU filter
of 0.72 or less finds every parcel, and the stricter of those pairs on the grid is
(0.70, 0.97).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from conftest import colour_key, flat_parcels_raster, grid_parcels
from rasterio.features import rasterize
from rasterio.transform import from_origin
from test_segment import export_tiny

from geosam.cli import cli
from geosam.data.tiling import TileParams, tile_dataset
from geosam.export.auto_calibration import (
    Counts,
    calibrate,
    chosen_setting,
    decode_fine,
    decode_region,
    fine_parcels,
    parcels,
    region_manifest,
    standard_error,
)
from geosam.export.val_regions import val_regions
from geosam.runtime import SamModel
from geosam.runtime.auto import AutoParams, AutoSegmenter, choose_thresholds, tuned_thresholds
from geosam.segment.reader import WindowReader
from geosam.utils.errors import GeosamError

ORIGIN = (500_000.0, 5_000_000.0)
TUNED = {"pred_iou_thresh": 0.7, "stability_thresh": 0.97}
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ORACLE_SCRIPT = SCRIPTS / "bench_threshold_oracle.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("thresholds"))


@pytest.fixture
def ranked_model(perfect_model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The perfect model with the IoU head and stability of the module docstring."""

    def decode_points(self: SamModel, embedding, points: np.ndarray):
        image = embedding.array[0]
        keys = colour_key(image)
        junk = np.where(np.arange(image.shape[1]) % 5 < 2, 0.5, 2.0)  # stability 0.6
        for xy in points:
            x, y = np.round(xy).astype(int)
            if image[y, x].any():
                yield np.where(keys == keys[y, x], 10.0, -10.0)[None], np.array([0.72])
            else:
                yield np.broadcast_to(junk, keys.shape)[None], np.array([0.9])

    monkeypatch.setattr(SamModel, "decode_points", decode_points)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 m parcels on a 64 m grid of a flat-coloured 512 m scene cut into 256 px tiles
    (whole in their tiles)."""
    root = tmp_path_factory.mktemp("calibration")
    parcels = grid_parcels(ORIGIN, 512.0, 64.0, 16.0)
    raster = flat_parcels_raster(root / "flat.tif", parcels, ORIGIN, 512)
    labels = root / "parcels.gpkg"
    gpd.GeoDataFrame(
        {"parcel_id": np.arange(len(parcels))}, geometry=parcels, crs="EPSG:32633"
    ).to_file(labels, engine="pyogrio")
    params = TileParams(tile_size=256, overlap=0, split_block=1, val_fraction=0.5, seed=1)
    tile_dataset([str(raster)], labels, root / "tiles", params, progress=False)
    return root / "tiles"


@pytest.mark.usefixtures("ranked_model")
def test_calibration_finds_the_best_pair(model_dir: Path, dataset: Path) -> None:
    model = SamModel.load(model_dir, threads=1)
    result = calibrate(model, dataset, "val", grids=(2, 16))
    assert {k: result[k] for k in TUNED} == TUNED
    assert result["points_per_side"] == 16  # 2 x 2 points per window fall between parcels
    assert result["grid"]["points_per_side"] == [2, 16]
    assert result["grids"]["2"]["f1"] < result["f1"] - result["grids"]["16"]["standard_error"]
    assert result["grids"]["16"] == {
        **{k: result[k] for k in ("f1", "precision", "recall", "truth", "predicted", "matched")},
        **TUNED,
        "standard_error": 0.0,
    }
    assert result["f1"] == result["precision"] == result["recall"] == 1.0
    assert result["truth"] == result["matched"] > 0
    sam = result["sam_defaults"]
    assert (sam["pred_iou_thresh"], sam["stability_thresh"], sam["f1"]) == (0.88, 0.95, 0.0)
    assert 0.88 in result["grid"]["pred_iou_thresh"] and 0.95 in result["grid"]["stability_thresh"]
    assert result["val"]["split"] == "val" and result["val"]["tiles"] >= 1
    assert result["val"]["area_km2"] == pytest.approx(result["val"]["tiles"] * 0.065536, abs=1e-4)
    # the first pass finds every parcel: the fine pass adds nothing at any pair, and the
    # stricter pair wins the tie
    fine = result["fine_pass"]
    assert (fine["pred_iou_thresh"], fine["stability_thresh"]) == (0.95, 0.97)
    assert fine["f1"] == fine["first_pass_alone"]["f1"] == 1.0


def test_standard_error_of_f1() -> None:
    # F1 0.6 from 150 matches of 250 true and 250 predicted parcels: sqrt(0.24 / 250)
    assert standard_error(Counts(250, 250, 150)) == pytest.approx(0.031, abs=5e-4)
    assert standard_error(Counts()) == 0.0


@pytest.mark.parametrize(
    ("dense_matched", "chosen"),
    [
        (150, (10, 0.7, 0.7)),  # F1 0.600 against 0.580: within one standard error (0.031)
        (145, (10, 0.7, 0.7)),  # 0.580 each: the tie goes to the smaller grid too
        (170, (16, 0.6, 0.8)),  # 0.680: clearly better, the denser grid is worth its cost
    ],
)
def test_the_smallest_grid_within_one_standard_error_is_chosen(
    dense_matched: int, chosen: tuple
) -> None:
    counts = {
        (10, 0.7, 0.7): Counts(250, 250, 145),
        (10, 0.5, 0.5): Counts(250, 400, 150),  # F1 0.462
        (16, 0.6, 0.8): Counts(250, 250, dense_matched),
        (16, 0.9, 0.9): Counts(250, 100, 90),  # F1 0.514
    }
    assert chosen_setting(counts) == chosen


@pytest.mark.usefixtures("ranked_model")
@pytest.mark.parametrize("pair", [(0.7, 0.97), (0.5, 0.5), (0.8, 0.5)])
def test_calibration_replays_the_runtime(model_dir: Path, tmp_path: Path, pair: tuple) -> None:
    """Candidates decoded once, then filtered by a pair, give the parcels a run with that
    pair gives, the points it skips included: at (0.5, 0.5) the junk between parcels passes,
    covers its window and the run decodes no point after it."""
    parcels_ = grid_parcels(ORIGIN, 512.0, 64.0, 16.0)
    raster = flat_parcels_raster(tmp_path / "flat.tif", parcels_, ORIGIN, 512)
    model = SamModel.load(model_dir, threads=1)
    region = decode_region(model, raster, raster, 16, 100.0)
    replayed = parcels(region, region.kept(*pair))
    params = AutoParams(points_per_side=16, pred_iou_thresh=pair[0], stability_thresh=pair[1])
    with WindowReader(raster, region_manifest(model.manifest)) as reader:
        segmenter = AutoSegmenter(model, reader, params, 100.0, min_hole_m2=100.0)
        run = list(segmenter.masks())
    assert [(m.box, m.area, m.score) for m in replayed] == [(m.box, m.area, m.score) for m in run]
    assert segmenter.prompts < len(region.windows) * 16**2  # the run skipped points


@pytest.mark.usefixtures("ranked_model")
@pytest.mark.parametrize(("fine_pair", "found"), [((0.7, 0.9), 16), ((0.5, 0.5), 1)])
def test_calibration_replays_the_fine_pass(
    model_dir: Path, tmp_path: Path, fine_pair: tuple, found: int
) -> None:
    """The fine pass replayed on candidates decoded once gives the parcels a run gives: here
    the first pass (predicted IoU 0.75) finds none, the fine pass at (0.7, 0.9) every one
    (their blended borders make them less stable at twice the resolution), and at (0.5, 0.5)
    the junk, one window-wide mask that covers the rest."""
    parcels_ = grid_parcels(ORIGIN, 256.0, 64.0, 16.0)
    raster = flat_parcels_raster(tmp_path / "flat.tif", parcels_, ORIGIN, 256)
    model = SamModel.load(model_dir, threads=1)
    first_pair = (0.75, 0.97)
    region = decode_region(model, raster, raster, 16, 100.0)
    first = parcels(region, region.kept(*first_pair))
    replayed = fine_parcels(region, decode_fine(model, region), first, fine_pair)
    params = AutoParams(
        points_per_side=16,
        pred_iou_thresh=first_pair[0],
        stability_thresh=first_pair[1],
        fine_pass=True,
        fine_pred_iou_thresh=fine_pair[0],
        fine_stability_thresh=fine_pair[1],
    )
    with WindowReader(raster, region_manifest(model.manifest)) as reader:
        segmenter = AutoSegmenter(model, reader, params, 100.0, min_hole_m2=100.0)
        run = list(segmenter.masks())
    assert first == [] and all(m.fine for m in run)
    assert [(m.box, m.area, m.score) for m in replayed] == [(m.box, m.area, m.score) for m in run]
    assert len(run) == found


def test_calibration_without_val_parcels_gives_nothing(
    perfect_model: None, model_dir: Path, dataset: Path
) -> None:
    model = SamModel.load(model_dir, threads=1)
    assert calibrate(model, dataset, "no-such-split", grids=(2,)) is None


def test_val_regions_join_the_val_tiles_back(tmp_path: Path) -> None:
    """Three of four 256 px split blocks in val make one L-shaped region: the whole scene,
    the train block nodata; its pixels are the source's, and each parcel, cut by tile edges
    into pieces of several tiles, is one parcel of the truth."""
    parcels = grid_parcels(ORIGIN, 512.0, 100.0, 10.0)
    raster = flat_parcels_raster(tmp_path / "flat.tif", parcels, ORIGIN, 512)
    labels = tmp_path / "parcels.gpkg"
    gpd.GeoDataFrame(
        {"parcel_id": [f"p{i}" for i in range(len(parcels))]}, geometry=parcels, crs="EPSG:32633"
    ).to_file(labels, engine="pyogrio")
    params = TileParams(tile_size=128, overlap=32, split_block=2, val_fraction=0.6, min_area=1)
    tile_dataset([str(raster)], labels, tmp_path / "tiles", params, progress=False)
    tiles = pd.read_parquet(tmp_path / "tiles" / "tiles.parquet")

    (region,) = val_regions(tmp_path / "tiles", "val", tmp_path)
    assert region.tiles == (tiles["split"] == "val").sum() == 27
    with rasterio.open(raster) as source, rasterio.open(region.image) as image:
        assert (image.transform, image.shape, image.crs) == (
            source.transform,
            source.shape,
            source.crs,
        )
        valid = image.dataset_mask() > 0
        assert np.array_equal(image.read()[:, valid], source.read()[:, valid])
    train = np.zeros_like(valid)
    for tile in tiles.loc[tiles["split"] == "train"].itertuples():
        train[
            tile.row_off : tile.row_off + tile.height, tile.col_off : tile.col_off + tile.width
        ] = True
    assert np.array_equal(valid, ~train) and train.sum() == 256 * 256

    with rasterio.open(region.truth) as ds:
        truth = ds.read(1)
    burnt = rasterize(
        zip(parcels, range(1, len(parcels) + 1), strict=True),
        (512, 512),
        transform=from_origin(*ORIGIN, 1.0, 1.0),
    )
    assert not truth[~valid].any()
    pairs = np.unique(np.stack([burnt[valid], truth[valid]]), axis=1)
    assert (pairs[0] > 0).sum() == len(np.unique(burnt[valid & (burnt > 0)]))
    assert np.array_equal(pairs[0] > 0, pairs[1] > 0)  # every parcel pixel is in the truth
    assert len(set(pairs[0])) == len(set(pairs[1])) == len(pairs[0])  # one id per parcel


# -- the manifest's thresholds in use ---------------------------------------------------------


def tuned_copy(model_dir: Path, folder: Path, entry: object) -> Path:
    """``model_dir`` copied to ``folder`` with ``entry`` as its manifest's auto_thresholds."""
    shutil.copytree(model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["auto_thresholds"] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_choose_thresholds() -> None:
    manifest = {"auto_thresholds": {**TUNED, "f1": 0.8}}
    params, line = choose_thresholds(AutoParams(), manifest, "m.json", {})
    assert (params.pred_iou_thresh, params.stability_thresh) == (0.7, 0.97)
    assert "predicted IoU 0.7 (the model's, tuned on its val split)" in line
    params, line = choose_thresholds(AutoParams(), manifest, "m.json", {"stability_thresh": 0.5})
    assert (params.pred_iou_thresh, params.stability_thresh) == (0.7, 0.5)
    assert "stability 0.5 (given)" in line
    params, line = choose_thresholds(AutoParams(), {}, "m.json", {"pred_iou_thresh": 0.3})
    assert (params.pred_iou_thresh, params.stability_thresh) == (0.3, 0.95)
    assert "m.json has no tuned thresholds" in line
    _, line = choose_thresholds(AutoParams(), {}, "m.json", TUNED)
    assert "no tuned" not in line


def test_the_fine_pass_uses_its_tuned_filters() -> None:
    """The fine pass's filters are the model's where its manifest has them, else 0.1 above
    the first pass's; the log says which, and only when the fine pass runs."""
    fine = {"pred_iou_thresh": 0.8, "stability_thresh": 0.9}
    manifest = {"auto_thresholds": {**TUNED, "fine_pass": fine}}
    params, line = choose_thresholds(AutoParams(fine_pass=True), manifest, "m.json", {})
    assert (params.fine_pred_iou_thresh, params.fine_stability_thresh) == (0.8, 0.9)
    assert "fine pass: predicted IoU 0.8, stability 0.9 (the model's, tuned" in line
    params, line = choose_thresholds(
        AutoParams(fine_pass=True), {"auto_thresholds": TUNED}, "m", {}
    )
    assert params.fine_pred_iou_thresh is None
    assert "fine pass: predicted IoU 0.8, stability 1 (0.1 above the first pass's)" in line
    assert "fine pass" not in choose_thresholds(AutoParams(), manifest, "m.json", {})[1]


def test_the_tuned_point_grid_is_used_unless_given() -> None:
    manifest = {"auto_thresholds": {**TUNED, "points_per_side": 10}}
    params, line = choose_thresholds(AutoParams(), manifest, "m.json", {})
    assert params.points_per_side == 10
    assert "points per side 10 (the model's, tuned on its val split)" in line
    params, line = choose_thresholds(AutoParams(), manifest, "m.json", {"points_per_side": 12})
    assert (params.points_per_side, params.pred_iou_thresh) == (12, 0.7)
    assert "points per side 12 (given)" in line
    params, line = choose_thresholds(AutoParams(), {"auto_thresholds": TUNED}, "m.json", {})
    assert params.points_per_side == AutoParams.points_per_side
    assert "points per side 16 (defaults)" in line


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([0.7, 0.9], "auto_thresholds must be an object"),
        ({"pred_iou_thresh": 0.7}, "auto_thresholds.stability_thresh"),
        ({**TUNED, "pred_iou_thresh": 1.5}, "auto_thresholds.pred_iou_thresh"),
        ({**TUNED, "stability_thresh": "high"}, "auto_thresholds.stability_thresh"),
        ({**TUNED, "stability_thresh": True}, "auto_thresholds.stability_thresh"),
        ({**TUNED, "points_per_side": 0}, "auto_thresholds.points_per_side"),
        ({**TUNED, "points_per_side": 2.5}, "auto_thresholds.points_per_side"),
        ({**TUNED, "points_per_side": True}, "auto_thresholds.points_per_side"),
        ({**TUNED, "fine_pass": [0.8, 0.9]}, "auto_thresholds.fine_pass must be an object"),
        (
            {**TUNED, "fine_pass": {"pred_iou_thresh": 2, "stability_thresh": 0.9}},
            "auto_thresholds.fine_pass.pred_iou_thresh",
        ),
    ],
)
def test_malformed_tuned_thresholds_are_refused(entry: object, message: str) -> None:
    with pytest.raises(GeosamError, match=message) as error:
        tuned_thresholds({"auto_thresholds": entry}, "model/manifest.json")
    assert str(error.value).startswith("model/manifest.json: ")
    assert tuned_thresholds({}, "model/manifest.json") is None


def segment_auto_cli(model: Path, raster: Path, out: Path, *args: str):
    command = ["segment", "--quiet", str(raster), "--model", str(model), "--auto"]
    return CliRunner().invoke(cli, [*command, "-o", str(out), "--points-per-side", "16", *args])


@pytest.fixture
def flat_raster(tmp_path: Path) -> Path:
    parcels = grid_parcels(ORIGIN, 256.0, 64.0, 16.0)
    return flat_parcels_raster(tmp_path / "flat.tif", parcels, ORIGIN, 256)


@pytest.mark.usefixtures("ranked_model")
@pytest.mark.parametrize(
    ("tuned", "args", "found", "logged"),
    [
        (True, [], 16, "predicted IoU 0.7 (the model's, tuned on its val split), stability 0.97"),
        (True, ["--stability-thresh", "0.5"], 1, "stability 0.5 (given)"),
        (False, [], 0, "has no tuned thresholds"),
        (False, ["--pred-iou-thresh", "0.7", "--stability-thresh", "0.9"], 16, "0.7 (given)"),
    ],
)
def test_segment_uses_the_model_thresholds(
    tuned: bool,
    args: list[str],
    found: int,
    logged: str,
    model_dir: Path,
    flat_raster: Path,
    tmp_path: Path,
) -> None:
    """The tuned model finds the 16 parcels; with junk let through (stability 0.5) the
    window-sized junk mask outranks them all; SAM's defaults keep nothing."""
    model = tuned_copy(model_dir, tmp_path / "model", TUNED) if tuned else model_dir
    out = tmp_path / "parcels.gpkg"
    result = segment_auto_cli(model, flat_raster, out, *args)
    assert result.exit_code == 0, result.output
    assert logged in result.stderr
    assert len(gpd.read_file(out)) == found


@pytest.mark.usefixtures("ranked_model")
def test_segment_runs_at_the_model_grid(model_dir: Path, flat_raster: Path, tmp_path: Path) -> None:
    """Without --points-per-side the grid the thresholds were tuned at is used: 2 x 2
    points per window all fall between the parcels of this scene, so nothing is found."""
    model = tuned_copy(model_dir, tmp_path / "model", {**TUNED, "points_per_side": 2})
    out = tmp_path / "parcels.gpkg"
    command = ["segment", str(flat_raster), "--model", str(model), "--auto", "-o", str(out)]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert "points per side 2 (the model's, tuned on its val split)" in result.stderr
    assert len(gpd.read_file(out)) == 0
    result = segment_auto_cli(model, flat_raster, out, "--overwrite")
    assert "points per side 16 (given)" in result.stderr
    assert len(gpd.read_file(out)) == 16


def test_segment_refuses_a_malformed_manifest(
    model_dir: Path, flat_raster: Path, tmp_path: Path
) -> None:
    model = tuned_copy(model_dir, tmp_path / "model", {"pred_iou_thresh": 2, "stability_thresh": 1})
    out = tmp_path / "parcels.gpkg"
    result = segment_auto_cli(model, flat_raster, out)
    errors = [line for line in result.stderr.splitlines() if line.startswith("geosam: error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert (
        str(model / "manifest.json") in errors[0] and "auto_thresholds.pred_iou_thresh" in errors[0]
    )
    assert not out.exists()


@pytest.mark.usefixtures("ranked_model")
def test_threshold_oracle_beside_the_shipped_setting(
    model_dir: Path,
    flat_raster: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """scripts/bench_threshold_oracle.py: a model shipped with a stability filter that lets
    the window-sized junk through (0.5) finds 1 polygon; the best setting on the same raster
    finds the 16 parcels, at the stricter pair that does (0.7 / 0.97)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))  # as a script, it imports its neighbours
    spec = importlib.util.spec_from_file_location("bench_threshold_oracle", ORACLE_SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shipped = {"pred_iou_thresh": 0.7, "stability_thresh": 0.5, "points_per_side": 16}
    model = tuned_copy(model_dir, tmp_path / "model", shipped)
    truth = tmp_path / "truth.gpkg"
    parcels_ = grid_parcels(ORIGIN, 256.0, 64.0, 16.0)
    gpd.GeoDataFrame(geometry=parcels_, crs="EPSG:32633").to_file(truth, engine="pyogrio")
    out = tmp_path / "oracle"
    argv = ["--model", f"shipped={model}", "--images", str(flat_raster), "--truth", str(truth)]
    results = bench.run(bench.parse_args([*argv, "-o", str(out)]))["shipped"]
    assert results["shipped"]["f1"] < 0.2 and results["shipped"]["predicted"] == 1
    assert {k: results["oracle"][k] for k in TUNED} == TUNED
    assert results["oracle"]["f1"] == 1.0 and results["oracle"]["matched"] == 16
    assert [row["points_per_side"] for row in results["oracle_per_grid"]] == [10, 16]
    assert "| shipped | 16², 0.7 / 0.5 |" in capsys.readouterr().out
    assert json.loads((out / "threshold-oracle.json").read_text())["shipped"] == results
