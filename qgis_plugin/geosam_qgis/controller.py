"""Interactive segmentation: the map tool's prompts → a live preview → features in a layer.

Prompts are kept in the raster's CRS, whatever the canvas shows, so a project CRS unlike the
raster's changes nothing but the drawing; the preview is drawn with QgsRubberBand, which
reprojects to the canvas itself, and accepted parcels are reprojected to the output layer.

Every prompt change re-decodes (milliseconds). Only a window not yet encoded goes to a
:class:`BackgroundTask`; meanwhile the map stays usable, and further clicks replace the
prompt: when the task ends its embedding is cached, and the current prompt (whatever it has
become) is decoded. Model and raster are opened in a task too: a ViT-H encoder takes seconds
to load, and a uint16 raster's stretch reads a sample of it.

This module imports onnxruntime (through :mod:`.runtime.segmenter`); the plugin imports it
only after :func:`geosam_qgis.dependencies.onnxruntime_problem` said it is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgisInterface, QgsRubberBand
from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtGui import QColor

from .dependencies import onnxruntime_problem
from .dock import HELP, SegmentDock, describe_manifest
from .installer import InstallOffer
from .map_tool import PromptMapTool
from .output_layer import add_parcel, new_output_layer, remove_features
from .polygonize import Parcel, half_pixel, prompt_parcel
from .raster_reader import RasterWindows
from .runtime.cache import EmbeddingCache
from .runtime.errors import GeosamError
from .runtime.model import Embedding, SamModel
from .runtime.prompts import Prompt
from .runtime.segmenter import CACHE_BYTES, PromptSegmenter
from .runtime.windows import Window, map_to_pixel
from .tasks import BackgroundTask, running

OUTLINE_COLOUR = QColor(0, 229, 255)
INSIDE_COLOUR = QColor(46, 204, 64)
OUTSIDE_COLOUR = QColor(255, 65, 54)


@dataclass(frozen=True)
class Click:
    """A click in the raster's CRS; ``inside`` for a left click."""

    point: QgsPointXY
    inside: bool


# A prompt mark: a click or a box (QgsRectangle in the raster's CRS), in the order made.
Mark = Click | QgsRectangle


class SegmentController(QObject):
    """Owns the prompts, the preview, the tasks and the accepted features' history."""

    previewChanged = pyqtSignal()

    def __init__(self, iface: QgisInterface, dock: SegmentDock, tool: PromptMapTool) -> None:
        super().__init__(dock)
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.dock = dock
        self.tool = tool
        self.cache = EmbeddingCache(CACHE_BYTES)
        self.model: SamModel | None = None
        self.segmenter: PromptSegmenter | None = None
        self.marks: list[Mark] = []
        self.parcel: Parcel | None = None
        self.history: list[tuple[str, list[int]]] = []
        self.task: BackgroundTask | None = None
        self.install_offer: InstallOffer | None = None
        self.encoding: tuple[int, ...] | None = None  # the window key being encoded
        self.generation = 0
        self.outline = QgsRubberBand(self.canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.outline.setStrokeColor(OUTLINE_COLOUR)
        self.outline.setFillColor(QColor(0, 229, 255, 50))
        self.outline.setWidth(2)
        self.inside_band = self._point_band(INSIDE_COLOUR)
        self.outside_band = self._point_band(OUTSIDE_COLOUR)
        self.box_band = QgsRubberBand(self.canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.box_band.setStrokeColor(QColor(255, 193, 7))
        self.box_band.setFillColor(QColor(0, 0, 0, 0))

        tool.pointClicked.connect(self.add_click)
        tool.boxDrawn.connect(self.set_box)
        tool.acceptRequested.connect(self.accept)
        tool.clearRequested.connect(self.clear)
        dock.accept_button.clicked.connect(self.accept)
        dock.undo_button.clicked.connect(self.undo)
        dock.clear_button.clicked.connect(self.clear)
        dock.raster_combo.layerChanged.connect(self.reset)
        dock.model_widget.fileChanged.connect(self.reset)
        dock.flip_check.toggled.connect(self.set_flip_tta)

    # -- prompts ---------------------------------------------------------------------------

    def add_click(self, point: QgsPointXY, inside: bool) -> None:
        """A click at ``point`` (canvas CRS): refused with a message off the raster."""
        layer = self._raster_layer()
        if layer is None:
            return
        point = self._to_raster(layer).transform(point)
        if not layer.extent().contains(point):
            self.message(f"the click lies outside raster layer {layer.name()}: click on the image")
            return
        self.marks.append(Click(point, inside))
        self.refresh()

    def set_box(self, rectangle: QgsRectangle) -> None:
        """A dragged box (canvas CRS); it replaces an earlier box, as SAM takes one."""
        layer = self._raster_layer()
        if layer is None:
            return
        box = self._to_raster(layer).transformBoundingBox(rectangle)
        if not box.intersects(layer.extent()):
            self.message(f"the box lies outside raster layer {layer.name()}: draw it on the image")
            return
        self.marks = [mark for mark in self.marks if isinstance(mark, Click)] + [box]
        self.refresh()

    def undo(self) -> None:
        """Take back the last prompt; with none left, the last parcel accepted."""
        if self.marks:
            self.marks.pop()
            self.refresh()
            return
        if not self.history:
            self.message("nothing to undo", Qgis.MessageLevel.Info)
            return
        layer_id, ids = self.history.pop()
        layer = QgsProject.instance().mapLayer(layer_id)
        if layer is not None:
            remove_features(layer, ids)

    def clear(self) -> None:
        """Drop the prompts and the preview (cached embeddings stay)."""
        self.marks = []
        self.refresh()

    def reset(self) -> None:
        """Another raster or model: forget the opened pair and the prompts."""
        self._cancel()
        self.model = self.segmenter = None
        self.clear()

    def set_flip_tta(self, on: bool) -> None:
        """Test-time flips on or off: embeddings hold one view per flip, so the cached ones
        no longer fit; the prompts stay and are decoded again."""
        self._cancel()
        self.cache.clear()
        if self.model is not None:
            self.model.flip_tta = on
        self.refresh()

    def accept(self) -> None:
        """Write the previewed parcel to the output layer, then start a new prompt."""
        if self.parcel is None or self.segmenter is None:
            self.message(
                "no outline to accept: click inside a parcel first", Qgis.MessageLevel.Info
            )
            return
        try:
            layer = self.target_layer()
            ids = add_parcel(
                layer, self.parcel.geometry, self.segmenter.reader.crs, self.parcel.score
            )
        except GeosamError as error:
            self.message(str(error))
            return
        self.history.append((layer.id(), ids))
        self.dock.status_label.setText(f"parcel added to {layer.name()}. {HELP}")
        self.clear()

    def target_layer(self) -> QgsVectorLayer:
        """The dock's output layer; when it says "new", a temporary layer in the project's CRS,
        created now and chosen in the dock."""
        layer = self.dock.output_layer()
        if layer is None:
            layer = new_output_layer(QgsProject.instance().crs())
            self.dock.output_combo.setLayer(layer)
        return layer

    # -- segmentation ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Redraw the prompts and segment them (at once, or after a model load or encoding)."""
        self.generation += 1
        self._draw_marks()
        self._show(None)
        if not self.marks:
            return
        if not self._positive():
            self.dock.status_label.setText(
                "a right click marks what is not the parcel: left click inside the parcel or "
                "drag a box around it"
            )
            return
        self.with_segmenter(self._predict)

    def _predict(self) -> None:
        assert self.segmenter is not None
        prompt = self._prompt()
        try:
            window, embedding = self.segmenter.locate(prompt)
        except GeosamError as error:
            self.message(str(error))
            self.marks.pop()
            self.refresh()
            return
        self._predict_in(prompt, window, embedding)

    def _predict_in(
        self, prompt: Prompt, window: Window, embedding: Embedding | None, grown: int = 0
    ) -> None:
        """Decode ``prompt`` in ``window``, encoding the window first in a task when it is not
        cached; ``grown``: how often the runtime already grew the window for this prompt."""
        if embedding is not None:
            self._decode(prompt, window, embedding, grown)
            return
        if self.encoding == window.key and self.busy():
            return  # that task's end decodes the prompt as it is then
        generation, segmenter = self.generation, self.segmenter

        def encoded(embedding: Embedding) -> None:
            self.encoding = None
            segmenter.remember(window, embedding)
            if segmenter is not self.segmenter:
                return
            if generation == self.generation:
                self._decode(prompt, window, embedding, grown)
            elif self._positive():
                self._predict()

        self.encoding = window.key

        self.dock.status_label.setText("encoding the window around the prompt…")
        self._run(
            f"geosam: encoding a window of {segmenter.reader.name}",
            lambda progress: segmenter.encode(window),
            encoded,
        )

    def _decode(self, prompt: Prompt, window: Window, embedding: Embedding, grown: int) -> None:
        """Show the parcel ``prompt`` gives in ``window``, or, when the runtime finds it cut by
        the window's edge, ask again in the larger window it names (as ``geosam segment``)."""
        assert self.segmenter is not None
        try:
            result = self.segmenter.predict(prompt, window, embedding)
            larger = self.segmenter.grow(result, grown)
            if larger is not None:
                self.dock.status_label.setText("the parcel goes on beyond the window: widening…")
                self._predict_in(prompt, *larger, grown + 1)
                return
            parcel = prompt_parcel(
                result, self.segmenter.reader.geotransform, half_pixel(result.geotransform)
            )
        except GeosamError as error:
            self.message(str(error))
            return
        if parcel is None:
            self.dock.status_label.setText("the model found nothing there: add or move a prompt")
        else:
            self.dock.status_label.setText(f"score {parcel.score:.2f}: Enter or Accept keeps it")
        self._show(parcel)

    def with_segmenter(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the dock's model and raster are open (in a task if needed)."""
        if self.segmenter is not None:
            then()
            return
        layer, folder = self._raster_layer(), self.dock.model_folder()
        if layer is None or self.busy():
            return  # a load under way calls the newest ``then`` with the prompt as it is then
        if not folder:
            self.message("choose the model folder in the geosam panel first")
            return
        problem = onnxruntime_problem(folder)
        if problem is not None:  # an onnxruntime too old for this model's ONNX files
            self.install_offer = InstallOffer(self.iface, problem, self.refresh)
            self.dock.status_label.setText(problem.message)
            return
        source, name, crs = layer.source(), layer.name(), layer.crs()
        provider = layer.providerType()
        model, flip_tta = self.model, self.dock.flip_tta()

        def open_pair(progress: Callable[[float], None]) -> tuple[SamModel, RasterWindows]:
            loaded = model if model is not None else SamModel.load(folder)
            loaded.flip_tta = flip_tta
            progress(70)
            if provider != "gdal":
                raise GeosamError(
                    f"raster layer {name} comes from the {provider} provider: geosam reads "
                    "files GDAL opens; save the layer as GeoTIFF"
                )
            return loaded, RasterWindows(source, name, crs, loaded.manifest)

        def opened(pair: tuple[SamModel, RasterWindows]) -> None:
            self.model = pair[0]
            self.segmenter = PromptSegmenter(pair[0], pair[1], self.cache)
            self.dock.model_label.setText(describe_manifest(pair[0].manifest))
            then()

        self.dock.status_label.setText("loading the model…")
        self._run(f"geosam: loading {folder}", open_pair, opened)

    def _run(self, description: str, job: Callable, on_done: Callable) -> None:
        self._cancel()
        self.task = BackgroundTask(description, job, on_done, self.message)
        QgsApplication.taskManager().addTask(self.task)

    def busy(self) -> bool:
        """Whether a model load or an encoding is running (the tests wait on it)."""
        return running(self.task)

    def _cancel(self) -> None:
        if self.busy():
            self.task.cancel()
        self.task = None
        self.encoding = None

    # -- drawing and helpers ---------------------------------------------------------------

    def _prompt(self) -> Prompt:
        """The marks as a Prompt in the segmenter's raster pixels."""
        assert self.segmenter is not None
        geotransform = self.segmenter.reader.geotransform
        clicks = [mark for mark in self.marks if isinstance(mark, Click)]
        boxes = [mark for mark in self.marks if isinstance(mark, QgsRectangle)]
        points = map_to_pixel(geotransform, np.array([(c.point.x(), c.point.y()) for c in clicks]))
        box = None
        if boxes:
            corners = map_to_pixel(
                geotransform,
                np.array(
                    [
                        (boxes[-1].xMinimum(), boxes[-1].yMaximum()),
                        (boxes[-1].xMaximum(), boxes[-1].yMinimum()),
                    ]
                ),
            )
            (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
            box = (x1, y1, x2, y2)
        return Prompt(points.reshape(-1, 2), np.array([float(c.inside) for c in clicks]), box)

    def _positive(self) -> bool:
        """Whether the marks say where the parcel is (a left click or a box)."""
        return any(isinstance(mark, QgsRectangle) or mark.inside for mark in self.marks)

    def _show(self, parcel: Parcel | None) -> None:
        self.parcel = parcel
        self.outline.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        if parcel is not None and self.segmenter is not None:
            self.outline.setToGeometry(parcel.geometry, self.segmenter.reader.crs)
        self.previewChanged.emit()

    def _draw_marks(self) -> None:
        layer = self.dock.raster_layer()
        for band in (self.inside_band, self.outside_band):
            band.reset(QgsWkbTypes.GeometryType.PointGeometry)
        self.box_band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        if layer is None:
            return
        for mark in self.marks:
            if isinstance(mark, Click):
                band = self.inside_band if mark.inside else self.outside_band
                band.addPoint(self._from_raster(layer).transform(mark.point))
            else:
                self.box_band.setToGeometry(QgsGeometry.fromRect(mark), layer.crs())

    def _point_band(self, colour: QColor) -> QgsRubberBand:
        band = QgsRubberBand(self.canvas, QgsWkbTypes.GeometryType.PointGeometry)
        band.setColor(colour)
        band.setIcon(QgsRubberBand.IconType.ICON_CIRCLE)
        band.setIconSize(10)
        band.setWidth(3)
        return band

    def _raster_layer(self) -> QgsRasterLayer | None:
        layer = self.dock.raster_layer()
        if layer is None:
            self.message("choose a raster layer in the geosam panel first")
        return layer

    def _to_raster(self, layer: QgsRasterLayer) -> QgsCoordinateTransform:
        return QgsCoordinateTransform(
            self.canvas.mapSettings().destinationCrs(), layer.crs(), QgsProject.instance()
        )

    def _from_raster(self, layer: QgsRasterLayer) -> QgsCoordinateTransform:
        return QgsCoordinateTransform(
            layer.crs(), self.canvas.mapSettings().destinationCrs(), QgsProject.instance()
        )

    def message(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Warning) -> None:
        """One line in QGIS's message bar (and the dock), the way users see plugin errors."""
        self.iface.messageBar().pushMessage("geosam", text, level=level, duration=8)
        self.dock.status_label.setText(text)

    def unload(self) -> None:
        """Cancel work and remove the drawings from the canvas."""
        self._cancel()
        for band in (self.outline, self.inside_band, self.outside_band, self.box_band):
            self.canvas.scene().removeItem(band)
