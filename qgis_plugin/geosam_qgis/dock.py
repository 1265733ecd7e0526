"""The dock: which raster, which model, where parcels go, the Accept/Undo/Clear buttons,
"Find every parcel in view" with its preview's Accept all/Accept selected/Discard, and
Diagnostics.

Widgets only; :mod:`controller` reacts to them. The model folder's manifest is shown as soon
as the folder is chosen (read as JSON, without loading the ONNX files), so a user sees which
model type and ground resolution they picked before the first click.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayerProxyModel, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .runtime.auto import GRID, tuned_thresholds
from .runtime.errors import GeosamError

NEW_LAYER_TEXT = "New temporary layer"
OUTPUT_LAYER_TEXT = "The output layer"
HELP = (
    "Left click: inside the parcel · right click: outside · drag: box around it · "
    "Enter or Accept: keep the outline · Esc or Clear: start again · Undo: last prompt, "
    "or the last parcel kept"
)


def describe_manifest(manifest: Mapping[str, Any]) -> str:
    """One line: model type, input size, ground resolution and automatic-mode thresholds
    and point grid (tuned on the model's val split, or SAM's) of a model manifest."""
    resolution = manifest.get("ground_resolution_m")
    ground = "the raster's own" if resolution is None else f"{float(resolution):g} m/px"
    try:
        tuned = tuned_thresholds(manifest, "the manifest")
    except GeosamError as error:
        tuned, thresholds = None, str(error)
    else:
        thresholds = "no tuned thresholds (SAM's)"
    if tuned is not None:
        thresholds = (
            f"thresholds tuned on its val split: predicted IoU {tuned['pred_iou_thresh']:g}, "
            f"stability {tuned['stability_thresh']:g}"
        )
        if GRID in tuned:
            thresholds += f", {tuned[GRID]} x {tuned[GRID]} points"
    return (
        f"model {manifest.get('model_type', 'unknown')} · input {manifest.get('input_size')} px"
        f" · ground resolution {ground} · {thresholds}"
    )


def describe_model_folder(folder: str) -> str:
    """What the dock shows for a chosen folder, before the model is loaded."""
    if not folder:
        return "Choose the folder geosam export-onnx wrote."
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return (
            f"{path.name} missing in {folder}: the settings are read from the ONNX files "
            "(SAM's defaults for a plain SAM export) when the model loads."
        )
    try:
        return describe_manifest(json.loads(path.read_text()))
    except (OSError, ValueError, AttributeError) as error:
        return f"{path} is unreadable: {error}"


class SegmentDock(QgsDockWidget):
    """The geosam panel; ``tool_button`` toggles the map tool."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("geosam: segment parcels", parent)
        self.setObjectName("GeosamSegmentDock")
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow("Raster", self.raster_combo)
        self.model_widget = QgsFileWidget()
        self.model_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.model_widget.setDialogTitle("Model folder from geosam export-onnx")
        form.addRow("Model folder", self.model_widget)
        self.model_label = QLabel(describe_model_folder(""))
        self.model_label.setWordWrap(True)
        form.addRow("", self.model_label)
        self.output_combo = QgsMapLayerComboBox()
        self.output_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.output_combo.setAllowEmptyLayer(True, NEW_LAYER_TEXT)
        self.output_combo.setLayer(None)
        form.addRow("Output layer", self.output_combo)
        layout.addLayout(form)
        self.flip_check = QCheckBox("Average over mirror images (steadier edges, 4x slower)")
        self.flip_check.setToolTip(
            "Test-time flips: each window is encoded as it is and mirrored three ways, and "
            "every outline averages the four predictions"
        )
        layout.addWidget(self.flip_check)

        self.tool_button = QPushButton("Segment on the map")
        self.tool_button.setCheckable(True)
        layout.addWidget(self.tool_button)
        buttons = QHBoxLayout()
        self.accept_button = QPushButton("Accept")
        self.undo_button = QPushButton("Undo")
        self.clear_button = QPushButton("Clear")
        for button in (self.accept_button, self.undo_button, self.clear_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self._add_find_in_view(layout)
        self._add_diagnostics(layout)
        self.status_label = QLabel(HELP)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self._add_improve_section(layout)
        layout.addStretch(1)
        self.setWidget(body)
        self.model_widget.fileChanged.connect(
            lambda folder: self.model_label.setText(describe_model_folder(folder))
        )

    def _add_find_in_view(self, layout: QVBoxLayout) -> None:
        """ "Find every parcel in view" and the buttons that settle its preview layer
        (:mod:`.find_in_view`); these stay disabled while there is no preview."""
        self.find_view_button = QPushButton("Find every parcel in view")
        self.find_view_button.setToolTip(
            "Automatic mode over the part of the raster the map shows, with the model's tuned "
            "thresholds: the parcels appear in a preview layer to accept or discard"
        )
        layout.addWidget(self.find_view_button)
        self.fine_check = QCheckBox("Also small parcels (a second look at twice the resolution)")
        self.fine_check.setToolTip(
            "The fine pass: where the first pass found no parcel, look again through windows "
            "of half the side read at twice the resolution, for parcels too small for the "
            "model at its own scale; about 2.5x the time"
        )
        layout.addWidget(self.fine_check)
        row = QHBoxLayout()
        self.accept_all_button = QPushButton("Accept all")
        self.accept_selected_button = QPushButton("Accept selected")
        self.discard_button = QPushButton("Discard")
        for button in self.preview_buttons():
            button.setEnabled(False)
            row.addWidget(button)
        layout.addLayout(row)

    def preview_buttons(self) -> tuple[QPushButton, QPushButton, QPushButton]:
        return self.accept_all_button, self.accept_selected_button, self.discard_button

    def _add_diagnostics(self, layout: QVBoxLayout) -> None:
        """The Diagnostics button (:mod:`.diagnostics`), for bug reports."""
        self.diagnostics_button = QPushButton("Diagnostics")
        self.diagnostics_button.setToolTip(
            "Versions, execution providers, the model's manifest and the geosam CLI found, "
            "with a Copy button for a bug report"
        )
        layout.addWidget(self.diagnostics_button)

    def _add_improve_section(self, layout: QVBoxLayout) -> None:
        """The "Improve the model" section: which parcels the model learns from
        (:mod:`improve_action` reacts to the button)."""
        box = QGroupBox("Improve the model from corrected parcels")
        form = QFormLayout(box)
        self.improve_parcels_combo = QgsMapLayerComboBox()
        self.improve_parcels_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.improve_parcels_combo.setAllowEmptyLayer(True, OUTPUT_LAYER_TEXT)
        self.improve_parcels_combo.setLayer(None)
        form.addRow("Parcels", self.improve_parcels_combo)
        self.improve_selected_check = QCheckBox("Selected parcels only")
        form.addRow("", self.improve_selected_check)
        self.improve_button = QPushButton("Improve the model")
        self.improve_button.setToolTip(
            "Train the model further on these parcels (at least 10) with the geosam command "
            "line, score old and new on a held-aside share, then choose which to keep"
        )
        form.addRow(self.improve_button)
        layout.addWidget(box)

    def improve_parcels(self) -> QgsVectorLayer | None:
        """The parcels to improve the model from: the chosen layer, else the output layer."""
        return self.improve_parcels_combo.currentLayer() or self.output_layer()

    def raster_layer(self) -> QgsRasterLayer | None:
        return self.raster_combo.currentLayer()

    def model_folder(self) -> str:
        return self.model_widget.filePath().strip()

    def flip_tta(self) -> bool:
        return self.flip_check.isChecked()

    def output_layer(self) -> QgsVectorLayer | None:
        """The chosen polygon layer; None means a new temporary layer."""
        return self.output_combo.currentLayer()
