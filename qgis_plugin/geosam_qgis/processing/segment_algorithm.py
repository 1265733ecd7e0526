"""Processing algorithm "Segment parcels": ``geosam segment`` as a QGIS tool.

A standard QgsProcessingAlgorithm, so it runs from the toolbox, in batch mode, in the
graphical modeler and from ``processing.run("geosam:segment_parcels", ...)``. Prompts work as
in the CLI: a point (or the points of a MultiPoint) is a click inside a parcel, a polygon a
box of its bounds; with a label field, features whose value is 0 are negative points, added
to every prompt whose window holds them. The loop over prompts is the runtime's
(:func:`..runtime.segmenter.segment_prompts`, the CLI's too); this module reads the prompt
features and writes the parcels.

Output: one polygon per prompt that gave one, in the raster's CRS (Processing reprojects it
to wherever the user saves it), with the prompt's attributes, ``score`` and ``area_m2``;
prompt fields of those names are kept as ``src_score``/``src_area_m2``.

Automatic mode ignores prompts and finds every parcel with the runtime's automatic mode (see
:mod:`geosam_qgis.auto_mode`), as ``geosam segment --auto`` does: output fields ``score``,
``stability``, ``area_m2``; by default a coverage (no pixel in two parcels), with holes below
the smallest hole filled. A raster where no parcel is found gives an empty layer and a
warning, so that batch runs go on.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureSink,
    QgsFeatureSource,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterDistance,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from ..dependencies import require_onnxruntime
from ..measure import area_m2, ellipsoidal
from ..output_layer import OUTPUT_FIELDS, double_field
from ..raster_reader import RasterWindows
from ..runtime.auto import (
    DEFAULT_MIN_AREA_M2,
    GRID,
    THRESHOLDS,
    AutoParams,
    choose_thresholds,
)
from ..runtime.errors import GeosamError
from ..runtime.prompts import Prompt
from ..runtime.reasons import EMPTY
from ..runtime.windows import GeoTransform, map_to_pixel

if TYPE_CHECKING:  # loads onnxruntime, which the provider must not need
    from ..runtime.model import SamModel

ICON = Path(__file__).resolve().parents[1] / "icon.svg"
AUTO_FIELDS = ("score", "stability", "area_m2")
# A parcel's outline (raster CRS) and its attributes before area_m2.
Record = tuple[QgsGeometry, list[Any]]


class SegmentParcelsAlgorithm(QgsProcessingAlgorithm):
    """Raster + model folder + prompt layer → parcel polygons with score and area_m2."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    AUTO = "AUTO"
    MIN_AREA = "MIN_AREA"
    MIN_HOLE = "MIN_HOLE"
    OVERLAPPING = "OVERLAPPING"
    POINTS_PER_SIDE = "POINTS_PER_SIDE"
    PRED_IOU_THRESH = "PRED_IOU_THRESH"
    STABILITY_THRESH = "STABILITY_THRESH"
    OVERLAP = "OVERLAP"
    EVERY_POINT = "EVERY_POINT"
    KEEP_OPEN_PIECES = "KEEP_OPEN_PIECES"
    FINE_PASS = "FINE_PASS"
    PROMPTS = "PROMPTS"
    LABEL_FIELD = "LABEL_FIELD"
    MIN_SCORE = "MIN_SCORE"
    SIMPLIFY = "SIMPLIFY"
    FLIP_TTA = "FLIP_TTA"
    OUTPUT = "OUTPUT"

    def name(self) -> str:
        return "segment_parcels"

    def displayName(self) -> str:
        return "Segment parcels"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def shortHelpString(self) -> str:
        return (
            "Outlines the parcel under each prompt with a Segment Anything model exported by "
            "geosam export-onnx (a folder with encoder.onnx, decoder.onnx, manifest.json).\n"
            "Points are clicks inside a parcel, polygons are boxes (their bounds). With a "
            "label field, points whose value is 0 mark places that are not the parcel.\n"
            "Output: polygons in the raster's CRS with the prompt's attributes, score (the "
            "model's IoU estimate) and area_m2 (on the ellipsoid).\n"
            "Averaging over mirror images runs the model on each window and its three mirror "
            "images and averages the four predictions: steadier edges, 4x the time.\n"
            "Automatic mode finds every parcel without prompts. By default the parcels form a "
            "coverage: no pixel belongs to two parcels (a contested pixel goes to the parcel "
            "of higher predicted IoU, then stability) and neighbours share their boundary "
            "exactly; QGIS 3.22 cannot simplify a coverage, so the simplify tolerance then "
            "applies only to overlapping parcels (the option below)."
        )

    def createInstance(self) -> SegmentParcelsAlgorithm:
        return SegmentParcelsAlgorithm()

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model folder (from geosam export-onnx)",
                behavior=QgsProcessingParameterFile.Behavior.Folder,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.AUTO, "Automatic mode: find every parcel, no prompts", defaultValue=False
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.PROMPTS,
                "Prompts (points: clicks inside parcels; polygons: boxes)",
                [
                    QgsProcessing.SourceType.TypeVectorPoint,
                    QgsProcessing.SourceType.TypeVectorPolygon,
                ],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.LABEL_FIELD,
                "Label field (1: inside, 0: negative point)",
                parentLayerParameterName=self.PROMPTS,
                type=QgsProcessingParameterField.DataType.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_SCORE,
                "Minimum score (drop parcels the model rates lower)",
                type=QgsProcessingParameterNumber.Type.Double,
                defaultValue=0.0,
                minValue=0.0,
                maxValue=1.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_AREA,
                "Automatic mode: smallest parcel (m²)",
                type=QgsProcessingParameterNumber.Type.Double,
                defaultValue=DEFAULT_MIN_AREA_M2,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_HOLE,
                "Automatic mode: fill holes smaller than (m²)",
                type=QgsProcessingParameterNumber.Type.Double,
                defaultValue=DEFAULT_MIN_AREA_M2,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.OVERLAPPING,
                "Automatic mode: overlapping parcels, as the model gives them (not a coverage)",
                defaultValue=False,
            )
        )
        defaults = AutoParams()
        for name, title, kind, default, low, high in (
            # no default: empty means the model's tuned value (or SAM's), known only once
            # the model is chosen
            (
                self.POINTS_PER_SIDE,
                "Automatic mode: points per window side, N x N decoder calls per window "
                "(empty: the grid the model's thresholds were tuned at, else "
                f"{defaults.points_per_side})",
                QgsProcessingParameterNumber.Type.Integer,
                None,
                1,
                None,
            ),
            (
                self.PRED_IOU_THRESH,
                "Automatic mode: minimum predicted IoU of a mask (empty: the model's tuned "
                f"value, else SAM's {defaults.pred_iou_thresh:g})",
                QgsProcessingParameterNumber.Type.Double,
                None,
                0.0,
                1.0,
            ),
            (
                self.STABILITY_THRESH,
                "Automatic mode: minimum stability of a mask (empty: the model's tuned value, "
                f"else SAM's {defaults.stability_thresh:g})",
                QgsProcessingParameterNumber.Type.Double,
                None,
                0.0,
                1.0,
            ),
            (
                self.OVERLAP,
                "Automatic mode: window overlap (fraction of a window's side)",
                QgsProcessingParameterNumber.Type.Double,
                defaults.overlap,
                0.0,
                0.5,
            ),
        ):
            parameter = QgsProcessingParameterNumber(
                name, title, type=kind, defaultValue=default, optional=default is None, minValue=low
            )
            if high is not None:
                parameter.setMaximum(high)
            parameter.setFlags(
                parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced
            )
            self.addParameter(parameter)
        for name, label, default in (
            (
                self.EVERY_POINT,
                "Automatic mode: decode every grid point, also inside parcels already found "
                "(slower)",
                not defaults.skip_found,
            ),
            (
                self.KEEP_OPEN_PIECES,
                "Automatic mode: keep pieces of parcels cut at a window edge that the next "
                "window did not continue",
                defaults.keep_open_pieces,
            ),
            (
                self.FINE_PASS,
                "Automatic mode: look again at twice the resolution where no parcel was found, "
                "for parcels too small for the model (about twice the time)",
                defaults.fine_pass,
            ),
        ):
            flag = QgsProcessingParameterBoolean(name, label, defaultValue=default)
            flag.setFlags(flag.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(flag)
        self.addParameter(
            QgsProcessingParameterDistance(
                self.SIMPLIFY,
                "Simplify tolerance",
                defaultValue=0.0,
                parentParameterName=self.INPUT,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.FLIP_TTA,
                "Average over mirror images (steadier edges, 4x slower)",
                defaultValue=False,
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, "Parcels", QgsProcessing.SourceType.TypeVectorPolygon
            )
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        try:
            return self.segment(parameters, context, feedback)
        except GeosamError as error:
            raise QgsProcessingException(str(error)) from None

    def segment(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        model_dir = self.parameterAsFile(parameters, self.MODEL, context)
        require_onnxruntime(model_dir)
        # Only now that onnxruntime is known to import: the provider must load without it.
        from ..runtime.model import SamModel

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        automatic = self.parameterAsBool(parameters, self.AUTO, context)
        source = self.parameterAsSource(parameters, self.PROMPTS, context)
        if source is None and not automatic:
            raise GeosamError("give a prompt layer, or choose automatic mode")
        feedback.pushInfo(f"loading model {model_dir}")
        model = SamModel.load(
            model_dir, flip_tta=self.parameterAsBool(parameters, self.FLIP_TTA, context)
        )
        raster = RasterWindows.from_layer(layer, model.manifest)
        if automatic:
            fields, records = self.find_all(parameters, context, feedback, model, raster)
        else:
            fields, records = self.follow_prompts(
                parameters, context, feedback, model, raster, source
            )
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.Type.MultiPolygon, layer.crs()
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        calculator = ellipsoidal(layer.crs())
        for geometry, attributes in records:
            feature = QgsFeature(fields)
            feature.setGeometry(geometry)
            feature.setAttributes([*attributes, area_m2(calculator, geometry)])
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        return {self.OUTPUT: dest_id}

    def follow_prompts(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: SamModel,
        raster: RasterWindows,
        source: QgsFeatureSource,
    ) -> tuple[QgsFields, list[Record]]:
        """One parcel per positive prompt: the fields and (geometry, attributes) in prompt
        order, attributes being the prompt's and the score (area_m2 is added by the caller)."""
        from ..polygonize import prompt_parcel
        from ..runtime.segmenter import PromptSegmenter, Skip, segment_prompts

        label_field = self.parameterAsString(parameters, self.LABEL_FIELD, context) or None
        min_score = self.parameterAsDouble(parameters, self.MIN_SCORE, context)
        simplify = self.parameterAsDouble(parameters, self.SIMPLIFY, context)
        segmenter = PromptSegmenter(model, raster)
        transform = QgsCoordinateTransform(
            source.sourceCrs(), raster.crs, context.transformContext()
        )
        features, prompts, negatives = read_prompts(
            source, label_field, transform, raster.geotransform
        )
        skipped: Counter[str] = Counter()
        results = []
        for item in segment_prompts(
            segmenter,
            prompts,
            negatives,
            min_score,
            skipped,
            lambda done, total: feedback.setProgress(100.0 * done / total),
            feedback.isCanceled,
        ):
            if isinstance(item, Skip):
                if item.detail:
                    feedback.pushInfo(
                        f"prompt {features[item.prompt.index].id()} skipped: {item.detail}"
                    )
                continue
            parcel = prompt_parcel(item, raster.geotransform, simplify)
            if parcel is None:
                skipped[EMPTY] += 1
            else:
                results.append((item.prompt.index, parcel))
        report(feedback, "prompts skipped", skipped)
        feedback.pushInfo(
            f"{len(results)} parcels from {len(prompts)} prompts; "
            f"{segmenter.encoded} windows encoded"
        )
        records = [
            (parcel.geometry, [*features[index].attributes(), parcel.score])
            for index, parcel in sorted(results, key=lambda result: result[0])
        ]
        return output_fields(source.fields()), records

    def find_all(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        model: SamModel,
        raster: RasterWindows,
    ) -> tuple[QgsFields, list[Record]]:
        """Automatic mode: every parcel, with score and stability."""
        from ..auto_mode import NO_COVERAGE_SIMPLIFY, segment_all

        coverage = not self.parameterAsBool(parameters, self.OVERLAPPING, context)
        simplify = self.parameterAsDouble(parameters, self.SIMPLIFY, context)
        if coverage and simplify > 0:
            feedback.pushWarning(NO_COVERAGE_SIMPLIFY.format(version=Qgis.QGIS_VERSION))
        given: dict[str, float] = {
            name: self.parameterAsDouble(parameters, key, context)
            for name, key in zip(
                THRESHOLDS, (self.PRED_IOU_THRESH, self.STABILITY_THRESH), strict=True
            )
            if parameters.get(key) not in (None, "")
        }
        if parameters.get(self.POINTS_PER_SIDE) not in (None, ""):
            given[GRID] = self.parameterAsInt(parameters, self.POINTS_PER_SIDE, context)
        settings, chosen = choose_thresholds(
            AutoParams(
                overlap=self.parameterAsDouble(parameters, self.OVERLAP, context),
                coverage=coverage,
                skip_found=not self.parameterAsBool(parameters, self.EVERY_POINT, context),
                keep_open_pieces=self.parameterAsBool(parameters, self.KEEP_OPEN_PIECES, context),
                fine_pass=self.parameterAsBool(parameters, self.FINE_PASS, context),
            ),
            model.manifest,
            model.manifest_source,
            given,
        )
        feedback.pushInfo(chosen)
        parcels, dropped = segment_all(
            model,
            raster,
            settings,
            (
                self.parameterAsDouble(parameters, self.MIN_AREA, context),
                self.parameterAsDouble(parameters, self.MIN_HOLE, context),
            ),
            self.parameterAsDouble(parameters, self.MIN_SCORE, context),
            simplify,
            feedback,
        )
        report(feedback, "masks dropped", dropped)
        feedback.pushInfo(f"{len(parcels)} parcels found")
        if not parcels:
            feedback.pushWarning(
                f"no parcel found in {raster.description}: the output layer is empty; lower "
                "the minimum predicted IoU, stability or parcel area if parcels were expected"
            )
        fields = QgsFields()
        for name in AUTO_FIELDS:
            fields.append(double_field(name))
        return fields, [(p.geometry, [p.score, p.stability]) for p in parcels]


def report(feedback: QgsProcessingFeedback, what: str, counts: Counter[str]) -> None:
    for reason, count in counts.items():
        if count:
            feedback.reportError(f"{count} {what}: {reason}", fatalError=False)


def read_prompts(
    source: QgsFeatureSource,
    label_field: str | None,
    transform: QgsCoordinateTransform,
    geotransform: GeoTransform,
) -> tuple[list[QgsFeature], list[Prompt], np.ndarray]:
    """The positive prompts (with their features) in raster pixels, and the negative points
    (N, 2); GeosamError for a label that is neither 0 nor 1 or a negative polygon."""
    name = source.sourceName()
    features, prompts, negatives = [], [], []
    for feature in source.getFeatures():
        geometry = feature.geometry()
        if geometry.isNull() or geometry.isEmpty():
            continue
        positive = True
        if label_field is not None:
            value = feature[label_field]
            if value not in (0, 1):
                raise GeosamError(
                    f"label field {label_field} of prompts {name} must be 1 (positive) or 0 "
                    f"(negative) in every feature; feature {feature.id()} has {value!r}"
                )
            positive = value == 1
        geometry.transform(transform)
        xy = np.array([(v.x(), v.y()) for v in geometry.vertices()], dtype=np.float64)
        pixels = map_to_pixel(geotransform, xy)
        is_point = geometry.type() == QgsWkbTypes.GeometryType.PointGeometry
        if not positive:
            if not is_point:
                raise GeosamError(
                    f"prompts {name}: feature {feature.id()} is a polygon with {label_field} = 0,"
                    " but only points can be negative prompts"
                )
            negatives.append(pixels)
            continue
        index = len(features)
        features.append(feature)
        if is_point:
            prompts.append(Prompt(pixels, np.ones(len(pixels)), index=index))
        else:
            (x1, y1), (x2, y2) = pixels.min(axis=0), pixels.max(axis=0)
            prompts.append(Prompt(box=(x1, y1, x2, y2), index=index))
    if not prompts:
        raise GeosamError(f"prompts {name} hold no positive prompt")
    return features, prompts, np.concatenate(negatives) if negatives else np.zeros((0, 2))


def output_fields(prompt_fields: QgsFields) -> QgsFields:
    """The prompt's fields (``src_``-prefixed where geosam adds the name) + score, area_m2."""
    fields = QgsFields()
    for source_field in prompt_fields:
        copied = QgsField(source_field)
        if copied.name() in OUTPUT_FIELDS:
            copied.setName(f"src_{copied.name()}")
        fields.append(copied)
    for name in OUTPUT_FIELDS:
        fields.append(double_field(name))
    return fields
