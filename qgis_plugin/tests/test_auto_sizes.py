"""Parcels of any size through the plugin's reader with a perfect model.

The perfect model (as the CLI tests' ``perfect_model``) keeps the image as its "embedding" and
answers a point (or a box, by its centre) with the region of the colour under it, clipped to
the window it sees, and rates black (between parcels) 0. On a raster of flat-coloured parcels
from a tenth of a window to three windows across, automatic mode must give every parcel once
and whole, as a coverage, and a click or a box on any parcel must give it whole, in the
Processing algorithm and in the map tool; on a black raster, automatic mode gives an empty
layer and a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import RASTER_CRS, points_layer
from osgeo import gdal, osr
from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgisInterface

ALGORITHM = "geosam:segment_parcels"
ORIGIN = (520000.0, 5350000.0)
# Raster pixel boxes (x0, y0, x1, y1) of each parcel on a 1200 px raster (36 windows of the
# tiny model's 256 px); the last parcel is an L of two boxes.
PARCELS = [
    [(8, 8, 776, 776)],
    [(790, 8, 1190, 508)],
    [(790, 520, 1100, 700)],
    [(8, 790, 520, 1000)],
    [(530, 790, 680, 940)],
    [(700, 790, 760, 850)],
    [(780, 720, 806, 746)],
    [(8, 1010, 776, 1190), (690, 860, 776, 1010)],
]


@pytest.fixture
def perfect_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from geosam_qgis.runtime.model import Embedding, Prediction, SamModel

    def encode(self: SamModel, image: np.ndarray) -> Embedding:
        return Embedding(image[None], image.shape[:2], image.shape[:2])

    def keys(embedding: Embedding) -> np.ndarray:
        image = embedding.array[0].astype(np.int64)
        return image[..., 0] << 16 | image[..., 1] << 8 | image[..., 2]

    def decode_points(self: SamModel, embedding: Embedding, points: np.ndarray):
        colours = keys(embedding)
        for point in points:  # read one at a time, as the runtime's decode_points does
            x, y = np.round(point).astype(int)
            score = 0.95 if colours[y, x] else 0.0
            yield np.where(colours == colours[y, x], 10.0, -10.0)[None], np.array([score])

    def decode(self: SamModel, embedding: Embedding, points=None, labels=None, box=None, **_):
        x, y = np.round(points[0] if points is not None else (box[:2] + box[2:]) / 2).astype(int)
        colours = keys(embedding)
        return Prediction(colours == colours[y, x], 0.95, np.zeros((1, 1, 4, 4), np.float32), 0)

    monkeypatch.setattr(SamModel, "encode", encode)
    monkeypatch.setattr(SamModel, "decode_points", decode_points)
    monkeypatch.setattr(SamModel, "decode", decode)


def flat_raster(path: Path, parcels: list[list[tuple[int, int, int, int]]]) -> Path:
    """A 1 m, 1200 px RGB GeoTIFF (EPSG:32633) with each parcel in a colour of its own."""
    data = np.zeros((3, 1200, 1200), np.uint8)
    for index, boxes in enumerate(parcels, start=1):
        for x0, y0, x1, y1 in boxes:
            data[:, y0:y1, x0:x1] = np.array([40 + index, 200 - index, 7 * index])[:, None, None]
    raster = gdal.GetDriverByName("GTiff").Create(str(path), 1200, 1200, 3, gdal.GDT_Byte)
    raster.SetGeoTransform((ORIGIN[0], 1.0, 0.0, ORIGIN[1], 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    raster.SetProjection(srs.ExportToWkt())
    for band in range(3):
        raster.GetRasterBand(band + 1).WriteArray(data[band])
    raster.FlushCache()
    return path


def truth(boxes: list[tuple[int, int, int, int]]) -> QgsGeometry:
    return QgsGeometry.unaryUnion(
        [
            QgsGeometry.fromRect(
                QgsRectangle(ORIGIN[0] + x0, ORIGIN[1] - y1, ORIGIN[0] + x1, ORIGIN[1] - y0)
            )
            for x0, y0, x1, y1 in boxes
        ]
    )


class Warnings(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []

    def pushWarning(self, warning: str) -> None:
        self.warnings.append(warning)
        super().pushWarning(warning)


def run_auto(
    raster: Path,
    model_dir: Path,
    feedback: QgsProcessingFeedback | None = None,
    every_point: bool = False,
):
    import processing

    parameters = {"INPUT": str(raster), "MODEL": str(model_dir), "AUTO": True, "OUTPUT": "memory:"}
    parameters["EVERY_POINT"] = every_point
    return processing.run(ALGORITHM, parameters, feedback=feedback)["OUTPUT"]


@pytest.mark.usefixtures("provider", "perfect_model")
@pytest.mark.parametrize("every_point", [False, True])
def test_parcels_of_any_size_come_out_once_as_a_coverage(
    every_point: bool, model_dir: Path, tmp_path: Path
) -> None:
    """Whether grid points inside parcels already found are decoded or skipped (the
    default), each parcel comes out once, whole."""
    output = run_auto(flat_raster(tmp_path / "sizes.tif", PARCELS), model_dir, None, every_point)
    found = [feature.geometry() for feature in output.getFeatures()]
    assert len(found) == len(PARCELS)
    for boxes in PARCELS:
        expected = truth(boxes)
        ious = sorted(g.intersection(expected).area() / g.combine(expected).area() for g in found)
        assert ious[-1] >= 0.95 and ious[-2] < 0.05, boxes
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            assert a.intersection(b).area() < 1e-6
    del output


@pytest.mark.usefixtures("provider", "perfect_model")
def test_no_parcel_is_an_empty_layer_and_a_warning(model_dir: Path, tmp_path: Path) -> None:
    feedback = Warnings()
    output = run_auto(flat_raster(tmp_path / "black.tif", []), model_dir, feedback)
    assert output.featureCount() == 0
    assert any("no parcel found" in warning for warning in feedback.warnings)
    del output


def prompt_layers(parcels: list[list[tuple[int, int, int, int]]]) -> dict[str, QgsVectorLayer]:
    """A click at the centre of each parcel's first box, and each parcel's bounding box."""
    centres = [((x0 + x1) / 2, (y0 + y1) / 2) for (x0, y0, x1, y1), *_ in parcels]
    clicks = points_layer(centres, RASTER_CRS)
    boxes = QgsVectorLayer(f"Polygon?crs={RASTER_CRS}&field=id:integer", "boxes", "memory")
    features = []
    for index, boxes_of_parcel in enumerate(parcels):
        feature = QgsFeature(boxes.fields())
        feature.setGeometry(QgsGeometry.fromRect(truth(boxes_of_parcel).boundingBox()))
        feature.setAttributes([index])
        features.append(feature)
    boxes.dataProvider().addFeatures(features)
    return {"clicks": clicks, "boxes": boxes}


def iou(a: QgsGeometry, b: QgsGeometry) -> float:
    return a.intersection(b).area() / a.combine(b).area()


@pytest.mark.usefixtures("provider", "perfect_model")
@pytest.mark.parametrize("kind", ["clicks", "boxes"])
def test_prompts_on_parcels_of_any_size_give_them_whole(
    kind: str, model_dir: Path, tmp_path: Path
) -> None:
    import processing

    prompts = prompt_layers(PARCELS)[kind]
    parameters = {
        "INPUT": str(flat_raster(tmp_path / "sizes.tif", PARCELS)),
        "MODEL": str(model_dir),
        "PROMPTS": prompts,
        "OUTPUT": "memory:",
    }
    output = processing.run(ALGORITHM, parameters)["OUTPUT"]
    found = [feature.geometry() for feature in output.getFeatures()]
    assert len(found) == len(PARCELS)
    for geometry, boxes in zip(found, PARCELS, strict=True):
        expected = truth(boxes)
        # a box three windows wide is decoded on a window about 4.6 times coarser than the
        # model's resolution, whose edges blur by up to one coarse pixel (CLI and plugin
        # alike; which window answers depends on the cache's history)
        assert iou(geometry, expected) >= (0.95 if kind == "clicks" else 0.93), boxes
    del output, prompts


@pytest.mark.usefixtures("perfect_model")
def test_a_click_on_a_parcel_three_windows_across_gives_it_whole(
    qgis_iface: QgisInterface, model_dir: Path, project: QgsProject, tmp_path: Path
) -> None:
    """The map tool encodes in a task and decodes on the main thread; a mask cut by its
    window's edge is asked for again on the larger window the runtime names."""
    from geosam_qgis.controller import SegmentController
    from geosam_qgis.dock import SegmentDock
    from geosam_qgis.map_tool import PromptMapTool
    from test_map_tool import PROJECT_CRS, click, wait_for_preview

    layer = QgsRasterLayer(str(flat_raster(tmp_path / "sizes.tif", PARCELS)), "sizes")
    project.addMapLayer(layer)
    # the canvas in Web Mercator, as test_map_tool's clicks are placed
    project.setCrs(PROJECT_CRS)
    canvas = qgis_iface.mapCanvas()
    canvas.resize(512, 512)
    canvas.setDestinationCrs(PROJECT_CRS)
    to_canvas = QgsCoordinateTransform(layer.crs(), PROJECT_CRS, project)
    canvas.setExtent(to_canvas.transformBoundingBox(layer.extent()))
    dock, tool = SegmentDock(), PromptMapTool(canvas)
    controller = SegmentController(qgis_iface, dock, tool)
    dock.raster_combo.setLayer(layer)
    dock.model_widget.setFilePath(str(model_dir))
    canvas.setMapTool(tool)
    try:
        (x0, y0, x1, y1), *_ = PARCELS[0]
        click(controller, (x0 + x1) / 2, (y0 + y1) / 2)
        wait_for_preview(controller)
        assert iou(controller.parcel.geometry, truth(PARCELS[0])) >= 0.95
    finally:
        controller.unload()
        canvas.unsetMapTool(tool)
        dock.deleteLater()
