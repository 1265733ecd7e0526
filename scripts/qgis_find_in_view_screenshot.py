"""Pictures of the plugin's panel after "Find every parcel in view", and of the Diagnostics
dialog, for docs/qgis-plugin.md.

    xvfb-run -a <QGIS venv>/bin/python scripts/qgis_find_in_view_screenshot.py \
        [--model DIR] [--raster TIF] [--view COL0,ROW0,COL1,ROW1] [-o docs/images]

Runs in QGIS's Python (``make test-qgis``'s venv, which has onnxruntime) on a display (Xvfb,
so that widgets are drawn as on a desktop, fonts included): the map (raster, preview parcels
in orange, accepted ones in red) is rendered by QGIS's map renderer and the panel grabbed as a
widget, side by side in ``find-in-view.png``; the dialog goes to ``diagnostics.png``. Defaults
are the plugin tests' fixtures: the tiny model tuned on another synthetic scene, with its
tuned automatic-mode thresholds, over part of the tests' scene.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFillSymbol,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.gui import QgsMapCanvas, QgsMessageBar
from qgis.PyQt.QtCore import QEvent, QSize, Qt
from qgis.PyQt.QtGui import QColor, QImage, QPainter
from qgis.PyQt.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "build" / "qgis-fixtures"
MAP_PX = 560


class Iface:
    """What the panel uses of QGIS's interface: a map canvas and a message bar."""

    def __init__(self) -> None:
        self.canvas = QgsMapCanvas()
        self.bar = QgsMessageBar()

    def mapCanvas(self) -> QgsMapCanvas:
        return self.canvas

    def messageBar(self) -> QgsMessageBar:
        return self.bar


def wait_for(condition, status, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for the plugin's task: {status.text()}")
        QApplication.processEvents()
        time.sleep(0.02)


def render_map(extent: QgsRectangle, layers: list, crs) -> QImage:
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(MAP_PX, MAP_PX))
    settings.setBackgroundColor(QColor(255, 255, 255))
    image = QImage(settings.outputSize(), QImage.Format.Format_ARGB32)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.renderSynchronously()
    painter.end()
    return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=FIXTURES / "model")
    parser.add_argument("--raster", type=Path, default=FIXTURES / "scene" / "scene.tif")
    parser.add_argument("--view", default="0,0,512,512", help="raster pixels in view")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--plugin-dir", type=Path, default=ROOT / "build" / "qgis_plugin")
    args = parser.parse_args()
    sys.path.insert(0, str(args.plugin_dir))
    app = QgsApplication([], True)
    app.initQgis()
    try:
        shoot(args, args.model)
    finally:
        QgsProject.instance().removeAllMapLayers()
        app.exitQgis()
    return 0


def shoot(args: argparse.Namespace, model: Path) -> None:
    from geosam_qgis.controller import SegmentController
    from geosam_qgis.diagnostics import DiagnosticsDialog, diagnostics_text
    from geosam_qgis.dock import SegmentDock
    from geosam_qgis.find_in_view import FindInView
    from geosam_qgis.map_tool import PromptMapTool

    raster = QgsRasterLayer(str(args.raster), "raster")
    QgsProject.instance().addMapLayer(raster)
    QgsProject.instance().setCrs(raster.crs())
    iface = Iface()
    canvas = iface.mapCanvas()
    canvas.resize(MAP_PX, MAP_PX)
    canvas.show()  # its size, and so the extent's aspect, is set when it is shown
    QApplication.processEvents()
    canvas.setDestinationCrs(raster.crs())
    col0, row0, col1, row1 = (float(v) for v in args.view.split(","))
    t = raster.dataProvider().extent()
    size_x = t.width() / raster.width()
    size_y = t.height() / raster.height()
    view = QgsRectangle(
        t.xMinimum() + col0 * size_x,
        t.yMaximum() - row1 * size_y,
        t.xMinimum() + col1 * size_x,
        t.yMaximum() - row0 * size_y,
    )
    canvas.setExtent(view)
    dock = SegmentDock()
    controller = SegmentController(iface, dock, PromptMapTool(canvas))
    dock.raster_combo.setLayer(raster)
    dock.model_widget.setFilePath(str(model))
    finder = FindInView(controller)
    finder.find()
    wait_for(lambda: finder.preview is not None, dock.status_label)
    preview = finder.preview
    if preview.featureCount() < 2:
        raise SystemExit("found fewer than 2 parcels in view: give another --view")
    largest = max(preview.getFeatures(), key=lambda feature: feature.geometry().area())
    preview.selectByIds([largest.id()])
    finder.accept(selected_only=True)
    preview.removeSelection()
    output = dock.output_layer()
    preview.renderer().setSymbol(
        QgsFillSymbol.createSimple(
            {"color": "255,152,0,70", "outline_color": "255,152,0", "outline_width": "0.6"}
        )
    )
    output.renderer().setSymbol(
        QgsFillSymbol.createSimple(
            {"color": "229,57,53,90", "outline_color": "229,57,53", "outline_width": "0.8"}
        )
    )
    picture = render_map(canvas.extent(), [output, preview, raster], raster.crs())
    dock.resize(420, MAP_PX)
    dock.show()
    QApplication.processEvents()
    panel = dock.grab().toImage()
    combined = QImage(
        picture.width() + panel.width(),
        max(picture.height(), panel.height()),
        QImage.Format.Format_ARGB32,
    )
    combined.fill(QColor(255, 255, 255))
    painter = QPainter(combined)
    painter.drawImage(0, 0, picture)
    painter.drawImage(picture.width(), 0, panel)
    painter.end()
    args.output.mkdir(parents=True, exist_ok=True)
    # 256 colours (dithered) keep the picture a third of its size, for the docs
    indexed = combined.convertToFormat(
        QImage.Format.Format_Indexed8, Qt.ImageConversionFlag.DiffuseDither
    )
    indexed.save(str(args.output / "find-in-view.png"))

    cache = controller.cache
    dialog = DiagnosticsDialog(
        diagnostics_text(str(model), (len(cache), cache.nbytes, cache.max_bytes))
    )
    dialog.show()
    QApplication.processEvents()
    dialog.grab().save(str(args.output / "diagnostics.png"))
    print(f"wrote {args.output / 'find-in-view.png'} and {args.output / 'diagnostics.png'}")
    finder.unload()
    controller.unload()
    # On a display (xcb) windows left to Python's teardown outlive QGIS and crash it at exit.
    for widget in (dialog, dock, canvas):
        widget.close()
        widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


if __name__ == "__main__":
    sys.exit(main())
