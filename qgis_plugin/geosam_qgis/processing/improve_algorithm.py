"""Processing algorithm "Improve model from parcels": ``geosam improve`` as a QGIS tool, so
the improve loop runs in batch mode and in the graphical modeler too.

The parcels go to the CLI as a file it can read (Processing writes a GeoPackage when the
source is a memory layer or a selection); the CLI runs as a subprocess (QGIS's Python has no
torch), its progress lines drive the algorithm's progress bar, and Cancel stops it, leaving
no new model folder.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtGui import QIcon

from ..cli_locator import find_geosam_cli, missing_cli_message
from ..improve import REPORT_JSON, check_parcels, describe_report, improve_command, run_improve
from ..runtime.errors import GeosamError
from .segment_algorithm import ICON


class ImproveModelAlgorithm(QgsProcessingAlgorithm):
    """Raster + corrected parcels + model folder → a new model folder and its report."""

    RASTER = "RASTER"
    PARCELS = "PARCELS"
    MODEL = "MODEL"
    OUTPUT = "OUTPUT"
    HOLDOUT = "HOLDOUT"
    SEED = "SEED"
    EPOCHS = "EPOCHS"
    CALIBRATE = "CALIBRATE"
    OPTIONS = "OPTIONS"
    REPORT = "REPORT"

    def name(self) -> str:
        return "improve_model"

    def displayName(self) -> str:
        return "Improve model from parcels"

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def shortHelpString(self) -> str:
        return (
            "Trains the model further on parcels you corrected (at least 10, on the raster): "
            "a seeded share is held aside, the model's training run continues on the rest, "
            "and the old and the new model are scored on the held-aside parcels (box and "
            "point mIoU, in improve_report.json/.md in the new folder). Runs the geosam "
            "command line (plugin setting geosam/cli_path, GEOSAM_CLI, or PATH)."
        )

    def createInstance(self) -> ImproveModelAlgorithm:
        return ImproveModelAlgorithm()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.RASTER, "Raster"))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.PARCELS, "Corrected parcels", [QgsProcessing.SourceType.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model folder (geosam export-onnx)",
                behavior=QgsProcessingParameterFile.Behavior.Folder,
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "New model folder"))
        advanced = [
            QgsProcessingParameterNumber(
                self.HOLDOUT, "Share of parcels held aside",
                type=QgsProcessingParameterNumber.Type.Double, defaultValue=0.2, minValue=0.01,
                maxValue=0.99,
            ),
            QgsProcessingParameterNumber(
                self.SEED, "Seed of the held-aside choice", defaultValue=0, minValue=0
            ),
            QgsProcessingParameterNumber(
                self.EPOCHS, "Training epochs", defaultValue=4, minValue=1
            ),
            QgsProcessingParameterBoolean(
                self.CALIBRATE, "Tune automatic mode's thresholds on the held-aside parcels",
                defaultValue=True,
            ),
            QgsProcessingParameterString(
                self.OPTIONS, "Training overrides (KEY VALUE ..., e.g. SOLVER.BASE_LR 1e-5)",
                defaultValue="", optional=True,
            ),
        ]  # fmt: skip
        for parameter in advanced:
            parameter.setFlags(
                parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced
            )
            self.addParameter(parameter)
        self.addOutput(QgsProcessingOutputFile(self.REPORT, "Before/after report"))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        cli = find_geosam_cli()
        if cli is None:
            raise QgsProcessingException(missing_cli_message())
        raster = self.parameterAsRasterLayer(parameters, self.RASTER, context)
        source = self.parameterAsSource(parameters, self.PARCELS, context)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        output = self.parameterAsString(parameters, self.OUTPUT, context)
        problem = check_parcels(source, raster)
        if problem is not None:
            raise QgsProcessingException(problem)
        parcels = self.parameterAsCompatibleSourceLayerPath(
            parameters, self.PARCELS, context, ["gpkg", "shp"], "gpkg", feedback
        )
        path, _, layer = parcels.partition("|layername=")
        extra = [
            "--holdout", str(self.parameterAsDouble(parameters, self.HOLDOUT, context)),
            "--seed", str(self.parameterAsInt(parameters, self.SEED, context)),
            "--epochs", str(self.parameterAsInt(parameters, self.EPOCHS, context)),
        ]  # fmt: skip
        if not self.parameterAsBool(parameters, self.CALIBRATE, context):
            extra.append("--no-calibration")
        extra += shlex.split(self.parameterAsString(parameters, self.OPTIONS, context) or "")
        # Processing makes OUTPUT's folder in advance; improve publishes the model there whole
        command = improve_command(
            cli, model, raster.source(), path, output, layer or None, [*extra, "--overwrite"]
        )
        feedback.pushCommandInfo(" ".join(command))
        try:
            report = run_improve(
                command, feedback.setProgress, feedback.isCanceled, feedback.pushConsoleInfo
            )
        except GeosamError as error:
            raise QgsProcessingException(str(error)) from None
        if report is None:
            return {}
        feedback.pushInfo(describe_report(report))
        return {self.OUTPUT: output, self.REPORT: str(Path(output) / REPORT_JSON)}
