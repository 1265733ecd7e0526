"""The synthetic scene: file contract, truthful labels, texture, determinism, seamless windows."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from scipy import ndimage

from geosam.data import synthetic
from geosam.data.synthetic import SceneFiles, _build_scene, _paint, make_scene
from geosam.utils.errors import GeosamError

SIZE = 512
SEED = 3


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SceneFiles:
    return make_scene(tmp_path_factory.mktemp("scene"), size=SIZE, seed=SEED)


@pytest.fixture(scope="module")
def pixels(scene: SceneFiles) -> np.ndarray:
    with rasterio.open(scene.raster) as src:
        return src.read()


@pytest.fixture(scope="module")
def parcels(scene: SceneFiles) -> gpd.GeoDataFrame:
    return gpd.read_file(scene.labels, layer="parcels")


@pytest.fixture(scope="module")
def parcel_ids(scene: SceneFiles, parcels: gpd.GeoDataFrame) -> np.ndarray:
    """parcel_id per pixel (0 outside every parcel), rasterised from the labels."""
    with rasterio.open(scene.raster) as src:
        transform = src.transform
    shapes = zip(parcels.geometry, parcels.parcel_id, strict=True)
    return rasterize(shapes, out_shape=(SIZE, SIZE), transform=transform, dtype="int32")


def test_writes_both_files_and_nothing_else(scene: SceneFiles) -> None:
    assert scene.raster == scene.raster.parent / "scene.tif"
    assert scene.labels == scene.raster.parent / "parcels.gpkg"
    assert sorted(p.name for p in scene.raster.parent.iterdir()) == ["parcels.gpkg", "scene.tif"]


def test_raster_profile(scene: SceneFiles) -> None:
    with rasterio.open(scene.raster) as src:
        assert (src.count, src.width, src.height) == (3, SIZE, SIZE)
        assert src.dtypes == ("uint8",) * 3
        assert src.crs.to_epsg() == 32633
        transform = src.transform
        assert (transform.a, transform.b, transform.d, transform.e) == (1.0, 0.0, 0.0, -1.0)
        # A plausible UTM corner: in zone 33N's easting range, mid-latitude northing.
        assert 166_000 < transform.c < 834_000
        assert 4_000_000 < transform.f < 6_500_000
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.block_shapes == [(256, 256)] * 3
        structure = src.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "ZSTD"
        assert structure["PREDICTOR"] == "2"


def test_labels_contract(scene: SceneFiles, parcels: gpd.GeoDataFrame) -> None:
    with rasterio.open(scene.raster) as src:
        bounds, crs = shapely.box(*src.bounds), src.crs
    assert parcels.crs == crs
    assert len(parcels) >= 5
    assert set(parcels.geom_type) <= {"Polygon", "MultiPolygon"}
    assert parcels.is_valid.all()
    assert not parcels.is_empty.any()
    assert parcels.parcel_id.is_unique
    assert sorted(parcels.parcel_id) == list(range(1, len(parcels) + 1))
    assert parcels.crop.map(type).eq(str).all()
    assert parcels.crop.nunique() >= 3
    assert parcels.within(bounds.buffer(1e-6)).all()
    # Fields cut by the raster border are kept, clipped.
    assert parcels.intersects(bounds.boundary).any()


def test_some_parcel_has_a_hole(parcels: gpd.GeoDataFrame) -> None:
    rings = shapely.get_num_interior_rings(shapely.get_parts(parcels.geometry.values))
    assert (rings > 0).any()


def test_parcels_are_separated_by_boundaries(parcel_ids: np.ndarray) -> None:
    """No pixel of one parcel touches a pixel of another: a road, hedge or margin lies between."""
    for a, b in ((parcel_ids[:, 1:], parcel_ids[:, :-1]), (parcel_ids[1:], parcel_ids[:-1])):
        assert not ((a != b) & (a > 0) & (b > 0)).any()
    assert 0.3 < (parcel_ids > 0).mean() < 0.95


def test_parcels_are_textured_not_flat(pixels: np.ndarray, parcel_ids: np.ndarray) -> None:
    lum = pixels.astype(np.float32).mean(axis=0)
    spreads = []
    for pid in np.unique(parcel_ids[parcel_ids > 0]):
        inner = ndimage.binary_erosion(parcel_ids == pid, iterations=2)
        if inner.sum() >= 200:
            spreads.append(lum[inner].std())
    assert len(spreads) >= 5
    assert min(spreads) > 2.0
    assert np.median(spreads) > 5.0


def test_boundaries_look_different_from_the_fields_they_enclose(
    pixels: np.ndarray, parcel_ids: np.ndarray
) -> None:
    """The ring of pixels just outside a parcel (road, hedge, margin) differs from its inside."""
    rgb = pixels.astype(np.float32)
    contrasts = []
    for pid in np.unique(parcel_ids[parcel_ids > 0]):
        field = parcel_ids == pid
        inner = ndimage.binary_erosion(field, iterations=3)
        ring = ndimage.binary_dilation(field, iterations=2) & (parcel_ids == 0)
        if inner.sum() >= 200 and ring.sum() >= 50:
            contrasts.append(np.abs(rgb[:, ring].mean(axis=1) - rgb[:, inner].mean(axis=1)).sum())
    assert len(contrasts) >= 5
    assert np.median(contrasts) > 20.0


def test_same_seed_same_scene_other_seed_other_scene(
    tmp_path: Path, scene: SceneFiles, pixels: np.ndarray, parcels: gpd.GeoDataFrame
) -> None:
    again = make_scene(tmp_path / "again", size=SIZE, seed=SEED)
    assert again.raster.read_bytes() == scene.raster.read_bytes()
    again_parcels = gpd.read_file(again.labels, layer="parcels")
    assert again_parcels.geom_equals_exact(parcels.geometry, tolerance=0).all()
    assert (again_parcels.crop == parcels.crop).all()

    other = make_scene(tmp_path / "other", size=SIZE, seed=SEED + 1)
    with rasterio.open(other.raster) as src:
        assert (src.read() != pixels).mean() > 0.5


def test_resolution_and_crs_options(tmp_path: Path) -> None:
    files = make_scene(tmp_path, size=256, resolution=0.5, crs="EPSG:32632", field_size=50.0)
    with rasterio.open(files.raster) as src:
        assert src.crs.to_epsg() == 32632
        assert (src.transform.a, src.transform.e) == (0.5, -0.5)
        bounds = shapely.box(*src.bounds)
    labels = gpd.read_file(files.labels, layer="parcels")
    assert labels.crs.to_epsg() == 32632
    assert len(labels) > 0
    assert labels.within(bounds.buffer(1e-6)).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crs": "EPSG:4326"}, "not projected in metres"),
        ({"crs": "EPSG:nope"}, "unknown CRS"),
        ({"size": 10}, "at least 64 px"),
        ({"resolution": 0.0}, "positive number"),
        ({"field_size": 5.0}, "field_size"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(GeosamError, match=message):
        make_scene(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_failed_run_leaves_no_partial_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(synthetic, "_write_labels", disk_full)
    with pytest.raises(OSError, match="No space"):
        make_scene(tmp_path, size=256)
    assert list(tmp_path.iterdir()) == []


def test_no_seam_at_window_borders(tmp_path: Path) -> None:
    """At 1536 px the 1024-px painting windows meet at row and column 1024; nothing shows there."""
    files = make_scene(tmp_path, size=1536, seed=1)
    with rasterio.open(files.raster) as src:
        rgb = src.read().astype(np.float32)
    across_cols = np.abs(np.diff(rgb, axis=2)).mean(axis=(0, 1))  # [i]: column i vs i + 1
    across_rows = np.abs(np.diff(rgb, axis=1)).mean(axis=(0, 2))
    for steps in (across_cols, across_rows):
        neighbours = np.delete(steps[1000:1048], 1023 - 1000)
        assert steps[1023] < 1.3 * np.median(neighbours)


def test_overlapping_windows_paint_identical_pixels() -> None:
    """Texture depends on global coordinates only, so any two windows agree where they overlap."""
    scene, _, _ = _build_scene(size=1024, seed=2, resolution=1.0, field_size=150.0)
    left = _paint(scene, 256, 0, 512, 512)
    right = _paint(scene, 384, 300, 512, 512)
    np.testing.assert_array_equal(left[:, 128:, 300:], right[:, :384, :212])
