"""The map tool and dock driven by simulated mouse and key events, as a user would click.

The project (and canvas) is in Web Mercator, the raster in UTM 33N and output layers in
whatever CRS they have, so every step crosses a CRS. Encoding runs in QGIS's task manager;
the tests spin the event loop until the preview appears.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, RASTER_CRS, model_variant, wait_for
from osgeo import ogr, osr
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgisInterface, QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QKeyEvent

PROJECT_CRS = QgsCoordinateReferenceSystem("EPSG:3857")
UTM = QgsCoordinateReferenceSystem(RASTER_CRS)


@pytest.fixture
def controller(
    qgis_iface: QgisInterface, raster_layer: QgsRasterLayer, model_dir: Path, project: QgsProject
) -> Iterator:
    from geosam_qgis.controller import SegmentController
    from geosam_qgis.dock import SegmentDock
    from geosam_qgis.map_tool import PromptMapTool

    project.setCrs(PROJECT_CRS)
    canvas = qgis_iface.mapCanvas()
    canvas.resize(512, 512)
    canvas.setDestinationCrs(PROJECT_CRS)
    to_canvas = QgsCoordinateTransform(UTM, PROJECT_CRS, project)
    canvas.setExtent(to_canvas.transformBoundingBox(raster_layer.extent()))
    dock = SegmentDock()
    tool = PromptMapTool(canvas)
    controller = SegmentController(qgis_iface, dock, tool)
    dock.raster_combo.setLayer(raster_layer)
    dock.model_widget.setFilePath(str(model_dir))
    canvas.setMapTool(tool)
    qgis_iface.messageBar().clear_messages()
    yield controller
    controller.unload()
    canvas.unsetMapTool(tool)
    dock.deleteLater()


def screen(controller, col: float, row: float) -> QPoint:
    """Where scene pixel (col, row) is on the canvas."""
    to_canvas = QgsCoordinateTransform(UTM, PROJECT_CRS, QgsProject.instance())
    point = to_canvas.transform(QgsPointXY(520000 + col, 5350000 - row))
    pixel = controller.canvas.getCoordinateTransform().transform(point)
    return QPoint(round(pixel.x()), round(pixel.y()))


def mouse(controller, kind: QEvent.Type, at: QPoint, button: Qt.MouseButton) -> None:
    canvas, tool = controller.canvas, controller.tool
    buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    event = QgsMapMouseEvent(canvas, kind, at, button, buttons, Qt.KeyboardModifier.NoModifier)
    handler = {
        QEvent.Type.MouseButtonPress: tool.canvasPressEvent,
        QEvent.Type.MouseMove: tool.canvasMoveEvent,
        QEvent.Type.MouseButtonRelease: tool.canvasReleaseEvent,
    }[kind]
    handler(event)


def click(
    controller, col: float, row: float, button: Qt.MouseButton = Qt.MouseButton.LeftButton
) -> None:
    at = screen(controller, col, row)
    mouse(controller, QEvent.Type.MouseButtonPress, at, button)
    mouse(controller, QEvent.Type.MouseButtonRelease, at, button)


def key(controller, code: Qt.Key) -> None:
    controller.tool.keyPressEvent(
        QKeyEvent(QEvent.Type.KeyPress, code, Qt.KeyboardModifier.NoModifier)
    )


def wait_for_preview(controller) -> None:
    wait_for(lambda: controller.parcel is not None and not controller.busy())


def utm_area(geometry: QgsGeometry, crs: QgsCoordinateReferenceSystem) -> float:
    projected = QgsGeometry(geometry)
    projected.transform(QgsCoordinateTransform(crs, UTM, QgsProject.instance()))
    return projected.area()


def true_parcel_iou(geometry: QgsGeometry, at: QgsPointXY) -> float:
    """IoU of ``geometry`` with the scene's true parcel under ``at`` (both in UTM)."""
    parcels = QgsVectorLayer(f"{FIXTURES / 'scene' / 'parcels.gpkg'}|layername=parcels")
    assert parcels.isValid() and parcels.crs() == UTM
    point = QgsGeometry.fromPointXY(at)
    (truth,) = (f.geometry() for f in parcels.getFeatures() if f.geometry().contains(point))
    return geometry.intersection(truth).area() / geometry.combine(truth).area()


def test_a_click_gives_its_parcel(controller) -> None:
    """The fixture model is tuned from the shipped stand-in: its masks are parcels."""
    for col, row in ((300.5, 300.5), (420.5, 80.5)):
        controller.clear()
        click(controller, col, row)
        wait_for_preview(controller)
        # where the click landed: the canvas rounds to its pixels, about 5 m here
        (mark,) = controller.marks
        assert true_parcel_iou(controller.parcel.geometry, mark.point) > 0.8


def test_click_preview_accept_undo(controller, qgis_iface: QgisInterface) -> None:
    click(controller, 100.5, 120.5)
    wait_for_preview(controller)
    outline = controller.outline.asGeometry()
    assert not outline.isEmpty()
    assert controller.parcel.geometry.isGeosValid()
    # the rubber band is drawn in Web Mercator (y about 6.15e6 m at 48° N), the parcel kept
    # in UTM (y about 5.35e6 m)
    assert outline.boundingBox().yMinimum() > 6e6
    assert controller.parcel.geometry.boundingBox().yMaximum() < 5.4e6

    key(controller, Qt.Key.Key_Return)
    layer = controller.dock.output_layer()
    assert layer is not None and layer.providerType() == "memory"
    assert layer.crs() == PROJECT_CRS
    (feature,) = layer.getFeatures()
    assert feature.geometry().isGeosValid()
    assert 0.0 <= feature["score"] <= 1.5
    assert feature["area_m2"] == pytest.approx(utm_area(feature.geometry(), layer.crs()), rel=2e-3)
    assert controller.marks == [] and controller.outline.asGeometry().isEmpty()

    # a further click nearby is answered from the cached embedding, without a task
    started = time.monotonic()
    click(controller, 110.5, 130.5)
    assert controller.parcel is not None and not controller.busy()
    assert time.monotonic() - started < 1.0

    controller.dock.undo_button.click()  # the click
    assert controller.marks == [] and controller.parcel is None
    controller.dock.undo_button.click()  # the accepted parcel
    assert layer.featureCount() == 0
    assert not qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)


def test_mirror_averaging_checkbox_redoes_the_preview(controller) -> None:
    """Ticking the dock's test-time flips box re-encodes the window as four views and redraws
    the outline of the same click; unticking goes back to one view."""
    click(controller, 100.5, 120.5)
    wait_for_preview(controller)
    plain = controller.parcel.geometry
    controller.dock.flip_check.setChecked(True)
    wait_for_preview(controller)
    assert controller.model.flip_tta and len(controller.marks) == 1
    prompt = controller._prompt()
    _, embedding = controller.segmenter.locate(prompt)
    assert embedding is not None and embedding.array.shape[0] == 4
    assert controller.parcel.geometry.isGeosValid()
    assert not controller.parcel.geometry.equals(plain)  # the random model is not symmetric
    controller.dock.flip_check.setChecked(False)
    wait_for_preview(controller)
    _, embedding = controller.segmenter.locate(controller._prompt())
    assert embedding.array.shape[0] == 1
    assert controller.parcel.geometry.equals(plain)


def test_negative_click_box_and_escape(controller) -> None:
    click(controller, 300.5, 300.5)
    wait_for_preview(controller)
    click(controller, 320.5, 310.5, Qt.MouseButton.RightButton)
    assert [mark.inside for mark in controller.marks] == [True, False]
    # decoded in the cached window at once, unless the untrained model's speckle reaches its
    # edge and the runtime widens the window (a task)
    wait_for_preview(controller)

    start, end = screen(controller, 250, 250), screen(controller, 350, 340)
    mouse(controller, QEvent.Type.MouseButtonPress, start, Qt.MouseButton.LeftButton)
    mouse(controller, QEvent.Type.MouseMove, end, Qt.MouseButton.LeftButton)
    assert not controller.tool.band.asGeometry().isEmpty()
    mouse(controller, QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.LeftButton)
    wait_for_preview(controller)
    box = controller.marks[-1]
    # the offscreen canvas is small: a canvas pixel spans several metres
    tolerance = controller.canvas.mapUnitsPerPixel()
    assert box.xMinimum() == pytest.approx(520250, abs=tolerance)
    assert box.yMinimum() == pytest.approx(5350000 - 340, abs=tolerance)
    assert controller.tool.band.asGeometry().isEmpty()

    controller.dock.undo_button.click()
    assert len(controller.marks) == 2
    key(controller, Qt.Key.Key_Escape)
    assert controller.marks == [] and controller.parcel is None


def geopackage(path: Path, epsg: int) -> QgsVectorLayer:
    """An empty polygon GeoPackage layer with a ``name`` field, as a user's own layer."""
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    table = source.CreateLayer("fields", srs, ogr.wkbPolygon)
    table.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    source = None
    return QgsVectorLayer(f"{path}|layername=fields", "fields", "ogr")


def test_existing_geopackage_in_geographic_crs(controller, tmp_path: Path) -> None:
    layer = geopackage(tmp_path / "fields.gpkg", 4326)
    QgsProject.instance().addMapLayer(layer)
    controller.dock.output_combo.setLayer(layer)
    click(controller, 420.5, 80.5)
    wait_for_preview(controller)
    controller.dock.accept_button.click()
    reopened = QgsVectorLayer(f"{tmp_path / 'fields.gpkg'}|layername=fields", "check", "ogr")
    assert reopened.fields().names()[-2:] == ["score", "area_m2"]
    # a single-Polygon layer gets one feature per part of the (noisy) mask
    features = list(reopened.getFeatures())
    assert len(features) == len(controller.history[-1][1]) >= 1
    for feature in features:
        assert feature.geometry().isGeosValid()
        area = utm_area(feature.geometry(), reopened.crs())
        assert feature["area_m2"] == pytest.approx(area, rel=2e-3)
    controller.undo()
    assert reopened.featureCount() == 0
    del reopened


def warnings(qgis_iface: QgisInterface) -> list[str]:
    return qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning)


def test_click_outside_and_read_only_output(controller, qgis_iface: QgisInterface) -> None:
    click(controller, -40, 200)
    assert controller.marks == []
    assert "outside raster layer scene" in warnings(qgis_iface)[-1]

    read_only = QgsVectorLayer(f"Polygon?crs={RASTER_CRS}", "locked", "memory")
    read_only.setReadOnly(True)
    QgsProject.instance().addMapLayer(read_only)
    controller.dock.output_combo.setLayer(read_only)
    click(controller, 100.5, 120.5)
    wait_for_preview(controller)
    key(controller, Qt.Key.Key_Enter)
    assert "output layer locked is read-only" in warnings(qgis_iface)[-1]
    assert read_only.featureCount() == 0 and controller.parcel is not None


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bands", "reads bands 1,2,5 but raster layer scene has 3"),
        ("no onnx files", "lacks encoder.onnx, decoder.onnx"),
        ("no folder", "choose the model folder"),
    ],
)
def test_bad_model(
    controller, qgis_iface: QgisInterface, model_dir: Path, tmp_path: Path, case: str, expected: str
) -> None:
    folder = ""
    if case == "bands":
        folder = str(model_variant(model_dir, tmp_path / "bands", {"bands": [1, 2, 5]}))
    elif case == "no onnx files":
        folder = str(tmp_path)
    controller.dock.model_widget.setFilePath(folder)
    click(controller, 100.5, 120.5)
    wait_for(lambda: not controller.busy())
    assert expected in warnings(qgis_iface)[-1]
    assert controller.parcel is None


def test_geographic_raster_windows_in_metres(
    controller, geographic_scene: Path, model_dir: Path, tmp_path: Path
) -> None:
    """A raster in degrees with a model tuned at 1 m: the window covers 256 m each way."""
    layer = QgsRasterLayer(str(geographic_scene), "scene 4326")
    QgsProject.instance().addMapLayer(layer)
    controller.dock.raster_combo.setLayer(layer)
    controller.dock.model_widget.setFilePath(
        str(model_variant(model_dir, tmp_path / "m", {"ground_resolution_m": 1.0}))
    )
    click(controller, 200.5, 200.5)
    wait_for_preview(controller)
    raster = controller.segmenter.reader
    # the prompt's own window, encoded first (the untrained model's speckle reaches its edges,
    # so the runtime may go on to larger windows)
    window = next(key[1] for key in controller.cache.entries if key[0][0] == raster.cache_id)
    col_off, row_off, width, height, out_h, out_w = window
    size_x, size_y = raster.pixel_size_m(col_off + width / 2, row_off + height / 2)
    assert (out_h, out_w) == (256, 256)
    assert width * size_x == pytest.approx(256, rel=0.02)
    assert height * size_y == pytest.approx(256, rel=0.02)
    # pixels in degrees are narrower east-west than north-south at 48° N
    assert size_x / size_y == pytest.approx(0.67, abs=0.03)
