"""Improving the model from the parcels a user corrected: the checks the plugin makes before
it starts anything, and ``geosam improve`` run as a subprocess.

QGIS's Python has no torch, so the loop itself (tile → train → evaluate → export) is the CLI's
``geosam improve`` (docs/qgis-plugin.md). Its stdout carries ``PROGRESS <0-100> <stage>``
lines, which move the task's progress bar; a cancel sends it SIGTERM, on which it removes
what it had written. The dock (:mod:`improve_action`) and the Processing algorithm
(:mod:`processing.improve_algorithm`) both go through :func:`run_improve`.
"""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsFeatureSource,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsWkbTypes,
)

from .runtime.errors import GeosamError

# The CLI's own minimum (geosam.improve.parcels.MIN_PARCELS), checked here first so that a
# refusal is a message bar line, not a subprocess started to fail.
MIN_PARCELS = 10
REPORT_JSON = "improve_report.json"
PROGRESS_PREFIX = "PROGRESS "
# Lines of the CLI's stderr kept to explain a failure.
ERROR_LINES = 4
# More options of the dock's geosam improve, e.g. "--epochs 8 SOLVER.BASE_LR 1e-5".
OPTIONS_SETTING = "geosam/improve_options"


def dock_options() -> list[str]:
    """The user's extra ``geosam improve`` options for the dock (:data:`OPTIONS_SETTING`)."""
    return shlex.split(QgsSettings().value(OPTIONS_SETTING, "", type=str) or "")


def check_parcels(
    parcels: QgsFeatureSource, raster: QgsRasterLayer, selected_only: bool = False
) -> str | None:
    """Why ``parcels`` cannot improve the model on ``raster`` (too few polygons, some outside
    the raster), or None when they can."""
    if parcels.wkbType() != QgsWkbTypes.Type.Unknown and (
        QgsWkbTypes.geometryType(parcels.wkbType()) != QgsWkbTypes.GeometryType.PolygonGeometry
    ):
        return f"{parcels.sourceName()} is not a polygon layer: choose the parcels' layer"
    request = QgsFeatureRequest()
    if selected_only:
        request.setFilterFids(parcels.selectedFeatureIds())
    transform = QgsCoordinateTransform(parcels.sourceCrs(), raster.crs(), QgsProject.instance())
    extent = QgsGeometry.fromRect(raster.extent())
    count = outside = 0
    for feature in parcels.getFeatures(request):
        geometry = feature.geometry()
        if geometry.isEmpty():
            continue
        count += 1
        geometry.transform(transform)
        outside += not geometry.intersects(extent)
    what = "selected parcels" if selected_only else "parcels"
    if count < MIN_PARCELS:
        return (
            f"{count} {what} in {parcels.sourceName()}: improving the model needs at least "
            f"{MIN_PARCELS} (some to train on, some held aside to score it)"
        )
    if outside:
        return f"{outside} of the {count} {what} lie outside the raster {raster.name()}"
    return None


def improve_command(
    cli: str,
    model: str,
    raster: str,
    parcels: str,
    output: str,
    layer: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``geosam improve`` command line (``extra``: more options and KEY VALUE overrides)."""
    command = [cli, "improve", "--model", model, "--raster", raster, "--parcels", parcels]
    if layer:
        command += ["--layer", layer]
    return [*command, "-o", output, "--quiet", *extra]


def run_improve(
    command: Sequence[str],
    progress: Callable[[float], None],
    canceled: Callable[[], bool],
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any] | None:
    """Run ``command``; its PROGRESS lines go to ``progress``, every other line to ``log``.
    Returns the new model's report, or None when ``canceled()`` became true (the process is
    then sent SIGTERM and waited for). A failure raises GeosamError with the CLI's last lines."""
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []
    # both pipes drained by threads, so that neither fills and stalls the process
    threads = [
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True),
        threading.Thread(target=errors.extend, args=(process.stderr,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    while True:
        if canceled():
            process.terminate()
            process.wait()
            return None
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        if line.startswith(PROGRESS_PREFIX):
            progress(float(line.split()[1]))
        else:
            log(line.rstrip())
    status = process.wait()
    for thread in threads:
        thread.join()
    if status != 0:
        last = [line.strip() for line in errors if line.strip()][-ERROR_LINES:]
        raise GeosamError(f"geosam improve failed (exit status {status}): {' / '.join(last)}")
    return json.loads((Path(command[command.index("-o") + 1]) / REPORT_JSON).read_text())


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Each line of ``stream`` into ``lines``, then None: the end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def new_model_folder(model: str) -> str:
    """A free folder name beside ``model`` for its improved version: ``<name>_improved``,
    then ``<name>_improved_2``, ... (the folder and its ``.training`` sibling both free)."""
    base = Path(model)
    for number in range(1, 1000):
        suffix = "_improved" if number == 1 else f"_improved_{number}"
        candidate = base.parent / f"{base.name}{suffix}"
        if not candidate.exists() and not Path(f"{candidate}.training").exists():
            return str(candidate)
    raise GeosamError(f"no free folder name beside {model} for the improved model")


def describe_report(report: dict[str, Any]) -> str:
    """The before/after lines of a report, for the dialog and the Processing log."""
    parcels = report["parcels"]
    total = parcels["held_aside"] + parcels["trained_on"]
    lines = [f"{parcels['held_aside']} of {total} parcels held aside to score both models:"]
    for kind, before in report["before"].items():
        after = report["after"][kind]["mIoU"]
        change = after - before["mIoU"]
        lines.append(f"{kind} prompts: mIoU {before['mIoU']:.3f} → {after:.3f} ({change:+.3f})")
    box = report["before"].get("box"), report["after"].get("box")
    if None not in box:
        better = box[1]["mIoU"] > box[0]["mIoU"]
        lines.append(
            "The new model outlines the held-aside parcels better."
            if better
            else "The new model is not better on the held-aside parcels:\nkeeping the old one "
            "is the safe choice (more parcels or epochs may help)."
        )
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    return "\n".join(lines)
