"""geosam tile on small synthetic scenes: the dataset contract, determinism, odd rasters."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from conftest import polygonized_iou, textured, write_raster

from geosam.data.tiling import FORMAT, TileParams, load_manifest, tile_dataset
from geosam.data.tiling.grid import assign_splits, axis_starts, plan_tiles

PARAMS = TileParams(tile_size=256, overlap=32, split_block=1, val_fraction=0.3, seed=3)


def read(path: Path) -> tuple[np.ndarray, rasterio.Affine, str]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs.to_string()


@pytest.mark.parametrize("length", [100, 256, 300, 600, 1000, 1300])
def test_axis_starts_cover_the_axis_with_full_tiles(length: int) -> None:
    starts = axis_starts(length, 256, 32, 512)
    covered = np.zeros(length, bool)
    for _, start, size in starts:
        assert size == min(256, length)
        assert start >= 0 and start + size <= length
        covered[start : start + size] = True
    assert covered.all()
    # tiles of different blocks never overlap
    for (b1, s1, n1), (b2, s2, _) in itertools.pairwise(starts):
        if b1 != b2:
            assert s2 >= s1 + n1


def test_splits_are_deterministic_and_never_split_overlapping_tiles() -> None:
    tiles = plan_tiles(0, 3000, 2000, 256, 64, 2)
    splits = assign_splits(tiles, 0.25, seed=7)
    assert splits == assign_splits(tiles, 0.25, seed=7)
    assert splits != assign_splits(tiles, 0.25, seed=8)
    val = sum(s == "val" for s in splits.values()) / len(tiles)
    assert 0.2 <= val <= 0.45
    for a in tiles:
        for b in tiles:
            if _overlap(a.window, b.window):
                assert splits[a.tile_id] == splits[b.tile_id]


def _overlap(a: rasterio.windows.Window, b: rasterio.windows.Window) -> bool:
    return (
        a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
        and a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
    )


def test_dataset_contract(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, labels = scene
    out = tmp_path / "ds"
    manifest = tile_dataset(
        [str(raster)], labels, out, PARAMS, id_field="parcel_id", progress=False
    )
    assert manifest == load_manifest(out)
    assert manifest["format"] == FORMAT
    assert manifest["ground_resolution_m"] == pytest.approx(1.0)
    assert manifest["sources"][0]["stretch"] == {"method": "none"}
    assert manifest["labels"]["crs"] == "EPSG:4326"
    tiles = pd.read_parquet(out / "tiles.parquet")
    instances = pd.read_parquet(out / "instances.parquet")
    assert len(tiles) == manifest["counts"]["tiles"] == 9
    assert set(tiles.split) == {"train", "val"}
    assert manifest["counts"]["instances"] == len(instances)
    assert set(instances.feature_id) == set(range(100, 149))
    for tile in tiles.itertuples():
        chip, chip_transform, chip_crs = read(out / tile.chip)
        mask, mask_transform, mask_crs = read(out / tile.mask)
        assert chip.dtype == np.uint8 and chip.shape == (3, 256, 256)
        assert (chip_transform, chip_crs) == (mask_transform, mask_crs)
        assert chip_crs == "EPSG:32633"
        with rasterio.open(raster) as src:
            expected = src.read(
                window=rasterio.windows.Window(tile.col_off, tile.row_off, 256, 256)
            )
        np.testing.assert_array_equal(chip, expected)
        rows = instances[instances.tile_id == tile.tile_id].sort_values("instance_id")
        assert list(rows.instance_id) == list(range(1, mask.max() + 1))
        for inst in rows.itertuples():
            ys, xs = np.nonzero(mask[0] == inst.instance_id)
            assert (inst.box_x0, inst.box_y0, inst.box_x1, inst.box_y1) == (
                xs.min(),
                ys.min(),
                xs.max(),
                ys.max(),
            )
            assert inst.area_px == xs.size
            assert mask[0, int(inst.point_y), int(inst.point_x)] == inst.instance_id
            for x, y in zip(inst.points_x, inst.points_y, strict=True):
                assert mask[0, int(y), int(x)] == inst.instance_id
            assert inst.split == tile.split
    # the hole of parcel 100 is no parcel pixel, and clipped flags follow the tile edges
    first = instances[(instances.feature_id == 100) & (instances.tile_id == "s000_y000000_x000000")]
    assert first.area_px.item() == pytest.approx(70 * 70 - np.pi * 15**2, rel=0.01)
    by_tile = instances.merge(tiles, on="tile_id")
    touches_edge = (
        (by_tile.box_x0 == 0)
        | (by_tile.box_y0 == 0)
        | (by_tile.box_x1 == 255)
        | (by_tile.box_y1 == 255)
    )
    # separate squares: cut by the tile exactly when they reach its edge (the MultiPolygon's
    # parts lie in different tiles, so it is cut everywhere)
    single = by_tile.feature_id != 101
    assert (by_tile.clipped[single] == touches_edge[single]).all()
    assert by_tile.clipped[~single].all()
    assert by_tile.clipped.any() and not by_tile.clipped.all()
    footprints = pyogrio.read_dataframe(out / "footprints.gpkg", layer="footprints")
    assert footprints.crs.to_string() == "EPSG:4326"
    assert sorted(footprints.tile_id) == sorted(tiles.tile_id)
    assert (out / "preview.png").stat().st_size > 10_000


def test_workers_give_the_same_dataset(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, labels = scene
    one = tile_dataset([str(raster)], labels, tmp_path / "one", PARAMS, progress=False)
    two = tile_dataset(
        [str(raster)],
        labels,
        tmp_path / "two",
        TileParams(**{**PARAMS.__dict__, "workers": 2}),
        progress=False,
    )
    assert one["counts"] == two["counts"]
    a = pd.read_parquet(tmp_path / "one" / "instances.parquet")
    b = pd.read_parquet(tmp_path / "two" / "instances.parquet")
    pd.testing.assert_frame_equal(a, b)
    for tile_id in a.tile_id.unique():
        np.testing.assert_array_equal(
            read(tmp_path / "one" / "masks" / f"{tile_id}.tif")[0],
            read(tmp_path / "two" / "masks" / f"{tile_id}.tif")[0],
        )


def test_uint16_single_band_is_stretched_and_replicated(scene, tmp_path: Path) -> None:
    _, labels = scene
    data = (np.linspace(0, 4000, 600 * 600).reshape(1, 600, 600)).astype(np.uint16)
    raster = write_raster(tmp_path / "pan.tif", data)
    manifest = tile_dataset([str(raster)], labels, tmp_path / "ds", PARAMS, progress=False)
    stretch = manifest["sources"][0]["stretch"]
    assert stretch["method"] == "percentile"
    assert stretch["low"][0] == pytest.approx(80, abs=20)
    assert stretch["high"][0] == pytest.approx(3920, abs=20)
    chip = read(tmp_path / "ds" / "chips" / "s000_y000000_x000000.tif")[0]
    assert (chip[0] == chip[1]).all() and (chip[0] == chip[2]).all()
    assert chip.min() == 0 and chip.max() > 30


def test_nodata_pixels_belong_to_no_parcel(scene, tmp_path: Path) -> None:
    _, labels = scene
    data = textured(600, 600, bands=1).astype(np.int16)
    data[:, :, :128] = -9999
    data[:, 300:, :] = -9999
    raster = write_raster(tmp_path / "nodata.tif", data, nodata=-9999)
    manifest = tile_dataset([str(raster)], labels, tmp_path / "ds", PARAMS, progress=False)
    assert manifest["counts"]["skipped_nodata"] >= 1
    tiles = pd.read_parquet(tmp_path / "ds" / "tiles.parquet")
    for tile in tiles.itertuples():
        with rasterio.open(tmp_path / "ds" / tile.chip) as chip_ds:
            valid = chip_ds.dataset_mask() > 0
        mask = read(tmp_path / "ds" / tile.mask)[0][0]
        with rasterio.open(raster) as src:
            window = rasterio.windows.Window(tile.col_off, tile.row_off, tile.width, tile.height)
            source_valid = src.read(1, window=window) != -9999
        np.testing.assert_array_equal(valid, source_valid)
        assert not mask[~source_valid].any()


def test_multiband_uses_selected_bands(scene, tmp_path: Path) -> None:
    _, labels = scene
    data = textured(600, 600, bands=5)
    raster = write_raster(tmp_path / "five.tif", data)
    tile_dataset(
        [str(raster)],
        labels,
        tmp_path / "ds",
        TileParams(**{**PARAMS.__dict__, "bands": (5, 3, 1)}),
        progress=False,
    )
    chip = read(tmp_path / "ds" / "chips" / "s000_y000000_x000000.tif")[0]
    np.testing.assert_array_equal(chip, data[[4, 2, 0], :256, :256])


def test_many_rasters_in_their_own_crs(scene, tmp_path: Path) -> None:
    raster, labels = scene
    folder = tmp_path / "rasters"
    folder.mkdir()
    # the same ground as the scene, resampled to Web Mercator, beside the UTM original
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(raster) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:3857", src.width, src.height, *src.bounds
        )
        out = np.zeros((3, height, width), np.uint8)
        reproject(
            src.read(),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:3857",
        )
    write_raster(folder / "b_mercator.tif", out, crs="EPSG:3857", transform=transform)
    (folder / "a_utm.tif").write_bytes(raster.read_bytes())
    manifest = tile_dataset([str(folder)], labels, tmp_path / "ds", PARAMS, progress=False)
    crss = [s["crs"] for s in manifest["sources"]]
    assert crss == ["EPSG:32633", "EPSG:3857"]
    instances = pd.read_parquet(tmp_path / "ds" / "instances.parquet")
    assert set(instances.source) == {0, 1}
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert all(s["tiles"] > 0 for s in m["sources"])


def test_small_parcels_are_dropped(scene, tmp_path: Path) -> None:
    raster, labels = scene
    manifest = tile_dataset(
        [str(raster)],
        labels,
        tmp_path / "ds",
        TileParams(**{**PARAMS.__dict__, "min_area": 2000}),
        progress=False,
    )
    instances = pd.read_parquet(tmp_path / "ds" / "instances.parquet")
    assert (instances.area_px >= 2000).all()
    assert manifest["counts"]["instances"] == len(instances)


def test_polygons_survive_a_round_trip(scene, tmp_path: Path) -> None:
    raster, labels = scene
    tile_dataset(
        [str(raster)], labels, tmp_path / "ds", PARAMS, id_field="parcel_id", progress=False
    )
    assert polygonized_iou(tmp_path / "ds", labels, "parcel_id") >= 0.97


@pytest.mark.parametrize("suffix", [".shp", ".geojson", ".parquet", ".gpkg"])
def test_label_formats(scene, tmp_path: Path, suffix: str) -> None:
    import geopandas as gpd

    raster, labels = scene
    frame = gpd.read_file(labels)
    converted = tmp_path / f"labels{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(converted)
    else:
        frame.to_file(converted)
    manifest = tile_dataset(
        [str(raster)], converted, tmp_path / "ds", PARAMS, id_field="parcel_id", progress=False
    )
    instances = pd.read_parquet(tmp_path / "ds" / "instances.parquet")
    assert set(instances.feature_id) == set(range(100, 149))
    assert manifest["labels"]["features"] == 49
