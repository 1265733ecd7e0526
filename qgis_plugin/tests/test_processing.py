"""The "Segment parcels" Processing algorithm end to end, through processing.run.

The tiny model is untrained, so these tests check what does not depend on its quality: one
valid polygon per prompt near its prompt, in the raster's CRS, with the prompt's attributes,
score and a geodesic area_m2; prompts in another CRS; a geographic raster; bad input refused
with one QgsProcessingException naming what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RASTER_CRS, model_variant, points_layer
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

ALGORITHM = "geosam:segment_parcels"
CLICKS = [(100.5, 120.5), (300.5, 300.5), (420.5, 80.5)]


def run(raster: Path, model: Path, prompts: QgsVectorLayer, **extra: object) -> QgsVectorLayer:
    import processing

    parameters = {
        "INPUT": str(raster),
        "MODEL": str(model),
        "PROMPTS": prompts,
        "OUTPUT": "memory:",
        **extra,
    }
    return processing.run(ALGORITHM, parameters)["OUTPUT"]


def test_points_in_another_crs(provider: None, model_dir: Path, scene: Path) -> None:
    prompts = points_layer(CLICKS, "EPSG:4326")
    output = run(scene, model_dir, prompts)
    assert output.crs().authid() == RASTER_CRS
    assert output.fields().names() == ["name", "label", "src_score", "score", "area_m2"]
    features = list(output.getFeatures())
    assert [f["name"] for f in features] == ["prompt 0", "prompt 1", "prompt 2"]
    for feature in features:
        geometry = feature.geometry()
        assert geometry.isGeosValid() and not geometry.isEmpty()
        # the untrained model's speckle reaches the edges of the click's 256 px window, so it
        # is asked again on windows up to the whole 512 px scene: the parcel lies on the scene
        scene_box = QgsGeometry.fromRect(QgsRectangle(520000, 5349488, 520512, 5350000))
        assert scene_box.buffer(1e-6, 1).contains(geometry)
        assert 0.0 <= feature["score"] <= 1.5
        # UTM near its central meridian: the geodesic area is the planar one within 0.2 %
        assert feature["area_m2"] == pytest.approx(geometry.area(), rel=2e-3)
        assert feature["src_score"] == 0.5


def test_mirror_averaging(provider: None, model_dir: Path, scene: Path) -> None:
    prompts = points_layer(CLICKS, RASTER_CRS)
    plain = [f.geometry() for f in run(scene, model_dir, prompts).getFeatures()]
    flipped = [f.geometry() for f in run(scene, model_dir, prompts, FLIP_TTA=True).getFeatures()]
    assert len(flipped) == len(plain) == len(CLICKS)
    assert all(g.isGeosValid() and not g.isEmpty() for g in flipped)
    assert not all(a.equals(b) for a, b in zip(plain, flipped, strict=True))


def test_boxes_and_negative_points(provider: None, model_dir: Path, scene: Path) -> None:
    boxes = QgsVectorLayer(f"Polygon?crs={RASTER_CRS}&field=id:integer", "boxes", "memory")
    feature = QgsFeature(boxes.fields())
    feature.setGeometry(
        QgsGeometry.fromWkt(
            "POLYGON((520050 5349950, 520150 5349950, "
            "520150 5349850, 520050 5349850, 520050 5349950))"
        )
    )
    feature.setAttributes([7])
    boxes.dataProvider().addFeatures([feature])
    output = run(scene, model_dir, boxes)
    (parcel,) = output.getFeatures()
    assert parcel["id"] == 7 and parcel.geometry().isGeosValid()

    mixed = points_layer([*CLICKS, (110.5, 130.5)], "EPSG:3857", labels=[1, 1, 1, 0])
    output = run(scene, model_dir, mixed, LABEL_FIELD="label")
    assert output.featureCount() == 3


def test_geographic_raster(
    provider: None, model_dir: Path, geographic_scene: Path, tmp_path: Path
) -> None:
    """A raster in degrees: windows sized in metres, areas in m², output in EPSG:4326."""
    model = model_variant(model_dir, tmp_path / "model", {"ground_resolution_m": 2.0})
    output = run(geographic_scene, model, points_layer(CLICKS[:2], RASTER_CRS))
    assert output.crs().authid() == "EPSG:4326"
    to_utm = QgsCoordinateTransform(
        output.crs(), QgsCoordinateReferenceSystem(RASTER_CRS), QgsProject.instance()
    )
    for feature in output.getFeatures():
        geometry = QgsGeometry(feature.geometry())
        assert geometry.isGeosValid()
        geometry.transform(to_utm)
        assert feature["area_m2"] == pytest.approx(geometry.area(), rel=5e-3)
        # 256 model px at 2 m: the window spans 512 m, the scene's whole width
        assert geometry.boundingBox().width() <= 512 + 2


def test_folder_without_manifest_uses_onnx_metadata(
    provider: None, model_dir: Path, scene: Path, tmp_path: Path
) -> None:
    model = model_variant(model_dir, tmp_path / "bare", keep_manifest=False)
    assert run(scene, model, points_layer(CLICKS[:1], RASTER_CRS)).featureCount() == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty model folder", "lacks encoder.onnx"),
        ("bands", "reads bands 1,2,5 but raster layer scene has 3"),
        ("outside", "all 2 prompts lie outside raster layer scene"),
        ("label", "label field name of prompts prompts must be 1"),
    ],
)
def test_bad_input(
    provider: None, model_dir: Path, scene: Path, tmp_path: Path, case: str, expected: str
) -> None:
    model, prompts, extra = model_dir, points_layer(CLICKS[:2], RASTER_CRS), {}
    if case == "empty model folder":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "bands":
        model = model_variant(model_dir, tmp_path / "bands", {"bands": [1, 2, 5]})
    elif case == "outside":
        prompts = points_layer([(-500.0, 10.0), (10.0, 900.0)], RASTER_CRS)
    else:
        extra = {"LABEL_FIELD": "name"}
    with pytest.raises(QgsProcessingException, match=expected):
        run(scene, model, prompts, **extra)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_automatic_mode(
    provider: None, model_dir: Path, scene: Path, tmp_path: Path, flip_tta: bool
) -> None:
    """No prompts: every mask the runtime's automatic mode keeps, as polygons. The untrained
    model's masks are speckle over whole windows, which inner window edges would cut: the
    raster is one window, and the advanced parameters open the filters and coarsen the grid."""
    import processing

    window = tmp_path / "window.tif"
    gdal.Translate(str(window), str(scene), srcWin=[64, 64, 256, 256])
    parameters = {
        "INPUT": str(window),
        "MODEL": str(model_dir),
        "AUTO": True,
        "MIN_AREA": 0.0,
        "POINTS_PER_SIDE": 4,
        "PRED_IOU_THRESH": 0.0,
        "STABILITY_THRESH": 0.0,
        "FLIP_TTA": flip_tta,
    }
    output = processing.run(ALGORITHM, {**parameters, "OUTPUT": "memory:"})["OUTPUT"]
    assert output.crs().authid() == RASTER_CRS
    assert output.fields().names() == ["score", "stability", "area_m2"]
    assert output.featureCount() > 0
    for feature in output.getFeatures():
        assert feature.geometry().isGeosValid()
        assert feature["area_m2"] == pytest.approx(feature.geometry().area(), rel=2e-3)
    # SAM's default filters keep none of the untrained model's speckle
    strict = {**parameters, "PRED_IOU_THRESH": 0.88, "STABILITY_THRESH": 0.95}
    assert processing.run(ALGORITHM, {**strict, "OUTPUT": "memory:"})["OUTPUT"].featureCount() < (
        output.featureCount()
    )


def test_automatic_mode_uses_the_model_thresholds(
    provider: None, model_dir: Path, scene: Path, tmp_path: Path
) -> None:
    """Thresholds left empty are the model's tuned ones (the fixture's own, or here the open
    filters), else SAM's where the manifest has none; given ones win."""
    import processing
    from geosam_qgis.dock import describe_manifest

    window = tmp_path / "window.tif"
    gdal.Translate(str(window), str(scene), srcWin=[64, 64, 256, 256])
    opened = {"pred_iou_thresh": 0.0, "stability_thresh": 0.0}
    tuned = model_variant(model_dir, tmp_path / "tuned", {"auto_thresholds": opened})
    untuned = model_variant(model_dir, tmp_path / "untuned")
    fields = json.loads((untuned / "manifest.json").read_text())
    own = fields.pop("auto_thresholds")
    (untuned / "manifest.json").write_text(json.dumps(fields))
    base = {"INPUT": str(window), "AUTO": True, "MIN_AREA": 0.0, "POINTS_PER_SIDE": 4}

    def count(model: Path, **thresholds: float) -> int:
        parameters = {**base, "MODEL": str(model), **thresholds, "OUTPUT": "memory:"}
        return processing.run(ALGORITHM, parameters)["OUTPUT"].featureCount()

    found = count(untuned, PRED_IOU_THRESH=0.0, STABILITY_THRESH=0.0)
    assert count(tuned) == found > 0
    assert count(untuned) == count(untuned, PRED_IOU_THRESH=0.88, STABILITY_THRESH=0.95)
    assert count(tuned, PRED_IOU_THRESH=0.88, STABILITY_THRESH=0.95) < found
    assert count(model_dir) == count(
        model_dir,
        PRED_IOU_THRESH=own["pred_iou_thresh"],
        STABILITY_THRESH=own["stability_thresh"],
    )
    described = describe_manifest({"auto_thresholds": opened})
    assert "tuned on its val split: predicted IoU 0, stability 0" in described
    assert "no tuned thresholds" in describe_manifest({})
    described = describe_manifest({"auto_thresholds": {**opened, "points_per_side": 10}})
    assert described.endswith("stability 0, 10 x 10 points")


def test_prompts_or_automatic_mode(provider: None, model_dir: Path, scene: Path) -> None:
    with pytest.raises(QgsProcessingException, match="give a prompt layer, or choose automatic"):
        run_without_prompts = {"INPUT": str(scene), "MODEL": str(model_dir), "OUTPUT": "memory:"}
        import processing

        processing.run(ALGORITHM, run_without_prompts)
