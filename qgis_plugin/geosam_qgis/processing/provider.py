"""The geosam Processing provider: puts "Segment parcels" and "Improve model from parcels" in
the toolbox and the modeler."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .improve_algorithm import ImproveModelAlgorithm
from .segment_algorithm import ICON, SegmentParcelsAlgorithm


class GeosamProvider(QgsProcessingProvider):
    """Algorithm ids are ``geosam:<name>``, e.g. ``geosam:segment_parcels``."""

    def id(self) -> str:
        return "geosam"

    def name(self) -> str:
        return "geosam"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(SegmentParcelsAlgorithm())
        self.addAlgorithm(ImproveModelAlgorithm())
