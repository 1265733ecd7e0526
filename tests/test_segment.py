"""geosam segment on the ``scene`` raster with the untuned tiny model.

The model has random weights, so these tests check what does not depend on its quality: one
georeferenced, valid polygon per prompt where the prompt is, attributes carried, prompts in
any CRS landing on the same pixels, windows inside the raster, the cache reused, and bad
input refused with one line before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from conftest import textured, write_raster

from geosam.cli import cli
from geosam.config import load_config
from geosam.export import export_onnx
from geosam.runtime import Window, WindowParams
from geosam.segment import SegmentParams, segment
from geosam.segment.polygons import shapefile_names
from geosam.segment.reader import WindowReader
from geosam.utils.errors import GeosamError

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
RASTER_CRS = "EPSG:32633"
# The scene's 3x3 north-western parcels: the holed one, the MultiPolygon and a plain square
# on the raster's west and north edges.
NINE = [row * 7 + col for row in range(3) for col in range(3)]


def export_tiny(folder: Path) -> Path:
    """The untuned tiny model exported to ``folder``/model (what segment tests run)."""
    export_onnx(load_config(CONFIG, []), folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("segment"))


@pytest.fixture
def parcels(scene: tuple[Path, Path]) -> gpd.GeoDataFrame:
    """Nine scene parcels (EPSG:4326) with two long attribute names that clash at 10 chars."""
    frame = gpd.read_file(scene[1], layer="parcels").iloc[NINE].reset_index(drop=True)
    frame["owner_name_first"] = [f"owner {i}" for i in range(len(frame))]
    frame["owner_name_second"] = np.arange(len(frame), dtype=float)
    return frame


def save(frame: gpd.GeoDataFrame, path: Path) -> Path:
    frame.to_file(path, engine="pyogrio")
    return path


def run(raster: Path, model_dir: Path, prompts: Path, out: Path, **options: object):
    return segment(raster, model_dir, prompts, out, SegmentParams(**options), progress=False)


def raster_box(raster: Path) -> shapely.Polygon:
    with rasterio.open(raster) as ds:
        return shapely.box(*ds.bounds)


@pytest.mark.parametrize("driver", ["ESRI Shapefile", "GPKG"])
def test_box_prompts(
    driver: str, model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path
) -> None:
    raster = scene[0]
    out = tmp_path / ("parcels.shp" if driver == "ESRI Shapefile" else "parcels.gpkg")
    result = run(raster, model_dir, save(parcels, tmp_path / "prompts.gpkg"), out)
    polygons = gpd.read_file(out, engine="pyogrio")
    assert result.polygons == len(polygons) == len(parcels) and not result.skipped
    assert polygons.crs.equals(RASTER_CRS)
    assert polygons.is_valid.all() and (polygons.area > 0).all()
    assert polygons.within(raster_box(raster).buffer(1e-6)).all()
    assert list(polygons.parcel_id) == list(parcels.parcel_id)
    prompts = parcels.to_crs(RASTER_CRS).geometry.envelope.to_numpy()
    assert shapely.intersects(polygons.geometry.to_numpy(), prompts).all()
    assert polygons.score.notna().all()
    # UTM near its central meridian: the geodesic area is the planar one within 0.1%
    np.testing.assert_allclose(polygons.area_m2, polygons.area, rtol=1e-3)
    if driver == "ESRI Shapefile":
        assert all(len(name) <= 10 for name in polygons.columns)
        assert result.renamed == {
            "owner_name_first": "owner_name",
            "owner_name_second": "owner_na_1",
        }
        assert list(polygons.owner_na_1) == list(parcels.owner_name_second)
        assert out.with_suffix(".prj").is_file()
    else:
        assert result.renamed == {} and "owner_name_second" in polygons.columns
    assert not list(tmp_path.glob(".geosam-segment-*")), "staging folder left behind"


def test_point_prompts_with_negatives(
    model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path
) -> None:
    """Centroids are point prompts; a label-0 point is a negative, not an output feature."""
    points = parcels.to_crs(RASTER_CRS)
    points["geometry"] = points.geometry.representative_point()
    points["positive"] = 1
    negative = points.iloc[:1].assign(positive=0, parcel_id=-1)
    negative["geometry"] = negative.geometry.translate(30.0, 0.0)
    prompts = save(pd.concat([points, negative], ignore_index=True), tmp_path / "points.gpkg")
    out = tmp_path / "out.gpkg"
    result = run(scene[0], model_dir, prompts, out, label_field="positive")
    polygons = gpd.read_file(out)
    assert result.prompts == result.polygons == len(parcels)
    assert list(polygons.parcel_id) == list(parcels.parcel_id)
    assert polygons.is_valid.all() and polygons.within(raster_box(scene[0])).all()


def test_reprojected_prompts_give_the_same_polygons(
    model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path
) -> None:
    geographic = run(scene[0], model_dir, save(parcels, tmp_path / "a.gpkg"), tmp_path / "a.shp")
    utm = parcels.to_crs(RASTER_CRS)
    projected = run(scene[0], model_dir, save(utm, tmp_path / "b.gpkg"), tmp_path / "b.shp")
    assert geographic.polygons == projected.polygons
    a, b = gpd.read_file(tmp_path / "a.shp"), gpd.read_file(tmp_path / "b.shp")
    assert (
        shapely.area(shapely.symmetric_difference(a.geometry.values, b.geometry.values)).max() < 1.0
    )
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)


def test_output_crs_and_simplify(
    model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path
) -> None:
    prompts = save(parcels.iloc[:2], tmp_path / "p.gpkg")
    # the untrained model's speckle reaches window edges: one window each, not grown
    one = WindowParams(max_grow=0)
    exact = run(scene[0], model_dir, prompts, tmp_path / "exact.gpkg", window=one)
    run(
        scene[0],
        model_dir,
        prompts,
        tmp_path / "simple.gpkg",
        simplify=3.0,
        crs="EPSG:4326",
        window=one,
    )
    exact_frame = gpd.read_file(tmp_path / "exact.gpkg")
    simple = gpd.read_file(tmp_path / "simple.gpkg")
    assert exact.polygons == len(simple) == 2 and simple.crs.equals("EPSG:4326")
    assert simple.is_valid.all()
    assert (
        shapely.get_num_coordinates(simple.geometry.values).sum()
        < shapely.get_num_coordinates(exact_frame.geometry.values).sum()
    )
    # Douglas-Peucker keeps every boundary within the tolerance (3 m); islands and holes it
    # collapses, measured from a corner, add up to a pixel diagonal more.
    distance = shapely.hausdorff_distance(
        simple.to_crs(RASTER_CRS).geometry.values, exact_frame.geometry.values
    )
    assert (distance <= 6.0).all()


def test_geographic_raster(model_dir: Path, tmp_path: Path) -> None:
    """On a raster in degrees, windows are sized in metres and areas are geodesic m²."""
    raster = write_raster(
        tmp_path / "geo.tif",
        textured(300, 300),
        crs="EPSG:4326",
        origin=(15.0, 45.0),
        resolution=1e-5,
    )
    parcel = shapely.box(15.0005, 44.9985, 15.0015, 44.9995)
    prompts = gpd.GeoDataFrame({"parcel_id": [7]}, geometry=[parcel], crs="EPSG:4326")
    out = tmp_path / "geo.gpkg"
    result = run(raster, model_dir, save(prompts, tmp_path / "p.gpkg"), out)
    polygons = gpd.read_file(out)
    assert result.polygons == 1 and polygons.crs.equals("EPSG:4326")
    assert polygons.intersects(parcel).all() and polygons.within(raster_box(raster)).all()
    # the equal-area projection's area, not square degrees
    np.testing.assert_allclose(polygons.area_m2, polygons.to_crs("EPSG:6933").area, rtol=1e-3)


def test_windows_inside_raster_and_cache_reuse(
    model_dir: Path, scene: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt on the raster's corner gets a full window shifted inside the raster; two
    prompts a few metres apart share one encoding. (The untrained model's speckle reaches
    window edges: windows are not grown here.)"""
    read: list[Window] = []
    original = WindowReader.read

    def spy(self: WindowReader, window: Window) -> np.ndarray:
        read.append(window)
        return original(self, window)

    monkeypatch.setattr(WindowReader, "read", spy)
    corner = shapely.box(500_560, 4_999_400, 500_600, 4_999_440)  # south-east corner
    points = [shapely.Point(500_300, 4_999_700), shapely.Point(500_310, 4_999_690)]
    prompts = gpd.GeoDataFrame(
        {"name": ["corner", "a", "b"]}, geometry=[corner, *points], crs=RASTER_CRS
    )
    result = run(
        scene[0],
        model_dir,
        save(prompts, tmp_path / "p.gpkg"),
        tmp_path / "o.gpkg",
        window=WindowParams(max_grow=0),
    )
    assert result.polygons == 3
    assert result.encoded == len(read) == 2 and result.cache_hits == 1
    for window in read:
        assert window.col_off >= 0 and window.row_off >= 0
        assert window.col_off + window.width <= 600 and window.row_off + window.height <= 600
        assert (window.out_width, window.out_height) == (256, 256)
    assert read[-1].col_off + read[-1].width == 600 and read[-1].row_off + read[-1].height == 600


def test_prompts_outside_are_skipped(
    model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path
) -> None:
    far = parcels.to_crs(RASTER_CRS).iloc[:2].copy()
    far["geometry"] = far.geometry.translate(5_000.0, 0.0)
    prompts = pd.concat([parcels.to_crs(RASTER_CRS).iloc[:3], far], ignore_index=True)
    result = run(scene[0], model_dir, save(prompts, tmp_path / "p.gpkg"), tmp_path / "o.gpkg")
    assert result.prompts == 5 and result.polygons == 3
    assert result.skipped == {"outside the raster": 2}
    only_far = save(far, tmp_path / "far.gpkg")
    with pytest.raises(GeosamError, match="outside raster"):
        run(scene[0], model_dir, only_far, tmp_path / "none.gpkg")
    assert not (tmp_path / "none.gpkg").exists()


def test_huge_box_prompt_is_segmented(model_dir: Path, tmp_path: Path) -> None:
    """A box larger than the model sees at 4x its resolution gets a polygon all the same
    (the window is as coarse as it must be); nothing is skipped for size."""
    raster = write_raster(tmp_path / "large.tif", textured(900, 900))
    x0, y0 = 500_000.0, 5_000_000.0
    huge = shapely.box(x0 + 50, y0 - 850, x0 + 850, y0 - 50)  # 800 px: 1232 px with margins
    small = shapely.Point(x0 + 100, y0 - 100)
    prompts = gpd.GeoDataFrame({"name": ["huge", "small"]}, geometry=[huge, small], crs=RASTER_CRS)
    out = tmp_path / "o.gpkg"
    result = run(raster, model_dir, save(prompts, tmp_path / "p.gpkg"), out)
    assert result.prompts == 2 and not result.skipped
    assert sorted(gpd.read_file(out).name) == ["huge", "small"]


def test_shapefile_names() -> None:
    names = shapefile_names(["parcel_id", "Score_long_name", "score_long_other", "SCORE_LONG", "a"])
    assert names == {
        "Score_long_name": "Score_long",
        "score_long_other": "score_lo_1",
        "SCORE_LONG": "SCORE_LO_2",
    }


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(cli, ["segment", "--quiet", *args])
    errors = [line for line in result.stderr.splitlines() if line.startswith("geosam: error:")]
    assert result.exit_code == 2, result.stderr or result.output
    assert len(errors) == 1, result.stderr
    return errors[0]


def bad_prompts(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.gpkg"
    if kind == "no-crs":
        gpd.GeoDataFrame(geometry=[shapely.Point(500_100, 4_999_900)]).to_file(path)
    elif kind == "empty":
        gpd.GeoDataFrame({"a": []}, geometry=[], crs=RASTER_CRS).to_file(path)
    elif kind == "lines":
        line = shapely.LineString([(500_100, 4_999_900), (500_200, 4_999_800)])
        gpd.GeoDataFrame(geometry=[line], crs=RASTER_CRS).to_file(path)
    elif kind == "missing":
        pass
    return path


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "do not exist"),
        ("no-crs", "no CRS"),
        ("empty", "no features"),
        ("lines", "LineString"),
    ],
)
def test_bad_prompts(
    kind: str, message: str, model_dir: Path, scene: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.shp"
    prompts = bad_prompts(tmp_path, kind)
    error = cli_error(
        str(scene[0]), "--model", str(model_dir), "--prompts", str(prompts), "-o", str(out)
    )
    assert message in error
    assert list(tmp_path.glob("out.*")) == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("two-bands", "2 bands"),
        ("uint16", "uint16"),
        ("no-model", "does not exist"),
        ("no-folder", "does not exist"),
        ("folder", "is a folder"),
        ("suffix", "*.shp"),
        ("crs", "--crs"),
        ("label-field", "--label-field"),
    ],
)
def test_bad_inputs(
    case: str, message: str, model_dir: Path, scene: tuple[Path, Path], tmp_path: Path
) -> None:
    raster, prompts = scene
    out = tmp_path / "out.shp"
    extra: list[str] = []
    if case == "two-bands":
        raster = write_raster(tmp_path / "two.tif", textured(64, 64, bands=2))
    elif case == "uint16":
        raster = write_raster(tmp_path / "u16.tif", textured(64, 64).astype(np.uint16) * 100)
    elif case == "no-model":
        model_dir = tmp_path / "nothing"
    elif case == "no-folder":
        out = tmp_path / "absent" / "out.shp"
    elif case == "folder":
        out = tmp_path / "dir.shp"
        out.mkdir()
    elif case == "suffix":
        out = tmp_path / "out.txt"
    elif case == "crs":
        extra = ["--crs", "EPSG:0"]
    elif case == "label-field":
        extra = ["--label-field", "nope"]
    error = cli_error(
        str(raster), "--model", str(model_dir), "--prompts", str(prompts), "-o", str(out), *extra
    )
    assert message in error
    assert not out.is_file() and list(tmp_path.glob("out.*")) == []


def test_cli_writes_and_reports(model_dir: Path, scene: tuple[Path, Path], tmp_path: Path) -> None:
    prompts = gpd.GeoDataFrame(
        {"parcel_id": [1]}, geometry=[shapely.Point(500_100, 4_999_900)], crs=RASTER_CRS
    )
    out = tmp_path / "out.shp"
    result = CliRunner().invoke(
        cli,
        [
            "segment",
            str(scene[0]),
            "--model",
            str(model_dir),
            "--prompts",
            str(save(prompts, tmp_path / "p.gpkg")),
            "-o",
            str(out),
            "--format",
            "ESRI Shapefile",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 polygons from 1 prompts" in result.stdout
    assert {p.suffix for p in tmp_path.glob("out.*")} >= {".shp", ".shx", ".dbf", ".prj"}


def test_flip_tta_from_the_cli(
    model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path
) -> None:
    """--flip-tta reaches the model: the same prompts give the same polygon count, other
    shapes (the random model is not mirror-symmetric), and each window is encoded once."""
    prompts = save(parcels, tmp_path / "prompts.gpkg")
    plain = run(scene[0], model_dir, prompts, tmp_path / "plain.gpkg")
    outputs = {}
    for name, flags in (("plain", []), ("flipped", ["--flip-tta"])):
        out = tmp_path / f"{name}-cli.gpkg"
        args = [str(scene[0]), "--model", str(model_dir), "--prompts", str(prompts), "-o", str(out)]
        result = CliRunner().invoke(cli, ["segment", "--quiet", *args, *flags])
        assert result.exit_code == 0, result.output
        assert f"{plain.encoded} windows encoded" in result.stdout
        outputs[name] = gpd.read_file(out)
    assert len(outputs["plain"]) == len(outputs["flipped"]) == len(parcels)
    assert outputs["flipped"].is_valid.all()
    assert not np.allclose(outputs["plain"].area, outputs["flipped"].area)


def test_min_score_and_layer(model_dir: Path, scene: tuple[Path, Path], parcels, tmp_path: Path):
    prompts = tmp_path / "layers.gpkg"
    parcels.to_file(prompts, layer="fields", engine="pyogrio")
    parcels.head(2).to_file(prompts, layer="other", engine="pyogrio")
    kept = run(scene[0], model_dir, prompts, tmp_path / "all.gpkg", layer="fields")
    assert kept.prompts == len(parcels) == kept.polygons
    scores = gpd.read_file(tmp_path / "all.gpkg").score.to_numpy()
    # a threshold between the scores drops exactly the predictions below it
    threshold = float(np.median(scores))
    some = run(
        scene[0], model_dir, prompts, tmp_path / "some.gpkg", layer="fields", min_score=threshold
    )
    assert some.polygons == int((scores >= threshold).sum()) < len(parcels)
    assert (gpd.read_file(tmp_path / "some.gpkg").score >= threshold).all()
    assert run(scene[0], model_dir, prompts, tmp_path / "o.gpkg", layer="other").prompts == 2
    with pytest.raises(GeosamError, match="2 layers"):
        run(scene[0], model_dir, prompts, tmp_path / "x.gpkg")
