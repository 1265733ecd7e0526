"""Accepted parcels into the dock's output layer: a new memory layer or the user's own.

The user's layer may be a Shapefile, a GeoPackage or anything else QGIS edits, in any CRS;
parcels are reprojected from the raster's CRS, made compatible with the layer's geometry type
(a single-Polygon layer gets one feature per part), and given ``score`` and ``area_m2``
fields, which are added when missing. A layer the user has in edit mode receives the features
in its edit buffer (their undo stack and their Save); otherwise they are written through the
data provider at once, as QGIS's own digitizing tools do when committing.
"""

from __future__ import annotations

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsProject,
    QgsVectorDataProvider,
    QgsVectorLayer,
    QgsVectorLayerUtils,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType, QVariant

from .measure import area_m2, ellipsoidal
from .runtime.errors import GeosamError

OUTPUT_FIELDS = ("score", "area_m2")
NEW_LAYER_NAME = "geosam parcels"
# From QGIS 3.38 QgsField takes its type as a QMetaType.Type; Qt 6 (QGIS 4) has no
# QVariant.Type, and QGIS before 3.38 accepts nothing else.
FIELD_TAKES_QMETATYPE = Qgis.QGIS_VERSION_INT >= 33800


def new_output_layer(crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """A temporary MultiPolygon layer in ``crs`` with the output fields, added to the project."""
    fields = "".join(f"&field={name}:double" for name in OUTPUT_FIELDS)
    layer = QgsVectorLayer(
        f"MultiPolygon?crs={crs.authid() or crs.toWkt()}{fields}", NEW_LAYER_NAME, "memory"
    )
    QgsProject.instance().addMapLayer(layer)
    return layer


def double_field(name: str) -> QgsField:
    """A ``double`` field, typed the way this QGIS's QgsField accepts (see above)."""
    if FIELD_TAKES_QMETATYPE:
        return QgsField(name, QMetaType.Type.Double)
    return QgsField(name, QVariant.Type.Double)


def check_writable(layer: QgsVectorLayer) -> None:
    """GeosamError unless parcels can be added to ``layer`` (polygons, not read-only), with
    the output fields added where missing."""
    if layer.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
        kind = QgsWkbTypes.geometryDisplayString(layer.geometryType())
        raise GeosamError(
            f"output layer {layer.name()} holds {kind} geometries: choose a polygon layer or a "
            "new temporary layer"
        )
    provider = layer.dataProvider()
    if (
        layer.readOnly()
        or not provider.capabilities() & QgsVectorDataProvider.Capability.AddFeatures
    ):
        raise GeosamError(
            f"output layer {layer.name()} is read-only: choose another layer or a new temporary "
            "layer"
        )
    missing = [name for name in OUTPUT_FIELDS if layer.fields().indexOf(name) < 0]
    if not missing:
        return
    if not provider.capabilities() & QgsVectorDataProvider.Capability.AddAttributes:
        raise GeosamError(
            f"output layer {layer.name()} lacks the fields {', '.join(missing)} and they cannot "
            "be added: add them yourself or choose another layer"
        )
    new_fields = [double_field(name) for name in missing]
    if layer.isEditable():
        for new_field in new_fields:
            layer.addAttribute(new_field)
    elif not provider.addAttributes(new_fields):
        raise GeosamError(f"cannot add fields {', '.join(missing)} to output layer {layer.name()}")
    layer.updateFields()


def add_parcel(
    layer: QgsVectorLayer,
    geometry: QgsGeometry,
    crs: QgsCoordinateReferenceSystem,
    score: float,
) -> list[int]:
    """Add a parcel given in ``crs`` to ``layer``; returns the ids of the features added."""
    check_writable(layer)
    projected = QgsGeometry(geometry)
    transform = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance())
    projected.transform(transform)
    feature = QgsFeature(layer.fields())
    feature.setGeometry(projected)
    feature["score"] = score
    features = QgsVectorLayerUtils.makeFeatureCompatible(feature, layer)
    calculator = ellipsoidal(layer.crs())
    for part in features:
        part["area_m2"] = area_m2(calculator, part.geometry())
    if layer.isEditable():
        if not all(layer.addFeature(part) for part in features):
            raise GeosamError(f"output layer {layer.name()} refused the parcel")
        ids = [part.id() for part in features]
    else:
        ok, added = layer.dataProvider().addFeatures(features)
        if not ok:
            errors = "; ".join(layer.dataProvider().errors()[-1:])
            raise GeosamError(f"cannot write to output layer {layer.name()}: {errors}")
        ids = [f.id() for f in added]
        layer.updateExtents()
    layer.triggerRepaint()
    return ids


def remove_features(layer: QgsVectorLayer, ids: list[int]) -> None:
    """Take back the features :func:`add_parcel` added (the dock's Undo)."""
    if layer.isEditable():
        layer.deleteFeatures(ids)
    else:
        layer.dataProvider().deleteFeatures(ids)
        layer.updateExtents()
    layer.triggerRepaint()
