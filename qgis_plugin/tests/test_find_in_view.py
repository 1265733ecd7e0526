"""Find every parcel in view: automatic mode over the raster's part inside the canvas extent,
into a preview layer whose parcels are accepted (all or the selected ones) or discarded.

The model is the tiny untrained one with thresholds "tuned" open in its manifest (its masks
are speckle that SAM's default filters drop), so the run must take the model's thresholds to
find anything, and the mask threshold of scripts/parity_fixture.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RASTER_CRS, model_variant, wait_for
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.gui import QgisInterface

UTM = QgsCoordinateReferenceSystem(RASTER_CRS)
# Scene pixels 64-320 (x) and 64-320 (y): x = 520000 + col, y = 5350000 - row.
VIEW = QgsRectangle(520064, 5349680, 520320, 5349936)
OPEN_THRESHOLDS = {"pred_iou_thresh": 0.0, "stability_thresh": 0.0}
# As scripts/parity_fixture.py: the untrained logits hover around 0, and at 0.1 the masks are
# parcel-sized blobs rather than whole windows.
MASK_THRESHOLD = 0.1


@pytest.fixture
def finder(
    qgis_iface: QgisInterface,
    raster_layer: QgsRasterLayer,
    model_dir: Path,
    tmp_path: Path,
    project: QgsProject,
) -> Iterator:
    from geosam_qgis.controller import SegmentController
    from geosam_qgis.dock import SegmentDock
    from geosam_qgis.find_in_view import FindInView
    from geosam_qgis.map_tool import PromptMapTool

    tuned = model_variant(
        model_dir,
        tmp_path / "tuned",
        {"auto_thresholds": OPEN_THRESHOLDS, "mask_threshold": MASK_THRESHOLD},
    )
    project.setCrs(UTM)
    canvas = qgis_iface.mapCanvas()
    canvas.resize(400, 400)
    canvas.setDestinationCrs(UTM)
    canvas.setExtent(VIEW)
    dock = SegmentDock()
    controller = SegmentController(qgis_iface, dock, PromptMapTool(canvas))
    dock.raster_combo.setLayer(raster_layer)
    dock.model_widget.setFilePath(str(tuned))
    qgis_iface.messageBar().clear_messages()
    finder = FindInView(controller)
    yield finder
    finder.unload()
    controller.unload()
    dock.deleteLater()


def test_parcels_only_inside_the_view_then_accept_selected_and_all(finder) -> None:
    finder.find()
    wait_for(lambda: finder.preview is not None, timeout=120)
    preview, dock = finder.preview, finder.dock
    assert preview.crs() == UTM and preview.featureCount() >= 2
    assert "tuned on its val split" in dock.status_label.text()
    extent = finder.controller.canvas.extent()
    assert extent.contains(VIEW) or VIEW.contains(extent)
    for feature in preview.getFeatures():
        assert feature.geometry().isGeosValid()
        assert extent.contains(feature.geometry().boundingBox())
    assert all(button.isEnabled() for button in dock.preview_buttons())

    ids = sorted(feature.id() for feature in preview.getFeatures())
    name = preview.name()
    chosen = ids[:1]
    areas = sorted(preview.getFeature(i).geometry().area() for i in chosen)
    preview.selectByIds(chosen)
    finder.accept(selected_only=True)
    output = dock.output_layer()
    assert output is not None and output.featureCount() == 1
    assert sorted(f.geometry().area() for f in output.getFeatures()) == pytest.approx(areas)
    assert sorted(feature.id() for feature in preview.getFeatures()) == ids[1:]

    finder.accept(selected_only=False)
    assert output.featureCount() == len(ids)
    assert finder.preview is None and QgsProject.instance().mapLayersByName(name) == []
    assert not any(button.isEnabled() for button in dock.preview_buttons())
    finder.controller.undo()  # the last batch (Accept all) goes back out
    assert output.featureCount() == 1


def test_the_fine_pass_from_the_panel(finder) -> None:
    """With "Also small parcels" ticked, find in view runs the fine pass too and says so."""
    finder.dock.fine_check.setChecked(True)
    finder.find()
    wait_for(lambda: finder.preview is not None, timeout=120)
    assert "fine pass: predicted IoU 0.1" in finder.dock.status_label.text()
    extent = finder.controller.canvas.extent()
    assert finder.preview.featureCount() >= 2
    assert all(extent.contains(f.geometry().boundingBox()) for f in finder.preview.getFeatures())


def test_discard_and_a_view_off_the_raster(finder) -> None:
    finder.find()
    wait_for(lambda: finder.preview is not None, timeout=120)
    name = finder.preview.name()
    finder.discard()
    assert finder.preview is None and QgsProject.instance().mapLayersByName(name) == []
    assert finder.dock.output_layer() is None

    finder.controller.canvas.setExtent(QgsRectangle(530000, 5340000, 530100, 5340100))
    finder.find()
    assert "the map view shows no part of raster layer scene" in (finder.dock.status_label.text())
    assert finder.task is not None and not finder.busy() and finder.preview is None


def test_view_window_reads_the_raster_pixels_inside(raster_layer: QgsRasterLayer) -> None:
    from geosam_qgis.find_in_view import view_window
    from geosam_qgis.raster_reader import RasterWindows
    from geosam_qgis.runtime.windows import Window

    raster = RasterWindows.from_layer(raster_layer, {})
    view = view_window(raster, QgsRectangle(520064.4, 5349680, 520320, 5349935.5))
    assert (view.col_off, view.row_off, view.width, view.height) == (65, 65, 255, 255)
    assert view.geotransform == (520065.0, 1.0, 0.0, 5349935.0, 0.0, -1.0)
    assert view.bounds() == QgsRectangle(520065, 5349680, 520320, 5349935)
    window = Window(0, 0, 8, 8, 8, 8)
    assert (view.read(window) == raster.read(Window(65, 65, 8, 8, 8, 8))).all()
    assert view_window(raster, QgsRectangle(510000, 5340000, 510100, 5340100)) is None


def test_cancelling_the_task_cancels_its_feedback() -> None:
    from geosam_qgis.tasks import FeedbackTask

    task = FeedbackTask("geosam: test", lambda feedback: None, print, print)
    assert isinstance(task.feedback, QgsFeedback) and not task.feedback.isCanceled()
    task.cancel()
    assert task.feedback.isCanceled()
