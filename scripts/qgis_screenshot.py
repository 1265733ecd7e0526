"""Screenshot of real QGIS with the geosam plugin: the dock, a kept parcel and a live preview.

    python3 scripts/qgis_screenshot.py [--model DIR] [--raster TIF] [-o docs/images/qgis-plugin.png]
        [--clicks COL,ROW COL,ROW ...] [--flip-tta]

Run with any Python, it starts QGIS (the ``qgis`` program, under ``xvfb-run`` when there is no
display) with this file as its startup code; inside QGIS it loads the plugin built by
scripts/build_plugin.py, opens the raster, clicks twice through the plugin's map tool signals
(each parcel accepted but the last, which stays a preview; ``--clicks`` in raster pixels, any
number), with ``--flip-tta`` the dock's "Average over mirror images" ticked, waits for the
encoder tasks and grabs the main window.
Defaults are the plugin tests' fixtures (``make test-qgis`` builds them): an untrained tiny
model, so the outlines are the shapes of random weights; give a trained model for a real one.
onnxruntime is taken from the QGIS test venv (``--site-packages``), as QGIS's Python lacks it.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = "GEOSAM_SCREENSHOT"
# Scene pixels (col, row) of the two clicks: the first is accepted, the second previewed.
CLICKS = ((202.5, 125.5), (255.5, 297.5))
# Raster pixels shown around the clicks.
VIEW_MARGIN = 200.0


def launch(argv: list[str] | None = None) -> int:
    """Start QGIS on this script, with the settings in the environment."""
    root = Path(__file__).resolve().parents[1]  # QGIS runs this file without __file__
    fixtures = root / "build" / "qgis-fixtures"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=fixtures / "model")
    parser.add_argument("--raster", type=Path, default=fixtures / "scene" / "scene.tif")
    parser.add_argument("-o", "--output", type=Path, default=root / "docs/images/qgis-plugin.png")
    parser.add_argument("--plugin-dir", type=Path, default=root / "build" / "qgis_plugin")
    parser.add_argument(
        "--clicks",
        nargs="+",
        default=[f"{col},{row}" for col, row in CLICKS],
        help="raster pixels COL,ROW to click, in order",
    )
    parser.add_argument("--flip-tta", action="store_true", help="tick test-time flips")
    venvs = sorted(glob.glob(os.path.expanduser("~/.cache/geosam/qgis-venv-*")))
    default_site = glob.glob(f"{venvs[-1]}/lib/python3*/site-packages") if venvs else []
    parser.add_argument("--site-packages", default=(default_site or [""])[0])
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    qgis = shutil.which("qgis")
    if qgis is None:
        print("the qgis program is not on PATH (apt-get install qgis)", file=sys.stderr)
        return 1
    env = dict(os.environ)
    # QGIS's embedded Python finds its home through PATH: a pyenv or venv python3 found first
    # would hide QGIS's own packages.
    env["PATH"] = os.pathsep.join([str(Path(qgis).parent), env.get("PATH", "")])
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            f"{ENV}_MODEL": str(args.model.resolve()),
            f"{ENV}_RASTER": str(args.raster.resolve()),
            f"{ENV}_OUTPUT": str(args.output.resolve()),
            f"{ENV}_CLICKS": " ".join(args.clicks),
            f"{ENV}_FLIP_TTA": "1" if args.flip_tta else "",
            f"{ENV}_PATH": os.pathsep.join(
                p for p in (str(args.plugin_dir.resolve()), args.site_packages) if p
            ),
        }
    )
    with tempfile.TemporaryDirectory() as profiles:
        command = [
            qgis,
            "--nologo",
            "--noversioncheck",
            "--noplugins",
            "--profiles-path",
            profiles,
            "--code",
            str(Path(__file__).resolve()),
        ]
        if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
            command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *command]
        subprocess.run(command, env=env, check=False, timeout=300)
    if not args.output.is_file():
        print(f"QGIS did not write {args.output}", file=sys.stderr)
        return 1
    print(f"screenshot: {args.output}")
    return 0


def capture() -> None:
    """Inside QGIS: plugin, raster, clicks, then grab the window once the preview is drawn."""
    # The plugin build and onnxruntime; not through PYTHONPATH, which hides QGIS's own path.
    sys.path[:0] = os.environ[f"{ENV}_PATH"].split(os.pathsep)
    import geosam_qgis
    from qgis.core import QgsCoordinateTransform, QgsPointXY, QgsProject, QgsRectangle
    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import iface

    plugin = geosam_qgis.classFactory(iface)
    plugin.initGui()
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1280, 800)
    layer = iface.addRasterLayer(os.environ[f"{ENV}_RASTER"], "scene")
    plugin.action.setChecked(True)
    dock, controller = plugin.dock, plugin.controller
    dock.setMinimumWidth(330)
    dock.raster_combo.setLayer(layer)
    dock.model_widget.setFilePath(os.environ[f"{ENV}_MODEL"])
    dock.flip_check.setChecked(bool(os.environ[f"{ENV}_FLIP_TTA"]))
    canvas = iface.mapCanvas()
    extent = layer.extent()
    clicks = [tuple(map(float, c.split(","))) for c in os.environ[f"{ENV}_CLICKS"].split()]
    pending = list(clicks)
    timer = QTimer()

    def to_map(col: float, row: float) -> QgsPointXY:
        return QgsPointXY(
            extent.xMinimum() + col * layer.rasterUnitsPerPixelX(),
            extent.yMaximum() - row * layer.rasterUnitsPerPixelY(),
        )

    def click(col: float, row: float) -> None:
        to_canvas = QgsCoordinateTransform(
            layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance()
        )
        controller.add_click(to_canvas.transform(to_map(col, row)), True)

    def step() -> None:
        if controller.busy():
            return
        if controller.parcel is not None and pending:
            controller.accept()  # the first parcel is kept, the last one stays a preview
        if pending:
            click(*pending.pop(0))
            return
        timer.stop()
        canvas.refreshAllLayers()
        QTimer.singleShot(3000, save)

    def save() -> None:
        window.grab().save(os.environ[f"{ENV}_OUTPUT"])
        QgsProject.instance().setDirty(False)
        os._exit(0)  # QGIS's own exit path asks questions nobody is there to answer

    timer.timeout.connect(step)
    # the clicks and VIEW_MARGIN pixels around them (all of a small raster), so parcels are
    # large enough on screen to judge their outlines
    cols, rows = zip(*clicks, strict=True)
    pixel = layer.rasterUnitsPerPixelX()
    around = QgsRectangle(to_map(min(cols), max(rows)), to_map(max(cols), min(rows)))
    view = around.buffered(VIEW_MARGIN * pixel).intersect(extent).buffered(60 * pixel)
    QTimer.singleShot(2000, lambda: (canvas.setExtent(view), timer.start(300)))
    capture.timer = timer  # keep it alive after this function returns


def inside_qgis() -> bool:
    """Whether this runs as QGIS's startup code (QGIS's Python without the GUI has no iface)."""
    try:
        from qgis.utils import iface
    except ImportError:
        return False
    return iface is not None


if inside_qgis():
    capture()
elif __name__ == "__main__":
    sys.exit(launch())
