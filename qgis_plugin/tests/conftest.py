"""Fixtures of the plugin tests, which run in QGIS's own Python (``make test-qgis``).

The plugin is imported from what scripts/build_plugin.py staged under build/qgis_plugin
(the source folder lacks the runtime it bundles), the tiny model, the synthetic scene and the
CLI's masks on it from build/qgis-fixtures, made beforehand by the main venv's ``geosam
export-onnx``, ``geosam synth`` and scripts/parity_fixture.py (QGIS's Python has neither torch
nor rasterio), and a weak model for the improve tests. Both places can be moved with
GEOSAM_QGIS_PLUGIN_DIR and GEOSAM_QGIS_FIXTURES.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path(os.environ.get("GEOSAM_QGIS_PLUGIN_DIR", ROOT / "build" / "qgis_plugin"))
FIXTURES = Path(os.environ.get("GEOSAM_QGIS_FIXTURES", ROOT / "build" / "qgis-fixtures"))
# QGIS's own Python plugins (Processing) live outside its site-packages.
QGIS_PLUGINS = Path("/usr/share/qgis/python/plugins")
RASTER_CRS = "EPSG:32633"

sys.path.insert(0, str(PLUGIN_DIR))
if QGIS_PLUGINS.is_dir():
    sys.path.append(str(QGIS_PLUGINS))


def _fixture(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run the plugin tests with `make test-qgis`")
    return path


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The tiny SAM tuned from the shipped stand-in on another scene (Makefile): its masks
    are parcels."""
    return _fixture(FIXTURES / "model")


@pytest.fixture(scope="session")
def weak_model_dir() -> Path:
    """The same tiny SAM tuned on parcels drawn short of their edges (Makefile), with its run
    folder: weak on the scene, so that improving it with the true parcels gains."""
    return _fixture(FIXTURES / "weak_model")


@pytest.fixture(scope="session")
def scene() -> Path:
    """512 x 512 px RGB uint8 farmland at 1 m in EPSG:32633."""
    _fixture(PLUGIN_DIR / "geosam_qgis" / "runtime")
    return _fixture(FIXTURES / "scene" / "scene.tif")


@pytest.fixture(scope="session")
def parity() -> Path:
    """The CLI's prompts and masks on the scene (scripts/parity_fixture.py)."""
    return _fixture(FIXTURES / "parity.npz")


@pytest.fixture(scope="session")
def geographic_scene(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scene warped to EPSG:4326 (non-square ground pixels in degrees)."""
    path = tmp_path_factory.mktemp("geographic") / "scene_4326.tif"
    gdal.Warp(str(path), str(scene), dstSRS="EPSG:4326", resampleAlg="bilinear")
    return path


@pytest.fixture(scope="module")
def provider(qgis_processing: None) -> Iterator[None]:
    """geosam's Processing provider, registered for a test module."""
    from geosam_qgis.processing.provider import GeosamProvider

    registered = GeosamProvider()
    QgsApplication.processingRegistry().addProvider(registered)
    yield
    QgsApplication.processingRegistry().removeProvider(registered)


@pytest.fixture
def project() -> Iterator[QgsProject]:
    """The project, emptied after the test (layers must go before QGIS exits)."""
    yield QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem())


@pytest.fixture
def raster_layer(scene: Path, project: QgsProject) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(scene), "scene")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer


def model_variant(
    model_dir: Path,
    target: Path,
    manifest: dict[str, Any] | None = None,
    keep_manifest: bool = True,
) -> Path:
    """A model folder sharing ``model_dir``'s ONNX files, with manifest fields changed (or
    no manifest at all)."""
    target.mkdir(parents=True)
    for name in ("encoder.onnx", "decoder.onnx"):
        (target / name).symlink_to(model_dir / name)
    if keep_manifest:
        fields = json.loads((model_dir / "manifest.json").read_text())
        fields.update(manifest or {})
        (target / "manifest.json").write_text(json.dumps(fields))
    return target


# Scene pixel (col, row) → map: x = 520000 + col, y = 5350000 - row (1 m pixels).
def points_layer(
    clicks: list[tuple[float, float]], crs: str, labels: list[int] | None = None
) -> QgsVectorLayer:
    """A memory point layer of scene pixels (col, row), reprojected to ``crs``, with a name
    and (optionally) a label per point."""
    layer = QgsVectorLayer(
        f"Point?crs={crs}&field=name:string&field=label:integer&field=score:double",
        "prompts",
        "memory",
    )
    to_crs = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem(RASTER_CRS), layer.crs(), QgsProject.instance()
    )
    features = []
    for index, (col, row) in enumerate(clicks):
        feature = QgsFeature(layer.fields())
        point = to_crs.transform(QgsPointXY(520000 + col, 5350000 - row))
        feature.setGeometry(QgsGeometry.fromPointXY(point))
        label = 1 if labels is None else labels[index]
        feature.setAttributes([f"prompt {index}", label, 0.5])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Spin QGIS's event loop until ``condition()`` (a task finished, its callback ran)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the plugin's task"
        QApplication.processEvents()
        time.sleep(0.01)
