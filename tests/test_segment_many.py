"""``geosam segment`` over many rasters, in this process: parcels on block and raster seams
come out once and whole (the perfect model makes every expected polygon known), prompts go
to the raster that holds them, GeoParquet output, and bad rasters refused or skipped."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from conftest import flat_parcels_raster, write_raster
from pyproj import CRS, Proj, Transformer
from test_segment import export_tiny
from test_segment_auto import assert_coverage, matches

from geosam.cli import cli

ORIGIN = (500_000.0, 5_000_000.0)
SIDE = 400  # px = m of each of the 2 x 2 rasters; 2 x 2 windows of the tiny model each


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("many"))


def seam_parcels() -> list[shapely.Polygon]:
    """Parcels of 60-340 m on an 800 m square cut into four rasters: some inside one raster,
    some across a raster edge, one across the corner where all four meet."""
    x, y = ORIGIN
    boxes = [
        (20, 20, 120, 100),  # inside the north-west raster
        (340, 40, 480, 160),  # across the west-east seam
        (60, 340, 160, 470),  # across the north-south seam
        (330, 330, 470, 480),  # across the corner of all four
        (520, 560, 760, 780),  # inside the south-east raster, across its windows
        (600, 120, 700, 300),
    ]
    return [shapely.box(x + a, y - d, x + c, y - b) for a, b, c, d in boxes]


@pytest.fixture(params=["EPSG:32633"])
def mosaic(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, list[shapely.Polygon]]:
    """Four abutting rasters of flat-coloured parcels (a parcel has one colour in all),
    1 m pixels; the southern two in the CRS of the fixture's parameter."""
    parcels = seam_parcels()
    folder = tmp_path / "mosaic"
    folder.mkdir()
    south = CRS(request.param)
    to_south = Transformer.from_crs(32633, south, always_xy=True)
    for row in range(2):
        for col in range(2):
            origin = (ORIGIN[0] + col * SIDE, ORIGIN[1] - row * SIDE)
            path = folder / f"r{row}{col}.tif"
            if row == 0 or south.equals(CRS(32633)):
                flat_parcels_raster(path, parcels, origin, SIDE)
                continue
            # 1 m on the ground is `factor` projected units of the southern CRS there
            lonlat = Transformer.from_crs(32633, 4326, always_xy=True).transform(*origin)
            factor = Proj(south).get_factors(*lonlat).meridional_scale
            projected = [shapely.transform(p, lambda xy: np.column_stack(
                to_south.transform(xy[:, 0], xy[:, 1]))) for p in parcels]  # fmt: skip
            south_origin = to_south.transform(*origin)
            flat_parcels_raster(path, projected, south_origin, SIDE, south.to_string(), factor)
    return folder, parcels


def invoke(*args: str):
    return CliRunner().invoke(cli, ["segment", "--quiet", *args])


@pytest.mark.usefixtures("perfect_model")
@pytest.mark.parametrize(
    ("mosaic", "block_windows", "least_iou"),
    [("EPSG:32633", "1", 0.99), ("EPSG:32633", "4", 0.99), ("EPSG:3857", "4", 0.97)],
    indirect=["mosaic"],
)
def test_parcels_on_block_and_raster_seams_come_out_once_whole(
    block_windows: str, least_iou: float, mosaic, model_dir: Path, tmp_path: Path
) -> None:
    """A folder of four rasters, in blocks of one window (every window edge a block edge)
    or whole rasters, the southern two in the same CRS or in Web Mercator (their pixels
    reprojected: edges within a pixel): every parcel once, whole, as one coverage in the
    first raster's CRS, named for a raster."""
    folder, truth = mosaic
    out = tmp_path / "parcels.parquet"
    args = ["--model", str(model_dir), "--auto", "-o", str(out), "--block-windows", block_windows]
    result = invoke(str(folder), *args)
    assert result.exit_code == 0, result.output
    assert "4 rasters (0 without parcels)" in result.stdout
    found = gpd.read_parquet(out)
    iou = matches(found, truth)
    assert len(found) == len(truth), found
    assert (iou.max(axis=1) >= least_iou).all() and ((iou >= 0.5).sum(axis=0) == 1).all()
    assert_coverage(found)
    assert found.crs.equals(CRS(32633))
    assert set(found.source) <= {str(p.resolve()) for p in folder.glob("*.tif")}
    assert not (tmp_path / ".parcels.parquet.parts").exists()


def mosaic_vrt(path: Path, rasters: list[Path]) -> Path:
    """A VRT mosaic of abutting ``rasters`` of one CRS and pixel size (as gdalbuildvrt
    writes it, without needing GDAL's command-line tools)."""
    with rasterio.open(rasters[0]) as first:
        crs, res, count = first.crs, first.res, first.count
    boxes = []
    for raster in rasters:
        with rasterio.open(raster) as src:
            boxes.append((raster, src.bounds, src.width, src.height))
    left = min(b.left for _, b, _, _ in boxes)
    top = max(b.top for _, b, _, _ in boxes)
    width = round((max(b.right for _, b, _, _ in boxes) - left) / res[0])
    height = round((top - min(b.bottom for _, b, _, _ in boxes)) / res[1])
    bands = []
    for band in range(1, count + 1):
        sources = "".join(
            f"<SimpleSource><SourceFilename>{raster.resolve()}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{round((b.left - left) / res[0])}" '
            f'yOff="{round((top - b.top) / res[1])}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            for raster, b, w, h in boxes
        )
        colour = ("Red", "Green", "Blue")[band - 1]
        bands.append(
            f'<VRTRasterBand dataType="Byte" band="{band}">'
            f"<ColorInterp>{colour}</ColorInterp>{sources}</VRTRasterBand>"
        )
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
        f"<SRS>{crs.to_wkt()}</SRS>"
        f"<GeoTransform>{left}, {res[0]}, 0, {top}, 0, {-res[1]}</GeoTransform>"
        f"{''.join(bands)}</VRTDataset>"
    )
    return path


@pytest.mark.usefixtures("perfect_model")
def test_a_vrt_mosaic_is_one_raster(mosaic, model_dir: Path, tmp_path: Path) -> None:
    """The four rasters as one VRT: one source, no raster seams, every parcel once, whole."""
    folder, truth = mosaic
    vrt = mosaic_vrt(tmp_path / "mosaic.vrt", sorted(folder.glob("*.tif")))
    out = tmp_path / "parcels.gpkg"
    result = invoke(str(vrt), "--model", str(model_dir), "--auto", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "1 rasters (0 without parcels)" in result.stdout
    found = gpd.read_file(out)
    iou = matches(found, truth)
    assert len(found) == len(truth), found
    assert (iou.max(axis=1) >= 0.99).all() and ((iou >= 0.5).sum(axis=0) == 1).all()
    assert set(found.source) == {str(vrt.resolve())}


@pytest.mark.usefixtures("perfect_model")
def test_prompts_go_to_the_raster_that_holds_them(mosaic, model_dir: Path, tmp_path: Path) -> None:
    """Box prompts on parcels of different rasters, given as a glob: each polygon comes from
    its raster, in the CRS asked for."""
    folder, truth = mosaic
    prompts = gpd.GeoDataFrame({"name": ["a", "e"]}, geometry=[truth[0], truth[4]], crs=32633)
    prompts.to_crs(4326).to_file(tmp_path / "prompts.gpkg")
    out = tmp_path / "prompted.gpkg"
    args = ["--model", str(model_dir), "--prompts", str(tmp_path / "prompts.gpkg")]
    result = invoke(str(folder / "r*.tif"), *args, "-o", str(out), "--crs", "EPSG:32633")
    assert result.exit_code == 0, result.output
    found = gpd.read_file(out)
    assert [Path(s).name for s in found.source] == ["r00.tif", "r11.tif"]
    assert (np.diag(matches(found, [truth[0], truth[4]])) >= 0.95).all()


def test_bad_rasters_are_named_or_skipped(mosaic, model_dir: Path, tmp_path: Path) -> None:
    folder, _ = mosaic
    write_raster(folder / "nocrs.tif", np.zeros((3, 50, 50), np.uint8), crs=None)
    out = tmp_path / "parcels.gpkg"
    args = ["--model", str(model_dir), "--auto", "-o", str(out), "--points-per-side", "2"]
    result = invoke(str(folder), *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("geosam: error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "nocrs.tif" in errors[0], result.output
    assert not out.exists() and not list(tmp_path.glob(".parcels*"))
    result = invoke(str(folder), *args, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "1 unreadable skipped" in result.stdout and "4 rasters" in result.stdout


def test_band_layout_mismatch_is_refused(model_dir: Path, tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "pan.tif", np.zeros((1, 60, 60), np.uint16))
    out = tmp_path / "parcels.gpkg"
    result = invoke(str(raster), "--model", str(model_dir), "--auto", "-o", str(out))
    assert result.exit_code == 2 and "pan.tif" in result.stderr, result.output
    assert not out.exists()


def test_parts_of_other_settings_are_refused(mosaic, model_dir: Path, tmp_path: Path) -> None:
    folder, _ = mosaic
    out = tmp_path / "parcels.gpkg"
    parts = tmp_path / ".parcels.gpkg.parts"
    parts.mkdir()
    (parts / "settings.json").write_text(json.dumps({"other": "run"}))
    args = ["--model", str(model_dir), "--auto", "-o", str(out), "--points-per-side", "2"]
    result = invoke(str(folder), *args)
    assert result.exit_code == 2 and "--overwrite" in result.stderr, result.output
    assert not out.exists()
    result = invoke(str(folder), *args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.exists() and not parts.exists()


def test_cluster_options_need_auto(mosaic, model_dir: Path, tmp_path: Path) -> None:
    folder, _ = mosaic
    out = tmp_path / "parcels.gpkg"
    result = invoke(str(folder), "--model", str(model_dir), "--prompts", "p.gpkg", "-o", str(out),
                    "--workers", "2")  # fmt: skip
    assert result.exit_code == 2 and "--auto options" in result.stderr, result.output
