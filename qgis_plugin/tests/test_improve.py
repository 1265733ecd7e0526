"""Improving the model from corrected parcels: the CLI's location, the refusals made before
anything starts, and the real ``geosam improve`` run from the dock's task and from the
Processing algorithm, on the weak fixture model (tuned on parcels drawn short of their edges)
corrected with the scene's true parcels: the held-aside box mIoU must rise.

The real runs need the geosam CLI of the main venv (``make qgis-tests`` sets GEOSAM_CLI to
it); without it they are skipped with one line, except under CI=true, where they must run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsTask,
    QgsVectorLayer,
)
from qgis.gui import QgisInterface
from qgis.PyQt.QtWidgets import QApplication

# One epoch without flips or threshold tuning: the loop, not the model's quality, is tested.
FAST = "--epochs 1 --no-calibration INPUT.HFLIP False INPUT.VFLIP False INPUT.ROT90 False"
# Enough training for the weak model to learn where the fields' edges are (the gain held for
# every held-aside seed tried: docs/design-notes.md); no threshold tuning, which is not scored.
GAIN_EPOCHS = 4
GAIN = f"--epochs {GAIN_EPOCHS} --no-calibration"


def real_cli() -> str:
    """The geosam CLI named by GEOSAM_CLI, or a skip (a failure under CI)."""
    cli = os.environ.get("GEOSAM_CLI", "")
    if not (cli and os.access(cli, os.X_OK)):
        if os.environ.get("CI") == "true":
            pytest.fail("GEOSAM_CLI does not name the geosam CLI: run make qgis-tests")
        pytest.skip("no geosam CLI: set GEOSAM_CLI (make qgis-tests does)")
    return cli


def wait_for(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for geosam improve"
        QApplication.processEvents()
        time.sleep(0.05)


def parcels_layer(scene: Path, count: int | None = None, shift: float = 0.0) -> QgsVectorLayer:
    """A memory copy of the scene's true parcels (the user's "corrections"), the first
    ``count`` of them, moved ``shift`` metres east."""
    source = QgsVectorLayer(f"{scene.parent / 'parcels.gpkg'}|layername=parcels", "truth", "ogr")
    assert source.isValid()
    layer = QgsVectorLayer(f"Polygon?crs={source.crs().authid()}", "corrected", "memory")
    features = []
    for feature in list(source.getFeatures())[:count]:
        geometry = QgsGeometry(feature.geometry())
        geometry.translate(shift, 0)
        copy = QgsFeature(layer.fields())
        copy.setGeometry(geometry)
        features.append(copy)
    layer.dataProvider().addFeatures(features)
    return layer


def test_find_cli_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geosam_qgis.cli_locator import ENVIRONMENT, SETTING, find_geosam_cli

    paths = {}
    for name in ("setting", "env", "path"):
        folder = tmp_path / name
        folder.mkdir()
        paths[name] = folder / "geosam"
        paths[name].write_text("#!/bin/sh\n")
        paths[name].chmod(0o755)
    monkeypatch.setenv("PATH", str(paths["path"].parent))
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    settings = QgsSettings()
    settings.remove(SETTING)
    assert find_geosam_cli() == str(paths["path"])
    monkeypatch.setenv(ENVIRONMENT, str(paths["env"]))
    assert find_geosam_cli() == str(paths["env"])
    settings.setValue(SETTING, str(paths["setting"]))
    try:
        assert find_geosam_cli() == str(paths["setting"])
        settings.setValue(SETTING, str(tmp_path / "absent"))
        assert find_geosam_cli() == str(paths["env"])
    finally:
        settings.remove(SETTING)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv(ENVIRONMENT)
    assert find_geosam_cli() is None


@pytest.fixture
def dock(
    qgis_iface: QgisInterface, raster_layer: QgsRasterLayer, weak_model_dir: Path, tmp_path: Path
) -> Iterator:
    """The dock with its improve action, on the scene, with a copy of the weak model (the new
    one goes beside it, in tmp_path)."""
    from conftest import model_variant
    from geosam_qgis.dock import SegmentDock
    from geosam_qgis.improve_action import ImproveAction

    model = model_variant(weak_model_dir, tmp_path / "model")
    widget = SegmentDock()
    widget.raster_combo.setLayer(raster_layer)
    widget.model_widget.setFilePath(str(model))
    action = ImproveAction(qgis_iface, widget)
    qgis_iface.messageBar().clear_messages()
    yield action
    widget.deleteLater()


@pytest.mark.parametrize(
    ("count", "shift", "expected"),
    [(9, 0.0, "9 parcels in corrected: improving the model needs at least 10"),
     (None, 5000.0, "18 of the 18 parcels lie outside the raster scene")],
)  # fmt: skip
def test_refusals_start_nothing(
    dock, qgis_iface: QgisInterface, scene: Path, project: QgsProject, tmp_path: Path,
    count: int | None, shift: float, expected: str,
) -> None:  # fmt: skip
    layer = parcels_layer(scene, count, shift)
    project.addMapLayer(layer)
    dock.dock.improve_parcels_combo.setLayer(layer)
    tasks = QgsApplication.taskManager().count()
    assert dock.start() is None
    (message,) = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert expected in message
    assert QgsApplication.taskManager().count() == tasks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_selection_too_small(dock, qgis_iface: QgisInterface, scene: Path, project) -> None:
    layer = parcels_layer(scene)
    project.addMapLayer(layer)
    layer.selectByIds(list(layer.allFeatureIds())[:3])
    dock.dock.improve_parcels_combo.setLayer(layer)
    dock.dock.improve_selected_check.setChecked(True)
    assert dock.start() is None
    (message,) = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)
    assert "3 selected parcels" in message


@pytest.fixture
def fast_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from geosam_qgis.cli_locator import SETTING
    from geosam_qgis.improve import OPTIONS_SETTING

    cli = real_cli()
    settings = QgsSettings()
    settings.setValue(SETTING, cli)
    settings.setValue(OPTIONS_SETTING, FAST)
    yield cli
    settings.remove(SETTING)
    settings.remove(OPTIONS_SETTING)


def test_dock_improves_and_switches(
    dock, fast_cli: str, scene: Path, project: QgsProject, tmp_path: Path
) -> None:
    """The output layer's parcels → a new model beside the old one, better than it on the
    held-aside parcels, the before/after dialog, and "Use the new model" puts it in the dock."""
    from geosam_qgis.improve import OPTIONS_SETTING

    QgsSettings().setValue(OPTIONS_SETTING, GAIN)
    layer = parcels_layer(scene)
    project.addMapLayer(layer)
    dock.dock.output_combo.setLayer(layer)
    task = dock.start()
    assert task is not None
    progress = []
    task.progressChanged.connect(progress.append)
    wait_for(lambda: task.status() in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated))
    assert task.status() == QgsTask.TaskStatus.Complete, task.error
    new_model = tmp_path / "model_improved"
    report = json.loads((new_model / "improve_report.json").read_text())
    assert_gain(report)
    assert progress and max(progress) == 100
    wait_for(lambda: dock.dialog is not None, 10)
    assert (
        "box prompts: mIoU" in dock.dialog.findChildren(type(dock.dialog.children()[1]))[0].text()
    )
    dock.dialog.use_button.click()
    assert dock.dock.model_folder() == str(new_model)


def test_dock_cancel_keeps_old_model(
    dock, fast_cli: str, scene: Path, project: QgsProject, tmp_path: Path
) -> None:
    from geosam_qgis.improve import OPTIONS_SETTING

    QgsSettings().setValue(OPTIONS_SETTING, f"{FAST} --epochs 100")
    layer = parcels_layer(scene)
    project.addMapLayer(layer)
    dock.dock.improve_parcels_combo.setLayer(layer)
    old = dock.dock.model_folder()
    task = dock.start()
    wait_for(lambda: task.progress() >= 10)
    task.cancel()
    wait_for(lambda: task.status() == QgsTask.TaskStatus.Terminated, 60)
    assert dock.dock.model_folder() == old and dock.dialog is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def assert_gain(report: dict) -> None:
    """The report scores both models on the same held-aside prompts, and the new one wins."""
    before, after = report["before"]["box"], report["after"]["box"]
    assert before["prompts"] == after["prompts"] > 0
    assert after["mIoU"] > before["mIoU"], report


def test_processing_algorithm(
    provider: None, weak_model_dir: Path, scene: Path, tmp_path: Path
) -> None:
    import processing

    real_cli()
    parcels = parcels_layer(scene)
    output = tmp_path / "improved"
    result = processing.run(
        "geosam:improve_model",
        {
            "RASTER": str(scene),
            "PARCELS": parcels,
            "MODEL": str(weak_model_dir),
            "OUTPUT": str(output),
            "EPOCHS": GAIN_EPOCHS,
            "CALIBRATE": False,
            "SEED": 1,  # other held-aside parcels than the dock's
        },
    )
    assert result["OUTPUT"] == str(output)
    report = json.loads(Path(result["REPORT"]).read_text())
    assert report["new_model"] == str(output.resolve())
    assert report["parcels"]["held_aside"] + report["parcels"]["trained_on"] == 18
    assert_gain(report)
    assert (output / "encoder.onnx").is_file() and (output / "improve_report.md").is_file()


def test_processing_refuses_few_parcels(provider: None, model_dir: Path, scene: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="needs at least 10"):
        processing.run(
            "geosam:improve_model",
            {
                "RASTER": str(scene),
                "PARCELS": parcels_layer(scene, 4),
                "MODEL": str(model_dir),
                "OUTPUT": "TEMPORARY_OUTPUT",
            },
        )
