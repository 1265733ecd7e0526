"""geosam tile on the real sample data (../shared/data): NAIP fields and odd formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from conftest import polygonized_iou

from geosam.data.tiling import TileParams, tile_dataset

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def naip(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("naip") / "ds"
    fields = real_data / "naip-fields"
    manifest = tile_dataset(
        [str(fields / "images")],
        fields / "fields.gpkg",
        out,
        TileParams(workers=2),
        id_field="field_id",
        progress=False,
    )
    return out, manifest


def test_naip_fields_become_one_dataset(naip: tuple[Path, dict]) -> None:
    out, manifest = naip
    assert len(manifest["sources"]) == 30
    assert {s["crs"] for s in manifest["sources"]} == {"EPSG:4326"}
    assert manifest["labels"]["crs"] == "EPSG:5070"
    assert manifest["ground_resolution_m"] == pytest.approx(1.0, abs=0.05)
    counts = manifest["counts"]
    assert counts["tiles"] == 30
    assert counts["instances"] >= 1200
    assert 0.1 < counts["val_tiles"] / counts["tiles"] < 0.35
    # a fifth to a third of the fields reach an image edge
    assert 0.15 < counts["clipped_instances"] / counts["instances"] < 0.45
    instances = pd.read_parquet(out / "instances.parquet")
    assert instances.feature_id.nunique() == instances.shape[0]


def test_naip_masks_polygonize_back_to_the_fields(naip: tuple[Path, dict], real_data: Path) -> None:
    out, _ = naip
    iou = polygonized_iou(out, real_data / "naip-fields" / "fields.gpkg", "field_id")
    assert iou >= 0.98


@pytest.mark.parametrize(
    ("raster", "labels", "stretched", "nodata"),
    [
        ("kampala_buildings_3857.tif", "kampala_buildings.geojson", False, False),
        ("spacenet_pan_uint16_utm.tif", "spacenet_buildings.geojson", True, True),
        ("nebraska_landsat_int16_4326.tif", "nebraska_pivots.geojson", True, True),
    ],
)
def test_format_cases(
    real_data: Path, tmp_path: Path, raster: str, labels: str, stretched: bool, nodata: bool
) -> None:
    cases = real_data / "format-cases"
    manifest = tile_dataset(
        [str(cases / raster)],
        cases / labels,
        tmp_path / "ds",
        TileParams(tile_size=512, overlap=64, split_block=1),
        progress=False,
    )
    source = manifest["sources"][0]
    assert (source["stretch"]["method"] == "percentile") == stretched
    assert source["has_mask"] == nodata
    assert manifest["counts"]["instances"] > 0
    tiles = pd.read_parquet(tmp_path / "ds" / "tiles.parquet")
    with rasterio.open(tmp_path / "ds" / tiles.chip[0]) as chip:
        assert chip.count == 3 and chip.dtypes[0] == "uint8"
        assert chip.crs == rasterio.crs.CRS.from_string(source["crs"])
        pixels = chip.read()
    # a stretched chip uses the uint8 range, not a dark sliver of it
    assert np.percentile(pixels, 99) > 150
