"""The dock's "Improve the model" button: checks, then ``geosam improve`` in a QgsTask, then
the before/after dialog.

Nothing starts when a check fails (no raster, no model, no CLI, too few parcels, parcels
outside the raster): one line in the message bar. The parcels (the chosen layer or the output
layer, or their selection) are written to a GeoPackage for the CLI; the new model goes into a
free folder beside the old one. Cancelling the task ends the CLI, which removes what it wrote;
the old model stays loaded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransformContext,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.gui import QgisInterface

from .cli_locator import find_geosam_cli, missing_cli_message
from .dock import SegmentDock
from .improve import (
    check_parcels,
    dock_options,
    improve_command,
    new_model_folder,
    run_improve,
)
from .improve_dialog import ImproveResultDialog
from .runtime.errors import GeosamError
from .tasks import BackgroundTask

PARCELS_LAYER = "parcels"


class ImproveAction:
    """Connects ``dock.improve_button``; ``task`` is the running improvement, if any."""

    def __init__(self, iface: QgisInterface, dock: SegmentDock) -> None:
        self.iface = iface
        self.dock = dock
        self.task: BackgroundTask | None = None
        self.dialog: ImproveResultDialog | None = None
        dock.improve_button.clicked.connect(self.start)

    def start(self) -> BackgroundTask | None:
        """Check the inputs and start the task (returned), or say why not (None)."""
        try:
            command = self._command()
        except GeosamError as error:
            self.message(str(error))
            return None
        output = command[command.index("-o") + 1]
        self.task = BackgroundTask(
            "geosam: improving the model",
            lambda progress: run_improve(command, progress, self._canceled),
            lambda report: self.finished(report, output),
            self.message,
        )
        self.dock.improve_button.setEnabled(False)
        self.task.taskCompleted.connect(lambda: self.dock.improve_button.setEnabled(True))
        self.task.taskTerminated.connect(lambda: self.dock.improve_button.setEnabled(True))
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def _canceled(self) -> bool:
        return self.task is not None and self.task.isCanceled()

    def _command(self) -> list[str]:
        raster, model = self.dock.raster_layer(), self.dock.model_folder()
        parcels = self.dock.improve_parcels()
        if raster is None:
            raise GeosamError("choose the raster the parcels lie on")
        if not model:
            raise GeosamError("choose the model folder to improve")
        if parcels is None:
            raise GeosamError("choose the layer of corrected parcels (or an output layer)")
        selected = self.dock.improve_selected_check.isChecked()
        problem = check_parcels(parcels, raster, selected)
        if problem is not None:
            raise GeosamError(problem)
        cli = find_geosam_cli()
        if cli is None:
            raise GeosamError(missing_cli_message())
        path = write_parcels(parcels, selected)
        output = new_model_folder(model)
        return improve_command(
            cli, model, raster.source(), path, output, PARCELS_LAYER, dock_options()
        )

    def finished(self, report: dict[str, Any] | None, output: str) -> None:
        """The before/after dialog; "Use the new model" switches the dock to it."""
        if report is None:
            return
        self.dialog = ImproveResultDialog(report, self.iface.mainWindow())
        self.dialog.accepted.connect(lambda: self.dock.model_widget.setFilePath(output))
        self.dialog.open()

    def message(self, text: str) -> None:
        self.iface.messageBar().pushMessage(
            "geosam", text, level=Qgis.MessageLevel.Warning, duration=8
        )


def write_parcels(layer: QgsVectorLayer, selected_only: bool) -> str:
    """``layer`` (or its selection) as layer "parcels" of a new GeoPackage in a temporary
    folder; its path."""
    path = str(Path(tempfile.mkdtemp(prefix="geosam-improve-")) / "parcels.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = PARCELS_LAYER
    options.onlySelectedFeatures = selected_only
    context = QgsProject.instance().transformContext() or QgsCoordinateTransformContext()
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context, options)
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise GeosamError(f"cannot write the parcels of {layer.name()} for geosam: {message}")
    return path
