"""Shared fixtures: small georeferenced rasters and parcel layers built in the test itself."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

REAL_DATA_ENV = "GEOSAM_REAL_DATA"


def real_data_dir() -> Path:
    """../shared/data beside the checkout (or $GEOSAM_REAL_DATA); skip, or fail under CI."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get(REAL_DATA_ENV, default))
    if not (path / "naip-fields").is_dir():
        message = f"real sample data not found at {path} (set {REAL_DATA_ENV})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    return real_data_dir()


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = "EPSG:32633",
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    resolution: float = 1.0,
    nodata: float | None = None,
    transform: rasterio.Affine | None = None,
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF (``crs=None`` writes no georeferencing)."""
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = transform or from_origin(*origin, resolution, resolution)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def textured(height: int, width: int, seed: int = 0, bands: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 220, size=(bands, height, width), dtype=np.uint8)


def grid_parcels(
    origin: tuple[float, float], extent: float, cell: float, gap: float
) -> list[shapely.Polygon]:
    """Rectangular parcels of side ``cell - gap`` on a grid covering ``extent`` metres."""
    x0, y1 = origin
    parcels = []
    for row in range(int(extent // cell)):
        for col in range(int(extent // cell)):
            left, top = x0 + col * cell + gap / 2, y1 - row * cell - gap / 2
            parcels.append(shapely.box(left, top - cell + gap, left + cell - gap, top))
    return parcels


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path]:
    """A 600x600 px UTM raster and its parcels, stored in EPSG:4326 to force reprojection.

    Parcels are 70 m squares on an 80 m grid, plus one with a hole and one MultiPolygon, so
    some cross the 256 px tile edges used by the tests.
    """
    raster = write_raster(tmp_path / "scene.tif", textured(600, 600))
    parcels = grid_parcels((500_000.0, 5_000_000.0), 600.0, 80.0, 10.0)
    parcels[0] = parcels[0].difference(parcels[0].centroid.buffer(15))
    parcels[1] = shapely.MultiPolygon(
        [parcels[1], shapely.box(500_005, 4_999_415, 500_030, 4_999_405)]
    )
    frame = gpd.GeoDataFrame(
        {"parcel_id": np.arange(100, 100 + len(parcels))}, geometry=parcels, crs="EPSG:32633"
    ).to_crs("EPSG:4326")
    labels = tmp_path / "parcels.gpkg"
    frame.to_file(labels, layer="parcels", engine="pyogrio")
    return raster, labels


@pytest.fixture
def tiles(scene: tuple[Path, Path], tmp_path: Path) -> Path:
    """The scene cut into nine 256 px tiles, about a third of them in the val split."""
    from geosam.data.tiling import TileParams, tile_dataset

    raster, labels = scene
    out = tmp_path / "tiles"
    params = TileParams(tile_size=256, overlap=32, split_block=1, val_fraction=0.3, seed=3)
    tile_dataset([str(raster)], labels, out, params, progress=False)
    return out


def polygonized_iou(dataset: Path, labels: Path, id_field: str, layer: str | None = None) -> float:
    """Area IoU, over all tiles, of the polygonized instance masks vs the source polygons.

    Each tile's masks are turned back into polygons (rasterio.features.shapes) and compared
    with the source parcels, reprojected to the tile's CRS and clipped to its footprint.
    """
    import pandas as pd
    from rasterio import features

    tiles = pd.read_parquet(dataset / "tiles.parquet")
    instances = pd.read_parquet(dataset / "instances.parquet")
    source = gpd.read_file(labels, layer=layer, engine="pyogrio")
    intersection = union = 0.0
    for tile in tiles.itertuples():
        with rasterio.open(dataset / tile.mask) as ds:
            mask, transform, crs = ds.read(1), ds.transform, ds.crs
        box = shapely.box(tile.west, tile.south, tile.east, tile.north)
        truth = source.to_crs(crs)
        truth = truth[truth.intersects(box)]
        clipped = dict(
            zip(truth[id_field], shapely.intersection(truth.geometry.values, box), strict=True)
        )
        pieces: dict[int, list] = {}
        for geom, value in features.shapes(mask, mask=mask > 0, transform=transform):
            pieces.setdefault(int(value), []).append(shapely.geometry.shape(geom))
        ids = instances[instances.tile_id == tile.tile_id].set_index("instance_id").feature_id
        predicted = {ids[k]: shapely.union_all(v) for k, v in pieces.items()}
        for key in set(clipped) | set(predicted):
            a, b = clipped.get(key, shapely.Polygon()), predicted.get(key, shapely.Polygon())
            intersection += shapely.intersection(a, b).area
            union += shapely.union(a, b).area
    return intersection / union


def pytest_configure(config: pytest.Config) -> None:
    # Two shared cores: torch's default thread pool oversubscribes them and slows tests ~20x.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def colour_key(image: np.ndarray) -> np.ndarray:
    """One integer per RGB colour of an (H, W, 3) uint8 image."""
    return (
        image[..., 0].astype(np.int64) << 16 | image[..., 1].astype(np.int64) << 8 | image[..., 2]
    )


@pytest.fixture
def perfect_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """SamModel with an "encoder" that keeps the image and a decoder that answers a prompt
    with the region of the colour under its first point (or its box's centre): on a raster of
    flat-coloured parcels, the perfect model, which makes every parcel's expected polygon known
    and tests windows, georeferencing and polygons apart from a model's quality. Like any
    model it sees only its window: a parcel larger than the window is clipped to it. In
    automatic mode its IoU head rates black (what lies between parcels) 0: no parcel."""
    from geosam.runtime import Embedding, SamModel
    from geosam.runtime.model import Prediction

    def encode(self: SamModel, image: np.ndarray) -> Embedding:
        return Embedding(image[None], image.shape[:2], image.shape[:2])

    def region(embedding: Embedding, xy: np.ndarray) -> np.ndarray:
        keys = colour_key(embedding.array[0])
        x, y = np.round(xy).astype(int)
        return keys == keys[y, x]

    def decode(self: SamModel, embedding: Embedding, points=None, labels=None, box=None, **_):
        xy = points[0] if points is not None else (box[:2] + box[2:]) / 2
        return Prediction(region(embedding, xy), 0.95, np.zeros((1, 1, 4, 4), np.float32), 0)

    def decode_points(self: SamModel, embedding: Embedding, points: np.ndarray):
        for xy in points:
            x, y = np.round(xy).astype(int)
            score = 0.95 if embedding.array[0, y, x].any() else 0.0
            yield np.where(region(embedding, xy), 10.0, -10.0)[None], np.array([score])

    monkeypatch.setattr(SamModel, "encode", encode)
    monkeypatch.setattr(SamModel, "decode", decode)
    monkeypatch.setattr(SamModel, "decode_points", decode_points)


def flat_parcels_raster(
    path: Path,
    parcels: list[shapely.Polygon],
    origin: tuple[float, float],
    size: int,
    crs: str = "EPSG:32633",
    resolution: float = 1.0,
) -> Path:
    """A ``size`` px RGB raster (1 m in EPSG:32633 unless told) with each parcel (in
    ``crs``) in a colour of its own and black between them: what :func:`perfect_model`
    segments exactly."""
    from rasterio.features import rasterize

    colours = np.array([(40 + i, 200 - i, 7 * i % 256) for i in range(1, len(parcels) + 1)])
    labels = rasterize(
        zip(parcels, range(1, len(parcels) + 1), strict=True),
        (size, size),
        transform=from_origin(*origin, resolution, resolution),
    )
    data = np.zeros((3, size, size), np.uint8)
    data[:, labels > 0] = colours[labels[labels > 0] - 1].T
    return write_raster(path, data, crs=crs, origin=origin, resolution=resolution)
