"""Lengths and areas in metres on the ellipsoid, for any CRS, with QgsDistanceArea.

Ellipsoidal for every CRS: planar areas are wrong by the projection's scale factor squared
(about 2x in Web Mercator at 45°) and meaningless in degrees, and a window on a geographic
raster must be sized from its pixels' true extent at the prompt.
"""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsGeometry,
    QgsProject,
    QgsUnitTypes,
)

from .runtime.errors import GeosamError


def ellipsoidal(crs: QgsCoordinateReferenceSystem) -> QgsDistanceArea:
    """A QgsDistanceArea measuring geometries given in ``crs`` on that CRS's ellipsoid."""
    calculator = QgsDistanceArea()
    calculator.setSourceCrs(crs, QgsProject.instance().transformContext())
    ellipsoid = crs.ellipsoidAcronym()
    if not ellipsoid or not calculator.setEllipsoid(ellipsoid):
        raise GeosamError(
            f"the CRS {crs.authid() or crs.description()} has no ellipsoid: geosam cannot "
            "measure areas in it"
        )
    return calculator


def area_m2(calculator: QgsDistanceArea, geometry: QgsGeometry) -> float:
    """The area of ``geometry`` in square metres, whatever the calculator's area units."""
    return calculator.convertAreaMeasurement(
        calculator.measureArea(geometry), QgsUnitTypes.AreaUnit.AreaSquareMeters
    )


def length_m(calculator: QgsDistanceArea, length: float) -> float:
    """A length the calculator measured, in metres."""
    return calculator.convertLengthMeasurement(length, QgsUnitTypes.DistanceUnit.DistanceMeters)
