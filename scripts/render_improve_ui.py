"""Picture of the plugin's improve loop: the dock with "Improve the model" and the
before/after dialog, grabbed side by side on a display (Xvfb: widgets drawn as on a desktop).

    xvfb-run -a QGIS_VENV/bin/python scripts/render_improve_ui.py \
        --report NEW_MODEL/improve_report.json [-o docs/images/qgis-improve.png]

Run with the QGIS test venv's Python (the dock needs onnxruntime's runtime modules) after
scripts/build_plugin.py; the report is one that ``geosam improve`` wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--raster", type=Path, default=ROOT / "build/qgis-fixtures/scene/scene.tif")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/images/qgis-improve.png")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "build" / "qgis_plugin"))

    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QEvent
    from qgis.PyQt.QtGui import QColor, QPainter, QPixmap
    from qgis.PyQt.QtWidgets import QApplication

    app = QgsApplication([], False)
    app.initQgis()
    from geosam_qgis.dock import SegmentDock
    from geosam_qgis.improve_dialog import ImproveResultDialog

    report = json.loads(args.report.read_text())
    raster = QgsRasterLayer(str(args.raster), args.raster.stem[:24])
    QgsProject.instance().addMapLayer(raster)
    dock = SegmentDock()
    dock.raster_combo.setLayer(raster)
    dock.model_widget.setFilePath(report["old_model"])
    dock.resize(420, 520)
    dialog = ImproveResultDialog(report)
    for widget in (dock, dialog):
        widget.show()
    app.processEvents()
    dialog.resize(dialog.sizeHint())  # adjustSize caps at 2/3 of the (offscreen) screen
    app.processEvents()
    shots = [dock.grab(), dialog.grab()]
    gap = 16
    width = sum(shot.width() for shot in shots) + gap * (len(shots) + 1)
    height = max(shot.height() for shot in shots) + 2 * gap
    canvas = QPixmap(width, height)
    canvas.fill(QColor("white"))
    painter = QPainter(canvas)
    x = gap
    for shot in shots:
        painter.drawPixmap(x, gap, shot)
        x += shot.width() + gap
    painter.end()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(str(args.output))
    print(args.output)
    # On a display (xcb) windows left to Python's teardown outlive QGIS and crash it at exit.
    for widget in (dock, dialog):
        widget.close()
        widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    del dock, dialog, raster
    QgsProject.instance().removeAllMapLayers()
    app.exitQgis()


if __name__ == "__main__":
    main()
