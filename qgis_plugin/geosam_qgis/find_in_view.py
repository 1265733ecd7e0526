"""Find every parcel in view: automatic mode over the part of the raster the map shows.

A user looking at a few fields wants those outlined, not a whole scene's worth of windows:
the canvas extent, in the raster's CRS, picks the raster pixels wholly inside it
(:func:`view_window`), and the plugin's automatic mode (:func:`.auto_mode.segment_all`, the
runtime's AutoSegmenter, as the Processing algorithm runs it) tiles only that part, with the
thresholds tuned for the model (:func:`.runtime.auto.choose_thresholds`). The part is a reader
of its own (:class:`ViewWindow`) over the layer's reader, so its pixels are stretched as the
whole raster's are (a percentile stretch of the view alone would change with every pan).

The parcels go to a preview layer, not to the output layer: automatic mode finds fields the
user does not want too, so they accept all of them, the ones they selected, or discard them;
accepted parcels go through :func:`.output_layer.add_parcel` like clicked ones, and the
panel's Undo takes back the last batch.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeedback,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject

from .auto_mode import AutoParcel, segment_all
from .controller import SegmentController
from .output_layer import add_parcel
from .polygonize import polygonal
from .raster_reader import RasterWindows
from .runtime.auto import DEFAULT_MIN_AREA_M2, AutoParams, choose_thresholds
from .runtime.errors import GeosamError
from .runtime.windows import GeoTransform, Window, map_to_pixel, pixel_to_map
from .tasks import FeedbackTask, running

PREVIEW_LAYER_NAME = "geosam parcels in view (preview)"
PREVIEW_FIELDS = ("score", "stability")
# Pixel edges within this fraction of a pixel of the extent count as inside it (float noise
# of the CRS transform must not drop a whole row of pixels).
EDGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ViewWindow:
    """The pixels ``col_off``, ``row_off``, ``width`` x ``height`` of ``raster``, read as a
    raster of their own (a :class:`~.runtime.reader.RasterReader`)."""

    raster: RasterWindows
    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def geotransform(self) -> GeoTransform:
        x, y = pixel_to_map(self.raster.geotransform, (self.col_off, self.row_off))
        t = self.raster.geotransform
        return (float(x), t[1], t[2], float(y), t[4], t[5])

    @property
    def description(self) -> str:
        return f"the part of {self.raster.description} in the map view"

    @property
    def cache_id(self) -> tuple:
        return self.raster.cache_id, self.col_off, self.row_off

    def bounds(self) -> QgsRectangle:
        """The window's outline in the raster's CRS."""
        left, top = self.col_off, self.row_off
        corners = [(left, top), (left + self.width, top + self.height)]
        (x0, y0), (x1, y1) = pixel_to_map(self.raster.geotransform, np.array(corners))
        return QgsRectangle(x0, y0, x1, y1)

    def pixel_size_m(self, col: float, row: float) -> tuple[float, float]:
        return self.raster.pixel_size_m(col + self.col_off, row + self.row_off)

    def read(self, window: Window) -> np.ndarray:
        return self.raster.read(self._shift(window))

    def valid(self, window: Window) -> np.ndarray | None:
        return self.raster.valid(self._shift(window))

    def _shift(self, window: Window) -> Window:
        return replace(
            window, col_off=window.col_off + self.col_off, row_off=window.row_off + self.row_off
        )


def view_window(raster: RasterWindows, extent: QgsRectangle) -> ViewWindow | None:
    """The raster's whole pixels inside ``extent`` (raster CRS); None when there are none."""
    corners = map_to_pixel(
        raster.geotransform,
        np.array([(extent.xMinimum(), extent.yMaximum()), (extent.xMaximum(), extent.yMinimum())]),
    )
    (col0, row0), (col1, row1) = corners.min(axis=0), corners.max(axis=0)
    width, height = raster.size
    left, top = max(0, math.ceil(col0 - EDGE_TOLERANCE)), max(0, math.ceil(row0 - EDGE_TOLERANCE))
    right = min(width, math.floor(col1 + EDGE_TOLERANCE))
    bottom = min(height, math.floor(row1 + EDGE_TOLERANCE))
    if right <= left or bottom <= top:
        return None
    return ViewWindow(raster, left, top, right - left, bottom - top)


def preview_layer(parcels: list[AutoParcel], view: ViewWindow) -> QgsVectorLayer:
    """A memory layer of the parcels (raster CRS), each cut to the view's outline: the
    tiling grid may overhang the view's last pixels by a fraction of a grid pixel."""
    crs = view.raster.crs
    fields = "".join(f"&field={name}:double" for name in PREVIEW_FIELDS)
    layer = QgsVectorLayer(
        f"MultiPolygon?crs={crs.authid() or crs.toWkt()}{fields}", PREVIEW_LAYER_NAME, "memory"
    )
    outline = QgsGeometry.fromRect(view.bounds())
    features = []
    for parcel in parcels:
        geometry = polygonal(parcel.geometry.intersection(outline))
        if geometry is None:
            continue
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        feature.setAttributes([parcel.score, parcel.stability])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


class FindInView(QObject):
    """The dock's "Find every parcel in view" and its preview's Accept all / Accept selected /
    Discard; the model and raster are the panel's (:meth:`SegmentController.with_segmenter`)."""

    def __init__(self, controller: SegmentController) -> None:
        super().__init__(controller)
        self.controller = controller
        self.dock = controller.dock
        self.preview: QgsVectorLayer | None = None
        self.task: FeedbackTask | None = None
        self.dock.find_view_button.clicked.connect(self.find)
        self.dock.accept_all_button.clicked.connect(lambda: self.accept(selected_only=False))
        self.dock.accept_selected_button.clicked.connect(lambda: self.accept(selected_only=True))
        self.dock.discard_button.clicked.connect(self.discard)

    def find(self) -> None:
        """Start automatic mode over the view, once the panel's model and raster are open."""
        if self.busy():
            self.controller.message("still finding the parcels in view", Qgis.MessageLevel.Info)
            return
        self.controller.with_segmenter(self._start)

    def _start(self) -> None:
        model, raster = self.controller.model, self.controller.segmenter.reader
        canvas = self.controller.canvas
        to_raster = QgsCoordinateTransform(
            canvas.mapSettings().destinationCrs(), raster.crs, QgsProject.instance()
        )
        view = view_window(raster, to_raster.transformBoundingBox(canvas.extent()))
        if view is None:
            self.controller.message(
                f"the map view shows no part of raster layer {raster.name}: pan or zoom to it"
            )
            return
        try:
            settings, chosen = choose_thresholds(
                AutoParams(fine_pass=self.dock.fine_check.isChecked()),
                model.manifest,
                model.manifest_source,
                {},
            )
        except GeosamError as error:
            self.controller.message(str(error))
            return
        self.discard()

        def job(feedback: QgsFeedback) -> tuple[list[AutoParcel], Counter[str]]:
            areas = (DEFAULT_MIN_AREA_M2, DEFAULT_MIN_AREA_M2)
            return segment_all(model, view, settings, areas, 0.0, 0.0, feedback)

        self.task = FeedbackTask(
            f"geosam: finding every parcel in view of {raster.name}",
            job,
            lambda result: self._show(result[0], view, chosen),
            self.controller.message,
        )
        self.dock.status_label.setText(
            f"finding the parcels in {view.width} x {view.height} px of {raster.name}; {chosen}"
        )
        QgsApplication.taskManager().addTask(self.task)

    def _show(self, parcels: list[AutoParcel], view: ViewWindow, chosen: str) -> None:
        layer = preview_layer(parcels, view)
        if layer.featureCount() == 0:
            self.controller.message(
                f"no parcel found in {view.description}: zoom out, or lower the model's "
                "thresholds with the Processing algorithm",
                Qgis.MessageLevel.Info,
            )
            return
        QgsProject.instance().addMapLayer(layer)
        layer.willBeDeleted.connect(self._forget_preview)
        self.preview = layer
        for button in self.dock.preview_buttons():
            button.setEnabled(True)
        self.dock.status_label.setText(
            f"{layer.featureCount()} parcels found in view, in layer {layer.name()}: Accept "
            f"all, select some and Accept selected, or Discard ({chosen})"
        )

    def accept(self, selected_only: bool) -> None:
        """Copy the preview's parcels (all, or the selected ones) into the output layer and
        take them out of the preview; Undo in the panel takes the batch back."""
        preview = self.preview
        if preview is None:
            return
        features = preview.selectedFeatures() if selected_only else list(preview.getFeatures())
        if not features:
            self.controller.message(
                f"no parcel selected in {preview.name()}: select some with the Select Features "
                "tool first",
                Qgis.MessageLevel.Info,
            )
            return
        try:
            layer = self.controller.target_layer()
            ids = [
                feature_id
                for feature in features
                for feature_id in add_parcel(
                    layer, feature.geometry(), preview.crs(), feature["score"]
                )
            ]
        except GeosamError as error:
            self.controller.message(str(error))
            return
        self.controller.history.append((layer.id(), ids))
        preview.dataProvider().deleteFeatures([feature.id() for feature in features])
        preview.triggerRepaint()
        self.dock.status_label.setText(f"{len(features)} parcels added to {layer.name()}")
        if preview.featureCount() == 0:
            self.discard()

    def discard(self) -> None:
        """Remove the preview layer (what was accepted stays in the output layer)."""
        if self.preview is not None and not sip.isdeleted(self.preview):
            QgsProject.instance().removeMapLayer(self.preview.id())
        self._forget_preview()

    def busy(self) -> bool:
        return running(self.task)

    def unload(self) -> None:
        if self.busy():
            self.task.cancel()
        self.discard()

    def _forget_preview(self) -> None:
        self.preview = None
        for button in self.dock.preview_buttons():
            button.setEnabled(False)
