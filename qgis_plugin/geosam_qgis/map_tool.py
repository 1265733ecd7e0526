"""The map tool: mouse and keys on the canvas become prompts, nothing more.

Left click = a point inside the parcel, right click = a point outside it, left drag = a box;
Enter accepts the previewed parcel, Esc clears the prompts. The tool only translates input
into signals carrying map coordinates of the canvas's CRS; what a prompt means (which raster,
which CRS, which model) is the controller's business, so the tool stays testable with
simulated QgsMapMouseEvents and reusable.
"""

from __future__ import annotations

from qgis.core import QgsGeometry, QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import QPoint, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeyEvent

# A press and release further apart than this (screen pixels) is a drag: a box, not a click.
DRAG_PIXELS = 5
BOX_COLOUR = QColor(255, 193, 7)


class PromptMapTool(QgsMapTool):
    """Emits ``pointClicked(point, positive)``, ``boxDrawn(rectangle)``, ``acceptRequested``
    and ``clearRequested``; draws the box while it is being dragged."""

    pointClicked = pyqtSignal(QgsPointXY, bool)
    boxDrawn = pyqtSignal(QgsRectangle)
    acceptRequested = pyqtSignal()
    clearRequested = pyqtSignal()

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.band = QgsRubberBand(canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.band.setStrokeColor(BOX_COLOUR)
        self.band.setFillColor(QColor(255, 193, 7, 40))
        self.band.setWidth(2)
        self.pressed_at: QPoint | None = None
        self.button = Qt.MouseButton.NoButton

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:
        self.pressed_at = event.pixelPoint()
        self.button = event.button()

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:
        if self._dragging(event):
            self.band.setToGeometry(QgsGeometry.fromRect(self._box(event)))

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if self.pressed_at is None:
            return
        if self._dragging(event):
            box = self._box(event)
            self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
            self.boxDrawn.emit(box)
        elif self.button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            self.pointClicked.emit(event.mapPoint(), self.button == Qt.MouseButton.LeftButton)
        self.pressed_at = None

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.acceptRequested.emit()
            event.accept()
        elif event.key() == Qt.Key.Key_Escape:
            self.clearRequested.emit()
            event.accept()
        else:
            event.ignore()

    def deactivate(self) -> None:
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        self.pressed_at = None
        super().deactivate()

    def _dragging(self, event: QgsMapMouseEvent) -> bool:
        if self.pressed_at is None or self.button != Qt.MouseButton.LeftButton:
            return False
        return (event.pixelPoint() - self.pressed_at).manhattanLength() > DRAG_PIXELS

    def _box(self, event: QgsMapMouseEvent) -> QgsRectangle:
        start = self.toMapCoordinates(self.pressed_at)
        return QgsRectangle(start, event.mapPoint())
