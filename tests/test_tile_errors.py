"""Bad input to geosam tile: one line naming the file or option, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from click.testing import CliRunner
from conftest import textured, write_raster
from rasterio import Affine

from geosam.cli import cli


def run_tile(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["tile", "--quiet", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr


def assert_fails(tmp_path: Path, args: list[str], *expected: str) -> None:
    out = tmp_path / "out"
    code, stderr = run_tile(*args, "-o", str(out))
    errors = [line for line in stderr.splitlines() if line.startswith("geosam: error:")]
    assert code == 2, stderr
    assert len(errors) == 1, stderr
    for text in expected:
        assert text in errors[0], errors[0]
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "staging left"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_without_crs(scene, tmp_path: Path) -> None:
    _, labels = scene
    raster = write_raster(tmp_path / "nocrs.tif", textured(64, 64), crs=None)
    assert_fails(tmp_path, [str(raster), "--labels", str(labels)], "nocrs.tif", "no CRS")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_without_geotransform(scene, tmp_path: Path) -> None:
    _, labels = scene
    raster = write_raster(tmp_path / "nogt.tif", textured(64, 64), transform=Affine.identity())
    assert_fails(tmp_path, [str(raster), "--labels", str(labels)], "nogt.tif", "geotransform")


def test_corrupt_raster(scene, tmp_path: Path) -> None:
    _, labels = scene
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    assert_fails(tmp_path, [str(bad), "--labels", str(labels)], "corrupt.tif")


def test_missing_raster(scene, tmp_path: Path) -> None:
    _, labels = scene
    assert_fails(tmp_path, [str(tmp_path / "nope.tif"), "--labels", str(labels)], "nope.tif")


@pytest.mark.filterwarnings("ignore:'crs' was not provided:UserWarning")
def test_labels_without_crs(scene, tmp_path: Path) -> None:
    raster, _ = scene
    labels = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)]).to_file(labels)
    assert_fails(tmp_path, [str(raster), "--labels", str(labels)], "nocrs.shp", "no CRS")


def test_labels_elsewhere(scene, tmp_path: Path) -> None:
    raster, _ = scene
    labels = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(10, 10, 11, 11)], crs="EPSG:4326").to_file(labels)
    assert_fails(
        tmp_path,
        [str(raster), "--labels", str(labels)],
        "overlap no raster",
        "labels extent (10.0",
        "rasters extent (15.0",
    )


def test_empty_labels(scene, tmp_path: Path) -> None:
    raster, _ = scene
    labels = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs="EPSG:4326")).to_file(labels)
    assert_fails(tmp_path, [str(raster), "--labels", str(labels)], "empty.gpkg", "no features")


@pytest.mark.parametrize(
    "geometry", [shapely.Point(15, 45), shapely.LineString([(15, 45), (16, 46)])]
)
def test_non_polygon_labels(scene, tmp_path: Path, geometry: shapely.Geometry) -> None:
    raster, _ = scene
    labels = tmp_path / "other.geojson"
    gpd.GeoDataFrame(geometry=[geometry], crs="EPSG:4326").to_file(labels)
    assert_fails(
        tmp_path, [str(raster), "--labels", str(labels)], geometry.geom_type, "not polygons"
    )


def test_unknown_layer(scene, tmp_path: Path) -> None:
    raster, labels = scene
    assert_fails(
        tmp_path,
        [str(raster), "--labels", str(labels), "--layer", "fields"],
        "--layer fields",
        "layers: parcels",
    )


def test_ambiguous_layers(scene, tmp_path: Path) -> None:
    raster, labels = scene
    gpd.read_file(labels).to_file(labels, layer="other")
    assert_fails(tmp_path, [str(raster), "--labels", str(labels)], "2 layers", "--layer")


def test_unknown_id_field(scene, tmp_path: Path) -> None:
    raster, labels = scene
    assert_fails(
        tmp_path,
        [str(raster), "--labels", str(labels), "--id-field", "fid_x"],
        "--id-field fid_x",
        "parcel_id",
    )


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("--bands", "1,2,9", "has bands 1..3"),
        ("--bands", "1,2", "1 or 3"),
        ("--overlap", "256", "--overlap 256"),
        ("--tile-size", "8", "--tile-size 8"),
        ("--val-fraction", "1.0", "--val-fraction"),
        ("--workers", "0", "--workers"),
    ],
)
def test_bad_options(scene, tmp_path: Path, option: str, value: str, text: str) -> None:
    raster, labels = scene
    args = [str(raster), "--labels", str(labels), "--tile-size", "256", option, value]
    assert_fails(tmp_path, args, text)


def test_output_not_empty_needs_overwrite(scene, tmp_path: Path) -> None:
    raster, labels = scene
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, stderr = run_tile(str(raster), "--labels", str(labels), "-o", str(out))
    assert code == 2 and "--overwrite" in stderr
    assert (out / "keep.txt").exists()
    code, _ = run_tile(
        str(raster), "--labels", str(labels), "-o", str(out), "--tile-size", "256", "--overwrite"
    )
    assert code == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_output_not_writable(scene, tmp_path: Path) -> None:
    raster, labels = scene
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code, stderr = run_tile(str(raster), "--labels", str(labels), "-o", str(blocker / "ds"))
    assert code == 2 and "cannot write to" in stderr and "file.txt" in stderr


def test_no_parcel_large_enough(scene, tmp_path: Path) -> None:
    raster, labels = scene
    assert_fails(
        tmp_path, [str(raster), "--labels", str(labels), "--min-area", "100000"], "--min-area"
    )


def test_invalid_geometries_are_repaired(scene, tmp_path: Path) -> None:
    raster, _ = scene
    bowtie = shapely.Polygon(
        [(500_010, 4_999_990), (500_100, 4_999_900), (500_100, 4_999_990), (500_010, 4_999_900)]
    )
    labels = tmp_path / "bowtie.gpkg"
    gpd.GeoDataFrame(geometry=[bowtie], crs="EPSG:32633").to_file(labels)
    code, stderr = run_tile(
        str(raster), "--labels", str(labels), "-o", str(tmp_path / "ds"), "--tile-size", "256"
    )
    assert code == 0, stderr
    assert "1 repaired" in stderr
