"""geosam score-parcels: object scores of a parcel map on hand-built parcels with known IoUs.

Parcels are 100 m squares (or parts of them) in UTM, so every IoU is a ratio of whole numbers
and the expected precision, recall, F1 and matched mIoU are exact; the covered share is a ratio
of geodesic areas, equal to the planar one to a few parts per million there.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from conftest import textured, write_raster

from geosam.cli import cli
from geosam.segment.score import ScoredArea, match_one_to_one, pairwise_iou, score_parcel_map
from geosam.segment.score_breakdown import (
    breakdown,
    markdown_tables,
    predicted_kinds,
    size_label,
    truth_kinds,
)

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0


def box(x0: float, x1: float, y0: float = 0.0, y1: float = 100.0) -> shapely.Polygon:
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


# name: (truth boxes, predicted boxes) by x extent; one case each, side by side along x.
CASES = {
    "exact": ([(0, 100)], [(0, 100)]),  # IoU 1
    "shrunk": ([(200, 300)], [(200, 290)]),  # IoU 0.9
    "split 70/30": ([(400, 500)], [(400, 470), (470, 500)]),  # 0.7 matched, 0.3 false positive
    "merged pair": ([(600, 690), (710, 800)], [(600, 800)]),  # 0.45 each: none matched
    "false positive": ([], [(1200, 1300)]),
    "missed": ([(1400, 1500)], []),
}
TRUTH_AREA = 4 * 100 * 100 + 2 * 90 * 100
COVERED_AREA = TRUTH_AREA - 100 * 100 - 10 * 100  # all but the missed parcel and a strip


def frame(boxes: list[tuple[float, float]], crs: str = UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"n": np.arange(len(boxes))}, geometry=[box(*b) for b in boxes], crs=UTM
    ).to_crs(crs)


@pytest.fixture
def parcels() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(predicted, truth) of every case."""
    truth = [b for boxes, _ in CASES.values() for b in boxes]
    predicted = [b for _, boxes in CASES.values() for b in boxes]
    return frame(predicted), frame(truth)


def test_known_ious_give_exact_scores(parcels) -> None:
    predicted, truth = parcels
    result = score_parcel_map(predicted, truth)
    scores = result.overall.scores
    assert (scores.truth, scores.predicted, scores.matched) == (6, 6, 3)
    assert scores.precision == pytest.approx(3 / 6)
    assert scores.recall == pytest.approx(3 / 6)
    assert scores.f1 == pytest.approx(2 * 3 / (6 + 6))
    assert scores.matched_miou == pytest.approx((1.0 + 0.9 + 0.7) / 3)
    assert scores.covered == pytest.approx(COVERED_AREA / TRUTH_AREA, rel=1e-5)
    # which parcel matched which: the larger part of the split one; neither of a merged pair
    matched_truth = result.overall.truth["iou"].to_numpy()
    np.testing.assert_allclose(matched_truth, [1.0, 0.9, 0.7, np.nan, np.nan, np.nan])
    matched_predicted = result.overall.predicted["iou"].to_numpy()
    np.testing.assert_allclose(matched_predicted, [1.0, 0.9, 0.7, np.nan, np.nan, np.nan])


def test_a_parcel_split_in_halves_is_matched_once() -> None:
    """Both halves reach IoU 0.5 exactly: one-to-one matching takes the first, the other is a
    false positive."""
    scores = score_parcel_map(frame([(0, 50), (50, 100)]), frame([(0, 100)])).overall.scores
    assert (scores.truth, scores.predicted, scores.matched) == (1, 2, 1)
    assert (scores.precision, scores.recall, scores.matched_miou) == (0.5, 1.0, 0.5)


def test_matching_is_one_to_one_at_any_threshold(parcels) -> None:
    predicted, truth = parcels
    pairs = pairwise_iou(truth.geometry.to_numpy(), predicted.geometry.to_numpy())
    # the merged pair's prediction (IoU 0.45 with each) joins in below 0.45, for one of them
    for threshold, expected in ((0.95, 1), (0.5, 3), (0.4, 4), (0.01, 4)):
        matches = match_one_to_one(*pairs, threshold)
        truth_rows, predicted_rows, ious = zip(*matches, strict=True)
        assert len(matches) == expected
        assert len(set(truth_rows)) == len(set(predicted_rows)) == expected
        assert min(ious) >= threshold
    assert score_parcel_map(predicted, truth, iou_threshold=0.95).overall.scores.matched == 1


def test_truth_is_reprojected_to_the_map(parcels) -> None:
    predicted, truth = parcels
    expected = score_parcel_map(predicted, truth).overall.scores
    scores = score_parcel_map(predicted, truth.to_crs("EPSG:4326")).overall.scores
    assert (scores.truth, scores.predicted, scores.matched) == (6, 6, 3)
    assert scores.matched_miou == pytest.approx(expected.matched_miou, abs=1e-6)
    assert scores.covered == pytest.approx(expected.covered, abs=1e-6)


def test_parcels_mostly_outside_the_area_are_not_scored() -> None:
    # the area ends at x = 1070: the parcel at 1000-1100 is 70% inside (clipped to it and
    # found by the clipped prediction), the one at 1040-1140 30% inside (left out)
    truth = frame([(0, 100), (1000, 1100), (1040, 1140)])
    predicted = frame([(0, 100), (1000, 1100), (2000, 2100)])
    area = ScoredArea("left", box(-50, 1070, -50, 150), UTM)
    result = score_parcel_map(predicted, truth, [area])
    scores = result.per_area[0].scores
    assert (scores.truth, scores.predicted, scores.matched) == (2, 2, 2)
    assert result.overall.scores == scores
    clipped = result.per_area[0].truth.geometry.area.to_numpy()
    np.testing.assert_allclose(clipped, [100 * 100, 70 * 100])


def test_an_empty_map_scores_zero_recall() -> None:
    """A raster where automatic mode found nothing (a forest) is scored, not refused."""

    result = score_parcel_map(frame([]), frame([(0, 100)])).overall
    scores = result.scores
    assert (scores.truth, scores.predicted, scores.matched) == (1, 0, 0)
    assert (scores.precision, scores.recall, scores.f1, scores.covered) == (None, 0, 0, 0)
    parts = breakdown(result)
    assert [row.kinds for row in parts.truth] == [{"missed": 1, "merged": 0, "split": 0}]
    assert parts.predicted == []


def test_a_rasters_nodata_is_outside_its_area(tmp_path: Path) -> None:
    """Parcels over the nodata half of a raster are not scored: the map could not find them."""
    from geosam.segment.score_inputs import raster_area

    data = textured(100, 400)
    data[:, :, 200:] = 0
    raster = write_raster(tmp_path / "half.tif", data, origin=(X0, Y0 + 100), nodata=0)
    area = raster_area(raster)
    assert area.geometry.area == pytest.approx(200 * 100)
    scores = score_parcel_map(frame([(0, 100)]), frame([(0, 100), (250, 350)]), [area])
    assert (scores.overall.scores.truth, scores.overall.scores.matched) == (1, 1)


@pytest.fixture
def files(parcels, tmp_path: Path) -> dict[str, Path]:
    """The parcels as files (truth in EPSG:4326) and a raster under the first four cases."""
    predicted, truth = parcels
    paths = {"predicted": tmp_path / "predicted.gpkg", "truth": tmp_path / "truth.gpkg"}
    predicted.to_file(paths["predicted"], engine="pyogrio")
    truth.to_crs("EPSG:4326").to_file(paths["truth"], engine="pyogrio")
    paths["raster"] = write_raster(
        tmp_path / "scene.tif", textured(120, 850), origin=(X0 - 10, Y0 + 110)
    )
    return paths


def run(*args: object) -> object:
    return CliRunner().invoke(cli, ["score-parcels", *map(str, args)])


def test_cli_writes_scores_table_and_picture(files, tmp_path: Path) -> None:
    out = tmp_path / "scores"
    result = run(files["predicted"], "--truth", files["truth"], "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["scores.json", "scores.md", "scores.png"]
    record = json.loads((out / "scores.json").read_text())
    assert record["overall"]["matched"] == 3
    assert record["overall"]["f1"] == pytest.approx(0.5)
    assert record["iou_threshold"] == 0.5
    by_size = record["by_size"]
    assert sum(row["count"] for row in by_size["truth"]) == 6
    assert sum(row["matched"] for row in by_size["predicted"]) == 3
    assert "True parcels by size" in result.output
    assert "| **all** | 6 | 6 | 3 | 0.500 | 0.500 | 0.500 | 0.867 |" in result.output
    assert (out / "scores.md").read_text() in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_joins_one_map_per_raster_in_any_crs(parcels, files, tmp_path: Path) -> None:
    predicted, _ = parcels
    first, second = tmp_path / "first.gpkg", tmp_path / "second.shp"
    predicted.iloc[:3].to_file(first, engine="pyogrio")
    predicted.iloc[3:].to_crs("EPSG:4326").to_file(second, engine="pyogrio")
    out = tmp_path / "scores"
    result = run(first, second, "--truth", files["truth"], "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "scores.json").read_text())
    assert record["predicted"] == [str(first), str(second)]
    overall = record["overall"]
    assert (overall["truth"], overall["predicted"], overall["matched"]) == (6, 6, 3)


def test_cli_scores_per_raster(files, tmp_path: Path) -> None:
    out = tmp_path / "scores"
    result = run(
        files["predicted"], "--truth", files["truth"], "--raster", files["raster"], "-o", out
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "scores.json").read_text())
    # the raster (x -10 to 840) holds the exact, shrunk, split and merged cases
    (row,) = record["areas"]
    assert row["name"] == "scene.tif"
    assert (row["truth"], row["predicted"], row["matched"]) == (5, 5, 3)
    assert record["overall"] == {key: row[key] for key in record["overall"]}


def test_cli_scores_a_tile_dataset_split(tiles: Path, scene, tmp_path: Path) -> None:
    """The dataset's own labels as the parcel map: every parcel mostly in the val tiles is
    found exactly; the truth defaults to the labels the dataset was cut from."""
    _, labels = scene
    out = tmp_path / "scores"
    result = run(labels, "--dataset", tiles, "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "scores.json").read_text())
    overall = record["overall"]
    assert overall["truth"] > 0
    assert overall["matched"] == overall["truth"] == overall["predicted"]
    assert overall["matched_miou"] == pytest.approx(1.0)
    assert record["split"] == "val"
    assert record["areas"][0]["name"] == "scene.tif (val)"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "true parcels"),
        ("no crs", "have no CRS"),
        ("iou 0", "--iou must be in (0, 1]"),
        ("iou 1.5", "--iou must be in (0, 1]"),
        ("elsewhere", "no true parcel"),
        ("not empty", "is not empty"),
        ("no truth", "--truth"),
        ("raster and dataset", "not both"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, message: str, files, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    args: list[object] = [files["predicted"], "--truth", files["truth"], "-o", out]
    if case == "missing":
        args[2] = tmp_path / "absent.gpkg"
    elif case == "no crs":
        with pytest.warns(UserWarning, match="crs"):
            gpd.GeoDataFrame(geometry=[box(0, 100)]).to_file(tmp_path / "bare.gpkg")
        args[2] = tmp_path / "bare.gpkg"
    elif case.startswith("iou"):
        args += ["--iou", case.split()[1]]
    elif case == "elsewhere":
        far = write_raster(tmp_path / "far.tif", textured(50, 50), origin=(X0 + 5000, Y0))
        args += ["--raster", far]
    elif case == "not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "no truth":
        args = [files["predicted"], "-o", out]
    else:
        args += ["--raster", files["raster"], "--dataset", tmp_path]
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists() or [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_each_parcel_not_found_is_said_why(parcels) -> None:
    """The known cases, plus a parcel drawn in three pieces none of which reaches IoU 0.5."""

    predicted, truth = parcels
    pieces = frame([(2000, 2040), (2040, 2080), (2080, 2100)])
    predicted = gpd.GeoDataFrame(pd.concat([predicted, pieces], ignore_index=True), crs=UTM)
    truth = gpd.GeoDataFrame(pd.concat([truth, frame([(2000, 2100)])], ignore_index=True), crs=UTM)
    result = score_parcel_map(predicted, truth).overall
    # truth: exact, shrunk, split 70/30 found; the merged pair; missed; the three-piece one
    assert list(truth_kinds(result)) == ["", "", "", "merged", "merged", "missed", "split"]
    # predictions: matched ×3, the 30% part, the merged pair's one (45% in each), the false
    # positive on no parcel, the three pieces
    expected = ["", "", "", "piece", "across", "off truth", "piece", "piece", "piece"]
    assert list(predicted_kinds(result)) == expected


def test_parcels_by_size_count_matches_and_kinds() -> None:
    """Two size classes: 50 m squares (2,500 m²: 1,000–3,000 m²) and 150 m squares
    (2.25 ha: 1–3 ha); per class the kinds add up to the parcels not matched."""

    small, large = [(0, 50, 0, 50), (100, 150, 0, 50)], [(300, 450, 0, 150), (600, 750, 0, 150)]
    truth = gpd.GeoDataFrame(geometry=[box(*b) for b in small + large], crs=UTM)
    # the first small one exact, the second missed; the first large one exact, the second
    # halved (IoU 0.5: matched) with its other half a piece
    drawn = [small[0], large[0], (600, 675, 0, 150), (675, 750, 0, 150), (1000, 1050, 0, 50)]
    predicted = gpd.GeoDataFrame(geometry=[box(*b) for b in drawn], crs=UTM)
    parts = breakdown(score_parcel_map(predicted, truth).overall)
    assert [row.label for row in parts.truth] == ["1,000–3,000 m²", "1–3 ha"]
    assert [(row.count, row.matched, row.kinds["missed"]) for row in parts.truth] == [
        (2, 1, 1),
        (2, 2, 0),
    ]
    assert parts.truth[0].share_matched == 0.5
    assert parts.truth[1].matched_miou == pytest.approx((1.0 + 0.5) / 2)
    # predictions: 2,500 m² ×2 (exact; off truth), 1.125 ha ×2 (matched half; piece), 2.25 ha
    assert [(row.label, row.count, row.matched) for row in parts.predicted] == [
        ("1,000–3,000 m²", 2, 1),
        ("1–3 ha", 3, 2),
    ]
    assert parts.predicted[0].kinds == {"piece": 0, "off truth": 1, "across": 0}
    assert parts.predicted[1].kinds == {"piece": 1, "off truth": 0, "across": 0}
    text = markdown_tables(parts)
    assert "| 1,000–3,000 m² | 2 | 1 | 0.500 | 1.000 | 1 | 0 | 0 |" in text
    assert "| 1–3 ha | 3 | 2 | 0.667 | 0.750 | 1 | 0 | 0 |" in text


def test_size_labels_use_m2_below_a_hectare_and_ha_above() -> None:

    assert size_label(None, 10) == "< 10 m²"
    assert size_label(100, 300) == "100–300 m²"
    assert size_label(3e3, 1e4) == "3,000 m²–1 ha"
    assert size_label(1e5, 3e5) == "10–30 ha"
    assert size_label(1e7, None) == "≥ 1,000 ha"
