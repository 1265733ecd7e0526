"""A parcel is segmented whole wherever the training chips' borders cut it.

Tiles are cut on a fixed grid for training, but ``geosam segment`` reads a window centred on
each prompt, so a parcel that no training chip holds whole is still seen whole at inference.
This test proves it independently of a model's quality: conftest's perfect model on a raster of
flat-coloured parcels, prompted on the near side of a 256 px chip border, must return each
parcel's full polygon, through the real window reading, decoding and polygonizing.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from conftest import flat_parcels_raster, grid_parcels
from test_segment import export_tiny, run

from geosam.cli import cli

ORIGIN = (500_000.0, 5_000_000.0)
CRS = "EPSG:32633"
CHIP = 256  # the tiling's chip side, in pixels (= metres here)


@pytest.mark.usefixtures("perfect_model")
def test_prompts_beside_chip_borders_give_whole_parcels(tmp_path: Path) -> None:
    parcels = grid_parcels(ORIGIN, 600.0, 60.0, 12.0)  # 48 m squares on a 60 m grid
    border_x = ORIGIN[0] + CHIP
    border_y = ORIGIN[1] - CHIP
    cut = [p for p in parcels if p.bounds[0] < border_x < p.bounds[2]]
    cut += [p for p in parcels if p.bounds[1] < border_y < p.bounds[3]]
    assert len(cut) >= 10  # parcels that no 256 px chip of the grid holds whole

    raster = flat_parcels_raster(tmp_path / "flat.tif", parcels, ORIGIN, 600)

    # one point 2 m inside the part of each cut parcel that lies before the border
    points = []
    for parcel in cut:
        left, bottom, right, top = parcel.bounds
        if left < border_x < right:
            points.append(shapely.Point(left + 2.0, (bottom + top) / 2))
        else:
            points.append(shapely.Point((left + right) / 2, top - 2.0))
    prompts = gpd.GeoDataFrame({"n": range(len(cut))}, geometry=points, crs=CRS)
    prompts.to_file(tmp_path / "prompts.gpkg", engine="pyogrio")

    model_dir = export_tiny(tmp_path)
    out = tmp_path / "parcels.gpkg"
    result = run(raster, model_dir, tmp_path / "prompts.gpkg", out)
    found = gpd.read_file(out).sort_values("n")
    assert result.polygons == len(cut) == len(found)
    truth = np.array(cut, dtype=object)
    iou = shapely.area(shapely.intersection(truth, found.geometry.values)) / shapely.area(
        shapely.union(truth, found.geometry.values)
    )
    assert (iou > 0.99).all(), iou


@pytest.mark.usefixtures("perfect_model")
@pytest.mark.parametrize(("kind", "all_parts"), [("point", False), ("box", False), ("point", True)])
def test_the_prompted_part_of_a_mask_is_kept(kind: str, all_parts: bool, tmp_path: Path) -> None:
    """Two parcels that look alike (the same colour) come out of one prompt as one mask: the
    polygon is the clicked one (for a box, the one inside it), unless --all-parts."""
    parcels = grid_parcels(ORIGIN, 180.0, 60.0, 12.0)[:2]  # two 48 m squares side by side
    raster = flat_parcels_raster(tmp_path / "twins.tif", [shapely.union_all(parcels)], ORIGIN, 180)
    prompt = parcels[0].centroid if kind == "point" else parcels[0].buffer(3.0).envelope
    gpd.GeoDataFrame({"n": [0]}, geometry=[prompt], crs=CRS).to_file(tmp_path / "prompt.gpkg")

    out = tmp_path / "parcel.gpkg"
    run(raster, export_tiny(tmp_path), tmp_path / "prompt.gpkg", out, all_parts=all_parts)
    found = gpd.read_file(out).geometry.iloc[0]
    expected = shapely.union_all(parcels) if all_parts else parcels[0]
    assert found.symmetric_difference(expected).area < 1.0


@pytest.mark.usefixtures("perfect_model")
def test_prompts_on_parcels_of_any_size_come_back_whole(tmp_path: Path) -> None:
    """A box and a point on each parcel from a tenth of a window to three windows across:
    each gives its whole parcel. The point's window sees only part of a large parcel, cut
    by the window's edge: it is asked again on windows sized to the mask until it is whole."""
    from test_segment_auto import MANY_SIZES, map_box

    model = export_tiny(tmp_path)
    truth = [shapely.union_all([map_box(b) for b in boxes]) for boxes in MANY_SIZES]
    raster = flat_parcels_raster(tmp_path / "sizes.tif", truth, ORIGIN, 1200)
    points = [map_box(boxes[0]).centroid for boxes in MANY_SIZES]
    boxes = [shapely.box(*parcel.bounds) for parcel in truth]
    prompts = gpd.GeoDataFrame(
        {"parcel": [*range(len(truth)), *range(len(truth))]},
        geometry=[*points, *boxes],
        crs="EPSG:32633",
    )
    prompts.to_file(tmp_path / "prompts.gpkg", engine="pyogrio")
    out = tmp_path / "parcels.gpkg"
    result = CliRunner().invoke(
        cli,
        [
            "segment",
            "--quiet",
            str(raster),
            "--model",
            str(model),
            "--prompts",
            str(tmp_path / "prompts.gpkg"),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    found = gpd.read_file(out)
    assert len(found) == 2 * len(truth)
    expected = [truth[i] for i in found.parcel]
    iou = shapely.area(shapely.intersection(found.geometry.values, expected)) / shapely.area(
        shapely.union(found.geometry.values, expected)
    )
    assert (iou >= 0.95).all(), iou
