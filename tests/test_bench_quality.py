"""scripts/bench_quality.py's pieces: the fixed image split, step arithmetic, the results table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Polygon, box

from geosam.demo import write_point_prompts

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench():
    # run as a script, its folder is on sys.path (it imports bench_whole_rasters beside it)
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_split_is_fixed_by_image(bench) -> None:
    stems = [f"img{i:02d}" for i in range(30)]
    train, heldout = bench.split_images(reversed(stems))
    assert heldout == ["img02", "img07", "img12", "img17", "img22", "img27"]
    assert len(train) == 24 and not set(train) & set(heldout)
    assert bench.split_images(stems) == (train, heldout)


def test_epochs_for_steps(bench) -> None:
    assert bench.epochs_for(1100, 453, 4) == 10  # 114 steps per epoch
    assert bench.epochs_for(10, 453, 4) == 1


def _model(miou: float, kinds: tuple[str, ...] = ("box", "point", "points")) -> dict:
    scores = {"mIoU": miou, "dice": miou, "boundary_iou": miou / 2, "f1_50": miou, "count": 3}
    return {**scores, "per_kind": {k: dict(scores) for k in kinds}}


def test_collect_and_table(bench, tmp_path: Path) -> None:
    def document(tuned: float) -> dict:
        models = {"box_fill": _model(0.6, ("box",)), "base": _model(0.2), "tuned": _model(tuned)}
        return {"models": models}

    for name, tuned in (("decoder", 0.5), ("decoder+encoder", 0.7)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(document(tuned)))
    evals = {n: bench.load_eval(tmp_path / n) for n in ("decoder", "decoder+encoder")}
    results = bench.collect(evals)
    assert list(results) == ["box_fill", "stand-in", "decoder", "decoder+encoder"]
    assert results["box_fill"] == {
        "box": {"mIoU": 0.6, "dice": 0.6, "boundary_iou": 0.3, "f1_50": 0.6}
    }
    text = bench.table(results, ["decoder", "decoder+encoder"])
    assert "| box | mIoU | 0.600 | 0.200 | 0.500 | 0.700 | +0.300 | +0.500 |" in text
    assert "| point | mIoU | – | 0.200 | 0.500 | 0.700 | +0.300 | +0.500 |" in text
    assert len(text.strip().splitlines()) == 2 + 3 * 4


def test_decoder_variant(bench) -> None:
    assert bench.variant("bce:3e-4") == ("bce", 3e-4)
    for bad in ("adam:1e-3", "bce", "bce:"):
        with pytest.raises(Exception, match="LOSS:LR"):
            bench.variant(bad)


def test_round_trip_scores_against_box_fill(bench, tmp_path: Path) -> None:
    scene, out = tmp_path / "scene", tmp_path / "trip"
    scene.mkdir()
    out.mkdir()
    triangle = Polygon([(0, 0), (10, 0), (0, 10)])
    crs = "EPSG:32633"
    truth = gpd.GeoDataFrame({"parcel_id": [1, 2]}, geometry=[box(0, 0, 10, 10), triangle], crs=crs)
    truth.to_file(scene / "parcels.gpkg", layer="parcels")
    profile = {"driver": "GTiff", "width": 20, "height": 20, "count": 3, "dtype": "uint8"}
    transform = rasterio.transform.from_origin(-5, 15, 1, 1)
    with rasterio.open(scene / "scene.tif", "w", crs=crs, transform=transform, **profile) as dst:
        dst.write(np.full((3, 20, 20), 90, dtype=np.uint8))
    write_point_prompts(truth, out / "prompts.gpkg")
    # parcel 1 found exactly, parcel 2 missed
    found = gpd.GeoDataFrame({"parcel_id": [1]}, geometry=[box(0, 0, 10, 10)], crs=crs)
    found.to_file(out / "parcels.gpkg")
    scores = bench.round_trip_scores(scene, out)
    assert scores == {
        "parcels": 2,
        "polygons": 1,
        "point_polygon_iou": 0.5,
        "box_fill_polygon_iou": 0.75,
        "share_above_0.5": 0.5,
    }
    assert (out / "parcels.png").stat().st_size > 0


def test_resuming_with_other_settings_is_refused(bench, tmp_path: Path, monkeypatch) -> None:
    def args(*extra: str):
        monkeypatch.setattr(sys, "argv", ["bench_quality.py", "--output", str(tmp_path), *extra])
        return bench.parse_args()

    bench.check_settings(tmp_path, args())
    bench.check_settings(tmp_path, args())  # the same settings resume
    other = args("--pretrain-color-jitter", "0", "0", "0", "0")
    with pytest.raises(SystemExit, match="other settings \\(pretrain_color_jitter\\)"):
        bench.check_settings(tmp_path, other)
    bench.check_settings(
        tmp_path, args("--pretrain-color-jitter", "0", "0", "0", "0", "--overwrite")
    )
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["pretrain_color_jitter"] == "[0.0, 0.0, 0.0, 0.0]"


@pytest.fixture(scope="module")
def whole():
    spec = importlib.util.spec_from_file_location(
        "bench_whole_rasters", SCRIPT.parent / "bench_whole_rasters.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_whole_raster_prompts_and_scores(whole, tmp_path: Path) -> None:
    """Fields mostly on the raster get a box (their bounds in the raster's CRS) and a point
    inside; polygons are scored per field and kind, a missing one is NaN; box-fill is the box."""
    from conftest import write_raster

    raster = write_raster(tmp_path / "r.tif", np.zeros((3, 100, 100), np.uint8))
    l_shape = Polygon([(10, 10), (60, 10), (60, 20), (20, 20), (20, 60), (10, 60)])
    fields = gpd.GeoDataFrame(
        {"field_id": [1, 2, 3]},
        geometry=[
            box(500_040, 4_999_960, 500_090, 4_999_990),
            Polygon([(500_000 + x, 5_000_000 - y) for x, y in l_shape.exterior.coords]),
            box(500_090, 4_999_950, 500_200, 4_999_990),  # mostly off the raster
        ],
        crs="EPSG:32633",
    )
    on_raster, crs = whole.raster_fields(fields, raster, "field_id")
    assert list(on_raster.field_id) == [1, 2]
    prompts = whole.field_prompts(on_raster, crs, "field_id")
    assert list(prompts.kind) == ["box", "box", "point", "point"]
    points = prompts[prompts.kind == "point"].geometry.values
    assert all(on_raster.geometry.values.contains(points))
    polygons = prompts[prompts.kind == "box"].copy()
    polygons.loc[0, "geometry"] = on_raster.geometry.iloc[0]  # field 1 exactly
    ious = whole.prompt_ious(on_raster, prompts, polygons, "field_id", "EPSG:32633")
    assert ious["box"][0] == pytest.approx(1.0)
    assert ious["box"][1] == pytest.approx(l_shape.area / 50**2)  # its box, as box-fill
    assert np.isnan(ious["point"]).all()
    assert ious["box_fill"] == pytest.approx([1.0, l_shape.area / 50**2])


def size(label: str, min_m2: float, found: int, fields: int) -> dict:
    return {"size": label, "min_m2": min_m2, "found": found, "fields": fields}


def test_whole_raster_table_shows_fields_found_by_size(whole) -> None:
    """Automatic mode's found/fields per size class, in size order, side by side."""
    prompts = {kind: {"mIoU": 0.5, "fields": 3, "without_polygon": 0} for kind in ("box", "point")}
    prompts["box_fill"] = {"mIoU": 0.4}
    auto = {"f1": 0.5, "precision": 0.5, "recall": 0.5, "matched_miou": 0.8}
    results = {
        "a": {"prompts": prompts, "auto": {**auto, "found_by_size": [size("1–3 ha", 1e4, 2, 3)]}},
        "b": {
            "prompts": prompts,
            "auto": {
                **auto,
                "found_by_size": [size("300–1,000 m²", 300, 0, 4), size("1–3 ha", 1e4, 1, 3)],
            },
        },
    }
    text = whole.table(results)
    assert "| automatic: fields found, 300–1,000 m² | – | – | 0 / 4 |" in text
    assert "| automatic: fields found, 1–3 ha | – | 2 / 3 | 1 / 3 |" in text
    assert text.index("300–1,000 m²") < text.index("1–3 ha")
